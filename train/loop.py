"""The GHN training loop (Knyazev et al., NeurIPS 2021, Sec. 4 and Eq. 2; reference ``experiments/train_ghn.py``).

Each step draws a meta-batch of architectures (:mod:`archspace.meta_batch`), lets the GHN predict all of their
parameters differentiably and scores them on the same batch of images (:class:`train.meta_loss.MetaBatchLoss`),
and updates the GHN with Adam and gradient-norm clipping. Metrics go to ``metrics.csv`` (:mod:`train.metrics`),
complete checkpoints to ``checkpoints/`` (:mod:`train.checkpoint`).

Everything random in a step is a function of ``(seed, step)``: the architectures, the images, their
augmentation and the torch RNG used inside the networks. Together with complete checkpoints (weights, optimiser,
scheduler, RNG, counters) this makes a resumed run end with exactly the weights of an uninterrupted one.

Usable without Hydra::

    trainer = Trainer(ghn, archs, TrainBatches(load_digits(), 64), "runs/x", steps=1000)
    result = trainer.fit()

Under ``torchrun`` (``torch.distributed`` initialised) the meta-batch is split across ranks, the GHN is wrapped
in ``DistributedDataParallel`` (gradients averaged), and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.data import Batch

from archspace.dataset import ArchDataset
from archspace.errors import UsageError
from archspace.meta_batch import ArchPairs, MetaBatchSampler, collate_meta_batch
from archspace.seeding import mix_seed

from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import TrainBatches
from .meta_loss import MetaBatchLoss
from .metrics import TENSORBOARD_FIELDS, append_metrics, tensorboard_writer, truncate_metrics
from .optim import build_optimizer, build_progress_scheduler

log = logging.getLogger(__name__)


class TrainingDiverged(UsageError, RuntimeError):
    """Raised after too many consecutive steps with a non-finite loss or gradient. Its message says what to change
    (a lower ``optim.lr``, the data), so the command lines report it as one line (a :class:`UsageError`); it stays a
    ``RuntimeError`` for callers that catch run failures."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    ghn_path: str | None
    last_loss: float
    last_acc: float
    skipped_large: int
    skipped_nonfinite: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    planned_steps: int = 0  #: ``steps`` of the configuration
    cut_short: bool = False  #: the safety time limit stopped the run before ``planned_steps``
    total_seconds: float = 0.0  #: training seconds over all segments of the run (``seconds`` is this call's)


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


