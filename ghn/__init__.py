"""ghn: the graph hypernetwork GHN-2 (Knyazev et al., NeurIPS 2021), compatible with the reference checkpoints.

Quick use::

    from ghn import GHN
    ghn = GHN.from_pretrained("ghn2-cifar10")    # a released GHN (downloaded once, verified), a file or a run dir
    ghn = GHN.load("ghn2_cifar10.pt")           # ours (.safetensors) or a reference torch.save checkpoint
    model = ghn(model)                           # predicts every parameter in place
    model, report = ghn(model, return_report=True)
    print(report)                                # predicted / tiled / untouched parameters

BatchNorm running statistics are not predicted; one vocabulary, ``batch`` or ``running``, says how BN layers are
left (:mod:`ghn.batchnorm`). By default (``bn_mode="batch"``, as the paper evaluates) they always use batch
statistics, also after ``model.eval()``; with ``bn_mode="running"`` (the ``ghn predict`` default, so the saved state
dict loads into the plain model) call ``recompute_bn_stats(model, loader, n)`` before evaluating in eval mode.

A GHN trained for N classes refuses a network whose classifier has M != N outputs (:class:`ClassMismatchError`)
unless ``keep_classifier_init=True``, which leaves the classifier at its default initialisation; a network that does
not run at the requested input size raises :class:`InputSizeError`; a bad checkpoint :class:`CheckpointError`; a
released GHN that cannot be fetched or verified :class:`DownloadError`. All four are ``archspace.errors.UsageError``,
reported by the command lines as one line with exit status 2.

For training a GHN use ``GHN.predict_parameters(graphs, models)`` with ``torch.func.functional_call``.

Public names are imported lazily so that ``import ghn.cli`` stays light.
"""

from __future__ import annotations

import importlib

import archspace  # noqa: F401  (installs the filter for torch_geometric's import-time warning)

_EXPORTS = {
    "GHN": "ghn.model",
    "CheckpointError": "ghn.checkpoint",
    "DownloadError": "ghn.pretrained",
    "ClassMismatchError": "ghn.model",
    "InputSizeError": "ghn.model",
    "bn_mode": "ghn.batchnorm",
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
