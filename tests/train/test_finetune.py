"""Tests for :mod:`train.finetune` and ``ghn finetune`` (:mod:`train.finetune_cli`) at debug size on digits."""

import copy
import json
import math

import pytest
import torch
import torch.nn as nn

from train.data import eval_batches, load_digits
from train.finetune import Curve, evaluate, speedup, train_sgd


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two threads can make small nets many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


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
    before = evaluate(model, held)
    train_sgd(model, digits, steps=30, lr=0.05, batch_size=64)
    after = evaluate(model, held)
    assert after[1] < before[1] and after[0] > before[0] + 30


def test_batch_stats_evaluation_leaves_no_trace(digits):
    torch.manual_seed(0)
    model = tiny_cnn()
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)  # wrong running statistics, as after parameter prediction
    held = eval_batches(digits, "heldout", limit=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch_acc, batch_loss = evaluate(model, held, bn_batch_stats=True)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    running_acc, running_loss = evaluate(model, held)
    assert batch_loss != pytest.approx(running_loss)
    ref = copy.deepcopy(model).eval()
    ref[1].train()  # by hand: batch statistics in BN, dropout off
    with torch.no_grad():
        correct = sum(int((ref(x).argmax(1) == y).sum()) for x, y in held)
    assert batch_acc == pytest.approx(100 * correct / 128)


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


def test_curve_json_has_no_nan():
    c = Curve(eval_steps=[0], accuracy=[10.0], eval_loss=[math.inf])
    assert json.loads(json.dumps(c.as_dict()))["eval_loss"] == [None]


# ---- ghn finetune end to end ----------------------------------------------------------------------------------


#: Debug size: DeepNets-1M nets of width 8 on 16x16 digits.
SMALL = ["--width", "8", "--image-size", "16"]


def save_tiny_ghn(path, num_classes: int = 10) -> str:
    """An untrained debug-size GHN saved with ``GHN.save``."""
    from ghn import GHN

    torch.manual_seed(0)
    GHN(max_shape=(16, 16, 3, 3), num_classes=num_classes, hidden_dim=8).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def ghn_ckpt(tmp_path_factory):
    return save_tiny_ghn(tmp_path_factory.mktemp("ghn") / "ghn.safetensors")


def test_finetune_cli_compare_writes_curves_and_speedup(ghn_ckpt, tmp_path, capsys):
    from train.finetune_cli import main

    out, png = tmp_path / "ft.json", tmp_path / "ft.png"
    rc = main(["deepnets:test/0", "--ckpt", ghn_ckpt, *SMALL, "--compare", "--steps", "6", "--eval-every", "3",
               "--batch-size", "32", "--bn-batches", "2", "--eval-images", "128", "--plot", str(png),
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(out.read_text())
    warm, scratch = report["runs"]["predicted init"], report["runs"]["default init"]
    assert warm["eval_steps"] == scratch["eval_steps"] == [0, 3, 6]
    assert warm["loss_steps"] == scratch["loss_steps"] == list(range(1, 7))
    assert warm["loss"] != scratch["loss"]  # different starting points
    assert [r["step"] for r in report["speedup"]] == [0, 3, 6]
    assert "recomputed from 2" in report["bn_init"] and "recomputed from 2" in captured.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_keep_classifier_init_predicts_all_but_the_classifier(tmp_path):
    from archspace.sampler import get_net
    from train.rank import ghn_predictor, load_ghn

    ghn = load_ghn(save_tiny_ghn(tmp_path / "g.safetensors", num_classes=5))
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
    from train.finetune_cli import main

    ckpt = save_tiny_ghn(tmp_path / "g5.safetensors", num_classes=5)
    base = ["deepnets:test/0", "--ckpt", ckpt, *SMALL, "--steps", "2", "--eval-every", "2", "--bn-batches", "1",
            "--eval-images", "64"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "--keep-classifier-init" in err and "Traceback" not in err
    assert main([*base, "--keep-classifier-init"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["torchvision:resnet19"], "did you mean resnet18"),
    (["deepnets:test/0", "--checkpoints", "5", "--steps", "10", "--eval-every", "2"], "not evaluation steps"),
    (["deepnets:test/0", "--lr", "0"], "--lr must be > 0"),
])
def test_finetune_cli_bad_input_exits_2(ghn_ckpt, argv, message, capsys):
    from train.finetune_cli import main

    assert main([*argv, "--ckpt", ghn_ckpt]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("ghn finetune: error:")
