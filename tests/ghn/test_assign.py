"""Fitting predicted blocks to target shapes."""

from __future__ import annotations

import pytest
import torch

from ghn.assign import copy_tiled, fit_to_shape


@pytest.mark.parametrize("target", [(3, 2), (5, 7), (12, 4), (13, 9), (1, 1)])
def test_fit_is_periodic_slice(target):
    block = torch.arange(4 * 4, dtype=torch.float32).view(1, 4, 4)
    out = fit_to_shape(block, target)[0]
    assert out.shape == target
    m = [min(a, 4) for a in target]
    for i in range(target[0]):
        for j in range(target[1]):
            assert out[i, j] == block[0, i % m[0], j % m[1]]


@pytest.mark.parametrize("target", [(8, 12, 3, 3), (10, 13, 3, 3), (128, 64, 1, 1)])
def test_copy_tiled_equals_fit(target):
    block = torch.randn(min(target[0], 64), min(target[1], 64), target[2], target[3])
    dst = torch.empty(target)
    copy_tiled(dst, block, target)
    assert torch.equal(dst, fit_to_shape(block[None], target)[0])


def test_fit_rejects_rank_mismatch():
    with pytest.raises(ValueError):
        fit_to_shape(torch.zeros(1, 2, 2), (2, 2, 2))
