"""Evaluate a GHN by the accuracy of networks whose parameters it predicts, with no training (Knyazev et al.,
NeurIPS 2021, Sec. 5.1, Table 2): for every network of a split, mean top-1/top-5 and the standard error over
networks, beside the same networks at their default initialisation and after a few SGD steps from it (the
project's one SGD recipe, :func:`train.finetune.train_sgd`: each "N steps" figure is its own N-step run).

:func:`evaluate_ghn` gives one such row (one split at one width); :func:`evaluate_table` gives the paper's Table 2
layout, several :class:`EvalRow` (the test split at several widths, the wide, deep, dense and BN-free splits) on
the same images, and :func:`format_table` prints it. Widths: a row without its own width takes the base width
(the width the GHN was trained at, its low end for a range), the ``wide`` split :data:`WIDE_FACTOR` times it, as
DeepNets-1M defines it (128 channels against 32, :func:`archspace.sampler.get_genotype`).

BatchNorm: running statistics are not predicted, so by default (``bn_mode="batch"``, as in the paper) norm layers
use the statistics of each evaluation batch (batches of 64); ``bn_mode="running"`` uses the module's buffers
(:func:`ghn.batchnorm.bn_mode`).

Shapes: images ``(B, C, H, W)``, labels ``(B,)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
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
from .workers import task_runner


@dataclass
class NetResult:
    """Accuracies of one network (top-1/top-5 in percent; ``top1_sgd``: number of SGD steps -> top-1; ``nan``
    where not measured), the seconds its parameter prediction took (graph and GHN forward) and the width it was
    predicted at before being widened (``None``: predicted as it is)."""

    name: str
    num_params: int
    top1: float
    top5: float
    top1_default_init: float
    top1_sgd: dict[int, float] = field(default_factory=dict)
    predict_seconds: float = 0.0
    widened_from: int | None = None


#: The ``wide`` split's nets are this many times wider than the base width: DeepNets-1M builds them with 128
#: channels against the 32 of the other splits (:func:`archspace.sampler.get_genotype`).
WIDE_FACTOR: int = 4

#: Row keys that are the same for every row of a table (the images, BatchNorm and SGD settings): written once, at
#: the top level of the table.
SHARED_KEYS: tuple[str, ...] = ("dataset", "image_split", "num_images", "batch_size", "bn_mode", "classifier",
                                "sgd_lr", "sgd_recipe")


@dataclass(frozen=True)
class EvalRow:
    """One row of the evaluation table: nets ``start .. start + num_nets - 1`` of an architecture split at one
    width.

    Attributes:
        split: an ``archspace`` split (``val``, ``test``, ``wide``, ``deep``, ``dense``, ``bnfree``,
            ``predefined``) or ``torchvision`` (the models named in ``models``).
        width: channel width of the nets (``None``: the split's own; :func:`row_width` resolves it).
        num_nets: number of nets (``None``: the rest of the split).
        start: index of the first net.
        models: ``torchvision`` rows: the model specs (:func:`torchvision_nets`).
    """

    split: str
    width: int | None = None
    num_nets: int | None = None
    start: int = 0
    models: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``split@width`` (``split`` at the split's own width)."""
        return self.split if self.width is None else f"{self.split}@{self.width}"


def row_width(split: str, width: int | None, base_width: int | None) -> int | None:
    """The width a row's nets are built at.

    Args:
        split: the row's split.
        width: the row's own width (kept when given).
        base_width: the base width (the GHN's training width, the low end of its range; ``None``: DeepNets-1M's
            own, 32 channels).

    Returns:
        ``width`` if given; else for a sampled split the base width, :data:`WIDE_FACTOR` times it for ``wide``;
        ``None`` for ``predefined`` and ``torchvision`` (the models' own widths).
    """
    from archspace.sampler import BASE_WIDTH

    if width is not None or split in ("predefined", "torchvision"):
        return width
    base = BASE_WIDTH if base_width is None else int(base_width)
    return WIDE_FACTOR * base if split == "wide" else base


def in_width_range(width: int | None, width_range: Sequence[int] | None) -> bool | None:
    """Whether ``width`` lies in the GHN's training widths ``[low, high]``; ``None`` when either is unknown."""
    if width is None or not width_range:
        return None
    return int(width_range[0]) <= width <= int(width_range[1])


def width_warning(row: EvalRow, width_range: Sequence[int] | None, widen: bool = False) -> str | None:
    """The one-line note for a row whose width lies outside the GHN's training widths ``[low, high]``, else
    ``None``: such a row is evaluated all the same; its figures measure extrapolation, or, with ``widen`` and a
    wider row of split nets, predictions at the widest training width widened (:func:`widened_from`)."""
    if in_width_range(row.width, width_range) is not False:
        return None
    lo, hi = (int(w) for w in width_range)
    trained = f"width {lo}" if lo == hi else f"widths {lo}-{hi}"
    at = widened_from(row.split, row.width, width_range, widen)
    if at is not None:
        return (f"eval row {row.label} lies beyond the {trained} this GHN was trained on: its nets are predicted at "
                f"width {at} and widened function-preservingly (eval.widen=false: predicted directly)")
    return (f"WARNING: eval row {row.label} lies outside the {trained} this GHN was trained on; it is evaluated "
            f"all the same (its figures measure extrapolation)")


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


@dataclass
class _NetEvaluator:
    """Evaluates one network: predicted parameters, default initialisation, SGD from it. One object per table,
    pickled once into each worker process of :func:`train.workers.task_runner` (the GHN, data and batches travel
    with it)."""

    ghn: nn.Module | None
    data: ImageData
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # (images (B, C, H, W), labels (B,)) on device
    device: torch.device
    bn_mode: str = "batch"
    sgd_steps: tuple[int, ...] = ()
    sgd_num_nets: int | None = None
    sgd_lr: float = SGD_LR
    batch_size: int = 64
    ve_cutoff: int = 50
    seed: int = 0
    keep_classifier_init: bool = False
    channels_last: bool = True

    def __call__(self, j: int, name: str, model: nn.Module | _SplitNet) -> NetResult:
        """Net ``j`` of its row (the first ``sgd_num_nets`` get the SGD baseline, seeded by ``j``), a module or
        the recipe of a split net, built here."""
        from archspace import to_graph

        device, batches, data = self.device, self.batches, self.data
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        recipe = model
        model = (model.build() if isinstance(model, _SplitNet) else model).to(device)
        top1 = top5 = math.nan
        dt, widened = 0.0, None
        if self.ghn is not None:  # first, so that a class mismatch stops the run before any long work
            # Predicted in place and restored from a copy of the tensors afterwards: a deepcopy of the module was
            # a fifth of the time of a width-8 net (profiled: 63 of 340 ms).
            default_init = {k: v.clone() for k, v in model.state_dict().items()}
            t0 = time.time()
            widen_from = recipe.predict_width if isinstance(recipe, _SplitNet) else None
            graph = None if widen_from else to_graph(model, data.image_size, ve_cutoff=self.ve_cutoff)
            # bn_mode "running": no layer changes
            _, report = self.ghn.predict(model, input_size=data.image_size, bn_mode="running", graph=graph,
                                         keep_classifier_init=self.keep_classifier_init, widen_from=widen_from,
                                         return_report=True)
            widened = report.widened_from
            dt = time.time() - t0
            model = model.to(memory_format=memory_format)  # after predict, which writes NCHW tensors
            top1, top5, _ = accuracy(model, batches, bn_mode=self.bn_mode, device=device)
            model.load_state_dict(default_init)
        model = model.to(memory_format=memory_format)
        init1 = accuracy(model, batches, bn_mode=self.bn_mode, device=device).top1
        sgd = {}
        if self.sgd_steps and (self.sgd_num_nets is None or j < self.sgd_num_nets):
            sgd = {s: accuracy_after_sgd(model, data, batches, steps=s, lr=self.sgd_lr,
                                         batch_size=min(self.batch_size, len(data.train)),
                                         seed=mix_seed(self.seed, 7, j), bn_mode=self.bn_mode, device=device).top1
                   for s in self.sgd_steps}
        n_params = sum(p.numel() for p in model.parameters())
        model.cpu()
        return NetResult(name, n_params, top1, top5, init1, sgd, dt, widened)


def _tasks(nets: Iterable[tuple[str, nn.Module]]) -> Iterator[tuple[int, str, nn.Module]]:
    """``(j, name, module)``: the tasks of one row's nets (``j`` counts within the row)."""
    return ((j, name, model) for j, (name, model) in enumerate(nets))


def _collect(results: Iterator[NetResult], total: int, label: str, progress: bool) -> list[NetResult]:
    """The next ``total`` results (one row's nets) from ``results``, with a progress bar."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"ghn-eval {label}", dynamic_ncols=True)
    out: list[NetResult] = []
    for _ in range(total):
        out.append(next(results))
        if bar is not None:
            bar.update(1)
            done = [x.top1 for x in out if not math.isnan(x.top1)]
            if done:
                bar.set_postfix(top1=f"{sum(done) / len(done):.1f}")
    if bar is not None:
        bar.close()
    return out


def _row_summary(results: list[NetResult], evaluator: _NetEvaluator, split_name: str, width: int | None,
                 image_split: str, seconds: float) -> dict:
    """The dict of :func:`evaluate_ghn` from the per-network results."""
    has_ghn = evaluator.ghn is not None
    nan2 = (math.nan, math.nan)
    top1_mean, top1_se = _summary([r.top1 for r in results]) if has_ghn else nan2
    top5_mean, top5_se = _summary([r.top5 for r in results]) if has_ghn else nan2
    init_mean, init_se = _summary([r.top1_default_init for r in results])
    sgd_summary = {}
    for s in evaluator.sgd_steps:
        done = [r for r in results if s in r.top1_sgd]
        if done:
            m, se = _summary([r.top1_sgd[s] for r in done])
            pred = _summary([r.top1 for r in done])[0] if has_ghn else math.nan
            sgd_summary[str(s)] = {"mean": m, "stderr": se, "num_nets": len(done), "top1_predicted_mean": pred,
                                   "fraction": pred / m if m > 0 else math.nan}
    steps = evaluator.sgd_steps
    longest = sgd_summary.get(str(steps[-1])) if steps else None  # the fraction of SGD reported for the row
    return {
        "split": split_name,
        "width": width,
        "image_split": image_split,
        "dataset": evaluator.data.name,
        "num_nets": len(results),
        "num_images": sum(int(y.numel()) for _, y in evaluator.batches),
        "top1_mean": top1_mean,
        "top1_stderr": top1_se,
        "top5_mean": top5_mean,
        "top5_stderr": top5_se,
        "top1_default_init_mean": init_mean,
        "top1_default_init_stderr": init_se,
        "top1_sgd": sgd_summary,
        "sgd_num_nets": max((v["num_nets"] for v in sgd_summary.values()), default=0),
        "top1_fraction_of_sgd": longest["fraction"] if longest else math.nan,
        "sgd_lr": evaluator.sgd_lr,
        "sgd_recipe": SGD_RECIPE,
        "bn_mode": evaluator.bn_mode,
        "classifier": "default init (keep_classifier_init)" if evaluator.keep_classifier_init else "predicted",
        "batch_size": evaluator.batch_size,
        "predict_seconds_mean": _summary([r.predict_seconds for r in results])[0],
        "seconds": seconds,
        "nets": [asdict(r) for r in results],
    }


def _evaluator(ghn: nn.Module | None, data: ImageData, image_split: str, batch_size: int, bn_mode: str,
               sgd_steps: Sequence[int], sgd_num_nets: int | None, sgd_lr: float, image_limit: int | None,
               ve_cutoff: int, device: str | None, seed: int, keep_classifier_init: bool,
               channels_last: bool) -> _NetEvaluator:
    """Check the settings, load the evaluation batches once and put the GHN in eval mode on ``device``."""
    check_eval_args(bn_mode, batch_size, sgd_steps, sgd_num_nets, sgd_lr, image_limit)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if ghn is not None:
        ghn = ghn.to(dev).eval()
    return _NetEvaluator(ghn, data, make_batches(data, image_split, batch_size, image_limit, dev), dev, bn_mode,
                         tuple(sorted({int(s) for s in sgd_steps})), sgd_num_nets, sgd_lr, batch_size, ve_cutoff,
                         seed, keep_classifier_init, channels_last)


def evaluate_ghn(ghn: nn.Module | None, nets: Iterable[tuple[str, nn.Module]], data: ImageData, *,
                 split_name: str, width: int | None = None, image_split: str = "test", batch_size: int = 64,
                 bn_mode: str = "batch", sgd_steps: Sequence[int] = (), sgd_num_nets: int | None = None,
                 sgd_lr: float = SGD_LR, image_limit: int | None = None, ve_cutoff: int = 50,
                 device: str | None = None, seed: int = 0, progress: bool = True, keep_classifier_init: bool = False,
                 channels_last: bool = True, workers: int = 1) -> dict:
    """Evaluate predicted parameters on every network of ``nets``: one row of the paper's Table 2.

    Each network's parameters are predicted on a copy with ``ghn.predict`` (which refuses a GHN trained for another
    number of classes than the networks have, unless ``keep_classifier_init``); the network itself keeps its
    default initialisation for the baselines.

    Args:
        ghn: the GHN, or ``None`` to report default-init (and SGD) figures only.
        nets: ``(name, module)`` pairs; the module's own parameters are its default initialisation.
        data: the image task.
        split_name: name of the architecture split (recorded).
        width: channel width the nets were built at (recorded; ``None``: their own).
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
        channels_last: run the networks (every accuracy pass and the SGD baseline) in NHWC memory format, after
            the prediction: the same figures up to float rounding, measured 1.3-1.4x faster SGD steps on CPU.
        workers: evaluate the networks in this many processes of one thread each (CPU only; 1: in this process).
            Scripts that use it need the ``if __name__ == "__main__":`` guard of ``multiprocessing``'s spawn.

    Returns:
        A JSON-ready dict (write it with :func:`archspace.files.write_json`): ``split``, ``width``, ``num_nets``,
        ``top1_mean``, ``top1_stderr``, ``top5_mean``, ``top5_stderr``, ``top1_default_init_mean``,
        ``top1_default_init_stderr``, ``top1_sgd`` (steps -> ``mean``, ``stderr``, ``num_nets``,
        ``top1_predicted_mean``: the predicted parameters' mean on the same nets, ``fraction``: that mean over the
        SGD mean), ``sgd_num_nets``, ``top1_fraction_of_sgd`` (``fraction`` of the largest number of steps;
        ``nan`` without a GHN or SGD), ``sgd_recipe``, ``bn_mode``, ``classifier``, ``batch_size``,
        ``num_images``, ``seconds``, ``nets`` (per-network results). Accuracies in percent, times in seconds.

    Raises:
        UsageError: no networks, or a bad argument (unknown ``bn_mode``, non-positive sizes or steps).
        ghn.model.ClassMismatchError: the GHN predicts another number of classes and not ``keep_classifier_init``.
    """
    nets = list(nets)
    if not nets:
        raise UsageError("no networks to evaluate")
    evaluator = _evaluator(ghn, data, image_split, batch_size, bn_mode, sgd_steps, sgd_num_nets, sgd_lr,
                           image_limit, ve_cutoff, device, seed, keep_classifier_init, channels_last)
    t_start = time.time()
    with task_runner(evaluator, workers, evaluator.device) as run:
        label = split_name if width is None else f"{split_name}@{width}"
        results = _collect(iter(run(_tasks(nets))), len(nets), label, progress)
    return _row_summary(results, evaluator, split_name, width, image_split, time.time() - t_start)


def make_batches(data: ImageData, image_split: str = "test", batch_size: int = 64, image_limit: int | None = None,
                 device: str | torch.device = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation batches of :func:`evaluate_ghn`, loaded once and moved to ``device``.

    Returns:
        ``(images (B, C, H, W), labels (B,))`` pairs in a fixed order, without augmentation.
    """
    return [(x.to(device), y.to(device)) for x, y in eval_batches(data, image_split, batch_size, limit=image_limit)]


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
    n = check_split_range(split, num_nets, start, width)
    return list(_iter_split_nets(split, range(start, start + n), num_classes, image_size, width))


