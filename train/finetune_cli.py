"""``ghn finetune``: train a network with SGD from GHN-predicted parameters, optionally against its default init.

Examples::

    ghn finetune torchvision:resnet18 --ckpt ghn.pt --compare --steps 500 --plot ft.png --out finetune.json
    ghn finetune deepnets:test/7 --ckpt ghn.pt --data cifar10 --data-root ~/data --compare
    ghn finetune mypkg.nets:tiny_cnn --ckpt ghn_imagenet.pt --keep-classifier-init --compare
    ghn finetune deepnets:test/7 --ckpt ghn.pt --init predicted,predicted+orth --warmup 25 --compare

``--init`` names one or more starting points (:data:`ghn.warm_start.INITS`: the prediction as is, with noise of
``--beta`` times each layer's weight standard deviation from layer ``--noise-from-layer`` on, the same followed by
QR orthogonalisation (Knyazev 2022) or by the polar factor (the nearest orthogonal matrix), the default
initialisation, or the default initialisation orthogonalised either way), each made from a copy of the same default
initialisation; ``--compare`` adds the default initialisation. Every run shares the data order, augmentation, SGD
recipe (:func:`train.finetune.train_sgd`, with ``--warmup`` steps of linear warm-up), budget and seed; the report
gives, for each warm start at a few checkpoints, how many steps the run from the default initialisation needs to
reach its accuracy (Knyazev et al., NeurIPS 2021, Sec. 5.4). BatchNorm running statistics are not
predicted: by default (``--bn-init recompute``) every run recomputes them from ``--bn-batches`` un-augmented
training batches before step 0; held-out accuracy uses running statistics (``model.eval()``). The JSON report is
written before the optional plot. Errors in the arguments exit with status 2 and a one-line message, without a
traceback (the ``ghn`` command's error boundary).
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import asdict

from train.cli_args import add_common_options
from train.finetune import SGD_LR


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command to an ``argparse`` sub-parser collection (the ``ghn.commands`` entry
    point); its handler is :func:`run_finetune`, stored as the ``func`` default.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``finetune`` parser.
    """
    p = subparsers.add_parser(
        "finetune", help="train a network from predicted parameters (and, with --compare, from scratch)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="torchvision:NAME, deepnets:SPLIT/INDEX or pkg.module:callable")
    add_common_options(p)
    from ghn.warm_start import DEFAULT_BETA, INITS

    p.add_argument("--init", default="predicted+orth",
                   help=f"comma list of starting points, one run each: {', '.join(INITS)} (the default: the "
                        "published remedy, Knyazev 2022; benchmarks/bench_finetune.py compares them, README)")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA,
                   help="noise of predicted+noise and of the orthogonalised starts, relative to each layer's std")
    p.add_argument("--noise-from-layer", type=int, default=0,
                   help="first weight matrix (0-based, module order) that gets noise; the classifier never does")
    p.add_argument("--compare", action="store_true",
                   help="also train from the default initialisation with the same data, recipe and seed")
    p.add_argument("--steps", type=int, default=300, help="SGD steps per run")
    p.add_argument("--lr", type=float, default=SGD_LR,
                   help="peak learning rate (SGD momentum 0.9, weight decay 5e-4, cosine decay, gradient norm "
                        "clipped at 5)")
    p.add_argument("--warmup", type=int, default=0,
                   help="steps of linear lr warm-up before the cosine decay, in every run")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--eval-every", type=int, default=25, help="held-out evaluation period in steps")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate on the first N held-out images")
    p.add_argument("--checkpoints", default=None,
                   help="comma list of steps for the speed-up report (multiples of --eval-every; default: 0 and "
                        "about four spread over the run)")
    p.add_argument("--bn-init", default="recompute", choices=("recompute", "none"),
                   help="BatchNorm running statistics before step 0: recompute from training batches, or keep")
    p.add_argument("--bn-batches", type=int, default=10, help="training batches used by --bn-init recompute")
    p.add_argument("--plot", default=None, help="PNG with loss and held-out accuracy against steps")
    p.add_argument("--out", default=None, help="JSON report (curves, speed-up)")
    p.set_defaults(func=run_finetune)
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _inits(args: argparse.Namespace) -> list[str]:
    """The runs to make: ``--init`` in order, plus ``default`` last with ``--compare``."""
    from archspace.errors import UsageError
    from ghn.warm_start import INITS

    inits = list(dict.fromkeys(t.strip() for t in args.init.split(",") if t.strip()))
    bad = [i for i in inits if i not in INITS]
    if bad or not inits:
        raise UsageError(f"--init {args.init!r}: choose one or more of {', '.join(INITS)} (comma list)")
    if args.compare and "default" not in inits:
        inits.append("default")
    return inits


