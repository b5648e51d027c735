"""Shared helpers for the GHN tests: paths of the reference files, the marker of tests that need them, a tiny
checkpoint, and random DAGs."""

from __future__ import annotations

import os

import pytest
import torch

#: Folder of the reference files (``../shared/ghn2`` next to the checkout unless ``GHN2_REFERENCE_DIR`` is set).
REFERENCE_DIR = os.environ.get("GHN2_REFERENCE_DIR", os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "ghn2")))
REFERENCE_CKPT = os.path.join(REFERENCE_DIR, "ghn2_cifar10_randinit_seed0.pt")
REFERENCE_JSON = os.path.join(REFERENCE_DIR, "c10s0_resnet18.json")
REFERENCE_CHECKER = os.path.join(REFERENCE_DIR, "check_state.py")
_REFERENCE_FILES = (REFERENCE_CKPT, REFERENCE_JSON, REFERENCE_CHECKER)
_MISSING = [p for p in _REFERENCE_FILES if not os.path.exists(p)]

#: Set to 1 where the reference files must be present (CI has ``../shared`` beside the checkout): the tests that
#: need them then fail instead of being skipped.
REQUIRE_ENV = "GHN_REQUIRE_REFERENCE"

#: Marker of the tests that need the reference files: skipped, naming the missing path, when they are absent
#: (unless ``GHN_REQUIRE_REFERENCE=1``).
needs_reference = pytest.mark.skipif(
    bool(_MISSING) and os.environ.get(REQUIRE_ENV, "") in ("", "0"),
    reason=f"reference file {_MISSING[0] if _MISSING else ''} not found: put ../shared/ghn2 beside the checkout "
           f"or set GHN2_REFERENCE_DIR ({REQUIRE_ENV}=1 makes this a failure, as in CI)")


@pytest.fixture
def tiny_ckpt(tmp_path) -> str:
    """A small random GHN (10 classes, image size 32) saved in our format; returns its path."""
    torch.manual_seed(0)
    from ghn import GHN

    path = tmp_path / "tiny.safetensors"
    GHN(max_shape=(16, 16, 3, 3), hidden_dim=8, num_classes=10).save(str(path))
    return str(path)


def random_dag(n: int, seed: int, max_in: int = 3) -> list[tuple[int, int]]:
    """Real edges of a random connected DAG on nodes ``0..n-1`` (each node gets 1-``max_in`` predecessors)."""
    g = torch.Generator().manual_seed(seed)
    edges = set()
    for v in range(1, n):
        k = int(torch.randint(1, max_in + 1, (1,), generator=g))
        for u in torch.randint(0, v, (k,), generator=g).tolist():
            edges.add((u, v))
    return sorted(edges)
