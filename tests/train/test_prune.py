"""``ghn prune`` (:mod:`train.prune`, :mod:`train.prune_cli`) at debug size: the rewind targets, the controls on the
same masks, one-shot pruning to IMP's count, the masks surviving rewinding and training, resuming after a level,
refusing another run's directory, and the command's outputs."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from archspace.errors import UsageError
from train.candidates import one_candidate
from train.data import eval_batches
from train.lottery import dense_masks, level_counts, magnitude_masks
from train.prune import PruneRun, PruneSettings, curve_label, parse_choices, parse_rewind

from .helpers import assert_usage_error, run_ghn, save_tiny_ghn

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = "archspace.mlp:lenet_300_100"


def settings(**kw) -> PruneSettings:
    base = dict(model=MLP, width=None, data="digits", image_size=8, levels=2, rate=0.2,
                rewind=("default", "step:3", "predicted"), controls=("reinit", "random"),
                oneshot=("predicted", "default"), seeds=(0, 1), steps=8, lr=0.05, batch_size=32, eval_every=4,
                include_classifier=False, keep_classifier_init=False, ckpt="fake")
    base.update(kw)
    return PruneSettings(**base)


def fake_predict(model):
    """A stand-in for a GHN: deterministic parameters that differ from the default initialisation."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.fixture(scope="module")
def digits8():
    from train.data import load_digits

    return load_digits(image_size=8)


def make_run(tmp_path, data, **kw):
    s = settings(**kw)
    return PruneRun(s, str(tmp_path), one_candidate(MLP), data, eval_batches(data, "heldout", limit=128),
                    predict=fake_predict if s.needs_ghn() else None)


def test_parse_rewind_and_choices():
    assert parse_rewind("default,step:50,predicted,default", 100) == ("default", "step:50", "predicted")
    for bad in ("step:0", "step:100", "step:x", "step:\u00b2", "init", ""):
        with pytest.raises(UsageError):
            parse_rewind(bad, 100)
    assert parse_choices("none", ("reinit", "random"), "--controls") == ()
    assert parse_choices("random,reinit", ("reinit", "random"), "--controls") == ("random", "reinit")
    with pytest.raises(UsageError, match="choose from"):
        parse_choices("shuffle", ("reinit", "random"), "--controls")
    assert curve_label("imp-step50", "step:50") == "IMP, rewind to step 50"
    assert curve_label("random", "step:50") == "control: random mask, same layer sparsity (step 50)"
    assert curve_label("oneshot-predicted", "default") == "one-shot from predicted magnitudes"


