"""timm models (PyTorch Image Models) as a model source: ``timm:NAME`` specs, and graphs of CNNs, ViTs, hybrids
and MLP-mixers that bind every parameter and show their attention as ``msa`` nodes. Skipped without timm."""

import json
import warnings

import pytest
import torch

from archspace import to_graph
from archspace.cli import main
from archspace.models import ModelSpecError, check_spec, load_model
from archspace.primitives import PRIMITIVES

from .graph_checks import assert_all_bound, assert_valid, real_edges

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'ghn-archspace[timm]')")

#: name -> number of msa nodes (None: not checked). A fixed list across families; small configurations.
MODELS = {
    # CNNs
    "resnet50d": 0,
    "efficientnet_b0": 0,
    "regnety_002": 0,
    "repvgg_a0": 0,
    "convnext_atto": 0,  # layer-scale gamma
    "fastvit_t8": 0,  # LayerScale2d gamma
    "nf_regnet_b0": 0,  # weight-standardisation gain
    "inception_next_atto": 0,
    # ViTs
    "vit_tiny_patch16_224": 12,  # fused attention, cls token, position embedding
    "deit_tiny_distilled_patch16_224": 12,  # two tokens, two heads
    "swin_tiny_patch4_window7_224": 12,  # explicit attention with relative-position bias tables
    "levit_128s": 11,  # attention biases (cached in eval mode)
    "xcit_nano_12_p8_224": 14,  # 12 cross-covariance attentions with a temperature, 2 class attentions
    "eva02_tiny_patch14_224": 12,
    "cait_xxs24_224": None,  # talking-heads attention mixes heads with linear layers between q k^T and softmax
    # hybrids
    "coat_lite_tiny": None,  # factorised attention: no softmax(q k^T)
    "mobilevit_xxs": 9,
    "efficientvit_b0": 0,  # ReLU linear attention
    "efficientformer_l1": 1,
    "convit_tiny": 12,  # gated positional self-attention
    "tiny_vit_5m_224": 10,
    # MLP-mixers
    "mixer_s16_224": 0,
    "resmlp_12_224": 0,  # affine alpha/beta and layer scales
    "gmlp_s16_224": 0,
}


def meta_timm(name):
    """A timm model built on the meta device (no weight initialisation) and its declared input size."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return model, tuple(model.pretrained_cfg["input_size"])


def msa_nodes(graph):
    return [i for i in range(graph.num_nodes) if PRIMITIVES[int(graph.op_type[i])] == "msa"]


@pytest.mark.parametrize("name", list(MODELS))
def test_graph_binds_every_parameter(name):
    model, size = meta_timm(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unbound parameter, no fallback to real tensors
        warnings.filterwarnings("ignore", "to_graph: a layer is applied repeatedly")  # CoaT shares its conv encodings
        graph = to_graph(model, size)
    assert_valid(graph)
    assert_all_bound(model, graph)
    if MODELS[name] is not None:
        assert graph.op_counts().get("msa", 0) == MODELS[name]


@pytest.mark.parametrize("timm_name, torchvision_name", [("efficientnet_b0", "efficientnet_b0"),
                                                         ("mobilenetv3_large_100", "mobilenet_v3_large")])
def test_squeeze_excitation_is_one_cse_node_from_either_zoo(timm_name, torchvision_name):
    """timm's EfficientNet-family SE block gives the cse nodes torchvision's SqueezeExcitation gives (its pooling
    absorbed; one glob_avg, the head's)."""
    import torchvision

    model, size = meta_timm(timm_name)
    ours = to_graph(model, size).op_counts()
    with torch.device("meta"):
        ref = to_graph(getattr(torchvision.models, torchvision_name)(), 224).op_counts()
    assert ours["cse"] == ref["cse"] > 0 and ours["glob_avg"] == ref["glob_avg"] == 1


def test_vit_attention_sits_between_the_projections():
    model, size = meta_timm("vit_tiny_patch16_224")
    graph = to_graph(model, size)
    edges = real_edges(graph)
    for i in msa_nodes(graph):
        block = graph.node_names[i].split(".attn")[0]
        assert [graph.node_names[u] for u in edges[0, edges[1] == i].tolist()] == [f"{block}.attn.qkv.bias"]
        assert [graph.node_names[v] for v in edges[1, edges[0] == i].tolist()] == [f"{block}.attn.proj.weight"]


def test_swin_tables_and_levit_biases_are_bound_to_their_attention():
    model, size = meta_timm("swin_tiny_patch4_window7_224")
    graph = to_graph(model, size)
    assert [graph.param_names[i] for i in msa_nodes(graph)] == [
        (f"layers.{s}.blocks.{b}.attn.relative_position_bias_table",) for s, n in enumerate((2, 2, 6, 2))
        for b in range(n)]
    model, size = meta_timm("levit_128s")
    graph = to_graph(model, size)
    assert all(len(graph.param_names[i]) == 1 and graph.param_names[i][0].endswith("attention_biases")
               for i in msa_nodes(graph))


def test_levit_bias_cache_is_left_as_it_was():
    model, size = meta_timm("levit_128s")
    attn = model.stages[0].blocks[0].attn
    first, second = to_graph(model, size), to_graph(model, size)  # the second pass must not read a stale cache
    assert first.param_names == second.param_names
    assert attn.attention_bias_cache == {}


def test_timm_spec_builds_a_fresh_model_with_its_input_size(monkeypatch):
    calls = []
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or create(*a, **k))
    model = load_model("timm:fastvit_t8", num_classes=7)
    assert calls == [{"pretrained": False, "num_classes": 7}]  # never pretrained: nothing is downloaded
    assert model.head.fc.out_features == 7 and model.expected_input_sz == 256
    assert check_spec("timm:resnet50.a1_in1k").kind == "timm"  # a configuration's tag is accepted


def test_unknown_timm_name_gets_a_suggestion():
    with pytest.raises(ModelSpecError, match="unknown timm model 'convnxt_atto'; did you mean convnext_atto"):
        check_spec("timm:convnxt_atto")
    with pytest.raises(ModelSpecError, match="list the names with"):
        load_model("timm:qqqqqqqq")


@pytest.mark.parametrize("name, size", [("convnext_atto", 224), ("fastvit_t8", 256)])
def test_archspace_graph_reports_no_unbound_parameter(name, size, capsys):
    assert main(["graph", f"timm:{name}", "--json", "--num-classes", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["unbound_params"] == [] and summary["bound_params"] == summary["num_params"]
    assert summary["input_size"] == [1, 3, size, size]  # the size the model declares
