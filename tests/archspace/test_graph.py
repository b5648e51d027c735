"""``to_graph``: the reference's counts, graph invariants, parameter binding, special layers, batching."""

import pickle
import warnings

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from torch_geometric.data import Batch

from archspace import ArchGraph, adapt_small_input, to_graph
from archspace.capture import Capture, DisconnectedOutputError, ForwardError, RawNode, capture
from archspace.errors import UsageError
from archspace.graph import GraphCycleError, _edges_with_virtual, build_graph, input_shape
from archspace.ops import ChannelSE, PosEnc, SelfAttention2d
from archspace.primitives import PRIMITIVE_ID, PRIMITIVES

from .graph_checks import assert_all_bound, assert_valid, real_edges


def meta_model(name, **kwargs):
    """A torchvision model built on the meta device: no time spent initialising weights nobody reads."""
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None, **kwargs)
    except NotImplementedError:  # a constructor that reads weight values (RegNet)
        return torchvision.models.get_model(name, weights=None, **kwargs)


# ------------------------------------------------------------------ the reference's numbers
def test_resnet50_matches_reference_counts():
    model = torchvision.models.resnet50()
    graph = to_graph(model, 224)
    assert (graph.num_nodes, graph.num_real_edges, graph.num_virtual_edges) == (127, 142, 7811)
    assert graph.op_counts() == {"max_pool": 1, "conv": 54, "sum": 16, "input": 1, "bias": 1, "bn": 53,
                                 "glob_avg": 1}
    assert graph.param_names[-2:] == [("fc.weight",), ("fc.bias",)]
    assert graph.cls_role.tolist() == [0] * 125 + [1, 2]
    assert graph.param_shape[-2].tolist() == [1000, 2048, 0, 0] and graph.param_ndim[-2] == 2
    maxpool = graph.node_names.index("maxpool:max_pool")
    assert graph.param_shape[maxpool].tolist() == [1, 1, 3, 3] and graph.param_ndim[maxpool] == 0
    assert graph.param_names[2] == ("bn1.weight", "bn1.bias")  # norm weight and bias on one node
    assert_valid(graph)
    assert_all_bound(model, graph)


def test_resnet18_small_input_matches_reference_counts():
    model = adapt_small_input(torchvision.models.resnet18())
    graph = to_graph(model)  # expected_input_sz = 32 from the adaptation
    assert (graph.num_nodes, graph.num_real_edges, graph.num_virtual_edges) == (52, 59, 1243)
    assert "max_pool" not in graph.op_counts()
    assert graph.param_shape[1].tolist() == [64, 3, 3, 3]
    assert_valid(graph)
    assert_all_bound(model, graph)


def test_virtual_edges_are_shortest_paths_within_cutoff():
    graph = to_graph(adapt_small_input(torchvision.models.resnet18()), ve_cutoff=5)
    g = nx.DiGraph(real_edges(graph).t().tolist())
    expected = {(u, v): d for u, lengths in nx.all_pairs_shortest_path_length(g, cutoff=5)
                for v, d in lengths.items() if d > 0}
    got = {(u, v): d for (u, v), d in zip(graph.edge_index.t().tolist(), graph.edge_dist.tolist())}
    assert got == expected
    assert graph.edge_dist.max() == 5
    keys = graph.edge_index[0] * graph.num_nodes + graph.edge_index[1]
    assert bool((keys[1:] > keys[:-1]).all()), "edges sorted by (u, v) like the reference's adjacency"


def test_cutoff_one_gives_real_edges_only():
    graph = to_graph(torchvision.models.resnet18(), 64, ve_cutoff=1)
    assert graph.num_virtual_edges == 0 and graph.num_real_edges == graph.edge_index.shape[1]


# ------------------------------------------------------------------ the zoo
FAST_ZOO = ["resnet18", "resnet50", "vit_b_16", "swin_t", "convnext_tiny", "squeezenet1_0", "mobilenet_v3_large"]
SLOW_ZOO = ["resnet152", "wide_resnet50_2", "resnext50_32x4d", "vgg11_bn", "densenet121", "mobilenet_v2",
            "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x1_0"]


