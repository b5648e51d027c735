"""``ghn prune``: lottery tickets by iterative magnitude pruning, rewound to the initialisation, to an early step or
to GHN-predicted parameters, with the controls that make a ticket a ticket.

Examples::

    ghn prune archspace.mlp:lenet_300_100 --levels 12 --rewind default,step:50 --run-dir runs/prune/lenet
    ghn prune deepnets:test/0 --width 16 --ckpt runs/train/<run>/ghn.safetensors --rewind predicted,step:50,default
    ghn prune torchvision:resnet18 --ckpt ghn2-cifar10 --data cifar10 --data-root ~/data --levels 8

Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020. See :mod:`train.prune` for what runs and the layout of the
run directory: every level is stored as it finishes, so the same command resumes a killed run, and a run
directory made with other arguments is refused. Results: ``prune.csv`` (mean and spread over seeds per curve and
level), ``runs.csv`` (every run) and the plot ``sparsity.png`` in the run directory, written in that order.
Errors in the arguments exit with status 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from train.cli_args import add_common_options
from train.finetune import SGD_LR, SGD_RECIPE


def add_prune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``prune`` sub-command to an ``argparse`` sub-parser collection (the ``ghn.commands`` entry point);
    its handler is :func:`run_prune`, stored as the ``func`` default.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``prune`` parser.
    """
    from train.prune import REWIND_HELP

    p = subparsers.add_parser(
        "prune", help="lottery tickets: iterative magnitude pruning with rewinding (and controls)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or pkg.module:callable, e.g. "
                                 "archspace.mlp:lenet_300_100")
    add_common_options(p, ckpt_required=False)
    p.add_argument("--levels", type=int, default=10, help="pruning levels after the dense run (level L keeps "
                                                          "(1 - rate)^L of the weights)")
    p.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per level")
    p.add_argument("--rewind", default="default",
                   help=f"comma list of rewind targets, one IMP curve each: {REWIND_HELP}; the first one's masks "
                        "are used by the controls")
    p.add_argument("--controls", default="reinit,random",
                   help="comma list: reinit (same mask, fresh init), random (random mask, same layer sparsity), "
                        "or none")
    p.add_argument("--oneshot", default=None,
                   help="comma list of one-shot pruning sources without training: predicted, default, or none "
                        "(default: predicted when --ckpt is given, else none)")
    p.add_argument("--include-classifier", action="store_true", help="also prune the classifier (last layer)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...): init, data order, masks")
    p.add_argument("--steps", type=int, default=400, help="SGD steps of every training run")
    p.add_argument("--lr", type=float, default=SGD_LR, help=f"peak learning rate ({SGD_RECIPE})")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation period (default: steps / 10)")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate on the first N held-out images")
    p.add_argument("--target", type=float, default=0.9,
                   help="steps to target: the first evaluation reaching this fraction of the dense accuracy")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/prune/<model>)")
    p.add_argument("--plot", default=None, help="PNG of the sparsity curves (default: RUN_DIR/sparsity.png)")
    p.set_defaults(func=run_prune)
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace, image_size: int):
    """Check the options (one-line :class:`archspace.errors.UsageError`) and turn them into settings."""
    from archspace.errors import UsageError
    from archspace.network import MIN_WIDTH
    from ghn.pretrained import checkpoint_sha256
    from ghn.threads import set_threads
    from train.cli_args import check_device, check_numbers
    from train.prune import CONTROLS, ONESHOT_SOURCES, PruneSettings, parse_choices, parse_rewind

    check_numbers(args, at_least={"levels": 1, "seeds": 1, "steps": 1, "batch_size": 1, "eval_every": 1,
                                  "eval_images": 1, "image_size": 1, "width": MIN_WIDTH, "seed": 0}, above={"lr": 0})
    if not 0 < args.rate < 1:
        raise UsageError(f"--rate must be between 0 and 1 (the fraction pruned per level), got {args.rate}")
    if not 0 < args.target <= 1:
        raise UsageError(f"--target must be in (0, 1] (a fraction of the dense accuracy), got {args.target}")
    check_device(args.device)
    set_threads(args.threads)
    rewind = parse_rewind(args.rewind, args.steps)
    oneshot_text = args.oneshot if args.oneshot is not None else ("predicted" if args.ckpt else "none")
    settings = PruneSettings(
        model=args.model, width=args.width, data=args.data, image_size=image_size, levels=args.levels,
        rate=args.rate, rewind=rewind, controls=parse_choices(args.controls, CONTROLS, "--controls"),
        oneshot=parse_choices(oneshot_text, ONESHOT_SOURCES, "--oneshot"), seeds=tuple(range(args.seeds)),
        steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        eval_every=args.eval_every or max(1, args.steps // 10), include_classifier=args.include_classifier,
        keep_classifier_init=args.keep_classifier_init, ckpt=args.ckpt, target_fraction=args.target,
        eval_images=args.eval_images, ckpt_sha256=checkpoint_sha256(args.ckpt) if args.ckpt else None)
    if settings.needs_ghn() and not args.ckpt:
        raise UsageError("--rewind predicted and --oneshot predicted need a GHN: pass --ckpt")
    return settings


def run_prune(args: argparse.Namespace) -> int:
    """Run ``ghn prune`` with parsed arguments: every seed and level (resuming what the run directory holds), then
    ``prune.csv`` and ``runs.csv``, the printed table, and the plot last (so a failing plot loses no result).

    Returns:
        0 on success.

    Raises:
        archspace.errors.UsageError: bad input (an option, model, checkpoint or dataset; a run directory made with
            other arguments; a network without a layer to prune); ``ghn``'s error boundary prints it in one line
            and exits with status 2.
    """
    import torch

    from archspace.errors import UsageError
    from archspace.files import check_writable_dir
    from archspace.plot import check_plot_path
    from train.candidates import one_candidate
    from train.cli_args import check_batch_size, data_image_size
    from train.data import eval_batches, load_image_data
    from train.lottery import level_counts, prunable_layers
    from train.plots import plot_sparsity
    from train.prune import PruneRun, format_summary

    _settings(args, image_size=1)  # every option checked before any work (the image size is filled in below)
    candidate = one_candidate(args.model, width=args.width)
    ghn = None
    if args.ckpt:
        from ghn import GHN

        ghn = GHN.from_pretrained(args.ckpt, device=args.device).eval()
    data = load_image_data(args.data, root=args.data_root, image_size=data_image_size(args, ghn), seed=0)
    settings = _settings(args, data.image_size)
    check_batch_size(args.batch_size, len(data.train), "--batch-size")
    run_dir = args.run_dir or os.path.join("runs", "prune", re.sub(r"[^\w.-]+", "_", args.model))
    check_writable_dir(run_dir, "--run-dir")
    plot = args.plot or os.path.join(run_dir, "sparsity.png")
    check_plot_path(plot, "--plot")
    torch.manual_seed(0)
    layers = prunable_layers(candidate.build(num_classes=data.num_classes, image_size=data.image_size),
                             settings.include_classifier)  # a net with nothing to prune fails here, before training
    total = sum(m.weight.numel() for _, m in layers)
    kept = level_counts(total, settings.rate, range(settings.levels + 1))
    if kept[settings.levels] == 0:
        raise UsageError(f"--levels {settings.levels} at --rate {settings.rate} would prune all {total:,} weights "
                         f"(none left from level {min(lv for lv, k in kept.items() if k == 0)}); use fewer levels")
    predict = None
    if ghn is not None and settings.needs_ghn() and not args.keep_classifier_init \
            and ghn.num_classes != data.num_classes:  # refused before settings.json is written or anything trains
        raise UsageError(f"the GHN was trained for {ghn.num_classes} classes but {args.data} has "
                         f"{data.num_classes}; use a GHN trained for {data.num_classes} classes, or pass "
                         "--keep-classifier-init (the classifier keeps its default initialisation)")
    if ghn is not None:
        from train.rank import ghn_predictor

        predict = ghn_predictor(ghn, data.image_size, keep_classifier_init=args.keep_classifier_init)
    held = eval_batches(data, "heldout", batch_size=256, limit=args.eval_images)
    run = PruneRun(settings, run_dir, candidate, data, held, predict=predict, device=args.device, log=_log)
    run.run()
    runs_csv, table_csv = run.write_tables()
    summary = run.summary()
    print(format_summary(summary))
    print(f"wrote {table_csv} and {runs_csv}")
    dense = [r for r in run.rows() if r["level"] == 0 and r["curve"] == f"imp-{settings.rewind[0].replace(':', '')}"]
    band = None
    if dense:
        import statistics

        accs = [r["accuracy"] for r in dense if r["accuracy"] is not None]
        band = (statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0) if accs else None
    plot_sparsity(summary, plot, dense=band,
                  title=f"{args.model} on {args.data}: {len(settings.seeds)} seeds, {settings.steps} steps per run")
    print(f"wrote {plot}")
    return 0
