"""Tests of archspace.ops, archspace.genotype and archspace.network."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.genotype import DARTS_V2, Genotype, GenotypeError
from archspace.graph import to_graph
from archspace.network import Network, num_graph_nodes, num_params, plan_network
from archspace.ops import OP_NAMES, OPS, ChannelSE, PosEnc, SelfAttention2d, op_num_params
from archspace.sampler import get_genotype

pytestmark = pytest.mark.usefixtures("one_thread")


def all_grads(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of parameters that get no gradient from ``model(x).sum()``."""
    model(x).sum().backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("norm", ["bn", None])
def test_op_shapes_and_counts(name, stride, norm):
    C = 8
    op = OPS[name](C, C, stride, norm)
    assert op(torch.randn(2, C, 7, 7)).shape == (2, C, 4 if stride == 2 else 7, 4 if stride == 2 else 7)
    assert sum(p.numel() for p in op.parameters()) == op_num_params(name, C, C, stride, norm)


def test_op_classes_for_graph_builder():
    assert isinstance(OPS["cse"](8, 8, 1, "bn"), ChannelSE)
    attn = OPS["msa"](12, 12, 1, "bn")
    assert isinstance(attn, SelfAttention2d) and attn.attn.num_heads == 4  # largest power of two dividing 12
    assert isinstance(PosEnc(4, 3).weight, nn.Parameter)


def test_genotype_round_trips():
    for g in [DARTS_V2] + [get_genotype(s, i) for s in ("train", "dense", "bnfree", "wide") for i in range(5)]:
        assert Genotype.from_dict(g.to_dict()) == g
        assert Genotype.from_bytes(g.to_bytes()) == g
        assert len(g.to_bytes()) < 64
    # The canonical hash is pinned: it must not change across machines, processes or versions.
    assert DARTS_V2.canonical_hash() == "ed5b1de37f4a1d9ad63a1b24f6ef7929c63a99de"
    assert DARTS_V2.replace(normal=list(DARTS_V2.normal)).canonical_hash() == DARTS_V2.canonical_hash()


def test_genotype_errors():
    assert issubclass(GenotypeError, UsageError)  # a genotype in a user's candidate file is user input
    with pytest.raises(GenotypeError, match="unknown op"):
        Genotype(normal=[("conv_9x9", 0), ("skip_connect", 1)], normal_concat=[2],
                 reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=[2])
    with pytest.raises(GenotypeError, match="input 3"):
        Genotype(normal=[("conv_3x3", 3), ("skip_connect", 1)], normal_concat=[2],
                 reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=[2])
    with pytest.raises(GenotypeError, match="truncated|cannot decode"):
        Genotype.from_bytes(DARTS_V2.to_bytes()[:-3])
    for field, value in (("n_cells", 8.5), ("fc_layers", 2.0), ("stem_kernel", 3.0)):
        with pytest.raises(GenotypeError, match=f"{field} must be an integer, got {value}"):
            Genotype.from_dict({**DARTS_V2.to_dict(), field: value})


@pytest.mark.parametrize("split", ["train", "val", "test", "wide", "deep", "dense", "bnfree"])
def test_every_variant_trains(split):
    """One SGD step on a fixed batch lowers the loss and changes every parameter (all of them are used)."""
    torch.manual_seed(0)
    g = min((get_genotype(split, i) for i in range(5)), key=num_graph_nodes)  # the cheapest of five
    model = Network(g, num_classes=5, image_size=8, width=4).double()  # float64: no update rounds away
    x, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.arange(8) % 5
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks in both passes: the batch is truly fixed
        logits = model(x)
        assert logits.shape == (8, 5)
        return nn.functional.cross_entropy(logits, y)

    first = loss()
    first.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == [], f"{split}: parameters without a gradient: {no_grad}"
    opt.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == [], f"{split}: parameters the step did not change: {unchanged}"
    with torch.no_grad():
        assert loss() < first.detach(), split


def test_no_dead_parameters_with_none_edges():
    # Input 0 of every cell is only reached through 'none': without pruning, every cell's preprocess0 would hold
    # parameters that never get a gradient.
    g = Genotype(normal=[("none", 0), ("conv_3x3", 1), ("sep_conv_3x3", 1), ("conv_1x1", 2)], normal_concat=[3],
                 reduce=[("none", 0), ("max_pool_3x3", 1), ("conv_3x3", 1), ("skip_connect", 2)],
                 reduce_concat=[3], n_cells=5, stem_type=1)
    model = Network(g, image_size=16, width=8)
    x = torch.randn(2, 3, 16, 16)
    assert all_grads(model, x) == []
    assert sum(p.numel() for p in model.parameters()) == num_params(g, image_size=16, width=8)
    assert not any(hasattr(cell, "preprocess0") for cell in model.cells)
    assert all(set(cell.ops) == {"1", "2", "3"} for cell in model.cells)  # node 0's 'none' edge is left out


def test_disconnected_raises():
    g = Genotype(normal=[("none", 0), ("none", 1), ("none", 0), ("none", 2)], normal_concat=[2, 3],
                 reduce=[("skip_connect", 0), ("skip_connect", 1)] * 2, reduce_concat=[2, 3])
    assert not plan_network(g).connected
    with pytest.raises(GenotypeError, match="disconnected"):
        Network(g)


def test_meta_device_and_width():
    g = get_genotype("train", 3)
    with torch.device("meta"):
        model = Network(g, width=48)
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == num_params(g, width=48)
    assert num_params(g, width=48) != num_params(g)


def test_imagenet_input():
    with torch.device("meta"):
        for i in range(4):
            model = Network(get_genotype("train", i), num_classes=1000, image_size=224)
            assert model(torch.empty(1, 3, 224, 224)).shape == (1, 1000)
        vit = Network(get_genotype("predefined", 1), image_size=224)
    assert vit.pos_enc.weight.shape == (1, 192, 14, 14)


def test_darts_size():
    plan = plan_network(DARTS_V2)
    assert len(plan.cells) == 20 and [c.index for c in plan.cells if c.reduction] == [6, 13]


def test_graph_node_count_matches_to_graph():
    genotypes = [get_genotype(s, i) for s in ("train", "bnfree", "dense") for i in range(4)]
    genotypes += [DARTS_V2, get_genotype("predefined", 1)]
    for g in genotypes:
        with torch.device("meta"):
            model = Network(g, width=8)
        arch = to_graph(model, (1, 3, 32, 32), ve_cutoff=1)
        assert num_graph_nodes(g) == arch.num_nodes, g
        # Every parameter is bound to exactly one node (no dead or unrecognised parameters).
        bound = sorted(name for names in arch.param_names for name in names)
        assert bound == sorted(name for name, _ in model.named_parameters()), g


@pytest.mark.parametrize("norm", ["bn", None])
def test_sep_conv_in_place_relu_gives_the_same_numbers(norm):
    """SepConv's second ReLU runs in place; outputs and every gradient equal those of an out-of-place ReLU."""
    import copy

    op = OPS["sep_conv_3x3"](6, 8, 1, norm).double()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in op.modules())
    plain = copy.deepcopy(op)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.randn(3, 6, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [m(xi) for m, xi in zip((op, plain), xs)]
    for out in outs:
        out.square().sum().backward()
    assert torch.equal(outs[0], outs[1]) and torch.equal(xs[0].grad, xs[1].grad)
    for (name, p), q in zip(op.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad), name
