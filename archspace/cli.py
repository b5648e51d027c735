"""The ``archspace`` command line: inspect the graph of a network, build DeepNets-1M splits.

``archspace graph MODEL`` prints the GHN-2 graph of a network (Knyazev et al., NeurIPS 2021, Sec. 4.1): node and
edge counts, nodes per primitive, parameters left unbound; ``--json`` for machines, ``--plot`` for people.
``archspace build`` writes a DeepNets-1M split (Sec. 3) through :func:`archspace.dataset.build_split`.

Exit codes: 0 success, 1 the model or the build failed, 2 bad arguments (including an unknown model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .models import SPEC_HELP, ModelSpecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archspace", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("graph", help="print the computational graph of a network",
                       description="Print the GHN-2 computational graph of a network. " + SPEC_HELP + ".")
    g.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or package.module:callable")
    g.add_argument("--input-size", type=int, default=None,
                   help="square image size H (default: 32 with --small-input or for deepnets, else 224)")
    g.add_argument("--small-input", action="store_true",
                   help="apply the CIFAR recipe (3x3 stride-1 stem, no stem max-pool) before building the graph")
    g.add_argument("--ve-cutoff", type=int, default=50, help="longest shortest path given a virtual edge (1: none)")
    g.add_argument("--num-classes", type=int, default=1000, help="classifier size of the built model")
    g.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    g.add_argument("--plot", metavar="FILE.png", default=None, help="also draw the graph into this image")
    g.add_argument("--nodes", action="store_true", help="list every node (text output only)")

    b = sub.add_parser("build", help="generate a DeepNets-1M split into a folder")
    b.add_argument("--split", required=True, help="split name, e.g. train, val, test, wide, deep, dense, bnfree")
    b.add_argument("--num", type=int, default=None, help="number of nets (default: the split's size)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--workers", type=int, default=1, help="worker processes")
    b.add_argument("--shard", default=None, metavar="K/N", help="build only shard K of N (0 <= K < N)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``archspace`` console script.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code (0 ok, 1 failure, 2 bad arguments); also raises ``SystemExit`` with it when run as a script.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "graph":
            return _graph(args, parser)
        return _build(args, parser)
    except ModelSpecError as error:
        parser.error(str(error))  # prints usage and exits with 2
    except (RuntimeError, ValueError, TypeError, OSError) as error:
        print(f"archspace: error: {error}", file=sys.stderr)
        return 1
    return 0


def _graph(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .coverage import coverage_report
    from .graph import to_graph
    from .models import load_model

    if args.ve_cutoff < 1:
        parser.error("--ve-cutoff must be >= 1")
    if args.num_classes < 1:
        parser.error("--num-classes must be >= 1")
    if args.input_size is not None and args.input_size < 1:
        parser.error("--input-size must be >= 1")
    small = args.small_input or args.model.startswith("deepnets:")
    size = args.input_size or (32 if small else 224)
    model = load_model(args.model, num_classes=args.num_classes, small_input=args.small_input, image_size=size)
    start = time.perf_counter()
    graph = to_graph(model, size, ve_cutoff=args.ve_cutoff)
    seconds = time.perf_counter() - start
    report = coverage_report(model, graph)
    summary = {
        "model": args.model,
        "input_size": [1, 3, size, size],
        "num_nodes": graph.num_nodes,
        "num_real_edges": graph.num_real_edges,
        "num_virtual_edges": graph.num_virtual_edges,
        "op_counts": graph.op_counts(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "bound_params": report.num_bound_params,
        "unbound_params": report.as_dict()["unbound_params"],
        "seconds": round(seconds, 4),
    }
    if args.plot:
        from .plot import plot_graph

        plot_graph(graph, args.plot, title=f"{args.model} ({size}x{size})")
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.model} at {size}x{size}: {graph.num_nodes} nodes, {graph.num_real_edges} real edges, "
          f"{graph.num_virtual_edges} virtual edges (cutoff {args.ve_cutoff}); built in {1000 * seconds:.1f} ms")
    width = max(len(k) for k in summary["op_counts"])
    for prim, count in sorted(summary["op_counts"].items(), key=lambda kv: -kv[1]):
        print(f"  {prim:<{width}} {count:5d}")
    print(report.format(per_node=args.nodes))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    shard = None
    if args.shard is not None:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit()) or int(n) < 1 or int(k) >= int(n):
            parser.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
        shard = (int(k), int(n))
    if args.num is not None and args.num < 1:
        parser.error("--num must be >= 1")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        from .dataset import build_split
    except ImportError as error:
        print(f"archspace: error: building splits needs archspace.dataset: {error}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    result = build_split(args.split, args.out, num=args.num, workers=args.workers, shard=shard)
    seconds = time.perf_counter() - start
    shard_text = f" shard {shard[0]}/{shard[1]}" if shard else ""
    print(f"built split {args.split!r}{shard_text} into {args.out} in {seconds:.1f} s")
    if isinstance(result, dict):
        for key, value in result.items():
            print(f"  {key}: {value}")
    elif result is not None:
        print(f"  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
