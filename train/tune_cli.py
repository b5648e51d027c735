"""``ghn tune``: muTransfer. Tune the learning rate (and optionally the output and init multipliers) on narrow
proxies under muP, then train the wide target once with the proxies' best setting (Yang, Hu et al., 2022,
"Tensor Programs V"; the ``mup`` package).

Examples::

    ghn tune mlp --proxy-widths 128 256 --target-width 2048 --verify --out tune_mlp
    ghn tune resnet18 --proxy-widths 4 8 --target-width 32 --trials 6 --output-mults -1 0 1
    ghn tune deepnets:test/3 --proxy-widths 8 --target-width 64 --init predicted --ckpt ghn.safetensors
    ghn tune --coord-check mlp --ckpt ghn.safetensors --out coord_mlp

Every proxy width runs the same search (``--lr-range`` gives log2 bounds of a factor-2 grid; ``--output-mults``
and ``--init-mults`` add log2 grids of multipliers; ``--trials N`` draws N settings of the grid at random);
a trial trains ``--steps`` steps of ``--optimizer`` and scores its final training loss, averaged over ``--seeds N``
runs (the loss is flat near its optimum, so one seed's best grid point is partly chance). The target then trains
once (per seed) with the widest proxy's best setting; ``--verify`` runs the same search on the target itself and
reports the transfer gap (the transferred setting's loss relative to the target's own best). ``--init predicted`` starts
proxies and target from the GHN's predicted parameters (the muP readout rescaled so that the logits are the
predicted network's, :mod:`train.mup_param`); ``predicted+orth`` orthogonalises each predicted weight matrix first
(a GHN fills a wide layer by tiling one block, a low-rank matrix). ``--coord-check`` instead trains ``--widths``
for ``--steps`` steps under SP and muP and plots every layer's activation size against width (from the default
initialisation, and from predicted and orthogonalised predicted parameters when ``--ckpt`` is given).

Outputs in ``--out``: ``tune.csv`` (proxy optima, target result, target's own optimum and the transfer gap, and the
compute of each), ``trials.csv`` (every trial), ``tune.json``; with ``--coord-check``: ``coord_check.csv``,
``coord_check.json`` and ``coord_check.png``. Tables are written before the plot. Errors in the arguments exit with
status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

#: Defaults of a tuning run: Adam (the optimiser of Tensor Programs V's Figure 1), 100 steps, lr 2^-12..2^-2.
DEFAULT_OPTIMIZER = "adam"
DEFAULT_STEPS = 100
DEFAULT_LR_RANGE = (-12, -2)
#: Largest magnitude of a log2 exponent of --lr-range, --output-mults and --init-mults (2**60 is far beyond any
#: useful multiplier, and far below a float's overflow at 2**1024).
MAX_LOG2 = 60
COORD_STEPS = 5
COORD_LR = 2.0 ** -6


def add_tune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``tune`` sub-command (the ``ghn.commands`` entry point); its handler is :func:`run_tune`.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``tune`` parser.
    """
    from ghn.pretrained import CKPT_HELP
    from train.data import DATASETS
    from train.mup_param import OPTIMIZERS, PARAMETRISATIONS
    from train.width_family import FAMILY_HELP

    p = subparsers.add_parser(
        "tune", help="muTransfer: tune hyper-parameters on narrow proxies under muP, train the wide target once",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help=FAMILY_HELP)
    p.add_argument("--coord-check", action="store_true",
                   help="run the coordinate check (SP and muP, activation size of every layer against width)")
    p.add_argument("--widths", type=int, nargs="+", default=None,
                   help="widths of the coordinate check (default: the family's)")
    p.add_argument("--proxy-widths", type=int, nargs="+", default=None,
                   help="widths to tune on (default: the family's two narrowest)")
    p.add_argument("--target-width", type=int, default=None, help="width to transfer to (default: the family's widest)")
    p.add_argument("--trials", type=int, default=None, help="settings per width (default: the whole grid)")
    p.add_argument("--search", choices=("grid", "random"), default=None,
                   help="grid: every setting; random: --trials settings drawn from the grid (default: random when "
                        "--trials is given, else grid)")
    p.add_argument("--lr-range", type=int, nargs=2, default=list(DEFAULT_LR_RANGE), metavar=("LO", "HI"),
                   help="log2 bounds of the learning-rate grid (factor-2 steps)")
    p.add_argument("--output-mults", type=int, nargs="+", default=[0], metavar="LOG2",
                   help="log2 output multipliers to search (muP readout)")
    p.add_argument("--init-mults", type=int, nargs="+", default=[0], metavar="LOG2",
                   help="log2 multipliers of the default initialisation's weights to search")
    p.add_argument("--param", choices=PARAMETRISATIONS, default="mup", help="parametrisation of the search")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULT_OPTIMIZER, help="optimiser of every trial")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps per trial (default {DEFAULT_STEPS}; coordinate check {COORD_STEPS})")
    p.add_argument("--lr", type=float, default=COORD_LR, help="learning rate of the coordinate check")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--init", choices=("default", "predicted", "predicted+noise", "predicted+orth"), default="default",
                   help="start proxies and target from the default (muP) init or from the GHN's prediction (as is, "
                        "with noise, or orthogonalised: a wide predicted layer is a tiling of one block)")
    p.add_argument("--ckpt", default=None, help=CKPT_HELP + " (needed for --init predicted)")
    p.add_argument("--keep-classifier-init", action="store_true",
                   help="predict every layer but the classifier (a GHN trained for another number of classes)")
    p.add_argument("--verify", action="store_true",
                   help="also search at the target width and report the transfer gap")
    p.add_argument("--readout-zero-init", action="store_true", help="start the muP readout at zero")
    p.add_argument("--data", default="digits", choices=DATASETS, help="image task")
    p.add_argument("--data-root", default=None, help="dataset folder (cifar10, imagenet)")
    p.add_argument("--image-size", type=int, default=8, help="image side (digits are 8x8 scans)")
    p.add_argument("--seed", type=int, default=0, help="seed of default initialisations and data order")
    p.add_argument("--seeds", type=int, default=1,
                   help="runs per setting, seeds SEED..SEED+N-1; a setting's loss is their mean (the loss curve is "
                        "flat near its optimum, so one seed's best grid point is partly chance)")
    p.add_argument("--out", default="tune_out", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", default=None, help="torch CPU threads: a number or 'auto'")
    p.set_defaults(func=run_tune)
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace, family) -> None:
    from archspace.errors import UsageError
    from archspace.files import check_writable_dir
    from ghn.threads import set_threads
    from train.cli_args import check_device, check_numbers

    check_numbers(args, at_least={"steps": 1, "batch_size": 1, "trials": 1, "target_width": 1, "seeds": 1, "seed": 0},
                  above={"lr": 0})
    for name in ("widths", "proxy_widths"):
        values = getattr(args, name)
        if values is not None and min(values) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {values}")
    if args.coord_check and len(args.widths or family.widths) < 2:
        raise UsageError("--coord-check needs at least 2 --widths")
    if args.search is None:
        args.search = "grid" if args.trials is None else "random"
    if args.search == "random" and args.trials is None:
        raise UsageError("--search random needs --trials N")
    if args.search == "grid" and args.trials is not None:
        raise UsageError("--search grid runs every setting of the grid; drop --trials or use --search random")
    if args.lr_range[0] > args.lr_range[1]:
        raise UsageError(f"--lr-range LO HI needs LO <= HI, got {args.lr_range}")
    for name in ("lr_range", "output_mults", "init_mults"):  # log2 exponents: 2**1024 overflows a float
        values = getattr(args, name)
        if max(abs(k) for k in values) > MAX_LOG2:
            raise UsageError(f"--{name.replace('_', '-')} takes log2 exponents between -{MAX_LOG2} and {MAX_LOG2}, "
                             f"got {values}")
    if args.init != "default" and args.ckpt is None:
        raise UsageError(f"--init {args.init} needs a GHN: --ckpt PATH or a released name")
    if args.keep_classifier_init and args.ckpt is None:
        raise UsageError("--keep-classifier-init applies to predicted parameters: pass --ckpt")
    if args.coord_check:
        given = [flag for flag, value in (("--proxy-widths", args.proxy_widths), ("--target-width", args.target_width),
                                          ("--trials", args.trials), ("--verify", args.verify or None),
                                          ("--seeds", None if args.seeds == 1 else args.seeds),
                                          ("--init", None if args.init == "default" else args.init))
                 if value is not None]
        if given:
            raise UsageError(f"--coord-check trains --widths with --lr; {', '.join(given)} belong to a search "
                             f"(drop them or --coord-check)")
    elif args.widths is not None or args.lr != COORD_LR:
        raise UsageError("--widths and --lr set the coordinate check; a search uses --proxy-widths, --target-width "
                         "and --lr-range (or add --coord-check)")
    if args.readout_zero_init and (args.param == "sp" or args.init != "default"):
        raise UsageError("--readout-zero-init starts a default-initialised muP readout at zero; it does not apply "
                         "to --param sp or predicted parameters")
    if args.init != "default" and args.init_mults != [0]:
        raise UsageError("--init-mults scales a default initialisation; predicted parameters are kept as they are")
    check_device(args.device)
    set_threads(args.threads)
    check_writable_dir(args.out, "--out")