def check_zoo_model(name):
    model = meta_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unbound parameter, no fallback to real tensors
        graph = to_graph(model, 224)
    assert_valid(graph)
    assert_all_bound(model, graph)
    assert graph.cls_role.tolist().count(1) == 1 and graph.cls_role.tolist().count(2) == 1
    return graph


@pytest.mark.parametrize("name", FAST_ZOO)
def test_zoo_model_fully_bound(name):
    check_zoo_model(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_ZOO)
def test_zoo_model_fully_bound_slow(name):
    check_zoo_model(name)


def test_vit_attention_and_positional_encodings():
    graph = to_graph(meta_model("vit_b_16"), 224)
    counts = graph.op_counts()
    assert counts["msa"] == 12 and counts["pos_enc"] == 2 and counts["concat"] == 1
    pos = {graph.param_names[i][0] for i in range(graph.num_nodes) if PRIMITIVES[int(graph.op_type[i])] == "pos_enc"}
    assert pos == {"class_token", "encoder.pos_embedding"}
    # in-projection -> msa -> out-projection, as the reference's transformer op
    i = next(i for i in range(graph.num_nodes) if PRIMITIVES[int(graph.op_type[i])] == "msa")
    edges = real_edges(graph)
    assert graph.param_names[edges[0, edges[1] == i].item()][0].endswith("self_attention.in_proj_bias")
    assert graph.param_names[edges[1, edges[0] == i].item()][0].endswith("self_attention.out_proj.weight")


def test_swin_bias_table_bound_to_msa_and_convnext_layer_scale_to_ln():
    swin = to_graph(meta_model("swin_t"), 224)
    msa = [swin.param_names[i] for i in range(swin.num_nodes) if PRIMITIVES[int(swin.op_type[i])] == "msa"]
    assert len(msa) == 12 and all(p[0].endswith("attn.relative_position_bias_table") for p in msa)
    convnext = to_graph(meta_model("convnext_tiny"), 224)
    scales = [i for i, p in enumerate(convnext.param_names) if p and p[0].endswith("layer_scale")]
    assert len(scales) == 18 and all(PRIMITIVES[int(convnext.op_type[i])] == "ln" for i in scales)


def test_squeezenet_classifier_conv_is_marked():
    graph = to_graph(meta_model("squeezenet1_0"), 224)
    roles = {graph.param_names[i][0]: r for i, r in enumerate(graph.cls_role.tolist()) if r}
    assert roles == {"classifier.1.weight": 1, "classifier.1.bias": 2}


