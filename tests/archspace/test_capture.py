"""The capture's rules on tiny hand-made modules (torch only): free parameters bound where the forward uses them,
attention recognised from its operations (explicit ``softmax(q k^T) v`` and the fused call) as one ``msa`` node."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from archspace import to_graph
from archspace.primitives import PRIMITIVES

from .graph_checks import assert_all_bound, assert_valid, real_edges

D, HEADS, TOKENS = 8, 2, 4  # embedding size, heads, tokens of a 4x4 input cut in 2x2 patches


def build(model, size=(3, 4, 4)):
    """The graph of ``model``, with any warning (unbound parameter, repeated layer, fallback) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = to_graph(model, size)
    assert_valid(graph)
    assert_all_bound(model, graph)
    return graph


def node_of(graph, param):
    """Index of the node ``param`` is bound to."""
    return next(i for i, names in enumerate(graph.param_names) if param in names)


def primitive(graph, i):
    return PRIMITIVES[int(graph.op_type[i])]


def preds(graph, i):
    edges = real_edges(graph)
    return {graph.node_names[u] for u in edges[0, edges[1] == i].tolist()}


def succs(graph, i):
    edges = real_edges(graph)
    return {graph.node_names[v] for v in edges[1, edges[0] == i].tolist()}


def nodes_of(graph, prim):
    return [i for i in range(graph.num_nodes) if primitive(graph, i) == prim]


class Attention(nn.Module):
    """Multi-head self-attention with a relative-position table indexed into an additive bias (Swin's, written out
    with one qkv projection), explicit or through ``F.scaled_dot_product_attention``."""

    def __init__(self, fused: bool, table: nn.Parameter | None = None):
        super().__init__()
        self.fused = fused
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.table = table if table is not None else nn.Parameter(torch.randn(7, HEADS))
        n = TOKENS + 1  # patches and the class token
        self.register_buffer("index", torch.arange(n * n).view(n, n) % 7)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        q, k, v = qkv.unbind(0)  # one producer for all three
        bias = self.table[self.index].permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, N, d)
        else:
            attn = (q * (C // HEADS) ** -0.5) @ k.transpose(-2, -1) + bias  # (B, H, N, N)
            x = attn.softmax(dim=-1) @ v  # (B, H, N, d)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, one pre-norm block with layer scale, linear head."""

    def __init__(self, fused: bool = False, blocks: int = 1, shared_table: bool = False):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS + 1, D))
        table = nn.Parameter(torch.randn(7, HEADS)) if shared_table else None
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(blocks))
        self.attns = nn.ModuleList(Attention(fused, table) for _ in range(blocks))
        self.gammas = nn.ParameterList(nn.Parameter(torch.ones(D)) for _ in range(blocks))
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, N + 1, D)
        for norm, attn, gamma in zip(self.norms, self.attns, self.gammas):
            x = x + gamma * attn(norm(x))
        return self.head(x[:, 0])


@pytest.mark.parametrize("fused", [False, True], ids=["explicit", "fused"])
def test_attention_is_one_msa_node_that_owns_its_bias_table(fused):
    graph = build(TinyViT(fused=fused))
    assert graph.op_counts()["msa"] == 1
    msa = node_of(graph, "attns.0.table")
    assert primitive(graph, msa) == "msa" and graph.param_names[msa] == ("attns.0.table",)
    assert graph.param_shape[msa].tolist() == [7, HEADS, 0, 0] and graph.param_ndim[msa] == 2
    # qkv projection -> msa -> output projection, as the reference's transformer op
    assert preds(graph, msa) == {"attns.0.qkv.bias"} and succs(graph, msa) == {"attns.0.proj.weight"}


def test_explicit_and_fused_attention_give_the_same_graph():
    explicit, fused = build(TinyViT(fused=False)), build(TinyViT(fused=True))
    assert explicit.op_type.tolist() == fused.op_type.tolist()
    assert explicit.param_names == fused.param_names
    assert torch.equal(explicit.edge_index, fused.edge_index)


def test_tokens_position_embedding_and_layer_scale_bound_where_used():
    graph = build(TinyViT())
    cls, pos, gamma = (node_of(graph, n) for n in ("cls_token", "pos_embed", "gammas.0"))
    assert primitive(graph, cls) == primitive(graph, pos) == "pos_enc"  # sources of the concat and the sum
    assert preds(graph, cls) == preds(graph, pos) == set()
    assert succs(graph, cls) == {"concat"} and succs(graph, pos) == {"sum"}
    assert primitive(graph, gamma) == "ln"  # a per-channel scale, like torchvision ConvNeXt's layer_scale
    assert preds(graph, gamma) == {"attns.0.proj.bias"}


def test_a_table_shared_by_two_blocks_is_bound_once():
    model = TinyViT(blocks=2, shared_table=True)
    graph = build(model)  # build() checks that no parameter is bound twice
    assert graph.op_counts()["msa"] == 2
    assert [graph.param_names[i] for i in nodes_of(graph, "msa")] == [("attns.0.table",), ()]


