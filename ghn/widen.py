"""Function-preserving widening: the parameters of a narrow network copied into a wider sibling (Net2WiderNet,
Chen, Goodfellow and Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR 2016, Sec. 2.2).

A GHN trained on narrow nets predicts a wide one of the same architecture in two steps: it predicts the narrow
sibling, and every tensor of the wide net is read from the narrow one. An axis of ``a`` channels that has ``b >= a``
in the wide net is mapped by ``j -> floor(j a / b)`` (each narrow channel repeated ``b / a`` times, in place; for
``b / a`` an integer, ``repeat_interleave``). Because the map keeps every concatenated part in place (a part of ``p``
channels in the narrow net is ``p b / a`` in the wide one, a whole number when ``b / a`` is), the same map serves a
convolution's output, a concatenation of cell states and a factorized reduction's two halves. The input axis of a
convolution, linear or attention projection is divided by how often its narrow channel repeats, so each wide unit
computes what its narrow unit computed: for nets of BatchNorm, ReLU, pooling, sums and concatenations the wide net's
logits equal the narrow net's up to float rounding when every concatenated part scales by the same whole number of
channels (any whole ratio ``b / a``, and some others, e.g. 12 from 8). Attention is matched when its number of heads
does not change with the width (the query rows are scaled by ``sqrt(a / b)`` so that the dot products keep their
size), LayerNorm for whole ratios. :func:`widen_network` checks the result on a random batch, so that a caller can
predict the other cases directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from archspace.errors import UsageError


def channel_map(a: int, b: int, device: torch.device | str = "cpu", inner: int = 1) -> torch.Tensor:
    """The narrow entry that each of ``b`` wide entries reads: ``floor(j a / b)``, or, for an axis of channels each
    ``inner`` entries long (a flattened ``(C, H, W)`` map: ``inner = H W``), channel ``floor(c a / b)`` at the same
    offset within the channel.

    Args:
        a: narrow size (``>= 1``), a multiple of ``inner``.
        b: wide size (``>= a``), a multiple of ``inner``.
        inner: entries per channel.

    Returns:
        ``(b,)`` long tensor, every value in ``0..a-1`` present.

    Raises:
        ValueError: ``a < 1``, ``b < a`` or sizes that are not multiples of ``inner``.
    """
    if a < 1 or b < a or a % inner or b % inner:
        raise ValueError(f"a wide axis of {b} cannot be read from a narrow one of {a} (needs 1 <= {a} <= {b}, both "
                         f"multiples of {inner})")
    a, b = a // inner, b // inner
    channels = torch.div(torch.arange(b, device=device) * a, b, rounding_mode="floor")  # (b,)
    return (channels[:, None] * inner + torch.arange(inner, device=device)).reshape(-1)


def has_narrow_sibling(model: nn.Module, width: int) -> bool:
    """Whether ``model`` is a DeepNets-1M :class:`archspace.network.Network` wider than base width ``width`` (the
    nets :func:`narrow_sibling` builds a sibling for), without building anything."""
    from archspace.network import Network

    return isinstance(model, Network) and model.plan.C > width


def narrow_sibling(model: nn.Module, width: int) -> nn.Module | None:
    """The same DeepNets-1M network at ``width`` channels, at its default initialisation, if ``model`` is an
    :class:`archspace.network.Network` wider than that (the base width ``C`` above ``width``), else ``None``.

    Args:
        model: any network; only DeepNets-1M nets (built from a genotype) have a narrow sibling.
        width: the sibling's base width ``C``.

    Returns:
        The sibling on ``model``'s device (same genotype, classes and input size), or ``None``.
    """
    from archspace.network import Network

    if not has_narrow_sibling(model, width):
        return None
    num_classes = model.classifier[-1].out_features
    device = next(model.parameters()).device
    return Network(model.genotype, num_classes=num_classes, image_size=model.expected_input_sz,
                   width=width).to(device)


def widen_network(narrow: nn.Module, wide: nn.Module, input_size: tuple[int, ...], rtol: float = 1e-3) -> bool:
    """Widen a DeepNets-1M network's parameters into its wider sibling (:func:`widen_parameters`, with the VGG head's
    flattened input handled) and check on a random batch that the wide net computes what the narrow one does.

    The check (logits within ``rtol`` of the largest, BatchNorm with batch statistics, dropout off) catches the
    cases the channel map cannot make exact: concatenated parts that do not scale by the same ratio (a factorized
    reduction's halves at an odd width), attention whose head count changes with the width, LayerNorm at a ratio
    that is not a whole number.

    Args:
        narrow: a :class:`archspace.network.Network` (e.g. predicted at a GHN's training width).
        wide: the same genotype at a larger width; written in place, also when the check fails.
        input_size: ``(1, C, H, W)`` of the nets' images.
        rtol: tolerance of the check, relative to the largest logit.

    Returns:
        Whether the widened net matched.
    """
    from .batchnorm import bn_mode

    inner = {}
    if narrow.genotype.vgg_head and narrow.plan.cells:  # the head reads the last map flattened: (C, S, S)
        size = narrow.plan.cells[-1].out_size
        inner["classifier.0.weight"] = size * size
    try:
        widen_parameters(narrow, wide, inner)
    except UsageError:
        return False
    device = next(wide.parameters()).device
    x = torch.randn(4, *input_size[1:], generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad(), bn_mode(narrow, "batch"), bn_mode(wide, "batch"):
        a, b = narrow(x), wide(x)
    scale = float(a.abs().max()) or 1.0
    return bool(torch.isfinite(b).all()) and float((a - b).abs().max()) <= rtol * scale


def _input_axis_params(model: nn.Module) -> dict[str, int]:
    """Names of the parameters whose axis 1 is an input axis that sums over channels: weights of convolutions
    (unless depthwise-like, one input channel per group), linear layers and attention projections."""
    out: dict[str, int] = {}
    for prefix, m in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            out[f"{dot}weight"] = 1
        elif isinstance(m, nn.Linear):
            out[f"{dot}weight"] = 1
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            out[f"{dot}in_proj_weight"] = 1
    return out


def widen_tensor(narrow: torch.Tensor, shape: torch.Size | tuple[int, ...], input_axis: int | None = None,
                 inner: int = 1) -> torch.Tensor:
    """One tensor of the wide net read from its narrow counterpart (module docstring).

    Args:
        narrow: ``(a_0, a_1, ...)``.
        shape: the wide shape ``(b_0, b_1, ...)``, same number of dims, ``b_d >= a_d``.
        input_axis: an axis that sums over its channels (a weight's axis 1); its values are divided by how often
            each narrow channel repeats.
        inner: entries per channel of ``input_axis`` (:func:`channel_map`).

    Returns:
        A new tensor of ``shape``.

    Raises:
        ValueError: another number of dims, or a wide axis smaller than the narrow one.
    """
    shape = tuple(int(s) for s in shape)
    if narrow.dim() != len(shape):
        raise ValueError(f"cannot widen a tensor of shape {tuple(narrow.shape)} to {shape}")
    out = narrow
    for d, (a, b) in enumerate(zip(narrow.shape, shape)):
        if a == b:
            continue
        index = channel_map(a, b, narrow.device, inner if d == input_axis else 1)
        out = out.index_select(d, index)
        if d == input_axis:
            counts = torch.bincount(index, minlength=a).to(out.dtype)[index]  # (b,) repeats of each channel
            view = [1] * out.dim()
            view[d] = b
            out = out / counts.view(view)
    return out


@torch.no_grad()
def widen_parameters(narrow: nn.Module, wide: nn.Module, inner: dict[str, int] | None = None) -> nn.Module:
    """Copy a narrow network's parameters and buffers into a wider network of the same architecture, so that the
    wide network computes what the narrow one does (Net2WiderNet, Chen et al., ICLR 2016, Sec. 2.2; module
    docstring).

    Args:
        narrow: the source network (e.g. a GHN's prediction at its training width).
        wide: the same architecture with every channel axis at least as wide: the same parameter and buffer names,
            each tensor with the same number of dims. Written in place.
        inner: entries per channel of a weight's input axis, by parameter name (a linear layer that reads a
            flattened ``(C, H, W)`` map: ``H W``); 1 for the others.

    Returns:
        ``wide``.

    Raises:
        UsageError: the two nets do not have the same parameter names, or a tensor of ``wide`` is narrower than
            its counterpart or has another number of dims.
    """
    src = dict(narrow.named_parameters())
    dst = dict(wide.named_parameters())
    if set(src) != set(dst):
        missing = sorted(set(dst) ^ set(src))[:3]
        raise UsageError(f"cannot widen: the two networks differ in their parameters ({', '.join(missing)}); "
                         "widen only a network into a wider copy of the same architecture")
    inputs = _input_axis_params(wide)
    attention = {f"{p}.in_proj_weight" if p else "in_proj_weight": m for p, m in wide.named_modules()
                 if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None}
    try:
        for name, p in dst.items():
            q = widen_tensor(src[name].detach().to(p.device, p.dtype), p.shape, inputs.get(name),
                             (inner or {}).get(name, 1))
            p.copy_(q)
        for name, m in attention.items():  # keep the query-key products' scale (module docstring)
            a = src[name].shape[1]
            b = m.embed_dim
            if a != b:
                scale = math.sqrt(a / b)
                m.in_proj_weight[:b].mul_(scale)
                if m.in_proj_bias is not None:
                    m.in_proj_bias[:b].mul_(scale)
        src_buf = dict(narrow.named_buffers())
        for name, buf in wide.named_buffers():
            if name in src_buf and buf.dim() == src_buf[name].dim() and buf.is_floating_point():
                buf.copy_(widen_tensor(src_buf[name].to(buf.device, buf.dtype), buf.shape))
    except ValueError as e:
        raise UsageError(f"cannot widen {name}: {e}") from None
    return wide
