"""Tests for :mod:`train.evaluate` and :mod:`train.accuracy`: accuracies with predicted parameters agree with the
GHN's own in-place prediction, summaries are what the per-network results say, the SGD baseline is the project's
one recipe, the table has the paper's Table 2 layout (rows of split and width, the wide split at 4x the base width,
rows outside the GHN's training widths flagged), BatchNorm modes behave as documented, and the one accuracy
function gives hand-computed values."""

import copy
import json
import math

import pytest
import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.files import write_json
from archspace.seeding import mix_seed
from ghn.threads import one_thread as single_thread
from train.accuracy import Accuracy, accuracy
from train.data import eval_batches
from train.evaluate import (
    EvalRow,
    evaluate_ghn,
    evaluate_table,
    format_table,
    row_width,
    split_nets,
    torchvision_nets,
    width_warning,
)
from train.finetune import accuracy_after_sgd

from .conftest import make_ghn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_nets():
    return split_nets("test", 2, width=4)


def test_split_nets_are_unseen_test_nets_and_reproducible(two_nets):
    again = split_nets("test", 2, width=4)
    assert [n for n, _ in two_nets] == ["test/0", "test/1"]
    for (_, a), (_, b) in zip(two_nets, again):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    with pytest.raises(UsageError, match="unknown architecture split 'tset'; did you mean test"):
        split_nets("tset", 1)
    with pytest.raises(UsageError, match="has nets 0-99"):
        split_nets("wide", 5, start=98)


def test_torchvision_nets_suggest_a_name():
    with pytest.raises(UsageError, match="did you mean resnet18"):
        torchvision_nets(["resnet18", "resnet19"])


def test_predicted_accuracy_matches_in_place_prediction(two_nets, small_digits):
    ghn = make_ghn(0)
    res = evaluate_ghn(ghn, two_nets, small_digits, split_name="test", progress=False, device="cpu")
    assert res["num_nets"] == 2 and res["bn_mode"] == "batch" and res["num_images"] == 64
    assert res["classifier"] == "predicted"
    top1 = [r["top1"] for r in res["nets"]]
    assert res["top1_mean"] == pytest.approx(sum(top1) / 2)
    assert res["top1_stderr"] == pytest.approx(abs(top1[0] - top1[1]) / 2)  # sample sd / sqrt(n), n = 2
    # The same numbers through GHN.predict (parameters set in the module, BN in batch mode).
    batches = eval_batches(small_digits, "test", 64)
    for (_, net), r in zip(two_nets, res["nets"]):
        m = ghn.predict(copy.deepcopy(net), 32, bn_mode="batch")
        assert accuracy(m, batches, bn_mode="batch").top1 == pytest.approx(r["top1"])
        assert accuracy(net, batches, bn_mode="batch").top1 == pytest.approx(r["top1_default_init"])


