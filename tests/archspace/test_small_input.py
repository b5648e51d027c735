"""``adapt_small_input``: the reference's CIFAR recipe (ppuda ``adjust_net(net, large_input=False)``)."""

import pytest
import torch
import torch.nn as nn
import torchvision

from archspace import adapt_small_input


def test_resnet_gets_a_cropped_3x3_stride1_stem_and_no_maxpool():
    model = torchvision.models.resnet18(num_classes=10)
    original = model.conv1.weight.detach().clone()  # (64, 3, 7, 7)
    out = adapt_small_input(model)
    assert out is model and model.expected_input_sz == 32
    conv = model.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert torch.equal(conv.weight, original[:, :, 2:5, 2:5])  # the centre of the 7x7 kernel
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)


def test_densenet_stem():
    model = adapt_small_input(torchvision.models.densenet121())
    assert model.features[0].kernel_size == (3, 3) and model.features[0].stride == (1, 1)
    assert isinstance(model.features[3], nn.Identity)


def test_vgg_loses_early_maxpools_only():
    with torch.device("meta"):  # no need to initialise the 4096-wide classifier
        model = adapt_small_input(torchvision.models.vgg11_bn())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.features[:10])
    assert any(isinstance(m, nn.MaxPool2d) for m in model.features[10:])


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_mobilenet_early_strides_are_one(name):
    model = torchvision.models.get_model(name)
    later = [m.stride for m in model.features[5:].modules() if isinstance(m, nn.Conv2d)]
    adapt_small_input(model)
    assert all(m.stride == (1, 1) for m in model.features[:5].modules() if isinstance(m, nn.Conv2d))
    assert [m.stride for m in model.features[5:].modules() if isinstance(m, nn.Conv2d)] == later


def test_unsupported_family_is_a_clear_error():
    with pytest.raises(ValueError, match="no small-input recipe for VisionTransformer.*ResNet"):
        with torch.device("meta"):
            adapt_small_input(torchvision.models.vit_b_16())
    with pytest.raises(TypeError):
        adapt_small_input("resnet18")
