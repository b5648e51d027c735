"""Small networks with awkward parameter shapes, and their hand-built graphs, for the GHN tests."""

from __future__ import annotations

import torch
import torch.nn as nn

from .handmade import make_graph


class OddNet(nn.Module):
    """Channel counts the reference decoder crashes on (5, 7, 10, 11, 13, 14, 15), a 13x13 kernel (max is 11), a
    1x3 kernel, a depthwise conv, more than 64 channels, a layer scale ``(C, 1, 1)``, a positional encoding and class
    token, attention weights, a Swin-style bias table, LayerNorm, and a classifier. Parameters only (no forward)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 5, 3, bias=False)
        self.b1 = nn.BatchNorm2d(5)
        self.c2 = nn.Conv2d(5, 7, 13, bias=False)
        self.c3 = nn.Conv2d(7, 10, 1, bias=False)
        self.c4 = nn.Conv2d(10, 11, (1, 3), bias=False)
        self.dw = nn.Conv2d(11, 11, 3, groups=11, bias=False)
        self.c5 = nn.Conv2d(11, 13, 3)
        self.c6 = nn.Conv2d(13, 14, 1, bias=False)
        self.c7 = nn.Conv2d(14, 15, 1, bias=False)
        self.c8 = nn.Conv2d(15, 70, 1, bias=False)
        self.layer_scale = nn.Parameter(torch.ones(70, 1, 1))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 197, 24))
        self.class_token = nn.Parameter(torch.zeros(1, 1, 24))
        self.attn = nn.MultiheadAttention(24, 3)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(169, 3))
        self.ln = nn.LayerNorm(70)
        self.fc = nn.Linear(70, num_classes)


def odd_graph(model: OddNet):
    """A chain graph binding every parameter of :class:`OddNet` to one node."""
    nodes = [("input", "input", ()), ("c1", "conv", ("c1.weight",)), ("b1", "bn", ("b1.weight", "b1.bias")),
             ("c2", "conv", ("c2.weight",)), ("pool", "max_pool", ()), ("c3", "conv", ("c3.weight",)),
             ("c4", "conv", ("c4.weight",)), ("dw", "sep_conv", ("dw.weight",)), ("c5", "conv", ("c5.weight",)),
             ("c5.bias", "bias", ("c5.bias",)), ("c6", "conv", ("c6.weight",)), ("c7", "conv", ("c7.weight",)),
             ("c8", "conv", ("c8.weight",)), ("scale", "conv", ("layer_scale",)),
             ("pos", "pos_enc", ("pos_embedding",)), ("cls_tok", "pos_enc", ("class_token",)),
             ("attn", "msa", ("attn.in_proj_weight", "attn.in_proj_bias")),
             ("attn.out", "conv", ("attn.out_proj.weight",)), ("attn.out.bias", "bias", ("attn.out_proj.bias",)),
             ("rpb", "conv", ("relative_position_bias_table",)), ("ln", "ln", ("ln.weight", "ln.bias")),
             ("gap", "glob_avg", ()), ("fc", "conv", ("fc.weight",)), ("fc.bias", "bias", ("fc.bias",))]
    edges = [(i, i + 1) for i in range(len(nodes) - 1)] + [(3, 6), (10, 13)]
    return make_graph(nodes, sorted(edges), model)


class TinyResNet(nn.Module):
    """A runnable CNN with a residual block, BatchNorm, a conv bias and a classifier (every GHN head is used)."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.ln = nn.GroupNorm(1, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        h = self.conv2(torch.relu(self.conv1(x)))
        x = self.ln(x + h)
        return self.fc(x.mean((2, 3)))


def tiny_resnet_graph(model: TinyResNet):
    """Graph of :class:`TinyResNet` as the reference builder makes it."""
    nodes = [("input", "input", ()), ("stem", "conv", ("stem.weight",)), ("bn", "bn", ("bn.weight", "bn.bias")),
             ("conv1", "conv", ("conv1.weight",)), ("conv1.bias", "bias", ("conv1.bias",)),
             ("conv2", "conv", ("conv2.weight",)), ("add", "sum", ()), ("ln", "ln", ("ln.weight", "ln.bias")),
             ("gap", "glob_avg", ()), ("fc", "conv", ("fc.weight",)), ("fc.bias", "bias", ("fc.bias",))]
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (2, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    return make_graph(nodes, edges, model)


class FlatNet(nn.Module):
    """A CNN whose classifier reads a flattened 8x8 feature map: it runs only on 8x8 images, and says so with
    ``expected_input_sz`` (as ``archspace.adapt_small_input`` and DeepNets-1M nets do)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)
        self.expected_input_sz = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))
