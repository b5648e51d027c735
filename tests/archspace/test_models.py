"""Model specs: the one parser (check_spec, load_model) and its "did you mean" (suggest)."""

import sys

import pytest
import torch.nn as nn

from archspace.cli import main
from archspace.errors import UsageError, suggest
from archspace.models import ModelSpec, ModelSpecError, check_spec, load_model
from archspace.network import Network


def test_torchvision_spec_with_classes_and_small_input():
    model = load_model("torchvision:resnet18", num_classes=10, small_input=True)
    assert model.fc.out_features == 10 and isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.expected_input_sz == 32


def test_callable_spec_receives_num_classes():
    model = load_model("torchvision.models:resnet18", num_classes=7)
    assert model.fc.out_features == 7


def test_deepnets_spec_with_width_and_image_size():
    model = load_model("deepnets:test/3", num_classes=5, image_size=32, width=16)
    assert isinstance(model, Network) and model.plan.C == 16 and model.plan.num_classes == 5
    assert model.expected_input_sz == 32


def test_check_spec_parses_without_building():
    assert check_spec("torchvision:resnet50") == ModelSpec("torchvision", "resnet50")
    assert check_spec("deepnets:test/499") == ModelSpec("deepnets", "test", index=499)
    assert check_spec("torchvision.models:resnet18") == ModelSpec("callable", "torchvision.models", attr="resnet18")


@pytest.mark.parametrize("spec, message", [
    ("resnet18", "cannot parse model 'resnet18'.*did you mean torchvision:resnet18"),
    ("torchvision:resnet1", "unknown torchvision model 'resnet1'; did you mean resnet18"),
    ("torchvision:ResNet50", "did you mean resnet50"),  # case is ignored when matching
    ("torchvision:qqqqqq", "list the names with"),  # nothing close: where to find the names
    ("torchvision:", "nothing after"),
    ("deepnets:test", "expected deepnets:SPLIT/INDEX with an index 0-499"),
    ("deepnets:test/500", "index 500 is out of range; split 'test' has nets 0-499"),
    ("deepnets:tset/1", "unknown DeepNets-1M split 'tset'; did you mean test"),
    ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    ("torchvison:resnet18", "cannot import 'torchvison'.*did you mean torchvision"),
    ("torchvision.models:resnet81", "torchvision.models has no callable 'resnet81'; did you mean resnet18"),
    ("a-b:c", "cannot parse model 'a-b:c'"),
])
def test_bad_specs_explain_the_spelling(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        check_spec(spec)
    with pytest.raises(ModelSpecError, match=message):
        load_model(spec)


def test_spec_errors_are_usage_errors():
    assert issubclass(ModelSpecError, UsageError) and issubclass(ModelSpecError, ValueError)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_classes": -1}, {"image_size": 0}, {"width": -8},
                                    {"num_classes": True}])
def test_non_positive_sizes_are_refused(kwargs):
    with pytest.raises(ModelSpecError, match="must be a positive integer"):
        load_model("deepnets:test/0", **kwargs)


def test_callable_that_returns_no_module():
    with pytest.raises(ModelSpecError, match="returned str, not an nn.Module"):
        load_model("os:getcwd")


def test_suggest():
    names = ["resnet18", "resnet50", "vgg11", "alexnet"]
    assert suggest("resnet19", names) == "; did you mean resnet18, resnet50?"
    assert suggest("VGG11", names) == "; did you mean vgg11?"
    assert suggest("resnet19", names, prefix="tv:") == "; did you mean tv:resnet18, tv:resnet50?"
    assert suggest("zzz", names) == "; choose one of alexnet, resnet18, resnet50, vgg11"
    assert suggest("zzz", names, listing="see --help") == "; see --help"
    assert suggest("zzz", [f"net{i:02d}" for i in range(20)]) == ""  # too many to list, none close


def test_timm_spec_without_timm_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed: importing it fails
    message = r"timm:convnext_atto needs timm: pip install 'ghn-archspace\[timm\]'"
    with pytest.raises(ModelSpecError, match=message):
        check_spec("timm:convnext_atto")
    with pytest.raises(ModelSpecError, match=message):
        load_model("timm:convnext_atto")
    assert main(["graph", "timm:convnext_atto"]) == 2
    assert capsys.readouterr().err.strip() == ("archspace: error: timm:convnext_atto needs timm: "
                                               "pip install 'ghn-archspace[timm]'")


def test_lenet_300_100_by_spec_gets_the_image_size():
    import torch

    model = load_model("archspace.mlp:lenet_300_100", num_classes=7, image_size=8)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 7)
    widths = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(192, 300), (300, 100), (100, 7)]
    assert load_model("archspace.mlp:lenet_300_100").layers[1].in_features == 3 * 16 * 16  # its default size
