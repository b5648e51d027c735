"""Seeds derived from integers, so that every random draw of a run is a pure function of ``(seed, what, where)``.

Training draws its meta-batches from ``mix_seed(seed, 3, step)``, builds net ``i`` under ``mix_seed(seed, 5, i)``
and so on: a resumed or data-parallel run then draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

import numpy as np


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (``numpy.random.SeedSequence``), e.g. ``mix_seed(seed, step)``.

    Args:
        parts: the integers (each reduced to its low 48 bits).

    Returns:
        A seed in ``[0, 2**63)``, usable with ``torch.Generator.manual_seed``.
    """
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))
