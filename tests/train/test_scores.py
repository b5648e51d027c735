"""The ranking scores of train/scores.py on tiny networks with known values."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from train.scores import (
    ALL_SCORES,
    SCORES,
    VOTE,
    add_vote,
    candidate_scores,
    check_inputs,
    forward_flops,
    graph_depth,
    per_candidate_scores,
    random_score,
    rank_average,
)
from train.zero_cost import synflow


def _net(convs: int = 1) -> nn.Module:
    layers = [nn.Conv2d(3, 4, 3, padding=1, bias=False)]
    layers += [m for _ in range(convs - 1) for m in (nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False))]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 5, bias=False))


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
                                                  eval_batches=[(x, y)], proxy_batch=(x, y))
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
    assert check_inputs(["params", "flops"], None, None, None) == ["params", "flops"]


def test_per_candidate_scores_and_vote():
    assert per_candidate_scores("ghn_acc") == ["ghn_acc", "ghn_loss"]
    assert per_candidate_scores("synflow", with_baselines=True) == ["ghn_acc", "ghn_loss", "synflow", "params",
                                                                    "flops", "depth", "random"]
    assert per_candidate_scores("vote")[2:] == [m for m in VOTE if m not in ("ghn_acc", "ghn_loss")]
    assert set(ALL_SCORES) >= set(VOTE)

    class Row:
        def __init__(self, **scores):
            self.scores = scores

    rows = [Row(a=1.0, b=1.0), Row(a=2.0, b=3.0), Row(a=3.0, b=float("nan"))]
    add_vote(rows, ("a", "b"))
    assert [r.scores["vote"] for r in rows] == [1.5, 2.5, 2.0]  # ranks (1, 2), (2, 3), (3, 1): nan is lowest