def test_each_sgd_figure_is_its_own_run_of_the_one_recipe(small_digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    res = evaluate_ghn(None, [("tiny", net)], small_digits, split_name="test", sgd_steps=[2, 1], batch_size=16,
                       progress=False, device="cpu")
    batches = eval_batches(small_digits, "test", 16)
    for steps in (1, 2):  # not a snapshot of the 2-step run at step 1: a finished 1-step schedule
        expected = accuracy_after_sgd(net, small_digits, batches, steps=steps, batch_size=16, seed=mix_seed(0, 7, 0))
        assert res["top1_sgd"][str(steps)]["mean"] == pytest.approx(expected.top1)
        assert res["nets"][0]["top1_sgd"][steps] == pytest.approx(expected.top1)
    assert "cosine" in res["sgd_recipe"] and "SGD" in format_table(res)
    assert math.isnan(res["top1_fraction_of_sgd"])  # no GHN: no fraction


def test_row_width_is_the_base_width_and_4x_it_for_wide():
    assert row_width("test", None, 8) == 8 and row_width("wide", None, 8) == 32  # never the base width itself
    assert row_width("deep", None, 8) == 8 and row_width("bnfree", None, 16) == 16
    assert row_width("test", None, None) == 32 and row_width("wide", None, None) == 128  # DeepNets-1M's own
    assert row_width("wide", 8, 8) == 8 and row_width("test", 16, 8) == 16  # a row's own width is kept
    assert row_width("predefined", None, 8) is None and row_width("torchvision", None, 8) is None


def test_width_warning_only_outside_the_trained_widths():
    assert width_warning(EvalRow("test", 8), [8, 32]) is None
    assert width_warning(EvalRow("wide", 32), [8, 32]) is None
    assert width_warning(EvalRow("test", 8), None) is None  # a GHN that does not record its widths
    line = width_warning(EvalRow("wide", 64), [8, 32])
    assert "\n" not in line and line.startswith("WARNING: eval row wide@64") and "widths 8-32" in line
    assert "width 8 " in width_warning(EvalRow("test", 16), [8, 8])


REQUIRED_ROW_KEYS = ("split", "width", "num_nets", "top1_mean", "top1_stderr", "top1_default_init_mean",
                     "top1_default_init_stderr", "top1_sgd", "sgd_num_nets", "top1_fraction_of_sgd", "nets")


@pytest.fixture(scope="module")
def table(small_digits):
    """A two-row table of a tiny GHN trained (says its metadata) on widths 4-8: test at the base width 4 with 2
    nets, wide at 4x it, SGD on the first net of each row."""
    rows = [EvalRow("test", row_width("test", None, 4), 2), EvalRow("wide", row_width("wide", None, 4), 1)]
    with single_thread():  # a module fixture runs before the function-scoped one_thread
        return evaluate_table(make_ghn(0), rows, small_digits, width_range=[4, 8], sgd_steps=[1], sgd_num_nets=1,
                              batch_size=32, progress=False, device="cpu")


def test_table_rows_carry_split_width_and_the_figures(table, small_digits):
    assert [(r["split"], r["width"], r["num_nets"]) for r in table["rows"]] == [("test", 4, 2), ("wide", 16, 1)]
    for r in table["rows"]:
        for key in REQUIRED_ROW_KEYS:
            assert key in r, key
        assert "dataset" not in r and "bn_mode" not in r  # shared settings are written once, at the top
    assert table["dataset"] == "digits" and table["num_images"] == 64 and table["bn_mode"] == "batch"
    assert table["sgd_steps"] == [1] and table["trained_width_range"] == [4, 8]
    assert [r["in_trained_widths"] for r in table["rows"]] == [True, False]
    # The wide row's nets really are 4x wider: the same nets built at width 16.
    wide = split_nets("wide", 1, width=16, image_size=small_digits.image_size)
    assert table["rows"][1]["nets"][0]["num_params"] == sum(p.numel() for p in wide[0][1].parameters())


def test_fraction_of_sgd_is_predicted_over_sgd_on_the_same_nets(table):
    test = table["rows"][0]
    assert test["sgd_num_nets"] == 1 and len(test["nets"]) == 2  # SGD on the first net only, every net kept
    first = test["nets"][0]
    sgd = test["top1_sgd"]["1"]
    assert sgd["num_nets"] == 1 and sgd["mean"] == pytest.approx(first["top1_sgd"][1])
    assert sgd["top1_predicted_mean"] == pytest.approx(first["top1"])  # not the mean over both nets
    assert test["top1_fraction_of_sgd"] == pytest.approx(first["top1"] / first["top1_sgd"][1])


def test_table_is_printed_one_line_per_row(table):
    text = format_table(table)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("split"))
    for column in ("width", "nets", "predicted", "default init", "1 SGD steps", "of SGD"):
        assert column in lines[head], column
    test, wide = lines[head + 1], lines[head + 2]
    t = table["rows"][0]
    assert test.split()[:3] == ["test", "4", "2"]
    assert f"{t['top1_mean']:.1f} +- {t['top1_stderr']:.1f}" in test
    assert f"{100 * t['top1_fraction_of_sgd']:.0f}%" in test
    assert wide.split()[:3] == ["wide", "16+", "1"]  # wider than the trained widths: widened, marked
    assert "+ wider than the widths this GHN was trained on (4-8): predicted at width 8" in text and "cosine" in text


def test_worker_processes_give_the_same_figures(small_digits, one_thread):
    rows = [EvalRow("test", 4, 2), EvalRow("bnfree", 4, 1)]
    kwargs = dict(width_range=[4, 8], sgd_steps=[1], sgd_num_nets=1, batch_size=32, progress=False, device="cpu")
    here = evaluate_table(make_ghn(0), rows, small_digits, **kwargs)
    there = evaluate_table(make_ghn(0), rows, small_digits, workers=2, **kwargs)  # one thread each
    assert there["workers"] == 2
    for a, b in zip(here["rows"], there["rows"]):
        assert [n["name"] for n in a["nets"]] == [n["name"] for n in b["nets"]]
        for key in ("top1", "top5", "top1_default_init", "top1_sgd"):
            assert [n[key] for n in a["nets"]] == [n[key] for n in b["nets"]], key


