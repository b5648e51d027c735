"""Topological levels of a (batched) architecture graph: the schedule of the GHN's level-parallel sweeps.

The gated GNN of Knyazev et al. (NeurIPS 2021, Sec. 4.1, after Zhang et al., ICLR 2019) updates nodes one after
another in topological order (forward sweep) and then in reverse order (backward sweep); a node's message uses the
already updated states of its predecessors (successors on the backward sweep). A node's level is the length of the
longest real-edge path reaching it (leaving it, backward), :func:`archspace.dag.longest_path_levels`, so every
neighbour a node listens to lies on a strictly lower level, and updating a whole level at once gives exactly the
node-by-node result. All graphs of a meta-batch share one schedule: level ``k`` of every graph is updated in the
same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archspace.dag import longest_path_levels


@dataclass
class LevelStep:
    """One level of a sweep: the nodes updated together and the messages they send afterwards.

    Attributes:
        weights: ``(U_k, n_k * C)`` float, dense message weights: entry ``(r, i * C + c)`` is the weight with which
            message channel ``c`` of the level's ``i``-th node reaches the ``r``-th receiver (channel 0 the real-edge
            MLP, channel 1 the virtual-edge MLP with weight ``1 / sp``, Eq. 4).
        start / stop: the level's rows in the sweep's level order: its nodes are ``order[start:stop]`` (global ids,
            increasing), ``n_k = stop - start``.
        receiver_pos: ``(U_k,)`` long, the rows, in the sweep's level order, of the distinct nodes this level sends
            messages to (in increasing node id).
    """

    weights: torch.Tensor
    start: int
    stop: int
    receiver_pos: torch.Tensor


@dataclass
class LevelSchedule:
    """Forward and backward sweeps over the levels of a graph batch.

    Attributes:
        forward: steps in increasing level order.
        backward: steps of the reversed graph.
        num_nodes: ``N``.
        order_fwd / order_bwd: ``(N,)`` node ids in the order the sweep's outputs are concatenated.
        inv_fwd / inv_bwd: ``(N,)`` inverse permutations (position of each node in that order).
    """

    forward: list[LevelStep]
    backward: list[LevelStep]
    num_nodes: int
    order_fwd: torch.Tensor
    inv_fwd: torch.Tensor
    order_bwd: torch.Tensor
    inv_bwd: torch.Tensor

    def to(self, device: torch.device | str) -> LevelSchedule:
        """Move every tensor to ``device``."""
        def mv(steps: list[LevelStep]) -> list[LevelStep]:
            return [LevelStep(s.weights.to(device), s.start, s.stop, s.receiver_pos.to(device)) for s in steps]
        return LevelSchedule(mv(self.forward), mv(self.backward), self.num_nodes, self.order_fwd.to(device),
                             self.inv_fwd.to(device), self.order_bwd.to(device), self.inv_bwd.to(device))


def _sweep(level: np.ndarray, src: np.ndarray, dst: np.ndarray, coef: np.ndarray,
           dtype: torch.dtype) -> tuple[list[LevelStep], np.ndarray, np.ndarray]:
    """Group nodes by level and messages by the level of their sender, as dense per-level weight blocks.

    Everything is computed for all levels at once; the per-level tensors are views into three flat tensors.
    """
    n_ch = coef.shape[1]
    n_levels = int(level.max()) + 1 if len(level) else 0
    order = np.argsort(level, kind="stable")  # (N,) nodes level by level, by id within a level
    counts = np.bincount(level, minlength=n_levels)
    starts = np.concatenate([[0], np.cumsum(counts)])
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order)) - starts[level[order]]  # (N,) rank of each node inside its level

    edge_level = level[src]  # (E,) a message belongs to its sender's level
    # Stable sort of small ints is a radix sort in NumPy: O(E), no comparison sort of the (many) virtual edges.
    e = np.argsort(edge_level.astype(np.int16) if n_levels < 2**15 else edge_level, kind="stable")
    e_starts = np.concatenate([[0], np.cumsum(np.bincount(edge_level, minlength=n_levels))])
    dst_e = dst[e]
    row = np.empty(len(e), dtype=np.int64)  # (E,) row of each message inside its level's block
    n_rcv = np.zeros(n_levels, dtype=np.int64)  # (K,) U_k
    mark = np.zeros(len(level), dtype=bool)
    slot = np.zeros(len(level), dtype=np.int64)
    rcv_parts = []
    for k in range(n_levels):
        d = dst_e[e_starts[k]:e_starts[k + 1]]
        mark[d] = True
        r = np.flatnonzero(mark)  # distinct receivers of level k, increasing
        mark[r] = False
        slot[r] = np.arange(len(r))
        row[e_starts[k]:e_starts[k + 1]] = slot[d]
        n_rcv[k] = len(r)
        rcv_parts.append(r)
    receivers = np.concatenate(rcv_parts) if rcv_parts else np.zeros(0, dtype=np.int64)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    rcv_starts = np.concatenate([[0], np.cumsum(n_rcv)])
    lv = edge_level[e]
    sizes = n_rcv * counts * n_ch  # (K,) elements of each level's block
    w_starts = np.concatenate([[0], np.cumsum(sizes)])
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    base = w_starts[lv] + row * (counts[lv] * n_ch) + pos[src[e]] * n_ch  # (E,) flat index of channel 0
    flat = np.zeros(int(w_starts[-1]), dtype=np.float64)
    for c in range(n_ch):
        flat += np.bincount(base + c, weights=coef[e, c], minlength=len(flat))
    flat = flat.astype(np_dtype)

    rpos_t = torch.from_numpy(inv[receivers])
    flat_t = torch.from_numpy(flat)
    steps = [LevelStep(weights=flat_t[w_starts[k]:w_starts[k + 1]].view(int(n_rcv[k]), int(counts[k]) * n_ch),
                       start=int(starts[k]), stop=int(starts[k + 1]),
                       receiver_pos=rpos_t[rcv_starts[k]:rcv_starts[k + 1]])
             for k in range(n_levels)]
    return steps, order, inv


def build_schedule(edge_index: torch.Tensor, edge_dist: torch.Tensor, num_nodes: int, virtual: bool,
                   dtype: torch.dtype = torch.float32) -> LevelSchedule:
    """Schedule of the forward and backward sweeps (Knyazev et al., 2021, Eq. 3-4) for a graph or a batch.

    Levels come from real edges (``edge_dist == 1``); a virtual edge joins two nodes that a real path joins, so it
    always goes to a higher level. Should a graph break that contract, levels are recomputed over all edges, so the
    result always equals the node-by-node sweep.

    Args:
        edge_index: ``(2, E)`` long, every edge from a lower to a higher node id.
        edge_dist: ``(E,)`` shortest-path length, 1 for real edges.
        num_nodes: ``N``.
        virtual: use virtual edges (GHN-2). Message channel 0 is the real-edge MLP (weight 1 on real edges, 0 on
            the others), channel 1 the virtual-edge MLP with weight ``1 / sp`` on every edge, real ones included,
            as in the reference implementation. Without virtual edges only real edges are kept, with one channel.
        dtype: dtype of the weights.

    Returns:
        A :class:`LevelSchedule` (on the CPU).

    Raises:
        ValueError: if an edge does not go from a lower to a higher node id.
    """
    ei = np.asarray(edge_index.detach().cpu().numpy(), dtype=np.int64)
    dist = np.asarray(edge_dist.detach().cpu().numpy(), dtype=np.int64)
    src, dst = ei[0], ei[1]
    if len(src) and not (src < dst).all():
        bad = int(np.argmax(src >= dst))
        raise ValueError(f"edge {src[bad]} -> {dst[bad]} does not follow the topological node order")
    real = dist == 1
    if not virtual:
        src, dst, dist, real = src[real], dst[real], dist[real], real[real]
        coef = np.ones((len(src), 1))
    else:
        # 1 / sp divided in the GHN's dtype, as the reference does (float32 in practice).
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        inv = (np_dtype.type(1.0) / np.maximum(dist, 1).astype(np_dtype)).astype(np.float64)
        coef = np.stack([real.astype(np.float64), inv], axis=1)  # (E, 2)

    fwd = longest_path_levels(src[real], dst[real], num_nodes)
    if len(src) and not (fwd[src] < fwd[dst]).all():
        fwd = longest_path_levels(src, dst, num_nodes)
    # Backward sweep: the reversed graph, whose topological order is decreasing node id.
    rsrc, rdst = num_nodes - 1 - dst, num_nodes - 1 - src
    bwd = longest_path_levels(rsrc[real], rdst[real], num_nodes)[::-1].copy()
    if len(src) and not (bwd[dst] < bwd[src]).all():
        bwd = longest_path_levels(rsrc, rdst, num_nodes)[::-1].copy()

    steps_f, order_f, inv_f = _sweep(fwd, src, dst, coef, dtype)
    steps_b, order_b, inv_b = _sweep(bwd, dst, src, coef, dtype)
    return LevelSchedule(steps_f, steps_b, num_nodes, torch.from_numpy(order_f), torch.from_numpy(inv_f),
                         torch.from_numpy(order_b), torch.from_numpy(inv_b))
