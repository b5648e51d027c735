"""Model specs of the command lines."""

import pytest
import torch.nn as nn

from archspace.models import ModelSpecError, load_model


def test_torchvision_spec_with_classes_and_small_input():
    model = load_model("torchvision:resnet18", num_classes=10, small_input=True)
    assert model.fc.out_features == 10 and isinstance(model.maxpool, nn.Identity)


def test_callable_spec():
    model = load_model("torchvision.models:resnet18")
    assert isinstance(model, nn.Module)


@pytest.mark.parametrize("spec, match", [
    ("resnet18", "torchvision:NAME"),
    ("torchvision:resnet1", "resnet18"),
    ("torchvision:", "nothing after"),
    ("deepnets:test", "SPLIT/INDEX"),
    ("no_such_module_xyz:f", "cannot import"),
    ("torchvision.models:no_such_fn", "no callable"),
])
def test_bad_specs_explain_the_spelling(spec, match):
    with pytest.raises(ModelSpecError, match=match):
        load_model(spec)
