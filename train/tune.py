"""muTransfer: tune hyper-parameters on narrow proxies, reuse them on the wide target (Yang, Hu et al., 2022,
"Tensor Programs V", Sec. 4 and Algorithm 1).

A trial trains one member of a :class:`~train.width_family.WidthFamily` at one width with one setting (learning
rate, output and init multipliers) for a fixed number of steps with :func:`train.finetune.train_sgd` (the
project's one training loop: seeded batches, cosine schedule to 0; here with the muP or SP optimiser of
:func:`train.mup_param.make_optimizer`, no weight decay and no gradient clipping) and scores it by its final
training loss, the objective of the paper's Figure 1. Every trial of a search shares the data order and the
default initialisation seed, so settings differ only in the setting; :func:`run_setting` averages a setting over
several seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from archspace.errors import UsageError
from train.accuracy import accuracy
from train.data import ImageData
from train.finetune import Batches, train_sgd
from train.mup_param import make_optimizer, parametrise
from train.width_family import WidthFamily

Predictor = Callable[[nn.Module], nn.Module]
#: Trials end with the mean mini-batch loss of their last fifth of steps (at least 5 steps): the paper plots the
#: training loss at the end of training; averaging a few steps takes out most of the mini-batch noise.
TAIL_FRACTION = 0.2


@dataclass(frozen=True)
class Setting:
    """One point of the search space: ``lr`` (base learning rate), ``output_mult``, ``init_mult``."""

    lr: float
    output_mult: float = 1.0
    init_mult: float = 1.0

    def label(self) -> str:
        """e.g. ``lr 2^-5`` or ``lr 2^-5, out 2^1``."""
        parts = [f"lr 2^{math.log2(self.lr):g}"]
        if self.output_mult != 1.0:
            parts.append(f"out 2^{math.log2(self.output_mult):g}")
        if self.init_mult != 1.0:
            parts.append(f"init 2^{math.log2(self.init_mult):g}")
        return ", ".join(parts)


@dataclass
class Trial:
    """The result of training one width with one setting.

    Attributes:
        width, param, init, setting fields: what was trained (``init`` as :func:`build`).
        loss: final training loss (mean over the last :data:`TAIL_FRACTION` of steps); ``inf`` when it diverged.
        diverged_at: first step with a non-finite loss, or ``None``.
        seconds: wall time of the training.
        flops: floating-point operations of the run (one forward and backward per step, counted by
            ``torch.utils.flop_counter``, times the steps run).
        top1: held-out top-1 accuracy (%) after training (BatchNorm running statistics), when measured.
        seeds: how many seeds the figures stand for (:func:`mean_trial`: loss and top-1 are their means,
            seconds and flops their sums).
    """

    width: int
    param: str
    init: str
    lr: float
    output_mult: float
    init_mult: float
    loss: float
    diverged_at: int | None
    seconds: float
    flops: float
    top1: float | None = None
    seeds: int = 1

    def as_dict(self) -> dict:
        """A JSON-ready dict (``loss`` ``None`` when infinite)."""
        d = asdict(self)
        d["loss"] = self.loss if math.isfinite(self.loss) else None
        return d


def lr_grid(lo_log2: float, hi_log2: float) -> list[float]:
    """Learning rates ``2^lo, 2^(lo+1), ..., 2^hi`` (factor-2 steps, the grid of the paper's figures).

    Args:
        lo_log2, hi_log2: integer log2 bounds, inclusive.

    Returns:
        The learning rates, ascending.

    Raises:
        UsageError: ``lo_log2 > hi_log2`` or non-integer exponents.
    """
    if lo_log2 > hi_log2 or lo_log2 != int(lo_log2) or hi_log2 != int(hi_log2):
        raise UsageError(f"the log2 learning-rate range must be two integers lo <= hi, got {lo_log2} {hi_log2}")
    return [2.0 ** k for k in range(int(lo_log2), int(hi_log2) + 1)]


def search_space(lrs: Sequence[float], output_mults: Sequence[float] = (1.0,), init_mults: Sequence[float] = (1.0,),
                 trials: int | None = None, seed: int = 0) -> list[Setting]:
    """The settings of a search: the full grid, or ``trials`` of them drawn at random without replacement
    (random search, Tensor Programs V, Sec. 7) in the grid's order.

    Args:
        lrs, output_mults, init_mults: the grid's axes (multipliers as factors, not log2).
        trials: how many settings to draw (``None`` or at least the grid's size: the whole grid).
        seed: seed of the draw.

    Returns:
        The :class:`Setting` list, learning rate varying fastest.

    Raises:
        UsageError: ``trials < 1``.
    """
    grid = [Setting(lr, o, i) for o, i, lr in itertools.product(output_mults, init_mults, lrs)]
    if trials is None or trials >= len(grid):
        return grid
    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    keep = sorted(random.Random(seed).sample(range(len(grid)), trials))
    return [grid[k] for k in keep]


def step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step's forward and backward on the batch ``(x, y)`` (``torch.utils.flop_counter``),
    counted in eval mode so that BatchNorm statistics are not updated; gradients are cleared afterwards.

    Args:
        model: the network.
        x, y: one batch.

    Returns:
        The FLOPs of forward plus backward.

    Shapes:
        ``x``: ``(B, 3, H, W)``, ``y``: ``(B,)``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return float(counter.get_total_flops())


def build(family: WidthFamily, width: int, setting: Setting, *, param: str, init: str = "default",
          predict: Predictor | None = None, seed: int = 0, readout_zero_init: bool = False,
          predicted_readout: bool = True) -> nn.Module:
    """The family at ``width``, initialised and put in ``param`` (:func:`train.mup_param.parametrise`).

    ``init`` is one of :data:`ghn.warm_start.INITS`: ``default`` (drawn from ``seed``), ``predicted`` (the GHN's
    parameters), ``predicted+noise`` or ``predicted+orth`` (the prediction diversified, Knyazev 2022: a GHN tiles
    one decoded block over a wide layer, so a predicted 1024x1024 matrix has rank 64 and is no i.i.d. draw;
    orthogonalisation restores a full-rank matrix, with entries of size ``1/sqrt(max(fan_in, fan_out))``).

    ``predicted_readout=False`` says that ``predict`` leaves the classifier at its default initialisation
    (``--keep-classifier-init``), so muP converts it as a default one.

    Args:
        family, width, setting: what to build (the setting's multipliers; its ``lr`` is not used here).
        param: ``"mup"`` or ``"sp"``.
        init: the initialisation (above).
        predict: sets a model's parameters to a GHN's prediction in place (:func:`train.rank.ghn_predictor`).
        seed: seed of the default initialisation (and of the diversifying noise).
        readout_zero_init, predicted_readout: as :func:`train.mup_param.parametrise`.

    Returns:
        The model, on the CPU.

    Raises:
        UsageError: an unknown ``init``, or a predicted one without ``predict``.
    """
    from ghn.warm_start import CONTROLS, INITS, warm_start

    starts = [i for i in INITS if i not in CONTROLS]  # the controls are fine-tuning baselines, not muP starts
    if init not in starts:
        raise UsageError(f"--init must be one of {', '.join(starts)}, got {init!r}")
    if init != "default" and predict is None:
        raise UsageError(f"--init {init} needs a GHN (--ckpt)")
    torch.manual_seed(seed)
    model = warm_start(family.build(width), init, predict, generator=torch.Generator().manual_seed(seed))
    return parametrise(model, family, param, predicted=init != "default", predicted_readout=predicted_readout,
                       output_mult=setting.output_mult, init_mult=setting.init_mult,
                       readout_zero_init=readout_zero_init)


def run_trial(family: WidthFamily, width: int, setting: Setting, data: ImageData, *, param: str, steps: int,
              init: str = "default", predict: Predictor | None = None, optimizer: str = "sgd",
              batch_size: int = 64, seed: int = 0, device: str = "cpu", readout_zero_init: bool = False,
              model_hook: Callable[[nn.Module], None] | None = None, heldout: Batches | None = None,
              predicted_readout: bool = True) -> Trial:
    """Train ``family`` at ``width`` with ``setting`` for ``steps`` steps and return its :class:`Trial`.

    Args:
        family, width, setting: what to train.
        data: the task (batches from ``TrainBatches(data, batch_size, seed)``).
        param: ``"mup"`` or ``"sp"``.
        steps: optimiser steps (cosine schedule to 0 over them).
        init: one of :data:`ghn.warm_start.INITS` (see :func:`build`; the predicted ones need ``predict``).
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adam"``.
        batch_size, seed, device: as :func:`train.finetune.train_sgd`.
        readout_zero_init: start a default-initialised muP readout at zero.
        model_hook: called with the model before training (e.g. to register activation hooks).
        heldout: held-out batches; when given, the trial's ``top1`` is measured after training (not if diverged).
        predicted_readout: as :func:`build`.

    Raises:
        UsageError: bad ``param``, ``optimizer`` or ``init`` (see :func:`build`).
    """
    model = build(family, width, setting, param=param, init=init, predict=predict, seed=seed,
                  readout_zero_init=readout_zero_init, predicted_readout=predicted_readout).to(device)
    x, y = data.train.images[:batch_size].float().to(device) / 255, data.train.labels[:batch_size].to(device)
    flops = step_flops(model, x, y) if steps else 0.0
    if model_hook is not None:
        model_hook(model)
    t0 = time.perf_counter()
    curve = train_sgd(model, data, steps=steps, lr=setting.lr, batch_size=batch_size, seed=seed, device=device,
                      grad_clip=None,
                      optimizer=lambda ps: make_optimizer(ps, name=optimizer, lr=setting.lr, param=param))
    seconds = time.perf_counter() - t0
    tail = curve.loss[-max(5, int(round(steps * TAIL_FRACTION))):]
    loss = math.inf if curve.diverged_at is not None or not tail else sum(tail) / len(tail)
    top1 = None
    if heldout is not None and math.isfinite(loss):
        top1 = accuracy(model, heldout, bn_mode="running", device=device).top1
    return Trial(width, param, init, setting.lr, setting.output_mult, setting.init_mult, loss, curve.diverged_at,
                 seconds, flops * len(curve.loss), top1)


def mean_trial(trials: Sequence[Trial]) -> Trial:
    """One setting trained with several seeds as one :class:`Trial`: mean loss (``inf`` when any seed diverged,
    ``diverged_at`` the earliest divergence), mean top-1 (``None`` unless every seed measured one), summed seconds
    and FLOPs, ``seeds`` the number of runs.

    Near the optimum the loss-against-lr curve is flat to within the seed-to-seed noise, so the best grid point of
    one seed is partly chance; Tensor Programs V (Yang, Hu et al., 2022) averages its curves over seeds too.

    Args:
        trials: runs of one (width, setting) with different seeds.

    Returns:
        The mean :class:`Trial` (with the first run's width, parametrisation, init and setting).

    Raises:
        ValueError: no trials, or trials of different widths or settings.
    """
    if not trials:
        raise ValueError("mean_trial needs at least one trial")
    first = trials[0]
    if any((t.width, t.param, t.init, t.lr, t.output_mult, t.init_mult) != (first.width, first.param, first.init,
           first.lr, first.output_mult, first.init_mult) for t in trials):
        raise ValueError("mean_trial averages runs of one width and setting; got several")
    losses = [t.loss for t in trials]
    diverged = [t.diverged_at for t in trials if t.diverged_at is not None]
    top1s = [t.top1 for t in trials]
    return dataclasses.replace(
        first, loss=sum(losses) / len(losses) if all(map(math.isfinite, losses)) else math.inf,
        diverged_at=min(diverged) if diverged else None, seconds=sum(t.seconds for t in trials),
        flops=sum(t.flops for t in trials), top1=None if None in top1s else sum(top1s) / len(top1s),
        seeds=sum(t.seeds for t in trials))


def run_setting(family: WidthFamily, width: int, setting: Setting, data: ImageData, *, seeds: Sequence[int] = (0,),
                **kwargs) -> Trial:
    """:func:`run_trial` once per seed (the seed of the default initialisation, the noise and the data order),
    averaged by :func:`mean_trial`.

    Args:
        family, width, setting, data: what to train.
        seeds: one run per seed.
        **kwargs: passed on to :func:`run_trial` (not ``seed``).

    Returns:
        The mean :class:`Trial`.

    Raises:
        UsageError: as :func:`run_trial`; no seeds.
    """
    if not seeds:
        raise UsageError("at least one seed is needed")
    if "seed" in kwargs:
        raise TypeError("run_setting takes seeds=[...], not seed=")
    return mean_trial([run_trial(family, width, setting, data, seed=s, **kwargs) for s in seeds])


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The trial of lowest final loss (the first of equals).

    Args:
        trials: the trials of one search.

    Returns:
        The best :class:`Trial`.

    Raises:
        UsageError: no trial converged.
    """
    finite = [t for t in trials if math.isfinite(t.loss)]
    if not finite:
        raise UsageError("every trial diverged; lower the learning-rate range (--lr-range)")
    return min(finite, key=lambda t: t.loss)


def search(family: WidthFamily, width: int, settings: Sequence[Setting], data: ImageData, *,
           log: Callable[[str], None] | None = None, **kwargs) -> list[Trial]:
    """One :func:`run_setting` per setting at ``width`` (keyword arguments passed on, ``seeds`` included).

    Args:
        family, width, settings, data: what to train.
        log: optional ``callable(str)`` for one line per setting.

    Returns:
        The trials, in the order of ``settings``.
    """
    trials = []
    for s in settings:
        t = run_setting(family, width, s, data, **kwargs)
        trials.append(t)
        if log:
            loss = f"{t.loss:.4f}" if math.isfinite(t.loss) else f"diverged at step {t.diverged_at}"
            seeds = f", mean of {t.seeds} seeds" if t.seeds > 1 else ""
            log(f"  width {width:>5} {t.param} {s.label():<24} loss {loss}{seeds}  ({t.seconds:.1f} s)")
    return trials


def optimum_shift(best_lr_by_width: dict[int, float]) -> int:
    """How many factor-2 steps the best learning rate moves across widths: ``max - min`` of ``log2(lr)``.

    Args:
        best_lr_by_width: width -> best learning rate.

    Returns:
        The number of steps (0 for an empty dict).
    """
    logs = [math.log2(v) for v in best_lr_by_width.values()]
    return int(round(max(logs) - min(logs))) if logs else 0
