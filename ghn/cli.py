"""``ghn`` command line: ``ghn predict MODEL --ckpt PATH ...`` predicts a network's parameters with a GHN.

MODEL is given as for ``archspace graph``: ``torchvision:NAME`` (e.g. ``torchvision:resnet50``),
``deepnets:SPLIT/INDEX`` (a DeepNets-1M net), or ``pkg.module:callable`` (called with ``num_classes=`` when it
accepts it). The predicted state dict is written as safetensors, atomically. Errors in the model spec or the
checkpoint exit with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch.nn as nn


class UsageError(Exception):
    """A user error reported in one line with exit status 2."""


def load_model(spec: str, num_classes: int) -> nn.Module:
    """Resolve a model spec with :func:`archspace.models.load_model`.

    Raises:
        UsageError: the spec cannot be resolved.
    """
    from archspace.models import load_model as archspace_load_model

    try:
        return archspace_load_model(spec, num_classes=num_classes)
    except (ValueError, KeyError, ImportError, AttributeError, IndexError) as e:
        raise UsageError(f"bad model spec {spec!r}: {e}") from e


def _predict(args: argparse.Namespace) -> int:
    import archspace

    from .checkpoint import CheckpointError, atomic_save_safetensors
    from .model import GHN

    try:
        ghn = GHN.load(args.ckpt)
    except CheckpointError as e:
        raise UsageError(f"bad checkpoint: {e}") from e
    num_classes = args.num_classes if args.num_classes is not None else ghn.num_classes
    model = load_model(args.model, num_classes)
    if args.small_input:
        try:
            model = archspace.adapt_small_input(model)
        except ValueError as e:  # a family without a small-input recipe: predict it unmodified
            print(f"ghn: warning: {e}; predicting the unmodified model", file=sys.stderr)
    input_size = args.input_size
    if input_size is None:
        # The model's own declared size wins (e.g. torchvision ViT's image_size), then 32 for small inputs,
        # then the image size the GHN was trained on.
        input_size = (getattr(model, "expected_input_sz", None) or getattr(model, "image_size", None)
                      or (32 if args.small_input else ghn.image_size))
    try:
        model, report = ghn.predict(model, input_size=input_size, bn_mode=args.bn_mode, return_report=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UsageError(f"cannot predict {args.model} at input size {input_size}: {e}") from e
    if args.out:
        atomic_save_safetensors(model.state_dict(), args.out,
                                {"model": args.model, "ghn_checkpoint": args.ckpt, "bn_mode": args.bn_mode})
    if args.report:
        print(json.dumps(report.as_dict(), indent=1) if args.json else str(report))
    else:
        print(report.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ghn`` argument parser."""
    p = argparse.ArgumentParser(prog="ghn", description="Graph hypernetworks: predict parameters of networks.")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="predict all parameters of a network and save its state dict",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or pkg.module:callable")
    pr.add_argument("--ckpt", required=True, help="GHN checkpoint (ours .safetensors or a reference .pt)")
    pr.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the GHN's)")
    pr.add_argument("--input-size", type=int, default=None,
                    help="image side used to trace the graph (default: 32 with --small-input, else the GHN's)")
    pr.add_argument("--small-input", action="store_true", help="adapt the model to 32x32 images (CIFAR recipe)")
    pr.add_argument("--bn-mode", choices=("keep", "batch", "reset"), default="keep",
                    help="BatchNorm running statistics are not predicted: 'keep' (default) leaves them at their "
                         "initial values so the state dict loads into the plain model (re-estimate them, or "
                         "evaluate with batch statistics); 'batch' removes them (batch statistics always)")
    pr.add_argument("--out", default=None, help="write the predicted state dict here (.safetensors)")
    pr.add_argument("--report", action="store_true", help="print the coverage report")
    pr.add_argument("--json", action="store_true", help="with --report: print it as JSON")
    pr.set_defaults(func=_predict)
    # Ranking and warm-started fine-tuning live in the train package (they need image data); imported here so that
    # `ghn rank` and `ghn finetune` sit beside `ghn predict`.
    from train.finetune_cli import add_finetune_parser
    from train.rank_cli import add_rank_parser

    add_rank_parser(sub)
    add_finetune_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ghn`` console script. Returns the exit status."""

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"ghn: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
