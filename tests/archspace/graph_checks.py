"""Invariants every graph of :func:`archspace.to_graph` must satisfy, shared by the graph tests."""

import networkx as nx

from archspace.primitives import PRIMITIVE_ID, PRIMITIVES


def real_edges(graph):
    """The edges of distance 1, ``(2, E_real)``."""
    return graph.edge_index[:, graph.edge_dist == 1]


def assert_valid(graph):
    """Invariants of every graph: topological order, one input first, everything reaches the output, only the input
    and ``pos_enc`` nodes have no inputs."""
    n = graph.num_nodes
    assert graph.op_type.shape == (n,) and graph.param_shape.shape == (n, 4)
    assert len(graph.param_names) == len(graph.node_names) == n
    assert bool((graph.edge_index[0] < graph.edge_index[1]).all()), "edges must go forward in topological order"
    assert int(graph.op_type[0]) == PRIMITIVE_ID["input"] and int((graph.op_type == PRIMITIVE_ID["input"]).sum()) == 1
    g = nx.DiGraph(real_edges(graph).t().tolist())
    g.add_nodes_from(range(n))
    reach = nx.ancestors(g, n - 1) | {n - 1}
    assert len(reach) == n, f"nodes that do not reach the output: {[graph.node_names[v] for v in set(g) - reach][:5]}"
    sources = [v for v in range(n) if g.in_degree(v) == 0]
    assert all(v == 0 or PRIMITIVES[int(graph.op_type[v])] == "pos_enc" for v in sources), \
        [graph.node_names[v] for v in sources]


def assert_all_bound(model, graph):
    """Every parameter is bound to exactly one node."""
    names = [p for node in graph.param_names for p in node]
    assert len(names) == len(set(names)), "a parameter is bound to two nodes"
    missing = [n for n, _ in model.named_parameters() if n not in set(names)]
    assert not missing, f"unbound parameters: {missing}"
    assert set(names) == {n for n, _ in model.named_parameters()}
