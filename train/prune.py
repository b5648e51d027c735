"""Lottery-ticket experiments (``ghn prune``): iterative magnitude pruning with rewinding, its two controls, and
one-shot pruning from predicted magnitudes, level by level into a run directory that resumes.

What runs, for every seed (Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020, "Linear Mode Connectivity and
the Lottery Ticket Hypothesis"; the masks are :mod:`train.lottery`'s):

- **dense**: the network trained from its default initialisation (and, for ``--rewind predicted``, from the GHN's
  predicted parameters) for ``steps`` steps of the project's SGD recipe (:func:`train.finetune.train_sgd`); the
  run from the default initialisation also keeps its weights at each step ``K`` of ``--rewind step:K``;
- **IMP** (one curve per rewind target): at level ``L >= 1`` prune the fraction ``rate`` of the weights that
  survived level ``L - 1`` by their trained magnitude (global ranking), reset the survivors to the rewind target
  (``default``: the initialisation; ``predicted``: the GHN's parameters; ``step:K``: step K of the dense run
  from the default initialisation), train ``steps`` steps again; level ``L`` keeps ``(1 - rate)^L`` of the
  prunable weights (classifier excluded unless asked);
- **controls** on the masks of the first rewind target: ``reinit``, the same mask from a fresh default
  initialisation (another seed); ``random``, a random mask with the same number of weights in every layer,
  from the same rewind target;
- **one-shot** (``predicted`` or ``default``): no training before pruning: the mask keeps the weights of largest
  magnitude in the predicted parameters (or the default initialisation), as many as IMP keeps at that level, and
  the net trains from those parameters.

Every run of a level trains for the same ``steps`` with the same data order (the seed), whatever its starting point
(open_lth continues the schedule of the dense run after step K instead; here every start gets the same budget,
which makes the rewind targets comparable). BatchNorm trains in batch mode and its running statistics follow the
training (held-out accuracy uses them); the predicted start gets running statistics estimated on
:data:`BN_BATCHES` training batches (a GHN predicts none). A dense run that diverges before a rewind step K leaves
nothing to rewind to: the experiment stops with a one-line error.

Layout of the run directory (each file written atomically; a level counts as done once its ``metrics.json``
exists, so a killed run resumes at the first unfinished run)::

    settings.json                         the settings that define the results (a resume must give the same)
    seed-0/start-default.safetensors      the default initialisation (also: start-predicted, start-step50,
                                          start-reinit)
    seed-0/dense-default/level-00/        mask.safetensors, weights.safetensors (trained), metrics.json
    seed-0/imp-default/level-01/ ...      likewise for imp-predicted, imp-step50, reinit, random, oneshot-predicted
    runs.csv, prune.csv, sparsity.png     every run; mean and spread over seeds per curve and level; the plot
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.files import write_csv, write_json
from archspace.seeding import mix_seed
from ghn.batchnorm import recompute_bn_stats
from ghn.checkpoint import atomic_save_safetensors, copy_state_into
from train.candidates import Candidate
from train.data import ImageData
from train.finetune import Batches, bn_batches, train_sgd
from train.lottery import (
    Masks,
    apply_masks,
    count,
    dense_masks,
    layer_fractions,
    magnitude_masks,
    plain_state_dict,
    random_masks,
    remove_masks,
)

REWIND_HELP = "default (the initialisation), predicted (the GHN's parameters) or step:K (step K of the dense run)"
CONTROLS = ("reinit", "random")
ONESHOT_SOURCES = ("predicted", "default")
#: Batches of training images that estimate the BatchNorm running statistics of the predicted start.
BN_BATCHES = 10


def parse_rewind(text: str, steps: int) -> tuple[str, ...]:
    """Parse ``--rewind``: a comma list of ``default``, ``predicted`` and ``step:K`` (``0 < K < steps``).

    Returns:
        The targets in the order given, duplicates dropped (the first is the one the controls use).

    Raises:
        UsageError: an unknown target, or a step outside ``1..steps-1``.
    """
    out: list[str] = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        if token in ("default", "predicted"):
            target = token
        elif re.fullmatch(r"step:[0-9]+", token):
            k = int(token[5:])
            if not 0 < k < steps:
                raise UsageError(f"--rewind {token}: K must be between 1 and --steps - 1 = {steps - 1}")
            target = f"step:{k}"
        else:
            raise UsageError(f"--rewind {token!r} is not a rewind target: use {REWIND_HELP}")
        if target not in out:
            out.append(target)
    if not out:
        raise UsageError(f"--rewind is empty: use {REWIND_HELP}")
    return tuple(out)


def parse_choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """Parse a comma list of names from ``allowed``; ``none`` or an empty string gives ``()``.

    Raises:
        UsageError: a name outside ``allowed``.
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names in ([], ["none"]):
        return ()
    bad = [n for n in names if n not in allowed]
    if bad:
        raise UsageError(f"{flag} {','.join(bad)}: choose from {', '.join(allowed)} (comma list) or none")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PruneSettings:
    """What defines the results of a ``ghn prune`` run (stored as ``settings.json``; a resume must match).

    ``levels`` may grow on a resume (the levels already run do not depend on it); everything else must be equal.
    """

    model: str
    width: int | None
    data: str
    image_size: int
    levels: int
    rate: float
    rewind: tuple[str, ...]
    controls: tuple[str, ...]
    oneshot: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    lr: float
    batch_size: int
    eval_every: int
    include_classifier: bool
    keep_classifier_init: bool
    ckpt: str | None
    target_fraction: float = 0.9
    eval_images: int | None = None  # held-out images of every accuracy (None: the whole split)
    ckpt_sha256: str | None = None  # the GHN file's contents (a path can be overwritten by another GHN)

    def needs_ghn(self) -> bool:
        """Whether a GHN prediction is needed (a ``predicted`` rewind target or one-shot source)."""
        return "predicted" in self.rewind or "predicted" in self.oneshot

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _curve_key(kind: str, target: str) -> str:
    return f"{kind}-{target.replace(':', '')}"  # imp-step:50 -> imp-step50