@dataclass(frozen=True)
class _SplitNet:
    """Net ``index`` of an ``archspace`` split, to be built where it is evaluated (a worker process builds its
    own nets: nothing but these few numbers crosses the process boundary)."""

    split: str
    index: int
    width: int | None
    num_classes: int
    image_size: int
    predict_width: int | None = None  # predicted at this width and widened (ghn.widen); None: at its own

    def build(self) -> nn.Module:
        """The net at its default initialisation (the same in every process)."""
        from archspace import get_net

        torch.manual_seed(mix_seed(0, 6, self.index))  # default init of each net is reproducible
        return get_net(self.split, self.index, num_classes=self.num_classes, image_size=self.image_size,
                       width=self.width)


def widened_from(split: str, width: int | None, width_range: Sequence[int] | None, widen: bool) -> int | None:
    """The width at which a row's nets are predicted before being widened, or ``None`` (predicted as they are).

    A DeepNets-1M split net wider than every width the GHN was trained on is predicted at the widest of them and
    widened function-preservingly (:mod:`ghn.widen`, Net2WiderNet): the GHN's decoder has learnt nothing for the
    wider channels, while the widened net computes exactly what the prediction it was trained for computes.

    Args:
        split: the row's split (``torchvision`` and ``predefined`` nets are never widened: no narrow sibling).
        width: the row's width.
        width_range: the GHN's training widths ``[low, high]`` (``None``: unknown, no widening).
        widen: whether widening is on (``eval.widen``).
    """
    if not widen or width is None or not width_range or split in ("torchvision", "predefined"):
        return None
    high = int(width_range[1])
    return high if width > high else None


