"""Fixtures for the GHN tests: small random DAGs and a small GHN (the real constructor, shrunk)."""

from __future__ import annotations

import pytest
import torch

from ghn import GHN

REFERENCE_CKPT = "/work/shared/ghn2/ghn2_cifar10_randinit_seed0.pt"
REFERENCE_JSON = "/work/shared/ghn2/c10s0_resnet18.json"


def random_dag(n: int, seed: int, max_in: int = 3) -> list[tuple[int, int]]:
    """Real edges of a random connected DAG on nodes ``0..n-1`` (each node gets 1-``max_in`` predecessors)."""
    g = torch.Generator().manual_seed(seed)
    edges = set()
    for v in range(1, n):
        k = int(torch.randint(1, max_in + 1, (1,), generator=g))
        for u in torch.randint(0, v, (k,), generator=g).tolist():
            edges.add((u, v))
    return sorted(edges)


@pytest.fixture
def small_ghn() -> GHN:
    """A GHN-2 of the released layout with a smaller hidden size, seeded."""
    torch.manual_seed(0)
    return GHN(max_shape=(16, 16, 5, 5), num_classes=10, hidden_dim=16)
