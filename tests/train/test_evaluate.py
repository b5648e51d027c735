"""Tests for :mod:`train.evaluate`: accuracies with predicted parameters agree with the GHN's own in-place
prediction, summaries are what the per-network results say, BatchNorm modes behave as documented."""

import math

import pytest
import torch
import torch.nn as nn

from train.evaluate import accuracy, evaluate_ghn, set_bn_mode, split_nets, write_eval_json

from .conftest import make_ghn


@pytest.fixture(scope="module")
def two_nets():
    return split_nets("test", 2, width=4)


def test_split_nets_are_unseen_test_nets_and_reproducible(two_nets):
    again = split_nets("test", 2, width=4)
    assert [n for n, _ in two_nets] == ["test/0", "test/1"]
    for (_, a), (_, b) in zip(two_nets, again):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="unknown architecture split"):
        split_nets("nope", 1)


def test_predicted_accuracy_matches_in_place_prediction(two_nets, small_digits):
    import copy

    ghn = make_ghn(0)
    res = evaluate_ghn(ghn, two_nets, small_digits, split_name="test", sgd_steps=[1], progress=False,
                       device="cpu")
    assert res["num_nets"] == 2 and res["bn_mode"] == "batch" and res["num_images"] == 64
    top1 = [r["top1"] for r in res["nets"]]
    assert res["top1_mean"] == pytest.approx(sum(top1) / 2)
    assert res["top1_stderr"] == pytest.approx(abs(top1[0] - top1[1]) / 2)
    assert res["top1_sgd"]["1"]["num_nets"] == 2
    # The same numbers through GHN.predict (parameters copied into the module, BN in batch mode).
    from train.data import eval_batches

    batches = eval_batches(small_digits, "test", 64)
    for (_, net), r in zip(two_nets, res["nets"]):
        m = copy.deepcopy(net)
        ghn.predict(m, 32, bn_mode="batch")
        assert accuracy(m, batches, bn_mode="batch")[0] == pytest.approx(r["top1"])


def test_default_init_only_without_ghn(two_nets, small_digits, tmp_path):
    res = evaluate_ghn(None, two_nets, small_digits, split_name="test", progress=False, device="cpu")
    assert math.isnan(res["top1_mean"]) and 0 <= res["top1_default_init_mean"] <= 100
    write_eval_json(str(tmp_path / "eval.json"), res)
    import json

    assert json.loads((tmp_path / "eval.json").read_text())["top1_mean"] is None  # NaN -> null


def test_bn_modes():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    set_bn_mode(net, "batch")
    assert net[1].training and not net[2].training
    set_bn_mode(net, "running")
    assert not net[1].training
    with pytest.raises(ValueError, match="bn_mode"):
        set_bn_mode(net, "frozen")
    # accuracy() in batch mode leaves the BatchNorm buffers as they were.
    before = net[1].running_mean.clone()
    top1, top5 = accuracy(net, [(torch.randn(8, 3, 8, 8) + 3, torch.zeros(8).long())], bn_mode="batch")
    assert torch.equal(net[1].running_mean, before) and 0 <= top1 <= top5 <= 100
