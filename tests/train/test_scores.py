"""The ranking scores of train/scores.py on tiny networks with known values."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from train.scores import (
    ALL_SCORES,
    SCORES,
    SHORT_SGD_STEPS,
    VOTE,
    add_vote,
    candidate_scores,
    check_inputs,
    forward_flops,
    graph_depth,
    needs_ghn,
    per_candidate_scores,
    random_score,
    rank_average,
    short_sgd_score,
    short_sgd_steps,
)
from train.zero_cost import synflow


def _net(convs: int = 1) -> nn.Module:
    layers = [nn.Conv2d(3, 4, 3, padding=1, bias=False)]
    layers += [m for _ in range(convs - 1) for m in (nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False))]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 5, bias=False))


def _task(n: int = 64, side: int = 4, classes: int = 5, seed: int = 0):
    """A tiny in-memory task: ``n`` random ``3 x side x side`` images whose label is the brightest of ``classes``
    fixed pixels (learnable by the tiny nets in a few SGD steps)."""
    from train.data import ImageData, TensorImages

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    labels = images[:, 0].flatten(1)[:, :classes].argmax(1)
    data = TensorImages(images, labels)
    return ImageData("tiny", data, data, data, classes, side, (0.5,) * 3, (0.25,) * 3, crop_pad=0, hflip=False)


def test_forward_flops_counts_multiply_adds_twice():
    # conv: 2 * (3 * 3 * 3) * 4 outputs channels * 16 positions; linear: 2 * 64 * 5
    assert forward_flops(_net(), (3, 4, 4)) == 2 * 27 * 4 * 16 + 2 * 64 * 5


def test_graph_depth_grows_with_each_layer_of_a_chain():
    # input, the convolutions, the classifier (activations are not nodes of a GHN-2 graph)
    assert [graph_depth(_net(k), 4) for k in (1, 2, 3)] == [3, 4, 5]


def test_random_score_is_fixed_by_name_and_seed():
    assert random_score("deepnets:test/1") == random_score("deepnets:test/1")
    assert random_score("deepnets:test/1") != random_score("deepnets:test/2")
    assert random_score("deepnets:test/1", seed=1) != random_score("deepnets:test/1")
    assert 0 <= random_score("x") < 1


def test_rank_average_of_known_rankings():
    # candidate 0 is best under the first score and worst under the second; nan ranks lowest, +inf highest
    votes = rank_average([[3.0, 2.0, 1.0], [1.0, 2.0, float("nan")]])
    np.testing.assert_allclose(votes, [(3 + 2) / 2, (2 + 3) / 2, (1 + 1) / 2])  # ranks (3, 2, 1), (2, 3, 1)
    np.testing.assert_allclose(rank_average([[5.0, 1.0, float("inf")]]), [2, 1, 3])
    with pytest.raises(ValueError, match="at least one"):
        rank_average([])


def test_candidate_scores_with_a_stub_predictor():
    torch.manual_seed(0)
    model = _net()
    before = [p.clone() for p in model.parameters()]
    x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))

    def predict(m):  # stands in for a GHN: every weight set to 0.1
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(0.1)
        return m

    scores, seconds, t_predict = candidate_scores(model, SCORES, name="n", image_size=4, predict=predict,
                                                  eval_batches=[(x, y)], proxy_batch=(x, y), train_data=_task())
    assert list(scores) == list(SCORES) and set(seconds) == set(SCORES)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the prediction used a copy
    assert scores["params"] == 3 * 4 * 9 + 64 * 5
    assert scores["synflow"] == pytest.approx(synflow(model, x, y))
    assert scores["synflow@ghn"] == pytest.approx(synflow(predict(_net()), x, y))
    from train.accuracy import accuracy

    expected = accuracy(predict(_net()), [(x, y)], bn_mode="batch")
    assert scores["ghn_acc"] == pytest.approx(expected.top1) and scores["ghn_loss"] == pytest.approx(-expected.loss)
    assert scores["random"] == random_score("n")
    assert scores["depth"] == 3 and scores["flops"] == forward_flops(model, (3, 4, 4))
    k = SHORT_SGD_STEPS
    assert scores[f"sgd{k}"] == short_sgd_score(model, _task(), [(x, y)], k)
    assert scores[f"sgd{k}@ghn"] == short_sgd_score(predict(_net()), _task(), [(x, y)], k)
    # a score does not depend on which others ran before it
    alone, _, _ = candidate_scores(model, ["snip@ghn"], name="n", image_size=4, predict=predict, proxy_batch=(x, y))
    assert alone["snip@ghn"] == scores["snip@ghn"]


def test_check_inputs_names_what_is_missing():
    x = (torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown score 'synflw'"):
        check_inputs(["synflw"], None, None, None)
    with pytest.raises(ValueError, match="needs a GHN"):
        check_inputs(["snip@ghn"], None, None, x)
    with pytest.raises(ValueError, match="one batch"):
        check_inputs(["snip"], None, None, None)
    with pytest.raises(ValueError, match="held-out batches"):
        check_inputs(["ghn_acc"], lambda m: m, None, None)
    with pytest.raises(ValueError, match="sets of candidates"):
        check_inputs(["vote"], None, None, None)
    with pytest.raises(ValueError, match="training images"):
        check_inputs(["sgd5"], None, [x], None)
    with pytest.raises(ValueError, match="needs a GHN"):
        check_inputs(["sgd5@ghn"], None, [x], None, _task())
    with pytest.raises(ValueError, match="unknown score 'sgd0'.*sgdK"):
        check_inputs(["sgd0"], None, [x], None, _task())
    assert check_inputs(["params", "flops"], None, None, None) == ["params", "flops"]


def test_per_candidate_scores_and_vote():
    assert per_candidate_scores("ghn_acc") == ["ghn_acc", "ghn_loss"]
    assert per_candidate_scores("synflow", with_baselines=True) == ["ghn_acc", "ghn_loss", "synflow", "params",
                                                                    "flops", "depth", "random"]
    assert per_candidate_scores("vote")[2:] == [m for m in VOTE if m not in ("ghn_acc", "ghn_loss")]
    assert all(m in ALL_SCORES or short_sgd_steps(m) for m in VOTE)

    class Row:
        def __init__(self, **scores):
            self.scores = scores

    rows = [Row(a=1.0, b=1.0), Row(a=2.0, b=3.0), Row(a=3.0, b=float("nan"))]
    add_vote(rows, ("a", "b"))
    assert [r.scores["vote"] for r in rows] == [1.5, 2.5, 2.0]  # ranks (1, 2), (2, 3), (3, 1): nan is lowest


def test_short_sgd_names():
    assert short_sgd_steps("sgd20") == 20 and short_sgd_steps("sgd7@ghn") == 7
    assert [short_sgd_steps(n) for n in ("sgd", "sgd0", "sgd-3", "xsgd5", "sgd5@ghnx", "ghn_acc")] == [None] * 6
    assert needs_ghn("sgd7@ghn") and not needs_ghn("sgd7") and needs_ghn("ghn_acc") and not needs_ghn("params")


def test_short_sgd_score_trains_a_copy_with_its_own_data_order():
    from train.accuracy import accuracy
    from train.data import eval_batches
    from train.finetune import train_sgd
    from train.scores import SHORT_SGD_SEED_OFFSET

    data = _task()
    held = list(eval_batches(data, "heldout", batch_size=32))
    torch.manual_seed(0)
    model = _net(2)
    before = [p.clone() for p in model.parameters()]
    score = short_sgd_score(model, data, held, 30, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # a copy was trained
    # the recipe: train_sgd from the same start with the seed moved away from the yardstick's, then batch-statistics
    # accuracy on the held-out batches
    ref = copy.deepcopy(model)
    train_sgd(ref, data, steps=30, seed=3 + SHORT_SGD_SEED_OFFSET)
    assert score == accuracy(ref, held, bn_mode="batch").top1
    assert score > accuracy(model, held, bn_mode="batch").top1 + 20  # 30 steps learn the brightest pixel
    with torch.no_grad():  # a run that diverges is ranked last
        next(model.parameters()).fill_(float("nan"))
    assert np.isnan(short_sgd_score(model, data, held, 5))
