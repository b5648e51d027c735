"""Put a width family into the Maximal Update Parametrization (muP) with the ``mup`` package, or keep the
standard parametrisation (SP) for comparison (Yang, Hu et al., 2022, "Tensor Programs V", Sec. 3, Table 3).

What the ``mup`` package provides is used as is: :func:`mup.set_base_shapes` (which dimensions are widths, found by
comparing a base and a delta model built on the meta device; a conv weight's width dimensions are its channel
counts), :class:`mup.MuReadout` (the output layer, whose forward divides by the width multiplier),
:func:`mup.MuSGD` / :func:`mup.MuAdam` (per-parameter learning rates). What it lacks for our models is here:

- turning an existing model's classifier (its last ``nn.Linear``, behind global pooling in a CNN) into a
  :class:`mup.MuReadout` with the same weights, so torchvision, DeepNets-1M and MLP models need no rewrite;
- starting muP from GHN-predicted parameters. Derivation: ``MuReadout`` computes ``W_mu (m x / r) + b`` with
  ``r = width / base_width`` (``width_mult``) and ``m`` the output multiplier. A GHN predicts the standard
  classifier ``W x + b``; setting ``W_mu = W r / m`` and ``b_mu = b`` gives the same logits, so the muP model
  computes exactly the predicted network's function at step 0 (:func:`load_predicted_readout`). Hidden weights
  and biases need no change: muP gives hidden weights a ``1/fan_in`` variance as SP's fan-in inits do, and
  ``set_base_shapes(rescale_params=False)`` keeps them as predicted. From step 0 on, muP's optimiser sets the
  learning rates: the readout's effective update is ``lr m^2 / r`` times its gradient under ``MuSGD`` (its weight
  is vector-like, learning rate times ``r``; its gradient is scaled by ``m / r`` twice), the ``1/width`` of muP.
  The limit of this choice: the effective readout keeps the predicted (SP-sized, about ``1/sqrt(fan_in)``)
  entries rather than muP's ``1/fan_in``, so the logits' size after the first updates can still grow with width
  (the coordinate checks of the README measure it);
- an initialisation multiplier for the search of ``ghn tune`` (the paper's tunable init scale, Sec. 6);
- a family's own initialisation redone with ``mup.init`` where it depends on fan-out
  (:attr:`train.width_family.WidthFamily.mup_init`).

``copy.deepcopy`` of a muP model drops the ``infshape`` attributes (torch copies parameters without their Python
attributes): build a muP model by :func:`parametrise` where it is used, do not copy one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from archspace.errors import UsageError
from train.width_family import WidthFamily

PARAMETRISATIONS = ("mup", "sp")
OPTIMIZERS = ("sgd", "adam")
#: SGD momentum of muP/SP runs (the project's recipe, :mod:`train.finetune`).
MOMENTUM = 0.9


def readout_name(model: nn.Module) -> str:
    """The dotted name of the model's readout: its last ``nn.Linear`` in module order (the classifier).

    Args:
        model: the network.

    Returns:
        The name, e.g. ``"fc"`` or ``"layers.5"``.

    Raises:
        UsageError: the model has no ``nn.Linear``.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise UsageError(f"{type(model).__name__} has no nn.Linear classifier to use as the muP readout")
    return names[-1]


def _replace_readout(model: nn.Module, output_mult: float, zero_init: bool) -> nn.Module:
    import mup

    name = readout_name(model)
    old = model.get_submodule(name)
    new = mup.MuReadout(old.in_features, old.out_features, bias=old.bias is not None, output_mult=output_mult,
                        readout_zero_init=zero_init, device=old.weight.device, dtype=old.weight.dtype)
    if not zero_init:
        with torch.no_grad():
            new.weight.copy_(old.weight)
            if old.bias is not None:
                new.bias.copy_(old.bias)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return new


