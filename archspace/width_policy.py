"""Width and classifier size of each training net: the policies of ``ArchDataset``.

``uniform``: the width is drawn uniformly from ``[lo, hi]`` and the genotype's classifier size is kept.

``loguniform``: the width is drawn log-uniformly from ``[lo, hi]`` (rounded down to an integer), so each octave of
widths gets the same share of nets (8..15 and 16..32 half each for 8..32); the classifier size is kept.

``reciprocal``: the width is drawn with density proportional to ``1 / w^2`` on ``[lo, hi]`` (uniform in ``1 / w``,
rounded down), which leans further towards narrow nets than ``loguniform``: for 8..32 width 8 gets about 15% of the
nets (``P(w < 9)``, against 8%), 8..15 about two thirds and width 32 about 1%. The classifier size is kept. Measured
on the digits default (README, the paragraph after the width-grid table): not better than ``loguniform`` at width 8,
worse at 32.

``octave`` and ``half_octave``: the width is drawn uniformly from the geometric grid ``lo, r lo, r^2 lo, ... <= hi``
(rounded to integers) with ``r = 2`` or ``sqrt(2)``: for 8..32, ``{8, 16, 32}`` or ``{8, 11, 16, 23, 32}``. The widths a
GHN is evaluated at then get a third (a fifth) of the training nets each, where the log-uniform draw gives width 8
about 8% of them (``P(w < 9)``) and width 32 about 2%. The classifier size is kept. Measured on the digits default
(README, "Training widths from a grid"): no better than log-uniform at the grid's widths, worse between them.

``ghn2``: GHN-2's training distribution (Knyazev et al., NeurIPS 2021: training nets of width 32..128; the rule
below is the reference loader's, ``ppuda/deepnets1m/loader.py``). The width comes from the grid
``lo, lo + 16, ..., hi``, and how much of the grid a net may use depends on its size at the base width (parameters
counted at width 32 with 10 classes, on 32x32 inputs, or 224x224 for ImageNet), so that large nets stay narrow and
only small ones are made wide:

==================================================================================  ===========================
net                                                                                 widths allowed (of 32..128)
==================================================================================  ===========================
over 0.8M parameters, or a VGG-style head, or a 5x5/7x7 conv, or over 12 cells      the first (32)
over 0.4M parameters, or over 10 cells                                              the first two (32, 48)
over 0.2M parameters, or over 8 cells                                               the first three (32 .. 64)
otherwise                                                                           all (32 .. 128)
==================================================================================  ===========================

The hidden size of a two-layer classifier is drawn from the first four of ``64, 128, ..., 512`` (all eight for
the smallest nets when their width is at most 64). Drawing widths uniformly instead makes the average training net
several times larger than the paper's (7.3M parameters instead of 1.1M on the first 400 train nets).

A share of the nets at the range's minimum (``min_share`` of :func:`net_size`, ``archspace.min_width_share``): each
net is first placed at ``lo`` with probability ``min_share`` and otherwise drawn by its policy, so the narrowest width
gets at least that share of the training nets (``loguniform`` with 0.5: width 8 gets about 54% of the nets for 8..32,
``0.5 + 0.5 P(w < 9)``). Narrow nets are also cheaper steps. Measured on the digits default (README, "Half the nets at
width 8"; six seeds, 3,600 steps in the time of 2,900 without it): +6 points at width 8, -5 and -7 at widths 16 and
32; with 0.25 (3,100 steps, the digits default since it was measured) +5 at width 8, -2 and -3 at widths 16 and 32.
With ``min_share = 0`` no extra draw is made, so every policy's draws are as without it.

Draws are pure functions of ``(seed, index)``, so a net keeps its width across epochs, processes and resumes.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError
from .genotype import Genotype

#: Width policies understood by :func:`net_size`.
WIDTH_POLICIES: tuple[str, ...] = ("uniform", "loguniform", "reciprocal", "octave", "half_octave", "ghn2")
#: Ratio of consecutive widths of the geometric-grid policies.
GRID_RATIOS: dict[str, float] = {"octave": 2.0, "half_octave": 2.0 ** 0.5}
#: Step of GHN-2's width grid.
GHN2_WIDTH_STEP: int = 16
#: GHN-2's grid of classifier hidden sizes.
GHN2_FC_DIMS: tuple[int, ...] = tuple(range(64, 513, 64))
_LARGE_CONVS = ("conv_5x5", "conv_7x7")


def geometric_widths(lo: int, hi: int, ratio: float) -> list[int]:
    """The widths ``round(lo * ratio^k) <= hi``, ``k = 0, 1, ...`` (the grid of the ``octave`` and ``half_octave``
    policies): ``geometric_widths(8, 32, 2) == [8, 16, 32]``, ``geometric_widths(8, 32, 2 ** 0.5) == [8, 11, 16,
    23, 32]``.

    Raises:
        ValueError: ``ratio <= 1`` or ``lo < 1``.
    """
    if ratio <= 1 or lo < 1:
        raise ValueError(f"a geometric width grid needs lo >= 1 and ratio > 1, got lo={lo}, ratio={ratio}")
    widths, k = [], 0
    while (w := int(round(lo * ratio**k))) <= hi:
        if not widths or w != widths[-1]:
            widths.append(w)
        k += 1
    return widths


def ghn2_width_choices(genotype: Genotype, base_params: int) -> int | None:
    """How many widths of the start of GHN-2's grid a net may be drawn from (the table in the module docstring).

    Args:
        genotype: the net.
        base_params: its parameter count at the base width (32x32 input for CIFAR, 224x224 for ImageNet).

    Returns:
        1, 2 or 3; ``None`` for the smallest nets, which may take any width of the grid.
    """
    m = base_params / 1e6
    ops = [op for op, _ in genotype.normal + genotype.reduce]
    if m > 0.8 or genotype.vgg_head or any(op in _LARGE_CONVS for op in ops) or genotype.n_cells > 12:
        return 1
    if m > 0.4 or genotype.n_cells > 10:
        return 2
    if m > 0.2 or genotype.n_cells > 8:
        return 3
    return None


def net_size(policy: str, width_range: tuple[int, int], seed: int, index: int, genotype: Genotype | None = None,
             base_params: int | None = None, min_share: float = 0.0) -> tuple[int, int | None]:
    """Width and classifier hidden size of training net ``index`` under ``policy``.

    Args:
        policy: ``'uniform'``, ``'loguniform'``, ``'reciprocal'``, ``'octave'``, ``'half_octave'`` or ``'ghn2'``
            (module docstring).
        width_range: ``(lo, hi)``, both included.
        seed: seed of the draws.
        index: net index.
        genotype: the net (needed by ``ghn2``; ``None`` for a net without one, which gets ``lo``).
        base_params: its parameter count at the base width (needed by ``ghn2`` with a genotype).
        min_share: probability (``0..1``) that the net is placed at ``lo`` before the policy draws (module
            docstring); ``ghn2`` then keeps its classifier-size rule.

    Returns:
        ``(width, fc_dim)``; ``fc_dim`` is ``None`` where the genotype's own is kept.

    Raises:
        UsageError: an unknown policy (a ``ValueError``).
        ValueError: ``ghn2`` with a genotype but no ``base_params``; ``min_share`` outside ``0..1``.
    """
    if policy not in WIDTH_POLICIES:
        raise UsageError(f"unknown width policy {policy!r}; choose one of {', '.join(WIDTH_POLICIES)}")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be between 0 and 1, got {min_share!r}")
    lo, hi = width_range
    rng = np.random.default_rng([seed, index])
    at_min = min_share > 0 and rng.random() < min_share  # no draw at 0: the policies' draws stay as they were
    if at_min and policy != "ghn2":
        return lo, None
    if policy == "uniform":
        return int(rng.integers(lo, hi + 1)), None
    if policy == "loguniform":  # as many nets in [w, 2w) as in [2w, 4w): narrow nets are not outnumbered
        return min(hi, int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))))), None
    if policy == "reciprocal":  # 1 / w uniform: density proportional to 1 / w^2
        return min(hi, int(1.0 / rng.uniform(1.0 / (hi + 1), 1.0 / lo))), None
    if policy in GRID_RATIOS:
        grid = geometric_widths(lo, hi, GRID_RATIOS[policy])
        return grid[int(rng.integers(len(grid)))], None
    grid = list(range(lo, hi + 1, GHN2_WIDTH_STEP))
    if genotype is None:
        return lo, None
    if base_params is None:
        raise ValueError("the ghn2 width policy needs the net's parameter count at the base width")
    k = ghn2_width_choices(genotype, base_params)
    width = grid[0] if at_min else grid[int(rng.integers(len(grid) if k is None else min(k, len(grid))))]
    fc_choices = GHN2_FC_DIMS if k is None and width <= 64 else GHN2_FC_DIMS[:4]
    return width, int(fc_choices[int(rng.integers(len(fc_choices)))])
