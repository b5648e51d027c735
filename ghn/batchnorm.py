"""BatchNorm after parameter prediction: running statistics are not predicted, so choose how they are used.

A GHN predicts BatchNorm weights and biases but not the running mean and variance, which stay at their initial
values (0 and 1) and make a plain ``model.eval()`` wrong. The reference silently switches BN layers to training
mode; here the choice is explicit, with one vocabulary across the Python API, the command lines and the configs:

- ``"batch"``: BN layers normalise with the statistics of the current batch, in train *and* eval mode. This is how
  the paper evaluates predicted parameters (batches of 64); results then depend on the batch.
- ``"running"``: BN layers use their running buffers, as PyTorch does in eval mode; after a prediction call
  :func:`recompute_bn_stats` on some training batches first so that the buffers are right.

:func:`set_bn_mode` applies a mode for good (``"batch"`` removes the running buffers, so the model keeps using batch
statistics wherever it goes); :func:`bn_mode` applies one for the duration of a ``with`` block and leaves no trace
(used for evaluation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from archspace.errors import UsageError

BN_MODES = ("batch", "running")


def check_bn_mode(mode: str) -> str:
    """Validate a BatchNorm mode name.

    Returns:
        ``mode``.

    Raises:
        archspace.errors.UsageError: (a ``ValueError``) ``mode`` is not one of :data:`BN_MODES`.
    """
    if mode not in BN_MODES:
        raise UsageError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {mode!r}")
    return mode


def set_bn_mode(model: nn.Module, mode: str) -> nn.Module:
    """Put every BatchNorm layer of ``model`` into ``mode`` for good (see the module docstring).

    ``"batch"`` sets ``track_running_stats=False`` and removes the running buffers (PyTorch then normalises with
    batch statistics in eval mode too); ``"running"`` leaves the layers as they are.

    Args:
        model: any network.
        mode: ``"batch"`` or ``"running"``.

    Returns:
        ``model`` (changed in place).

    Raises:
        ValueError: for an unknown mode (nothing is changed).
    """
    check_bn_mode(mode)
    if mode == "batch":
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.running_mean is not None:
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
                m.num_batches_tracked = None
    return model


@contextlib.contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Evaluation mode for the duration of a ``with`` block, BatchNorm in ``mode``; afterwards the modules' train
    flags and the BN running buffers are exactly as before (the block leaves no trace).

    Under ``"batch"`` every BN layer is switched to train mode (batch statistics, Knyazev et al. 2021, Sec. 5:
    predicted parameters are evaluated with batches of 64); dropout and the like stay in eval mode.

    Args:
        model: any network.
        mode: ``"batch"`` or ``"running"``.

    Yields:
        ``model``.

    Raises:
        ValueError: for an unknown mode.
    """
    check_bn_mode(mode)
    modes = {m: m.training for m in model.modules()}
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)] if mode == "batch" else []
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in layers]
    model.eval()
    for m in layers:
        m.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, buffers in zip(layers, saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        for m, was in modes.items():
            m.training = was


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, num_batches: int = 50) -> nn.Module:
    """Re-estimate BatchNorm running statistics from data, so that ``model.eval()`` is correct.

    Statistics are reset and accumulated as a cumulative average over ``num_batches`` batches (``momentum=None``);
    BN layers put in batch-statistics mode by ``set_bn_mode(model, "batch")`` get running buffers again. Only BN
    layers are switched to train mode during the passes; the model's modes and momenta are restored afterwards.

    Args:
        model: the network.
        batches: an iterable of inputs, or of ``(inputs, targets, ...)`` tuples (a ``DataLoader`` works).
        num_batches: how many batches to use at most.

    Returns:
        ``model`` (changed in place).

    Raises:
        ValueError: if ``batches`` yields nothing.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return model
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = {m: m.training for m in model.modules()}
    saved_momentum = {}
    for m in bns:
        if m.running_mean is None:  # removed by batch mode: made again in the layer's dtype (float64, bfloat16 nets)
            kw = ({"device": m.weight.device, "dtype": m.weight.dtype} if m.weight is not None
                  else {"device": device, "dtype": dtype})
            m.track_running_stats = True
            m.register_buffer("running_mean", torch.zeros(m.num_features, **kw))
            m.register_buffer("running_var", torch.ones(m.num_features, **kw))
            m.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        m.reset_running_stats()
        saved_momentum[m] = m.momentum
        m.momentum = None  # cumulative moving average
    model.eval()
    for m in bns:
        m.train()
    seen = 0
    try:
        for batch in batches:
            if seen >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            seen += 1
    finally:
        for m, mom in saved_momentum.items():
            m.momentum = mom
        for m, mode in was_training.items():
            m.training = mode
    if seen == 0:
        raise ValueError("recompute_bn_stats got no batches")
    return model
