"""Topological order and topological levels of a directed acyclic graph: the one implementation of each.

Architecture graphs (:class:`~archspace.data.ArchGraph`) number their nodes in topological order, and the GHN-2
gated GNN (Knyazev et al., NeurIPS 2021, Sec. 4.1) updates them one level at a time (:mod:`ghn.levels`); the graph
builder (:func:`archspace.to_graph`), the GHN's sweep schedule and the plot layout all use these two functions.
They are written by hand rather than with networkx because they run once per graph on every training step:
networkx builds a Python object per node and edge first, which costs more than the whole computation here.
"""

from __future__ import annotations

import heapq

import numpy as np


def topological_order(preds: list[list[int]], alive: list[bool]) -> list[int]:
    """The smallest topological order of the live nodes (Kahn's algorithm with a min-heap).

    Among all topological orders this is the lexicographically smallest one, so when the nodes' numbering is
    already topological it is returned unchanged. Self-loops are ignored.

    Args:
        preds: ``preds[v]``, the predecessors of node ``v``; only live predecessors of live nodes may appear.
        alive: ``alive[v]``, whether node ``v`` belongs to the graph.

    Returns:
        The live nodes in order; shorter than the number of live nodes when the graph has a cycle (the nodes on or
        after a cycle are missing).
    """
    succs: dict[int, list[int]] = {}
    indegree = {}
    for v in (v for v, a in enumerate(alive) if a):
        ps = [u for u in preds[v] if u != v]
        indegree[v] = len(ps)
        for u in ps:
            succs.setdefault(u, []).append(v)
    heap = [v for v, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        u = heapq.heappop(heap)
        order.append(u)
        for v in succs.get(u, ()):
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(heap, v)
    return order


def longest_path_levels(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    """Topological level of every node: the number of edges on the longest path that ends at it (sources: 0).

    Every edge then goes from a lower to a strictly higher level, and each node sits on the lowest level that
    allows this. Requires ``src < dst`` for every edge (node ids in topological order): the edges are relaxed once
    each in increasing order of ``dst``, which is exact because every edge into ``src`` comes earlier in that order.

    Args:
        src: ``(E,)`` int array, edge sources.
        dst: ``(E,)`` int array, edge targets, ``src < dst``.
        num_nodes: ``N``.

    Returns:
        ``(N,)`` int64 array.

    Raises:
        ValueError: an edge does not go from a lower to a higher node id.

    Shapes:
        ``src (E,)``, ``dst (E,)`` -> ``(N,)``
    """
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    if len(src) and not (src < dst).all():
        bad = int(np.argmax(src >= dst))
        raise ValueError(f"edge {src[bad]} -> {dst[bad]} does not follow the topological node order")
    level = [0] * num_nodes
    order = np.argsort(dst, kind="stable")  # (E,) edges by target
    for u, v in zip(src[order].tolist(), dst[order].tolist()):
        if level[u] >= level[v]:
            level[v] = level[u] + 1
    return np.asarray(level, dtype=np.int64)