def test_imp_rewinds_controls_and_one_shot(tmp_path, digits8):
    run = make_run(tmp_path, digits8)
    starts = {}  # (curve, level) -> the state a run trained from
    train = run._train

    def recording_train(seed, key, level, start, masks, keep_steps=()):
        if seed == 0:
            starts[(key, level)] = {k: v.clone() for k, v in start.items()}
        return train(seed, key, level, start, masks, keep_steps)

    run._train = recording_train
    rows = run.run()
    seed0 = tmp_path / "seed-0"
    total = 192 * 300 + 300 * 100  # LeNet-300-100 on 3x8x8 images, classifier excluded
    by = {(r["seed"], r["curve"], r["level"]): r for r in rows}
    curves = {"imp-default", "imp-step3", "imp-predicted", "reinit", "random", "oneshot-predicted",
              "oneshot-default"}
    assert {c for _, c, _ in by} == curves
    for level in (1, 2):
        want = level_counts(total, 0.2, [level])[level]
        assert {by[(s, c, level)]["kept"] for s in (0, 1) for c in curves} == {want}  # one sparsity per level
    for c in ("imp-default", "imp-step3", "imp-predicted"):  # IMP curves start from their dense run
        assert by[(0, c, 0)]["fraction"] == 1.0

    def mask(key, level, seed=0):
        return {k: v.bool() for k, v in load_file(seed0 / key / f"level-{level:02d}" / "mask.safetensors").items()}

    def weights(key, level):
        return load_file(seed0 / key / f"level-{level:02d}" / "weights.safetensors")

    # Masks nest across levels and survive training: pruned weights are zero after the level's training.
    for key in ("imp-default", "imp-predicted", "random", "oneshot-predicted"):
        m, w = mask(key, 2), weights(key, 2)
        assert "layers.5" not in m  # the classifier stays dense
        for name, keep in m.items():
            assert (w[name + ".weight"][~keep] == 0).all() and (w[name + ".weight"][keep] != 0).any()
    for key in ("imp-default", "imp-step3"):
        assert all((mask(key, 2)[n] <= mask(key, 1)[n]).all() for n in mask(key, 1))
    # IMP's two steps (Frankle & Carbin, 2019, Sec. 2; Frankle et al., 2020): level 1 ranks the weights of the
    # trained dense net (not of its initialisation), and each level trains from its rewind point.
    dense = run._build(weights("dense-default", 0))
    assert all(torch.equal(mask("imp-default", 1)[n], v)
               for n, v in magnitude_masks(dense, dense_masks(dense), 0.2).items())
    init = run._build(load_file(seed0 / "start-default.safetensors"))
    assert any(not torch.equal(mask("imp-default", 1)[n], v)
               for n, v in magnitude_masks(init, dense_masks(init), 0.2).items())
    for key, start in (("imp-default", "default"), ("imp-step3", "step3"), ("imp-predicted", "predicted")):
        want = load_file(seed0 / f"start-{start}.safetensors")
        for level in (1, 2):
            assert all(torch.equal(starts[(key, level)][k], want[k]) for k in want)
    # Level 1 of the default and step-K curves prune the same trained dense net: the same mask.
    assert all(torch.equal(mask("imp-default", 1)[n], mask("imp-step3", 1)[n]) for n in mask("imp-default", 1))
    # The reinit control reuses the first rewind target's mask; the random control keeps its per-layer counts.
    for level in (1, 2):
        imp, rnd = mask("imp-default", level), mask("random", level)
        assert all(torch.equal(mask("reinit", level)[n], imp[n]) for n in imp)
        assert all(int(rnd[n].sum()) == int(imp[n].sum()) and not torch.equal(rnd[n], imp[n]) for n in imp)
    # The starting points: step 3 of the dense run is neither the initialisation nor the end of training.
    default, step3 = load_file(seed0 / "start-default.safetensors"), load_file(seed0 / "start-step3.safetensors")
    trained = weights("dense-default", 0)
    predicted = load_file(seed0 / "start-predicted.safetensors")
    w = "layers.1.weight"
    assert not torch.equal(default[w], step3[w]) and not torch.equal(step3[w], trained[w])
    assert torch.equal(predicted[w], fake_predict(one_candidate(MLP).build(image_size=8)).state_dict()[w])
    # One-shot from predicted magnitudes keeps the largest predicted weights.
    one = mask("oneshot-predicted", 1)
    kept_min = min(float(predicted[n + ".weight"][one[n]].abs().min()) for n in one)
    dropped_max = max(float(predicted[n + ".weight"][~one[n]].abs().max()) for n in one)
    assert kept_min >= dropped_max
    summary = run.summary()
    assert {r["seeds"] for r in summary} == {2}
    assert os.path.exists(tmp_path / "prune.csv") and os.path.exists(tmp_path / "runs.csv")


def test_resume_after_a_level_and_refuse_other_settings(tmp_path, digits8, monkeypatch):
    kw = dict(rewind=("default",), controls=("random",), oneshot=(), seeds=(0,), levels=2)
    first = {(r["curve"], r["level"]): r["accuracy"] for r in make_run(tmp_path, digits8, **kw).run()}
    # A run killed during level 2: its metrics were never written.
    os.remove(tmp_path / "seed-0" / "imp-default" / "level-02" / "metrics.json")
    os.remove(tmp_path / "seed-0" / "random" / "level-02" / "metrics.json")
    import train.prune

    trained = []
    real = train.prune.train_sgd

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train.prune, "train_sgd", counting)
    again = {(r["curve"], r["level"]): r["accuracy"] for r in make_run(tmp_path, digits8, **kw).run()}
    assert len(trained) == 2 and again == first  # only the unfinished runs, with the same results
    trained.clear()
    more = make_run(tmp_path, digits8, **{**kw, "levels": 3}).run()  # more levels extend the run
    assert len(trained) == 2 and max(r["level"] for r in more) == 3
    with pytest.raises(UsageError, match="other settings.*rate"):
        make_run(tmp_path, digits8, **{**kw, "rate": 0.5})


def test_predicted_targets_need_a_ghn(tmp_path, digits8):
    s = settings(rewind=("predicted",))
    with pytest.raises(UsageError, match="--ckpt"):
        PruneRun(s, str(tmp_path), one_candidate(MLP), digits8, [], predict=None)


