"""Train a network with SGD, from GHN-predicted parameters or from its default initialisation: the project's one
SGD recipe, and the comparison of a warm-started run with a run from scratch.

Predicted parameters are a starting point for training (Knyazev et al., NeurIPS 2021, Sec. 5.4 and Fig. 6:
networks initialised by GHN-2 reach a given accuracy in fewer SGD steps). Every "N SGD steps" figure of the project
(``ghn-eval``'s ``sgd_steps`` baseline, ``ghn rank --validate N``, both runs of ``ghn finetune``) comes from
:func:`train_sgd`, so the figures are comparable:

- SGD with momentum 0.9 and weight decay 5e-4, the paper's setting for training the networks (Sec. 5.1);
- a cosine schedule from ``lr`` down to 0 over the run's own ``N`` steps: an ``N``-step figure is a finished
  short schedule, not a snapshot taken in the middle of a longer one (``ghn-eval`` therefore runs each requested
  ``N`` separately);
- the global gradient norm clipped at 5, the value the reference uses for GHN training: a network at its default
  initialisation (no BatchNorm, deep) can take a huge first step at ``lr`` 0.05 and diverge, and clipping keeps
  the few-step baselines finite;
- the same seeded batches (:class:`train.data.TrainBatches`, a function of ``(seed, step)``) and the same global
  RNG seed (dropout) for every run with the same ``seed``, so two starts differ only in their parameters.

:func:`speedup` then compares a warm-started curve with one from scratch.

BatchNorm at the start: a GHN predicts BN weights and biases but not running statistics, so a predicted network
still carries mean 0 / variance 1 buffers. ``ghn finetune`` replaces them before step 0 by the exact average over
a few training batches (:func:`ghn.batchnorm.recompute_bn_stats` on :func:`bn_batches`: no augmentation, a
stream separate from the training order); held-out accuracy during training uses these running statistics, and
training then updates them as usual.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from archspace.seeding import mix_seed
from train.accuracy import Accuracy, accuracy, chance, main_logits
from train.data import ImageData, TrainBatches

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

#: The SGD recipe (see the module docstring for why each value).
SGD_LR = 0.05
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4
SGD_GRAD_CLIP = 5.0
SGD_RECIPE = (f"SGD momentum {SGD_MOMENTUM}, weight decay {SGD_WEIGHT_DECAY}, cosine decay to 0 over the run, "
              f"gradient norm clipped at {SGD_GRAD_CLIP}")


@dataclass
class Curve:
    """A training run: loss per step and held-out accuracy/loss at evaluation steps (step 0 = before training).

    ``dataclasses.asdict`` gives its JSON form (write it with :func:`archspace.files.write_json`, which turns
    non-finite numbers into ``null``).
    """

    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged_at: int | None = None  # first step with a non-finite loss (training stopped there)


def train_sgd(model: nn.Module, data: ImageData, *, steps: int, lr: float = SGD_LR, batch_size: int = 64,
              seed: int = 0, eval_batches: Batches | None = None, eval_every: int = 0,
              device: str | torch.device = "cpu", log: Callable[[str], None] | None = None,
              on_step: Callable[[int, nn.Module], None] | None = None, warmup: int = 0,
              optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
              grad_clip: float | None = SGD_GRAD_CLIP) -> Curve:
    """Train a classifier in place for ``steps`` steps of the project's SGD recipe (module docstring), evaluating
    every ``eval_every`` steps.

    Two calls with the same ``seed`` see the same batches in the same order with the same augmentation and the
    same dropout draws, so a warm-started and a from-scratch run differ only in their starting parameters.

    Args:
        model: the network (trained in place).
        data: the task; batches come from ``TrainBatches(data, batch_size, seed)``.
        steps: number of SGD steps (>= 0); the cosine schedule spans them.
        lr: peak learning rate.
        batch_size: images per step.
        seed: seed of the data order, augmentation and dropout.
        eval_batches: held-out batches; with ``eval_every > 0`` accuracy is measured at step 0, every
            ``eval_every`` steps and at the last step (BatchNorm with running statistics).
        eval_every: evaluation period in steps (0: never).
        device: where to train.
        log: optional ``callable(str)`` for progress lines.
        on_step: optional ``callable(step, model)`` called after each optimiser step (``step`` counts from 1),
            e.g. to keep the weights of step K for lottery-ticket rewinding (:mod:`train.prune`).
        warmup: steps of linear learning-rate warm-up before the cosine decay (:func:`lr_factor`; 0: none).
        optimizer: ``params -> optimiser`` replacing the recipe's SGD (e.g. muP's ``MuSGD`` built by
            :func:`train.mup_param.make_optimizer`, whose per-parameter learning rates the schedule scales alike);
            ``lr`` is then the optimiser's business and only the schedule's shape is applied.
        grad_clip: global gradient-norm bound (``None``: no clipping, as muP runs need: a global bound couples the
            layers' updates to the width).

    Returns:
        The :class:`Curve`. Training stops early, with ``diverged_at`` set, on a non-finite loss.

    Raises:
        ValueError: negative ``steps`` or non-positive ``lr``, or ``warmup`` outside ``0..steps``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0 <= warmup <= steps:
        raise ValueError(f"warmup must be between 0 and steps ({steps}), got {warmup}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    model.to(device)
    curve = Curve()
    t0 = time.perf_counter()

    def eval_at(step: int) -> None:
        if eval_batches is None or eval_every <= 0:
            return
        acc = accuracy(model, eval_batches, bn_mode="running", device=device)
        curve.eval_steps.append(step)
        curve.accuracy.append(acc.top1)
        curve.eval_loss.append(acc.loss)
        if log:
            log(f"step {step:>6}  held-out acc {acc.top1:6.2f}%  loss {acc.loss:.4f}")

    eval_at(0)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        opt = torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    else:
        opt = optimizer(params)
    if warmup:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, steps, warmup))
    else:  # the recipe's schedule since before warm-up existed (the same floating-point values as then)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    torch.manual_seed(seed)  # dropout and any other in-model randomness
    model.train()
    batches = TrainBatches(data, batch_size=batch_size, seed=seed)
    for step, (x, y) in enumerate(batches.iterate(0, steps), 1):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(main_logits(model(x)), y)  # logits (B, num_classes)
        if not torch.isfinite(loss):
            curve.diverged_at = step
            if log:
                log(f"step {step}: non-finite loss, training stopped")
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, model)
        curve.loss_steps.append(step)
        curve.loss.append(float(loss.detach()))
        if eval_every > 0 and (step % eval_every == 0 or step == steps):
            eval_at(step)
            model.train()
    curve.seconds = time.perf_counter() - t0
    return curve


