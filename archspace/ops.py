"""The DeepNets-1M cell operations as ``nn.Module`` s, and their parameter counts.

The candidate operations follow the extended DARTS list of DeepNets-1M (Knyazev et al., NeurIPS 2021, Sec. 3 and
Appendix): none, 3x3 max/avg pooling, skip, separable convs 3x3/5x5, dilated convs 3x3/5x5, dense convs 1x1,
7x1-1x7, 3x3, 5x5, 7x7, multi-head self-attention (``msa``) and channel squeeze-excitation (``cse``). Every layer
with parameters is a standard torch layer (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.LayerNorm``,
``nn.MultiheadAttention``, ``nn.Linear``), so the generic graph builder maps it through
:data:`archspace.primitives.MODULE_PRIMITIVES`; the two composite operations are recognised by their class names
:class:`ChannelSE` and :class:`SelfAttention2d`, the learned positional encoding by :class:`PosEnc`.

:data:`OPS` is the registry (operation name -> constructor); :func:`op_num_params` gives the parameter count of
an operation without building it, and is checked against the modules in the tests.

Shapes: all operations map ``(B, C_in, H, W)`` to ``(B, C_out, H', W')`` with ``H' = ceil(H / stride)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import Conv2d
from .norm import BatchNorm2d

#: Candidate cell operations of DeepNets-1M, in the order of the reference sampler. The position is the op id
#: used in the compact genotype encoding; append only.
OP_NAMES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_1x1",
    "conv_7x1_1x7",
    "conv_3x3",
    "conv_5x5",
    "conv_7x7",
    "msa",
    "cse",
)

#: Operation name -> id in :data:`OP_NAMES`.
OP_ID: dict[str, int] = {name: i for i, name in enumerate(OP_NAMES)}


def norm_layer(norm: str | None, channels: int) -> nn.Module | None:
    """Return the normalisation layer of a DeepNets-1M op: BatchNorm for ``'bn'``, nothing for ``None``.

    Args:
        norm: ``'bn'`` or ``None``.
        channels: number of channels normalised.

    Returns:
        An :class:`archspace.norm.BatchNorm2d` (an ``nn.BatchNorm2d`` with a faster CPU backward), or ``None`` when
        the net has no normalisation.

    Raises:
        ValueError: for any other ``norm``.
    """
    if norm is None:
        return None
    if norm == "bn":
        return BatchNorm2d(channels)
    raise ValueError(f"norm must be 'bn' or None, got {norm!r}")


def _seq(*layers: nn.Module | None) -> nn.Sequential:
    """``nn.Sequential`` of the given layers, leaving out ``None`` (absent normalisation)."""
    return nn.Sequential(*[layer for layer in layers if layer is not None])


class ReLUConvBN(nn.Sequential):
    """ReLU, a dense convolution (or a 1xk then kx1 pair) and optional BatchNorm: the DARTS ``conv_kxk`` and
    ``conv_7x1_1x7`` operations (Liu et al., ICLR 2019; Knyazev et al., 2021, Appendix) and the 1x1 cell
    pre-processing.

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: kernel size ``k``.
        stride: stride (1 or 2).
        norm: ``'bn'`` or ``None``.
        factorized: if True, use a ``1 x k`` conv (``C_in -> C_in``) followed by a ``k x 1`` conv
            (``C_in -> C_out``) instead of one ``k x k`` conv.

    Shapes:
        ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int = 1, stride: int = 1, norm: str | None = "bn",
                 factorized: bool = False):
        pad = kernel_size // 2
        if factorized:
            convs = [
                nn.Conv2d(C_in, C_in, (1, kernel_size), stride=(1, stride), padding=(0, pad), bias=False),
                nn.Conv2d(C_in, C_out, (kernel_size, 1), stride=(stride, 1), padding=(pad, 0), bias=False),
            ]
        else:
            convs = [Conv2d(C_in, C_out, kernel_size, stride=stride, padding=pad, bias=False)]
        super().__init__(*_seq(nn.ReLU(), *convs, norm_layer(norm, C_out)))


