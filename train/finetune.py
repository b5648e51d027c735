"""Fine-tune a network with SGD, from GHN-predicted parameters or from its default initialisation.

Predicted parameters are a starting point for training (Knyazev et al., NeurIPS 2021, Sec. 5.4 and Fig. 6:
networks initialised by GHN-2 reach a given accuracy in fewer SGD steps). :func:`train_sgd` runs the same
recipe for both starts: the same seeded batches (:class:`train.data.TrainBatches`, a function of
``(seed, step)``), the same global RNG seed (dropout), SGD with momentum 0.9, weight decay 5e-4 and a cosine
learning-rate schedule over the budget. :func:`speedup` then compares the two curves.

BatchNorm at the start: a GHN predicts BN weights and biases but not running statistics, so a predicted network
still carries mean 0 / variance 1 buffers. ``ghn finetune`` replaces them before step 0 by the exact average over
a few training batches (:func:`ghn.batchnorm.recompute_bn_stats` on :func:`bn_batches`: no augmentation, a
stream separate from the training order); evaluation uses these running statistics (``model.eval()``), and
training then updates them as usual.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.data import ImageData, TrainBatches, mix_seed

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``; networks with auxiliary heads (GoogLeNet, Inception in train mode) return a tuple whose first
    element holds the main logits ``(B, num_classes)``."""
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def bn_batch_stats_mode(model: nn.Module):
    """Within the block, the model is in evaluation mode except BatchNorm, which normalises with the statistics
    of each batch; afterwards modes and BN running buffers are exactly as before (the block leaves no trace).

    This is how the paper evaluates networks with predicted parameters (batches of 64): running statistics are
    not predicted. Dropout and the like stay in evaluation mode.
    """
    modes = {m: m.training for m in model.modules()}
    layers = _bn_layers(model)
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in layers]
    model.eval()
    for m in layers:
        m.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, buffers in zip(layers, saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        for m, mode in modes.items():
            m.train(mode)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, *, bn_batch_stats: bool = False,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy of a classifier on evaluation batches.

    Args:
        model: the network; its modes and BN buffers are restored afterwards.
        batches: ``(images (B, C, H, W), labels (B,))`` pairs.
        bn_batch_stats: normalise BatchNorm with batch statistics (predicted parameters, paper protocol)
            instead of running statistics.
        device: where to run.

    Returns:
        ``(accuracy in %, loss)``; the loss is ``inf`` when the network outputs non-finite logits.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    correct, total, loss_sum = 0, 0, 0.0
    with contextlib.ExitStack() as stack:
        if bn_batch_stats:
            stack.enter_context(bn_batch_stats_mode(model))
        else:
            stack.callback(model.train, model.training)
            model.eval()
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = _logits(model, x)  # (B, num_classes)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += y.numel()
    if total == 0:
        raise ValueError("no evaluation images: the evaluation split or --eval-images is empty")
    loss = loss_sum / total
    return 100.0 * correct / total, (loss if math.isfinite(loss) else float("inf"))


@dataclass
class Curve:
    """A training run: loss per step and held-out accuracy/loss at evaluation steps (step 0 = before training)."""

    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged_at: int | None = None  # first step with a non-finite loss (training stopped there)

    def as_dict(self) -> dict:
        """JSON-friendly dict (non-finite numbers become ``None``)."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return [clean(x) for x in v] if isinstance(v, list) else v

        return {k: clean(v) for k, v in asdict(self).items()}


def train_sgd(model: nn.Module, data: ImageData, *, steps: int, lr: float = 0.05, batch_size: int = 64,
              seed: int = 0, momentum: float = 0.9, weight_decay: float = 5e-4, eval_batches: Batches | None = None,
              eval_every: int = 0, grad_clip: float | None = None, device: str | torch.device = "cpu",
              log=None) -> Curve:
    """Train a classifier for ``steps`` SGD steps on seeded batches, evaluating every ``eval_every`` steps.

    Two calls with the same ``seed`` see the same batches in the same order with the same augmentation and the
    same dropout draws, so a warm-started and a from-scratch run differ only in their starting parameters.

    Args:
        model: the network (trained in place).
        data: the task; batches come from ``TrainBatches(data, batch_size, seed)``.
        steps: number of SGD steps (>= 0).
        lr: peak learning rate (cosine decay to 0 over ``steps``).
        batch_size: images per step.
        seed: seed of the data order, augmentation and dropout.
        momentum, weight_decay: SGD settings.
        eval_batches: held-out batches; with ``eval_every > 0`` accuracy is measured at step 0, every
            ``eval_every`` steps and at the last step (BN with running statistics).
        eval_every: evaluation period in steps (0: never).
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        device: where to train.
        log: optional ``callable(str)`` for progress lines.

    Returns:
        The :class:`Curve`. Training stops early, with ``diverged_at`` set, on a non-finite loss.

    Raises:
        ValueError: negative ``steps`` or non-positive ``lr``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    model.to(device)
    curve = Curve()
    t0 = time.perf_counter()

    def eval_at(step: int) -> None:
        if eval_batches is None or eval_every <= 0:
            return
        acc, loss = evaluate(model, eval_batches, device=device)
        curve.eval_steps.append(step)
        curve.accuracy.append(acc)
        curve.eval_loss.append(loss)
        if log:
            log(f"step {step:>6}  held-out acc {acc:6.2f}%  loss {loss:.4f}")

    eval_at(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    torch.manual_seed(seed)  # dropout and any other in-model randomness
    model.train()
    batches = TrainBatches(data, batch_size=batch_size, seed=seed)
    for step, (x, y) in enumerate(batches.iterate(0, steps), 1):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(_logits(model, x), y)  # logits (B, num_classes)
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
        curve.loss_steps.append(step)
        curve.loss.append(float(loss.detach()))
        if eval_every > 0 and (step % eval_every == 0 or step == steps):
            eval_at(step)
            model.train()
    curve.seconds = time.perf_counter() - t0
    return curve


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


def speedup(warm: Curve, scratch: Curve, checkpoints: Sequence[int] | None = None) -> list[dict]:
    """For checkpoints of the warm-started run, how many steps the from-scratch run needs to match its accuracy.

    At a checkpoint step ``s`` the warm run has held-out accuracy ``a``; ``scratch_steps`` is the first
    evaluation step at which the from-scratch run reaches at least ``a`` and ``speedup = scratch_steps / s``.
    Resolution is the evaluation period. Step 0 (the accuracy of the predicted parameters themselves) gives
    ``scratch_steps`` but no ratio.

    Args:
        warm: curve of the run from predicted parameters.
        scratch: curve of the run from the default initialisation (same evaluation steps).
        checkpoints: warm-run evaluation steps to report (default: :func:`default_checkpoints` plus step 0).

    Returns:
        One dict per checkpoint: ``step``, ``warm_accuracy``, ``scratch_steps`` (``None``: not reached within the
        budget), ``speedup`` (``None`` when not defined; with ``speedup_lower_bound`` = budget / step when the
        from-scratch run never got there).

    Raises:
        ValueError: a checkpoint that is not an evaluation step of the warm run.
    """
    if checkpoints is None:
        checkpoints = ([0] if 0 in warm.eval_steps else []) + default_checkpoints(warm.eval_steps)
    acc_at = dict(zip(warm.eval_steps, warm.accuracy))
    budget = scratch.eval_steps[-1] if scratch.eval_steps else 0
    rows = []
    for s in checkpoints:
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
