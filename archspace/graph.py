"""``to_graph``: the computational graph of any ``nn.Module`` as an :class:`~archspace.data.ArchGraph`.

Follows the graph rules of GHN-2 (Knyazev et al., NeurIPS 2021, Sec. 4.1 and Appendix; reference code
``ppuda/deepnets1m/graph.py``): one node per parameterised layer weight, conv/linear biases as separate nodes,
one node per norm layer, parameter-free ops that matter (pooling, sum and concat of two or more branches, global
average, ``cse``, ``msa``) as nodes, one ``input`` node; everything else is dropped and its neighbours joined.
Real edges carry distance 1; with ``ve_cutoff = s > 1`` every pair ``u -> v`` with ``v`` reachable from ``u`` by a
shortest path of length ``2..s`` gets a virtual edge carrying that length.

For torchvision's ResNet-50 at 224x224 this gives the reference's 127 nodes, 142 real and 7,811 virtual edges;
for ResNet-18 in the CIFAR recipe at 32x32, 52 nodes, 59 real and 1,243 virtual edges.

Where the reference is silent or breaks, the choices made here:

- a conv bias is a node *in* the data path (weight -> bias -> next op), as the reference does for linear layers
  (its conv biases are dead ends that fail its own connectivity check);
- attention: ``nn.MultiheadAttention`` gives in-projection weight and bias, an ``msa`` node, out-projection weight
  and bias; ``scaled_dot_product_attention`` and the explicit ``softmax(q k^T) v`` (Swin, MaxViT, timm's ViTs,
  LeViT, ...) give one ``msa`` node between the projections, which also owns the parameters added to or
  multiplied with the scores (relative-position tables, attention biases, temperatures; see
  :mod:`archspace.capture`);
- squeeze-excitation modules give their two conv/linear layers plus one ``cse`` node for the gating product (the
  pooling inside is absorbed, like the reference's DeepNets ``cse``);
- parameters of no layer type are bound where they are used
  (:data:`archspace.primitives.FREE_PARAM_PRIMITIVES`): class tokens and position embeddings (ViT, timm) are
  ``pos_enc`` source nodes feeding the ``concat``/``sum`` that consumes them, as are ``archspace.ops.PosEnc``
  parameters; layer scales (ConvNeXt's ``layer_scale``/``gamma``) are ``ln`` nodes in the path;
- when the output averages several heads (``torch.stack(heads).mean(0)``) it is one ``sum`` node;
- ``mean`` over the two spatial dims of a feature map is ``glob_avg`` (the reference required ``keepdim=True``);
- pooling nodes carry their kernel as ``param_shape = (1, 1, kh, kw)`` with ``param_ndim = 0``, the reference's
  shape feature for them;
- ``cls_role`` comes from the last node with parameters (see :func:`_classifier_roles`);
- a layer applied repeatedly keeps one node (edges back to its first use are dropped, with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from .capture import Capture, capture
from .dag import topological_order
from .data import ArchGraph
from .errors import UsageError
from .primitives import PRIMITIVE_ID

_CONV_LIKE = {PRIMITIVE_ID[p] for p in ("conv", "sep_conv", "dil_conv")}
_BIAS = PRIMITIVE_ID["bias"]


class GraphCycleError(UsageError):
    """The model's graph has a cycle that dropping repeated-layer edges does not break; no topological order."""


def input_shape(input_size: int | Sequence[int]) -> tuple[int, ...]:
    """Normalise ``input_size`` to a batch-of-one shape.

    Args:
        input_size: ``H`` (a square RGB image), ``(C, H, W)`` or ``(1, C, H, W)``.

    Returns:
        ``(1, C, H, W)``.

    Raises:
        UsageError: any other form, or non-positive sizes.
    """
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        shape: tuple[int, ...] = (1, 3, int(input_size), int(input_size))
    elif isinstance(input_size, (tuple, list, torch.Size)) and len(input_size) in (3, 4):
        shape = tuple(int(s) for s in input_size)
        shape = (1, *shape) if len(shape) == 3 else shape
        if shape[0] != 1:
            raise UsageError(f"input_size must describe one example, (1, C, H, W); got batch {shape[0]}")
    else:
        raise UsageError(f"input_size must be an int H, (C, H, W) or (1, C, H, W); got {input_size!r}")
    if min(shape) < 1:
        raise UsageError(f"input_size must be positive, got {input_size!r}")
    return shape


