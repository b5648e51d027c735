"""The ``archspace`` command line: inspect the graph of a network, build DeepNets-1M splits.

``archspace graph MODEL`` prints the GHN-2 graph of a network (Knyazev et al., NeurIPS 2021, Sec. 4.1): node and
edge counts, nodes per primitive, parameters left unbound; ``--json`` for machines, ``--plot`` for people.
``archspace build`` writes a DeepNets-1M split (Sec. 3) through :func:`archspace.shards.build_split`.

Exit status: 0 success, 2 bad input (unknown model, bad flag value, unwritable output, a model that fails at the
requested input size), reported as one line ``archspace: error: ...`` on stderr; ``GHN_DEBUG=1`` shows the
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .errors import ArgumentParser, UsageError, positive_int, run_cli
from .files import check_writable_dir
from .models import SPEC_HELP

PROG = "archspace"


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("graph", help="print the computational graph of a network",
                       description="Print the GHN-2 computational graph of a network. " + SPEC_HELP + ".")
    g.add_argument("model", help="torchvision:NAME, timm:NAME, deepnets:SPLIT/INDEX or package.module:callable")
    g.add_argument("--input-size", type=positive_int, default=None,
                   help="square image size H (default: 32 with --small-input or for deepnets, else the size the "
                        "model declares, e.g. a timm model's default configuration, else 224)")
    g.add_argument("--small-input", action="store_true",
                   help="apply the CIFAR recipe (3x3 stride-1 stem, no stem max-pool) before building the graph")
    g.add_argument("--ve-cutoff", type=positive_int, default=50,
                   help="longest shortest path given a virtual edge (1: none)")
    g.add_argument("--num-classes", type=positive_int, default=1000, help="classifier size of the built model")
    g.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    g.add_argument("--plot", metavar="FILE.png", default=None, help="also draw the graph into this image")
    g.add_argument("--nodes", action="store_true", help="list every node (text output only)")

    b = sub.add_parser("build", help="generate a DeepNets-1M split into a folder")
    b.add_argument("--split", required=True, help="split name, e.g. train, val, test, wide, deep, dense, bnfree")
    b.add_argument("--num", type=positive_int, default=None, help="number of nets (default: the split's size)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--workers", type=positive_int, default=1, help="worker processes")
    b.add_argument("--shard", default=None, metavar="K/N", help="build only shard K of N (0 <= K < N)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``archspace`` console script, inside the project's error boundary
    (:func:`archspace.errors.run_cli`).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 2 bad input (one line on stderr).
    """
    def body() -> int:
        args = _parser().parse_args(argv)
        return _graph(args) if args.command == "graph" else _build(args)

    return run_cli(PROG, body)


def _graph(args: argparse.Namespace) -> int:
    from .capture import ForwardError
    from .coverage import coverage_report
    from .graph import to_graph
    from .models import load_model

    if args.plot:
        from .plot import check_plot_path, plot_graph

        check_plot_path(args.plot)
    small = args.small_input or args.model.startswith("deepnets:")
    model = load_model(args.model, num_classes=args.num_classes, small_input=args.small_input,
                       image_size=args.input_size or (32 if small else 224))
    size = args.input_size or (32 if small else getattr(model, "expected_input_sz", 224))
    start = time.perf_counter()
    try:
        graph = to_graph(model, size, ve_cutoff=args.ve_cutoff)
    except ForwardError as error:
        raise UsageError(_input_size_message(args, size, error.reason)) from error
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
    # The results are printed before the optional plot is drawn, so a failing plot loses nothing.
    if args.plot:
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary, indent=2), flush=True)
    else:
        print(f"{args.model} at {size}x{size}: {graph.num_nodes} nodes, {graph.num_real_edges} real edges, "
              f"{graph.num_virtual_edges} virtual edges (cutoff {args.ve_cutoff}); built in {1000 * seconds:.1f} ms")
        width = max(len(k) for k in summary["op_counts"])
        for prim, count in sorted(summary["op_counts"].items(), key=lambda kv: -kv[1]):
            print(f"  {prim:<{width}} {count:5d}")
        print(report.format(per_node=args.nodes), flush=True)
    if args.plot:
        plot_graph(graph, args.plot, title=f"{args.model} ({size}x{size})")
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _input_size_message(args: argparse.Namespace, size: int, reason: str) -> str:
    """One line for a model whose forward pass fails at ``size``: the size, the model's error, another size."""
    other = 224 if size != 224 else 32
    hint = f"try --input-size {other}"
    if args.model.startswith("torchvision:") and not args.small_input:
        hint += " (or --small-input for 32x32 images)"
    return f"{args.model} fails on a {size}x{size} input (--input-size {size}): {reason}; {hint}"


def _build(args: argparse.Namespace) -> int:
    shard = None
    if args.shard is not None:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit()) or int(n) < 1 or int(k) >= int(n):
            raise UsageError(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
        shard = (int(k), int(n))
    check_writable_dir(args.out)
    from .shards import build_split  # checks --split and --num (UsageError)

    start = time.perf_counter()
    result = build_split(args.split, args.out, num=args.num, workers=args.workers, shard=shard)
    seconds = time.perf_counter() - start
    shard_text = f" shard {shard[0]}/{shard[1]}" if shard else ""
    print(f"built split {args.split!r}{shard_text} into {args.out} in {seconds:.1f} s")
    for key, value in result.items():
        print(f"  {key}: {len(value) if isinstance(value, list) else value}")  # 'written': a count, not the paths
    return 0


if __name__ == "__main__":
    sys.exit(main())