def curve_label(key: str, primary: str) -> str:
    """A readable label of a curve key (``imp-step50`` -> ``IMP, rewind to step 50``)."""
    def target(t: str) -> str:
        return {"default": "default init", "predicted": "predicted"}.get(t, t.replace("step", "step "))

    kind, _, rest = key.partition("-")
    primary = primary.replace(":", "")
    if kind == "imp":
        return f"IMP, rewind to {target(rest)}"
    if kind == "dense":
        return f"dense, from {target(rest)}"
    if kind == "reinit":
        return f"control: IMP mask ({target(primary)}), fresh init"
    if kind == "random":
        return f"control: random mask, same layer sparsity ({target(primary)})"
    if kind == "oneshot":
        return f"one-shot from {target(rest)} magnitudes"
    return key


def check_run_dir(run_dir: str, settings: PruneSettings) -> None:
    """Refuse a run directory made with other settings; write ``settings.json`` in a new one.

    Raises:
        UsageError: ``settings.json`` exists with other values (every key but ``levels``), or cannot be read.
    """
    path = os.path.join(run_dir, "settings.json")
    mine = settings.as_dict()
    if os.path.exists(path):
        try:
            with open(path) as f:
                theirs = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"{path} cannot be read ({e}); remove it or use another --run-dir") from None
        diff = [k for k in mine if k != "levels" and theirs.get(k) != mine[k]]
        if diff:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine[k]!r} now" for k in diff[:4])
            raise UsageError(f"--run-dir {run_dir} holds a run with other settings ({shown}); give the same "
                             "arguments to resume it, or another --run-dir")
    write_json(path, mine)


