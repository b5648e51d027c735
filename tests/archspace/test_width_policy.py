"""archspace.width_policy against the reference loader's rule (ppuda/deepnets1m/loader.py), on nets whose sizes are
worked out by hand, and its use by ArchDataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from archspace.dataset import ArchDataset
from archspace.errors import UsageError
from archspace.genotype import Genotype
from archspace.network import Network, num_params
from archspace.width_policy import geometric_widths, ghn2_width_choices, net_size

ALL_FC = (64, 128, 192, 256, 320, 384, 448, 512)  # GHN-2's classifier hidden sizes
FIRST_FC = (64, 128, 192, 256)  # the first four


def plain(**changes) -> Genotype:
    """A net whose size is easy to count by hand: no norm layers, no pre-processing, one 3x3 conv per normal cell
    (plus a skip), two max-pools per reduction cell, width 32, a simple 3x3 stem; 6 cells (reductions at 2, 4)."""
    fields = dict(normal=(("conv_3x3", 1), ("skip_connect", 1)), normal_concat=(2,),
                  reduce=(("max_pool_3x3", 1), ("max_pool_3x3", 1)), reduce_concat=(2,), n_cells=6, C=32,
                  C_mult=1, stem_kernel=3, stem_type=0, norm=None, preproc=False)
    return Genotype(**{**fields, **changes})


# Parameters at width 32 with 10 classes, by hand: stem conv 3*32*9 = 864; four normal cells of one 3x3 conv
# 32*32*9 = 9,216 each, 36,864; no parameters in reduction cells; classifier Linear(32, 10) = 330, or with a
# hidden layer of f units Linear(32, f) + Linear(f, 10) = 33f + 10f + 10.
HAND = [
    # (net, parameters, widths the reference allows out of 32..128)
    (plain(), 864 + 36_864 + 330, (32, 48, 64, 80, 96, 112, 128)),  # 38,058: all
    (plain(fc_layers=2, fc_dim=4096), 864 + 36_864 + 43 * 4096 + 10, (32, 48, 64)),  # 213,866: over 0.2M
    (plain(fc_layers=2, fc_dim=9000), 864 + 36_864 + 43 * 9000 + 10, (32, 48)),  # 424,738: over 0.4M
    (plain(fc_layers=2, fc_dim=20000), 864 + 36_864 + 43 * 20000 + 10, (32,)),  # 897,738: over 0.8M
]


def drawn(genotype: Genotype, base_params: int, width_range=(32, 128), n: int = 300) -> list[tuple[int, int]]:
    """The ``(width, classifier size)`` drawn for nets 0..n-1 of seed 0."""
    return [net_size("ghn2", width_range, 0, i, genotype, base_params) for i in range(n)]


def widths(sizes: list[tuple[int, int]]) -> set[int]:
    """The set of widths in ``sizes``."""
    return {w for w, _ in sizes}


@pytest.mark.parametrize("genotype, params, allowed", HAND)
def test_hand_counted_nets_get_the_reference_widths(genotype, params, allowed):
    assert num_params(genotype, 10, 32, 32) == params
    with torch.device("meta"):
        assert sum(p.numel() for p in Network(genotype).parameters()) == params
    sizes = drawn(genotype, params)
    assert widths(sizes) == set(allowed)
    if len(allowed) == 7:
        # The smallest nets: any classifier size when narrow (<= 64), the first four otherwise.
        assert {f for w, f in sizes if w <= 64} == set(ALL_FC)
        assert {f for w, f in sizes if w > 64} == set(FIRST_FC)
    else:
        assert {f for _, f in sizes} == set(FIRST_FC)


def test_thresholds_are_strict():
    g = plain()
    # "over 0.2M / 0.4M / 0.8M": the threshold itself belongs to the tier below.
    assert [ghn2_width_choices(g, p) for p in (200_000, 200_001, 400_000, 400_001, 800_000, 800_001)] == \
        [None, 3, 3, 2, 2, 1]


@pytest.mark.parametrize("n_cells, expected", [(8, None), (9, 3), (10, 3), (11, 2), (12, 2), (13, 1), (20, 1)])
def test_deep_nets_stay_narrow(n_cells, expected):
    g = plain(n_cells=n_cells)
    # 20 cells, the largest here: 864 + 18 normal cells * 9,216 + 330 = 167,082, below 0.2M: depth decides.
    assert num_params(g) <= 167_082
    assert ghn2_width_choices(g, num_params(g)) == expected


@pytest.mark.parametrize("changes", [dict(vgg_head=True), dict(normal=(("conv_5x5", 1), ("skip_connect", 1))),
                                     dict(reduce=(("conv_7x7", 1), ("max_pool_3x3", 1)))])
def test_vgg_heads_and_large_kernels_keep_the_base_width(changes):
    assert widths(drawn(plain(**changes), 50_000)) == {32}


def test_other_width_range():
    # The grid steps by 16 from the low end: 16, 32, 48, 64.
    assert widths(drawn(plain(), 38_058, (16, 64))) == {16, 32, 48, 64}
    assert widths(drawn(plain(), 250_000, (16, 64))) == {16, 32, 48}
    assert widths(drawn(plain(), 1_000_000, (16, 64))) == {16}


def test_nets_without_a_genotype_keep_the_low_width():
    assert net_size("ghn2", (32, 128), 0, 5, None) == (32, None)
    assert net_size("ghn2", (48, 128), 3, 7, None) == (48, None)


def test_uniform_policy():
    draws = [net_size("uniform", (32, 40), 7, i) for i in range(200)]
    assert {w for w, _ in draws} == set(range(32, 41))  # both ends included, every width reached
    assert {f for _, f in draws} == {None}  # the genotype's classifier is kept
    # A pure function of (seed, index): the same in any order, different for another seed.
    assert [net_size("uniform", (32, 40), 7, i) for i in reversed(range(200))][::-1] == draws
    assert [net_size("uniform", (32, 40), 8, i) for i in range(200)] != draws


def test_loguniform_policy_gives_each_octave_the_same_share():
    draws = [net_size("loguniform", (8, 32), 3, i)[0] for i in range(4000)]
    assert min(draws) == 8 and max(draws) == 32
    narrow = sum(w < 16 for w in draws) / len(draws)  # log(16/8) / log(33/8) = 0.489 of the mass
    assert abs(narrow - 0.489) < 0.03
    uniform = [net_size("uniform", (8, 32), 3, i)[0] for i in range(4000)]
    assert sum(w < 16 for w in uniform) / len(uniform) < 0.36  # 8 of 25 widths
    assert [net_size("loguniform", (8, 32), 3, i)[0] for i in range(4000)] == draws  # a function of (seed, index)


def test_reciprocal_policy_leans_towards_narrow_nets():
    draws = [net_size("reciprocal", (8, 32), 3, i) for i in range(4000)]
    assert {f for _, f in draws} == {None}  # the genotype's classifier is kept
    widths = [w for w, _ in draws]
    assert min(widths) == 8 and max(widths) == 32
    # 1 / w uniform on (1/33, 1/8]: P(w < 9) = (1/8 - 1/9) / (1/8 - 1/33) = 0.147, P(w < 16) = 0.660
    assert abs(widths.count(8) / len(widths) - 0.147) < 0.02
    assert abs(sum(w < 16 for w in widths) / len(widths) - 0.660) < 0.03
    assert [net_size("reciprocal", (8, 32), 3, i) for i in reversed(range(4000))][::-1] == draws  # f(seed, index)


def test_geometric_grids():
    assert geometric_widths(8, 32, 2) == [8, 16, 32]
    assert geometric_widths(8, 32, 2**0.5) == [8, 11, 16, 23, 32]  # 8 * 2^(k/2) rounded
    assert geometric_widths(8, 40, 2) == [8, 16, 32]  # the top of the range need not be on the grid
    assert geometric_widths(4, 4, 2) == [4]
    assert geometric_widths(2, 4, 1.1) == [2, 3, 4]  # rounding never repeats a width
    with pytest.raises(ValueError, match="ratio > 1"):
        geometric_widths(8, 32, 1.0)


@pytest.mark.parametrize("policy, grid", [("octave", [8, 16, 32]), ("half_octave", [8, 11, 16, 23, 32])])
def test_grid_policies_draw_each_width_of_the_grid_equally(policy, grid):
    draws = [net_size(policy, (8, 32), 3, i) for i in range(3000)]
    assert {f for _, f in draws} == {None}  # the genotype's classifier is kept
    widths = [w for w, _ in draws]
    assert sorted(set(widths)) == grid
    for w in grid:  # each a 1 / len(grid) share (binomial standard error < 0.01)
        assert abs(widths.count(w) / len(widths) - 1 / len(grid)) < 0.03
    # The log-uniform draw gives the end widths a small share: width 8 is P(w < 9) = log(9/8) / log(33/8) = 8%.
    log = [net_size("loguniform", (8, 32), 3, i)[0] for i in range(3000)]
    assert log.count(8) / len(log) < 0.11 and log.count(32) / len(log) < 0.03
    assert [net_size(policy, (8, 32), 3, i) for i in reversed(range(3000))][::-1] == draws  # f(seed, index)
    assert [net_size(policy, (8, 32), 4, i) for i in range(3000)] != draws


def test_grid_policy_in_arch_dataset():
    ds = ArchDataset(split="train", num=40, width_range=(8, 32), width_policy="octave", seed=0)
    widths = [ds.width(i) for i in range(40)]
    assert set(widths) <= {8, 16, 32} and len(set(widths)) == 3
    assert widths == [net_size("octave", (8, 32), 0, i)[0] for i in range(40)]


def test_min_share_moves_a_share_of_the_nets_to_the_narrowest_width():
    n = 4000
    base = [net_size("loguniform", (8, 32), 3, i)[0] for i in range(n)]
    mixed = [net_size("loguniform", (8, 32), 3, i, min_share=0.5)[0] for i in range(n)]
    # P(w = 8) = 0.5 + 0.5 * log(9/8) / log(33/8) = 0.542; the other half keeps the log-uniform shape.
    assert abs(mixed.count(8) / n - 0.542) < 0.03
    others = [w for w in mixed if w > 8]
    assert abs(sum(w < 16 for w in others) / len(others) - (0.489 - 0.083) / (1 - 0.083)) < 0.04
    assert min(mixed) == 8 and max(mixed) == 32
    # No extra draw at 0: the policy's draws are unchanged, for every policy.
    assert [net_size("loguniform", (8, 32), 3, i, min_share=0.0)[0] for i in range(n)] == base
    assert [net_size("uniform", (8, 32), 3, i, min_share=0.0) for i in range(50)] == \
        [net_size("uniform", (8, 32), 3, i) for i in range(50)]
    assert {net_size("octave", (8, 32), 3, i, min_share=1.0) for i in range(50)} == {(8, None)}
    # ghn2 at the minimum keeps its classifier-size rule.
    sizes = [net_size("ghn2", (32, 128), 1, i, plain(), 38_058, min_share=0.7) for i in range(300)]
    at_min = [f for w, f in sizes if w == 32]
    assert len(at_min) > 180 and set(at_min) <= set(ALL_FC) and len(set(at_min)) > 4
    with pytest.raises(ValueError, match="min_share must be between 0 and 1, got 1.5"):
        net_size("loguniform", (8, 32), 0, 0, min_share=1.5)


def test_min_width_share_in_arch_dataset():
    ds = ArchDataset(split="train", num=60, width_range=(8, 32), width_policy="loguniform", seed=2,
                     min_width_share=0.5)
    widths = [ds.width(i) for i in range(60)]
    assert widths == [net_size("loguniform", (8, 32), 2, i, min_share=0.5)[0] for i in range(60)]
    assert 20 < widths.count(8) < 45
    assert ds.build_model(widths.index(8)).plan.C == 8
    with pytest.raises(UsageError, match="min_width_share must be between 0 and 1, got -0.1"):
        ArchDataset(split="train", num=5, width_range=(8, 32), min_width_share=-0.1)


def test_ghn2_draws_are_a_function_of_seed_and_index():
    a = [net_size("ghn2", (32, 128), 1, i, plain(), 38_058) for i in range(100)]
    assert [net_size("ghn2", (32, 128), 1, i, plain(), 38_058) for i in reversed(range(100))][::-1] == a
    assert [net_size("ghn2", (32, 128), 2, i, plain(), 38_058) for i in range(100)] != a


def test_bad_policy():
    with pytest.raises(UsageError, match="unknown width policy 'wide'; choose one of uniform, loguniform, reciprocal, "
                                         "octave, half_octave, ghn2"):
        net_size("wide", (32, 128), 0, 0, plain(), 1)
    with pytest.raises(ValueError, match="parameter count"):
        net_size("ghn2", (32, 128), 0, 0, plain())
    with pytest.raises(UsageError, match="width_policy"):
        ArchDataset(split="train", num=5, width_range=(32, 128), width_policy="wide")


def test_dataset_builds_nets_at_their_drawn_size():
    n = 200
    ds = ArchDataset(split="train", num=n, width_range=(32, 128), width_policy="ghn2", seed=1)
    uniform = ArchDataset(split="train", num=n, width_range=(32, 128), seed=1)
    sizes = [ds.net_size(i) for i in range(n)]
    base = [num_params(ds.genotype(i)) for i in range(n)]  # at width 32, 10 classes, 32x32
    # The table of the rule, checked on the sampled nets: large or deep nets stay narrow.
    for i, (w, f) in enumerate(sizes):
        g = ds.genotype(i)
        assert w in range(32, 129, 16) and f in ALL_FC
        if base[i] > 800_000 or g.n_cells > 12 or g.vgg_head:
            assert w == 32, i
        if base[i] > 200_000 or g.n_cells > 8:
            assert w <= 64 and f in FIRST_FC, i
    # The paper's draw keeps most nets narrow: several times fewer parameters than a uniform draw.
    p_ghn2 = sum(num_params(ds.genotype(i), 10, 32, w) for i, (w, _) in enumerate(sizes))
    p_uniform = sum(num_params(ds.genotype(i), 10, 32, uniform.width(i)) for i in range(n))
    assert p_ghn2 * 3 < p_uniform
    # The built nets have the drawn width (stem channels) and classifier hidden size.
    two_fc = [i for i in range(n) if ds.genotype(i).fc_layers == 2][:3]
    assert two_fc
    for i in two_fc:
        model = ds.build_model(i)
        linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
        assert linears[0].out_features == sizes[i][1]
        assert model.plan.C == sizes[i][0]
