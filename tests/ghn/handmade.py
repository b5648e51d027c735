"""Hand-built architecture graphs for the GHN tests (independent of the graph builder in ``archspace``).

``resnet18_small_graph`` writes down, block by block, the graph the reference builder produces for torchvision's
resnet18 in the CIFAR recipe (3x3 stride-1 stem, no max-pool): 52 nodes, 59 real edges. ``make_graph`` turns a node
list and real edges into an ``ArchGraph`` with shortest-path virtual edges.
"""

from __future__ import annotations

import networkx as nx
import torch
import torch.nn as nn

from archspace.data import ArchGraph
from archspace.primitives import PRIMITIVE_ID


def make_graph(nodes: list[tuple[str, str, tuple[str, ...]]], edges: list[tuple[int, int]],
               model: nn.Module | None = None, ve_cutoff: int = 50, cls: bool = True) -> ArchGraph:
    """Build an ``ArchGraph`` from ``(label, primitive, param_names)`` nodes (topological order) and real edges.

    Parameter shapes are read from ``model`` when given; the last two nodes get classifier roles 1/2 when
    ``cls`` and their primitives are conv/bias.
    """
    n = len(nodes)
    params = dict(model.named_parameters()) if model is not None else {}
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    src, dst, dist = [], [], []
    lengths = dict(nx.all_pairs_shortest_path_length(g, cutoff=ve_cutoff))
    for u in range(n):
        for v, d in sorted(lengths[u].items()):
            if d > 0:
                src.append(u)
                dst.append(v)
                dist.append(d)
    shape = torch.zeros(n, 4, dtype=torch.long)
    ndim = torch.zeros(n, dtype=torch.long)
    for i, (_, _, names) in enumerate(nodes):
        if names and names[0] in params:
            s = params[names[0]].shape
            ndim[i] = len(s)
            shape[i, : min(4, len(s))] = torch.tensor(list(s)[:4])
    cls_role = torch.zeros(n, dtype=torch.long)
    if cls and n >= 2 and nodes[-1][1] == "bias" and nodes[-2][1] == "conv":
        cls_role[-2], cls_role[-1] = 1, 2
    return ArchGraph(
        op_type=torch.tensor([PRIMITIVE_ID[p] for _, p, _ in nodes]),
        edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
        edge_dist=torch.tensor(dist, dtype=torch.long),
        param_shape=shape, param_ndim=ndim, cls_role=cls_role,
        param_names=[tuple(names) for _, _, names in nodes], node_names=[lbl for lbl, _, _ in nodes],
        num_nodes=n)


def resnet18_small_graph(model: nn.Module, ve_cutoff: int = 50) -> ArchGraph:
    """The reference graph of ``adapt_small_input(torchvision resnet18)`` (52 nodes, 59 real, 1,243 virtual edges)."""
    nodes: list[tuple[str, str, tuple[str, ...]]] = []
    edges: list[tuple[int, int]] = []

    def add(label, prim, names=(), inputs=()):
        nodes.append((label, prim, tuple(names)))
        i = len(nodes) - 1
        edges.extend((j, i) for j in inputs)
        return i

    x = add("input", "input")
    x = add("conv1", "conv", ["conv1.weight"], [x])
    x = add("bn1", "bn", ["bn1.weight", "bn1.bias"], [x])
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}."
            h = add(p + "conv1", "conv", [p + "conv1.weight"], [x])
            h = add(p + "bn1", "bn", [p + "bn1.weight", p + "bn1.bias"], [h])
            h = add(p + "conv2", "conv", [p + "conv2.weight"], [h])
            h = add(p + "bn2", "bn", [p + "bn2.weight", p + "bn2.bias"], [h])
            skip = x
            if layer > 1 and block == 0:
                skip = add(p + "downsample.0", "conv", [p + "downsample.0.weight"], [x])
                skip = add(p + "downsample.1", "bn", [p + "downsample.1.weight", p + "downsample.1.bias"], [skip])
            x = add(p + "add", "sum", (), [h, skip])
    x = add("avgpool", "glob_avg", (), [x])
    x = add("fc", "conv", ["fc.weight"], [x])
    add("fc.bias", "bias", ["fc.bias"], [x])
    return make_graph(nodes, edges, model, ve_cutoff)


def small_input_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision resnet18 in the reference's CIFAR recipe: stem kernel cropped to 3x3, stride 1, no max-pool."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=num_classes)
    w = model.conv1.weight.data[:, :, 2:5, 2:5].clone()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.conv1.weight.data.copy_(w)
    model.maxpool = nn.Identity()
    return model