def run_tune(args: argparse.Namespace) -> int:
    """Run ``ghn tune`` (module docstring).

    Returns:
        0 on success.

    Raises:
        archspace.errors.UsageError: bad input (options, model, checkpoint or dataset, every trial diverging).
    """
    from train.data import load_image_data
    from train.width_family import width_family

    data = load_image_data(args.data, root=args.data_root, image_size=args.image_size, seed=0)
    family = width_family(args.model, data.num_classes, data.image_size)
    _check_args(args, family)
    os.makedirs(args.out, exist_ok=True)
    predict = _predictor(args, data) if (args.init != "default" or (args.coord_check and args.ckpt)) else None
    if args.coord_check:
        return _coord_check(args, family, data, predict)
    return _tune(args, family, data, predict)


def _predictor(args, data):
    from ghn import GHN
    from train.rank import ghn_predictor

    ghn = GHN.from_pretrained(args.ckpt, device=args.device).eval()
    # muTransfer sweeps widths: every width predicted directly, since a widened net's channel copies would stay
    # identical under SGD and train as the narrow net
    return ghn_predictor(ghn, data.image_size, keep_classifier_init=args.keep_classifier_init, widen_from=None)


def _coord_check(args, family, data, predict) -> int:
    from archspace.files import write_csv, write_json
    from train.coord_check import FLAT_RATIO, coord_checks
    from train.plots import plot_coord_checks

    widths = sorted(args.widths or family.widths)
    steps = args.steps or COORD_STEPS
    _log(f"{steps} steps of {args.optimizer} at lr {args.lr:g} per width")
    checks = coord_checks(family, widths, data, predict=predict, log=_log, steps=steps, lr=args.lr,
                          optimizer=args.optimizer, batch_size=args.batch_size, seed=args.seed, device=args.device,
                          readout_zero_init=args.readout_zero_init, predicted_readout=not args.keep_classifier_init)
    rows = [[c.param, c.init, layer, w, step + 1, v] for c in checks for layer, by_w in c.sizes.items()
            for w, values in by_w.items() for step, v in enumerate(values)]
    write_csv(os.path.join(args.out, "coord_check.csv"), ["param", "init", "layer", "width", "step", "mean_abs"],
              rows)
    summary = [{"param": c.param, "init": c.init, "widths": c.widths, "flat": c.flat(), "ratios": c.ratios(),
                "growth": c.growth(), "losses": c.losses} for c in checks]
    write_json(os.path.join(args.out, "coord_check.json"), {"model": family.spec, "steps": steps, "lr": args.lr,
                                                            "optimizer": args.optimizer, "flat_ratio": FLAT_RATIO,
                                                            "checks": summary})
    print(f"coordinate check of {family.spec}, widths {widths[0]}-{widths[-1]}, {steps} steps "
          f"(a layer is flat when its size stays within x{FLAT_RATIO:g} across widths):")
    for c in checks:
        ratios = c.ratios()
        worst = max(ratios, key=ratios.get)
        print(f"  {c.param:>3}, {c.init:<9} init: {'flat' if c.flat() else 'NOT flat'}; worst layer {worst} "
              f"x{ratios[worst]:.2f} (widest/narrowest x{c.growth()[worst]:.2f})")
    path = plot_coord_checks(checks, os.path.join(args.out, "coord_check.png"),
                             title=f"coordinate check: {family.spec}, {args.optimizer}, {steps} steps")
    print(f"wrote {os.path.join(args.out, 'coord_check.csv')}, coord_check.json, {path}")
    return 0