class SepConv(nn.Sequential):
    """Separable convolution of DARTS applied twice: (ReLU, depthwise ``k x k``, pointwise, BN) x 2 (Liu et al.,
    ICLR 2019; Knyazev et al., 2021, Appendix). The first depthwise conv carries the stride. The second ReLU runs in
    place: its input (the BN's or, without BN, the pointwise conv's output) is read by nothing else, and neither
    layer's backward needs it, so the numbers are the same and an activation's allocation is saved (the
    paper-setting training step 1.3-3% faster, README "Speed").

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: depthwise kernel size (3 or 5).
        stride: stride of the first depthwise conv.
        norm: ``'bn'`` or ``None``.

    Shapes:
        ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1, norm: str | None = "bn"):
        pad = kernel_size // 2
        super().__init__(*_seq(
            nn.ReLU(),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=pad, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            norm_layer(norm, C_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(C_in, C_in, kernel_size, padding=pad, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            norm_layer(norm, C_out),
        ))


class DilConv(nn.Sequential):
    """Dilated separable convolution of DARTS: ReLU, depthwise ``k x k`` conv with dilation 2, pointwise conv, BN
    (Liu et al., ICLR 2019; Knyazev et al., 2021, Appendix).

    Args:
        C_in: input channels.
        C_out: output channels.
        kernel_size: depthwise kernel size (3 or 5).
        stride: stride of the depthwise conv.
        norm: ``'bn'`` or ``None``.

    Shapes:
        ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1, norm: str | None = "bn"):
        super().__init__(*_seq(
            nn.ReLU(),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=kernel_size - 1, dilation=2, groups=C_in,
                      bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            norm_layer(norm, C_out),
        ))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two strided 1x1 convs on pixel grids shifted by one, concatenated (DARTS's
    factorized reduction; Liu et al., ICLR 2019). Used for ``skip_connect`` with stride 2 and to pre-process the
    older input of the cell after a reduction cell.

    Args:
        C_in: input channels.
        C_out: output channels (split as ``C_out // 2`` and ``C_out - C_out // 2`` between the two convs).
        norm: ``'bn'`` or ``None``.

    Shapes:
        ``(B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2))``
    """

    def __init__(self, C_in: int, C_out: int, norm: str | None = "bn"):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)  # archspace.conv: safe 1x1 strided
        self.conv_2 = Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        bn = norm_layer(norm, C_out)
        if bn is not None:
            self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]  # (B, C_in, H-1, W-1)
        # Odd sizes: pad the shifted grid so both branches give ceil(H / 2) rows and columns.
        shifted = F.pad(shifted, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        out = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)  # (B, C_out, ceil(H/2), ceil(W/2))
        return self.bn(out) if hasattr(self, "bn") else out


class Stride(nn.Module):
    """Parameter-free spatial subsampling ``x[:, :, ::s, ::s]`` (the pre-processing of the older cell input after a
    reduction in nets without 1x1 pre-processing).

    Args:
        stride: subsampling step ``s``.

    Shapes:
        ``(B, C, H, W) -> (B, C, ceil(H / s), ceil(W / s))``
    """

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class Zero(nn.Module):
    """The ``none`` operation: outputs zeros (subsampled when strided). :class:`archspace.network.Network` leaves
    ``none`` edges out instead of building this module, since they contribute nothing; it is here so that
    :data:`OPS` covers every name.

    Args:
        stride: subsampling step.

    Shapes:
        ``(B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class ChannelSE(nn.Module):
    """Channel squeeze-excitation (``cse``; Hu et al., CVPR 2018; Knyazev et al., 2021, Appendix): global average,
    ``Linear(C, C // 2)``, ReLU, ``Linear(C // 2, C)``, sigmoid gate multiplied into the input, then optional
    subsampling. The graph builder recognises this class by name and makes it one ``cse`` node (plus its linear
    layers).

    Args:
        channels: number of channels ``C`` (input and output).
        stride: spatial subsampling step after gating (2 in reduction cells).
        reduction: channel reduction ratio of the bottleneck.

    Shapes:
        ``(B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, channels: int, stride: int = 1, reduction: int = 2):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.stride = stride
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeeze))))  # (B, C)
        out = x * gate[:, :, None, None]  # (B, C, H, W)
        return out if self.stride == 1 else out[:, :, :: self.stride, :: self.stride]


def attention_heads(channels: int, max_heads: int = 8) -> int:
    """Number of attention heads for ``channels``: the largest power of two up to ``max_heads`` dividing it (the
    reference uses 8 heads; arbitrary widths need a divisor).

    Args:
        channels: embedding size.
        max_heads: upper bound (a power of two).

    Returns:
        The number of heads.
    """
    heads = max_heads
    while channels % heads:
        heads //= 2
    return heads


class SelfAttention2d(nn.Module):
    """A pre-norm transformer block on the pixels of a feature map, the ``msa`` operation of DeepNets-1M
    (Dosovitskiy et al., ICLR 2021; Knyazev et al., 2021, Appendix): ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``,
    where the MLP is ``Linear(C, r C)``, GELU, ``Linear(r C, C)``. The graph builder recognises this class by name.

    Args:
        channels: embedding size ``C`` (input and output channels).
        stride: spatial subsampling step after the block.
        mlp_ratio: hidden size of the MLP as a multiple ``r`` of ``C`` (1 as in the reference).
        max_heads: at most this many heads (see :func:`attention_heads`).

    Shapes:
        ``(B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, channels: int, stride: int = 1, mlp_ratio: int = 1, max_heads: int = 8):
        super().__init__()
        self.stride = stride
        self.ln1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, attention_heads(channels, max_heads), batch_first=True)
        self.ln2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, mlp_ratio * channels), nn.GELU(),
                                 nn.Linear(mlp_ratio * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        h = self.ln1(tokens)
        tokens = tokens + self.attn(h, h, h, need_weights=False)[0]  # (B, H*W, C)
        tokens = tokens + self.mlp(self.ln2(tokens))  # (B, H*W, C)
        out = tokens.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return out if self.stride == 1 else out[:, :, :: self.stride, :: self.stride]


class PosEnc(nn.Module):
    """Learned positional encoding added to a feature map (``pos_enc`` primitive; the ViT stem of DeepNets-1M,
    Knyazev et al., 2021, Appendix). Holds one parameter, ``weight``.

    Args:
        channels: channels ``C``.
        size: spatial size ``S`` of the feature map (square).

    Shapes:
        ``(B, C, S, S) -> (B, C, S, S)``; ``weight``: ``(1, C, S, S)``
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


def _pool(kind: type[nn.Module], stride: int) -> nn.Module:
    if kind is nn.AvgPool2d:
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return nn.MaxPool2d(3, stride=stride, padding=1)


#: Operation name -> constructor ``(C_in, C_out, stride, norm) -> nn.Module``. Parameter-free operations and
#: ``msa``/``cse`` keep the channel count, so callers must pass ``C_in == C_out`` for them (the network does).
OPS: dict[str, Callable[[int, int, int, str | None], nn.Module]] = {
    "none": lambda C_in, C_out, stride, norm: Zero(stride),
    "max_pool_3x3": lambda C_in, C_out, stride, norm: _pool(nn.MaxPool2d, stride),
    "avg_pool_3x3": lambda C_in, C_out, stride, norm: _pool(nn.AvgPool2d, stride),
    "skip_connect": lambda C_in, C_out, stride, norm: (nn.Identity() if stride == 1
                                                       else FactorizedReduce(C_in, C_out, norm)),
    "sep_conv_3x3": lambda C_in, C_out, stride, norm: SepConv(C_in, C_out, 3, stride, norm),
    "sep_conv_5x5": lambda C_in, C_out, stride, norm: SepConv(C_in, C_out, 5, stride, norm),
    "dil_conv_3x3": lambda C_in, C_out, stride, norm: DilConv(C_in, C_out, 3, stride, norm),
    "dil_conv_5x5": lambda C_in, C_out, stride, norm: DilConv(C_in, C_out, 5, stride, norm),
    "conv_1x1": lambda C_in, C_out, stride, norm: ReLUConvBN(C_in, C_out, 1, stride, norm),
    "conv_7x1_1x7": lambda C_in, C_out, stride, norm: ReLUConvBN(C_in, C_out, 7, stride, norm, factorized=True),
    "conv_3x3": lambda C_in, C_out, stride, norm: ReLUConvBN(C_in, C_out, 3, stride, norm),
    "conv_5x5": lambda C_in, C_out, stride, norm: ReLUConvBN(C_in, C_out, 5, stride, norm),
    "conv_7x7": lambda C_in, C_out, stride, norm: ReLUConvBN(C_in, C_out, 7, stride, norm),
    "msa": lambda C_in, C_out, stride, norm: SelfAttention2d(C_in, stride),
    "cse": lambda C_in, C_out, stride, norm: ChannelSE(C_in, stride),
}

_KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5, "conv_1x1": 1,
           "conv_3x3": 3, "conv_5x5": 5, "conv_7x7": 7}


def op_num_params(name: str, C_in: int, C_out: int, stride: int, norm: str | None) -> int:
    """Number of parameters of ``OPS[name](C_in, C_out, stride, norm)``, computed without building it.

    Args:
        name: an operation name from :data:`OP_NAMES`.
        C_in: input channels.
        C_out: output channels.
        stride: stride.
        norm: ``'bn'`` or ``None``.

    Returns:
        The parameter count.

    Raises:
        KeyError: for an unknown operation name.
    """
    bn = 2 if norm == "bn" else 0
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if name == "skip_connect":
        return 0 if stride == 1 else C_in * C_out + bn * C_out
    if name.startswith("sep_conv"):
        k = _KERNEL[name]
        return 2 * C_in * k * k + C_in * C_in + C_in * C_out + bn * (C_in + C_out)
    if name.startswith("dil_conv"):
        k = _KERNEL[name]
        return C_in * k * k + C_in * C_out + bn * C_out
    if name == "conv_7x1_1x7":
        return 7 * C_in * C_in + 7 * C_in * C_out + bn * C_out
    if name in _KERNEL:
        k = _KERNEL[name]
        return C_in * C_out * k * k + bn * C_out
    if name == "msa":
        C = C_in
        # 2 LayerNorms, in-projection (3C x C + 3C), out-projection (C x C + C), MLP with hidden size C.
        return 4 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * (C * C + C)
    if name == "cse":
        hidden = max(1, C_in // 2)
        return C_in * hidden + hidden + hidden * C_in + C_in
    raise KeyError(f"unknown operation {name!r}; expected one of {OP_NAMES}")
