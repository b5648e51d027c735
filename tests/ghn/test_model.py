"""GHN: reference compatibility, agreement with the node-by-node oracle on awkward shapes, gradients, variants."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch_geometric.data import Batch

import archspace
from archspace.errors import UsageError
from ghn import GHN, ClassMismatchError, InputSizeError
from ghn.checkpoint import atomic_save_safetensors

from .conftest import REFERENCE_CHECKER, REFERENCE_CKPT, REFERENCE_JSON, needs_reference
from .handmade import make_graph, resnet18_small_graph, small_input_resnet18
from .nets import FlatNet, OddNet, TinyResNet, odd_graph, tiny_resnet_graph
from .oracle import reference_predict


def check_state(model, tmp_path) -> subprocess.CompletedProcess:
    """Run the reference's ``check_state.py`` on the model's state dict."""
    out = tmp_path / "state.safetensors"
    atomic_save_safetensors(model.state_dict(), str(out))
    return subprocess.run([sys.executable, REFERENCE_CHECKER, "--ref", REFERENCE_JSON, "--state", str(out)],
                          capture_output=True, text=True)


def state_of(model) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
    res = check_state(model, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "tensors=62/62" in res.stdout


@needs_reference
def test_reference_resnet18_built_graph(tmp_path):
    """Same, end to end: graph from ``archspace.to_graph`` and ``adapt_small_input``."""
    import torchvision

    model = archspace.adapt_small_input(torchvision.models.resnet18(num_classes=10))
    ghn = GHN.load(REFERENCE_CKPT)
    torch.manual_seed(0)
    model, report = ghn(model, return_report=True)
    assert report.complete
    res = check_state(model, tmp_path)
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
    model, report = ghn(model, graph=graph, bn_mode="running", return_report=True)
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
    out = ghn(model, graph=graph, bn_mode="running")
    assert out is model
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    again, report = ghn.predict(model, graph=graph, bn_mode="running", return_report=True)
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


def test_predicts_under_bfloat16_autocast():
    """``ghn-train``'s ``train.amp`` runs the GHN under bfloat16 autocast (on CUDA; CPU autocast stands in here):
    the GNN's message sums and the predicted parameters stay float32, close to the float32 prediction, and every
    GHN parameter still gets a gradient."""
    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 5, 5), hidden_dim=16)
    models = [TinyResNet(8), OddNet()]
    batch = Batch.from_data_list([tiny_resnet_graph(models[0]), odd_graph(models[1])])
    with torch.no_grad():
        exact = ghn.predict_parameters(batch, models)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = ghn.predict_parameters(batch, models)
    for want, got in zip(exact, params):
        assert want.keys() == got.keys()
        for name in want:  # assert_close also checks the dtype (float32); bfloat16 keeps an 8-bit mantissa
            scale = want[name].abs().max().item() + 1e-6
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0.05 * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")
    sum(p.square().sum() for net in params for p in net.values()).backward()
    assert all(p.grad is not None for p in ghn.parameters())


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


@pytest.mark.parametrize("kwargs, message", [
    ({"hypernet": "transformer"}, "hypernet must be 'gatedgnn' or 'mlp', got 'transformer'"),
    ({"decoder": "rnn"}, "decoder must be 'conv' or 'mlp', got 'rnn'"),
    ({"max_shape": (64, 64, 11)},
     r"max_shape must be 4 positive integers \(S_out, S_in, S_h, S_w\), got \(64, 64, 11\)"),
    ({"max_shape": (64, 0, 11, 11)}, "each max_shape entry must be an integer >= 1, got 0"),
    ({"max_shape": (64, 64, 11, 9)}, "square kernel"),
    ({"hidden_dim": -8}, "hidden_dim must be an integer >= 4, got -8"),
    ({"hidden_dim": 30}, "hidden_dim must be divisible by 4"),
    ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
    ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
    ({"num_steps": 0}, "num_steps must be an integer >= 1, got 0"),
    ({"image_size": -32}, "image_size must be an integer >= 1, got -32"),
    ({"ve": "no"}, "ve must be true or false, got 'no'"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message):
        GHN(**kwargs)


@pytest.mark.parametrize("config, count", [({}, 1_620_764),
                                           ({"max_shape": (64, 64, 16, 16), "num_classes": 1000}, 2_319_720)])
def test_released_configurations_have_reference_sizes(config, count):
    assert sum(p.numel() for p in GHN(**config).parameters()) == count


def test_node_shapes_4d_follow_the_reference_rule():
    """The 4-D shape each node is embedded with (the rule of the reference's ``tensor_shape_to_4d``)."""
    model = OddNet()
    graph = odd_graph(model)
    shapes = dict(zip(graph.node_names, GHN(hidden_dim=8)._node_shapes_4d(graph).tolist()))
    assert shapes["c1"] == [5, 3, 3, 3]  # 4-D as is
    assert shapes["c4"] == [11, 10, 1, 3]
    assert shapes["b1"] == [5, 1, 1, 1]  # 1-D (c,) -> (c, 1, 1, 1)
    assert shapes["fc"] == [10, 70, 1, 1]  # 2-D (a, b) -> (a, b, 1, 1)
    assert shapes["rpb"] == [169, 3, 1, 1]
    assert shapes["pos"] == [1, 24, 14, 14]  # positional encoding (1, 197, 24) -> (1, 24, 14, 14)
    assert shapes["cls_tok"] == [1, 1, 24, 1]  # (1, 1, 24): not a positional-encoding shape -> (a, b, c, 1)
    assert shapes["scale"] == [70, 1, 1, 1]  # layer scale (70, 1, 1)
    assert shapes["input"] == [0, 0, 0, 0] and shapes["gap"] == [0, 0, 0, 0]  # no parameter


def test_node_shapes_4d_keep_pooling_kernels_and_cut_5d():
    """Parameter-free rows pass through (a pooling kernel is embedded as a shape); a 5-D weight keeps 4 dims."""
    model = nn.Module()
    model.w5 = nn.Parameter(torch.zeros(4, 3, 2, 5, 6))
    graph = make_graph([("input", "input", ()), ("pool", "max_pool", ()), ("w5", "conv", ("w5",))], [(0, 1), (1, 2)],
                       model)
    graph.param_shape[1] = torch.tensor([1, 1, 3, 3])  # as archspace.to_graph records a 3x3 pooling node
    assert GHN(hidden_dim=8)._node_shapes_4d(graph).tolist() == [[0, 0, 0, 0], [1, 1, 3, 3], [4, 3, 2, 5]]


def other_graph(model):
    """The graph of a TinyResNet of another width: same names, other shapes."""
    return tiny_resnet_graph(TinyResNet(16))


def missing_graph(model):
    """A graph binding a parameter the model does not have."""
    return odd_graph(OddNet())


# (keyword arguments of predict, error type, message)
BAD_CALLS = {
    "bn_mode keep": ({"bn_mode": "keep"}, UsageError, "bn_mode must be one of batch, running, got 'keep'"),
    "bn_mode reset": ({"bn_mode": "reset"}, UsageError, "bn_mode must be one of batch, running, got 'reset'"),
    "input_size 0": ({"input_size": 0}, InputSizeError, "input_size must be positive, got 0"),
    "input_size text": ({"input_size": "big"}, InputSizeError, "input_size must be an int H"),
    "threads 0": ({"threads": 0}, UsageError, "threads must be an integer >= 1, got 0"),
    "graph of another width": ({"graph": other_graph}, UsageError,
                               r"the graph does not match the model: node 1 \(stem\) records shape \(16, 3, 3, 3\)"),
    "graph of another model": ({"graph": missing_graph}, UsageError,
                               r"the graph does not match the model: node 1 \(c1\) binds 'c1.weight'"),
    "other number of classes": ({"classes": 5}, ClassMismatchError,
                                r"trained for 10 classes but the model's classifier \(fc.weight, fc.bias\) has 5 "
                                r"outputs.*keep_classifier_init=True \(--keep-classifier-init\)"),
    "input size the forward fails at": ({"model": FlatNet, "input_size": 16}, InputSizeError,
                                        r"FlatNet does not run at input size 16 \(RuntimeError: .*\); "
                                        "try input size 8, the size the model declares"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_change_nothing(case):
    """Every argument is checked before a parameter is written: the model stays bit-identical."""
    kwargs, error, message = dict(BAD_CALLS[case][0]), BAD_CALLS[case][1], BAD_CALLS[case][2]
    torch.manual_seed(0)
    model = kwargs.pop("model", TinyResNet)(num_classes=kwargs.pop("classes", 10))
    if "graph" in kwargs:
        kwargs["graph"] = kwargs["graph"](model)
    before = state_of(model)
    ghn = GHN(max_shape=(16, 16, 3, 3), hidden_dim=8)
    with pytest.raises(error, match=message):
        ghn.predict(model, **kwargs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), f"{name} changed"


def test_input_size_error_suggests_224_without_a_declared_size():
    model = FlatNet()
    del model.expected_input_sz
    with pytest.raises(InputSizeError, match="FlatNet does not run at input size 32 .*; try input size 224$"):
        GHN(hidden_dim=8).predict(model)


def test_default_input_size_is_the_models_declared_one():
    """FlatNet runs only at 8x8 and declares it; the GHN was trained at 32: the declared size wins."""
    model = FlatNet()
    _, report = GHN(hidden_dim=8, image_size=32).predict(model, return_report=True)
    assert report.complete


def test_keep_classifier_init_predicts_all_but_the_classifier():
    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 3, 3), hidden_dim=8).eval()  # 10 classes
    model = TinyResNet(num_classes=5)
    graph = tiny_resnet_graph(model)
    before = state_of(model)
    # The other layers get what the same net with the GHN's 10 classes gets: the classifier is embedded with the
    # GHN's class count (ppuda's ShapeEncoder with predict_class_layers=False), not the model's 5.
    ten = TinyResNet(num_classes=10)
    with torch.no_grad():
        expected = ghn.predict_parameters(tiny_resnet_graph(ten), [ten])[0]
        five = ghn.predict_parameters(graph, [model])[0]
    assert not torch.equal(five["conv1.weight"], expected["conv1.weight"])  # the class count reaches every node
    model, report = ghn.predict(model, graph=graph, keep_classifier_init=True, return_report=True)
    assert report.kept_init == ["fc.weight", "fc.bias"] and not report.complete and report.untouched == []
    assert "2 kept at their initial values (classifier)" in report.summary()
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert torch.equal(p, before[name]), f"{name} was overwritten"
        else:
            torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6, msg=name)
            assert not torch.equal(p, before[name]), f"{name} was not predicted"


def test_bn_modes_of_predict():
    ghn = GHN(max_shape=(16, 16, 3, 3), hidden_dim=8)
    model = ghn.predict(TinyResNet(), bn_mode="running")
    assert torch.equal(model.bn.running_mean, torch.zeros(8)) and "bn.running_var" in model.state_dict()
    model = ghn.predict(TinyResNet(), bn_mode="batch")
    assert model.bn.running_mean is None and "bn.running_mean" not in model.state_dict()