def _iter_split_nets(split: str, indices: range, num_classes: int, image_size: int,
                     width: int | None) -> Iterator[tuple[str, nn.Module]]:
    """Build the nets of :func:`split_nets` one at a time, when asked for."""
    for i in indices:
        yield f"{split}/{i}", _SplitNet(split, i, width, num_classes, image_size).build()


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


def row_nets(row: EvalRow, num_classes: int = 10, image_size: int = 32, predict_width: int | None = None
             ) -> list[tuple[str, nn.Module | _SplitNet]]:
    """The networks of one row (those of :func:`split_nets` or :func:`torchvision_nets`): modules for
    ``torchvision``, recipes for split nets, which are built where they are evaluated, one at a time (in the worker
    processes, in parallel; building the 280 nets of the digits default takes seconds).

    Args:
        row: the row.
        num_classes, image_size: the task of the nets.
        predict_width: split nets are predicted at this width and widened (:func:`widened_from`; ``None``: at
            their own).

    Returns:
        ``(name, module or recipe)`` pairs.

    Raises:
        UsageError: an unknown split or model, or a range beyond the split (before any net is built).
    """
    if row.split == "torchvision":
        return torchvision_nets(row.models, num_classes=num_classes, image_size=image_size)
    n = check_split_range(row.split, row.num_nets, row.start, row.width)
    return [(f"{row.split}/{i}", _SplitNet(row.split, i, row.width, num_classes, image_size, predict_width))
            for i in range(row.start, row.start + n)]


