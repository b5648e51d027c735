"""Operation-dependent normalisation of predicted tensors (Knyazev et al., NeurIPS 2021, Sec. 4.3 and Appendix).

The raw decoder output has no notion of the scale a layer needs. GHN-2 rescales every predicted tensor according to
its role, as the reference implementation does:

- weights with 2 or more dims: ``p * sqrt(beta / fan_in)``, ``fan_in = prod(shape[1:])`` of the *target* tensor,
  ``beta = 1`` for layers assumed not followed by a ReLU (one input channel per group, i.e. depthwise, or a kernel
  with height < width), else ``beta = 2`` (He initialisation);
- norm-layer weights (and other 1-D weights): ``2 * sigmoid(p / 2)``, in (0, 2);
- biases: ``tanh(0.2 p)``, in (-1, 1);
- positional encodings / class tokens: left as predicted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: Normalisation kinds.
FAN_IN, SIGMOID, TANH, IDENTITY = "fan_in", "sigmoid", "tanh", "identity"


def normalization_kind(shape: Sequence[int], is_bias: bool, is_pos_enc: bool) -> tuple[str, float]:
    """Which normalisation a target tensor gets, and its scale (for ``fan_in``).

    Args:
        shape: target parameter shape.
        is_bias: the parameter is a bias (its name ends with ``bias``).
        is_pos_enc: the parameter belongs to a positional-encoding node.

    Returns:
        ``(kind, scale)``: kind one of :data:`FAN_IN`, :data:`SIGMOID`, :data:`TANH`, :data:`IDENTITY`; scale is
        ``sqrt(beta / fan_in)`` for ``fan_in`` and 1 otherwise.
    """
    if is_pos_enc:
        return IDENTITY, 1.0
    if len(shape) >= 2:
        no_relu = len(shape) > 2 and (shape[1] == 1 or (len(shape) > 3 and shape[2] < shape[3]))
        beta = 1.0 if no_relu else 2.0
        return FAN_IN, (beta / max(1, math.prod(shape[1:]))) ** 0.5
    if is_bias:
        return TANH, 1.0
    return SIGMOID, 1.0


def normalize(p: torch.Tensor, kind: str, scale: float = 1.0) -> torch.Tensor:
    """Apply a normalisation elementwise (so it may be applied before tiling with the same result).

    Args:
        p: predicted tensor, any shape.
        kind: from :func:`normalization_kind`.
        scale: the ``fan_in`` scale.

    Returns:
        Tensor of the same shape.
    """
    if kind == FAN_IN:
        return p * scale
    if kind == SIGMOID:
        return 2 * torch.sigmoid(0.5 * p)
    if kind == TANH:
        return torch.tanh(0.2 * p)
    if kind == IDENTITY:
        return p
    raise ValueError(f"unknown normalisation {kind!r}")
