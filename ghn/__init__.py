"""ghn: the graph hypernetwork GHN-2 (Knyazev et al., NeurIPS 2021), compatible with the reference checkpoints.

Quick use::

    from ghn import GHN
    ghn = GHN.load("ghn2_cifar10.pt")           # ours (.safetensors) or a reference torch.save checkpoint
    model = ghn(model)                           # predicts every parameter in place
    model, report = ghn(model, return_report=True)
    print(report)                                # predicted / tiled / untouched parameters

BatchNorm running statistics are not predicted: by default (``bn_mode="batch"``) BN layers then always use batch
statistics, also after ``model.eval()``; with ``bn_mode="keep"`` call ``recompute_bn_stats(model, loader, n)``
before evaluating (see :mod:`ghn.batchnorm`). For training a GHN use ``GHN.predict_parameters(graphs, models)``
with ``torch.func.functional_call``.

Public names are imported lazily so that ``import ghn.cli`` stays light.
"""

from __future__ import annotations

import importlib

import archspace  # noqa: F401  (installs the filter for torch_geometric's import-time warning)

_EXPORTS = {
    "GHN": "ghn.model",
    "CheckpointError": "ghn.checkpoint",
    "PredictionReport": "ghn.report",
    "recompute_bn_stats": "ghn.batchnorm",
    "set_bn_mode": "ghn.batchnorm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ghn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
