"""Shared helpers for the GHN tests: paths of the reference files and random DAGs."""

from __future__ import annotations

import os

import torch

#: Folder of the reference files (``../shared/ghn2`` next to the checkout unless ``GHN2_REFERENCE_DIR`` is set);
#: tests that need them are skipped when they are absent.
REFERENCE_DIR = os.environ.get("GHN2_REFERENCE_DIR", os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "ghn2")))
REFERENCE_CKPT = os.path.join(REFERENCE_DIR, "ghn2_cifar10_randinit_seed0.pt")
REFERENCE_JSON = os.path.join(REFERENCE_DIR, "c10s0_resnet18.json")


def random_dag(n: int, seed: int, max_in: int = 3) -> list[tuple[int, int]]:
    """Real edges of a random connected DAG on nodes ``0..n-1`` (each node gets 1-``max_in`` predecessors)."""
    g = torch.Generator().manual_seed(seed)
    edges = set()
    for v in range(1, n):
        k = int(torch.randint(1, max_in + 1, (1,), generator=g))
        for u in torch.randint(0, v, (k,), generator=g).tolist():
            edges.add((u, v))
    return sorted(edges)