def _check_args(args: argparse.Namespace) -> list[int] | None:
    """Check every option before any work; returns the ``--checkpoints`` steps (``None``: the default ones)."""
    from archspace.errors import UsageError
    from archspace.network import MIN_WIDTH
    from ghn.threads import set_threads
    from train.cli_args import check_device, check_numbers, check_outputs

    check_numbers(args, at_least={"steps": 1, "batch_size": 1, "eval_every": 1, "eval_images": 1, "image_size": 1,
                                  "width": MIN_WIDTH, "bn_batches": 1, "warmup": 0, "beta": 0,
                                  "noise_from_layer": 0, "seed": 0}, above={"lr": 0})
    if args.warmup > args.steps:
        raise UsageError(f"--warmup {args.warmup} is longer than the run: use at most --steps {args.steps}")
    _inits(args)
    check_device(args.device)
    set_threads(args.threads)  # a count or "auto"; UsageError otherwise
    check_outputs(args)
    if args.checkpoints is None:
        return None
    try:
        steps = [int(s) for s in args.checkpoints.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--checkpoints must be a comma list of steps, got {args.checkpoints!r}") from None
    bad = [s for s in steps if s < 0 or s > args.steps or (s % args.eval_every and s != args.steps)]
    if bad:
        raise UsageError(f"--checkpoints {bad} are not evaluation steps: use 0..{args.steps} in multiples of "
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
    print("  step  warm acc  default-init steps to match  speed-up")
    for r in rows:
        if r["warm_accuracy"] is None:
            print(f"{r['step']:>6}  diverged at step {r['warm_diverged_at']}")
            continue
        need = r["scratch_steps"] if r["scratch_steps"] is not None else f"> {steps}"
        sp = (f"{r['speedup']:.2f}x" if r["speedup"] is not None else
              f"> {r['speedup_lower_bound']:.2f}x" if "speedup_lower_bound" in r else "-")
        print(f"{r['step']:>6}  {r['warm_accuracy']:7.2f}%  {need!s:>27}  {sp:>8}")


def run_finetune(args: argparse.Namespace) -> int:
    """Run ``ghn finetune`` with parsed arguments: set up every ``--init`` (and the default init with
    ``--compare``), train each, print the speed-ups over the default init, write ``--out``, then draw ``--plot``
    (last, so that a failing plot loses no result).

    Returns:
        0 on success.

    Raises:
        archspace.errors.UsageError: bad input (a bad option or model, checkpoint or dataset, a model that does not
            run at the image size, or a GHN trained for another number of classes without
            ``--keep-classifier-init``); ``ghn``'s error boundary prints it in one line and exits with status 2.
    """
    import torch

    from archspace.errors import UsageError
    from archspace.files import write_json
    from ghn import GHN
    from ghn.warm_start import warm_start
    from ghn.widen import has_narrow_sibling
    from train.accuracy import accuracy
    from train.candidates import one_candidate
    from train.cli_args import check_batch_size, data_image_size
    from train.data import eval_batches, load_image_data
    from train.finetune import SGD_RECIPE, speedup, train_sgd
    from train.rank import ghn_predictor

    checkpoints = _check_args(args)
    inits = _inits(args)
    candidate = one_candidate(args.model, width=args.width)
    ghn = GHN.from_pretrained(args.ckpt, device=args.device).eval()
    data = load_image_data(args.data, root=args.data_root, image_size=data_image_size(args, ghn), seed=0)
    check_batch_size(args.batch_size, len(data.train), "--batch-size")
    held = list(eval_batches(data, "heldout", batch_size=64, limit=args.eval_images))

    torch.manual_seed(args.seed)
    base = candidate.build(num_classes=data.num_classes, image_size=data.image_size).to(args.device)
    predict = ghn_predictor(ghn, data.image_size, keep_classifier_init=args.keep_classifier_init)
    widen_from = predict.widen_from
    if widen_from is not None and has_narrow_sibling(base, widen_from):
        _log(f"{args.model} is wider than the widths the GHN was trained on: predicted at width {widen_from} and "
             "widened (directly if the widened net does not match its sibling), so its channels come in identical "
             "copies, which SGD keeps identical; the noise, orth and polar inits break the symmetry, the plain "
             "predicted init does not")
    models = {}
    for init in inits:  # every run starts from a copy of the very same default initialisation
        try:
            models[init] = warm_start(copy.deepcopy(base), init, predict, beta=args.beta,
                                      from_layer=args.noise_from_layer,
                                      generator=torch.Generator().manual_seed(args.seed))
        except UsageError:  # the prediction's own errors (a UsageError is a ValueError) keep their message
            raise
        except ValueError as e:  # diversify's: --noise-from-layer past this network's last weight matrix
            raise UsageError(f"--init {init}: {e}: lower --noise-from-layer") from None
    classifier = "default init (--keep-classifier-init)" if args.keep_classifier_init else "predicted"
    if args.keep_classifier_init:
        _log("classifier (last layer) kept at its default initialisation (--keep-classifier-init); every other "
             "parameter predicted")
    first_warm = next((i for i in inits if i != "default"), None)
    predicted_acc = {i: accuracy(m, held, bn_mode="batch", device=args.device).top1 for i, m in models.items()}
    bn_note = _init_bn(list(models.values()), data, args)
    _log(f"BatchNorm: {bn_note}; held-out accuracy during training uses running statistics (eval mode)")
    report: dict = {
        "model": args.model, "ckpt": args.ckpt, "data": args.data, "image_size": data.image_size,
        "steps": args.steps, "lr": args.lr,
        "warmup": args.warmup, "batch_size": args.batch_size, "eval_every": args.eval_every, "seed": args.seed,
        "optimizer": SGD_RECIPE, "inits": inits, "beta": args.beta, "noise_from_layer": args.noise_from_layer,
        "bn_init": bn_note, "classifier": classifier, "accuracy_at_start_batch_stats": predicted_acc,
        "params": sum(p.numel() for p in base.parameters()),
    }
    kw = dict(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device,
              eval_batches=held, eval_every=args.eval_every, warmup=args.warmup)
    runs = {}
    for init, model in models.items():
        _log(f"training from the {init} initialisation for {args.steps} steps ({SGD_RECIPE}"
             + (f", {args.warmup} warm-up steps)" if args.warmup else ")"))
        runs[f"{init} init"] = train_sgd(model, data, log=_log, **kw)
    report["runs"] = {k: asdict(c) for k, c in runs.items()}

    for init in inits:
        c = runs[f"{init} init"]
        cls_note = f", classifier {classifier}" if init.startswith("predicted") else ""
        end = (f"{c.accuracy[-1]:.2f}% after {c.eval_steps[-1]} steps" if c.diverged_at is None else
               f"diverged at step {c.diverged_at} (non-finite loss; lower --lr)")
        print(f"{args.model}, {init} init: {predicted_acc[init]:.2f}% before training (BN batch statistics{cls_note}), "
              f"{c.accuracy[0]:.2f}% at step 0 after BN init; {end}")
    if "default" in inits and first_warm is not None:
        s = runs["default init"]
        report["speedup"] = {}
        for init in inits:
            if init == "default":
                continue
            report["speedup"][init] = speedup(runs[f"{init} init"], s, checkpoints, budget=args.steps)
            print(f"speed-up of the {init} init over the default init:")
            _print_speedup(report["speedup"][init], args.steps)
    if args.out:  # results first: the plot below is optional and may fail
        write_json(args.out, report)
        print(f"wrote {args.out}")
    if args.plot:
        from train.plots import plot_finetune_curves

        plot_finetune_curves({k: asdict(c) for k, c in runs.items()}, args.plot,
                             title=f"{args.model} on {args.data}: " + " vs ".join(inits) + " initialisation")
        print(f"wrote {args.plot}")
    return 0