def evaluate_table(ghn: nn.Module | None, rows: Sequence[EvalRow], data: ImageData, *,
                   width_range: Sequence[int] | None = None, image_split: str = "test", batch_size: int = 64,
                   bn_mode: str = "batch", sgd_steps: Sequence[int] = (), sgd_num_nets: int | None = None,
                   sgd_lr: float = SGD_LR, image_limit: int | None = None, ve_cutoff: int = 50,
                   device: str | None = None, seed: int = 0, progress: bool = True,
                   keep_classifier_init: bool = False, channels_last: bool = True, workers: int = 1,
                   widen: bool = True) -> dict:
    """The paper's Table 2 layout: :func:`evaluate_ghn` on each row (one split at one width), on the same images.

    Each row's nets are built just before it is evaluated (at the row's width as given: resolve defaults with
    :func:`row_width` first); the evaluation images are loaded, and the worker processes started, once for all
    rows.

    Args:
        ghn: the GHN, or ``None`` for default-init (and SGD) figures only.
        rows: the rows, in the order of the table.
        data: the image task.
        width_range: the GHN's training widths ``[low, high]`` (``None``: unknown); each row records whether its
            width lies inside (``in_trained_widths``). Nothing is refused.
        widen: predict the split nets of a row wider than ``width_range`` at its widest width and widen them
            (:func:`widened_from`); the row records that width as ``predicted_at_width`` (``None``: predicted as
            they are).
        image_split, batch_size, bn_mode, sgd_steps, sgd_num_nets, sgd_lr, image_limit, ve_cutoff, device, seed,
            progress, keep_classifier_init, channels_last, workers: as :func:`evaluate_ghn` (SGD on the first
            ``sgd_num_nets`` nets of each row).

    Returns:
        A JSON-ready dict: ``rows`` (one :func:`evaluate_ghn` dict per row, without the keys of
        :data:`SHARED_KEYS`, with ``start``, ``in_trained_widths``, ``predicted_at_width`` and
        ``num_nets_widened`` added: the nets that matched their widened sibling, the others predicted directly), the
        :data:`SHARED_KEYS` once, ``sgd_steps``, ``trained_width_range`` and ``seconds`` (the whole table).

    Raises:
        UsageError: no rows, an unknown split or model, a range beyond a split, or a bad argument.
        ghn.model.ClassMismatchError: as :func:`evaluate_ghn`.
    """
    if not rows:
        raise UsageError("no evaluation rows")
    t_start = time.time()
    evaluator = _evaluator(ghn, data, image_split, batch_size, bn_mode, sgd_steps, sgd_num_nets, sgd_lr,
                           image_limit, ve_cutoff, device, seed, keep_classifier_init, channels_last)
    table: dict = {"rows": []}
    # Every row's range checked before any work; the nets of all rows in one stream, so that no worker waits for
    # the last net of a row.
    at = [widened_from(row.split, row.width, width_range, widen) if ghn is not None else None for row in rows]
    row_tasks = [row_nets(row, num_classes=data.num_classes, image_size=data.image_size, predict_width=w)
                 for row, w in zip(rows, at)]
    with task_runner(evaluator, workers, evaluator.device) as run:
        results = iter(run(task for nets in row_tasks for task in _tasks(nets)))
        for row, nets, predict_width in zip(rows, row_tasks, at):
            t_row = time.time()
            res = _row_summary(_collect(results, len(nets), row.label, progress), evaluator, row.split,
                               row.width, image_split, 0.0)
            res["seconds"] = time.time() - t_row  # until its last net is done (workers may start the next row)
            for key in SHARED_KEYS:
                table[key] = res.pop(key)
            head = {"split": res.pop("split"), "width": res.pop("width"), "start": row.start,
                    "in_trained_widths": in_width_range(row.width, width_range),
                    "predicted_at_width": predict_width,
                    "num_nets_widened": sum(r["widened_from"] is not None for r in res["nets"])}
            table["rows"].append({**head, **res})
    table["sgd_steps"] = list(evaluator.sgd_steps)
    table["trained_width_range"] = [int(w) for w in width_range] if width_range else None
    table["workers"] = workers if evaluator.device.type == "cpu" else 1
    table["seconds"] = time.time() - t_start
    return {k: table[k] for k in (*SHARED_KEYS, "sgd_steps", "trained_width_range", "workers", "seconds", "rows")}


