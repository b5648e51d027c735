"""torchvision ResNets at any width: every channel count scaled by ``width / 64``.

Width is the dimension that muP and muTransfer vary (Yang, Hu et al., 2022, "Tensor Programs V", Sec. 3): the
same architecture at widths 8, 16, ..., 128 (torchvision's own ResNets are width 64). The model is torchvision's
:class:`~torchvision.models.resnet.ResNet` class with its blocks, layer layout, initialisation and forward
unchanged; only the stem's output channels, each stage's ``planes`` (``w, 2w, 4w, 8w``) and the classifier's fan-in
follow ``width``. Build one by spec with ``archspace.resnet_width:resnet18`` etc., or in Python with
:func:`resnet_at_width`.
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet as tv_resnet

#: torchvision ResNet depths: block class and blocks per stage (as torchvision's builders).
LAYOUTS = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    "resnet101": (tv_resnet.Bottleneck, (3, 4, 23, 3)),
    "resnet152": (tv_resnet.Bottleneck, (3, 8, 36, 3)),
}
TORCHVISION_WIDTH = 64


class WidthResNet(tv_resnet.ResNet):
    """torchvision's ResNet with base width ``width`` instead of 64 (stages ``w, 2w, 4w, 8w`` planes).

    torchvision builds the stem at 64 channels before its first stage; the first call of :meth:`_make_layer`
    rebuilds the stem at ``width`` (before torchvision's initialisation loop runs, so it gets the same init), and
    the classifier is rebuilt at the new fan-in (torchvision leaves it at ``nn.Linear``'s default init too).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (4 ints).
        width: base number of channels (64: torchvision's ResNet, parameter for parameter).
        num_classes: classifier outputs.

    Raises:
        ValueError: ``width`` < 1.

    Shapes:
        ``(B, 3, H, W) -> (B, num_classes)``
    """

    def __init__(self, block, layers, width: int = TORCHVISION_WIDTH, num_classes: int = 1000, **kwargs):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self._width = int(width)  # read by _make_layer during super().__init__
        self._stem_done = False
        super().__init__(block, list(layers), num_classes=num_classes, **kwargs)
        self.fc = nn.Linear(8 * self._width * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if not self._stem_done:  # first stage: the stem was built at 64 channels, rebuild it at the width
            self._stem_done = True
            self.inplanes = self._width
            self.conv1 = nn.Conv2d(3, self._width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(self._width)
        return super()._make_layer(block, planes * self._width // TORCHVISION_WIDTH, blocks, stride, dilate)


def resnet_at_width(name: str = "resnet18", width: int = TORCHVISION_WIDTH, num_classes: int = 1000
                    ) -> WidthResNet:
    """torchvision's ResNet ``name`` at base width ``width`` (:class:`WidthResNet`).

    Args:
        name: a key of :data:`LAYOUTS`.
        width: base number of channels (stages ``w, 2w, 4w, 8w``; torchvision's is 64).
        num_classes: classifier outputs.

    Raises:
        ValueError: an unknown ``name`` or ``width`` < 1.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {', '.join(LAYOUTS)}")
    block, layers = LAYOUTS[name]
    return WidthResNet(block, layers, width=width, num_classes=num_classes)


def resnet18(num_classes: int = 1000, width: int = TORCHVISION_WIDTH) -> WidthResNet:
    """ResNet-18 at base width ``width``."""
    return resnet_at_width("resnet18", width, num_classes)


def resnet34(num_classes: int = 1000, width: int = TORCHVISION_WIDTH) -> WidthResNet:
    """ResNet-34 at base width ``width``."""
    return resnet_at_width("resnet34", width, num_classes)


def resnet50(num_classes: int = 1000, width: int = TORCHVISION_WIDTH) -> WidthResNet:
    """ResNet-50 at base width ``width``."""
    return resnet_at_width("resnet50", width, num_classes)
