"""Weights that read a concatenation, decoded part by part (``GHN(concat_parts=True)``, :mod:`ghn.concat_parts`)."""

from __future__ import annotations

import copy

import pytest
import torch

from archspace.dataset import ArchDataset
from archspace.primitives import PRIMITIVES
from ghn import GHN
from ghn.assign import assign
from ghn.concat_parts import concat_inputs
from ghn.normalize import normalization_kind, normalize

from .nets import TinyResNet, tiny_resnet_graph


@pytest.fixture(scope="module")
def darts_pair():
    """A DeepNets-1M test net at width 8 whose classifier reads two cell states of 8 channels (one linear layer)."""
    ds = ArchDataset(split="test", image_size=16, width_range=(8, 8))
    return ds.get_pair(5)


def _node(graph, name):
    return next(i for i, names in enumerate(graph.param_names) if name in names)


def _parts(graph):
    return concat_inputs(graph.op_type, graph.edge_index, graph.edge_dist, graph.param_shape, graph.param_ndim)


def test_finds_the_classifier_and_the_preprocessing_of_every_cell_output(darts_pair):
    graph, net = darts_pair
    found = _parts(graph)
    cls = _node(graph, "classifier.0.weight")
    producers, channels = found[cls]
    assert channels == 8 and len(producers) == 2
    assert net.classifier[0].in_features == 16
    # the cell's two states in order: one op's output (its norm) and a sum of ops
    assert [PRIMITIVES[graph.op_type[p]] for p in producers] == ["bn", "sum"]
    # every weight found reads exactly the channels of its parts
    for node, (producers, channels) in found.items():
        assert int(graph.param_shape[node, 1]) == channels * len(producers)
    # the next cells' preprocessing convolutions read the cell outputs too
    names = [graph.param_names[n][0] for n in found]
    assert any(".preprocess" in n for n in names)


def test_a_net_without_concatenations_has_none():
    model = TinyResNet(8)
    assert _parts(tiny_resnet_graph(model)) == {}


def test_each_part_is_decoded_from_its_own_producer(darts_pair):
    """The classifier's columns of part ``s`` are the classifier head applied to ``x[v] + P x[p_s]``, fitted to the
    part's 8 channels and normalised for the whole weight's fan-in."""
    graph, net = darts_pair
    torch.manual_seed(0)
    ghn = GHN(hidden_dim=16, max_shape=(16, 16, 3, 3), image_size=16, concat_parts=True).eval()
    with torch.no_grad():
        ghn.part_proj.weight.normal_()
        got = ghn.predict_parameters(graph, [net])[0]["classifier.0.weight"]  # (10, 16)
        x = ghn.node_embeddings(graph)
        cls = _node(graph, "classifier.0.weight")
        producers, channels = _parts(graph)[cls]
        kind, scale = normalization_kind((10, 16), False, False)
        for s, p in enumerate(producers):
            emb = x[cls] + ghn.part_proj(x[p])
            block = ghn.decoder.classifier(emb[None], n_in=channels)[0]  # (10, 8)
            torch.testing.assert_close(got[:, s * channels:(s + 1) * channels], normalize(block, kind, scale))
    assert not torch.equal(got[:, :channels], got[:, channels:])


def test_the_projection_starts_at_zero_and_learns(darts_pair):
    """At initialisation every part is the weight's own block (the parts are tied); the loss reaches the
    projection, so training can make them differ."""
    graph, net = darts_pair
    torch.manual_seed(0)
    ghn = GHN(hidden_dim=16, max_shape=(16, 16, 3, 3), image_size=16, concat_parts=True)
    params = ghn.predict_parameters(graph, [net])[0]
    w = params["classifier.0.weight"]
    assert torch.equal(w[:, :8], w[:, 8:])
    net.train()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])  # digits are fed as 3 channels
    torch.nn.functional.cross_entropy(torch.func.functional_call(net, params, (x,)), y).backward()
    assert ghn.part_proj.weight.grad is not None and ghn.part_proj.weight.grad.abs().sum() > 0


def test_in_place_prediction_equals_the_differentiable_one(darts_pair):
    graph, net = darts_pair
    torch.manual_seed(0)
    ghn = GHN(hidden_dim=16, max_shape=(16, 16, 3, 3), image_size=16, concat_parts=True).eval()
    with torch.no_grad():
        ghn.part_proj.weight.normal_()
        expected = ghn.predict_parameters(graph, [net])[0]
    model, report = ghn.predict(copy.deepcopy(net), graph=graph, return_report=True)
    assert report.complete
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoints_keep_the_option(darts_pair, tmp_path):
    graph, net = darts_pair
    torch.manual_seed(0)
    ghn = GHN(hidden_dim=16, max_shape=(16, 16, 3, 3), image_size=16, concat_parts=True).eval()
    with torch.no_grad():
        ghn.part_proj.weight.normal_()
    path = str(tmp_path / "ghn.safetensors")
    ghn.save(path)
    back = GHN.load(path)
    assert back.concat_parts and back.config == ghn.config
    with torch.no_grad():
        want, got = ghn.predict_parameters(graph, [net])[0], back.predict_parameters(graph, [net])[0]
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert not GHN().concat_parts  # GHN-2 and its released checkpoints decode whole blocks


def test_only_a_tensor_that_reads_the_whole_concatenation_is_split(darts_pair):
    """A parts entry splits a tensor only when its input axis is exactly the parts' channels (a node may bind
    tensors of other shapes)."""
    graph, net = darts_pair
    cls = _node(graph, "classifier.0.weight")
    producers, channels = _parts(graph)[cls]
    names = [list(graph.param_names)]
    args = ([0], graph.cls_role.tolist(), graph.op_type.tolist(), [net], (16, 16, 3, 3), True)
    right = assign(names, *args, parts={cls: (producers, channels)})
    wrong = assign(names, *args, parts={cls: (producers, channels + 1)})
    by_name = {t.name: t for t in right.targets}
    assert by_name["classifier.0.weight"].part_channels == channels and len(right.virtual) == 2
    assert {t.name: t.part_channels for t in wrong.targets}["classifier.0.weight"] == 0 and wrong.virtual == []
