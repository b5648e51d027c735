"""``ghn finetune``: train a network with SGD from GHN-predicted parameters, optionally against its default init.

Examples::

    ghn finetune torchvision:resnet18 --ckpt ghn.pt --compare --steps 500 --plot ft.png --out finetune.json
    ghn finetune deepnets:test/7 --ckpt ghn.pt --data cifar10 --data-root ~/data --compare
    ghn finetune mypkg.nets:tiny_cnn --ckpt ghn_imagenet.pt --keep-classifier-init --compare

With ``--compare`` both runs share the data order, augmentation, optimiser, learning-rate schedule, budget and
seed; the report gives, at a few checkpoints, how many steps the from-scratch run needs to reach the accuracy of
the warm-started run (Knyazev et al., NeurIPS 2021, Sec. 5.4). BatchNorm running statistics are not predicted:
by default (``--bn-init recompute``) both runs recompute them from ``--bn-batches`` un-augmented training
batches before step 0; held-out accuracy uses running statistics (``model.eval()``). Errors in the arguments exit
with status 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

from train.candidates import CandidateError
from train.data import DATASETS


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command; its handler is :func:`run_finetune` (also the ``func`` default)."""
    p = subparsers.add_parser(
        "finetune", help="train a network from predicted parameters (and, with --compare, from scratch)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or pkg.module:callable")
    p.add_argument("--ckpt", required=True, help="trained GHN checkpoint (GHN.load)")
    p.add_argument("--compare", action="store_true",
                   help="also train from the default initialisation with the same data, optimiser and seed")
    p.add_argument("--steps", type=int, default=300, help="SGD steps per run")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (SGD, momentum 0.9, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: no clipping)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--eval-every", type=int, default=25, help="held-out evaluation period in steps")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate on the first N held-out images")
    p.add_argument("--checkpoints", default=None,
                   help="comma list of steps for the speed-up report (multiples of --eval-every; default: 0 and "
                        "about four spread over the run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default init, data order and dropout")
    p.add_argument("--data", default="digits", choices=DATASETS, help="training and held-out images")
    p.add_argument("--data-root", default=None, help="dataset folder (cifar10, imagenet)")
    p.add_argument("--image-size", type=int, default=None, help="image side (default: the dataset's)")
    p.add_argument("--width", type=int, default=None,
                   help="base width C of a DeepNets-1M net (default: its genotype's, 32)")
    p.add_argument("--keep-classifier-init", action="store_true",
                   help="keep the classifier (last layer) at its default init instead of predicting it; needed "
                        "when the GHN was trained for another number of classes")
    p.add_argument("--bn-init", default="recompute", choices=("recompute", "none"),
                   help="BatchNorm running statistics before step 0: recompute from training batches, or keep")
    p.add_argument("--bn-batches", type=int, default=10, help="training batches used by --bn-init recompute")
    p.add_argument("--plot", default=None, help="PNG with loss and held-out accuracy against steps")
    p.add_argument("--out", default=None, help="JSON report (curves, speed-up)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    p.set_defaults(func=run_finetune)
    return p


def run_finetune(args: argparse.Namespace) -> int:
    """Run ``ghn finetune`` with parsed arguments.

    Returns:
        0 on success, 2 on bad input (message on stderr, no traceback).
    """
    try:
        return _run(args)
    except (CandidateError, ValueError, FileNotFoundError) as e:
        print(f"ghn finetune: error: {e}", file=sys.stderr)
        return 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> list[int] | None:
    import os

    from train.candidates import check_spec

    check_spec(args.model)
    for name in ("steps", "batch_size", "eval_every"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.width is not None and args.width < 1:
        raise ValueError(f"--width must be a positive number of channels, got {args.width}")
    if args.bn_batches < 1:
        raise ValueError(f"--bn-batches must be >= 1, got {args.bn_batches}")
    if not os.path.isfile(args.ckpt):
        raise ValueError(f"GHN checkpoint {args.ckpt!r} does not exist; pass a file saved by GHN.save or ghn-train")
    if args.checkpoints is None:
        return None
    try:
        steps = [int(s) for s in args.checkpoints.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--checkpoints must be a comma list of steps, got {args.checkpoints!r}") from None
    bad = [s for s in steps if s < 0 or s > args.steps or (s % args.eval_every and s != args.steps)]
    if bad:
        raise ValueError(f"--checkpoints {bad} are not evaluation steps: use 0..{args.steps} in multiples of "
                         f"--eval-every {args.eval_every}")
    return steps


def _init_bn(models, data, args) -> str:
    """Set BatchNorm running statistics of the runs before step 0 (``--bn-init``); returns what was done."""
    import torch

    from ghn.batchnorm import recompute_bn_stats
    from train.finetune import bn_batches

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in models[0].modules()):
        return "no BatchNorm in this network"
    if args.bn_init == "none":
        return "running statistics kept as they were (mean 0, variance 1: not predicted)"
    for m in models:
        recompute_bn_stats(m, bn_batches(data, args.bn_batches, args.batch_size, args.seed),
                           num_batches=args.bn_batches)
    return (f"running statistics recomputed from {args.bn_batches} un-augmented training batches of "
            f"{args.batch_size} before step 0 (every run)")


def _print_speedup(rows: list[dict], steps: int) -> None:
    print("  step  warm acc  scratch steps to match  speed-up")
    for r in rows:
        need = r["scratch_steps"] if r["scratch_steps"] is not None else f"> {steps}"
        sp = (f"{r['speedup']:.2f}x" if r["speedup"] is not None else
              f"> {r['speedup_lower_bound']:.2f}x" if "speedup_lower_bound" in r else "-")
        print(f"{r['step']:>6}  {r['warm_accuracy']:7.2f}%  {need!s:>22}  {sp:>8}")


def _run(args: argparse.Namespace) -> int:
    import torch

    from train.candidates import build_model
    from train.checkpoint import atomic_write_text
    from train.data import eval_batches, load_image_data
    from train.finetune import evaluate, speedup, train_sgd
    from train.rank import ghn_predictor, load_ghn

    checkpoints = _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_image_data(args.data, root=args.data_root, image_size=args.image_size, seed=0)
    ghn = load_ghn(args.ckpt, num_classes=None if args.keep_classifier_init else data.num_classes,
                   device=args.device)
    held = list(eval_batches(data, "heldout", batch_size=64, limit=args.eval_images))

    torch.manual_seed(args.seed)
    warm = build_model(args.model, num_classes=data.num_classes, image_size=data.image_size, width=args.width)
    scratch = copy.deepcopy(warm) if args.compare else None  # the very same default initialisation
    ghn_predictor(ghn, data.image_size, keep_classifier_init=args.keep_classifier_init, bn_mode="keep")(warm)
    predicted_acc, _ = evaluate(warm, held, bn_batch_stats=True, device=args.device)
    bn_note = _init_bn([m for m in (warm, scratch) if m is not None], data, args)
    _log(f"BatchNorm: {bn_note}; held-out accuracy during training uses running statistics (eval mode)")
    report: dict = {
        "model": args.model, "ckpt": args.ckpt, "data": args.data, "steps": args.steps, "lr": args.lr,
        "weight_decay": args.weight_decay, "grad_clip": args.grad_clip, "batch_size": args.batch_size,
        "eval_every": args.eval_every, "seed": args.seed, "optimizer": "SGD momentum 0.9, cosine schedule",
        "bn_init": bn_note,
        "classifier": "default init (--keep-classifier-init)" if args.keep_classifier_init else "predicted",
        "predicted_accuracy_batch_stats": predicted_acc, "params": sum(p.numel() for p in warm.parameters()),
    }
    kw = dict(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device,
              weight_decay=args.weight_decay, grad_clip=args.grad_clip, eval_batches=held, eval_every=args.eval_every)
    _log(f"training from predicted parameters for {args.steps} steps")
    runs = {"predicted init": train_sgd(warm, data, log=_log, **kw)}
    if scratch is not None:
        _log(f"training from the default initialisation for {args.steps} steps")
        runs["default init"] = train_sgd(scratch, data, log=_log, **kw)
    report["runs"] = {k: c.as_dict() for k, c in runs.items()}

    w = runs["predicted init"]
    print(f"{args.model}: accuracy with predicted parameters {predicted_acc:.2f}% (BN batch statistics), "
          f"{w.accuracy[0]:.2f}% at step 0 after BN init; {w.accuracy[-1]:.2f}% after {w.eval_steps[-1]} steps")
    if scratch is not None:
        s = runs["default init"]
        report["speedup"] = speedup(w, s, checkpoints)
        print(f"default init: {s.accuracy[0]:.2f}% at step 0, {s.accuracy[-1]:.2f}% after {s.eval_steps[-1]} steps")
        _print_speedup(report["speedup"], args.steps)
    if args.plot:
        from train.plots import plot_finetune_curves

        plot_finetune_curves({k: vars(c) for k, c in runs.items()}, args.plot,
                             title=f"{args.model} on {args.data}: predicted vs default initialisation")
        print(f"wrote {args.plot}")
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m train.finetune_cli MODEL --ckpt GHN ...``."""

    parser = argparse.ArgumentParser(prog="ghn")
    add_finetune_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["finetune", *(sys.argv[1:] if argv is None else argv)])
    return run_finetune(args)


if __name__ == "__main__":
    sys.exit(main())
