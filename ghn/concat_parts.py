"""Weights that read a concatenation: which parts their input columns come from.

A DARTS-style cell outputs the concatenation of its states, and the next cell's preprocessing convolution and the
classifier read it. GHN-2 predicts such a weight as one block whose input axis is sliced and tiled as a whole
(Knyazev et al., NeurIPS 2021, Sec. 4.2), so input column ``c`` of a net whose states have ``C`` channels comes from
block column ``c mod min(k C, S_in)``: the column that reads state 1, channel ``j`` is block column ``C + j`` at one
width and another at the next. The same block column therefore serves unrelated features across widths and
numbers of states. With ``GHN(concat_parts=True)`` each part is decoded on its own, from the weight's node embedding
plus a learnt projection of the embedding of the node that produced the part, and the parts are concatenated along
the input axis (:meth:`ghn.GHN.predict_parameters`); this module finds the parts.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from archspace.primitives import PRIMITIVE_ID

_CONCAT = PRIMITIVE_ID["concat"]
_SUM = PRIMITIVE_ID["sum"]
#: Parameter-free operations that keep the channels of their single input.
_PASS_THROUGH = {PRIMITIVE_ID[p] for p in ("max_pool", "avg_pool", "glob_avg")}
#: Nodes whose parameter's first dim is their output's channel count.
_SHAPED = {PRIMITIVE_ID[p] for p in ("conv", "sep_conv", "dil_conv", "bias", "bn")}


def concat_inputs(op_type: torch.Tensor, edge_index: torch.Tensor, edge_dist: torch.Tensor,
                  param_shape: torch.Tensor, param_ndim: torch.Tensor) -> dict[int, tuple[tuple[int, ...], int]]:
    """The weights of a graph (or a PyG batch of graphs) whose input is a concatenation of equal parts.

    A weight node qualifies when it has two or more dims, its single real input leads (through pooling only) to a
    ``concat`` node, every part's channel count is known from the graph (a conv, bias or norm node, or a sum or
    pooling of one) and equal, and the parts' channels add up to the weight's input dim. Parts are in node order,
    which for the nets of :mod:`archspace` is the concatenation order (states are built in order).

    Args:
        op_type: ``(N,)`` primitive ids.
        edge_index: ``(2, E)`` edges, real and virtual.
        edge_dist: ``(E,)``, 1 for real edges.
        param_shape: ``(N, 4)`` zero-padded parameter shapes.
        param_ndim: ``(N,)``.

    Returns:
        ``{weight node: (producer node of each part, channels per part)}``, node ids as in the inputs.
    """
    real = edge_index[:, edge_dist == 1].tolist()
    preds: dict[int, list[int]] = defaultdict(list)
    for u, v in zip(real[0], real[1]):
        preds[v].append(u)
    ops = op_type.tolist()
    shapes = param_shape.tolist()
    ndims = param_ndim.tolist()
    memo: dict[int, int | None] = {}

    def channels(node: int) -> int | None:
        if node in memo:
            return memo[node]
        op, ins = ops[node], preds.get(node, [])
        if op in _SHAPED and ndims[node] >= 1:
            out = shapes[node][0]
        elif (op == _SUM or op in _PASS_THROUGH) and ins:
            out = channels(ins[0])
        elif op == _CONCAT and ins:
            parts = [channels(p) for p in ins]
            out = None if None in parts else sum(parts)
        else:
            out = None
        memo[node] = out
        return out

    found: dict[int, tuple[tuple[int, ...], int]] = {}
    for v, nd in enumerate(ndims):
        if nd < 2:
            continue
        ins = preds.get(v, [])
        while len(ins) == 1 and ops[ins[0]] in _PASS_THROUGH:
            ins = preds.get(ins[0], [])
        if len(ins) != 1 or ops[ins[0]] != _CONCAT:
            continue
        parts = sorted(preds[ins[0]])
        sizes = {channels(p) for p in parts}
        if len(parts) < 2 or len(sizes) != 1 or None in sizes:
            continue
        size = sizes.pop()
        if size * len(parts) == shapes[v][1]:
            found[v] = (tuple(parts), size)
    return found
