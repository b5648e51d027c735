"""BatchNorm after parameter prediction: running statistics are not predicted, so choose how they are handled.

A GHN predicts BatchNorm weights and biases but not the running mean and variance, which stay at their initial
values (0 and 1) and make a plain ``model.eval()`` wrong. The reference silently switches BN layers to training
mode; here the choice is explicit:

- ``bn_mode="batch"``: every BN layer normalises with the statistics of the current batch, in train *and* eval mode
  (``track_running_stats=False``, running buffers removed). This is how the paper evaluates predicted parameters
  (batches of 64); results then depend on the batch.
- ``bn_mode="keep"``: leave BN layers untouched; call :func:`recompute_bn_stats` on some training batches so that
  plain eval mode is correct.
- ``bn_mode="reset"``: reset the running statistics to their initial values (as ``keep`` after a fresh init).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

BN_MODES = ("batch", "keep", "reset")


def set_bn_mode(model: nn.Module, mode: str) -> nn.Module:
    """Put every BatchNorm layer of ``model`` into ``mode`` (see the module docstring).

    Args:
        model: any network.
        mode: ``"batch"``, ``"keep"`` or ``"reset"``.

    Returns:
        ``model`` (changed in place).

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {mode!r}")
    for m in model.modules():
        if not isinstance(m, _BatchNorm):
            continue
        if mode == "batch":
            if not m.track_running_stats and m.running_mean is None:
                continue  # already in batch-statistics mode
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
        elif mode == "reset" and m.track_running_stats:
            m.reset_running_stats()
    return model


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, num_batches: int = 50) -> nn.Module:
    """Re-estimate BatchNorm running statistics from data, so that ``model.eval()`` is correct.

    Statistics are reset and accumulated as a cumulative average over ``num_batches`` batches (``momentum=None``);
    BN layers left in batch-statistics mode by ``bn_mode="batch"`` get running buffers again. Only BN layers are
    switched to train mode during the passes; the model's modes and momenta are restored afterwards.

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
    was_training = {m: m.training for m in model.modules()}
    saved_momentum = {}
    for m in bns:
        if m.running_mean is None:
            m.track_running_stats = True
            m.register_buffer("running_mean", torch.zeros(m.num_features, device=device))
            m.register_buffer("running_var", torch.ones(m.num_features, device=device))
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
