"""Evaluate a GHN by the accuracy of networks whose parameters it predicts, with no training (Knyazev et al.,
NeurIPS 2021, Sec. 5.1, Table 2): for every network of a split, mean top-1/top-5 and the standard error over
networks, beside the same networks at their default initialisation and after a few SGD steps from it (the
project's one SGD recipe, :func:`train.finetune.train_sgd`: each "N steps" figure is its own N-step run).

BatchNorm: running statistics are not predicted, so by default (``bn_mode="batch"``, as in the paper) norm layers
use the statistics of each evaluation batch (batches of 64); ``bn_mode="running"`` uses the module's buffers
(:func:`ghn.batchnorm.bn_mode`).

Shapes: images ``(B, C, H, W)``, labels ``(B,)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
from scipy import stats

from archspace.errors import UsageError
from archspace.seeding import mix_seed
from ghn.batchnorm import check_bn_mode

from .accuracy import accuracy
from .data import ImageData, eval_batches
from .finetune import SGD_LR, SGD_RECIPE, accuracy_after_sgd


@dataclass
class NetResult:
    """Accuracies of one network (percent)."""

    name: str
    num_params: int
    top1: float
    top5: float
    top1_default_init: float
    top1_sgd: dict[int, float] = field(default_factory=dict)
    predict_seconds: float = 0.0


def _summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``scipy.stats.sem``); ``nan`` where undefined (no value, or one)."""
    if not values:
        return math.nan, math.nan
    mean = float(np.mean(values))
    return mean, (float(stats.sem(values)) if len(values) > 1 else math.nan)


def check_eval_args(bn_mode: str, batch_size: int, sgd_steps: Sequence[int], sgd_num_nets: int | None,
                    sgd_lr: float, image_limit: int | None, prefix: str = "") -> None:
    """Check the settings of :func:`evaluate_ghn` (the one check: ``ghn-eval`` and ``ghn-train`` call it on their
    ``eval`` section before any work, with ``prefix="eval."`` so that messages name the override).

    Raises:
        UsageError: the first setting that cannot work.
    """
    try:
        check_bn_mode(bn_mode)
    except UsageError as e:
        raise UsageError(f"{prefix}{e}") from None
    if batch_size < 1:
        raise UsageError(f"{prefix}batch_size must be >= 1, got {batch_size}")
    if any(int(s) < 1 for s in sgd_steps):
        raise UsageError(f"{prefix}sgd_steps must be positive numbers of steps, got {list(sgd_steps)}")
    if sgd_num_nets is not None and sgd_num_nets < 0:
        raise UsageError(f"{prefix}sgd_num_nets must be >= 0, got {sgd_num_nets}")
    if sgd_lr <= 0:
        raise UsageError(f"{prefix}sgd_lr must be > 0, got {sgd_lr}")
    if image_limit is not None and image_limit < 1:
        raise UsageError(f"{prefix}image_limit must be >= 1, got {image_limit}")


def check_split_range(split: str, num_nets: int | None = None, start: int = 0, width: int | None = None,
                      prefix: str = "") -> int:
    """Check that nets ``start .. start + num_nets - 1`` of an ``archspace`` split exist and can be built at
    ``width``.

    Returns:
        The number of nets asked for (the rest of the split from ``start`` when ``num_nets`` is ``None``).

    Raises:
        UsageError: unknown split (with a suggestion), a range beyond the split, or a width below the narrowest
            buildable one.
    """
    from archspace import SPLITS
    from archspace.errors import suggest
    from archspace.network import MIN_WIDTH

    if split not in SPLITS:
        named = f"{prefix}split={split!r}" if prefix else repr(split)
        raise UsageError(f"unknown architecture split {named}" + suggest(split, SPLITS))
    size = SPLITS[split]
    n = size - start if num_nets is None else num_nets
    if start < 0 or n < 1 or start + n > size:
        raise UsageError(f"split {split!r} has nets 0-{size - 1}; asked for {n} nets from index {start} "
                         f"({prefix}num_nets, {prefix}start)")
    if width is not None and width < MIN_WIDTH:
        raise UsageError(f"{prefix}width must be at least {MIN_WIDTH}, got {width}")
    return n