def test_another_number_of_classes_needs_keep_classifier_init(two_nets, small_digits):
    from ghn import GHN
    from ghn.model import ClassMismatchError

    torch.manual_seed(0)
    ghn5 = GHN(max_shape=(16, 16, 7, 7), num_classes=5, hidden_dim=8)
    with pytest.raises(ClassMismatchError, match="keep_classifier_init"):
        evaluate_ghn(ghn5, two_nets, small_digits, split_name="test", sgd_steps=[1], progress=False, device="cpu")
    res = evaluate_ghn(ghn5, two_nets[:1], small_digits, split_name="test", progress=False, device="cpu",
                       keep_classifier_init=True)
    assert res["classifier"].startswith("default init") and "default initialisation" in format_table(res)
    m = ghn5.predict(copy.deepcopy(two_nets[0][1]), 32, bn_mode="batch", keep_classifier_init=True)
    expected = accuracy(m, eval_batches(small_digits, "test", 64), bn_mode="batch").top1
    assert res["nets"][0]["top1"] == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bn_mode="keep"), "bn_mode must be one of batch, running"),
    (dict(sgd_steps=[10, 0]), "sgd_steps must be positive"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(sgd_lr=-1.0), "sgd_lr must be > 0"),
])
def test_bad_arguments_are_usage_errors(two_nets, small_digits, kwargs, message):
    with pytest.raises(UsageError, match=message):
        evaluate_ghn(None, two_nets, small_digits, split_name="test", progress=False, device="cpu", **kwargs)


def test_default_init_only_without_ghn(two_nets, small_digits, tmp_path):
    res = evaluate_ghn(None, two_nets, small_digits, split_name="test", progress=False, device="cpu")
    assert math.isnan(res["top1_mean"]) and 0 <= res["top1_default_init_mean"] <= 100
    write_json(tmp_path / "eval.json", res)  # as ghn-eval writes it
    assert json.loads((tmp_path / "eval.json").read_text())["top1_mean"] is None  # NaN -> null, strict JSON


def test_accuracy_is_hand_computed_top1_top5_and_loss():
    # A "network" that returns its input as logits: 7 classes, 3 images with known scores.
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 4, 0],    # label 0: top-1 hit
                           [0.0, 9, 8, 7, 6, 5, 4],    # label 5: 5th highest, top-5 hit
                           [5.0, 4, 3, 2, 1, 0, 9]])   # label 5: 6th highest, miss
    labels = torch.tensor([0, 5, 5])
    got = accuracy(nn.Identity(), [(logits[:2], labels[:2]), (logits[2:], labels[2:])], bn_mode="running")
    expected_loss = float(nn.functional.cross_entropy(logits, labels))
    assert got == pytest.approx(Accuracy(100 / 3, 200 / 3, expected_loss))
    with pytest.raises(ValueError, match="no evaluation images"):
        accuracy(nn.Identity(), [], bn_mode="running")


def test_bn_modes_of_the_accuracy_leave_no_trace():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)  # wrong running statistics, as after parameter prediction
    batches = [(torch.randn(8, 3, 8, 8), torch.arange(8))]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batch = accuracy(net, batches, bn_mode="batch")
    running = accuracy(net, batches, bn_mode="running")
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert batch.loss != pytest.approx(running.loss)
    ref = copy.deepcopy(net).eval()
    ref[1].train()  # by hand: batch statistics in BN, dropout off
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(ref(batches[0][0]), batches[0][1]))
    assert batch.loss == pytest.approx(expected)
    with pytest.raises(ValueError, match="bn_mode"):
        accuracy(net, batches, bn_mode="keep")


def test_rows_wider_than_the_training_widths_are_predicted_narrow_and_widened(small_digits):
    """A GHN trained (says its metadata) on width 4 alone: the rows at widths 8 and 6 are predicted at width 4 and
    widened, so each net gives the top-1 of its width-4 prediction; with ``widen=False`` they are predicted
    directly (and differ)."""
    rows = [EvalRow("test", 4, 2), EvalRow("test", 8, 2), EvalRow("test", 6, 2)]
    kw = dict(width_range=[4, 4], batch_size=32, progress=False, device="cpu")
    table = evaluate_table(make_ghn(0), rows, small_digits, **kw)
    narrow, *wide = table["rows"]
    assert [r["predicted_at_width"] for r in table["rows"]] == [None, 4, 4]
    assert [r["num_nets_widened"] for r in table["rows"]] == [0, 2, 2]  # each net matched its widened sibling
    assert [n["widened_from"] for n in table["rows"][1]["nets"]] == [4, 4]
    assert [r["in_trained_widths"] for r in table["rows"]] == [True, False, False]
    for row in wide:
        assert [n["top1"] for n in row["nets"]] == pytest.approx([n["top1"] for n in narrow["nets"]], abs=1e-9)
        assert row["nets"][0]["num_params"] > narrow["nets"][0]["num_params"]  # the wide nets were evaluated
    assert "+ wider than the widths this GHN was trained on (4-4): predicted at width 4" in format_table(table)
    direct_table = evaluate_table(make_ghn(0), rows[1:2], small_digits, widen=False, **kw)
    direct = direct_table["rows"][0]
    assert direct["predicted_at_width"] is None
    assert "* outside the widths this GHN was trained on (4-4)" in format_table(direct_table)
    assert [n["top1"] for n in direct["nets"]] != [n["top1"] for n in narrow["nets"]]
    note = width_warning(rows[1], [4, 4], widen=True)
    assert "predicted at width 4 and widened" in note and "WARNING" not in note
    assert "WARNING" in width_warning(rows[1], [4, 4], widen=False)