def _pm(mean: float, stderr: float) -> str:
    """``mean +- stderr`` with one decimal; ``-`` for a missing mean, the mean alone without a standard error."""
    if mean is None or math.isnan(mean):
        return "-"
    if stderr is None or math.isnan(stderr):
        return f"{mean:.1f}"
    return f"{mean:.1f} +- {stderr:.1f}"


def format_table(result: dict) -> str:
    """The printed summary of an evaluation: a compact table, one line per row (split, width, nets, predicted
    top-1 +- standard error, default initialisation, each number of SGD steps, fraction of SGD).

    Args:
        result: an :func:`evaluate_table` dict (``eval.json``), or one :func:`evaluate_ghn` row.

    Returns:
        Lines joined by newlines: a header naming the images, the table, and notes (the SGD recipe; rows outside
        the GHN's training widths marked ``*``, or ``+`` where widened; a classifier kept at its default
        initialisation).
    """
    rows = result["rows"] if "rows" in result else [result]
    steps = sorted({int(s) for r in rows for s in r["top1_sgd"]})
    head = ["split", "width", "nets", "predicted", "default init", *(f"{s} SGD steps" for s in steps)]
    if steps:
        head.append("of SGD")
    lines = []
    for r in rows:
        mark = "" if r.get("in_trained_widths") is not False else "+" if r.get("predicted_at_width") else "*"
        cells = [r["split"], f"{r['width'] if r.get('width') is not None else 'own'}{mark}", str(r["num_nets"]),
                 _pm(r["top1_mean"], r["top1_stderr"]), _pm(r["top1_default_init_mean"], r["top1_default_init_stderr"])]
        for s in steps:
            v = r["top1_sgd"].get(str(s))
            cells.append(f"{_pm(v['mean'], v['stderr'])} ({v['num_nets']})" if v else "-")
        if steps:
            f = r.get("top1_fraction_of_sgd")
            cells.append("-" if f is None or math.isnan(f) else f"{100 * f:.0f}%")
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines)]
    right = {1, 2}  # numbers of columns aligned right

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"Top-1 (%, mean +- standard error over nets) on {result['num_images']} {result['dataset']} "
           f"{result['image_split']} images (BatchNorm: {result['bn_mode']} statistics, batches of "
           f"{result['batch_size']}); predicted parameters, no training:", fmt(head).rstrip()]
    out += [fmt(c).rstrip() for c in lines]
    if steps:
        out.append(f"SGD from default init on the first nets of each row (how many in brackets): "
                   f"{result['sgd_recipe']}, peak lr {result['sgd_lr']}")
        out.append(f"of SGD: the predicted top-1 of those nets over their top-1 after {steps[-1]} SGD steps")
    lo, hi = result.get("trained_width_range") or ("?", "?")
    if any(r.get("in_trained_widths") is False and r.get("predicted_at_width") for r in rows):
        out.append(f"+ wider than the widths this GHN was trained on ({lo}-{hi}): predicted at width {hi} and "
                   "widened function-preservingly (Net2WiderNet)")
    if any(r.get("in_trained_widths") is False and not r.get("predicted_at_width") for r in rows):
        out.append(f"* outside the widths this GHN was trained on ({lo}-{hi})")
    if result["classifier"] != "predicted":
        out.append("(classifier, the last layer, kept at its default initialisation: keep_classifier_init)")
    return "\n".join(out)