def evaluate_ghn(ghn: nn.Module | None, nets: Iterable[tuple[str, nn.Module]], data: ImageData, *,
                 split_name: str, image_split: str = "test", batch_size: int = 64, bn_mode: str = "batch",
                 sgd_steps: Sequence[int] = (), sgd_num_nets: int | None = None, sgd_lr: float = SGD_LR,
                 image_limit: int | None = None, ve_cutoff: int = 50, device: str | None = None, seed: int = 0,
                 progress: bool = True, keep_classifier_init: bool = False) -> dict:
    """Evaluate predicted parameters on every network of ``nets``.

    Each network's parameters are predicted on a copy with ``ghn.predict`` (which refuses a GHN trained for another
    number of classes than the networks have, unless ``keep_classifier_init``); the network itself keeps its
    default initialisation for the baselines.

    Args:
        ghn: the GHN, or ``None`` to report default-init (and SGD) figures only.
        nets: ``(name, module)`` pairs; the module's own parameters are its default initialisation.
        data: the image task.
        split_name: name of the architecture split (recorded).
        image_split: image split to evaluate on (``test``, ``heldout``).
        batch_size: evaluation batch size (64 in the paper, BatchNorm with batch statistics).
        bn_mode: ``batch`` or ``running`` (see :func:`ghn.batchnorm.bn_mode`).
        sgd_steps: numbers of SGD steps from default init to report (e.g. ``[10, 100]``), each its own run of
            :func:`train.finetune.train_sgd`.
        sgd_num_nets: run the SGD baseline on the first this many networks only (``None``: all).
        sgd_lr: peak SGD learning rate.
        image_limit: use only the first images of the split.
        ve_cutoff: virtual-edge cutoff of the graphs (as in training).
        device: ``cpu``/``cuda``; default CUDA if available.
        seed: seed of the SGD batches.
        progress: tqdm bar.
        keep_classifier_init: leave each network's classifier (last layer) at its default initialisation instead
            of predicting it (for a GHN trained for another number of classes).

    Returns:
        A JSON-ready dict (write it with :func:`archspace.files.write_json`): ``split``, ``num_nets``,
        ``top1_mean``, ``top1_stderr``, ``top5_mean``, ``top5_stderr``, ``top1_default_init_mean``,
        ``top1_default_init_stderr``, ``top1_sgd`` (steps -> mean/stderr/num_nets), ``sgd_recipe``, ``bn_mode``,
        ``classifier``, ``batch_size``, ``num_images``, ``nets`` (per-network results).

    Raises:
        UsageError: no networks, or a bad argument (unknown ``bn_mode``, non-positive sizes or steps).
        ghn.model.ClassMismatchError: the GHN predicts another number of classes and not ``keep_classifier_init``.
    """
    from archspace import to_graph

    check_eval_args(bn_mode, batch_size, sgd_steps, sgd_num_nets, sgd_lr, image_limit)
    nets = list(nets)
    if not nets:
        raise UsageError("no networks to evaluate")
    steps = sorted({int(s) for s in sgd_steps})
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = [(x.to(device), y.to(device)) for x, y in eval_batches(data, image_split, batch_size,
                                                                     limit=image_limit)]
    num_images = sum(int(y.numel()) for _, y in batches)
    if ghn is not None:
        ghn = ghn.to(device).eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(nets), desc=f"ghn-eval {split_name}", dynamic_ncols=True)
    results: list[NetResult] = []
    t_start = time.time()
    for j, (name, model) in enumerate(nets):
        model = model.to(device)
        top1 = top5 = math.nan
        dt = 0.0
        if ghn is not None:  # first, so that a class mismatch stops the run before any long work
            t0 = time.time()
            predicted = copy.deepcopy(model)
            graph = to_graph(predicted, data.image_size, ve_cutoff=ve_cutoff)
            ghn.predict(predicted, input_size=data.image_size, bn_mode="running", graph=graph,
                        keep_classifier_init=keep_classifier_init)
            dt = time.time() - t0
            top1, top5, _ = accuracy(predicted, batches, bn_mode=bn_mode, device=device)
        init1 = accuracy(model, batches, bn_mode=bn_mode, device=device).top1
        sgd = {}
        if steps and (sgd_num_nets is None or j < sgd_num_nets):
            sgd = {s: accuracy_after_sgd(model, data, batches, steps=s, lr=sgd_lr,
                                         batch_size=min(batch_size, len(data.train)), seed=mix_seed(seed, 7, j),
                                         bn_mode=bn_mode, device=device).top1 for s in steps}
        n_params = sum(p.numel() for p in model.parameters())
        results.append(NetResult(name, n_params, top1, top5, init1, sgd, dt))
        if bar is not None:
            bar.update(1)
            done = [r.top1 for r in results if not math.isnan(r.top1)]
            if done:
                bar.set_postfix(top1=f"{sum(done) / len(done):.1f}")
        model.cpu()
    if bar is not None:
        bar.close()
    top1_mean, top1_se = _summary([r.top1 for r in results]) if ghn is not None else (math.nan, math.nan)
    top5_mean, top5_se = _summary([r.top5 for r in results]) if ghn is not None else (math.nan, math.nan)
    init_mean, init_se = _summary([r.top1_default_init for r in results])
    sgd_summary = {}
    for s in steps:
        vals = [r.top1_sgd[s] for r in results if s in r.top1_sgd]
        if vals:
            m, se = _summary(vals)
            sgd_summary[str(s)] = {"mean": m, "stderr": se, "num_nets": len(vals)}
    return {
        "split": split_name,
        "image_split": image_split,
        "dataset": data.name,
        "num_nets": len(results),
        "num_images": num_images,
        "top1_mean": top1_mean,
        "top1_stderr": top1_se,
        "top5_mean": top5_mean,
        "top5_stderr": top5_se,
        "top1_default_init_mean": init_mean,
        "top1_default_init_stderr": init_se,
        "top1_sgd": sgd_summary,
        "sgd_lr": sgd_lr,
        "sgd_recipe": SGD_RECIPE,
        "bn_mode": bn_mode,
        "classifier": "default init (keep_classifier_init)" if keep_classifier_init else "predicted",
        "batch_size": batch_size,
        "predict_seconds_mean": _summary([r.predict_seconds for r in results])[0],
        "seconds": time.time() - t_start,
        "nets": [asdict(r) for r in results],
    }