def _tune(args, family, data, predict) -> int:
    from archspace.errors import UsageError
    from archspace.files import write_csv, write_json
    from train.data import eval_batches
    from train.tune import Setting, best_trial, lr_grid, run_setting, search, search_space

    proxies = sorted(args.proxy_widths or family.widths[:2])
    target = args.target_width or family.widths[-1]
    if target <= max(proxies):
        raise UsageError(f"--target-width {target} must be wider than every proxy width {proxies}")
    steps = args.steps or DEFAULT_STEPS
    settings = search_space(lr_grid(*args.lr_range), [2.0 ** k for k in args.output_mults],
                            [2.0 ** k for k in args.init_mults],
                            trials=args.trials, seed=args.seed)
    heldout = list(eval_batches(data, "heldout", batch_size=256))
    common = dict(param=args.param, steps=steps, init=args.init, predict=predict, optimizer=args.optimizer,
                  batch_size=args.batch_size, seeds=list(range(args.seed, args.seed + args.seeds)),
                  device=args.device, readout_zero_init=args.readout_zero_init,
                  predicted_readout=not args.keep_classifier_init)
    all_trials = []
    best_by_proxy = {}
    for w in proxies:
        _log(f"proxy width {w}: {len(settings)} settings, {steps} steps each")
        trials = search(family, w, settings, data, log=_log, **common)
        all_trials += [("proxy", t) for t in trials]
        best_by_proxy[w] = best_trial(trials)
    chosen = best_by_proxy[proxies[-1]]
    setting = Setting(chosen.lr, chosen.output_mult, chosen.init_mult)
    _log(f"target width {target} with the widest proxy's best setting ({setting.label()})")
    transferred = run_setting(family, target, setting, data, heldout=heldout, **common)
    all_trials.append(("target", transferred))
    own = None
    if args.verify:
        _log(f"verify: the same search at the target width {target}")
        own_trials = search(family, target, settings, data, log=_log, **common)
        all_trials += [("target-search", t) for t in own_trials]
        own = dataclasses.replace(best_trial(own_trials))  # the search's trial, with the top-1 of its setting
        if (own.lr, own.output_mult, own.init_mult) == (transferred.lr, transferred.output_mult,
                                                         transferred.init_mult):
            own.top1 = transferred.top1
        else:  # the search measured no top-1: rerun that setting (same seeds: the same runs) with held-out images
            rerun = run_setting(family, target, Setting(own.lr, own.output_mult, own.init_mult), data,
                                heldout=heldout, **common)
            all_trials.append(("target, own optimum rerun", rerun))
            own.top1 = rerun.top1
    rows, table = _table(best_by_proxy, transferred, own, all_trials, len(settings))
    columns = ["role", "width", "lr", "log2_lr", "output_mult", "init_mult", "loss", "top1", "seconds", "flops",
               "transfer_gap", "seeds"]
    write_csv(os.path.join(args.out, "tune.csv"), columns, rows)
    write_csv(os.path.join(args.out, "trials.csv"), ["role"] + list(transferred.as_dict()),
              [[role] + list(t.as_dict().values()) for role, t in all_trials])
    write_json(os.path.join(args.out, "tune.json"), {
        "model": family.spec, "param": args.param, "init": args.init, "optimizer": args.optimizer, "steps": steps,
        "batch_size": args.batch_size, "seed": args.seed, "seeds": args.seeds, "data": data.name,
        "image_size": data.image_size,
        "proxy_widths": proxies, "target_width": target, "settings": len(settings), **table,
        "trials": [dict(role=role, **t.as_dict()) for role, t in all_trials]})
    _print_table(columns, rows, table)
    print(f"wrote {os.path.join(args.out, 'tune.csv')}, trials.csv, tune.json")
    return 0