class TinyDeepNet(nn.Module):
    """The DeepNets-1M special ops (archspace.ops) in one small net."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.pos = PosEnc(8, 8)
        self.se = ChannelSE(8)
        self.attn = SelfAttention2d(8)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pos(self.stem(x))
        a, b = self.se(x), self.attn(x)
        x = torch.cat([self.pool(a), b], dim=1)
        return self.fc(x.mean((2, 3)))


def test_deepnets_special_ops():
    model = TinyDeepNet()
    graph = to_graph(model, 8)
    counts = graph.op_counts()
    assert counts["cse"] == 1 and counts["msa"] == 1 and counts["pos_enc"] == 1
    assert counts["concat"] == 1 and counts["avg_pool"] == 1 and counts["glob_avg"] == 1
    assert "max_pool" not in counts  # the mean inside the cse collapses into the cse node
    cse = graph.op_type.tolist().index(PRIMITIVE_ID["cse"])
    preds = real_edges(graph)[0, real_edges(graph)[1] == cse].tolist()
    assert {graph.node_names[p] for p in preds} == {"pos:sum", "se.fc2.bias"}  # gated input and the gate
    avg = graph.op_type.tolist().index(PRIMITIVE_ID["avg_pool"])
    assert graph.param_shape[avg].tolist() == [1, 1, 3, 3]
    assert_valid(graph)
    assert_all_bound(model, graph)


# ------------------------------------------------------------------ robustness
def test_model_is_left_unchanged():
    model = torchvision.models.resnet18().train()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    to_graph(model, 32)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_graph_is_on_cpu_under_a_meta_default_device():
    with torch.device("meta"):
        graph = to_graph(torchvision.models.resnet18(), 32)
    for key in ("op_type", "edge_index", "edge_dist", "param_shape", "param_ndim", "cls_role"):
        assert graph[key].device.type == "cpu", key


def test_fast_shape_rules_give_the_same_graph():
    model = meta_model("swin_t")
    fast, slow = to_graph(model, 224, fast=True), to_graph(model, 224, fast=False)
    for key in ("op_type", "edge_index", "edge_dist", "param_shape", "param_ndim", "cls_role"):
        assert torch.equal(fast[key], slow[key]), key
    assert fast.param_names == slow.param_names and fast.node_names == slow.node_names


def test_fast_broadcast_matches_torch():
    from archspace.meta_shapes import _broadcast
    shapes = [(), (1,), (3,), (2, 1), (2, 3), (1, 3), (4, 1, 3), (4, 2, 3), (0,), (2, 0), (5, 1, 1, 1)]
    for a in shapes:
        for b in shapes:
            try:
                expected = tuple(torch.broadcast_shapes(a, b))
            except (RuntimeError, ValueError):
                expected = None
            assert _broadcast(torch.Size(a), torch.Size(b)) == expected, (a, b)


class CpuConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x) + torch.ones(4, 1, 1)  # a CPU tensor made in forward: fails on meta
        return self.fc(x.mean((2, 3)))


def test_falls_back_to_real_tensors_with_a_warning():
    model = CpuConstant()
    with pytest.warns(UserWarning, match="meta device"):
        graph = to_graph(model, 8)
    assert graph.num_nodes == 6  # input, conv w/b, glob_avg, fc w/b
    assert_all_bound(model, graph)


class WithPReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.PReLU()
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.act(self.conv(x)).mean((2, 3))


def test_unsupported_and_unused_parameters_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"act\.weight \(PReLU, unsupported\).*unused\.weight \(Linear, unused\)"):
        graph = to_graph(WithPReLU(), 8)
    assert graph.op_counts() == {"conv": 1, "bias": 1, "input": 1, "glob_avg": 1}


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean((2, 3)))


def test_reused_layer_is_one_node():
    model = Shared()
    with pytest.warns(UserWarning, match="applied repeatedly"):
        graph = to_graph(model, (4, 6, 6))
    assert graph.param_names.count(("conv.weight",)) == 1
    assert_valid(graph)


class ReusedAcross(nn.Module):
    """A conv applied, then BatchNorm, then the same conv again: one node cannot hold both uses."""

    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(self.c(torch.relu(self.bn(self.c(x)))).mean((2, 3)))


class Tied(nn.Module):
    """Two linear layers that share their weight, with biases of their own."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1)[:, :8])))


