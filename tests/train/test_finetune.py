"""Tests for :mod:`train.finetune` (the SGD recipe, the speed-up report) and ``ghn finetune``
(:mod:`train.finetune_cli`) at debug size on digits."""

import copy
import json

import pytest
import torch
import torch.nn as nn

from train.accuracy import accuracy
from train.data import eval_batches
from train.finetune import SGD_GRAD_CLIP, Curve, accuracy_after_sgd, speedup, train_sgd

from .helpers import SMALL, assert_usage_error, break_plot, run_ghn, save_tiny_ghn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ghn_ckpt(tmp_path_factory) -> str:
    return save_tiny_ghn(tmp_path_factory.mktemp("ghn") / "ghn.safetensors")


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 8 * 8, num_classes))


def test_same_seed_same_run_different_seed_different_run(digits):
    held = eval_batches(digits, "heldout", limit=128)
    curves = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        curves.append(train_sgd(tiny_cnn(), digits, steps=6, lr=0.1, batch_size=32, seed=seed,
                                eval_batches=held, eval_every=3))
    assert curves[0].loss == curves[1].loss  # same data order, augmentation and dropout draws
    assert curves[0].loss != curves[2].loss
    assert curves[0].eval_steps == [0, 3, 6]
    assert curves[0].loss_steps == list(range(1, 7))


def test_training_reduces_loss(digits):
    torch.manual_seed(0)
    model = tiny_cnn()
    held = eval_batches(digits, "heldout")
    before = accuracy(model, held, bn_mode="running")
    train_sgd(model, digits, steps=30, lr=0.05, batch_size=64)
    after = accuracy(model, held, bn_mode="running")
    assert after.loss < before.loss and after.top1 > before.top1 + 30


def test_the_recipe_is_sgd_momentum_cosine_and_clipped(digits, monkeypatch):
    """What every "N SGD steps" figure runs: SGD(momentum 0.9, wd 5e-4), lr cosine-decayed to 0 over the N steps
    of the run, gradient norm clipped at 5 before every step."""
    seen = {"lr": [], "clip": []}
    step = torch.optim.SGD.step

    def record_step(self, *args, **kwargs):
        seen["lr"].append(self.param_groups[0]["lr"])
        seen["momentum"], seen["wd"] = self.param_groups[0]["momentum"], self.param_groups[0]["weight_decay"]
        return step(self, *args, **kwargs)

    clip = nn.utils.clip_grad_norm_

    def record_clip(params, max_norm, *args, **kwargs):
        seen["clip"].append(max_norm)
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", record_step)
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", record_clip)
    torch.manual_seed(0)
    train_sgd(tiny_cnn(), digits, steps=4, lr=0.08, batch_size=16)
    # cosine over 4 steps: lr_t = 0.08 * (1 + cos(pi t / 4)) / 2 at steps t = 0..3
    assert seen["lr"] == pytest.approx([0.08, 0.08 * (1 + 2 ** -0.5) / 2, 0.04, 0.08 * (1 - 2 ** -0.5) / 2])
    assert (seen["momentum"], seen["wd"]) == (0.9, 5e-4)
    assert seen["clip"] == [SGD_GRAD_CLIP] * 4


def test_accuracy_after_sgd_trains_a_copy_and_scores_a_diverged_run_as_chance(digits):
    held = eval_batches(digits, "heldout", limit=128)
    torch.manual_seed(0)
    model = tiny_cnn()
    before = copy.deepcopy(model.state_dict())
    got = accuracy_after_sgd(model, digits, held, steps=3, batch_size=16, bn_mode="running")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the model itself is untouched
    ref = copy.deepcopy(model)
    train_sgd(ref, digits, steps=3, batch_size=16)
    assert got == accuracy(ref, held, bn_mode="running")
    with torch.no_grad():
        model[-1].bias.fill_(float("nan"))
    assert accuracy_after_sgd(model, digits, held, steps=3, batch_size=16) == (10.0, 50.0, float("inf"))