def to_graph(model: nn.Module, input_size: int | Sequence[int] | None = None, ve_cutoff: int = 50,
             fast: bool = True) -> ArchGraph:
    """Build the GHN-2 graph of ``model`` (Knyazev et al., NeurIPS 2021, Sec. 4.1) from one forward pass.

    The pass runs on the meta device (nothing is allocated; the model is left unchanged). Every parameter is bound
    to exactly one node (``param_names``); parameters of layers without a rule, or not used by the forward pass,
    stay unbound and are named in one ``warnings.warn`` (see :func:`archspace.coverage.coverage_report`).

    Args:
        model: any ``nn.Module`` mapping one image tensor to logits.
        input_size: ``H`` (square RGB image), ``(C, H, W)`` or ``(1, C, H, W)``; default: the model's
            ``expected_input_sz`` attribute (set by :func:`archspace.adapt_small_input`), else 224.
        ve_cutoff: ``s``, the longest shortest path that gets a virtual edge; 1 for real edges only.
        fast: compute the outputs of common ops without running the slow meta kernels.

    Returns:
        The :class:`~archspace.data.ArchGraph`: nodes in topological order, input first, classifier last.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UsageError: bad ``input_size`` or ``ve_cutoff``; and the subclasses below, all about the user's model:
        archspace.capture.ForwardError: the model's forward pass fails at ``input_size`` (also a ``RuntimeError``;
            it carries ``input_shape`` and the model's own error as ``reason``).
        archspace.capture.DisconnectedOutputError: the output does not depend on the input.
        GraphCycleError: the graph has a cycle (a layer reused in a loop).

    Shapes:
        ``op_type (N,)``, ``edge_index (2, E)``, ``edge_dist (E,)``, ``param_shape (N, 4)``, ``param_ndim (N,)``,
        ``cls_role (N,)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_graph expects an nn.Module, got {type(model).__name__}")
    if input_size is None:
        input_size = getattr(model, "expected_input_sz", 224)
    if isinstance(ve_cutoff, bool) or not isinstance(ve_cutoff, (int, np.integer)) or ve_cutoff < 1:
        raise UsageError(f"ve_cutoff must be an int >= 1, got {ve_cutoff!r}")
    cap = capture(model, input_shape(input_size), fast=fast)
    graph = build_graph(cap, int(ve_cutoff))
    _warn_unbound(model, graph, cap)
    return graph


def build_graph(cap: Capture, ve_cutoff: int = 50) -> ArchGraph:
    """Turn a raw :class:`~archspace.capture.Capture` into an :class:`~archspace.data.ArchGraph`: contract the
    dropped ops, keep the output's ancestors, order the nodes topologically, add virtual edges.

    Args:
        cap: the raw graph.
        ve_cutoff: longest shortest path given a virtual edge (1: none).

    Returns:
        The graph.

    Raises:
        GraphCycleError: the kept graph has a cycle.
    """
    nodes = cap.nodes
    n_raw = len(nodes)
    kept = [n.primitive is not None for n in nodes]
    # A dropped op becomes the set of kept nodes feeding it. Its preds were made before it (one pass in creation
    # order works) except where an attention node gained inputs after it was made: those are expanded first.
    expand: list[list[int] | None] = [None] * n_raw
    for i, node in enumerate(nodes):
        if not kept[i] and expand[i] is None:
            if any(p > i and not kept[p] for p in node.preds):
                _expand_depth_first(i, nodes, kept, expand)
            else:
                expand[i] = _union(kept, expand, node.preds)
    preds = [_union(kept, expand, n.preds) if kept[i] else [] for i, n in enumerate(nodes)]
    sinks = [cap.output] if kept[cap.output] else expand[cap.output]

    # The reference walks back from the output: only its ancestors are part of the graph.
    alive = [False] * n_raw
    stack = list(sinks)
    for v in stack:
        alive[v] = True
    while stack:
        for p in preds[stack.pop()]:
            if not alive[p]:
                alive[p] = True
                stack.append(p)
    order = _order_nodes(preds, alive, nodes, sinks)
    n = len(order)
    new_id = np.full(n_raw, -1, dtype=np.int64)
    new_id[order] = np.arange(n)
    dst = np.asarray([v for v in order for u in preds[v] if u != v], dtype=np.int64)
    src = new_id[np.asarray([u for v in order for u in preds[v] if u != v], dtype=np.int64)]
    dst = new_id[dst]
    edge_index, edge_dist = _edges_with_virtual(n, src, dst, ve_cutoff)  # numpy (2, E), (E,)
    real = edge_index[:, edge_dist == 1]

    op_type = np.asarray([PRIMITIVE_ID[nodes[i].primitive] for i in order], dtype=np.int64)
    shapes = [tuple(nodes[i].shape[:4]) + (0,) * (4 - len(nodes[i].shape[:4])) for i in order]
    param_shape = np.asarray(shapes, dtype=np.int64).reshape(n, 4)  # (N, 4)
    param_ndim = np.asarray([len(nodes[i].shape) if nodes[i].params else 0 for i in order], dtype=np.int64)
    # Built in numpy and wrapped at the end: torch's multi-threaded kernels on these small tensors (boolean
    # indexing, nonzero) can cost tens of milliseconds each on a busy machine. from_numpy gives CPU tensors even
    # when the caller has a default-device context (e.g. meta) active.
    return ArchGraph(
        op_type=torch.from_numpy(op_type),
        edge_index=torch.from_numpy(edge_index),
        edge_dist=torch.from_numpy(edge_dist),
        param_shape=torch.from_numpy(param_shape),
        param_ndim=torch.from_numpy(param_ndim),
        cls_role=torch.from_numpy(_classifier_roles(op_type, param_ndim, real)),
        param_names=[tuple(nodes[i].params) for i in order],
        node_names=[nodes[i].label for i in order],
        num_nodes=n,
    )


def _union(kept: list[bool], expand: list, preds: list[int]) -> list[int]:
    out: list[int] = []
    for p in preds:
        if kept[p]:
            if p not in out:
                out.append(p)
        else:
            for q in expand[p] or ():
                if q not in out:
                    out.append(q)
    return out


def _expand_depth_first(start: int, nodes, kept: list[bool], expand: list) -> None:
    """Fill ``expand`` for the dropped node ``start`` after the dropped nodes it reads (an edge back to a node on
    the stack, a cycle, is ignored)."""
    stack, on_stack = [start], {start}
    while stack:
        v = stack[-1]
        waiting = [p for p in nodes[v].preds if not kept[p] and expand[p] is None and p not in on_stack]
        if waiting:
            stack.extend(waiting)
            on_stack.update(waiting)
            continue
        stack.pop()
        on_stack.discard(v)
        if expand[v] is None:
            expand[v] = _union(kept, expand, nodes[v].preds)


def _order_nodes(preds: list[list[int]], alive: list[bool], nodes, sinks: list[int]) -> list[int]:
    """The smallest topological order of the live nodes (:func:`archspace.dag.topological_order`): the creation
    (execution) order whenever that is already valid.

    A layer applied repeatedly (weight sharing in sequence) makes a cycle through its nodes; the edges back to the
    earlier-made node are then dropped (``preds`` is edited) with a warning, so the layer keeps one node.

    Raises:
        GraphCycleError: the cycle cannot be broken, or breaking it cuts nodes off the output (``sinks``): a layer
            applied again after other layers, or a weight tied between two layers, cannot be one node per
            parameter (the reference refuses such models too: every node must reach the output).
    """
    live = [v for v, a in enumerate(alive) if a]
    if all(u <= v for v in live for u in preds[v]):
        # Every edge goes forward in creation order (the usual case): that order is a topological order, and the
        # smallest one, which is what Kahn's algorithm with a min-heap returns.
        return live
    order = topological_order(preds, alive)
    if len(order) == len(live):
        return order
    stuck = set(live) - set(order)
    dropped = []
    for v in stuck:
        back = [u for u in preds[v] if u in stuck and u >= v]
        if back:
            preds[v] = [u for u in preds[v] if u not in back]
            dropped += [(nodes[u].label, nodes[v].label) for u in back]
    order = topological_order(preds, alive)
    if len(order) != len(live):
        raise GraphCycleError("to_graph: the graph has a cycle through "
                         + ", ".join(nodes[i].label for i in sorted(stuck)[:5]))
    reach = set(sinks)
    stack = list(sinks)
    while stack:
        for u in preds[stack.pop()]:
            if u not in reach:
                reach.add(u)
                stack.append(u)
    cut = [nodes[v].label for v in order if v not in reach]
    if cut:
        raise GraphCycleError(f"to_graph: a layer applied again after other layers, or a weight tied between "
                              f"layers, leaves {', '.join(cut[:3])} cut off from the output once the layer is one "
                              f"node; a GHN graph has one node per parameter, so untie the weights (give each use "
                              f"its own layer)")
    warnings.warn(f"to_graph: a layer is applied repeatedly; dropped {len(dropped)} edge(s) back to its first use "
                  f"to keep one node per parameter: {dropped[:3]}", stacklevel=4)
    return order


def _edges_with_virtual(n: int, src: np.ndarray, dst: np.ndarray, ve_cutoff: int) -> tuple[np.ndarray, np.ndarray]:
    """Real edges (distance 1) plus, for ``ve_cutoff > 1``, virtual edges ``u -> v`` carrying the shortest-path
    length ``2..ve_cutoff``; sorted by ``(u, v)`` like the reference's adjacency matrix.

    ``src < dst`` for every edge (nodes in topological order), so the distances from ``u`` follow from those of
    its successors, which come later: ``d(u, .) = 1 + min over successors s of d(s, .)``, one vectorised row per
    node in reverse order, O(N * E_real) in all. Distances are capped at ``ve_cutoff + 1`` ("too far"), which is
    exact: a path through a node further than the cutoff is itself further than the cutoff.

    Shapes:
        ``src (E_real,)``, ``dst (E_real,)`` -> ``edge_index (2, E)`` int64, ``edge_dist (E,)`` int64
    """
    if ve_cutoff <= 1 or len(src) == 0:
        key = np.unique(src * n + dst)
        return np.stack([key // n, key % n]), np.ones(len(key), dtype=np.int64)
    dist, far = _distances(n, src, dst, ve_cutoff)
    near = dist < far  # (N, N): within the cutoff, the diagonal included
    near.flat[::n + 1] = False
    counts = np.count_nonzero(near, axis=1)
    edge_index = np.empty((2, int(counts.sum())), dtype=np.int64)
    edge_index[0] = np.repeat(np.arange(n), counts)  # row-major: sorted by (u, v)
    edge_index[1] = np.broadcast_to(np.arange(n), (n, n))[near]
    return edge_index, dist[near].astype(np.int64)


def _distances(n: int, src: np.ndarray, dst: np.ndarray, ve_cutoff: int) -> tuple[np.ndarray, int]:
    """Shortest-path lengths of a DAG whose edges go forward (``src < dst``), capped.

    Returns:
        ``dist (N, N)`` with ``dist[u, v]`` the length of the shortest path ``u -> v`` (0 on the diagonal), or
        ``far = min(ve_cutoff, N) + 1`` when there is none of length ``<= ve_cutoff``; and ``far``.
    """
    far = min(ve_cutoff, n) + 1
    dtype = np.uint8 if far < 255 else np.uint16 if far < 65535 else np.int64  # far + 1 must fit
    dist = np.full((n, n), far, dtype=dtype)
    by_src = np.argsort(src, kind="stable")
    succ = dst[by_src]
    ptr = np.searchsorted(src[by_src], np.arange(n + 1)).tolist()
    succ_list = succ.tolist()
    add, minimum = np.add, np.minimum
    for u in range(n - 1, -1, -1):
        a, b = ptr[u], ptr[u + 1]
        row = dist[u]
        if b - a == 1:
            add(dist[succ_list[a]], 1, out=row)
            minimum(row, far, out=row)
        elif b > a:
            add(dist[succ[a:b]].min(axis=0), 1, out=row)
            minimum(row, far, out=row)
        row[u] = 0
    return dist, far


def _classifier_roles(op_type: np.ndarray, param_ndim: np.ndarray, real_edges: np.ndarray) -> np.ndarray:
    """``cls_role`` (1 classifier weight, 2 classifier bias). The reference marks the last node as the classifier
    bias and the node before it as the classifier weight (``last_bias``/``last_weight``), which for a linear head
    is its bias and weight. Here the last node that has parameters decides, so that heads followed by
    parameter-free ops (SqueezeNet's conv, ReLU, global pooling) are found too: a ``bias`` node is 2 and the
    conv/linear weight feeding it 1; a bias-free conv/linear weight is 1.

    Shapes:
        ``op_type (N,)``, ``param_ndim (N,)``, ``real_edges (2, E_real)`` -> ``(N,)``, all int64 numpy arrays
    """
    n = len(op_type)
    role = np.zeros(n, dtype=np.int64)
    with_params = np.flatnonzero(param_ndim > 0)
    if len(with_params) == 0:
        return role
    last = int(with_params[-1])
    if int(op_type[last]) == _BIAS:
        role[last] = 2
        preds = real_edges[0, real_edges[1] == last].tolist()
        if len(preds) == 1 and int(op_type[preds[0]]) in _CONV_LIKE and param_ndim[preds[0]] > 0:
            role[preds[0]] = 1
    elif int(op_type[last]) in _CONV_LIKE:
        role[last] = 1
    return role


def _warn_unbound(model: nn.Module, graph: ArchGraph, cap: Capture) -> None:
    bound = {name for names in graph.param_names for name in names}
    unbound = [rule for name, rule in cap.rules.items() if name not in bound]
    if not unbound:
        return
    items = [f"{r.name} ({r.module_type}, {'unsupported' if r.name in cap.unsupported else 'unused'})"
             for r in unbound]
    shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
    warnings.warn(f"to_graph: {len(unbound)} parameter tensor(s) of {type(model).__name__} are not bound to any "
                  f"graph node (a GHN will not predict them): {shown}. 'unsupported' means no rule for that "
                  "layer type in archspace.primitives; 'unused' means the forward pass never reached it. "
                  "See archspace.coverage.coverage_report.", stacklevel=3)
