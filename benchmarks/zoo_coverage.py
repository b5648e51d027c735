"""Coverage of a model zoo by the graph builder and a GHN: for every model of timm or torchvision, whether its
graph builds (:func:`archspace.to_graph`), how many parameter tensors no graph node binds, how many ``msa`` nodes it
has, whether a GHN (Knyazev et al., NeurIPS 2021) predicts every parameter with finite values, and the time of each
step; then a summary by family.

A *family* is the module that defines the model: ``timm.models.convnext`` -> ``convnext``,
``torchvision.models.resnet`` -> ``resnet``. By default one small configuration per family is run: among the
family's names, the six that look smallest (size words such as atto, pico, nano, tiny, small, s0, b0 in the name,
then the shortest names) are built on the meta device and the one with the fewest parameters is kept (about 2
minutes for timm's 98 families on one CPU core). ``--all`` runs every name the installed library lists (timm
1.0.31 lists 1,371; allow an hour or more, and ``--max-params`` bounds the prediction step).

Models are named through :func:`archspace.models.load_model` (``timm:NAME``, ``torchvision:NAME``) with the GHN's
number of classes and never with pretrained weights. The graph is built from a copy on the meta device; the
prediction runs on real tensors: an untrained ``ghn.GHN()`` of the default size (the GHN-2 CIFAR-10 configuration)
unless ``--ckpt`` names a checkpoint. A model "predicted" has every parameter set by the GHN and every value finite.

Usage::

    python benchmarks/zoo_coverage.py --source timm [--all] [--family convnext --family vision_transformer]
        [--ckpt ghn.safetensors] [--out coverage.csv] [--max-params 500] [--threads 1]

Prints one line per model, a table by family and the totals; ``--out`` writes one CSV row per model.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
from tqdm import tqdm

from archspace.coverage import unbound_parameters
from archspace.errors import UsageError, run_cli, suggest
from archspace.files import atomic_write, check_writable
from archspace.graph import to_graph
from archspace.models import import_timm, load_model, torchvision_names

#: Words of timm and torchvision names that mark small configurations, smallest first.
SIZE_WORDS = ("atto", "femto", "pico", "nano", "xxxs", "xxs", "xs", "xxtiny", "xtiny", "tiny", "t", "mini", "s0",
              "small", "s", "b0", "a0", "050", "075", "100")
#: Candidates per family compared by their number of parameters (on the meta device) in the default run.
CANDIDATES = 6


@dataclass
class Row:
    """One model's result (a CSV row)."""

    source: str
    family: str
    model: str
    params_m: float = math.nan  # millions of parameters
    input_size: int = 0
    graph_ok: bool = False
    nodes: int = 0
    msa: int = 0
    unbound: int = -1  # parameter tensors bound to no node
    graph_s: float = math.nan
    predicted: str = "no"  # yes / no / skipped
    untouched: int = -1  # parameter tensors the GHN left alone
    finite: bool = False
    predict_s: float = math.nan
    error: str = ""


def families(source: str) -> dict[str, list[str]]:
    """Model names of a zoo by family (the defining module's last part).

    Args:
        source: ``"timm"`` or ``"torchvision"``.

    Returns:
        Family -> its model names, families sorted.

    Raises:
        archspace.models.ModelSpecError: ``"timm"`` without timm installed (the message names the extra).
    """
    out: dict[str, list[str]] = {}
    if source == "timm":
        timm = import_timm()
        for module in timm.list_modules():
            names = timm.list_models(module=module)
            if names:
                out[module] = names
    else:
        import torchvision

        for name in torchvision_names():
            module = torchvision.models.get_model_builder(name).__module__
            out.setdefault(module.rsplit(".", 1)[-1], []).append(name)
    return dict(sorted(out.items()))


def size_rank(name: str) -> tuple[int, int, str]:
    """Sort key that puts the names that look smallest first (see :data:`SIZE_WORDS`)."""
    best = len(SIZE_WORDS)
    for token in re.split(r"[_.\-]", name.lower()):
        for i, word in enumerate(SIZE_WORDS):
            if token == word or token.startswith(word) and token[len(word):].isdigit():
                best = min(best, i)
    return best, len(name), name