def _table(best_by_proxy, transferred, own, all_trials, n_settings):
    def row(role, t, gap=None):
        return [role, t.width, t.lr, math.log2(t.lr), t.output_mult, t.init_mult, t.loss, t.top1, t.seconds, t.flops,
                gap, t.seeds]

    rows = [row("proxy optimum", t) for t in best_by_proxy.values()]
    gap = None
    if own is not None and own.loss > 0:  # inf when the transferred setting diverged at the target
        gap = (transferred.loss - own.loss) / own.loss
    rows.append(row("target, transferred", transferred, gap))
    if own is not None:
        rows.append(row("target, own optimum", own))
    proxy_seconds = sum(t.seconds for role, t in all_trials if role == "proxy")  # the search only, not the reruns
    proxy_flops = sum(t.flops for role, t in all_trials if role == "proxy")
    measured = [t for role, t in all_trials if role == "target-search"]
    if measured:
        target_seconds, target_flops = sum(t.seconds for t in measured), sum(t.flops for t in measured)
    else:  # the search the target would have needed: every setting at the target's cost per run
        target_seconds, target_flops = transferred.seconds * n_settings, transferred.flops * n_settings
    table = {"transfer_gap": gap, "proxy_tuning_seconds": proxy_seconds, "proxy_tuning_flops": proxy_flops,
             "target_tuning_seconds": target_seconds, "target_tuning_flops": target_flops,
             "target_tuning_measured": bool(measured),
             "proxy_over_target_flops": proxy_flops / target_flops if target_flops else None}
    return rows, table


