"""Model specs for the command lines: build a network from a short string.

Three spellings, shared by ``archspace graph`` and ``ghn predict``:

- ``torchvision:NAME`` -- a torchvision classification model built with ``weights=None`` (nothing is downloaded),
  e.g. ``torchvision:resnet50``;
- ``deepnets:SPLIT/INDEX`` -- net ``INDEX`` of a DeepNets-1M split (Knyazev et al., NeurIPS 2021, Sec. 3), e.g.
  ``deepnets:test/0`` (:func:`archspace.sampler.get_net`);
- ``package.module:callable`` -- any importable callable returning an ``nn.Module``; it receives
  ``num_classes=...`` if its signature accepts it.
"""

from __future__ import annotations

import importlib
import inspect

import torch.nn as nn

SPEC_HELP = ("spell a model as torchvision:NAME (e.g. torchvision:resnet50), deepnets:SPLIT/INDEX (e.g. "
             "deepnets:test/0) or package.module:callable (e.g. mypkg.nets:build_net)")


class ModelSpecError(ValueError):
    """A model spec that cannot be parsed or names no model; the message says how to spell one."""


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(spec: str, num_classes: int = 1000, small_input: bool = False, image_size: int | None = None
               ) -> nn.Module:
    """Build the network named by ``spec`` (see the module docstring for the spellings).

    Args:
        spec: ``torchvision:NAME``, ``deepnets:SPLIT/INDEX`` or ``package.module:callable``.
        num_classes: size of the classifier.
        small_input: apply :func:`archspace.adapt_small_input` (the CIFAR recipe for 32x32 images).
        image_size: image size for DeepNets-1M nets (default 32 with ``small_input`` or for deepnets, else 224).

    Returns:
        The model, with fresh (not pretrained) parameters.

    Raises:
        ModelSpecError: malformed spec or unknown name; the message lists how to spell one (and, for torchvision,
            the available names).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ModelSpecError(f"cannot parse model {spec!r}: {SPEC_HELP}")
    kind, _, name = spec.partition(":")
    if not name:
        raise ModelSpecError(f"model {spec!r} has nothing after ':': {SPEC_HELP}")
    if kind == "torchvision":
        model = _torchvision(name, num_classes)
    elif kind == "deepnets":
        model = _deepnets(name, num_classes, image_size or 32)
    elif "." in kind or kind.isidentifier():
        model = _callable(kind, name, num_classes)
    else:
        raise ModelSpecError(f"cannot parse model {spec!r}: {SPEC_HELP}")
    if small_input:
        from .small_input import adapt_small_input

        adapt_small_input(model)
    return model


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    names = torchvision_names()
    if name not in names:
        close = [n for n in names if name.lower()[:4] in n] or names
        raise ModelSpecError(f"unknown torchvision model {name!r}; {SPEC_HELP}. torchvision classification models: "
                             + ", ".join(close))
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _deepnets(name: str, num_classes: int, image_size: int) -> nn.Module:
    split, _, index = name.partition("/")
    if not split or not index.isdigit():
        raise ModelSpecError(f"cannot parse deepnets:{name}; expected deepnets:SPLIT/INDEX, e.g. deepnets:test/0")
    try:
        from .sampler import SPLITS, get_net
    except ImportError as error:
        raise ModelSpecError(f"deepnets models need archspace.sampler, which is not available: {error}") from error
    if split not in SPLITS:
        raise ModelSpecError(f"unknown DeepNets-1M split {split!r}; splits: {', '.join(SPLITS)}")
    try:
        return get_net(split, int(index), num_classes=num_classes, image_size=image_size)
    except (IndexError, KeyError, ValueError) as error:
        raise ModelSpecError(f"deepnets:{name}: {error}") from error


def _callable(module_name: str, attr: str, num_classes: int) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(f"cannot import {module_name!r} ({error}); {SPEC_HELP}") from error
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelSpecError(f"{module_name} has no callable {attr!r}; {SPEC_HELP}")
    try:
        accepts = "num_classes" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        accepts = False
    model = fn(num_classes=num_classes) if accepts else fn()
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{module_name}:{attr} returned {type(model).__name__}, not an nn.Module")
    return model