def count_params(spec: str, num_classes: int) -> float:
    """Parameters of a model built on the meta device (nothing allocated); ``inf`` if it cannot be built there."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(spec, num_classes=num_classes)
    except Exception:  # noqa: BLE001 - a constructor that reads values: not a candidate for "small"
        return math.inf
    return float(sum(p.numel() for p in model.parameters()))


def pick_small(source: str, names: Sequence[str], num_classes: int) -> str:
    """The model with the fewest parameters among the :data:`CANDIDATES` names of a family that look smallest.

    Args:
        source: ``"timm"`` or ``"torchvision"``.
        names: the family's model names.
        num_classes: classifier size to build them with.

    Returns:
        One of ``names``.
    """
    candidates = sorted(names, key=size_rank)[:CANDIDATES]
    if len(candidates) == 1:
        return candidates[0]
    sizes = [(count_params(f"{source}:{n}", num_classes), size_rank(n), n) for n in candidates]
    return min(sizes)[2]


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160] if lines else ''}"


def run_model(source: str, family: str, name: str, ghn, max_params: float) -> Row:
    """Graph and prediction of one model (see the module docstring); failures are recorded, not raised.

    Args:
        source: ``"timm"`` or ``"torchvision"``.
        family: the model's family, copied into the row.
        name: the model's name in ``source``.
        ghn: the ``ghn.GHN`` that predicts the parameters.
        max_params: models with more millions of parameters get their graph only.

    Returns:
        The model's :class:`Row`.
    """
    row = Row(source, family, name)
    spec = f"{source}:{name}"
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta_model = load_model(spec, num_classes=ghn.num_classes)
    except Exception:  # noqa: BLE001 - constructors that read values: build on the CPU instead
        meta_model = None
    try:
        model = meta_model if meta_model is not None else load_model(spec, num_classes=ghn.num_classes)
        row.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        row.input_size = int(getattr(model, "expected_input_sz", None) or getattr(model, "image_size", None) or 224)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = to_graph(model, row.input_size)
        row.graph_s = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - reported in the table
        row.error = "graph: " + _short(error)
        return row
    row.graph_ok, row.nodes = True, graph.num_nodes
    row.msa = graph.op_counts().get("msa", 0)
    row.unbound = len(unbound_parameters(model, graph))
    del model, meta_model, graph
    if row.params_m > max_params:
        row.predicted = "skipped"
        row.error = f"predict skipped: {row.params_m:.0f}M parameters > --max-params {max_params:g}"
        return row
    try:
        torch.manual_seed(0)
        model = load_model(spec, num_classes=ghn.num_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, report = ghn.predict(model, input_size=row.input_size, return_report=True)
        row.predict_s = report.seconds
        row.untouched = len(report.untouched)
        row.finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        row.predicted = "yes" if report.complete and row.finite else "no"
    except Exception as error:  # noqa: BLE001 - reported in the table
        row.error = "predict: " + _short(error)
    return row


def summary(rows: list[Row]) -> list[dict]:
    """One dict per family: models, graphs built, fully bound, predicted (all finite), with attention, median
    times (graph in milliseconds, prediction in seconds)."""
    out = []
    for family in sorted({r.family for r in rows}):
        rs = [r for r in rows if r.family == family]
        built = [r for r in rs if r.graph_ok]
        out.append({
            "family": family,
            "models": len(rs),
            "graph_built": len(built),
            "all_bound": sum(r.unbound == 0 for r in built),
            "predicted": sum(r.predicted == "yes" for r in rs),
            "with_msa": sum(r.msa > 0 for r in built),
            "graph_ms": 1000 * _median([r.graph_s for r in built]),
            "predict_s": _median([r.predict_s for r in rs if not math.isnan(r.predict_s)]),
            "example": rs[0].model if len(rs) == 1 else f"{len(rs)} models",
        })
    return out


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else math.nan


def format_table(rows: list[Row], source: str, all_names: bool) -> str:
    """The table by family and the totals."""
    table = summary(rows)
    head = (f"{'family':28s} {'example':36s} {'models':>6s} {'graph':>5s} {'bound':>5s} {'msa':>4s} {'pred':>5s} "
            f"{'graph ms':>8s} {'pred s':>6s}")
    lines = [head, "-" * len(head)]
    for t in table:
        lines.append(f"{t['family']:28s} {t['example'][:36]:36s} {t['models']:6d} {t['graph_built']:5d} "
                     f"{t['all_bound']:5d} {t['with_msa']:4d} {t['predicted']:5d} {t['graph_ms']:8.1f} "
                     f"{t['predict_s']:6.2f}")
    n, fam = len(rows), len(table)
    built = sum(r.graph_ok for r in rows)
    bound = sum(r.graph_ok and r.unbound == 0 for r in rows)
    predicted = sum(r.predicted == "yes" for r in rows)
    skipped = sum(r.predicted == "skipped" for r in rows)
    which = "every listed model" if all_names else "one small configuration per family"
    lines += ["", f"{source}, {which}: {n} models in {fam} families; graph built {built}/{n}; every parameter bound "
                  f"{bound}/{n}; every parameter predicted, all finite {predicted}/{n}"
                  + (f" ({skipped} too large, skipped)" if skipped else "")
                  + f"; families fully covered {sum(t['predicted'] == t['models'] for t in table)}/{fam}"]
    failures = [r for r in rows if r.error or r.unbound > 0]
    if failures:
        lines.append("problems:")
        lines += [f"  {r.model}: " + (r.error or f"{r.unbound} unbound parameter tensors") for r in failures]
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str) -> None:
    """One row per model, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Row)])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items()})
    atomic_write(path, buffer.getvalue())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Default: one small configuration per family, the one with the fewest "
                                       f"parameters among the {CANDIDATES} names that look smallest (timm: about 2 "
                                       "minutes); --all: every name the library lists (timm 1.0.31: 1,371, an hour or "
                                       "more).")
    p.add_argument("--source", choices=("timm", "torchvision"), default="timm", help="the model zoo")
    p.add_argument("--all", action="store_true", help="every model name instead of one small one per family")
    p.add_argument("--family", action="append", default=None, help="only this family (repeatable)")
    p.add_argument("--ckpt", default=None, help="GHN checkpoint (default: an untrained ghn.GHN() of the default size)")
    p.add_argument("--out", default=None, help="CSV file, one row per model")
    p.add_argument("--max-params", type=float, default=500.0,
                   help="skip the prediction of models with more millions of parameters (default 500)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.out:
        check_writable(args.out, "--out")
    from ghn import GHN

    torch.set_num_threads(args.threads)
    ghn = GHN.load(args.ckpt) if args.ckpt else GHN()
    by_family = families(args.source)
    if args.family:
        unknown = sorted(set(args.family) - set(by_family))
        if unknown:
            raise UsageError(f"unknown {args.source} family {unknown[0]!r}" + suggest(unknown[0], by_family))
        by_family = {f: by_family[f] for f in args.family}
    start = time.perf_counter()
    if args.all:
        todo = [(f, n) for f, names in by_family.items() for n in names]
    else:
        todo = [(f, pick_small(args.source, names, ghn.num_classes)) for f, names in by_family.items()]
    rows = []
    bar = tqdm(todo, desc=args.source, unit="model", file=sys.stderr, disable=None)
    for family, name in bar:
        row = run_model(args.source, family, name, ghn, args.max_params)
        rows.append(row)
        tqdm.write(f"{family:28s} {name:40s} {row.params_m:8.1f}M {row.input_size:4d}px nodes {row.nodes:4d} "
                   f"msa {row.msa:3d} unbound {row.unbound:3d} predicted {row.predicted:7s} "
                   f"{row.graph_s * 1000:7.1f} ms {row.predict_s:6.2f} s {row.error}")
    print(format_table(rows, args.source, args.all))
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        write_csv(rows, args.out)
        print(f"CSV written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("zoo_coverage", main))
