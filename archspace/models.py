"""Model specs: name a network in a short string, check the name, build the network. The one spec parser.

Four spellings, shared by ``archspace graph``, ``ghn predict``, ``ghn rank``, ``ghn finetune`` and ``ghn-eval``:

- ``torchvision:NAME`` -- a torchvision classification model built with ``weights=None`` (nothing is downloaded),
  e.g. ``torchvision:resnet50``;
- ``timm:NAME`` -- a model of PyTorch Image Models (Wightman, ``timm``; an optional extra:
  ``pip install 'ghn-archspace[timm]'``) built with ``pretrained=False`` (nothing is downloaded), e.g.
  ``timm:convnext_atto``; it declares the input size of its default configuration as ``expected_input_sz``;
- ``deepnets:SPLIT/INDEX`` -- net ``INDEX`` of a DeepNets-1M split (Knyazev et al., NeurIPS 2021, Sec. 3), e.g.
  ``deepnets:test/0`` (:func:`archspace.sampler.get_net`);
- ``package.module:callable`` -- any importable callable returning an ``nn.Module``; it receives
  ``num_classes=...`` if its signature names it or takes ``**kwargs``, and ``image_size=...`` (when one is given)
  if its signature names it (e.g. ``archspace.mlp:lenet_300_100``).

:func:`check_spec` validates a spec without building anything, :func:`load_model` builds it; both raise
:class:`ModelSpecError` with a "did you mean ..." from :func:`suggest` for a misspelt name.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from .errors import UsageError, suggest

SPEC_HELP = ("spell a model as torchvision:NAME (e.g. torchvision:resnet50), timm:NAME (e.g. timm:convnext_atto), "
             "deepnets:SPLIT/INDEX (e.g. deepnets:test/0) or package.module:callable (e.g. mypkg.nets:build_net)")
#: Where a user finds the torchvision names (the hint when no name is close).
TORCHVISION_LISTING = "list the names with: python -c 'import torchvision; print(torchvision.models.list_models())'"
#: Where a user finds the timm names.
TIMM_LISTING = "list the names with: python -c 'import timm; print(timm.list_models())'"
#: How to install the optional timm extra.
TIMM_INSTALL = "pip install 'ghn-archspace[timm]'"
_SCHEMES = ("torchvision", "timm", "deepnets")


class ModelSpecError(UsageError):
    """A model spec that cannot be parsed or names no model; the message says how to spell one."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed, checked model spec (from :func:`check_spec`).

    Attributes:
        kind: ``"torchvision"``, ``"timm"``, ``"deepnets"`` or ``"callable"``.
        name: the torchvision or timm model name, the DeepNets-1M split, or the module of the callable.
        index: the net's index in the split (``deepnets`` only).
        attr: the callable's name in its module (``callable`` only).
    """

    kind: str
    name: str
    index: int | None = None
    attr: str | None = None


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``), sorted."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def import_timm():
    """The ``timm`` module, an optional dependency.

    Raises:
        ModelSpecError: timm is not installed; the message names the extra that installs it.
    """
    try:
        import timm
    except ImportError as error:
        raise ModelSpecError(f"timm models need timm: {TIMM_INSTALL}") from error
    return timm


def check_spec(spec: str) -> ModelSpec:
    """Check a model spec without building the model: the torchvision or timm name exists, the DeepNets-1M split
    exists and holds the index, the module imports and has the callable.

    Args:
        spec: ``torchvision:NAME``, ``timm:NAME``, ``deepnets:SPLIT/INDEX`` or ``package.module:callable``.

    Returns:
        The parsed :class:`ModelSpec`.

    Raises:
        ModelSpecError: malformed spec, unknown name, or ``timm:NAME`` without timm installed; the message says how
            to spell one and suggests close names (or how to install timm).
    """
    if not isinstance(spec, str) or ":" not in spec:
        hint = suggest(spec, torchvision_names(), listing="", prefix="torchvision:") if isinstance(spec, str) else ""
        raise ModelSpecError(f"cannot parse model {spec!r}: {SPEC_HELP}{hint}")
    kind, _, name = spec.partition(":")
    if not name:
        raise ModelSpecError(f"model {spec!r} has nothing after ':': {SPEC_HELP}")
    if kind == "torchvision":
        if name not in torchvision_names():
            raise ModelSpecError(f"unknown torchvision model {name!r}"
                                 + suggest(name, torchvision_names(), TORCHVISION_LISTING))
        return ModelSpec("torchvision", name)
    if kind == "timm":
        return _check_timm(name)
    if kind == "deepnets":
        return _check_deepnets(name)
    if not all(part.isidentifier() for part in kind.split(".")):
        raise ModelSpecError(f"cannot parse model {spec!r}: {SPEC_HELP}")
    return _check_callable(kind, name)


def _check_timm(name: str) -> ModelSpec:
    try:
        timm = import_timm()
    except ModelSpecError:
        raise ModelSpecError(f"timm:{name} needs timm: {TIMM_INSTALL}") from None
    if not timm.is_model(name):  # also accepts NAME.TAG (a pretrained configuration's tag; never downloaded)
        raise ModelSpecError(f"unknown timm model {name!r}" + suggest(name, timm.list_models(), TIMM_LISTING))
    return ModelSpec("timm", name)


def _check_deepnets(name: str) -> ModelSpec:
    from .sampler import SPLITS

    split, _, index = name.partition("/")
    if split not in SPLITS:
        raise ModelSpecError(f"unknown DeepNets-1M split {split!r}" + suggest(split, SPLITS))
    if not index.isdigit():
        raise ModelSpecError(f"cannot parse deepnets:{name}; expected deepnets:SPLIT/INDEX with an index "
                             f"0-{SPLITS[split] - 1}, e.g. deepnets:{split}/0")
    if int(index) >= SPLITS[split]:
        raise ModelSpecError(f"deepnets:{name}: index {int(index)} is out of range; split {split!r} has nets "
                             f"0-{SPLITS[split] - 1}")
    return ModelSpec("deepnets", split, index=int(index))


def _check_callable(module_name: str, attr: str) -> ModelSpec:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = suggest(module_name, _SCHEMES, listing=SPEC_HELP) if "." not in module_name else "; " + SPEC_HELP
        raise ModelSpecError(f"cannot import {module_name!r} ({error}){hint}") from error
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
        raise ModelSpecError(f"{module_name} has no callable {attr!r}" + suggest(attr, public, listing=SPEC_HELP))
    return ModelSpec("callable", module_name, attr=attr)


def load_model(spec: str, num_classes: int = 1000, small_input: bool = False, image_size: int | None = None,
               width: int | None = None) -> nn.Module:
    """Build the network named by ``spec`` (see the module docstring for the spellings), after :func:`check_spec`.

    Args:
        spec: ``torchvision:NAME``, ``timm:NAME``, ``deepnets:SPLIT/INDEX`` or ``package.module:callable``.
        num_classes: size of the classifier.
        small_input: apply :func:`archspace.adapt_small_input` (the CIFAR recipe for 32x32 images).
        image_size: image size of DeepNets-1M nets (default 32) and of callables that name an ``image_size``
            argument; other models are built at their own size.
        width: base width ``C`` of DeepNets-1M nets (default: the genotype's); ignored by other models.

    Returns:
        The model, with fresh (not pretrained) parameters.

    Raises:
        ModelSpecError: malformed spec, unknown name, non-positive ``num_classes``/``image_size``/``width``, a
            callable that returns no ``nn.Module``, or ``timm:NAME`` without timm installed.
        UsageError: ``small_input`` for a family without a small-input recipe.
    """
    for what, value in (("num_classes", num_classes), ("image_size", image_size), ("width", width)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelSpecError(f"{what} must be a positive integer, got {value!r}")
    parsed = check_spec(spec)
    if parsed.kind == "torchvision":
        import torchvision

        model = torchvision.models.get_model(parsed.name, weights=None, num_classes=num_classes)
    elif parsed.kind == "timm":
        model = import_timm().create_model(parsed.name, pretrained=False, num_classes=num_classes)
        # the input size of its default configuration, the size to trace it at (as DeepNets-1M nets declare theirs)
        model.expected_input_sz = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    elif parsed.kind == "deepnets":
        from .sampler import get_net

        model = get_net(parsed.name, parsed.index, num_classes=num_classes, image_size=image_size or 32,
                        width=width)
    else:
        model = _call(parsed, num_classes, image_size)
    if small_input:
        from .small_input import adapt_small_input

        adapt_small_input(model)
    return model


def _call(parsed: ModelSpec, num_classes: int, image_size: int | None = None) -> nn.Module:
    fn: Any = getattr(importlib.import_module(parsed.name), parsed.attr)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        params = []
    # Named, or taken by **kwargs (torchvision's builders pass those on to the model class).
    kwargs: dict[str, int] = {}
    if any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        kwargs["num_classes"] = num_classes
    if image_size is not None and any(p.name == "image_size" for p in params):  # named only: **kwargs may refuse it
        kwargs["image_size"] = image_size
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{parsed.name}:{parsed.attr} returned {type(model).__name__}, not an nn.Module")
    return model