def parametrise(model: nn.Module, family: WidthFamily, param: str = "mup", *, predicted: bool = False,
                predicted_readout: bool | None = None, output_mult: float = 1.0, init_mult: float = 1.0,
                readout_zero_init: bool = False) -> nn.Module:
    """Make ``model`` (a member of ``family`` at some width, fresh or holding predicted parameters) a muP or SP
    model, in place.

    Under ``mup``: the readout becomes a :class:`mup.MuReadout`; base shapes come from the family at
    ``base_width`` and ``2 * base_width`` on the meta device; a default initialisation is converted to muP's by
    ``set_base_shapes`` (readout weights and biases rescaled, Tensor Programs V, Table 3), a predicted one is
    kept and its readout rescaled so that the logits do not change (module docstring).
    Under ``sp``: ``output_mult`` multiplies the classifier's input in its forward (a pre-hook), so SP and muP with
    the same multiplier are the same network, with the same gradients, at the base width; a predicted classifier
    is divided by it, which keeps the predicted logits.

    Args:
        model: the network, on any device.
        family: its family.
        param: ``"mup"`` or ``"sp"``.
        predicted: the model holds GHN-predicted parameters (keep its function; ``init_mult`` is not applied).
        predicted_readout: whether the classifier was predicted too (default: ``predicted``); ``False`` when the
            GHN predicted every layer but the classifier (``--keep-classifier-init``): the readout is then a
            default initialisation and gets muP's conversion of one (``MuReadout._rescale_parameters``).
        output_mult: muP output multiplier ``m`` (logits scale).
        init_mult: multiplies every weight of 2 or more dimensions of a default initialisation.
        readout_zero_init: start the muP readout at zero (a common muP choice; ignored with ``predicted``).

    Returns:
        The same model.

    Raises:
        UsageError: an unknown ``param``, non-positive multipliers, or a model whose width dimensions muP cannot
            classify (e.g. a fixed-size hidden layer after a growing one).
    """
    if param not in PARAMETRISATIONS:
        raise UsageError(f"parametrisation must be one of {', '.join(PARAMETRISATIONS)}, got {param!r}")
    if not (output_mult > 0 and init_mult > 0):
        raise UsageError(f"output and init multipliers must be > 0, got {output_mult} and {init_mult}")
    readout_predicted = predicted and (predicted_readout is None or predicted_readout)
    if not predicted and init_mult != 1.0 and (param == "sp" or family.mup_init is None):
        _scale_weights(model, init_mult)  # (a family with a mup_init is scaled after it, below)
    if param == "sp":
        if output_mult != 1.0:
            readout = model.get_submodule(readout_name(model))
            if readout_predicted:
                with torch.no_grad():
                    readout.weight.div_(output_mult)
            readout.register_forward_pre_hook(lambda _m, inputs: (inputs[0] * output_mult,) + tuple(inputs[1:]))
        return model
    import mup

    readout = _replace_readout(model, output_mult, zero_init=readout_zero_init and not predicted)
    with torch.device("meta"):
        base, delta = family.build(family.base_width), family.build(2 * family.base_width)
    try:
        mup.set_base_shapes(model, base, delta=delta, rescale_params=not predicted)
    except AssertionError as e:  # mup's own check of the width dimensions
        raise UsageError(f"{family.spec} cannot be put in muP: {str(e).splitlines()[0]}") from None
    except KeyError as e:
        raise UsageError(f"{family.spec}: the model's parameters do not match its family's ({e})") from None
    if not predicted and family.mup_init is not None:  # touches conv weights only: commutes with the rescaling
        with torch.no_grad():
            family.mup_init(model)
        if init_mult != 1.0:
            _scale_weights(model, init_mult)
    elif readout_predicted:
        load_predicted_readout(readout)
    elif predicted:  # a default-initialised classifier behind predicted hidden layers
        readout._rescale_parameters()
    return model


def _scale_weights(model: nn.Module, factor: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(factor)


def load_predicted_readout(readout: nn.Module) -> None:
    """Rescale a :class:`mup.MuReadout` that holds a predicted standard classifier ``(W, b)`` to ``W r / m`` so that
    its output equals ``W x + b`` (module docstring), in place.

    Args:
        readout: the readout, after ``mup.set_base_shapes`` (its weight has an ``infshape``).

    Shapes:
        ``readout.weight``: ``(num_classes, fan_in)``.
    """
    with torch.no_grad():
        readout.weight.mul_(readout.width_mult() / readout.output_mult)


def width_mult(model: nn.Module) -> float:
    """The muP width multiplier ``width / base_width`` of a model put in muP by :func:`parametrise` (1.0 for SP).

    Args:
        model: the network.

    Returns:
        The readout's ``width_mult``.
    """
    readout = model.get_submodule(readout_name(model))
    return float(readout.width_mult()) if hasattr(readout.weight, "infshape") else 1.0


def make_optimizer(params, *, name: str = "sgd", lr: float, param: str = "mup", weight_decay: float = 0.0):
    """The optimiser of a muP or SP run: ``mup.MuSGD`` / ``mup.MuAdam`` (per-parameter learning rates scaled by
    the width multipliers, Tensor Programs V, Table 3) or ``torch.optim.SGD`` / ``Adam``. SGD uses momentum 0.9.

    Args:
        params: the parameters (under muP, each needs the ``infshape`` that ``set_base_shapes`` attaches).
        name: ``"sgd"`` or ``"adam"``.
        lr: the base learning rate (muP: the learning rate at the base width).
        param: ``"mup"`` or ``"sp"``.
        weight_decay: L2 penalty (scaled by muP like the learning rate).

    Returns:
        The ``torch.optim`` optimiser (muP: one parameter group per learning-rate scale).

    Raises:
        UsageError: an unknown optimiser or parametrisation, or ``lr <= 0``.
    """
    if name not in OPTIMIZERS:
        raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if param not in PARAMETRISATIONS:
        raise UsageError(f"parametrisation must be one of {', '.join(PARAMETRISATIONS)}, got {param!r}")
    if not lr > 0:
        raise UsageError(f"lr must be > 0, got {lr}")
    if param == "mup":
        import mup

        if name == "sgd":
            return mup.MuSGD(params, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
        return mup.MuAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
