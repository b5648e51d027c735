"""Pruning masks for lottery-ticket experiments, on ``torch.nn.utils.prune``.

The lottery ticket hypothesis (Frankle & Carbin, ICLR 2019) is tested by iterative magnitude pruning (IMP): train,
remove the fraction ``rate`` (0.2) of the remaining convolution and linear weights with the smallest magnitudes,
ranked globally across layers (Frankle et al., ICML 2020, Sec. 2; the classifier is usually left dense), rewind the
survivors to their values at initialisation or at an early step, and train again. Two controls decide whether a
mask is a ticket (Frankle & Carbin, Sec. 2 and 4): the same mask with a fresh random initialisation, and a random
mask with the same sparsity in every layer.

A mask set (:data:`Masks`) maps the name of a convolution or linear module to a boolean tensor of its weight's
shape (``True``: the weight is kept). The rules here compute masks with ``torch.nn.utils.prune`` on stand-in
modules that hold copies of the weights, so the network itself is never changed; :func:`apply_masks` then puts a
mask set on a network (``prune.custom_from_mask``: ``weight = weight_orig * weight_mask`` before every forward
pass, so pruned weights stay zero through training) and :func:`remove_masks` makes the zeros permanent.

``torch.nn.utils.prune`` recomputes a masked weight in a hook that runs before the layer's own forward. Some
layers are never called but have their weight read by their parent: ``nn.MultiheadAttention`` reads
``out_proj.weight`` directly (DeepNets-1M's ``msa`` op, torchvision's ViT), torchvision's Swin its ``qkv`` and
``proj`` weights. Their masked weight would be computed once, when the mask is applied, and then go stale (the
second backward pass fails, the layer never sees SGD's updates). :func:`apply_masks` therefore also recomputes every
masked weight of the network before the network's own forward pass. ``MultiheadAttention``'s ``in_proj_weight``
is a bare parameter, not a layer, and stays dense.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from torch.nn.utils import prune

from archspace.errors import UsageError

#: Module name -> boolean mask of the module's ``weight`` (``True`` = kept).
Masks = dict[str, torch.Tensor]

#: The layers IMP prunes: convolutions and fully connected layers (their ``weight``; biases stay dense).
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_layers(model: nn.Module, include_classifier: bool = False) -> list[tuple[str, nn.Module]]:
    """The modules whose weights IMP prunes, in module order: every convolution and linear layer, without the last
    one (the classifier) unless ``include_classifier``.

    Args:
        model: the network.
        include_classifier: also prune the last convolution or linear layer.

    Returns:
        ``(module name, module)`` pairs.

    Raises:
        UsageError: the network has no such layer left to prune.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not include_classifier:
        layers = layers[:-1]
    if not layers:
        raise UsageError(f"{type(model).__name__} has no convolution or linear layer to prune"
                         + ("" if include_classifier else " besides its classifier: pass --include-classifier"))
    return layers


def dense_masks(model: nn.Module, include_classifier: bool = False) -> Masks:
    """All-``True`` masks for the :func:`prunable_layers` of ``model`` (level 0 of IMP)."""
    return {n: torch.ones_like(_weight(m), dtype=torch.bool) for n, m in prunable_layers(model, include_classifier)}


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight.detach()  # the masked weight when a mask is applied


def _holders(tensors: dict[str, torch.Tensor], masks: Masks) -> dict[str, nn.Module]:
    """Stand-in modules with a copy of each weight and its current mask applied (``prune.custom_from_mask``)."""
    holders = {}
    for name, w in tensors.items():
        h = nn.Module()
        h.weight = nn.Parameter(w.detach().float().clone(), requires_grad=False)
        prune.custom_from_mask(h, "weight", masks[name].to(w.device))
        holders[name] = h
    return holders


