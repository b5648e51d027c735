"""Multilayer perceptrons on flattened images: LeNet-300-100 (LeCun et al., 1998), the first network of the lottery
ticket paper (Frankle & Carbin, ICLR 2019, Sec. 2, Fig. 3), and the same shape at any hidden width.

Build one by spec: ``archspace.mlp:lenet_300_100`` (hidden layers 300 and 100) or ``archspace.mlp:mlp`` (hidden
layers 300 and 100 by default, ``hidden=`` in Python). :func:`archspace.models.load_model` passes ``num_classes``
and ``image_size``; the input is ``3 x image_size x image_size`` values (the project's image tasks are RGB).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class MLP(nn.Module):
    """Flatten, then fully connected layers with ReLU between them; the last layer is the classifier.

    Args:
        num_classes: outputs of the classifier.
        image_size: side of the square input images.
        hidden: widths of the hidden layers, input to output (e.g. ``(300, 100)``).
        in_channels: image channels.

    Shapes:
        input ``(B, in_channels, image_size, image_size)``, output ``(B, num_classes)``.

    Raises:
        ValueError: a non-positive size or width.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 16, hidden: Sequence[int] = (300, 100),
                 in_channels: int = 3):
        super().__init__()
        sizes = [num_classes, image_size, in_channels, *hidden]
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"num_classes, image_size, in_channels and hidden widths must be >= 1, got "
                             f"num_classes={num_classes}, image_size={image_size}, in_channels={in_channels}, "
                             f"hidden={tuple(hidden)}")
        widths = [in_channels * image_size * image_size, *map(int, hidden)]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)
        self.expected_input_sz = image_size  # the input size to trace its graph at (as DeepNets-1M nets declare)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def mlp(num_classes: int = 10, image_size: int = 16, hidden: Sequence[int] = (300, 100)) -> MLP:
    """An :class:`MLP` on RGB images of ``image_size`` with the given hidden widths."""
    return MLP(num_classes=num_classes, image_size=image_size, hidden=hidden)


def lenet_300_100(num_classes: int = 10, image_size: int = 16) -> MLP:
    """LeNet-300-100: hidden layers of 300 and 100 units (Frankle & Carbin, ICLR 2019, Fig. 2)."""
    return MLP(num_classes=num_classes, image_size=image_size, hidden=(300, 100))
