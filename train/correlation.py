"""Rank correlation between two scorings of the same candidates: Kendall's tau and Spearman's rho.

Used to say how well a cheap ranking (accuracy with GHN-predicted parameters) agrees with an expensive one
(accuracy after SGD training), as in Knyazev et al., NeurIPS 2021, Sec. 5.3 and Table 5 ("correlation between
predicted-parameter accuracy and the accuracy of trained networks"). Both coefficients are computed by
:mod:`scipy.stats`: Kendall's tau-b (ties counted as in scipy's default) and Spearman's rho (Pearson correlation
of average ranks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class RankCorrelation:
    """Kendall's tau and Spearman's rho of two scorings, with two-sided p-values.

    A coefficient is ``nan`` when one scoring is constant (every candidate tied): no ranking to compare. Write it
    as JSON with ``dataclasses.asdict`` and :func:`archspace.files.write_json` (``nan`` becomes ``null``).
    """

    kendall_tau: float
    kendall_p: float
    spearman_rho: float
    spearman_p: float
    n: int


def _as_scores(x: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of scores, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite scores at positions {np.flatnonzero(~np.isfinite(a))[:10]}; "
                         "drop those candidates before computing a rank correlation")
    return a


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> RankCorrelation:
    """Kendall's tau-b and Spearman's rho between two scorings of the same candidates (higher = better in both).

    Args:
        a: scores of the candidates under the first ranking, e.g. accuracy with predicted parameters.
        b: scores of the same candidates, in the same order, under the second ranking, e.g. accuracy after SGD.

    Returns:
        A :class:`RankCorrelation`; coefficients are ``nan`` when either scoring is constant.

    Raises:
        ValueError: if the lengths differ, fewer than two candidates are given, or a score is not finite.

    Shapes:
        ``a``, ``b``: ``(C,)`` with ``C >= 2`` candidates.
    """
    x, y = _as_scores(a, "first scoring"), _as_scores(b, "second scoring")
    if x.shape != y.shape:
        raise ValueError(f"the two scorings must cover the same candidates: got {x.size} and {y.size} scores")
    if x.size < 2:
        raise ValueError(f"a rank correlation needs at least 2 candidates, got {x.size}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return RankCorrelation(nan, nan, nan, nan, int(x.size))
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return RankCorrelation(float(tau.statistic), float(tau.pvalue), float(rho.statistic), float(rho.pvalue),
                           int(x.size))


def bootstrap_interval(a: Sequence[float], b: Sequence[float], statistic: str = "kendall", *,
                       resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's tau or Spearman's rho: candidates are resampled with replacement,
    pairs kept together (Efron & Tibshirani, 1993, Ch. 13). A resample in which either scoring is constant has no
    coefficient and is left out (``scipy.stats.bootstrap`` would return ``nan`` for the whole interval, which
    happens often with few candidates).

    Args:
        a, b: two scorings of the same candidates ``(C,)``, finite.
        statistic: ``kendall`` or ``spearman``.
        resamples: bootstrap resamples.
        level: confidence level of the interval.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when either scoring is constant.

    Raises:
        ValueError: an unknown statistic, or scorings as :func:`rank_correlation` refuses them.
    """
    funcs = {"kendall": lambda x, y: stats.kendalltau(x, y).statistic,
             "spearman": lambda x, y: stats.spearmanr(x, y).statistic}
    if statistic not in funcs:
        raise ValueError(f"unknown statistic {statistic!r}; choose kendall or spearman")
    corr = rank_correlation(a, b)
    if not np.isfinite(corr.kendall_tau):
        return float("nan"), float("nan")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))  # (R, C)
    values = np.array([funcs[statistic](x[i], y[i]) if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0 else np.nan
                       for i in idx])  # (R,)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def top_k_precision(scores: Sequence[float], truth: Sequence[float], k: int = 10) -> float:
    """The fraction of the truly best ``k`` candidates (highest ``truth``) that the ranking by ``scores`` puts in its
    own top ``k`` (ties broken by position: the earlier candidate first).

    Args:
        scores: the ranker's scores ``(C,)`` (higher is better; ``nan`` ranks last).
        truth: the ground truth ``(C,)``, e.g. trained accuracy.
        k: how many of the best to look at (``1 <= k <= C``).

    Returns:
        A fraction in ``[0, 1]``.

    Raises:
        ValueError: lengths that differ, or ``k`` outside ``1..C``.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"scores and truth must be two (C,) arrays, got {s.shape} and {t.shape}")
    if not 1 <= k <= s.size:
        raise ValueError(f"k must be between 1 and the number of candidates ({s.size}), got {k}")
    s = np.where(np.isfinite(s), s, -np.inf)
    top_s = set(np.argsort(-s, kind="stable")[:k].tolist())
    top_t = set(np.argsort(-t, kind="stable")[:k].tolist())
    return len(top_s & top_t) / k


def score_ranks(scores: Sequence[float]) -> np.ndarray:
    """Average ranks ``(C,)`` of scores (1 = lowest): ``+inf`` ranks highest, ``nan`` (a score undefined for that
    candidate) lowest. Only the order of a ranker's scores counts, so its ranks stand for it."""
    a = np.asarray(scores, dtype=np.float64)
    return stats.rankdata(np.where(np.isnan(a), -np.inf, a))


def ranking_report(scores: Sequence[float], truth: Sequence[float], *, k: int = 10, resamples: int = 2000,
                   seed: int = 0) -> dict:
    """How well a ranker's ``scores`` agree with the ground ``truth`` (e.g. trained accuracy): Kendall's tau and
    Spearman's rho with percentile-bootstrap 95% intervals (:func:`bootstrap_interval`) and top-``k`` precision
    (:func:`top_k_precision`). Only the order of the scores counts: ``+inf`` ranks first, ``nan`` (a score that is
    undefined for that candidate) last. ``k`` is capped at half the candidates, so that the precision can tell a
    ranker from chance (``top_k_chance = k / C`` is its expected value under a random ranking).

    Args:
        scores: ``(C,)`` ranker scores, higher is better.
        truth: ``(C,)`` finite ground truth.
        k: the top-``k`` precision's ``k`` (before the cap).
        resamples, seed: the bootstrap.

    Returns:
        ``{"n", "kendall_tau", "kendall_p", "kendall_tau_ci": [low, high], "spearman_rho", "spearman_rho_ci",
        "k", "top_k_precision", "top_k_chance", "nan_scores"}``.

    Raises:
        ValueError: as :func:`rank_correlation`, or fewer than 2 candidates.
    """
    raw = np.asarray(scores, dtype=np.float64)
    if raw.ndim != 1 or raw.size < 2:
        raise ValueError(f"a ranking report needs (C,) scores with C >= 2, got shape {raw.shape}")
    s = score_ranks(raw)  # (C,): the order is all that counts
    corr = rank_correlation(s, truth)
    k = max(1, min(k, s.size // 2))
    return {"n": corr.n, "kendall_tau": corr.kendall_tau, "kendall_p": corr.kendall_p,
            "kendall_tau_ci": list(bootstrap_interval(s, truth, "kendall", resamples=resamples, seed=seed)),
            "spearman_rho": corr.spearman_rho,
            "spearman_rho_ci": list(bootstrap_interval(s, truth, "spearman", resamples=resamples, seed=seed)),
            "k": k, "top_k_precision": top_k_precision(s, truth, k), "top_k_chance": k / s.size,
            "nan_scores": int(np.isnan(raw).sum())}
