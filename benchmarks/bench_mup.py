"""Tensor Programs V's Figure 1 on digits: training loss against log2 learning rate for several widths, under the
standard parametrisation (SP) and under muP, for one width family (Yang, Hu et al., 2022, Fig. 1 and Sec. 4).

For each parametrisation, width, learning rate of a factor-2 grid and seed, one :func:`train.tune.run_trial`
(the same trainer as ``ghn tune``: ``--steps`` steps of ``--optimizer``, cosine schedule, final training loss);
the loss of a (width, lr) point is the mean over seeds (``inf`` if any seed diverged). Then, per
parametrisation:

- the best learning rate of each width and how many factor-2 steps it moves across widths (issue 13: at most one
  under muP, at least two under SP);
- the transfer: the loss of the widest width at the narrowest width's best learning rate, relative to the widest
  width's own best (issue 13: within 2% under muP), and the same from every other proxy width;
- the coordinate check at the same widths (:mod:`train.coord_check`), from the default initialisation and, with
  ``--ckpt``, from GHN-predicted parameters as they are and orthogonalised (``predicted+orth``);
- with ``--ckpt``: ``--init predicted`` and ``predicted+orth`` against ``--init default`` at the widest width, each
  with the learning rate its own narrowest-width search found (held-out top-1 and loss after the same steps).

Results are cached per trial in ``--out/trials.json`` (keyed by family, parametrisation, width, lr, seed, steps,
optimiser, batch size, image size, init), so a rerun only trains what is missing. Writes ``lr_sweep.csv``,
``results.json``, ``fig1.png`` and ``coord_check.png`` in ``--out``; prints the figures.

    python benchmarks/bench_mup.py --family mlp --widths 64 128 256 512 1024 2048 4096 --seeds 0 1 2 --out /tmp/mlp
    python benchmarks/bench_mup.py --family resnet18 --widths 4 8 16 32 64 --lr-range -11 -2 --seeds 0 1 2 3 \
        --out /tmp/resnet18
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from archspace.files import write_csv, write_json  # noqa: E402
from ghn.pretrained import checkpoint_sha256  # noqa: E402
from train.coord_check import FLAT_RATIO, coord_checks  # noqa: E402
from train.data import eval_batches, load_digits  # noqa: E402
from train.plots import plot_coord_checks, plot_lr_sweep  # noqa: E402
from train.tune import Setting, Trial, lr_grid, mean_trial, optimum_shift, run_trial  # noqa: E402
from train.width_family import width_family  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="mlp", help="mlp, resnet18, deepnets:SPLIT/INDEX")
    p.add_argument("--widths", type=int, nargs="+", default=None, help="default: the family's")
    p.add_argument("--lr-range", type=int, nargs=2, default=[-12, -2], metavar=("LO", "HI"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--coord-steps", type=int, default=5)
    p.add_argument("--coord-lr", type=float, default=2.0 ** -6)
    p.add_argument("--ckpt", default=None, help="a GHN: adds the predicted-init coordinate check and comparison")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


class Cache:
    """Trial results on disk, one JSON file, rewritten atomically after every new trial."""

    def __init__(self, path: str):
        self.path = path
        self.data = json.load(open(path)) if os.path.exists(path) else {}

    def get(self, key: str, fn) -> dict:
        if key not in self.data:
            self.data[key] = fn()
            write_json(self.path, self.data)
        return self.data[key]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data = load_digits(args.image_size)
    family = width_family(args.family, data.num_classes, data.image_size)
    widths = sorted(args.widths or family.widths)
    lrs = lr_grid(*args.lr_range)
    cache = Cache(os.path.join(args.out, "trials.json"))
    ghn_digest = checkpoint_sha256(args.ckpt) if args.ckpt else None  # a run folder or a name: its GHN file
    heldout = list(eval_batches(data, "heldout", batch_size=256))

    def trial(param, width, lr, seed, init="default", predict=None, with_top1=False):
        key = "|".join(map(str, (family.spec, param, width, lr, seed, args.steps, args.optimizer, args.batch_size,
                                 data.image_size, init, with_top1)))
        if init != "default":  # a predicted start depends on the GHN: another --ckpt must not read these trials
            key += f"|ghn={ghn_digest}"

        def run():
            t = run_trial(family, width, Setting(lr), data, param=param, steps=args.steps, init=init,
                          predict=predict, optimizer=args.optimizer, batch_size=args.batch_size, seed=seed,
                          heldout=heldout if with_top1 else None)
            print(f"  {param:>3} width {width:>5} lr 2^{math.log2(lr):g} seed {seed} init {init}: "
                  f"loss {t.loss:.4f} ({t.seconds:.1f} s)", flush=True)
            return t.as_dict()
        d = dict(cache.get(key, run))
        d["loss"] = math.inf if d["loss"] is None else d["loss"]
        return Trial(**d)

    losses = {p: {w: {} for w in widths} for p in ("sp", "mup")}
    rows = []
    for param in ("sp", "mup"):
        for w in widths:
            for lr in lrs:
                per_seed = [trial(param, w, lr, s) for s in args.seeds]
                mean = mean_trial(per_seed).loss
                losses[param][w][lr] = mean
                rows.append([param, w, lr, math.log2(lr), mean] + [t.loss for t in per_seed])
    write_csv(os.path.join(args.out, "lr_sweep.csv"),
              ["param", "width", "lr", "log2_lr", "loss_mean"] + [f"loss_seed{s}" for s in args.seeds], rows)

    results = {"family": family.spec, "widths": widths, "steps": args.steps, "optimizer": args.optimizer,
               "batch_size": args.batch_size, "image_size": data.image_size, "seeds": args.seeds,
               "lr_grid_log2": args.lr_range, "parametrisations": {}}
    for param in ("sp", "mup"):
        best = {w: min(lrs, key=lambda lr, w=w: losses[param][w][lr]) for w in widths}
        narrow, wide = widths[0], widths[-1]
        at_transfer, own = losses[param][wide][best[narrow]], losses[param][wide][best[wide]]
        gaps = {w: (losses[param][wide][best[w]] - own) / own for w in widths[:-1]}
        results["parametrisations"][param] = {
            "best_log2_lr": {w: math.log2(v) for w, v in best.items()},
            "optimum_shift_steps": optimum_shift(best),
            "best_loss": {w: losses[param][w][best[w]] for w in widths},
            "transfer_loss": at_transfer, "widest_best_loss": own,
            "transfer_gap": (at_transfer - own) / own if math.isfinite(at_transfer) else None,
            "transfer_gap_by_proxy": {w: g if math.isfinite(g) else None for w, g in gaps.items()}}

    predict = None
    if args.ckpt:
        from ghn import GHN
        from train.rank import ghn_predictor

        # every width predicted directly, as `ghn tune` does (widened copies would train as the narrow net)
        predict = ghn_predictor(GHN.from_pretrained(args.ckpt).eval(), data.image_size, widen_from=None)
    checks = coord_checks(family, widths, data, predict=predict, steps=args.coord_steps, lr=args.coord_lr,
                          optimizer=args.optimizer, batch_size=args.batch_size, seed=args.seeds[0])
    inits = sorted({c.init for c in checks}, key=[c.init for c in checks].index)
    results["coord_check"] = [{"param": c.param, "init": c.init, "flat": c.flat(), "worst_ratio": max(
        c.ratios().values()), "ratios": c.ratios()} for c in checks]
    results["coord_check_settings"] = {"steps": args.coord_steps, "lr": args.coord_lr, "flat_ratio": FLAT_RATIO}

    if predict is not None:  # predicted against default init at the widest width, each with its own proxy lr
        compare = {}
        for init in inits:
            proxy = {lr: trial("mup", widths[0], lr, args.seeds[0], init, predict).loss for lr in lrs}
            lr = min(lrs, key=proxy.get)
            t = trial("mup", widths[-1], lr, args.seeds[0], init, predict, with_top1=True)
            compare[init] = {"proxy_width": widths[0], "target_width": widths[-1], "log2_lr": math.log2(lr),
                             "target_loss": t.loss if math.isfinite(t.loss) else None, "target_top1": t.top1}
        results["init_comparison"] = compare
    write_json(os.path.join(args.out, "results.json"), results)

    print(f"\n{family.spec}: {args.optimizer}, {args.steps} steps, batch {args.batch_size}, digits "
          f"{data.image_size}x{data.image_size}, seeds {args.seeds}")
    for param, r in results["parametrisations"].items():
        best = " ".join(f"{w}:2^{v:g}" for w, v in r["best_log2_lr"].items())
        gap = "diverged" if r["transfer_gap"] is None else f"{100 * r['transfer_gap']:+.1f}%"
        print(f"  {param:>3}: best lr by width {best}; optimum moves {r['optimum_shift_steps']} factor-2 steps; "
              f"widest at the narrowest's best lr: loss {r['transfer_loss']:.4f} vs own best "
              f"{r['widest_best_loss']:.4f} ({gap})")
        by_proxy = ", ".join(f"{w}: " + ("diverged" if g is None else f"{100 * g:+.1f}%")
                             for w, g in r["transfer_gap_by_proxy"].items())
        print(f"       transfer gap at width {widths[-1]} by proxy width: {by_proxy}")
    for c in results["coord_check"]:
        print(f"  coordinate check {c['param']:>3}, {c['init']} init: {'flat' if c['flat'] else 'NOT flat'} "
              f"(worst layer x{c['worst_ratio']:.2f} across widths)")
    for init, c in results.get("init_comparison", {}).items():
        print(f"  muP width {c['target_width']}, {init} init, lr 2^{c['log2_lr']:g} from width {c['proxy_width']}: "
              f"top-1 {c['target_top1']}, loss {c['target_loss']}")
    plot_lr_sweep(losses, os.path.join(args.out, "fig1.png"),
                  title=f"{family.spec} on digits: training loss after {args.steps} {args.optimizer} steps")
    plot_coord_checks(checks, os.path.join(args.out, "coord_check.png"),
                      title=f"coordinate check: {family.spec}, {args.coord_steps} {args.optimizer} steps")
    print(f"wrote {args.out}/lr_sweep.csv, results.json, fig1.png, coord_check.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
