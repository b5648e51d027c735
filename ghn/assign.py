"""Binding predicted blocks to the parameters of a network: which decoder output each parameter comes from, and how
a block is fitted to the target shape by slicing and tiling (Knyazev et al., NeurIPS 2021, Sec. 4.2).

Every parameter named in a graph node's ``param_names`` becomes a :class:`ParamTarget`. Targets are grouped by their
source (conv decoder at one kernel size, classifier head, 1-D decoder row, ...) and target shape, so a whole group is
decoded, normalised and tiled with a few tensor operations instead of one Python step per parameter.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.primitives import PRIMITIVE_ID

from .normalize import IDENTITY, normalization_kind

#: Sources of predicted blocks and the number of dims of the block they give.
CONV, CLS_W, VEC, COL, CLS_B = "conv", "cls_w", "vec", "col", "cls_b"
_POS_ENC = PRIMITIVE_ID["pos_enc"]


@dataclass(frozen=True)
class ParamTarget:
    """One model parameter to predict.

    Attributes:
        graph: index of the graph/model in the batch.
        name: parameter name as in ``model.named_parameters()``.
        node: global node id in the batch.
        shape: the parameter's shape.
        source: :data:`CONV` (conv decoder, block ``(S_out, S_in, h, w)``), :data:`CLS_W` (classifier head,
            ``(num_classes, S_in, 1)``), :data:`VEC` (a row of the 1-D decoder, ``(S_ch,)``), :data:`COL` (both rows of
            the 1-D decoder, ``(2 S_ch,)``, for ``(C, 1, 1)`` tensors such as layer scales), :data:`CLS_B`
            (classifier-bias head, ``(num_classes,)``).
        fit_shape: the target viewed with the block's number of dims (reshaped to ``shape`` at the end).
        kernel: crop ``(h, w)`` of the conv decoder (``(1, 1)`` otherwise).
        channels: ``(out, in)`` channels decoded for this target (the needed counts rounded up to a power of two,
            at most the block size), so a depthwise ``(C, 1, k, k)`` weight does not pay for 64 input channels.
        row: 1-D decoder row, 0 for weights, 1 for biases.
        norm: normalisation kind and scale (:mod:`ghn.normalize`).
        part_channels: for a weight whose input is a concatenation decoded part by part
            (:mod:`ghn.concat_parts`), the channels of each part; 0 otherwise.
    """

    graph: int
    name: str
    node: int
    shape: tuple[int, ...]
    source: str
    fit_shape: tuple[int, ...]
    kernel: tuple[int, int]
    channels: tuple[int, int]
    row: int
    norm: tuple[str, float]
    part_channels: int = 0


@dataclass
class Assignment:
    """All targets of a batch, grouped for batched decoding.

    Attributes:
        targets: every target, graph by graph.
        decode: ``(source, kernel, channels) -> node ids``: the blocks to compute.
        groups: ``group key -> list of (target index, rows in the decoded blocks of that source)``: one row, or one
            per part for a target decoded part by part.
        untouched: per graph, parameter names no node is bound to.
        virtual: ``(weight node, producer node)`` per part of the targets decoded part by part; pair ``j`` is
            decoded as node ``N + j`` (``N`` the batch's node count), whose embedding the GHN makes from the two.
    """

    targets: list[ParamTarget]
    decode: dict[tuple[str, tuple[int, int], tuple[int, int]], list[int]]
    groups: dict[tuple, list[tuple[int, tuple[int, ...]]]] = field(default_factory=dict)
    untouched: list[list[str]] = field(default_factory=list)
    virtual: list[tuple[int, int]] = field(default_factory=list)


def _fit_shape(source: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The target shape with the number of dims of the block of ``source``."""
    if source == CONV:
        if len(shape) == 2:
            return (shape[0], shape[1], 1, 1)
        if len(shape) == 3:
            return (shape[0], shape[1], shape[2], 1)
        return (shape[0], shape[1], shape[2], math.prod(shape[3:]))
    if source == CLS_W:
        return (shape[0], shape[1], math.prod(shape[2:]))
    return (math.prod(shape),)  # VEC, COL, CLS_B


def make_target(graph: int, name: str, node: int, shape: tuple[int, ...], cls_role: int, op_type: int,
                max_shape: tuple[int, int, int, int], weight_norm: bool, part_channels: int = 0) -> ParamTarget:
    """Decide where a parameter's prediction comes from and how it is fitted and normalised.

    Args:
        graph: graph index in the batch.
        name: parameter name.
        node: global node id.
        shape: parameter shape.
        cls_role: the node's classifier role (1 weight, 2 bias).
        op_type: the node's primitive id.
        max_shape: the GHN's maximum block shape ``S``.
        weight_norm: apply the operation-dependent normalisation.
        part_channels: channels per part when the weight's input is a concatenation decoded part by part (0: the
            whole input axis is one block); ignored for parameters without an input axis.

    Returns:
        A :class:`ParamTarget`.
    """
    shape = tuple(int(s) for s in shape)
    is_bias = name.rsplit(".", 1)[-1].endswith("bias")
    if len(shape) <= 1:
        source = CLS_B if cls_role == 2 else VEC
        shape_for_fit = shape if shape else (1,)
    elif len(shape) == 3 and shape[1] == 1 and shape[2] == 1:
        source = COL
        shape_for_fit = shape
    else:
        source = CLS_W if cls_role == 1 else CONV
        shape_for_fit = shape
    fit = _fit_shape(source, shape_for_fit)
    kernel = (min(fit[2], max_shape[2]), min(fit[3], max_shape[3])) if source == CONV else (1, 1)
    part_channels = part_channels if source in (CONV, CLS_W) else 0
    n_in = part_channels or (fit[1] if source in (CONV, CLS_W) else 1)
    if source == CONV:
        channels = (_bucket(fit[0], max_shape[0]), _bucket(n_in, max_shape[1]))
    elif source == CLS_W:
        channels = (max_shape[0], _bucket(n_in, max_shape[1]))  # the head mixes all S_out rows
    else:
        channels = (1, 1)
    norm = normalization_kind(shape, is_bias, op_type == _POS_ENC) if weight_norm else (IDENTITY, 1.0)
    return ParamTarget(graph, name, node, shape, source, fit, kernel, channels, 1 if is_bias else 0, norm,
                       part_channels)


def _bucket(n: int, limit: int) -> int:
    """``n`` rounded up to a power of two, at most ``limit``."""
    return min(limit, 1 << max(0, int(n) - 1).bit_length())


class GraphMismatchError(UsageError, KeyError):
    """A graph used with a model it was not built from (a name the model lacks, or a parameter bound twice).

    A :class:`~archspace.errors.UsageError` (one line on the command lines) and a ``KeyError`` (what a lookup of a
    missing parameter raised before this check existed).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def check_bindings(names_per_node, params, labels=None) -> set[str]:
    """Check that the parameter names a graph binds to its nodes exist in the model, each bound once: the one check
    of graph against model, used by :func:`assign` (training) and :meth:`ghn.GHN.predict` (before any write).

    Args:
        names_per_node: for each node, the parameter names bound to it (``ArchGraph.param_names``).
        params: the model's ``dict(named_parameters())``.
        labels: node names for the message (``ArchGraph.node_names``), optional.

    Returns:
        The set of bound names.

    Raises:
        GraphMismatchError: the first name the model does not have, or a name bound to two nodes.
    """
    seen: set[str] = set()
    for i, names in enumerate(names_per_node):
        for name in names:
            if name in params and name not in seen:
                seen.add(name)
                continue
            where = f"node {i} ({labels[i]})" if labels and labels[i] else f"node {i}"
            if name not in params:
                raise GraphMismatchError(f"the graph does not match the model: {where} binds {name!r}, which the "
                                         "model does not have (no such parameter); build the graph from this model "
                                         "(archspace.to_graph)")
            raise GraphMismatchError(f"the graph does not match the model: {name!r} is bound to two nodes")
    return seen


def assign(param_names: list[list[tuple[str, ...]]], node_offsets: list[int], cls_role: list[int],
           op_type: list[int], models: list[nn.Module], max_shape: tuple[int, int, int, int],
           weight_norm: bool, parts: dict[int, tuple[tuple[int, ...], int]] | None = None) -> Assignment:
    """Bind every parameter named by the graphs to a decoder output.

    Args:
        param_names: per graph, per node, the parameter names bound to the node.
        node_offsets: global id of each graph's first node.
        cls_role: ``(N,)`` classifier role of every node of the batch.
        op_type: ``(N,)`` primitive id of every node of the batch.
        models: the networks, one per graph.
        max_shape: the GHN's maximum block shape.
        weight_norm: apply the normalisation.
        parts: ``{weight node: (producer node per part, channels per part)}`` for the weights to decode part by
            part (:func:`ghn.concat_parts.concat_inputs`); ``None``: none.

    Returns:
        An :class:`Assignment`.

    Raises:
        GraphMismatchError: (a ``KeyError`` and ``ValueError``) a graph names a parameter its model does not have,
            or binds one to two nodes (:func:`check_bindings`).
        ValueError: if the numbers of graphs and models differ.
    """
    if len(param_names) != len(models):
        raise ValueError(f"{len(param_names)} graphs but {len(models)} models")
    targets: list[ParamTarget] = []
    untouched: list[list[str]] = []
    for b, (names_per_node, model) in enumerate(zip(param_names, models)):
        params = dict(model.named_parameters())
        seen = check_bindings(names_per_node, params)
        for local, names in enumerate(names_per_node):
            node = node_offsets[b] + local
            part = parts.get(node) if parts else None
            for name in names:
                shape = tuple(params[name].shape)
                # only a tensor whose input axis is the whole concatenation (a node may bind several tensors)
                split = part is not None and len(shape) >= 2 and shape[1] == len(part[0]) * part[1]
                targets.append(make_target(b, name, node, shape, cls_role[node], op_type[node], max_shape,
                                           weight_norm, part[1] if split else 0))
        untouched.append([n for n in params if n not in seen])

    # What to decode: per source, kernel and channel bucket, the nodes (each node once); a target decoded part by
    # part asks for one virtual node per part, numbered after the batch's real nodes.
    num_nodes = len(cls_role)
    decode: dict[tuple, dict[int, int]] = defaultdict(dict)
    groups: dict[tuple, list[tuple[int, tuple[int, ...]]]] = defaultdict(list)
    virtual: dict[tuple[int, int], int] = {}
    for i, t in enumerate(targets):
        src = VEC if t.source in (VEC, COL, CLS_B) else t.source  # one 1-D decoder pass serves all three
        nodes = decode[(src, t.kernel, t.channels)]
        ids = ([virtual.setdefault((t.node, p), num_nodes + len(virtual)) for p in parts[t.node][0]]
               if t.part_channels else [t.node])
        rows = tuple(nodes.setdefault(v, len(nodes)) for v in ids)
        groups[(t.source, t.kernel, t.channels, t.row, t.fit_shape, t.shape, t.norm, t.part_channels)].append((i, rows))
    decode_lists = {k: list(v) for k, v in decode.items()}
    return Assignment(targets, decode_lists, dict(groups), untouched, list(virtual))


def fit_to_shape(block: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Fit a batch of blocks to a target shape: slice each axis to the target, then tile it periodically.

    Element ``i`` of an axis comes from element ``i mod min(target, block)`` of the block, the reference's
    "slice, then repeat along channels" rule, here applied to every axis (kernels larger than the maximum are tiled
    like channels).

    Args:
        block: ``(n, *s)``.
        shape: target ``t`` with ``len(t) == len(s)``.

    Returns:
        ``(n, *t)``.
    """
    s = block.shape[1:]
    if len(s) != len(shape):
        raise ValueError(f"cannot fit a block of shape {tuple(s)} to {tuple(shape)}")
    m = [min(a, b) for a, b in zip(shape, s)]
    if any(a < b for a, b in zip(m, s)):
        block = block[(slice(None), *(slice(0, k) for k in m))]
    reps = [-(-a // k) for a, k in zip(shape, m)]  # ceil
    if any(r > 1 for r in reps):
        block = block.repeat(1, *reps)
        if any(r * k != a for r, k, a in zip(reps, m, shape)):
            block = block[(slice(None), *(slice(0, a) for a in shape))]
    return block


def copy_tiled(dst: torch.Tensor, block: torch.Tensor, fit_shape: tuple[int, ...]) -> None:
    """Write ``block`` tiled to ``fit_shape`` into ``dst`` in place (same numbers as :func:`fit_to_shape`).

    When every axis of the target is a whole multiple of the block's, the copy broadcasts the block over a
    ``(reps_0, m_0, reps_1, m_1, ...)`` view of ``dst``: one pass over memory, no tiled temporary.

    Args:
        dst: a contiguous tensor with ``prod(fit_shape)`` elements (a model parameter).
        block: ``m`` with ``m_i <= fit_shape_i`` (already sliced).
        fit_shape: the target viewed with the block's number of dims.
    """
    m = block.shape
    if dst.is_contiguous() and all(a % k == 0 for a, k in zip(fit_shape, m)):
        inter = [v for a, k in zip(fit_shape, m) for v in (a // k, k)]  # (r_0, m_0, r_1, m_1, ...)
        src = block.reshape([v for k in m for v in (1, k)])  # (1, m_0, 1, m_1, ...)
        dst.view(inter).copy_(src.expand(inter))
    else:
        dst.copy_(fit_to_shape(block.unsqueeze(0), fit_shape)[0].reshape(dst.shape))


def is_tiled(t: ParamTarget, max_shape: tuple[int, int, int, int], num_classes: int) -> bool:
    """Whether a target is larger than its block along some axis (its values repeat)."""
    if t.source == CONV:
        block = max_shape
    elif t.source == CLS_W:
        block = (num_classes, max_shape[1], 1)
    elif t.source == VEC:
        block = (max(max_shape[:2]),)
    elif t.source == COL:
        block = (2 * max(max_shape[:2]),)
    else:
        block = (num_classes,)
    fit = t.fit_shape
    if t.part_channels:  # the input axis is decoded part by part: tiled only within a part
        fit = (fit[0], t.part_channels, *fit[2:])
    return any(a > b for a, b in zip(fit, block))
