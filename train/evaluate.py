"""Evaluate a GHN by the accuracy of networks whose parameters it predicts, with no training (Knyazev et al.,
NeurIPS 2021, Sec. 5.1, Table 2): for every network of a split, mean top-1/top-5 and the standard error over
networks, beside the same networks at their default initialisation and after a few SGD steps from it.

BatchNorm: running statistics are not predicted, so by default (``bn_mode="batch"``, as in the paper) norm layers
use the statistics of each evaluation batch (batches of 64); ``bn_mode="running"`` uses the module's buffers.

Shapes: images ``(B, C, H, W)``, labels ``(B,)``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch_geometric.data import Batch

from .checkpoint import atomic_write_text
from .data import ImageData, TrainBatches, eval_batches, mix_seed
from .loop import net_logits

log = logging.getLogger(__name__)

BN_MODES = ("batch", "running")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


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


def set_bn_mode(model: nn.Module, bn_mode: str) -> nn.Module:
    """Put ``model`` in evaluation mode with BatchNorm using batch statistics (``batch``) or its running
    statistics (``running``).

    Raises:
        ValueError: unknown mode.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; expected one of {BN_MODES}")
    model.eval()
    if bn_mode == "batch":
        for m in model.modules():
            if isinstance(m, _NORM_TYPES):
                m.train()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, params: dict[str, torch.Tensor] | None = None,
             bn_mode: str = "batch", device: str | torch.device = "cpu") -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent) of ``model`` (with ``params`` substituted, if given) on ``batches``.

    BatchNorm buffers of ``model`` are left as they were.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    set_bn_mode(model, bn_mode)
    correct1 = correct5 = total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = net_logits(model, params, x) if params is not None else model(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(1).sum())
        total += y.numel()
    if saved:
        model.load_state_dict(saved, strict=False)
    if total == 0:
        raise ValueError("no evaluation images")
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def sgd_accuracies(model: nn.Module, data: ImageData, steps: Sequence[int], eval_data: list, lr: float = 0.05,
                   batch_size: int = 64, seed: int = 0, bn_mode: str = "batch",
                   device: str | torch.device = "cpu") -> dict[int, float]:
    """Top-1 after each number of SGD steps in ``steps`` (momentum 0.9, wd 5e-4, cosine-free constant ``lr``),
    trained from ``model``'s current parameters on augmented training batches. ``model`` is not modified."""
    if not steps:
        return {}
    net = copy.deepcopy(model).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    batches = TrainBatches(data, batch_size=min(batch_size, len(data.train)), seed=seed)
    out: dict[int, float] = {}
    done = 0
    for target in sorted(set(int(s) for s in steps)):
        net.train()
        for x, y in batches.iterate(done, target):
            opt.zero_grad(set_to_none=True)
            logits = net(x.to(device))
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            nn.functional.cross_entropy(logits, y.to(device)).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
        done = target
        out[target] = accuracy(net, eval_data, bn_mode=bn_mode, device=device)[0]
    return out