def test_speedup_counts_scratch_steps_to_match():
    warm = Curve(eval_steps=[0, 10, 20, 30], accuracy=[50.0, 60.0, 70.0, 80.0])
    scratch = Curve(eval_steps=[0, 10, 20, 30], accuracy=[10.0, 55.0, 65.0, 72.0])
    rows = {r["step"]: r for r in speedup(warm, scratch, [0, 10, 20, 30])}
    assert rows[0]["scratch_steps"] == 10 and rows[0]["speedup"] is None
    assert rows[10]["scratch_steps"] == 20 and rows[10]["speedup"] == pytest.approx(2.0)
    assert rows[20]["scratch_steps"] == 30 and rows[20]["speedup"] == pytest.approx(1.5)
    assert rows[30]["scratch_steps"] is None and rows[30]["speedup_lower_bound"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not an evaluation step"):
        speedup(warm, scratch, [5])


def test_speedup_of_diverged_runs():
    warm = Curve(eval_steps=[0, 10], accuracy=[50.0, 60.0], diverged_at=15)  # stopped at step 15 of 30
    scratch = Curve(eval_steps=[0, 10, 20, 30], accuracy=[10.0, 55.0, 65.0, 72.0])
    rows = {r["step"]: r for r in speedup(warm, scratch, [0, 10, 20, 30])}
    assert rows[10]["speedup"] == pytest.approx(2.0)
    assert rows[20] == rows[30] | {"step": 20} and rows[30]["warm_accuracy"] is None
    assert rows[30]["warm_diverged_at"] == 15 and rows[30]["speedup"] is None
    # a from-scratch run that diverged at step 3 has a budget of the planned 30 steps, not of its last evaluation
    scratch = Curve(eval_steps=[0], accuracy=[10.0], diverged_at=3)
    warm = Curve(eval_steps=[0, 10, 20, 30], accuracy=[50.0, 60.0, 70.0, 80.0])
    rows = {r["step"]: r for r in speedup(warm, scratch, [10], budget=30)}
    assert rows[10]["scratch_steps"] is None and rows[10]["speedup_lower_bound"] == pytest.approx(3.0)


# ---- ghn finetune end to end ----------------------------------------------------------------------------------


def test_finetune_cli_reports_diverged_runs(ghn_ckpt, tmp_path, capsys):
    out = tmp_path / "ft.json"
    status, printed, err = run_ghn(["finetune", "deepnets:test/0", "--ckpt", ghn_ckpt, *SMALL, "--compare",
                                    "--steps", "4", "--eval-every", "2", "--batch-size", "32", "--bn-batches", "1",
                                    "--eval-images", "64", "--lr", "1e12", "--checkpoints", "0,2,4", "--out",
                                    str(out)], capsys)
    assert status == 0, err  # results, not a traceback, and the file is written
    assert "diverged at step" in printed and "lower --lr" in printed
    rows = json.loads(out.read_text())["speedup"]["predicted+orth"]
    assert rows[-1]["warm_accuracy"] is None and rows[-1]["warm_diverged_at"] >= 1


def test_finetune_cli_compare_writes_curves_and_speedup(ghn_ckpt, tmp_path, capsys):
    out, png = tmp_path / "ft.json", tmp_path / "ft.png"
    status, _, err = run_ghn(["finetune", "deepnets:test/0", "--ckpt", ghn_ckpt, *SMALL, "--compare", "--steps", "6",
                              "--eval-every", "3", "--batch-size", "32", "--bn-batches", "2", "--eval-images", "128",
                              "--plot", str(png), "--out", str(out)], capsys)
    assert status == 0, err
    report = json.loads(out.read_text())
    assert report["inits"] == ["predicted+orth", "default"]  # the default start: the published remedy (README)
    warm, scratch = report["runs"]["predicted+orth init"], report["runs"]["default init"]
    assert warm["eval_steps"] == scratch["eval_steps"] == [0, 3, 6]
    assert warm["loss_steps"] == scratch["loss_steps"] == list(range(1, 7))
    assert warm["loss"] != scratch["loss"]  # different starting points
    assert [r["step"] for r in report["speedup"]["predicted+orth"]] == [0, 3, 6]
    assert "recomputed from 2" in report["bn_init"] and "recomputed from 2" in err
    assert report["classifier"] == "predicted" and "cosine" in report["optimizer"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_cli_widens_nets_wider_than_the_ghn_was_trained_on(tmp_path, capsys):
    """A GHN trained (says its metadata) on width 4: the width-8 net is predicted at 4 and widened, so it starts at
    the width-4 net's accuracy, and the log says that the plain prediction's channel copies stay identical."""
    from ghn import GHN

    ckpt = str(tmp_path / "ghn4.safetensors")
    torch.manual_seed(0)
    GHN(max_shape=(16, 16, 3, 3), num_classes=10, hidden_dim=8).save(ckpt, extra={"train_width_range": "[4, 4]"})
    start = {}
    for width in ("4", "8"):
        out = tmp_path / f"w{width}.json"
        status, _, err = run_ghn(["finetune", "deepnets:test/0", "--ckpt", ckpt, "--width", width, "--image-size",
                                  "16", "--init", "predicted", "--steps", "1", "--eval-every", "1", "--batch-size",
                                  "32", "--eval-images", "128", "--out", str(out)], capsys)
        assert status == 0, err
        assert ("predicted at width 4 and widened" in err) == (width == "8")
        report = json.loads(out.read_text())
        start[width] = report["accuracy_at_start_batch_stats"]["predicted"]
        assert report["params"] > 0
    assert start["8"] == pytest.approx(start["4"], abs=1e-9)


def test_finetune_cli_loads_the_digits_at_the_size_the_ghn_was_trained_at(tmp_path, capsys):
    ckpt = save_tiny_ghn(tmp_path / "ghn12.safetensors", image_size=12)
    base = ["finetune", "deepnets:test/0", "--ckpt", ckpt, "--width", "8", "--steps", "2", "--eval-every", "2",
            "--batch-size", "16", "--bn-batches", "1", "--eval-images", "32"]
    sizes = []
    for extra in ([], ["--image-size", "16"]):
        out = tmp_path / f"ft{len(sizes)}.json"
        status, _, err = run_ghn([*base, *extra, "--out", str(out)], capsys)
        assert status == 0, err
        sizes.append(json.loads(out.read_text())["image_size"])
    assert sizes == [12, 16]  # the GHN's training size (digits default 32 otherwise); --image-size wins


def test_data_image_size_rule():
    from argparse import Namespace

    from train.cli_args import data_image_size

    class Ghn:
        image_size = 16

    assert data_image_size(Namespace(image_size=None, data="digits"), Ghn()) == 16
    assert data_image_size(Namespace(image_size=24, data="digits"), Ghn()) == 24
    assert data_image_size(Namespace(image_size=None, data="cifar10"), Ghn()) is None  # the dataset's own
    assert data_image_size(Namespace(image_size=None, data="digits"), None) is None


def test_finetune_cli_every_init_and_warmup(ghn_ckpt, tmp_path, capsys):
    out = tmp_path / "ft.json"
    status, printed, err = run_ghn(["finetune", "deepnets:test/0", "--ckpt", ghn_ckpt, *SMALL, "--init",
                                    "predicted,predicted+noise,predicted+orth", "--beta", "0.5", "--warmup", "2",
                                    "--compare", "--steps", "4", "--eval-every", "2", "--batch-size", "16",
                                    "--bn-batches", "1", "--eval-images", "64", "--out", str(out)], capsys)
    assert status == 0, err
    report = json.loads(out.read_text())
    assert report["inits"] == ["predicted", "predicted+noise", "predicted+orth", "default"]
    assert set(report["runs"]) == {f"{i} init" for i in report["inits"]}
    assert set(report["speedup"]) == {"predicted", "predicted+noise", "predicted+orth"}
    losses = [tuple(r["loss"]) for r in report["runs"].values()]
    assert len(set(losses)) == 4  # four different starting points
    assert printed.count("speed-up of the") == 3 and report["warmup"] == 2
    for argv, message in ((["--init", "pretrained"], "choose one or more of"),
                          (["--warmup", "9", "--steps", "4"], "--warmup 9 is longer than the run"),
                          (["--beta", "-1"], "--beta must be >= 0")):
        assert_usage_error(*run_ghn(["finetune", "deepnets:test/0", "--ckpt", ghn_ckpt, *argv], capsys)[::2],
                           message)


def test_warmup_schedule_values(digits, monkeypatch):
    """Linear warm-up to the peak, then the cosine decay over the remaining steps; without warm-up the factors are
    CosineAnnealingLR's."""
    from train.finetune import lr_factor

    assert [lr_factor(t, 6, 2) for t in range(6)] == pytest.approx(
        [0.5, 1.0, 1.0, (1 + 2 ** -0.5) / 2, 0.5, (1 - 2 ** -0.5) / 2])
    assert [lr_factor(t, 4) for t in range(4)] == pytest.approx([1.0, (1 + 2 ** -0.5) / 2, 0.5, (1 - 2 ** -0.5) / 2])
    seen = []
    step = torch.optim.SGD.step

    def record_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", record_step)
    torch.manual_seed(0)
    train_sgd(tiny_cnn(), digits, steps=6, lr=0.1, batch_size=16, warmup=2)
    assert seen == pytest.approx([0.1 * lr_factor(t, 6, 2) for t in range(6)])
    with pytest.raises(ValueError, match="warmup"):
        train_sgd(tiny_cnn(), digits, steps=3, warmup=4)


def test_finetune_cli_writes_the_report_before_a_plot_that_fails(ghn_ckpt, tmp_path, capsys, monkeypatch):
    break_plot(monkeypatch, "plot_finetune_curves")
    out = tmp_path / "ft.json"
    with pytest.raises(RuntimeError, match="no display"):
        run_ghn(["finetune", "deepnets:test/0", "--ckpt", ghn_ckpt, *SMALL, "--compare", "--steps", "2",
                 "--eval-every", "2", "--batch-size", "16", "--bn-batches", "1", "--eval-images", "64",
                 "--plot", str(tmp_path / "ft.png"), "--out", str(out)], capsys)
    assert json.loads(out.read_text())["runs"]["default init"]["eval_steps"] == [0, 2]


def test_keep_classifier_init_predicts_all_but_the_classifier(tmp_path):
    from archspace.sampler import get_net
    from ghn import GHN
    from train.rank import ghn_predictor

    ghn = GHN.load(save_tiny_ghn(tmp_path / "g.safetensors", num_classes=5))
    torch.manual_seed(0)
    model = get_net("test", 0, num_classes=10, width=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ghn_predictor(ghn, 32, keep_classifier_init=True)(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    kept = {n for n, p in model.named_parameters() if p is classifier.weight or p is classifier.bias}
    assert kept and not kept & changed
    assert len(changed) == len(before) - len(kept)


def test_finetune_cli_other_classes_needs_keep_classifier_init(tmp_path, capsys):
    ckpt = save_tiny_ghn(tmp_path / "g5.safetensors", num_classes=5)
    base = ["finetune", "deepnets:test/0", "--ckpt", ckpt, *SMALL, "--steps", "2", "--eval-every", "2",
            "--bn-batches", "1", "--eval-images", "64", "--batch-size", "16"]
    line = assert_usage_error(*run_ghn(base, capsys)[::2], "--keep-classifier-init")
    assert "5 classes" in line and "10 outputs" in line
    out = tmp_path / "ft.json"
    status, printed, err = run_ghn([*base, "--keep-classifier-init", "--out", str(out)], capsys)
    assert status == 0, err
    assert "kept at its default initialisation" in err and "classifier default init" in printed
    assert json.loads(out.read_text())["classifier"] == "default init (--keep-classifier-init)"


@pytest.mark.parametrize("argv, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    (["deepnets:test/0-3"], "names 4 architectures"),
    (["deepnets:test/0", "--checkpoints", "5", "--steps", "10", "--eval-every", "2"], "not evaluation steps"),
    (["deepnets:test/0", "--checkpoints", "a,b"], "comma list of steps"),
    (["deepnets:test/0", "--lr", "0"], "--lr must be > 0, got 0.0"),
    (["deepnets:test/0", "--lr", "inf"], "--lr must be a finite number, got inf"),
    (["deepnets:test/0", "--beta", "nan"], "--beta must be a finite number, got nan"),
    (["deepnets:test/0", "--init", "predicted+orth", "--noise-from-layer", "999"],
     "weight matrices besides its classifier), got 999: lower --noise-from-layer"),
    (["deepnets:test/0", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["deepnets:test/0", "--steps", "-5"], "--steps must be >= 1, got -5"),
    (["deepnets:test/0", "--width", "-1"], "--width must be >= 2, got -1"),
    (["deepnets:test/0", "--threads", "0"], "threads must be a positive integer, 'auto' or null, got '0'"),
    (["deepnets:test/0", "--eval-images", "0"], "--eval-images must be >= 1, got 0"),
    (["deepnets:test/0", "--bn-batches", "0"], "--bn-batches must be >= 1, got 0"),
    (["deepnets:test/0", "--batch-size", "5000"], "larger than the 1437 training images"),
    (["deepnets:test/0", "--out", "."], "--out . is a directory"),
    (["deepnets:test/0", "--plot", "."], "--plot . is a directory"),
    (["deepnets:test/0", "--data", "cifar10", "--data-root", "/nonexistent"], "/nonexistent"),
])
def test_finetune_cli_bad_input_is_one_line(ghn_ckpt, argv, message, capsys):
    assert_usage_error(*run_ghn(["finetune", *argv, "--ckpt", ghn_ckpt], capsys)[::2], message)


def test_finetune_cli_bad_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    for ckpt in (tmp_path, tmp_path / "missing.safetensors", tmp_path / "truncated.safetensors"):
        status, _, err = run_ghn(["finetune", "deepnets:test/0", "--ckpt", str(ckpt)], capsys)
        assert str(ckpt) in assert_usage_error(status, err, "checkpoint")


def test_finetune_cli_model_that_does_not_run_at_the_input_size(ghn_ckpt, capsys):
    status, _, err = run_ghn(["finetune", "tests.train.helpers:cnn_32", "--ckpt", ghn_ckpt, "--image-size", "16",
                              "--steps", "1"], capsys)
    assert_usage_error(status, err, "does not run at input size 16")
