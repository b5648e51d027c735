"""``ghn`` command line: ``ghn predict MODEL --ckpt CKPT ...`` predicts a network's parameters with a GHN.

CKPT is a released GHN by name (``ghn2-cifar10``, ``ghn2-imagenet``, ``ghn1-cifar10``, ``ghn1-imagenet``,
``mlp-cifar10``: downloaded once into the cache folder and verified, see :mod:`ghn.pretrained`), a checkpoint file,
or a ``ghn-train`` run directory.

MODEL is given as for ``archspace graph``: ``torchvision:NAME`` (e.g. ``torchvision:resnet50``),
``deepnets:SPLIT/INDEX`` (a DeepNets-1M net), or ``pkg.module:callable`` (called with ``num_classes=`` when it
accepts it). A DeepNets-1M net wider than every width the checkpoint was trained on (``train_width_range``, which
``ghn-train`` records) is predicted at the widest of them and widened function-preservingly (:mod:`ghn.widen`), as
``ghn-eval`` does; ``--no-widen`` predicts it directly. The predicted state dict is written as safetensors,
atomically. Bad input (a model spec, a checkpoint,
a size, an output path, a classifier of another size than the GHN's) exits with status 2 and one line on stderr;
``--debug`` or ``GHN_DEBUG=1`` shows the traceback.

Other subcommands (``ghn rank``, ``ghn finetune``) live in the packages that own them and register through the
entry-point group ``ghn.commands`` (see ``pyproject.toml``), so this package never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from archspace.errors import ArgumentParser, positive_int, run_cli
from archspace.files import check_writable

from .batchnorm import BN_MODES
from .pretrained import CKPT_HELP

#: Entry-point group of the ``ghn`` subcommands defined in other packages; each value is a function that takes the
#: argparse subparsers object and adds its parser.
COMMANDS_GROUP = "ghn.commands"


def _predict(args: argparse.Namespace) -> int:
    from archspace.models import load_model

    from .checkpoint import atomic_save_safetensors
    from .model import GHN

    if args.out:
        check_writable(args.out, "--out")
    ghn = GHN.from_pretrained(args.ckpt)
    num_classes = args.num_classes if args.num_classes is not None else ghn.num_classes
    # A family without a small-input recipe is refused (UsageError), as by `archspace graph --small-input`.
    model = load_model(args.model, num_classes=num_classes, small_input=args.small_input)
    widen_from = None if args.no_widen else ghn.max_train_width
    model, report = ghn.predict(model, input_size=args.input_size, bn_mode=args.bn_mode,
                                keep_classifier_init=args.keep_classifier_init, return_report=True,
                                widen_from=widen_from)
    if args.out:
        # What rebuilds the model the state dict fits (load_model(model, num_classes=..., small_input=...)).
        atomic_save_safetensors(model.state_dict(), args.out, {
            "model": args.model, "num_classes": str(num_classes), "small_input": str(bool(args.small_input)),
            "input_size": str(args.input_size) if args.input_size is not None else "the model's own",
            "ghn_checkpoint": args.ckpt, "bn_mode": args.bn_mode,
            "widened_from": str(report.widened_from) if report.widened_from else "not widened",
            "classifier": "initial values (--keep-classifier-init)" if args.keep_classifier_init else "predicted"})
    if args.report:
        print(json.dumps(report.as_dict(), indent=1) if args.json else str(report))
    else:
        print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ghn`` argument parser: ``predict`` here, other subcommands from the ``ghn.commands`` entry points.

    Returns:
        The parser; each subcommand sets ``func`` (called with the parsed namespace, returns the exit status).
    """
    p = ArgumentParser(prog="ghn", description="Graph hypernetworks: predict parameters of networks.")
    p.add_argument("--debug", action="store_true", help="show the traceback of input errors too")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="predict all parameters of a network and save its state dict",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or pkg.module:callable")
    pr.add_argument("--ckpt", required=True, help=CKPT_HELP)
    pr.add_argument("--num-classes", type=positive_int, default=None, help="classifier outputs (default: the GHN's)")
    pr.add_argument("--input-size", type=positive_int, default=None,
                    help="image side used to trace the graph (default: the model's own, 32 with --small-input, "
                         "else the GHN's)")
    pr.add_argument("--small-input", action="store_true", help="adapt the model to 32x32 images (CIFAR recipe)")
    pr.add_argument("--bn-mode", choices=BN_MODES, default="running",
                    help="BatchNorm running statistics are not predicted: 'running' (default) leaves them at their "
                         "initial values so the state dict loads into the plain model (re-estimate them, or "
                         "evaluate with batch statistics); 'batch' removes them (batch statistics always; load such a "
                         "file with ghn.set_bn_mode(model, 'batch') before model.load_state_dict)")
    pr.add_argument("--keep-classifier-init", action="store_true",
                    help="leave the classifier at its default initialisation and predict the rest (needed when "
                         "--num-classes differs from the GHN's classes)")
    pr.add_argument("--no-widen", action="store_true",
                    help="predict a DeepNets-1M net wider than the GHN's training widths directly at its width "
                         "(default: predicted at the widest training width and widened function-preservingly)")
    pr.add_argument("--out", default=None, help="write the predicted state dict here (.safetensors)")
    pr.add_argument("--report", action="store_true", help="print the coverage report")
    pr.add_argument("--json", action="store_true", help="with --report: print it as JSON")
    pr.set_defaults(func=_predict)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ghn`` console script.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 2 for bad input (one line on stderr, see :func:`archspace.errors.run_cli`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        args = build_parser().parse_args(argv)  # inside the boundary: argparse errors are one line too
        return args.func(args)

    return run_cli("ghn", body, debug="--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
