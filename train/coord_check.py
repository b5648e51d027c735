"""The coordinate check of muP (Yang, Hu et al., 2022, "Tensor Programs V", Sec. 3 and Appendix D.1): train a
family at several widths for a few steps and follow the size of every layer's output coordinates. Under a correct
muP the mean absolute activation of each layer stays the same order as width grows; under the standard
parametrisation some layers (the readout, and hidden layers once updates pile up) grow with width.

Every layer is a leaf module that holds parameters (linear, conv, normalisation, the readout); its output's mean
absolute value is recorded at the forward of each training step (step 1 is the initialisation, step ``t`` sees
the parameters after ``t - 1`` updates). The flatness figure of a layer is the ratio of its largest to its
smallest size across widths at the last step (1 is perfectly flat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from train.data import ImageData
from train.tune import Predictor, Setting, run_trial
from train.width_family import WidthFamily

#: The ratio across widths under which a layer counts as flat (the issue's criterion over a 16x width range).
FLAT_RATIO = 2.0


@dataclass
class CoordCheck:
    """Activation sizes of one parametrisation and init across widths.

    Attributes:
        param, init: ``mup``/``sp`` and the initialisation (:func:`train.tune.build`).
        widths: the widths trained, narrow to wide.
        sizes: layer name -> width -> mean absolute output per step (``steps`` values).
        losses: width -> final training loss.
    """

    param: str
    init: str
    widths: list[int]
    sizes: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    losses: dict[int, float] = field(default_factory=dict)

    def last(self, layer: str) -> list[float]:
        """The layer's size at the last step, one value per width."""
        return [self.sizes[layer][w][-1] for w in self.widths]

    def ratios(self) -> dict[str, float]:
        """Layer -> largest / smallest size across widths at the last step (``inf`` if one is 0 or non-finite)."""
        out = {}
        for layer in self.sizes:
            v = self.last(layer)
            lo, hi = min(v), max(v)
            out[layer] = hi / lo if lo > 0 and math.isfinite(hi) else math.inf
        return out

    def growth(self) -> dict[str, float]:
        """Layer -> size at the widest width / size at the narrowest (above 1: grows with width)."""
        out = {}
        for layer in self.sizes:
            v = self.last(layer)
            out[layer] = v[-1] / v[0] if v[0] > 0 else math.inf
        return out

    def flat(self, ratio: float = FLAT_RATIO) -> bool:
        """Whether every layer's size stays within ``ratio`` across widths at the last step."""
        return all(r <= ratio for r in self.ratios().values())


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers a coordinate check follows: leaf modules that hold parameters, in module order.

    Args:
        model: the network.

    Returns:
        ``(name, module)`` pairs.
    """
    return [(n, m) for n, m in model.named_modules()
            if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


def coord_check(family: WidthFamily, widths: Sequence[int], data: ImageData, *, param: str, steps: int = 4,
                lr: float, init: str = "default", predict: Predictor | None = None, optimizer: str = "sgd",
                batch_size: int = 64, seed: int = 0, device: str = "cpu", readout_zero_init: bool = False,
                predicted_readout: bool = True) -> CoordCheck:
    """Run the coordinate check of ``family`` at ``widths`` (module docstring).

    Args:
        family: the model family.
        widths: at least two widths.
        data: the task.
        param: ``"mup"`` or ``"sp"``.
        steps: training steps per width (each step's forward is recorded).
        lr: base learning rate.
        init: an initialisation of :func:`train.tune.build` (the predicted ones need ``predict``).
        predict, optimizer, batch_size, seed, device, readout_zero_init, predicted_readout: as
            :func:`train.tune.run_trial`.

    Returns:
        The :class:`CoordCheck`; a layer's list is shorter than ``steps`` when training diverged.

    Raises:
        ValueError: fewer than 2 widths or ``steps < 1``.
    """
    if len(widths) < 2 or steps < 1:
        raise ValueError(f"a coordinate check needs >= 2 widths and >= 1 step, got {list(widths)} and {steps}")
    check = CoordCheck(param, init, sorted(widths))
    for width in check.widths:
        sizes: dict[str, list[float]] = {}

        def hook_all(model: nn.Module, sizes: dict[str, list[float]] = sizes) -> None:
            for name, module in layer_modules(model):
                def record(_m, _inp, out, name=name, sizes=sizes):
                    if torch.is_grad_enabled() and isinstance(out, torch.Tensor):  # training forwards only
                        sizes.setdefault(name, []).append(float(out.detach().abs().mean()))
                module.register_forward_hook(record)

        trial = run_trial(family, width, Setting(lr), data, param=param, steps=steps, init=init, predict=predict,
                          optimizer=optimizer, batch_size=batch_size, seed=seed, device=device,
                          readout_zero_init=readout_zero_init, model_hook=hook_all,
                          predicted_readout=predicted_readout)
        check.losses[width] = trial.loss
        for name, values in sizes.items():
            check.sizes.setdefault(name, {})[width] = values
    return check


def coord_checks(family: WidthFamily, widths: Sequence[int], data: ImageData, *, predict: Predictor | None = None,
                 log=None, **kwargs) -> list[CoordCheck]:
    """The coordinate checks ``ghn tune --coord-check`` and ``benchmarks/bench_mup.py`` report: SP and muP from the
    default initialisation and, with ``predict``, from predicted parameters as they are and orthogonalised
    (``predicted+orth``).

    Args:
        family, widths, data: as :func:`coord_check`.
        predict: a GHN predictor (``None``: default initialisation only).
        log: optional ``callable(str)``, one line per check.
        **kwargs: the other :func:`coord_check` arguments (``steps``, ``lr``, ``optimizer``, ...).

    Returns:
        The checks, SP then muP for each initialisation.
    """
    inits = ["default"] + (["predicted", "predicted+orth"] if predict is not None else [])
    checks = []
    for init in inits:
        for param in ("sp", "mup"):
            if log:
                log(f"coordinate check: {param}, {init} init, widths {sorted(widths)}")
            checks.append(coord_check(family, widths, data, param=param, init=init, predict=predict, **kwargs))
    return checks
