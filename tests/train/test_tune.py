"""muTransfer search (train.tune) and ``ghn tune`` at debug size."""

import csv
import json
import math

import mup
import pytest
import torch

from archspace.errors import UsageError
from tests.train.helpers import assert_usage_error, run_ghn, save_tiny_ghn
from train.finetune import train_sgd
from train.tune import (
    Setting,
    Trial,
    best_trial,
    build,
    lr_grid,
    mean_trial,
    optimum_shift,
    run_setting,
    run_trial,
    search_space,
)
from train.width_family import width_family


@pytest.fixture(scope="module")
def digits8():
    from train.data import load_digits

    return load_digits(8)


def test_lr_grid_and_search_space():
    assert lr_grid(-3, -1) == [0.125, 0.25, 0.5]
    with pytest.raises(UsageError):
        lr_grid(-1, -3)
    grid = search_space([0.1, 0.2], output_mults=[1.0, 2.0])
    assert [(s.lr, s.output_mult) for s in grid] == [(0.1, 1.0), (0.2, 1.0), (0.1, 2.0), (0.2, 2.0)]
    drawn = search_space([0.1, 0.2], output_mults=[1.0, 2.0], trials=2, seed=3)
    assert len(drawn) == 2 and set(drawn) <= set(grid)
    assert drawn == search_space([0.1, 0.2], output_mults=[1.0, 2.0], trials=2, seed=3)
    assert Setting(2.0 ** -5, 2.0).label() == "lr 2^-5, out 2^1"


def trial(loss, lr):
    return Trial(8, "mup", "default", lr, 1.0, 1.0, loss, None, 0.0, 0.0)


def test_best_trial_and_optimum_shift():
    assert best_trial([trial(0.5, 0.1), trial(math.inf, 0.2), trial(0.3, 0.4)]).lr == 0.4
    with pytest.raises(UsageError, match="every trial diverged"):
        best_trial([trial(math.inf, 0.1)])
    assert optimum_shift({8: 2.0 ** -5, 16: 2.0 ** -7, 32: 2.0 ** -6}) == 2
    assert optimum_shift({8: 2.0 ** -5}) == 0


def test_mean_trial_averages_seeds():
    a = Trial(8, "mup", "default", 0.1, 1.0, 1.0, 0.5, None, 2.0, 10.0, top1=80.0)
    b = Trial(8, "mup", "default", 0.1, 1.0, 1.0, 0.3, None, 3.0, 10.0, top1=90.0)
    m = mean_trial([a, b])
    assert (m.loss, m.seconds, m.flops, m.top1, m.seeds) == (pytest.approx(0.4), 5.0, 20.0, 85.0, 2)
    bad = Trial(8, "mup", "default", 0.1, 1.0, 1.0, math.inf, 7, 1.0, 10.0)
    worse = Trial(8, "mup", "default", 0.1, 1.0, 1.0, math.inf, 4, 1.0, 10.0)
    m = mean_trial([a, bad, worse])
    assert m.loss == math.inf and m.diverged_at == 4 and m.top1 is None and m.seeds == 3
    with pytest.raises(ValueError, match="one width and setting"):
        mean_trial([a, Trial(8, "mup", "default", 0.2, 1.0, 1.0, 0.5, None, 2.0, 10.0)])
    with pytest.raises(ValueError):
        mean_trial([])


def test_run_setting_is_the_mean_of_its_seeds(digits8):
    family = width_family("mlp", 10, 8)
    runs = [run_trial(family, 16, Setting(2.0 ** -6), digits8, param="mup", steps=4, optimizer="adam", seed=s)
            for s in (3, 4)]
    assert runs[0].loss != runs[1].loss  # the seed changes the init and the data order
    m = run_setting(family, 16, Setting(2.0 ** -6), digits8, seeds=[3, 4], param="mup", steps=4, optimizer="adam")
    assert m.seeds == 2 and m.loss == pytest.approx((runs[0].loss + runs[1].loss) / 2)
    with pytest.raises(UsageError, match="at least one seed"):
        run_setting(family, 16, Setting(2.0 ** -6), digits8, seeds=[], param="mup", steps=4)
    with pytest.raises(TypeError, match="not seed="):
        run_setting(family, 16, Setting(2.0 ** -6), digits8, seed=3, param="mup", steps=4)


def test_trials_are_deterministic_and_diverge_cleanly(digits8):
    family = width_family("mlp", 10, 8)
    a = run_trial(family, 32, Setting(2.0 ** -6), digits8, param="mup", steps=6, optimizer="adam")
    b = run_trial(family, 32, Setting(2.0 ** -6), digits8, param="mup", steps=6, optimizer="adam")
    assert a.loss == b.loss and math.isfinite(a.loss) and a.flops > 0
    bad = run_trial(family, 32, Setting(2.0 ** 12), digits8, param="sp", steps=6, optimizer="sgd")
    assert bad.loss == math.inf and bad.diverged_at is not None