def test_ghn_prune_command(tmp_path, capsys):
    ckpt = save_tiny_ghn(tmp_path / "ghn.safetensors")
    run_dir = tmp_path / "run"
    argv = ["prune", MLP, "--ckpt", ckpt, "--image-size", "8", "--levels", "2", "--seeds", "2", "--steps", "6",
            "--rewind", "step:2,predicted", "--run-dir", str(run_dir), "--eval-images", "64"]
    status, out, err = run_ghn(argv, capsys)
    assert status == 0, err
    assert "imp-step2" in out and "oneshot-predicted" in out and "64.0%" in out  # level 2 keeps 64%
    for name in ("prune.csv", "runs.csv", "sparsity.png", "settings.json"):
        assert (run_dir / name).exists()
    assert (run_dir / "sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "settings.json").read_text())["rewind"] == ["step:2", "predicted"]
    status, out, err = run_ghn(argv, capsys)  # the same command again: everything is done, nothing retrains
    assert status == 0 and "level" not in err
    status, _, err = run_ghn(argv[:-4] + ["--rate", "0.3", "--run-dir", str(run_dir)], capsys)
    assert_usage_error(status, err, "holds a run with other settings")
    status, _, err = run_ghn(argv[:-1] + ["128"], capsys)  # other held-out images: other accuracies
    assert_usage_error(status, err, "eval_images: 64 there, 128 now")
    save_tiny_ghn(ckpt, seed=1)  # another GHN at the same path: other predicted parameters
    status, _, err = run_ghn(argv, capsys)
    assert_usage_error(status, err, "ckpt_sha256")
    status, _, err = run_ghn(["prune", MLP, "--rewind", "predicted", "--run-dir", str(tmp_path / "x")], capsys)
    assert_usage_error(status, err, "need a GHN: pass --ckpt")
    ckpt5 = save_tiny_ghn(tmp_path / "ghn5.safetensors", num_classes=5)
    status, _, err = run_ghn(["prune", MLP, "--ckpt", ckpt5, "--image-size", "8", "--rewind", "predicted",
                              "--run-dir", str(tmp_path / "z")], capsys)
    assert_usage_error(status, err, "trained for 5 classes but digits has 10")
    assert not (tmp_path / "z" / "settings.json").exists()  # refused before the run directory was started
    status, _, err = run_ghn(["prune", MLP, "--rate", "0.9", "--levels", "8", "--image-size", "8",
                              "--run-dir", str(tmp_path / "y")], capsys)
    assert_usage_error(status, err, "would prune all")
    status, _, err = run_ghn(["prune", MLP, "--rewind", "step:999", "--steps", "10"], capsys)
    assert_usage_error(status, err, "K must be between 1")


def test_a_dense_run_diverging_before_the_rewind_step_is_a_usage_error(tmp_path, digits8):
    run = make_run(tmp_path, digits8, rewind=("step:6",), controls=(), oneshot=(), seeds=(0,), levels=1, lr=1e6)
    with pytest.raises(UsageError, match=r"diverged at step \d+, before the rewind point step:6"):
        run.run()


def test_diverged_runs_are_counted_apart_in_the_summary(tmp_path, digits8):
    run = make_run(tmp_path, digits8, rewind=("default",), controls=(), oneshot=(), seeds=(0,), levels=1, lr=1e6)
    run.run()
    (row,) = [r for r in run.summary() if r["level"] == 1]
    assert row["seeds"] == 1 and row["seeds_diverged"] == 1 and row["accuracy_mean"] is None


def test_the_predicted_start_gets_batchnorm_statistics(tmp_path, digits8):
    s = settings(model="deepnets:test/0", width=8, rewind=("predicted",), controls=(), oneshot=(), seeds=(0,))
    candidate = one_candidate("deepnets:test/0", width=8)
    run = PruneRun(s, str(tmp_path), candidate, digits8, [], predict=fake_predict)
    state = run._start(0, "predicted")
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(m.abs().sum() > 0 for m in means)  # estimated, not the 0 of an untouched BatchNorm
    fresh = fake_predict(candidate.build(num_classes=10, image_size=8)).state_dict()
    assert all(torch.equal(state[k], v) for k, v in fresh.items() if "running" not in k and "num_batches" not in k)