def _stderr(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def _summary(values: Sequence[float]) -> tuple[float, float]:
    return (sum(values) / len(values) if values else float("nan")), _stderr(values)


def evaluate_ghn(ghn: nn.Module | None, nets: Iterable[tuple[str, nn.Module]], data: ImageData, *,
                 split_name: str, image_split: str = "test", batch_size: int = 64, bn_mode: str = "batch",
                 sgd_steps: Sequence[int] = (), sgd_num_nets: int | None = None, sgd_lr: float = 0.05,
                 image_limit: int | None = None, ve_cutoff: int = 50, device: str | None = None, seed: int = 0,
                 progress: bool = True) -> dict:
    """Evaluate predicted parameters on every network of ``nets``.

    Args:
        ghn: the GHN (``predict_parameters``), or ``None`` to report default-init (and SGD) figures only.
        nets: ``(name, module)`` pairs; the module's own parameters are its default initialisation.
        data: the image task.
        split_name: name of the architecture split (recorded).
        image_split: image split to evaluate on (``test``, ``heldout``).
        batch_size: evaluation batch size (64 in the paper, BatchNorm with batch statistics).
        bn_mode: ``batch`` or ``running`` (see :func:`set_bn_mode`).
        sgd_steps: numbers of SGD steps from default init to report (e.g. ``[10, 100]``).
        sgd_num_nets: run the SGD baseline on the first this many networks only (``None``: all).
        sgd_lr: SGD learning rate.
        image_limit: use only the first images of the split.
        ve_cutoff: virtual-edge cutoff of the graphs.
        device: ``cpu``/``cuda``; default CUDA if available.
        seed: seed of the SGD batches.
        progress: tqdm bar.

    Returns:
        A JSON-ready dict: ``split``, ``num_nets``, ``top1_mean``, ``top1_stderr``, ``top5_mean``,
        ``top5_stderr``, ``top1_default_init_mean``, ``top1_default_init_stderr``, ``top1_sgd`` (steps ->
        mean/stderr/num_nets), ``bn_mode``, ``batch_size``, ``num_images``, ``nets`` (per-network results).

    Raises:
        ValueError: no networks, or an unknown ``bn_mode``.
    """
    from archspace import to_graph

    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; expected one of {BN_MODES}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = eval_batches(data, image_split, batch_size, limit=image_limit)
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    num_images = sum(int(y.numel()) for _, y in batches)
    if ghn is not None:
        ghn = ghn.to(device).eval()
    nets = list(nets)
    if not nets:
        raise ValueError("no networks to evaluate")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(nets), desc=f"ghn-eval {split_name}", dynamic_ncols=True)
    results: list[NetResult] = []
    t_start = time.time()
    for j, (name, model) in enumerate(nets):
        model = model.to(device)
        init1, _ = accuracy(model, batches, bn_mode=bn_mode, device=device)
        top1 = top5 = float("nan")
        dt = 0.0
        if ghn is not None:
            t0 = time.time()
            with torch.no_grad():
                graph = to_graph(model, (1, 3, data.image_size, data.image_size), ve_cutoff=ve_cutoff)
                params = ghn.predict_parameters(Batch.from_data_list([graph]).to(device), [model])[0]
            dt = time.time() - t0
            top1, top5 = accuracy(model, batches, params=params, bn_mode=bn_mode, device=device)
        sgd = {}
        if sgd_steps and (sgd_num_nets is None or j < sgd_num_nets):
            sgd = sgd_accuracies(model, data, sgd_steps, batches, lr=sgd_lr, batch_size=batch_size,
                                 seed=mix_seed(seed, 7, j), bn_mode=bn_mode, device=device)
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
    top1_mean, top1_se = _summary([r.top1 for r in results]) if ghn is not None else (float("nan"),) * 2
    top5_mean, top5_se = _summary([r.top5 for r in results]) if ghn is not None else (float("nan"),) * 2
    init_mean, init_se = _summary([r.top1_default_init for r in results])
    sgd_summary = {}
    for s in sorted({k for r in results for k in r.top1_sgd}):
        vals = [r.top1_sgd[s] for r in results if s in r.top1_sgd]
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
        "bn_mode": bn_mode,
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
        num_nets: first this many networks (``None``: the whole split).
        num_classes, image_size: task of the networks.
        width: channel width override (``None``: the split's own).
        start: index of the first network.

    Raises:
        ValueError: unknown split or a count beyond the split.
    """
    from archspace import SPLITS, get_net

    if split not in SPLITS:
        raise ValueError(f"unknown architecture split {split!r}; expected one of {sorted(SPLITS)}")
    size = _split_size(SPLITS[split])
    n = size - start if num_nets is None else num_nets
    if size is not None and start + n > size:
        raise ValueError(f"split {split!r} has {size} networks; asked for {start}..{start + n}")
    out = []
    for i in range(start, start + n):
        torch.manual_seed(mix_seed(0, 6, i))  # default init of each net is reproducible
        out.append((f"{split}/{i}", get_net(split, i, num_classes=num_classes, image_size=image_size,
                                            width=width)))
    return out


def _split_size(spec) -> int | None:
    if isinstance(spec, int):
        return spec
    for attr in ("size", "num", "count", "n"):
        if hasattr(spec, attr):
            return int(getattr(spec, attr))
    if isinstance(spec, dict):
        for k in ("size", "num", "count", "n"):
            if k in spec:
                return int(spec[k])
    try:
        return len(spec)
    except TypeError:
        return None


def torchvision_nets(names: Sequence[str], num_classes: int = 10, image_size: int = 32) -> list:
    """torchvision models by name (``resnet18``...), adapted to small inputs when ``image_size`` < 64
    (``archspace.adapt_small_input``: 3x3 stride-1 stem, no max-pool, the CIFAR recipe)."""
    import torchvision

    out = []
    for name in names:
        torch.manual_seed(mix_seed(0, 8, len(out)))
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if image_size < 64:
            from archspace import adapt_small_input

            model = adapt_small_input(model)
        out.append((name, model))
    return out


def write_eval_json(path: str, result: dict) -> None:
    """Write an evaluation result as JSON atomically (NaN written as null)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    atomic_write_text(path, json.dumps(clean(result), indent=2) + "\n")
    os.path.getsize(path)


def format_summary(result: dict) -> str:
    """One readable paragraph of an evaluation result."""
    lines = [f"{result['num_nets']} nets of split '{result['split']}' on {result['num_images']} "
             f"{result['dataset']} {result['image_split']} images (BatchNorm: {result['bn_mode']} statistics, "
             f"batches of {result['batch_size']}):"]
    if result["top1_mean"] == result["top1_mean"]:
        lines.append(f"  predicted parameters, no training : top-1 {result['top1_mean']:.1f}% "
                     f"(+-{result['top1_stderr']:.1f}), top-5 {result['top5_mean']:.1f}%")
    lines.append(f"  default initialisation            : top-1 {result['top1_default_init_mean']:.1f}% "
                 f"(+-{result['top1_default_init_stderr']:.1f})")
    for s, v in result["top1_sgd"].items():
        lines.append(f"  {s:>5} SGD steps from default init  : top-1 {v['mean']:.1f}% (+-{v['stderr']:.1f}, "
                     f"{v['num_nets']} nets)")
    return "\n".join(lines)