def lr_factor(t: int, steps: int, warmup: int = 0) -> float:
    """The recipe's learning rate at step ``t`` (0-based: the ``t + 1``-th update) as a fraction of the peak:
    ``(t + 1) / warmup`` during a linear warm-up of ``warmup`` steps, then a cosine decay to 0 over the remaining
    ``steps - warmup`` steps, ``(1 + cos(pi (t - warmup) / (steps - warmup))) / 2``. With ``warmup = 0`` this is
    ``CosineAnnealingLR`` over ``steps`` (Loshchilov & Hutter, ICLR 2017, without restarts)."""
    if t < warmup:
        return (t + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / max(steps - warmup, 1)))


def accuracy_after_sgd(model: nn.Module, data: ImageData, eval_batches: Batches, *, steps: int,
                       lr: float = SGD_LR, batch_size: int = 64, seed: int = 0, bn_mode: str = "batch",
                       device: str | torch.device = "cpu") -> Accuracy:
    """Accuracy of a copy of ``model`` after ``steps`` steps of :func:`train_sgd`: the "N SGD steps" baseline of
    ``ghn-eval`` and ``ghn rank --validate``. ``model`` itself is not changed.

    Args:
        model: the starting point (e.g. a network at its default initialisation).
        data: the task whose training images are used.
        eval_batches: held-out ``(images (B, C, H, W), labels (B,))`` batches.
        steps, lr, batch_size, seed: the :func:`train_sgd` run.
        bn_mode: how BatchNorm normalises during the evaluation (``"batch"`` or ``"running"``).
        device: where to train and evaluate.

    Returns:
        The :class:`train.accuracy.Accuracy` after training; a run that diverged scores as chance
        (:func:`train.accuracy.chance`, loss ``inf``).
    """
    net = copy.deepcopy(model)
    curve = train_sgd(net, data, steps=steps, lr=lr, batch_size=batch_size, seed=seed, device=device)
    if curve.diverged_at is not None:
        return chance(data.num_classes)
    return accuracy(net, eval_batches, bn_mode=bn_mode, device=device)


