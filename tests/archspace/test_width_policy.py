"""Tests of archspace.width_policy: GHN-2's size-dependent width draw and its use by ArchDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

from archspace.dataset import ArchDataset, num_params_at
from archspace.genotype import Genotype
from archspace.network import num_params
from archspace.width_policy import GHN2_FC_DIMS, ghn2_width_choices, net_size

GRID = (32, 48, 64, 80, 96, 112, 128)
# A small net: 6 cells of one sep conv, global pooling; 0.15M parameters at width 32.
SMALL = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)), normal_concat=(2,),
                 reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1)), reduce_concat=(2,), n_cells=6, fc_layers=2)


def test_rules_of_the_reference_loader():
    assert num_params_at(SMALL) < 200_000
    assert ghn2_width_choices(SMALL, num_params_at(SMALL)) is None
    assert ghn2_width_choices(SMALL, 300_000) == 3
    assert ghn2_width_choices(SMALL, 500_000) == 2
    assert ghn2_width_choices(SMALL, 900_000) == 1
    assert ghn2_width_choices(SMALL.replace(n_cells=9), 100_000) == 3
    assert ghn2_width_choices(SMALL.replace(n_cells=11), 100_000) == 2
    assert ghn2_width_choices(SMALL.replace(n_cells=13), 100_000) == 1
    assert ghn2_width_choices(SMALL.replace(vgg_head=True), 100_000) == 1
    dense = SMALL.replace(normal=(("conv_7x7", 0),) + SMALL.normal[1:])
    assert ghn2_width_choices(dense, 100_000) == 1


def test_draws_follow_the_tiers():
    small = [net_size("ghn2", (32, 128), 0, i, SMALL, 100_000) for i in range(400)]
    assert {w for w, _ in small} == set(GRID)
    assert {f for w, f in small if w <= 64} == set(GHN2_FC_DIMS)
    assert {f for w, f in small if w > 64} == set(GHN2_FC_DIMS[:4])
    mid = [net_size("ghn2", (32, 128), 0, i, SMALL, 300_000) for i in range(200)]
    assert {w for w, _ in mid} == {32, 48, 64} and {f for _, f in mid} == set(GHN2_FC_DIMS[:4])
    large = [net_size("ghn2", (32, 128), 0, i, SMALL, 2_000_000) for i in range(50)]
    assert {w for w, _ in large} == {32}
    assert net_size("ghn2", (32, 128), 0, 5, SMALL, 100_000) == net_size("ghn2", (32, 128), 0, 5, SMALL, 100_000)
    assert net_size("ghn2", (32, 128), 0, 5, None) == (32, None)  # nets without a genotype keep the base width


def test_uniform_policy_is_the_plain_draw():
    for i in range(20):
        expected = int(np.random.default_rng([7, i]).integers(32, 129))
        assert net_size("uniform", (32, 128), 7, i) == (expected, None)


def test_bad_policy():
    with pytest.raises(ValueError, match="width policy"):
        net_size("wide", (32, 128), 0, 0, SMALL, 1)
    with pytest.raises(ValueError, match="parameter count"):
        net_size("ghn2", (32, 128), 0, 0, SMALL)
    with pytest.raises(ValueError, match="width_policy"):
        ArchDataset(split="train", num=5, width_range=(32, 128), width_policy="wide")


def test_dataset_builds_nets_at_their_drawn_size():
    ds = ArchDataset(split="train", num=300, width_range=(32, 128), width_policy="ghn2", seed=1)
    uniform = ArchDataset(split="train", num=300, width_range=(32, 128), seed=1)
    sizes = [ds.net_size(i) for i in range(300)]
    assert all(w in GRID and f in GHN2_FC_DIMS for w, f in sizes)
    # The paper's draw keeps most nets narrow: several times fewer parameters than a uniform draw.
    p_ghn2 = sum(num_params(ds.genotype(i), 10, 32, w) for i, (w, _) in enumerate(sizes))
    p_uniform = sum(num_params(ds.genotype(i), 10, 32, uniform.width(i)) for i in range(300))
    assert p_ghn2 * 3 < p_uniform
    two_fc = [i for i in range(300) if ds.genotype(i).fc_layers == 2][:3]
    assert two_fc
    for i in two_fc:
        model = ds.build_model(i)
        linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
        assert linears[0].out_features == sizes[i][1]
        assert sum(p.numel() for p in model.parameters()) == num_params(model.genotype, 10, 32, sizes[i][0])