def _print_table(columns, rows, table) -> None:
    print(f"{'':<22}{'width':>6}{'log2 lr':>9}{'out':>6}{'init':>6}{'loss':>9}{'top-1':>8}{'seconds':>9}")
    for r in rows:
        top1 = f"{r[7]:.2f}" if r[7] is not None else "-"
        loss = f"{r[6]:.4f}" if math.isfinite(r[6]) else "inf"
        print(f"{r[0]:<22}{r[1]:>6}{r[3]:>9.0f}{r[4]:>6g}{r[5]:>6g}{loss:>9}{top1:>8}{r[8]:>9.1f}")
    if table["transfer_gap"] is not None:
        print(f"transfer gap: the transferred setting's loss is {100 * table['transfer_gap']:+.1f}% relative to "
              f"the target's own best")
    kind = "measured" if table["target_tuning_measured"] else "estimated: settings x the target's run"
    ratio = table["proxy_over_target_flops"]
    print(f"tuning compute: proxies {table['proxy_tuning_seconds']:.1f} s / {table['proxy_tuning_flops']:.3g} FLOPs; "
          f"the same search on the target {table['target_tuning_seconds']:.1f} s / "
          f"{table['target_tuning_flops']:.3g} FLOPs ({kind})" + (f"; ratio {ratio:.3f}" if ratio else ""))
