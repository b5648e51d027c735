"""torchvision ResNets at any width (archspace.resnet_width)."""

import pytest
import torch
import torchvision

from archspace.resnet_width import resnet18, resnet50, resnet_at_width


def test_width_64_is_torchvision_resnet18_parameter_for_parameter():
    ours, theirs = resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]


@pytest.mark.parametrize("width", [4, 16])
def test_every_channel_count_follows_the_width(width):
    net = resnet18(num_classes=7, width=width)
    assert net.conv1.out_channels == width and net.bn1.num_features == width
    assert [getattr(net, f"layer{k}")[0].conv1.out_channels for k in range(1, 5)] == [width, 2 * width, 4 * width,
                                                                                        8 * width]
    assert (net.fc.in_features, net.fc.out_features) == (8 * width, 7)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_bottleneck_width_and_init():
    net = resnet50(num_classes=10, width=8)
    assert net.fc.in_features == 8 * 8 * 4
    # torchvision's initialisation reaches the rebuilt stem: BN weights 1, conv weights kaiming (fan_out, relu)
    assert torch.all(net.bn1.weight == 1)
    fan_out = net.conv1.weight.shape[0] * 7 * 7
    assert abs(net.conv1.weight.std().item() - (2 / fan_out) ** 0.5) < 0.3 * (2 / fan_out) ** 0.5


def test_bad_name_and_width():
    with pytest.raises(ValueError, match="unknown ResNet"):
        resnet_at_width("resnet7", 8)
    with pytest.raises(ValueError, match="width must be >= 1"):
        resnet_at_width("resnet18", 0)
