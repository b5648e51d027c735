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
