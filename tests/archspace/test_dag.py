"""archspace.dag: topological order and levels, against networkx's definitions on random DAGs."""

import networkx as nx
import numpy as np
import pytest

from archspace.dag import longest_path_levels, topological_order


def random_dag(n: int, seed: int, p: float = 0.15) -> nx.DiGraph:
    """A random DAG on nodes 0..n-1 whose edges go from lower to higher ids, plus a chain so it is connected."""
    rng = np.random.default_rng(seed)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from((u, u + 1) for u in range(n - 1) if rng.random() < 0.5)
    g.add_edges_from((u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < p)
    return g


@pytest.mark.parametrize("seed", range(5))
def test_levels_are_longest_path_lengths(seed):
    g = random_dag(40, seed)
    src, dst = np.array(list(g.edges), dtype=np.int64).T  # (2, E)
    levels = longest_path_levels(src, dst, 40)
    # networkx: the longest path ending at v, by brute force over its ancestors' sub-DAG.
    expected = [nx.dag_longest_path_length(g.subgraph(nx.ancestors(g, v) | {v})) for v in range(40)]
    assert levels.tolist() == expected
    assert levels.dtype == np.int64


def test_levels_of_a_hand_made_graph():
    # 0 -> 1 -> 3, 0 -> 2 -> 3 -> 4, 0 -> 4: node 4 is three edges after 0 on the longest path.
    src = np.array([0, 1, 0, 2, 3, 0])
    dst = np.array([1, 3, 2, 3, 4, 4])
    assert longest_path_levels(src, dst, 6).tolist() == [0, 1, 1, 2, 3, 0]  # node 5 is isolated


def test_levels_refuse_edges_against_the_order():
    with pytest.raises(ValueError, match="does not follow the topological node order"):
        longest_path_levels(np.array([0, 2]), np.array([1, 1]), 3)


@pytest.mark.parametrize("seed", range(5))
def test_order_is_the_smallest_topological_order(seed):
    g = random_dag(30, seed)
    perm = np.random.default_rng(seed).permutation(30)  # relabel so that ids are not already topological
    h = nx.relabel_nodes(g, dict(enumerate(perm.tolist())))
    preds = [list(h.predecessors(v)) for v in range(30)]
    alive = [True] * 30
    assert topological_order(preds, alive) == list(nx.lexicographical_topological_sort(h))


def test_order_skips_dead_nodes_and_self_loops_and_stops_at_cycles():
    preds = [[], [0, 1], [1], [0]]  # 1 has a self-loop; 3 is dead
    assert topological_order(preds, [True, True, True, False]) == [0, 1, 2]
    cyclic = [[], [0, 2], [1]]  # 1 <-> 2
    assert topological_order(cyclic, [True] * 3) == [0]
