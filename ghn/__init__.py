"""ghn: the graph hypernetwork GHN-2 (Knyazev et al., NeurIPS 2021), compatible with the reference checkpoints.

Quick use::

    from ghn import GHN
    ghn = GHN.load("ghn2_cifar10.pt")
    model, report = ghn(model)          # predicts every parameter in place; BN uses batch statistics
    print(report)
"""

from __future__ import annotations

from .batchnorm import recompute_bn_stats, set_bn_mode
from .checkpoint import CheckpointError
from .model import GHN
from .report import PredictionReport

__all__ = ["GHN", "CheckpointError", "PredictionReport", "recompute_bn_stats", "set_bn_mode"]