def magnitude_masks(model: nn.Module, masks: Masks, amount: float | int) -> Masks:
    """IMP's rule: prune, among the weights ``masks`` keeps, those of smallest magnitude, ranked globally across
    all masked layers (``prune.global_unstructured`` with ``prune.L1Unstructured``; Frankle & Carbin, ICLR 2019,
    Sec. 2; Frankle et al., ICML 2020, Sec. 2).

    Args:
        model: the network whose current weights rank the survivors (a module with a mask applied counts its
            masked weight).
        masks: the current masks; their keys name the layers taking part.
        amount: a float in [0, 1): the fraction of the remaining weights to prune (``round(amount * remaining)``
            weights, as ``torch.nn.utils.prune`` counts); an int: that many weights.

    Returns:
        New masks (a subset of ``masks``), one per key of ``masks``.

    Raises:
        ValueError: ``amount`` out of range (negative, a fraction >= 1, or more weights than remain).
    """
    remaining = sum(int(m.sum()) for m in masks.values())
    if isinstance(amount, float) and not 0.0 <= amount < 1.0:
        raise ValueError(f"the fraction to prune must be in [0, 1), got {amount}")
    if isinstance(amount, int) and not 0 <= amount < remaining:
        raise ValueError(f"cannot prune {amount} of the {remaining} remaining weights")
    modules = dict(model.named_modules())
    holders = _holders({n: _weight(modules[n]) for n in masks}, masks)
    if amount:
        prune.global_unstructured([(h, "weight") for h in holders.values()], pruning_method=prune.L1Unstructured,
                                  amount=amount)
    return {n: h.weight_mask.bool().to(masks[n].device) for n, h in holders.items()}


def random_masks(masks: Masks, seed: int) -> Masks:
    """The random-pruning control: for each layer a random mask that keeps as many weights as ``masks`` keeps in
    that layer (``prune.random_unstructured``; Frankle & Carbin, ICLR 2019, Sec. 4).

    Args:
        masks: the masks whose per-layer counts to copy.
        seed: seed of the random positions (the global RNG is left as it was).

    Returns:
        New masks with ``mask.sum()`` equal to ``masks``' in every layer.
    """
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, m in masks.items():
            h = nn.Module()
            h.weight = nn.Parameter(torch.ones(m.shape), requires_grad=False)
            prune.random_unstructured(h, "weight", amount=int(m.numel() - m.sum()))
            out[name] = h.weight_mask.bool().to(m.device)
    return out


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Put ``masks`` on ``model`` in place (``prune.custom_from_mask``): from now on each masked module computes
    ``weight = weight_orig * weight_mask`` before its forward pass, so pruned weights are zero in every forward
    pass and get zero gradients.

    The masked weights are also recomputed before ``model``'s own forward pass, for layers whose weight a parent
    reads without calling them (``nn.MultiheadAttention``'s ``out_proj``; module docstring).

    Raises:
        UsageError: a mask names a module the model lacks or has another shape than its weight.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or not isinstance(module, PRUNABLE) or tuple(module.weight.shape) != tuple(mask.shape):
            raise UsageError(f"the mask of {name!r} does not fit this network (no such layer, or another shape); "
                             "masks must come from the same architecture")
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
    if masks and _refresh_masked_weights not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_refresh_masked_weights)
    return model


def _refresh_masked_weights(model: nn.Module, args) -> None:
    """Forward pre-hook of a masked network: ``weight = weight_orig * weight_mask`` for every masked layer, so that
    a weight read by a parent without the layer's own forward (module docstring) is current and in this pass's
    autograd graph."""
    for module in model.modules():
        if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
            module.weight = module.weight_orig * module.weight_mask


def remove_masks(model: nn.Module) -> nn.Module:
    """Make the masks of ``model`` permanent (``prune.remove``): ``weight`` is a plain parameter again, with the
    pruned entries zero. Modules without a mask are left alone."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is _refresh_masked_weights:
            del model._forward_pre_hooks[key]
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict as if its masks were removed: ``NAME.weight`` (``weight_orig`` times
    ``weight_mask``) instead of ``NAME.weight_orig`` and ``NAME.weight_mask``; the model itself is not changed."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            out[key[:-5]] = (value * state[key[:-5] + "_mask"]).detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def masks_of(model: nn.Module) -> Masks:
    """The masks currently applied to ``model`` (``weight_mask`` buffers), as booleans."""
    return {n: m.weight_mask.bool().clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}


def count(masks: Masks) -> tuple[int, int]:
    """``(kept, total)`` weights over all layers of ``masks``."""
    return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())


def layer_fractions(masks: Masks) -> dict[str, float]:
    """Fraction of weights kept in each layer."""
    return {n: float(m.float().mean()) for n, m in masks.items()}


def level_counts(total: int, rate: float, levels: Iterable[int]) -> dict[int, int]:
    """Weights kept after each IMP level when every level prunes ``round(rate * remaining)`` (as
    :func:`magnitude_masks` does): level 0 keeps ``total``."""
    out, kept, level = {}, total, 0
    for target in sorted(levels):
        while level < target:
            kept -= round(rate * kept)
            level += 1
        out[target] = kept
    return out
