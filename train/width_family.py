"""Model families at any width: the unit of muP and muTransfer (Yang, Hu et al., 2022, "Tensor Programs V").

A family is one architecture whose hidden sizes all follow one number, its width; muP's base shapes compare the
family at two widths to find which dimensions grow (:mod:`train.mup_param`), and ``ghn tune`` trains it at several.
Three families are built in, each named by a ``MODEL`` spec:

- ``mlp``: an MLP on flattened images with two hidden layers of ``width`` units (:class:`archspace.mlp.MLP`);
  default widths 64 to 2048 (Tensor Programs V trains its MLPs at such widths).
- ``resnet18`` (also ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``; ``torchvision:`` may prefix them):
  torchvision's ResNet with every channel count scaled by ``width / 64`` (:mod:`archspace.resnet_width`), adapted
  to small images by the CIFAR recipe (:func:`archspace.adapt_small_input`); default widths 4 to 64.
- ``deepnets:SPLIT/INDEX``: a DeepNets-1M net with base width ``C = width`` (Knyazev et al., NeurIPS 2021);
  default widths 8 to 128. Nets with self-attention are refused (muP scales attention logits by ``1/d``, not the
  ``1/sqrt(d)`` of ``nn.MultiheadAttention``), and so are nets whose classifier has a hidden layer of fixed size
  (a finite fan-out fed by a growing fan-in that is not the readout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from archspace.errors import UsageError

#: What ``MODEL`` may be, for messages.
FAMILY_HELP = ("mlp, resnet18 / resnet34 / resnet50 / resnet101 / resnet152 (torchvision ResNets at any width) or "
               "deepnets:SPLIT/INDEX")


@dataclass(frozen=True)
class WidthFamily:
    """One architecture at any width.

    Attributes:
        spec: the normalised ``MODEL`` spec (``mlp``, ``resnet18``, ``deepnets:test/3``).
        kind: ``"mlp"``, ``"resnet"`` or ``"deepnets"``.
        build: ``width -> nn.Module`` at its default (standard-parametrisation) initialisation; works under a
            ``torch.device("meta")`` context (base shapes are built there).
        widths: the default widths of a sweep (powers of two, narrow to wide).
        base_width: muP's base width: at this width muP and SP give the same network (``width_mult`` 1).
        mup_init: ``model -> None``, the family's own initialisation redone with ``mup.init`` after
            ``set_base_shapes`` (``None``: the family's init already scales as muP wants, e.g. PyTorch's fan-in
            defaults). torchvision's ResNets draw conv weights with Kaiming ``fan_out``, which shrinks the stem's
            weights (3 input channels, a growing fan-out) with width; muP needs an input layer of fixed size.
    """

    spec: str
    kind: str
    build: Callable[[int], nn.Module]
    widths: tuple[int, ...]
    base_width: int
    mup_init: Callable[[nn.Module], None] | None = None


def width_family(spec: str, num_classes: int = 10, image_size: int = 8) -> WidthFamily:
    """The :class:`WidthFamily` named by ``spec`` (see the module docstring).

    Args:
        spec: ``mlp``, a key of :data:`archspace.resnet_width.LAYOUTS` (``resnet18`` ... ``resnet152``,
            optionally ``torchvision:``-prefixed) or ``deepnets:SPLIT/INDEX``.
        num_classes: classifier outputs.
        image_size: side of the square RGB input images.

    Returns:
        The family.

    Raises:
        UsageError: an unknown spec, a DeepNets-1M net that muP does not cover (attention, a fixed-size hidden
            classifier layer), or a bad size.
    """
    from archspace.mlp import MLP
    from archspace.models import load_model
    from archspace.resnet_width import LAYOUTS, resnet_at_width
    from archspace.small_input import adapt_small_input

    if num_classes < 1 or image_size < 1:
        raise UsageError(f"num_classes and image_size must be >= 1, got {num_classes} and {image_size}")
    name = spec.strip()
    if name in ("mlp", "archspace.mlp:mlp"):
        return WidthFamily("mlp", "mlp", lambda w: MLP(num_classes, image_size, hidden=(w, w)),
                           (64, 128, 256, 512, 1024, 2048), 64)
    short = name.removeprefix("torchvision:").removeprefix("archspace.resnet_width:")
    if short in LAYOUTS:
        def build_resnet(w: int) -> nn.Module:
            return adapt_small_input(resnet_at_width(short, w, num_classes))

        return WidthFamily(short, "resnet", build_resnet, (4, 8, 16, 32, 64), 4, mup_init=_resnet_mup_init)
    if name.startswith("deepnets:"):
        def build_net(w: int) -> nn.Module:
            return load_model(name, num_classes=num_classes, image_size=image_size, width=w)

        family = WidthFamily(name, "deepnets", build_net, (8, 16, 32, 64, 128), 8)
        _check_deepnets(family)
        return family
    raise UsageError(f"MODEL {spec!r} is not a width family; use {FAMILY_HELP}")


def _check_deepnets(family: WidthFamily) -> None:
    import torch

    from archspace.ops import SelfAttention2d

    with torch.device("meta"):
        net = family.build(family.base_width)
    if any(isinstance(m, SelfAttention2d) for m in net.modules()):
        raise UsageError(f"{family.spec} has self-attention (msa), which muP needs scaled by 1/d rather than "
                         f"nn.MultiheadAttention's 1/sqrt(d); choose a net without msa")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    head = getattr(net, "classifier", None)
    if head is not None and sum(isinstance(m, nn.Linear) for m in head.modules()) > 1:
        raise UsageError(f"{family.spec} has a classifier with a hidden layer of fixed size (fc_layers > 1), which "
                         f"muP cannot scale; choose a net with a single classifier layer")
    if not linears:
        raise UsageError(f"{family.spec} has no linear classifier to turn into a muP readout")


def _resnet_mup_init(model: nn.Module) -> None:
    """torchvision's ResNet initialisation of conv weights (Kaiming normal, ``fan_out``, ReLU gain) through
    ``mup.init``: the same distribution as SP's at the base width, muP's scaling elsewhere (the stem keeps a fixed
    size). The weights are drawn again, so at the base width a muP net and an SP net of the same seed share their
    classifier but not their conv weights (the same network up to the init's sampling noise)."""
    import mup

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            mup.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