def bn_batches(data: ImageData, num_batches: int, batch_size: int = 64, seed: int = 0) -> Batches:
    """Un-augmented training batches for :func:`ghn.batchnorm.recompute_bn_stats`, from a stream separate from
    the training order (seeded by ``(seed, 7)``), so recomputing statistics does not change what SGD sees."""
    return TrainBatches(data, batch_size=batch_size, seed=mix_seed(seed, 7), augment=False).iterate(0, num_batches)


def default_checkpoints(eval_steps: Sequence[int], count: int = 4) -> list[int]:
    """About ``count`` evaluation steps spread over the run (the first nonzero one, the last, evenly between)."""
    steps = [s for s in eval_steps if s > 0]
    if not steps:
        return []
    if len(steps) <= count:
        return list(steps)
    picks = {steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)}
    return sorted(picks)


def speedup(warm: Curve, scratch: Curve, checkpoints: Sequence[int] | None = None,
            budget: int | None = None) -> list[dict]:
    """For checkpoints of the warm-started run, how many steps the from-scratch run needs to match its accuracy.

    At a checkpoint step ``s`` the warm run has held-out accuracy ``a``; ``scratch_steps`` is the first
    evaluation step at which the from-scratch run reaches at least ``a`` and ``speedup = scratch_steps / s``.
    Resolution is the evaluation period. Step 0 (the accuracy of the predicted parameters themselves) gives
    ``scratch_steps`` but no ratio.

    Args:
        warm: curve of the run from predicted parameters.
        scratch: curve of the run from the default initialisation (same evaluation steps).
        checkpoints: warm-run evaluation steps to report (default: :func:`default_checkpoints` plus step 0).
        budget: the runs' planned number of steps (default: the last evaluation step of ``scratch``, which is
            short of it when that run diverged).

    Returns:
        One dict per checkpoint: ``step``, ``warm_accuracy``, ``scratch_steps`` (``None``: not reached within the
        budget), ``speedup`` (``None`` when not defined; with ``speedup_lower_bound`` = budget / step when the
        from-scratch run never got there). A checkpoint after the warm run diverged (its curve stops there) has
        ``warm_accuracy`` ``None`` and ``warm_diverged_at``, the step it diverged at.

    Raises:
        ValueError: a checkpoint that is not an evaluation step of the warm run (nor after its divergence).
    """
    if checkpoints is None:
        checkpoints = ([0] if 0 in warm.eval_steps else []) + default_checkpoints(warm.eval_steps)
    acc_at = dict(zip(warm.eval_steps, warm.accuracy))
    if budget is None:
        budget = scratch.eval_steps[-1] if scratch.eval_steps else 0
    rows = []
    for s in checkpoints:
        if s not in acc_at and warm.diverged_at is not None and s >= warm.diverged_at:
            rows.append({"step": s, "warm_accuracy": None, "scratch_steps": None, "speedup": None,
                         "warm_diverged_at": warm.diverged_at})
            continue
        if s not in acc_at:
            raise ValueError(f"checkpoint step {s} is not an evaluation step of the run ({warm.eval_steps}); "
                             "choose multiples of --eval-every")
        a = acc_at[s]
        reached = next((t for t, b in zip(scratch.eval_steps, scratch.accuracy) if b >= a), None)
        row = {"step": s, "warm_accuracy": a, "scratch_steps": reached, "speedup": None}
        if s > 0 and reached is not None:
            row["speedup"] = reached / s
        elif s > 0:
            row["speedup_lower_bound"] = budget / s
        rows.append(row)
    return rows
