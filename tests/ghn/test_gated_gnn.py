"""The level-parallel sweeps equal the node-by-node definition of the reference (Eq. 3-4), values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from ghn.gated_gnn import GatedGNN
from ghn.levels import build_schedule

from .conftest import random_dag
from .handmade import make_graph
from .oracle import sequential_gnn


def _graph(n: int, seed: int, cutoff: int):
    nodes = [(f"n{i}", "conv", ()) for i in range(n)]
    return make_graph(nodes, random_dag(n, seed), ve_cutoff=cutoff, cls=False)


@pytest.mark.parametrize("ve", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_level_parallel_equals_node_by_node(ve, seed):
    torch.manual_seed(seed)
    gnn = GatedGNN(hidden_dim=8, ve=ve).double()
    batch = Batch.from_data_list([_graph(n, seed * 10 + n, 50 if ve else 1) for n in (5, 17, 30)])
    x = torch.randn(batch.num_nodes, 8, dtype=torch.float64, requires_grad=True)
    sched = build_schedule(batch.edge_index, batch.edge_dist, batch.num_nodes, ve, torch.float64)
    fast = gnn(x, sched)
    slow = sequential_gnn(gnn, x, batch.edge_index, batch.edge_dist)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    # Gradients w.r.t. the inputs and every GNN weight agree too.
    w = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * w).sum(), [x, *gnn.parameters()])
    g_slow = torch.autograd.grad((slow * w).sum(), [x, *gnn.parameters()])
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_levels_respect_every_edge():
    g = _graph(40, 7, 50)
    sched = build_schedule(g.edge_index, g.edge_dist, g.num_nodes, True)
    level_f = torch.empty(g.num_nodes, dtype=torch.long)
    for k, step in enumerate(sched.forward):
        level_f[sched.order_fwd[step.start:step.stop]] = k
    level_b = torch.empty(g.num_nodes, dtype=torch.long)
    for k, step in enumerate(sched.backward):
        level_b[sched.order_bwd[step.start:step.stop]] = k
    src, dst = g.edge_index
    assert (level_f[src] < level_f[dst]).all()
    assert (level_b[dst] < level_b[src]).all()
    # Each level is as early as possible: a chain of real edges reaches every non-zero level.
    levels = [sched.order_fwd[s.start:s.stop] for s in sched.forward]
    assert sorted(torch.cat(levels).tolist()) == list(range(g.num_nodes))


def test_inconsistent_virtual_edge_falls_back_to_all_edges():
    # 0 -> 1 -> 2 real; 0 -> 3 "virtual" with no real path (breaks the contract): still equal to the loop.
    torch.manual_seed(0)
    ei = torch.tensor([[0, 1, 0, 2], [1, 2, 3, 3]])
    dist = torch.tensor([1, 1, 2, 1])
    gnn = GatedGNN(hidden_dim=4, ve=True).double()
    x = torch.randn(4, 4, dtype=torch.float64)
    fast = gnn(x, build_schedule(ei, dist, 4, True, torch.float64))
    torch.testing.assert_close(fast, sequential_gnn(gnn, x, ei, dist))


def test_edges_against_topological_order_rejected():
    with pytest.raises(ValueError, match="topological"):
        build_schedule(torch.tensor([[1], [0]]), torch.tensor([1]), 2, True)


def test_repr():
    assert repr(GatedGNN(16, ve=True)) == "GatedGNN(dim=16, ve=True, steps=1)"
