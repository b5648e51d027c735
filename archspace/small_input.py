"""``adapt_small_input``: the CIFAR recipe that makes ImageNet architectures work on 32x32 images.

GHN-2 evaluates torchvision networks on CIFAR-10 after shrinking their early downsampling (Knyazev et al., NeurIPS
2021, Sec. 5; reference ``ppuda/utils/utils.py``, ``adjust_net`` with ``large_input=False``): ResNet/DenseNet get a
3x3 stride-1 stem (the centre of the 7x7 kernel, padding 1) and lose the stem max-pool; VGG loses the max-pools
among ``features[:10]``; MobileNet V2/V3 get stride 1 in ``features[:5]``; and the same recipe's variants for
AlexNet, MNASNet, ShuffleNetV2, GoogLeNet and ConvNeXt. The model records ``expected_input_sz = 32``, which
:func:`archspace.to_graph` uses as its default input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision import models as tvm

from .errors import UsageError


def _centre_crop_stem(conv: nn.Conv2d, kernel: int = 3) -> None:
    """Make ``conv`` a ``kernel x kernel`` stride-1 conv whose weight is the centre of its current kernel."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected the stem to be an nn.Conv2d, got {type(conv).__name__}")
    kh, kw = conv.weight.shape[2:]
    if kh < kernel or kw < kernel:
        raise ValueError(f"cannot crop a {kh}x{kw} stem kernel to {kernel}x{kernel}")
    top, left = (kh - kernel) // 2, (kw - kernel) // 2
    with torch.no_grad():
        conv.weight.data = conv.weight.data[:, :, top: top + kernel, left: left + kernel].contiguous()
    conv.kernel_size = (kernel, kernel)
    conv.padding = (kernel // 2, kernel // 2)
    conv.stride = (1, 1)


def _stride_one(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)


def _adapt_resnet(net: tvm.ResNet) -> None:
    _centre_crop_stem(net.conv1)
    net.maxpool = nn.Identity()


def _adapt_densenet(net: tvm.DenseNet) -> None:
    _centre_crop_stem(net.features[0])
    if not isinstance(net.features[3], nn.MaxPool2d):
        raise ValueError(f"expected DenseNet features[3] to be the stem max-pool, got {type(net.features[3]).__name__}")
    net.features[3] = nn.Identity()


def _adapt_mobilenet(net: nn.Module) -> None:
    for m in net.features[:5]:
        _stride_one(m)


def _adapt_vgg(net: tvm.VGG) -> None:
    for i, m in enumerate(net.features[:10]):
        if isinstance(m, nn.MaxPool2d):
            net.features[i] = nn.Identity()


def _adapt_alexnet(net: tvm.AlexNet) -> None:
    net.features[0].stride = (1, 1)
    net.features[2] = nn.Identity()


def _adapt_mnasnet(net: tvm.MNASNet) -> None:
    net.layers[0].stride = (1, 1)


def _adapt_shufflenet(net: tvm.ShuffleNetV2) -> None:
    _stride_one(net.conv1)
    net.maxpool = nn.Identity()


def _adapt_googlenet(net: tvm.GoogLeNet) -> None:
    _stride_one(net.conv1)
    net.maxpool1 = nn.Identity()


def _adapt_convnext(net: tvm.ConvNeXt) -> None:
    stem = next(iter(net.features[0].children()))
    stem.stride = (1, 1)


#: Model family -> in-place adaptation; a plain dict so that adding a family is one line.
ADAPTERS = {
    tvm.ResNet: _adapt_resnet,
    tvm.DenseNet: _adapt_densenet,
    tvm.MobileNetV2: _adapt_mobilenet,
    tvm.MobileNetV3: _adapt_mobilenet,
    tvm.VGG: _adapt_vgg,
    tvm.AlexNet: _adapt_alexnet,
    tvm.MNASNet: _adapt_mnasnet,
    tvm.ShuffleNetV2: _adapt_shufflenet,
    tvm.GoogLeNet: _adapt_googlenet,
    tvm.ConvNeXt: _adapt_convnext,
}


def adapt_small_input(model: nn.Module) -> nn.Module:
    """Adapt an ImageNet torchvision model to 32x32 inputs, in place (the reference's CIFAR recipe; Knyazev et
    al., NeurIPS 2021, Sec. 5; ``ppuda.utils.adjust_net(net, large_input=False)``).

    Args:
        model: a torchvision ResNet (incl. Wide ResNet / ResNeXt), DenseNet, MobileNetV2/V3, VGG, AlexNet, MNASNet,
            ShuffleNetV2, GoogLeNet or ConvNeXt.

    Returns:
        The same model, modified in place, with ``expected_input_sz = 32``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        UsageError: (a ``ValueError``) the family has no recipe; the message lists the supported ones.
        ValueError: a supported family with an unexpected layout.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"adapt_small_input expects an nn.Module, got {type(model).__name__}")
    adapter = next((fn for cls, fn in ADAPTERS.items() if isinstance(model, cls)), None)
    if adapter is None:
        families = ", ".join(cls.__name__ for cls in ADAPTERS)
        raise UsageError(f"adapt_small_input has no small-input recipe for {type(model).__name__}; supported "
                         f"families: {families}")
    adapter(model)
    model.expected_input_sz = 32
    return model
