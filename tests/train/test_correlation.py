"""Tests for :mod:`train.correlation`: known answers for Kendall's tau and Spearman's rho."""

import json
import math
from dataclasses import asdict

import pytest

from archspace.files import write_json
from train.correlation import rank_correlation


def test_identical_rankings_give_one():
    r = rank_correlation([0.1, 0.5, 0.3, 0.9], [1.0, 5.0, 3.0, 9.0])
    assert r.kendall_tau == pytest.approx(1.0)
    assert r.spearman_rho == pytest.approx(1.0)
    assert r.n == 4


def test_reversed_rankings_give_minus_one():
    r = rank_correlation([1, 2, 3, 4, 5], [50, 40, 30, 20, 10])
    assert r.kendall_tau == pytest.approx(-1.0)
    assert r.spearman_rho == pytest.approx(-1.0)


def test_one_swapped_pair_matches_hand_computation():
    # Pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> tau = (5 - 1) / 6.
    # Rank differences (0,1,1,0): rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    r = rank_correlation([1, 2, 3, 4], [1, 3, 2, 4])
    assert r.kendall_tau == pytest.approx(4 / 6)
    assert r.spearman_rho == pytest.approx(0.8)


def test_ties_use_tau_b():
    # One tied pair in the first scoring, 5 concordant, 0 discordant: tau_b = 5 / sqrt((6 - 1) * 6).
    r = rank_correlation([1, 2, 2, 3], [1, 2, 3, 4])
    assert r.kendall_tau == pytest.approx(5 / math.sqrt(30))


def test_constant_scoring_gives_nan_not_an_error(tmp_path):
    r = rank_correlation([0.1, 0.1, 0.1], [1, 2, 3])
    assert math.isnan(r.kendall_tau) and math.isnan(r.spearman_rho)
    write_json(tmp_path / "c.json", asdict(r))  # how the commands write it: strict JSON, NaN as null
    assert json.loads((tmp_path / "c.json").read_text()) == {"kendall_tau": None, "kendall_p": None,
                                                              "spearman_rho": None, "spearman_p": None, "n": 3}


@pytest.mark.parametrize(
    "a, b, message",
    [([1, 2, 3], [1, 2], "same candidates"), ([1], [1], "at least 2"), ([1, float("nan")], [1, 2], "NaN")],
)
def test_bad_input_is_explained(a, b, message):
    with pytest.raises(ValueError, match=message):
        rank_correlation(a, b)


def test_bootstrap_interval_of_a_perfect_ranking_is_a_point():
    import pytest

    from train.correlation import bootstrap_interval

    a = list(range(30))
    assert bootstrap_interval(a, [2 * v + 1 for v in a], resamples=200) == pytest.approx((1.0, 1.0))
    assert bootstrap_interval(a, [-v for v in a], "spearman", resamples=200) == pytest.approx((-1.0, -1.0))


def test_bootstrap_interval_covers_the_estimate_and_narrows_with_more_candidates():
    import numpy as np

    from train.correlation import bootstrap_interval, rank_correlation

    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)  # tau about 0.5
        low, high = bootstrap_interval(x, y, resamples=500)
        assert low < rank_correlation(x, y).kendall_tau < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # the width shrinks about as 1 / sqrt(n)


def test_bootstrap_interval_refuses_unknown_statistics_and_is_nan_for_constant_scores():
    import math

    from train.correlation import bootstrap_interval

    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_interval([1, 2, 3], [1, 2, 3], "pearson")
    assert all(math.isnan(v) for v in bootstrap_interval([1, 1, 1], [1, 2, 3]))


def test_top_k_precision():
    from train.correlation import top_k_precision

    truth = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert top_k_precision(truth, truth, k=3) == 1.0
    assert top_k_precision([-v for v in truth], truth, k=3) == 0.0
    # the ranker puts candidates 0, 5 and 9 first: only candidate 0 is among the true best three
    assert top_k_precision([10, 0, 0, 0, 0, 9, 0, 0, 0, 8], truth, k=3) == pytest.approx(1 / 3)
    assert top_k_precision([float("nan"), 1, 0], [3, 2, 1], k=1) == 0.0  # nan ranks last
    with pytest.raises(ValueError, match="k must be"):
        top_k_precision([1, 2], [1, 2], k=3)


def test_ranking_report_orders_nan_last_and_inf_first_whatever_the_magnitude():
    from train.correlation import ranking_report

    truth = list(range(10, 0, -1))  # candidate 0 is the best
    # huge synflow-like scores: the nan candidate must rank below the smallest finite one (1e20 - 1 == 1e20)
    scores = [float("inf")] + [1e20 * (9 - i) for i in range(8)] + [float("nan")]
    rep = ranking_report(scores, truth, resamples=50)
    assert rep["kendall_tau"] == pytest.approx(1.0) and rep["nan_scores"] == 1
    assert rep["k"] == 5 and rep["top_k_precision"] == 1.0 and rep["top_k_chance"] == 0.5  # k capped at C / 2
    rep = ranking_report([-v for v in truth], truth, resamples=50)
    assert rep["kendall_tau"] == pytest.approx(-1.0) and rep["top_k_precision"] == 0.0