def test_predicted_init_keeps_the_prediction_in_mup(tmp_path):
    from ghn import GHN
    from train.rank import ghn_predictor

    ghn = GHN.from_pretrained(save_tiny_ghn(tmp_path / "g.safetensors")).eval()
    predict = ghn_predictor(ghn, 8)
    family = width_family("mlp", 10, 8)
    x = torch.randn(3, 3, 8, 8)
    sp = build(family, 128, Setting(0.01), param="sp", init="predicted", predict=predict)
    mu = build(family, 128, Setting(0.01, output_mult=4.0), param="mup", init="predicted", predict=predict)
    assert isinstance(mu.layers[5], mup.MuReadout)
    with torch.no_grad():
        torch.testing.assert_close(mu(x), sp(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="needs a GHN"):
        build(family, 128, Setting(0.01), param="mup", init="predicted")
    # orthogonalised: the tiled (low-rank) predicted hidden matrix becomes full rank with orthonormal rows
    orth = build(family, 128, Setting(0.01), param="mup", init="predicted+orth", predict=predict)
    w = orth.layers[3].weight.detach()
    torch.testing.assert_close(w @ w.t(), torch.eye(128), atol=1e-4, rtol=0)


def test_train_sgd_takes_another_optimiser(digits8):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    made = []

    def factory(params):
        made.append(len(params))
        return torch.optim.SGD(params, lr=0.0)  # a no-op optimiser: the weights must not move

    before = [p.detach().clone() for p in model.parameters()]
    train_sgd(model, digits8, steps=2, optimizer=factory, grad_clip=None)
    assert made == [2]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_ghn_tune_debug_size(tmp_path, capsys):
    out = tmp_path / "t"
    status, stdout, err = run_ghn(["tune", "mlp", "--proxy-widths", "16", "32", "--target-width", "64", "--lr-range",
                                   "-7", "-5", "--steps", "3", "--verify", "--out", str(out)], capsys)
    assert status == 0, err
    rows = list(csv.DictReader(open(out / "tune.csv")))
    assert [r["role"] for r in rows] == ["proxy optimum", "proxy optimum", "target, transferred",
                                         "target, own optimum"]
    assert [int(r["width"]) for r in rows] == [16, 32, 64, 64]
    report = json.load(open(out / "tune.json"))
    by_role = {}
    for t in report["trials"]:
        by_role.setdefault(t["role"], []).append(t)
    assert [len(by_role[r]) for r in ("proxy", "target", "target-search")] == [6, 1, 3]
    widest = min(by_role["proxy"][3:], key=lambda t: t["loss"])
    assert float(rows[2]["lr"]) == widest["lr"] == float(rows[1]["lr"])  # the widest proxy's best is transferred
    own = min(by_role["target-search"], key=lambda t: t["loss"])
    assert float(rows[3]["loss"]) == pytest.approx(own["loss"]) and float(rows[3]["lr"]) == own["lr"]
    assert report["transfer_gap"] == pytest.approx((by_role["target"][0]["loss"] - own["loss"]) / own["loss"])
    assert 0 <= float(rows[2]["top1"]) <= 100 and 0 <= float(rows[3]["top1"]) <= 100
    # compute: the proxies' search is measured against the same search at the (wider, costlier) target
    assert report["target_tuning_measured"] is True
    assert report["proxy_tuning_flops"] == pytest.approx(sum(t["flops"] for t in by_role["proxy"]))
    assert report["target_tuning_flops"] == pytest.approx(sum(t["flops"] for t in by_role["target-search"]))
    assert 0 < report["proxy_over_target_flops"] < 1
    assert "transfer gap" in stdout and "tuning compute" in stdout
    assert len(list(csv.reader(open(out / "trials.csv")))) == 1 + len(report["trials"])


def test_ghn_tune_coord_check_with_predicted_init(tmp_path, capsys):
    ckpt = save_tiny_ghn(tmp_path / "g.safetensors")
    out = tmp_path / "c"
    status, stdout, err = run_ghn(["tune", "--coord-check", "mlp", "--widths", "16", "64", "--steps", "2", "--ckpt",
                                   ckpt, "--out", str(out)], capsys)
    assert status == 0, err
    report = json.load(open(out / "coord_check.json"))
    assert [(c["param"], c["init"]) for c in report["checks"]] == [
        (p, i) for i in ("default", "predicted", "predicted+orth") for p in ("sp", "mup")]
    assert (out / "coord_check.png").stat().st_size > 0
    rows = list(csv.DictReader(open(out / "coord_check.csv")))
    assert len(rows) == 6 * 3 * 2 * 2  # checks x layers x widths x steps
    assert stdout.count(" init: ") == 6


@pytest.mark.parametrize("argv, message", [
    (["tune", "mlp", "--proxy-widths", "64", "--target-width", "32"], "must be wider than every proxy"),
    (["tune", "mlp", "--init", "predicted"], "--init predicted needs a GHN"),
    (["tune", "alexnet"], "is not a width family"),
    (["tune", "mlp", "--search", "random"], "--search random needs --trials"),
    (["tune", "mlp", "--steps", "0"], "--steps must be >= 1"),
    (["tune", "mlp", "--search", "grid", "--trials", "3"], "drop --trials or use --search random"),
    (["tune", "--coord-check", "mlp", "--target-width", "64"], "--target-width belong to a search"),
    (["tune", "mlp", "--widths", "8", "16"], "--widths and --lr set the coordinate check"),
    (["tune", "mlp", "--keep-classifier-init"], "--keep-classifier-init applies to predicted parameters"),
    (["tune", "mlp", "--seeds", "0"], "--seeds must be >= 1"),
    (["tune", "--coord-check", "mlp", "--seeds", "2"], "--seeds belong to a search"),
    (["tune", "mlp", "--readout-zero-init", "--param", "sp"], "--readout-zero-init starts a default-initialised"),
    (["tune", "mlp", "--init", "predicted", "--ckpt", "x.safetensors", "--init-mults", "1"],
     "--init-mults scales a default initialisation"),
    (["tune", "mlp", "--output-mults", "2000"], "--output-mults takes log2 exponents between -60 and 60"),
    (["tune", "mlp", "--lr-range", "2000", "2000"], "--lr-range takes log2 exponents"),
    (["tune", "--coord-check", "mlp", "--widths", "4", "8", "--lr", "inf"], "--lr must be a finite number"),
])
def test_ghn_tune_bad_input(tmp_path, capsys, argv, message):
    status, _, err = run_ghn(argv + ["--out", str(tmp_path / "o")], capsys)
    assert_usage_error(status, err, message)


def test_lr_sweep_plot_leaves_out_diverged_runs(tmp_path):
    from train.plots import plot_lr_sweep

    losses = {p: {w: {2.0 ** -6: 0.4 / w, 2.0 ** -5: 0.3, 2.0 ** -4: math.inf} for w in (1, 2)} for p in ("sp", "mup")}
    path = plot_lr_sweep(losses, str(tmp_path / "fig1.png"), title="t")
    assert (tmp_path / "fig1.png").stat().st_size > 0 and path.endswith("fig1.png")


def test_ghn_tune_random_search_draws_trials(tmp_path, capsys):
    out = tmp_path / "r"
    status, _, err = run_ghn(["tune", "mlp", "--proxy-widths", "16", "--target-width", "32", "--lr-range", "-8", "-4",
                              "--output-mults", "-1", "0", "--trials", "3", "--steps", "2", "--out", str(out)], capsys)
    assert status == 0, err
    report = json.load(open(out / "tune.json"))
    proxy = [t for t in report["trials"] if t["role"] == "proxy"]
    assert report["settings"] == 3 and len(proxy) == 3
    assert len({(t["lr"], t["output_mult"]) for t in proxy}) == 3
    assert report["target_tuning_measured"] is False and report["transfer_gap"] is None


def test_ghn_tune_seeds_average_every_setting(tmp_path, capsys):
    out = tmp_path / "s"
    status, stdout, err = run_ghn(["tune", "mlp", "--proxy-widths", "16", "--target-width", "32", "--lr-range", "-6",
                                   "-5", "--steps", "3", "--seed", "2", "--seeds", "2", "--verify", "--out", str(out)],
                                  capsys)
    assert status == 0, err
    report = json.load(open(out / "tune.json"))
    assert report["seeds"] == 2 and all(t["seeds"] == 2 for t in report["trials"])
    rows = list(csv.DictReader(open(out / "tune.csv")))
    assert {r["seeds"] for r in rows} == {"2"}
    from train.data import eval_batches, load_digits

    family, data = width_family("mlp", 10, 8), load_digits(8)
    heldout = list(eval_batches(data, "heldout", batch_size=256))
    first = report["trials"][0]
    alone = [run_trial(family, 16, Setting(first["lr"]), data, param="mup", steps=3, optimizer="adam", seed=s).loss
             for s in (2, 3)]
    assert first["loss"] == pytest.approx(sum(alone) / 2)
    target = next(t for t in report["trials"] if t["role"] == "target")
    runs = [run_trial(family, 32, Setting(target["lr"]), data, param="mup", steps=3, optimizer="adam", seed=s,
                      heldout=heldout) for s in (2, 3)]
    assert target["top1"] == pytest.approx(sum(r.top1 for r in runs) / 2)  # the target's top-1: mean over seeds
    assert target["loss"] == pytest.approx(sum(r.loss for r in runs) / 2)
    own = rows[-1]
    assert own["role"] == "target, own optimum" and own["top1"] != ""
    assert "mean of 2 seeds" in err