def _load(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


class PruneRun:
    """One ``ghn prune`` experiment (module docstring): call :meth:`run`, then :meth:`rows` and :meth:`summary`.

    Args:
        settings: the experiment.
        run_dir: where every level is stored (created; an existing one is resumed, see :func:`check_run_dir`).
        candidate: the network to prune.
        data: the task (training images).
        heldout: held-out batches ``(images (B, C, H, W), labels (B,))`` for the accuracy.
        predict: a function that sets a network's parameters to the GHN's prediction in place (needed when
            ``settings.needs_ghn()``).
        device: where to train.
        log: progress lines.

    Raises:
        UsageError: a run directory with other settings; ``predicted`` asked for without ``predict``.
    """

    def __init__(self, settings: PruneSettings, run_dir: str, candidate: Candidate, data: ImageData,
                 heldout: Batches, predict: Callable[[nn.Module], nn.Module] | None = None,
                 device: str | torch.device = "cpu", log: Callable[[str], None] | None = None):
        if settings.needs_ghn() and predict is None:
            raise UsageError("--rewind predicted and --oneshot predicted need a GHN: pass --ckpt")
        self.s, self.dir, self.candidate, self.data = settings, run_dir, candidate, data
        self.heldout, self.predict, self.device = list(heldout), predict, device
        self.log = log or (lambda msg: None)
        check_run_dir(run_dir, settings)

    # ---- starting points ------------------------------------------------------------------------------------

    def _build(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        model = self.candidate.build(num_classes=self.data.num_classes, image_size=self.data.image_size)
        if state is not None:
            copy_state_into(model, state)
        return model.to(self.device)

    def _start(self, seed: int, name: str) -> dict[str, torch.Tensor]:
        """The state dict of a starting point, stored once per seed (``start-NAME.safetensors``)."""
        path = os.path.join(self.dir, f"seed-{seed}", f"start-{name.replace(':', '')}.safetensors")
        if os.path.exists(path):
            return _load(path)
        if name in ("default", "reinit"):
            torch.manual_seed(seed if name == "default" else mix_seed(seed, 1))
            state = self._build().state_dict()
        elif name == "predicted":
            model = self.predict(self._build(self._start(seed, "default")))
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                # a GHN predicts weights, not BatchNorm running statistics (left at mean 0, variance 1): estimate
                # them from training images, as ghn finetune does, so that step 0 is evaluated correctly
                recompute_bn_stats(model, bn_batches(self.data, BN_BATCHES, self.s.batch_size, seed),
                                   num_batches=BN_BATCHES)
            state = model.state_dict()
        else:  # step:K is written by the dense run from the default initialisation
            raise UsageError(f"{path} is missing although the dense run finished; delete "
                             f"{os.path.join(self.dir, f'seed-{seed}', 'dense-default')} to run it again")
        atomic_save_safetensors(state, path)
        return state

    def _rewind_state(self, seed: int, target: str) -> dict[str, torch.Tensor]:
        if target.startswith("step:"):
            dense = self._dense(seed, "default")  # writes the step-K states
            step = int(target[5:])
            if dense["diverged_at"] is not None and dense["diverged_at"] <= step:
                raise UsageError(f"the dense run of seed {seed} diverged at step {dense['diverged_at']}, before the "
                                 f"rewind point {target}: lower --lr or rewind to an earlier step")
        return self._start(seed, target)

    # ---- one training run -----------------------------------------------------------------------------------

    def _folder(self, seed: int, key: str, level: int) -> str:
        return os.path.join(self.dir, f"seed-{seed}", key, f"level-{level:02d}")

    def _train(self, seed: int, key: str, level: int, start: dict[str, torch.Tensor], masks: Masks,
               keep_steps: tuple[int, ...] = ()) -> dict:
        """Train from ``start`` under ``masks`` (or read the finished run); returns its metrics."""
        folder = self._folder(seed, key, level)
        done = os.path.join(folder, "metrics.json")
        if os.path.exists(done):
            with open(done) as f:
                return json.load(f)
        kept, total = count(masks)
        self.log(f"seed {seed}  {key:<18} level {level:>2}: {100 * kept / total:6.2f}% of {total:,} weights")
        model = self._build(start)
        apply_masks(model, masks)
        snapshots: dict[int, dict[str, torch.Tensor]] = {}

        def keep(step: int, m: nn.Module) -> None:
            if step in keep_steps:
                snapshots[step] = plain_state_dict(m)

        curve = train_sgd(model, self.data, steps=self.s.steps, lr=self.s.lr, batch_size=self.s.batch_size,
                          seed=seed, eval_batches=self.heldout, eval_every=self.s.eval_every, device=self.device,
                          on_step=keep if keep_steps else None)
        remove_masks(model)
        for step, state in snapshots.items():
            atomic_save_safetensors(state, os.path.join(self.dir, f"seed-{seed}", f"start-step{step}.safetensors"))
        atomic_save_safetensors({k: v.to(torch.uint8) for k, v in masks.items()}, os.path.join(folder,
                                                                                               "mask.safetensors"))
        atomic_save_safetensors(model.state_dict(), os.path.join(folder, "weights.safetensors"))
        metrics = {
            "seed": seed, "curve": key, "level": level, "kept": kept, "total": total, "fraction": kept / total,
            "accuracy": curve.accuracy[-1] if curve.diverged_at is None else None,
            "loss": curve.eval_loss[-1] if curve.diverged_at is None else None,
            "best_accuracy": max(curve.accuracy) if curve.accuracy else None,
            "eval_steps": curve.eval_steps, "accuracies": curve.accuracy, "diverged_at": curve.diverged_at,
            "seconds": curve.seconds, "layer_fractions": layer_fractions(masks),
        }
        write_json(done, metrics)
        self.log(f"seed {seed}  {key:<18} level {level:>2}: held-out accuracy "
                 f"{metrics['accuracy'] if metrics['accuracy'] is not None else float('nan'):.2f}% "
                 f"({curve.seconds:.1f} s)")
        return metrics

    def _trained(self, seed: int, key: str, level: int) -> tuple[nn.Module, Masks]:
        """The trained network of a finished run (masked weights) and its masks."""
        folder = self._folder(seed, key, level)
        model = self._build(_load(os.path.join(folder, "weights.safetensors")))
        masks = {k: v.bool() for k, v in _load(os.path.join(folder, "mask.safetensors")).items()}
        return model, masks

    def _dense(self, seed: int, start: str) -> dict:
        """Level 0: the dense run from ``default`` or ``predicted`` (the former keeps the step-K states)."""
        keep = tuple(int(t[5:]) for t in self.s.rewind if t.startswith("step:")) if start == "default" else ()
        state = self._start(seed, start)
        return self._train(seed, _curve_key("dense", start), 0, state,
                           dense_masks(self._build(state), self.s.include_classifier), keep_steps=keep)

    # ---- the experiment -------------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        """Run (or resume) every seed and level; returns :meth:`rows`."""
        s = self.s
        primary = s.rewind[0]
        for seed in s.seeds:
            t0 = time.perf_counter()
            for start in dict.fromkeys("predicted" if t == "predicted" else "default" for t in s.rewind):
                self._dense(seed, start)
            for level in range(1, s.levels + 1):
                level_masks = {}
                for target in s.rewind:
                    prev_key = (_curve_key("dense", "predicted" if target == "predicted" else "default")
                                if level == 1 else _curve_key("imp", target))
                    trained, prev_masks = self._trained(seed, prev_key, level - 1)
                    apply_masks(trained, prev_masks)
                    masks = magnitude_masks(trained, prev_masks, float(s.rate))
                    level_masks[target] = masks
                    self._train(seed, _curve_key("imp", target), level, self._rewind_state(seed, target), masks)
                masks = level_masks[primary]
                if "reinit" in s.controls:
                    self._train(seed, "reinit", level, self._start(seed, "reinit"), masks)
                if "random" in s.controls:
                    self._train(seed, "random", level, self._rewind_state(seed, primary),
                                random_masks(masks, mix_seed(seed, 2, level)))
                kept, total = count(masks)
                for source in s.oneshot:
                    state = self._start(seed, source)
                    model = self._build(state)
                    one = magnitude_masks(model, dense_masks(model, s.include_classifier), int(total - kept))
                    self._train(seed, _curve_key("oneshot", source), level, state, one)
                self.write_tables()
            self.log(f"seed {seed} done ({time.perf_counter() - t0:.0f} s this session)")
        self.write_tables()
        return self.rows()

    # ---- results --------------------------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        """Every finished run as a dict (``metrics.json`` plus ``label`` and ``steps_to_target``), IMP curves with
        their level-0 (dense) row.

        ``steps_to_target`` is the first evaluation step at which the run's held-out accuracy reaches
        ``target_fraction`` of the seed's dense accuracy (the dense run of the first rewind target's start), or
        ``None``.
        """
        s = self.s
        primary_dense = _curve_key("dense", "predicted" if s.rewind[0] == "predicted" else "default")
        out = []
        for seed in s.seeds:
            base = os.path.join(self.dir, f"seed-{seed}")
            if not os.path.isdir(base):
                continue
            found = {}
            for key in sorted(os.listdir(base)):
                folder = os.path.join(base, key)
                if not os.path.isdir(folder):
                    continue
                for lv in sorted(os.listdir(folder)):
                    path = os.path.join(folder, lv, "metrics.json")
                    if os.path.exists(path) and int(lv.split("-")[1]) <= s.levels:
                        with open(path) as f:
                            found[(key, int(lv.split("-")[1]))] = json.load(f)
            dense = found.get((primary_dense, 0))
            target = (s.target_fraction * dense["accuracy"]) if dense and dense["accuracy"] is not None else None
            for t in s.rewind:  # IMP curves start from their dense run
                d = found.get((_curve_key("dense", "predicted" if t == "predicted" else "default"), 0))
                if d is not None:
                    found[(_curve_key("imp", t), 0)] = {**d, "curve": _curve_key("imp", t)}
            for (key, _level), m in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                if key.startswith("dense"):
                    continue
                reach = None
                if target is not None:
                    reach = next((st for st, a in zip(m["eval_steps"], m["accuracies"]) if a >= target), None)
                out.append({**m, "label": curve_label(key, s.rewind[0]), "steps_to_target": reach,
                            "target_accuracy": target})
        return out

    def summary(self) -> list[dict]:
        """Per curve and level: the mean, standard deviation, minimum and maximum held-out accuracy over the seeds
        whose run did not diverge (``seeds`` counts every run, ``seeds_diverged`` those left out), the fraction of
        weights kept, and the median steps to the target accuracy (over the seeds that reach it)."""
        groups: dict[tuple[str, int], list[dict]] = {}
        for r in self.rows():
            groups.setdefault((r["curve"], r["level"]), []).append(r)
        out = []
        for (key, level), rs in sorted(groups.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1])):
            accs = [r["accuracy"] for r in rs if r["accuracy"] is not None]
            reach = [r["steps_to_target"] for r in rs if r["steps_to_target"] is not None]
            out.append({
                "curve": key, "label": rs[0]["label"], "level": level, "fraction": rs[0]["fraction"],
                "seeds": len(rs), "seeds_diverged": sum(r["diverged_at"] is not None for r in rs),
                "accuracy_mean": statistics.fmean(accs) if accs else None,
                "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None),
                "accuracy_min": min(accs) if accs else None, "accuracy_max": max(accs) if accs else None,
                "steps_to_target_median": statistics.median(reach) if reach else None,
                "seeds_reaching_target": len(reach),
            })
        return out

    def write_tables(self) -> tuple[str, str]:
        """Write ``runs.csv`` (every run) and ``prune.csv`` (:meth:`summary`) into the run directory."""
        cols = ["seed", "curve", "label", "level", "fraction", "kept", "total", "accuracy", "loss", "best_accuracy",
                "steps_to_target", "target_accuracy", "seconds", "diverged_at"]
        runs = os.path.join(self.dir, "runs.csv")
        write_csv(runs, cols, [[_cell(r.get(c)) for c in cols] for r in self.rows()])
        summary = self.summary()
        scols = list(summary[0]) if summary else ["curve"]
        table = os.path.join(self.dir, "prune.csv")
        write_csv(table, scols, [[_cell(r[c]) for c in scols] for r in summary])
        return runs, table


def _order(key: str) -> tuple[int, str]:
    return ({"imp": 0, "reinit": 1, "random": 2, "oneshot": 3}.get(key.partition("-")[0], 4), key)


def _cell(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def format_summary(summary: list[dict]) -> str:
    """A terminal table: one row per level (weights kept), one column per curve (accuracy mean +- std)."""
    curves = list(dict.fromkeys(r["curve"] for r in summary))
    by = {(r["curve"], r["level"]): r for r in summary}
    levels = sorted({r["level"] for r in summary})
    head = ["level", "kept"] + curves
    lines = ["  ".join(f"{h:>16}" if i >= 2 else f"{h:>6}" for i, h in enumerate(head))]
    for lv in levels:
        frac = next(r["fraction"] for r in summary if r["level"] == lv)
        cells = [f"{lv:>6}", f"{100 * frac:5.1f}%".rjust(6)]
        for c in curves:
            r = by.get((c, lv))
            cells.append((f"{r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f}" if r and r["accuracy_mean"]
                          is not None else "-").rjust(16))
        lines.append("  ".join(cells))
    return "\n".join(lines)