def split_nets(split: str, num_nets: int | None = None, num_classes: int = 10, image_size: int = 32,
               width: int | None = None, start: int = 0) -> list[tuple[str, nn.Module]]:
    """Networks of an ``archspace`` split (``val``, ``test``, ``wide``, ``deep``, ``dense``, ``bnfree``,
    ``predefined``), built at default initialisation.

    Args:
        split: split name (``archspace.SPLITS``).
        num_nets: first this many networks (``None``: the whole split from ``start``).
        num_classes, image_size: task of the networks.
        width: channel width override (``None``: the split's own).
        start: index of the first network.

    Returns:
        ``(name, module)`` pairs, names ``SPLIT/INDEX``.

    Raises:
        UsageError: unknown split (with a suggestion), or a range beyond the split.
    """
    from archspace import get_net

    n = check_split_range(split, num_nets, start, width)
    out = []
    for i in range(start, start + n):
        torch.manual_seed(mix_seed(0, 6, i))  # default init of each net is reproducible
        out.append((f"{split}/{i}", get_net(split, i, num_classes=num_classes, image_size=image_size,
                                            width=width)))
    return out


def torchvision_nets(names: Sequence[str], num_classes: int = 10, image_size: int = 32) -> list:
    """The networks of ``eval.split=torchvision``, named in ``eval.models``, at default initialisation.

    Each name is a model spec of :func:`archspace.models.load_model` (``timm:convnext_atto``,
    ``torchvision:resnet18``, ``package.module:callable``); a bare name is a torchvision model (``resnet18``).
    torchvision models are adapted to small inputs when ``image_size`` < 64 (``archspace.adapt_small_input``: 3x3
    stride-1 stem, no max-pool, the CIFAR recipe); the others are built as they are.

    Args:
        names: model specs or torchvision names.
        num_classes: classifier outputs.
        image_size: image side of the data.

    Returns:
        ``(name, module)`` pairs, in the order given.

    Raises:
        archspace.models.ModelSpecError: an unknown name (with a suggestion), or ``timm:NAME`` without timm.
    """
    from archspace.models import check_spec, load_model

    specs = [name if ":" in name else f"torchvision:{name}" for name in names]
    for spec in specs:  # every name checked before any model is built
        check_spec(spec)
    out = []
    for name, spec in zip(names, specs):
        torch.manual_seed(mix_seed(0, 8, len(out)))
        small = spec.startswith("torchvision:") and image_size < 64
        out.append((name, load_model(spec, num_classes=num_classes, small_input=small)))
    return out


def format_summary(result: dict) -> str:
    """One readable paragraph of an evaluation result."""
    lines = [f"{result['num_nets']} nets of split '{result['split']}' on {result['num_images']} "
             f"{result['dataset']} {result['image_split']} images (BatchNorm: {result['bn_mode']} statistics, "
             f"batches of {result['batch_size']}):"]
    if not math.isnan(result["top1_mean"]):
        lines.append(f"  predicted parameters, no training : top-1 {result['top1_mean']:.1f}% "
                     f"(+-{result['top1_stderr']:.1f}), top-5 {result['top5_mean']:.1f}%")
        if result["classifier"] != "predicted":
            lines.append("  (classifier, the last layer, kept at its default initialisation: keep_classifier_init)")
    lines.append(f"  default initialisation            : top-1 {result['top1_default_init_mean']:.1f}% "
                 f"(+-{result['top1_default_init_stderr']:.1f})")
    for s, v in result["top1_sgd"].items():
        lines.append(f"  {s:>5} SGD steps from default init  : top-1 {v['mean']:.1f}% (+-{v['stderr']:.1f}, "
                     f"{v['num_nets']} nets)")
    if result["top1_sgd"]:
        lines.append(f"  SGD: {result['sgd_recipe']}, peak lr {result['sgd_lr']}")
    return "\n".join(lines)