class SeparateProjections(nn.Module):
    """Attention with q, k and v from three projections, a learned temperature, and a mask buffer."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.temperature = nn.Parameter(torch.ones(1))
        self.register_buffer("mask", torch.zeros(TOKENS, TOKENS))
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        attn = (self.q(x) @ self.k(x).transpose(-2, -1)) * self.temperature + self.mask  # (B, N, N)
        x = torch.matmul(F.dropout(attn.softmax(-1), 0.1, training=False), self.v(x))  # (B, N, D)
        return self.head(x.mean(1))


def test_attention_joins_three_projections_and_binds_its_temperature():
    graph = build(SeparateProjections())
    (msa,) = nodes_of(graph, "msa")
    assert graph.param_names[msa] == ("temperature",)
    assert preds(graph, msa) == {"q.bias", "k.bias", "v.bias"}


class LinearAttention(nn.Module):
    """``q (k^T v)`` without a softmax (linear attention): products of activations, but no ``msa``."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.qkv = nn.Linear(D, 3 * D)
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        q, k, v = F.relu(self.qkv(x)).chunk(3, dim=-1)  # 3 x (B, N, D)
        x = x + q @ (k.transpose(-2, -1) @ v)  # (B, N, D)
        return self.head(x.mean(1))


def test_products_without_softmax_are_not_attention():
    graph = build(LinearAttention())
    assert "msa" not in graph.op_counts()
    assert graph.op_counts()["sum"] == 1  # the residual sum survives


class FunctionalLayers(nn.Module):
    """Parameters of no layer type, used as a functional linear layer, a matrix product, a per-channel offset, an
    affine ``addcmul`` (ResMLP's Affine) and a learned threshold cast with ``type_as`` (FRN's TLU)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.w, self.b = nn.Parameter(torch.randn(D, D)), nn.Parameter(torch.zeros(D))
        self.m = nn.Parameter(torch.randn(D, 10))
        self.offset = nn.Parameter(torch.zeros(D))
        self.alpha, self.beta = nn.Parameter(torch.ones(D)), nn.Parameter(torch.zeros(D))
        self.tau = nn.Parameter(torch.zeros(D))

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.addcmul(self.beta, self.alpha, F.linear(x, self.w, self.b) + self.offset)  # (B, N, D)
        x = torch.maximum(x, self.tau.type_as(x))  # x is read for its dtype only
        return x.mean(1) @ self.m  # (B, 10)


def test_free_parameters_get_the_primitive_of_their_use():
    graph = build(FunctionalLayers())
    kinds = {names: primitive(graph, i) for i, names in enumerate(graph.param_names) if names}
    assert kinds[("w",)] == "conv" and kinds[("b",)] == "bias" and kinds[("offset",)] == "bias"
    assert kinds[("beta", "alpha")] == "ln"  # weight and bias of one affine on one node, like a norm layer
    assert kinds[("tau",)] == "ln" and preds(graph, node_of(graph, "tau")) == {"beta"}
    assert kinds[("m",)] == "conv" and graph.cls_role[node_of(graph, "m")] == 1  # the classifier
    assert preds(graph, node_of(graph, "b")) == {"w"}  # weight, then its bias


class StandardisedConv(nn.Conv2d):
    """Weight standardisation with a learned gain (NF-Net's ScaledStdConv2d)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) * self.gain
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_a_gain_joins_the_weight_it_scales():
    model = nn.Sequential(StandardisedConv(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    graph = build(model, 8)
    i = node_of(graph, "0.gain")
    assert graph.param_names[i] == ("0.weight", "0.gain") and primitive(graph, i) == "conv"


class Gates(nn.Module):
    """One free tensor of two gates, sliced at two places (EfficientViM's ``alpha``), and two heads averaged."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(c, 4, 3, padding=1) for c in (3, 4, 4))
        self.alpha = nn.Parameter(torch.ones(2, 4, 1, 1))
        self.heads = nn.ModuleList(nn.Linear(4, 10) for _ in range(2))

    def forward(self, x):
        x = self.conv1(x)
        x = x + self.alpha[0] * self.conv2(x)
        x = x + self.alpha[1] * self.conv3(x)
        feats = x.mean((2, 3))
        return torch.stack([head(feats) for head in self.heads]).mean(0)


def test_a_free_tensor_used_twice_is_one_node_without_cycles():
    graph = build(Gates(), 8)  # no "applied repeatedly" warning
    assert primitive(graph, node_of(graph, "alpha")) == "ln"
    assert graph.node_names[-1] == "output:sum"  # the averaged heads end in one sum node
    assert preds(graph, graph.num_nodes - 1) == {"heads.0.bias", "heads.1.bias"}


class CachedBias(nn.Module):
    """An attention bias cached per device in eval mode (LeViT's ``attention_bias_cache``)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 2, stride=2)
        self.biases = nn.Parameter(torch.zeros(TOKENS, TOKENS))
        self.cache: dict[str, torch.Tensor] = {}
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        if self.training:
            bias = self.biases
        else:
            key = str(x.device)
            if key not in self.cache:
                self.cache[key] = self.biases * 1.0
            bias = self.cache[key]
        x = (x @ x.transpose(-2, -1) + bias).softmax(-1) @ x  # (B, N, D)
        return self.head(x.mean(1))


def test_a_cached_bias_is_found_again_and_the_cache_left_empty():
    model = CachedBias().eval()
    first, second = build(model), build(model)
    assert first.param_names == second.param_names and primitive(first, node_of(first, "biases")) == "msa"
    assert model.cache == {}
    model(torch.zeros(1, 3, 4, 4))  # a real forward still caches as usual
    assert list(model.cache) == ["cpu"]


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.lstm(x.flatten(2).transpose(1, 2))[0].mean(1))


def test_recurrent_layers_are_bound():
    model = Recurrent()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LSTM may run on real tensors instead of the meta device
        graph = to_graph(model, 4)
    assert_all_bound(model, graph)
    kinds = {names[0]: primitive(graph, i) for i, names in enumerate(graph.param_names) if names}
    assert kinds["lstm.weight_ih_l0"] == kinds["lstm.weight_hh_l0_reverse"] == "conv"
    assert kinds["lstm.bias_ih_l0"] == "bias"
