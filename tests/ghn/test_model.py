"""GHN: reference compatibility, agreement with the node-by-node oracle on awkward shapes, gradients, variants."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch_geometric.data import Batch

from ghn import GHN
from ghn.checkpoint import atomic_save_safetensors

from .conftest import REFERENCE_CKPT, REFERENCE_JSON
from .handmade import resnet18_small_graph, small_input_resnet18
from .nets import OddNet, TinyResNet, odd_graph, tiny_resnet_graph
from .oracle import reference_predict

CHECKER = os.path.join(os.path.dirname(REFERENCE_JSON), "check_state.py")
needs_reference = pytest.mark.skipif(not os.path.exists(REFERENCE_CKPT), reason="reference checkpoint not present")


def _check_state(model, tmp_path) -> subprocess.CompletedProcess:
    out = tmp_path / "state.safetensors"
    atomic_save_safetensors(model.state_dict(), str(out))
    return subprocess.run([sys.executable, CHECKER, "--ref", REFERENCE_JSON, "--state", str(out)],
                          capture_output=True, text=True)


@needs_reference
def test_reference_resnet18_handmade_graph(tmp_path):
    """The reference's numbers for resnet18 (CIFAR recipe), from a graph written down by hand."""
    ghn = GHN.load(REFERENCE_CKPT)
    model = small_input_resnet18()
    graph = resnet18_small_graph(model)
    assert (graph.num_nodes, graph.num_real_edges, graph.num_virtual_edges) == (52, 59, 1243)
    torch.manual_seed(0)
    model, report = ghn(model, graph=graph, return_report=True)
    assert report.complete and len(report.predicted) == 62
    res = _check_state(model, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "tensors=62/62" in res.stdout


@needs_reference
def test_reference_resnet18_built_graph(tmp_path):
    """Same, end to end: graph from ``archspace.to_graph`` and ``adapt_small_input``."""
    archspace = pytest.importorskip("archspace")
    torchvision = pytest.importorskip("torchvision")
    try:
        model = archspace.adapt_small_input(torchvision.models.resnet18(num_classes=10))
    except AttributeError:
        pytest.skip("archspace.adapt_small_input not available")
    ghn = GHN.load(REFERENCE_CKPT)
    torch.manual_seed(0)
    model, report = ghn(model, return_report=True)
    assert report.complete
    res = _check_state(model, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize("config", [
    {},  # GHN-2
    {"ve": False, "layernorm": False, "weight_norm": False},  # GHN-1
    {"hypernet": "mlp"},  # MLP baseline
    {"decoder": "mlp", "max_shape": (16, 16, 5, 5)},
])
def test_matches_oracle_on_awkward_shapes(config):
    """Every parameter of OddNet (odd channels, 13x13 kernel, 3-D tensors, attention...) equals the plain oracle."""
    torch.manual_seed(0)
    ghn = GHN(**config).eval()
    model = OddNet()
    graph = odd_graph(model)
    with torch.no_grad():
        fast = ghn.predict_parameters(Batch.from_data_list([graph]), [model])[0]
        slow = reference_predict(ghn, graph, model)
    params = dict(model.named_parameters())
    assert set(fast) == set(params) == set(slow)
    for name, p in params.items():
        assert fast[name].shape == p.shape, name
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_in_place_equals_functional():
    torch.manual_seed(0)
    ghn = GHN().eval()
    model = OddNet()
    graph = odd_graph(model)
    with torch.no_grad():
        expected = ghn.predict_parameters(graph, [model])[0]
    model, report = ghn(model, graph=graph, bn_mode="keep", return_report=True)
    assert report.complete and report.num_params_predicted == report.num_params_total
    assert "c2.weight" in report.tiled and "c8.weight" in report.tiled and "c1.weight" not in report.tiled
    for name, p in model.named_parameters():  # equal up to float rounding (thread counts may differ)
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_call_returns_the_model_and_report_on_request():
    """``model = ghn(model)`` is the plain call; the report comes with ``return_report=True``."""
    torch.manual_seed(0)
    ghn = GHN().eval()
    model = OddNet()
    graph = odd_graph(model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    out = ghn(model, graph=graph, bn_mode="keep")
    assert out is model
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    again, report = ghn.predict(model, graph=graph, bn_mode="keep", return_report=True)
    assert again is model and report.complete


def test_every_ghn_parameter_gets_a_gradient():
    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 5, 5), hidden_dim=16)
    models = [TinyResNet(8), TinyResNet(20)]
    batch = Batch.from_data_list([tiny_resnet_graph(m) for m in models])
    params = ghn.predict_parameters(batch, models)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    loss = sum(torch.nn.functional.cross_entropy(torch.func.functional_call(m, p, (x,)), y)
               for m, p in zip(models, params))
    loss.backward()
    for name, p in ghn.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_batch_equals_one_by_one():
    torch.manual_seed(0)
    ghn = GHN().eval()
    models = [TinyResNet(8), OddNet(), TinyResNet(70)]
    graphs = [tiny_resnet_graph(models[0]), odd_graph(models[1]), tiny_resnet_graph(models[2])]
    with torch.no_grad():
        together = ghn.predict_parameters(Batch.from_data_list(graphs), models)
        for g, m, got in zip(graphs, models, together):
            alone = ghn.predict_parameters(g, [m])[0]
            for name in alone:
                torch.testing.assert_close(got[name], alone[name], rtol=1e-5, atol=1e-6)


def test_node_embeddings_shape():
    ghn = GHN(hidden_dim=16)
    model = TinyResNet()
    assert ghn.node_embeddings(tiny_resnet_graph(model)).shape == (11, 16)


def test_graph_model_mismatch_is_reported():
    ghn = GHN(hidden_dim=16)
    with pytest.raises(KeyError, match="no such parameter"):
        ghn.predict_parameters(tiny_resnet_graph(TinyResNet()), [OddNet()])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hypernet"):
        GHN(hypernet="transformer")
    with pytest.raises(ValueError, match="decoder"):
        GHN(decoder="rnn")
    with pytest.raises(ValueError, match="max_shape"):
        GHN(max_shape=(64, 64, 11))


@pytest.mark.parametrize("config, count", [({}, 1_620_764),
                                           ({"max_shape": (64, 64, 16, 16), "num_classes": 1000}, 2_319_720)])
def test_released_configurations_have_reference_sizes(config, count):
    assert sum(p.numel() for p in GHN(**config).parameters()) == count
