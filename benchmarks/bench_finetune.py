"""Warm-starting SGD from predicted parameters: which initialisation and learning rate keep the head start.

For every network (unseen DeepNets-1M test nets at a width the GHN serves, and torchvision models in the CIFAR
recipe for small images), one run per warm-start recipe: an initialisation of :data:`ghn.warm_start.INITS`
(``predicted``, ``predicted+noise`` at each ``--noise-betas``, ``predicted+orth`` and ``predicted+polar`` at each
``--orth-betas``, and the GHN-free controls ``default+orth`` and ``default+polar``, the default initialisation
orthogonalised the same ways), a peak
learning rate of ``--lrs`` and a warm-up length of ``--warmups``; and one run from the default initialisation with
the project's recipe (lr ``--scratch-lr``, 0.05, no warm-up). With ``--sgd-starts K,...`` a GHN-free control joins
the warm starts: ``sgd@K``, the default-init run's own weights after K of its steps (kept as safetensors next to its
cached curve), trained from step 0 like any warm start (fresh optimiser, the whole schedule) at each learning rate
and warm-up, which shows what a start exactly as good as K steps of SGD gets. All share the data order, seed and SGD
recipe (:func:`train.finetune.train_sgd`); BatchNorm running statistics are recomputed before step 0 in every run,
as ``ghn finetune`` does. Nets wider than the widths the GHN was trained on are predicted at its widest and widened
(:mod:`ghn.widen`), as ``ghn finetune`` does (earlier versions of the benchmark predicted them directly at their
width, which no user's warm start gets). Per run it keeps the held-out accuracy curve; per warm start against the
default-init run of the same net:

- the speed-up at steps 0, 25, 50, 100 and 200: the steps the default-init run needs to reach the warm run's
  accuracy at that step, over that step (:func:`train.finetune.speedup`; where it never gets there, the lower
  bound budget / step counts, in the table and in its median alike);
- ``reach_final``: the first evaluation step at which the warm run reaches the default-init run's final accuracy,
  as a fraction of the budget (issue 12's criterion: at most one half; the goal one third);
- ``catch_up``: the first evaluation step after 0 from which the default-init run stays at or above the warm run;
- ``final_diff``: warm final accuracy minus default-init final accuracy (points).

The table gives, per (initialisation, lr, warm-up), the median and the spread (min..max) across networks of the
start accuracy, ``final_diff``, ``reach_final``, ``catch_up``, the default-init run's steps to the warm run's step-0
accuracy and the speed-ups (a run that never gets there is counted apart, "never"); the recipe with the smallest
median ``reach_final`` among those that end no more than 0.5 point below the default-init run (median) is printed as
the best (the ``sgd@K`` controls excepted). A run that diverged counts at chance accuracy from its divergence on.
Every run is cached as JSON in ``--out`` (written atomically), so a killed benchmark resumes where it stopped; a
cached run's file name carries a tag of the settings it depends on (steps, evaluation period, width, image size and
the GHN file's SHA-256, :func:`settings_tag`), so reusing a folder with other settings or another GHN trains anew.
Example::

    python benchmarks/bench_finetune.py --ckpt runs/train/<run>/ghn.safetensors --out /tmp/bench_finetune
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict

import torch
from safetensors.torch import load_file

from archspace.files import write_csv, write_json
from ghn import GHN
from ghn.batchnorm import recompute_bn_stats
from ghn.checkpoint import atomic_save_safetensors, copy_state_into
from ghn.pretrained import checkpoint_sha256
from ghn.warm_start import DEFAULT_BETA, INITS, warm_start
from train.candidates import parse_candidates
from train.data import eval_batches, load_image_data
from train.finetune import SGD_LR, Curve, bn_batches, speedup, train_sgd
from train.rank import ghn_predictor

CHECKPOINTS = (0, 25, 50, 100, 200)


def on_grid(curve: Curve, steps: int, eval_every: int, chance: float) -> Curve:
    """``curve`` on the run's planned evaluation steps (0, every ``eval_every``, the last): a run that diverged
    (its curve stops there) counts as ``chance`` accuracy from then on, so a diverged run never looks better than
    it ended."""
    grid = sorted(set(range(0, steps + 1, eval_every)) | {steps})
    acc = dict(zip(curve.eval_steps, curve.accuracy))
    return Curve(eval_steps=grid, accuracy=[acc.get(t, chance) for t in grid], diverged_at=curve.diverged_at)


def settings_tag(args, image_size: int, ghn_digest: str | None, widen_from: int | None = None) -> str:
    """Eight hex digits of everything a cached run depends on besides its net, init, lr, warm-up and seed (which its
    file name spells out): the steps, evaluation period, width, image size and, for a warm start, the GHN file's
    SHA-256 and the width its nets are predicted at before widening (``widen_from``, left out of the key when
    ``None``, so the tags of runs that are not widened stay those of earlier versions). A cache folder reused with
    other settings or another GHN then trains anew instead of reading runs of other settings."""
    settings = {"steps": args.steps, "eval_every": args.eval_every, "width": args.width,
                "image_size": image_size, "ghn": ghn_digest}
    if widen_from is not None:
        settings["widen_from"] = widen_from
    key = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def reach_final(warm: Curve, scratch: Curve) -> int | None:
    """First evaluation step at which ``warm`` reaches the final accuracy of ``scratch`` (``None``: never)."""
    return next((s for s, a in zip(warm.eval_steps, warm.accuracy) if a >= scratch.accuracy[-1]), None)


def catch_up(warm: Curve, scratch: Curve) -> int | None:
    """First evaluation step after 0 from which ``scratch`` stays at or above ``warm`` (``None``: never)."""
    pairs = list(zip(warm.eval_steps, warm.accuracy, scratch.accuracy))
    for i, (s, _, _) in enumerate(pairs):
        if s > 0 and all(b >= a for _, a, b in pairs[i:]):
            return s
    return None


def run_one(path: str, build, data, held, steps: int, lr: float, warmup: int, eval_every: int, seed: int,
            snapshots: dict[int, str] | None = None) -> Curve:
    """Train (or read the cached run at ``path``) and return the curve. ``build``: a function of no arguments that
    returns the starting network, called only when the run is trained (a cached run needs no prediction).
    ``snapshots`` (step -> safetensors path): also keep the weights after those steps; a cached run whose snapshots
    are missing is trained again (the same seed gives the same run)."""
    if os.path.exists(path) and all(os.path.exists(s) for s in (snapshots or {}).values()):
        with open(path) as f:
            return Curve(**json.load(f))
    model = build()
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        recompute_bn_stats(model, bn_batches(data, 10, 64, seed), num_batches=10)

    def on_step(step: int, m: torch.nn.Module) -> None:
        if step in (snapshots or {}):
            atomic_save_safetensors(m.state_dict(), snapshots[step])

    curve = train_sgd(model, data, steps=steps, lr=lr, warmup=warmup, seed=seed, eval_batches=held,
                      eval_every=eval_every, on_step=on_step)
    write_json(path, asdict(curve))
    return curve


def spread(values: list[float]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}..{max(vals):.2f})"


def with_never(values: list[float]) -> str:
    """:func:`spread` of the finite values, and how many are ``inf`` (never within the budget)."""
    never = sum(v == float("inf") for v in values)
    return spread([v for v in values if v != float("inf")]) + (f" ({never} never)" if never else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="the GHN (e.g. the main job's ghn.safetensors)")
    p.add_argument("--nets", default="deepnets:test/0-9", help="candidate list (train/candidates.py grammar)")
    p.add_argument("--width", type=int, default=8, help="base width of the DeepNets-1M nets")
    p.add_argument("--torchvision", default="shufflenet_v2_x0_5,mnasnet0_5", help="torchvision models ('' for none)")
    p.add_argument("--inits", default="predicted,predicted+noise,predicted+orth,predicted+polar,default+orth")
    p.add_argument("--noise-betas", default="0.1", help="noise scales of predicted+noise")
    p.add_argument("--orth-betas", default=f"{DEFAULT_BETA:g}",
                   help="noise scales of the orthogonalised starts (+orth, +polar)")
    p.add_argument("--scratch-lr", type=float, default=SGD_LR, help="lr of the run from the default init")
    p.add_argument("--sgd-starts", default="",
                   help="GHN-free control starts sgd@K: the default-init run's own weights after K steps (comma-"
                        "separated, 0 < K < --steps), a start exactly as good as K steps of SGD, trained like a "
                        "warm start at each of --lrs and --warmups")
    p.add_argument("--lrs", default="0.01,0.05", help="peak learning rates")
    p.add_argument("--warmups", default="0,25", help="warm-up lengths (steps)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/bench_finetune", help="folder of cached runs and the results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    inits = [i for i in args.inits.split(",") if i]
    assert all(i in INITS and i != "default" for i in inits), inits
    lrs = [float(x) for x in args.lrs.split(",")]
    orth_betas = [float(x) for x in args.orth_betas.split(",")]
    betas = {"predicted": [None], "predicted+noise": [float(x) for x in args.noise_betas.split(",")],
             **{i: orth_betas for i in INITS if i.endswith(("+orth", "+polar"))}}
    warmups = [int(x) for x in args.warmups.split(",")]
    sgd_starts = [int(x) for x in args.sgd_starts.split(",") if x]
    if any(not 0 < k < args.steps for k in sgd_starts):
        p.error(f"--sgd-starts must lie strictly between 0 and --steps ({args.steps}), got {args.sgd_starts}")
    ghn = GHN.from_pretrained(args.ckpt).eval()
    data = load_image_data("digits", image_size=ghn.image_size)
    chance = 100.0 / data.num_classes
    scratch_tag = settings_tag(args, data.image_size, None)
    # Nets wider than the GHN's training widths: predicted at its widest and widened, as `ghn finetune` does
    predict = ghn_predictor(ghn, data.image_size)
    widen_from = predict.widen_from
    widened = widen_from if widen_from is not None and args.width > widen_from else None
    warm_tag = settings_tag(args, data.image_size, checkpoint_sha256(args.ckpt), widened)  # run folder: its GHN file
    held = list(eval_batches(data, "heldout", batch_size=256))
    names = [args.nets] + ([f"torchvision:{args.torchvision}"] if args.torchvision else [])
    cands = parse_candidates(names, width=args.width)
    print(f"{len(cands)} networks on digits {data.image_size}x{data.image_size}, inits {inits} + default, "
          f"lr {lrs}, warm-up {warmups}, {args.steps} steps, seed {args.seed}, betas {betas}; default init at lr "
          f"{args.scratch_lr}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    recipes = [(init, beta, lr, wu) for init in inits for beta in betas[init] for lr in lrs for wu in warmups]
    for cand in cands:
        torch.manual_seed(args.seed)
        base = cand.build(num_classes=data.num_classes, image_size=data.image_size)
        tag = cand.name.replace(":", "_").replace("/", "_")
        path = os.path.join(args.out, f"{tag}_default_lr{args.scratch_lr}_wu0_s{args.seed}_{scratch_tag}.json")
        snapshots = {k: f"{path[:-len('.json')]}_step{k}.safetensors" for k in sgd_starts}
        scratch = on_grid(run_one(path, lambda base=base: copy.deepcopy(base), data, held, args.steps,
                                  args.scratch_lr, 0, args.eval_every, args.seed, snapshots),
                          args.steps, args.eval_every, chance)
        line = [f"default lr {args.scratch_lr}: {scratch.accuracy[0]:.1f}->{scratch.accuracy[-1]:.1f}"]
        controls = [("sgd", k, lr, wu) for k in sgd_starts for lr in lrs for wu in warmups]
        for init, beta, lr, wu in recipes + controls:
            name = init if beta is None else f"{init}@{beta:g}"
            if init == "sgd":  # the default-init run's weights after `beta` steps; no GHN involved
                path = os.path.join(args.out, f"{tag}_{name}_lr{lr}_wu{wu}_s{args.seed}_{scratch_tag}.json")

                def start(base=base, file=snapshots[beta]):
                    return copy_state_into(copy.deepcopy(base), load_file(file))
            else:
                path = os.path.join(args.out, f"{tag}_{name}_lr{lr}_wu{wu}_s{args.seed}_{warm_tag}.json")

                def start(base=base, init=init, beta=beta):
                    return warm_start(copy.deepcopy(base), init, predict, beta=beta or 0.0,
                                      generator=torch.Generator().manual_seed(args.seed))
            warm = on_grid(run_one(path, start, data, held, args.steps, lr, wu, args.eval_every, args.seed),
                           args.steps, args.eval_every, chance)
            sp = {r["step"]: r for r in speedup(warm, scratch, [c for c in CHECKPOINTS if c in warm.eval_steps])}
            rf = reach_final(warm, scratch)
            results.append({
                "net": cand.name, "init": name, "lr": lr, "warmup": wu,
                "start_accuracy": warm.accuracy[0], "default_start_accuracy": scratch.accuracy[0],
                "final_accuracy": warm.accuracy[-1], "default_final_accuracy": scratch.accuracy[-1],
                "final_diff": warm.accuracy[-1] - scratch.accuracy[-1],
                "reach_final": rf / args.steps if rf is not None else None,
                "catch_up": catch_up(warm, scratch),
                "diverged_at": warm.diverged_at, "default_diverged_at": scratch.diverged_at,
                **{f"scratch_steps_at_{c}": sp[c]["scratch_steps"] for c in sp},
                # a default-init run that never reaches the warm accuracy counts with its lower bound, budget / c
                **{f"speedup_at_{c}": sp[c]["speedup"] if sp[c]["speedup"] is not None
                   else sp[c]["speedup_lower_bound"] for c in sp if c > 0},
            })
            line.append(f"{name} lr {lr} wu {wu}: {warm.accuracy[0]:.1f}->{warm.accuracy[-1]:.1f}")
        print(f"{cand.name:<32} " + "; ".join(line) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    cols = list(dict.fromkeys(k for r in results for k in r))
    write_csv(os.path.join(args.out, "runs.csv"), cols, [[r.get(c) for c in cols] for r in results])
    table, best = [], None
    print("\nper (init, lr, warm-up), median (min..max) across networks:")
    print(f"{'init':<22} {'lr':<6} {'wu':<4} {'start acc':<20} {'final diff':<22} {'reach scratch final':<22} "
          f"{'scratch catches up':<24} {'scratch steps @0':<18} "
          + "  ".join(f"{'x@' + str(c):<18}" for c in CHECKPOINTS if c > 0))
    for init in dict.fromkeys(r["init"] for r in results):
        for lr in lrs:
            for wu in warmups:
                rs = [r for r in results if (r["init"], r["lr"], r["warmup"]) == (init, lr, wu)]
                never = sum(r["reach_final"] is None for r in rs)
                rf = [r["reach_final"] if r["reach_final"] is not None else float("inf") for r in rs]
                no_catch = sum(r["catch_up"] is None for r in rs)
                cu = [r["catch_up"] if r["catch_up"] is not None else float("inf") for r in rs]
                # steps from scratch to the warm start's step-0 accuracy (inf: not within the budget)
                at0 = [r["scratch_steps_at_0"] if r["scratch_steps_at_0"] is not None else float("inf") for r in rs]
                row = {"init": init, "lr": lr, "warmup": wu, "nets": len(rs),
                       "final_diff_median": statistics.median(r["final_diff"] for r in rs),
                       "reach_final_median": statistics.median(rf), "reach_final_never": never,
                       "catch_up_median": statistics.median(cu), "catch_up_never": no_catch,
                       "scratch_steps_at_0_median": statistics.median(at0),
                       "diverged": sum(r["diverged_at"] is not None for r in rs),
                       "start_accuracy_median": statistics.median(r["start_accuracy"] for r in rs)}
                for c in CHECKPOINTS[1:]:
                    vals = [r[f"speedup_at_{c}"] for r in rs if r.get(f"speedup_at_{c}") is not None]
                    row[f"speedup_at_{c}_median"] = statistics.median(vals) if vals else None
                table.append(row)
                print(f"{init:<22} {lr:<6} {wu:<4} {spread([r['start_accuracy'] for r in rs]):<20} "
                      f"{spread([r['final_diff'] for r in rs]):<22} "
                      f"{with_never(rf):<22} "
                      f"{with_never(cu):<24} {with_never(at0):<18} "
                      + "  ".join(f"{spread([r.get(f'speedup_at_{c}') for r in rs]):<18}" for c in CHECKPOINTS
                                  if c > 0), flush=True)
                usable = not init.startswith("sgd@")  # the sgd@K controls are no start a user has
                if usable and row["final_diff_median"] >= -0.5 and (
                        best is None or row["reach_final_median"] < best["reach_final_median"]):
                    best = row
    tcols = list(table[0])
    write_csv(os.path.join(args.out, "table.csv"), tcols, [[r[c] for c in tcols] for r in table])
    write_json(os.path.join(args.out, "results.json"), {"settings": vars(args), "runs": results, "table": table,
                                                        "best": best})
    print(f"\nbest recipe (smallest median steps to the default-init final accuracy, ending within 0.5 point): "
          f"{best}" if best else "\nno recipe ends within 0.5 point of the default-init run (median)")
    print(f"({time.perf_counter() - t0:.0f} s; results in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