class Trainer:
    """Train a GHN on meta-batches of architectures (see the module docstring).

    Args:
        ghn: the hypernetwork (:class:`ghn.GHN`).
        archs: the training architectures; each step's meta-batch is drawn from them by the rule of
            :mod:`archspace.meta_batch`.
        images: training image batches (:class:`train.data.TrainBatches`), the same for every rank.
        run_dir: where checkpoints, ``metrics.csv`` and ``ghn.safetensors`` go.
        steps: total number of steps of the run.
        meta_batch_size: networks per step over all ranks (8 in the paper).
        max_nodes: a meta-batch with more graph nodes in total is skipped, its step trains nothing and is counted
            in ``skipped_large`` (2,200 in the paper); 0: no cap.
        optimizer: ``adam`` (paper), ``adamw`` or ``sgd``.
        lr, weight_decay: optimiser settings (paper: 1e-3, 1e-5).
        milestones, gamma: lr x ``gamma`` at these fractions of the run (paper: 200/300 and 250/300, x0.1).
        lr_schedule: ``step`` (the paper's, with ``milestones``) or ``linear`` (decay to 0 over the run); see
            :func:`train.optim.schedule_factor`.
        warmup: fraction of the run with a linear lr warm-up from 0 (0: none, as the paper).
        clip: gradient-norm clip (paper: 5); 0: off.
        label_smoothing: cross-entropy label smoothing.
        amp: autocast (bfloat16) on CUDA; ignored on CPU.
        channels_last: run the networks in channels-last memory format (see
            :class:`train.meta_loss.MetaBatchLoss`).
        device: ``cpu``/``cuda``/``cuda:k``; default: CUDA if available.
        seed: run seed (architectures, images, augmentation and in-network randomness follow from it).
        ckpt_every: write a checkpoint every this many steps (and always at the end); 0: only at the end.
        keep_checkpoints: complete checkpoints kept.
        log_every: write a metrics row every this many steps.
        max_bad_steps: stop (:class:`TrainingDiverged`) after this many consecutive non-finite steps.
        inject_nan_steps: steps whose loss is multiplied by NaN (fault injection for tests).
        arch_cache: architectures kept in memory (useful with a small training pool).
        max_net_nodes: a drawn network with more graph nodes is redrawn (0: no cap).
        ema_decay: keep an exponential moving average of the GHN weights (``torch.optim.swa_utils.AveragedModel``),
            ``ema = decay * ema + (1 - decay) * w`` after every applied step, starting from the initial weights
            (Polyak averaging; it removes much of the step-to-step noise of a short run), checkpointed with the run;
            the final ``ghn.safetensors`` and :attr:`final_ghn` then hold the average. 0: off (the paper).
        time_limit_s: a safety stop: once this many seconds of training have passed (over all resumed segments)
            the run stops with a checkpoint and the final ``ghn.safetensors``, and :class:`TrainResult` says it was
            cut short and by how much. The lr schedule follows steps, never the clock, so a run that is not cut
            short is the same on a loaded machine as on an idle one; 0: no limit.
        progress: show a tqdm bar.
        config: the resolved run configuration (stored in checkpoints).
        on_step: called with the metrics dict after every step (rank 0).
        clock: seconds since some origin (``time.time``); tests pass a fake one to play a slow machine.

    Raises:
        UsageError: bad settings (e.g. zero steps, or a meta-batch that does not split over the ranks).
    """

    def __init__(self, ghn: nn.Module, archs: ArchDataset, images: TrainBatches, run_dir: str, *, steps: int,
                 meta_batch_size: int = 8, max_nodes: int = 2200, optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 1e-5, milestones: Sequence[float] = (200 / 300, 250 / 300),
                 gamma: float = 0.1, lr_schedule: str = "step", warmup: float = 0.0, clip: float = 5.0,
                 label_smoothing: float = 0.0,
                 amp: bool = True, channels_last: bool = True,
                 device: str | None = None, seed: int = 0, ckpt_every: int = 500, keep_checkpoints: int = 2,
                 log_every: int = 10, max_bad_steps: int = 10, inject_nan_steps: Sequence[int] = (),
                 arch_cache: int = 0, max_net_nodes: int = 0, ema_decay: float = 0.0, time_limit_s: float = 0.0,
                 progress: bool = True,
                 config: dict | None = None, on_step: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.time):
        for name, value, least in (("steps", steps, 1), ("max_bad_steps", max_bad_steps, 1),
                                   ("log_every", log_every, 1), ("keep_checkpoints", keep_checkpoints, 1),
                                   ("ckpt_every", ckpt_every, 0), ("arch_cache", arch_cache, 0)):
            if value < least:
                raise UsageError(f"train.{name} must be >= {least}, got {value}")
        if not 0.0 <= ema_decay < 1.0:
            raise UsageError(f"train.ema_decay must be in [0, 1), got {ema_decay}")
        if clip < 0:
            raise UsageError(f"train.clip must be >= 0 (0: off), got {clip}")
        self.rank = dist.get_rank() if _is_dist() else 0
        self.world_size = dist.get_world_size() if _is_dist() else 1
        if meta_batch_size % self.world_size:
            raise UsageError(f"meta_batch_size {meta_batch_size} must be divisible by the {self.world_size} ranks")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None and _is_dist():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.ghn = ghn.to(self.device)
        self.archs = archs
        self.sampler = MetaBatchSampler(len(archs), archs.num_nodes_of, meta_batch_size, max_nodes, max_net_nodes,
                                        seed)
        self.pairs = ArchPairs(archs, seed, arch_cache)
        self.images = images
        self.run_dir = run_dir
        self.steps, self.meta_batch_size, self.max_nodes = steps, meta_batch_size, max_nodes
        self.clip, self.amp, self.seed = clip, amp and self.device.type == "cuda", seed
        self.ckpt_every, self.keep, self.log_every = ckpt_every, keep_checkpoints, log_every
        self.max_bad_steps, self.inject_nan_steps = max_bad_steps, set(int(s) for s in inject_nan_steps)
        self.time_limit_s, self.progress, self.config, self.on_step = time_limit_s, progress, config, on_step
        self.clock = clock
        self.objective = MetaBatchLoss(self.ghn, label_smoothing, channels_last)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Node types absent from a rank's networks leave some decoder heads without gradient.
            self.model = DDP(self.objective, device_ids=ids, find_unused_parameters=True)
        else:
            self.model = self.objective
        self.optimizer = build_optimizer(self.ghn.parameters(), optimizer, lr=lr, weight_decay=weight_decay)
        self.ema_decay = float(ema_decay)
        self.ema: AveragedModel | None = None
        if self.ema_decay:
            self.ema = AveragedModel(self.ghn, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay))
            self.ema.update_parameters(self.ghn)  # the first update copies: the average starts at the initial weights
        self.elapsed = 0.0  # training seconds over all segments of the run (resumes included)
        self.step = 0
        # the schedule's name as checkpoints record it (a run without warm-up keeps the plain name)
        self.lr_schedule = lr_schedule + (f"+warmup{warmup:g}" if warmup else "")
        self.scheduler = build_progress_scheduler(self.optimizer, self.run_fraction, lr_schedule, milestones, gamma,
                                                  warmup)
        self.skipped_large = 0
        self.skipped_nonfinite = 0
        self.bad_in_a_row = 0

    # -------------------------------------------------------------------------------------------------------
    # State
    # -------------------------------------------------------------------------------------------------------

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def state(self) -> dict:
        """Everything but the GHN weights needed to resume (weights-only loadable)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "skipped_large": self.skipped_large,
            "skipped_nonfinite": self.skipped_nonfinite,
            "bad_in_a_row": self.bad_in_a_row,
            "elapsed": self.elapsed,
            "seed": self.seed,
            "lr_schedule": self.lr_schedule,
            "total_steps": self.steps,
            "config_json": json.dumps(self.config or {}, default=str),
            "ema": {k: v.cpu() for k, v in self.ema.state_dict().items()} if self.ema is not None else {},
        }

    def run_fraction(self) -> float:
        """Fraction of the run done, ``step / steps`` (the lr schedule's clock: steps, not seconds, so that the
        same seed and configuration give the same weights whatever the machine's load)."""
        return min(self.step / self.steps, 1.0)

    def save(self) -> str | None:
        """Write a checkpoint of the current step (rank 0 only); returns its path."""
        path = None
        if self.is_writer:
            path = save_checkpoint(self.run_dir, self.step, self.ghn, self.state(), keep=self.keep,
                                   metadata=self._training_metadata())
        if _is_dist():
            dist.barrier()
        return path

    def resume(self) -> bool:
        """Load the latest checkpoint of ``run_dir`` if there is one; returns whether one was loaded.

        Raises:
            UsageError: the checkpoint was trained with another seed, number of steps, lr schedule or
                ``ema_decay`` (resuming would not reproduce the run); ``ghn.checkpoint.CheckpointError`` (a
                ``UsageError``) for an unreadable one.
        """
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        ghn_path, state = load_checkpoint(path)
        if int(state["seed"]) != self.seed:
            raise UsageError(f"checkpoint {path} was trained with seed {state['seed']}, this run has {self.seed}; "
                             f"resuming would not reproduce the run")
        if "lr_schedule" not in state:
            raise UsageError(f"checkpoint {path} was written by an older version of the trainer (its lr schedule "
                             f"state differs); start a new run")
        if int(state.get("total_steps", self.steps)) != self.steps:  # the lr schedule spans the run's steps
            raise UsageError(f"checkpoint {path} belongs to a run of {state['total_steps']} steps, this run has "
                             f"{self.steps}; resume with the train.steps it was started with")
        if state["lr_schedule"] != self.lr_schedule:
            raise UsageError(f"checkpoint {path} was trained with lr schedule {state['lr_schedule']}, this run has "
                             f"{self.lr_schedule}; resume with the optim.schedule and optim.warmup it was started with")
        saved_ema = state["ema"]
        if bool(saved_ema) != (self.ema is not None):
            raise UsageError(f"checkpoint {path} has {'a' if saved_ema else 'no'} weight average but this run has "
                             f"ema_decay={self.ema_decay}; resume with the ema_decay it was trained with")
        loaded = type(self.ghn).load(ghn_path)
        self.ghn.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.skipped_large = int(state["skipped_large"])
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
        self.bad_in_a_row = int(state["bad_in_a_row"])
        self.elapsed = float(state["elapsed"])
        if self.ema is not None:
            self.ema.load_state_dict(saved_ema)
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _training_metadata(self) -> dict[str, str]:
        """What ``ghn.safetensors`` records of the training nets, for ``ghn-eval`` to default to (their widths)."""
        meta = {"train_steps": str(self.step)}
        if self.archs.width_range is not None:
            meta["train_width_range"] = json.dumps([int(w) for w in self.archs.width_range])
            meta["train_width_policy"] = self.archs.width_policy
            if self.archs.min_width_share:
                meta["train_min_width_share"] = repr(float(self.archs.min_width_share))
        return meta

    @property
    def final_ghn(self) -> nn.Module:
        """The GHN the run delivers: the weight average when ``ema_decay`` is set (the averaged copy, in eval mode),
        else the GHN itself."""
        if self.ema is None:
            return self.ghn
        return self.ema.module.eval()

    # -------------------------------------------------------------------------------------------------------
    # One step
    # -------------------------------------------------------------------------------------------------------

    def _meta_batch(self, step: int) -> tuple[Batch | None, list[nn.Module] | None, int]:
        """This rank's share of the meta-batch of ``step``: (graphs on device, models on device, total nodes of
        the whole meta-batch); graphs/models are ``None`` when the meta-batch is skipped (over ``max_nodes``:
        known from the node counts, before anything is built)."""
        idx = self.sampler.draw(step)
        nodes = self.sampler.total_nodes(idx)
        if self.sampler.skipped(idx):
            return None, None, nodes
        k = self.meta_batch_size // self.world_size
        graphs, models = collate_meta_batch([self.pairs[i] for i in idx[self.rank * k:(self.rank + 1) * k]])
        return graphs.to(self.device), [m.to(self.device) for m in models], nodes

    def _all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the ranks (unchanged in a single process)."""
        if not _is_dist():
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def _all_max(self, value: float) -> float:
        """``value``'s maximum over the ranks."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def train_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> dict:
        """One optimisation step at ``step`` on images ``x`` ``(B, C, H, W)``, labels ``y`` ``(B,)``.

        Returns the step's metrics. A non-finite loss or gradient norm leaves weights and optimiser untouched.
        """
        graphs, models, nodes = self._meta_batch(step)
        row = {"step": step + 1, "nodes": int(nodes), "nets": self.meta_batch_size,
               "lr": self.optimizer.param_groups[0]["lr"]}
        if graphs is None:
            self.skipped_large += 1
            row.update(loss=float("nan"), acc=float("nan"), grad_norm=float("nan"))
            return row
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        for m in models:
            m.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            k = self.meta_batch_size // self.world_size
            seeds = [mix_seed(self.seed, 4, step, self.rank * k + j) for j in range(k)]  # dropout per (step, net)
            loss, accs = self.model(graphs, models, x, y, seeds)
        if step in self.inject_nan_steps:
            loss = loss * float("nan")
        loss.backward()  # always, so that DDP ranks stay in lock-step
        if self.clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.ghn.parameters(), self.clip)
        else:
            grads = [p.grad.norm() for p in self.ghn.parameters() if p.grad is not None]
            grad_norm = torch.stack(grads).norm() if grads else torch.zeros(())
        loss_sum, acc_sum = self._all_sum([float(loss.detach()), float(accs.mean())])
        loss_v, acc_v = loss_sum / self.world_size, acc_sum / self.world_size
        if not (math.isfinite(loss_v) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_nonfinite += 1
            self.bad_in_a_row += 1
        else:
            self.optimizer.step()
            self.bad_in_a_row = 0
            if self.ema is not None:
                self.ema.update_parameters(self.ghn)
        row.update(loss=loss_v, acc=acc_v, grad_norm=float(grad_norm))
        return row

    # -------------------------------------------------------------------------------------------------------
    # The run
    # -------------------------------------------------------------------------------------------------------

    def fit(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train until ``steps`` (or ``stop_at``, for tests that interrupt a run), checkpointing on the way.

        Args:
            resume: continue from the latest checkpoint in ``run_dir`` (starts fresh when there is none).
            stop_at: stop after this step (a checkpoint is written), as if the process had been stopped.

        Returns:
            :class:`TrainResult`; ``ghn_path`` is ``run_dir/ghn.safetensors`` once the run is complete.

        Raises:
            TrainingDiverged: ``max_bad_steps`` consecutive non-finite steps; the last checkpoint is kept.
            UsageError: ``run_dir`` has checkpoints but ``resume`` is false, or they cannot be resumed by this
                trainer (see :meth:`resume`), or the resumed run was cut short and has already used
                ``time_limit_s`` (the message gives the ``train.time_limit_min`` that lets it finish).
        """
        if self.is_writer:
            os.makedirs(self.run_dir, exist_ok=True)
        if resume:
            self.resume()
            if self.time_limit_s and self.elapsed >= self.time_limit_s and self.step < self.steps:
                raise UsageError(
                    f"{self.run_dir} was cut short at step {self.step} of {self.steps} after {self.elapsed:.0f} s of "
                    f"training, and its safety time limit is {self.time_limit_s:.0f} s; to finish it, resume with a "
                    f"larger limit (train.time_limit_min={math.ceil(2 * self.elapsed / 60)}) or none (0)")
        elif latest_checkpoint(self.run_dir) is not None:
            raise UsageError(f"{self.run_dir} already has checkpoints; pass resume=True to continue that run or use a "
                             f"new run directory")
        end = self.steps if stop_at is None else min(stop_at, self.steps)
        metrics_path = os.path.join(self.run_dir, "metrics.csv")
        if self.is_writer:
            truncate_metrics(metrics_path, self.step)
        writer = tensorboard_writer(self.run_dir) if self.is_writer else None
        bar = None
        if self.progress and self.is_writer:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=self.step, desc="ghn-train", dynamic_ncols=True)
        t_start = self.clock()
        history: list[dict] = []
        ema_loss = ema_acc = None
        last = {"loss": float("nan"), "acc": float("nan")}
        batches = self.images.iterate(self.step, end)
        timed_out = False
        self.ghn.train()
        try:
            while self.step < end:
                t0 = self.clock()
                x, y = next(batches)
                row = self.train_step(self.step, x, y)
                self.step += 1
                self.elapsed += self.clock() - t0
                if _is_dist() and self.time_limit_s:  # ranks must agree on the schedule and on stopping
                    self.elapsed = max(self._all_max(self.elapsed), self.elapsed)
                with warnings.catch_warnings():
                    # A skipped first step calls this before optimizer.step(); harmless here, as the factor follows
                    # the run's progress, not the number of scheduler steps.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                    self.scheduler.step()  # the lr for the fraction of the run now done
                row.update(skipped_large=self.skipped_large, skipped_nonfinite=self.skipped_nonfinite,
                           sec_per_step=self.clock() - t0)
                if math.isfinite(row["loss"]):
                    last = row
                    ema_loss = row["loss"] if ema_loss is None else 0.95 * ema_loss + 0.05 * row["loss"]
                    ema_acc = row["acc"] if ema_acc is None else 0.95 * ema_acc + 0.05 * row["acc"]
                history.append(row)
                if self.bad_in_a_row >= self.max_bad_steps:
                    raise TrainingDiverged(
                        f"{self.bad_in_a_row} consecutive steps had a non-finite loss or gradient (last at step "
                        f"{self.step}); stopping. No such step reached the weights; the last good checkpoint is "
                        f"{latest_checkpoint(self.run_dir)}. Lower optim.lr or check the data.")
                if self.is_writer:
                    if self.step % self.log_every == 0 or self.step == end:
                        append_metrics(metrics_path, row)
                        if writer is not None:
                            for k in TENSORBOARD_FIELDS:
                                writer.add_scalar(f"train/{k}", row[k], self.step)
                    if bar is not None:
                        bar.update(1)
                        if ema_loss is not None:
                            bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}",
                                            skip=self.skipped_large + self.skipped_nonfinite)
                    if self.on_step is not None:
                        self.on_step(row)
                timed_out = bool(self.time_limit_s) and self.elapsed >= self.time_limit_s
                if timed_out:
                    log.warning("safety time limit of %.0f s reached: run CUT SHORT at step %d of %d (%.1f%% of the "
                                "planned steps; the lr had not decayed to its end); its result is not the "
                                "reproducible one of this configuration", self.time_limit_s, self.step, self.steps,
                                100.0 * self.step / self.steps)
                if self.ckpt_every and self.step % self.ckpt_every == 0 and self.step < end:
                    self.save()
                if timed_out:
                    break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        self.save()
        ghn_path = None
        if self.step >= self.steps or timed_out:
            ghn_path = os.path.join(self.run_dir, "ghn.safetensors")
            if self.is_writer:
                self.final_ghn.save(ghn_path, self._training_metadata())
            if _is_dist():
                dist.barrier()
        return TrainResult(self.step, ghn_path, float(last["loss"]), float(last["acc"]), self.skipped_large,
                           self.skipped_nonfinite, self.clock() - t_start, history, planned_steps=self.steps,
                           cut_short=timed_out and self.step < self.steps, total_seconds=self.elapsed)