@pytest.mark.parametrize("model, cut", [(ReusedAcross, "bn.weight"), (Tied, "a.bias")])
def test_sharing_that_cuts_nodes_off_the_output_is_refused(model, cut):
    # Merging the uses into one node would leave these nodes reaching nothing (the reference asserts that every
    # node reaches the output): refused in one line rather than a graph with dead ends.
    with pytest.raises(GraphCycleError, match=f"leaves {cut} cut off from the output.*untie the weights"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        to_graph(model(), (3, 8, 8))


def test_weight_norm_is_one_conv_node_old_hook_or_parametrization():
    from torch.nn.utils import weight_norm
    from torch.nn.utils.parametrizations import weight_norm as weight_norm_parametrized

    shapes = []
    for norm in (weight_norm, weight_norm_parametrized):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the old hook is deprecated
            model = nn.Sequential(norm(nn.Conv2d(3, 4, 3)), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
        graph = to_graph(model, 8)
        convs = [i for i in range(graph.num_nodes) if PRIMITIVES[int(graph.op_type[i])] == "conv"]
        assert len(convs) == 2 and len(graph.param_names[convs[0]]) == 2  # v and its gain g on one node
        assert_all_bound(model, graph)
        shapes.append(graph.param_shape.tolist())
    assert shapes[0] == shapes[1]  # the same graph either way


class AddIntoAView(nn.Module):
    """A branch added in place into a view of another's output, which is then read through the original tensor."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Linear(4, 10)

    def forward(self, x):
        y = self.a(x)
        y.view(1, 4, -1).add_(self.b(x).view(1, 4, -1))
        return self.fc(y.mean((2, 3)))


def test_an_in_place_op_through_a_view_keeps_its_branch():
    model = AddIntoAView()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # b's parameters were reported unused when the view's base was not updated
        graph = to_graph(model, (3, 4, 4))
    assert_all_bound(model, graph)
    names = [PRIMITIVES[int(t)] for t in graph.op_type]
    (s,) = [i for i, n in enumerate(names) if n == "sum"]
    edges = real_edges(graph)
    assert sorted(graph.node_names[u] for u in edges[0, edges[1] == s].tolist()) == ["a.bias", "b.bias"]


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.w * 2


@pytest.mark.parametrize("bad, error, message", [
    (dict(model="resnet", input_size=32), TypeError, "expects an nn.Module"),
    (dict(input_size=(2, 3, 32, 32)), UsageError, "one example"),
    (dict(input_size=(32, 32)), UsageError, "must be an int H"),
    (dict(input_size=0), UsageError, "must be positive"),
    (dict(input_size=32, ve_cutoff=0), UsageError, "ve_cutoff must be an int >= 1"),
])
def test_bad_arguments(bad, error, message):
    args = dict(model=torchvision.models.resnet18(), input_size=32) | bad
    with pytest.raises(error, match=message):
        to_graph(**args)


def test_a_lazy_module_is_one_line():
    lazy = nn.Sequential(nn.LazyConv2d(4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(UsageError, match="0.weight of LazyConv2d is not initialised yet .*run one forward pass"):
        to_graph(lazy, 8)
    lazy(torch.zeros(1, 3, 8, 8))  # initialised: now it has a graph
    assert to_graph(lazy, 8).num_nodes > 0


def test_output_without_input_is_an_error():
    with pytest.raises(DisconnectedOutputError, match="does not depend on its input"):
        to_graph(Detached(), 8)
    assert issubclass(DisconnectedOutputError, UsageError)


def test_failing_forward_is_reported():
    with pytest.raises(ForwardError, match=r"on an input of shape \(1, 3, 64, 64\) failed: .*Wrong image height") as e:
        to_graph(meta_model("vit_b_16"), 64)
    # A user error (the input size does not suit the model) that stays a RuntimeError for older callers.
    assert isinstance(e.value, UsageError) and isinstance(e.value, RuntimeError)
    assert e.value.input_shape == (1, 3, 64, 64) and e.value.reason.startswith("AssertionError: Wrong image height")
    assert "\n" not in str(e.value)
    restored = pickle.loads(pickle.dumps(e.value))  # crosses process boundaries intact (dataset workers)
    assert (str(restored), restored.input_shape, restored.reason) == (str(e.value), (1, 3, 64, 64), e.value.reason)


# ------------------------------------------------------------------ the fast path against a plain reference
def reference_graph(cap, ve_cutoff):
    """``build_graph`` written the obvious way with networkx: contract the dropped ops, keep the output's ancestors,
    the smallest topological order, virtual edges from all-pairs shortest path lengths with a cutoff."""
    nodes = cap.nodes
    raw = nx.DiGraph()
    raw.add_nodes_from(range(len(nodes)))
    raw.add_edges_from((p, v) for v, node in enumerate(nodes) for p in node.preds if p != v)
    kept = {v for v, node in enumerate(nodes) if node.primitive is not None}

    def kept_feeding(v):  # kept nodes with a path to v through dropped ops only
        found, stack, seen = set(), list(raw.predecessors(v)), set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in kept:
                found.add(u)
            else:
                stack.extend(raw.predecessors(u))
        return found

    contracted = nx.DiGraph()
    contracted.add_edges_from((u, v) for v in kept for u in kept_feeding(v))
    sinks = {cap.output} if cap.output in kept else kept_feeding(cap.output)
    contracted.add_nodes_from(sinks)
    alive = set(sinks).union(*(nx.ancestors(contracted, s) for s in sinks))
    sub = contracted.subgraph(alive)
    order = list(nx.lexicographical_topological_sort(sub))  # smallest creation index first
    new = {v: k for k, v in enumerate(order)}
    real = nx.DiGraph()
    real.add_nodes_from(range(len(order)))
    real.add_edges_from((new[u], new[v]) for u, v in sub.edges)
    lengths = {(u, v): d for u, row in nx.all_pairs_shortest_path_length(real, cutoff=ve_cutoff)
               for v, d in row.items() if d > 0}
    pairs = sorted(lengths)
    n = len(order)
    op_type = torch.tensor([PRIMITIVE_ID[nodes[v].primitive] for v in order])
    param_ndim = torch.tensor([len(nodes[v].shape) if nodes[v].params else 0 for v in order])
    role = torch.zeros(n, dtype=torch.long)
    last = max(k for k in range(n) if param_ndim[k] > 0)
    conv_like = {PRIMITIVE_ID[p] for p in ("conv", "sep_conv", "dil_conv")}
    if PRIMITIVES[int(op_type[last])] == "bias":
        role[last] = 2
        feeding = list(real.predecessors(last))
        if len(feeding) == 1 and int(op_type[feeding[0]]) in conv_like and param_ndim[feeding[0]] > 0:
            role[feeding[0]] = 1
    elif int(op_type[last]) in conv_like:
        role[last] = 1
    return ArchGraph(
        op_type=op_type,
        edge_index=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t(),
        edge_dist=torch.tensor([lengths[e] for e in pairs], dtype=torch.long),
        param_shape=torch.tensor([(tuple(nodes[v].shape[:4]) + (0, 0, 0, 0))[:4] for v in order]).reshape(n, 4),
        param_ndim=param_ndim,
        cls_role=role,
        param_names=[tuple(nodes[v].params) for v in order],
        node_names=[nodes[v].label for v in order],
        num_nodes=n,
    )


def assert_same_graph(got, expected):
    for key in ("op_type", "edge_index", "edge_dist", "param_shape", "param_ndim", "cls_role"):
        assert got[key].dtype == expected[key].dtype == torch.long, key
        assert torch.equal(got[key], expected[key]), key
    assert got.param_names == expected.param_names and got.node_names == expected.node_names
    assert got.num_nodes == expected.num_nodes


def deepnets_net(index):
    from archspace.sampler import get_net
    return get_net("val", index)


@pytest.mark.parametrize("name, make, size", [
    ("resnet18_small", lambda: adapt_small_input(torchvision.models.resnet18()), 32),
    ("resnet50", lambda: meta_model("resnet50"), 224),
    ("vit_b_16", lambda: meta_model("vit_b_16"), 224),
    ("tiny_deepnet", TinyDeepNet, 8),
    ("deepnets_val_0", lambda: deepnets_net(0), 32),
    ("deepnets_val_7", lambda: deepnets_net(7), 32),
])
def test_fast_build_matches_networkx_reference(name, make, size):
    cap = capture(make(), input_shape(size))
    for cutoff in (1, 2, 5, 50):
        assert_same_graph(build_graph(cap, cutoff), reference_graph(cap, cutoff))


def test_fast_build_matches_reference_on_the_800_node_darts_net():
    from archspace.sampler import get_net
    cap = capture(get_net("predefined", 2), input_shape(32))
    graph = build_graph(cap, 50)
    assert graph.num_nodes == 794
    assert_same_graph(graph, reference_graph(cap, 50))


def test_build_orders_nodes_made_out_of_order():
    """Nodes are usually made in a topological order; when not, the smallest topological order is used."""
    nodes = [RawNode("input", [], label="input"), RawNode("conv", [3], label="late", shape=(4, 3, 1, 1)),
             RawNode("bn", [1], label="norm", shape=(4,)), RawNode("conv", [0], label="early", shape=(4, 3, 3, 3)),
             RawNode("sum", [2, 3], label="sum"), RawNode(None, [4], label="dropped"),
             RawNode("conv", [5, 0], label="head", shape=(2, 4)), RawNode("conv", [4], label="dead", shape=(2, 4))]
    for node in nodes[1:]:
        node.params = [node.label] if node.shape else []
    cap = Capture(nodes, 6, {}, "meta")
    graph = build_graph(cap, 3)
    assert graph.node_names == ["input", "early", "late", "norm", "sum", "head"]
    assert_same_graph(graph, reference_graph(cap, 3))


@pytest.mark.parametrize("n", [2, 9, 70, 300])
def test_virtual_edges_of_random_dags_match_networkx(n):
    rng = np.random.default_rng(n)
    # a broken chain (deep graphs: distances past 255, the wider distance type) plus random forward edges
    pairs = {(v - 1, v) for v in range(1, n) if rng.random() < 0.9}
    pairs |= {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(int(rng.integers(0, 3 * n)))}
    src, dst = (np.asarray(x, dtype=np.int64) for x in zip(*sorted(pairs))) if pairs else (np.zeros(0, np.int64),) * 2
    g = nx.DiGraph(list(pairs))
    g.add_nodes_from(range(n))
    for cutoff in (1, 2, 7, 50, 10**6):
        edge_index, edge_dist = _edges_with_virtual(n, src, dst, cutoff)
        lengths = {(u, v): d for u, row in nx.all_pairs_shortest_path_length(g, cutoff=cutoff)
                   for v, d in row.items() if d > 0}
        pairs_sorted = sorted(lengths)
        assert edge_index.dtype == edge_dist.dtype == np.int64
        assert edge_index.T.tolist() == [list(e) for e in pairs_sorted], (n, cutoff)
        assert edge_dist.tolist() == [lengths[e] for e in pairs_sorted], (n, cutoff)


# ------------------------------------------------------------------ batching
def test_pyg_batch_keeps_every_field():
    graphs = [to_graph(adapt_small_input(torchvision.models.resnet18())), to_graph(TinyDeepNet(), 8),
              to_graph(TinyDeepNet(), 8, ve_cutoff=1)]
    batch = Batch.from_data_list(graphs)
    sizes = [g.num_nodes for g in graphs]
    assert batch.num_nodes == sum(sizes) and batch.num_graphs == 3
    assert torch.equal(batch.op_type, torch.cat([g.op_type for g in graphs]))
    assert torch.equal(batch.edge_dist, torch.cat([g.edge_dist for g in graphs]))
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    assert torch.equal(batch.edge_index, torch.cat([g.edge_index + o for g, o in zip(graphs, offsets)], dim=1))
    assert torch.equal(batch.param_shape, torch.cat([g.param_shape for g in graphs]))
    assert torch.equal(batch.cls_role, torch.cat([g.cls_role for g in graphs]))
    assert batch.param_names == [g.param_names for g in graphs]
    assert torch.equal(batch.batch, torch.repeat_interleave(torch.arange(3), torch.tensor(sizes)))
    for original, restored in zip(graphs, batch.to_data_list()):
        assert isinstance(restored, ArchGraph)
        for key in ("op_type", "edge_index", "edge_dist", "param_shape", "param_ndim", "cls_role"):
            assert torch.equal(original[key], restored[key]), key
        assert restored.param_names == original.param_names and restored.node_names == original.node_names
        assert restored.num_nodes == original.num_nodes


def test_batch_keeps_net_index_unshifted():
    import torch
    from torch_geometric.data import Batch

    from archspace.data import ArchGraph

    graphs = []
    for idx, n in ((5, 3), (7, 4)):
        g = ArchGraph(op_type=torch.zeros(n, dtype=torch.long), edge_index=torch.tensor([[0], [1]]),
                      edge_dist=torch.ones(1, dtype=torch.long), num_nodes=n)
        g.net_index = torch.tensor([idx])
        graphs.append(g)
    batch = Batch.from_data_list(graphs)
    assert batch.net_index.tolist() == [5, 7]
    assert batch.edge_index.tolist() == [[0, 3], [1, 4]]
