"""Ranking candidate designs: every ranker of ``ghn rank`` judged against trained accuracy.

The yardstick (issue 11): unseen DeepNets-1M nets of the test split at the width the GHN serves, each trained from
its default initialisation with the project's SGD recipe for :data:`train.rank.TRAINED_STEPS` steps
(:func:`train.rank.train_to_convergence`, the code ``ghn rank --validate`` runs). Ground truth is the held-out
top-1 after that run; second targets are the held-out loss and the steps needed to reach 90% of the final accuracy.
Every net is trained a second time with another seed (other batches, other default initialisation): the Kendall tau
between the two trained rankings is the ceiling, the agreement no ranker can be expected to beat.

Rankers (:data:`train.scores.SCORES`, all computed on the same nets in the same run): the GHN's accuracy and loss
with predicted parameters; the zero-cost proxies at the default initialisation and at the predicted parameters;
short training runs (``sgdK``: K SGD steps from the default initialisation or from the predicted parameters, K from
``--sgd-steps`` besides :data:`train.scores.SHORT_SGD_STEPS`, their data order seeded apart from the yardstick's);
the baselines parameter count, FLOPs, depth and random; property prediction (an RBF support-vector regressor on
mean-pooled GHN node embeddings, fitted on labelled nets of the val split, Knyazev et al., NeurIPS 2021, Sec. 5.3);
and ``vote``, the rank average of the three best single rankers on the val nets (chosen there, scored on the test
nets). For each: Kendall tau and Spearman rho with bootstrap 95% intervals, top-10 precision, and its cost per
candidate in seconds.

Trained accuracies are cached in ``--cache`` (JSON, written atomically after every net), keyed by net, width,
image size, data, steps, lr, batch size and seed, so a killed run resumes and other rankers reuse them; the default
cache is committed (``docs/bench_rank_trained.json``) and grows as sessions add trainings. Training runs in
``--jobs`` processes of one thread each; scoring runs afterwards, in this process or in ``--score-jobs`` processes
of one thread each. Examples::

    python benchmarks/bench_rank.py --pick-steps 100,200,400 --nets 0-11      # choose TRAINED_STEPS
    python benchmarks/bench_rank.py --width 16 --ceiling-nets 0-59 --train-only   # the yardstick alone, no GHN
    python benchmarks/bench_rank.py --ckpt runs/train/<run>/ghn.safetensors --out docs/bench_rank
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from functools import partial

import numpy as np
import torch

from archspace.files import write_csv, write_json
from train.candidates import one_candidate, parse_candidates
from train.correlation import rank_correlation
from train.data import eval_batches, load_image_data
from train.finetune import SGD_LR
from train.rank import TRAINED_STEPS, train_candidate
from train.workers import task_runner


def _key(net: str, args, steps: int, seed: int) -> str:
    return (f"{net}|width={args.width}|image_size={args.image_size}|data={args.data}|steps={steps}|lr={args.lr}"
            f"|batch={args.batch_size}|seed={seed}")


def load_cache(path: str) -> dict:
    """The cached training runs; a diverged run's loss (``inf``, written as JSON ``null``) reads back as ``inf``."""
    import json

    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        cache = json.load(f)
    for run in cache.values():
        if run.get("loss", 0.0) is None:
            run["loss"] = math.inf
    return cache


def trained(nets: list[str], seeds: list[int], steps_list: list[int], args) -> dict:
    """Train every (net, steps, seed) missing from the cache in ``--jobs`` processes; return the cache."""
    cache = load_cache(args.cache)
    todo = [(n, st, s) for n in nets for st in steps_list for s in seeds if _key(n, args, st, s) not in cache]
    if not todo:
        return cache
    print(f"training {len(todo)} runs in {args.jobs} processes (cache {args.cache})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    data = load_image_data(args.data, image_size=args.image_size, seed=0)
    run_one = partial(train_candidate, data=data, eval_batches=eval_batches(data, "heldout", batch_size=100),
                      lr=args.lr, batch_size=args.batch_size)
    with task_runner(run_one, args.jobs) as run:
        for i, ((n, st, s), t) in enumerate(zip(todo, run((one_candidate(n, args.width), st, s)
                                                           for n, st, s in todo)), 1):
            if isinstance(t, str):
                raise RuntimeError(f"{n} could not be trained: {t}")
            cache[_key(n, args, st, s)] = {"top1": t.top1, "loss": t.loss, "steps_to_90": t.steps_to_90,
                                           "seconds": t.seconds}
            write_json(args.cache, cache)
            if i % 10 == 0 or i == len(todo):
                print(f"  {i}/{len(todo)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return cache


def pick_steps(args) -> None:
    """Print, per budget, the mean final accuracy and the tau against the largest budget (same nets, seed 0)."""
    budgets = sorted(int(s) for s in args.pick_steps.split(","))
    nets = [c.name for c in parse_candidates([f"deepnets:{args.split}/{args.nets}"], width=args.width)]
    cache = trained(nets, [0], budgets, args)
    top = {b: [cache[_key(n, args, b, 0)]["top1"] for n in nets] for b in budgets}
    secs = {b: [cache[_key(n, args, b, 0)]["seconds"] for n in nets] for b in budgets}
    print(f"{len(nets)} nets of {args.split}, width {args.width}, {args.data} {args.image_size}x{args.image_size}")
    print("steps  mean top-1  median top-1  tau vs largest  mean s/net")
    for b in budgets:
        tau = rank_correlation(top[b], top[budgets[-1]]).kendall_tau
        print(f"{b:>5}  {statistics.mean(top[b]):10.2f}  {statistics.median(top[b]):12.2f}  {tau:14.3f}  "
              f"{statistics.mean(secs[b]):10.1f}")


def _scoring_inputs(data_name: str, image_size: int, eval_images: int, ckpt: str) -> dict:
    """What every score needs: the task, its held-out batches, the proxies' training batch, the GHN."""
    from ghn import GHN
    from train.finetune import bn_batches

    torch.manual_seed(0)
    data = load_image_data(data_name, image_size=image_size, seed=0)
    return {"data": data, "held": list(eval_batches(data, "heldout", batch_size=64, limit=eval_images)),
            "proxy_batch": next(iter(bn_batches(data, 1, batch_size=64, seed=0))),
            "ghn": GHN.from_pretrained(ckpt).eval()}


def score_nets(nets: list[str], names: list[str], args, inputs: dict) -> list:
    """Score ``nets`` with ``names`` (:func:`train.rank.score_candidates`): in this process (``--score-jobs 1``,
    the costs of its threads) or in ``--score-jobs`` processes of one thread each (the costs of one thread); rows
    in the order of ``nets``."""
    from train.rank import ghn_predictor, score_candidates

    data = inputs["data"]
    return score_candidates(parse_candidates(nets, width=args.width), ghn_predictor(inputs["ghn"], data.image_size),
                            inputs["held"], num_classes=data.num_classes, image_size=data.image_size, scores=names,
                            proxy_batch=inputs["proxy_batch"], train_data=data, jobs=args.score_jobs,
                            log=lambda m: print("  " + m, file=sys.stderr, flush=True))


def run_benchmark(args) -> None:
    """Train (or read from the cache) the yardstick, score every net with every ranker, print and write the
    table (``table.csv``), the per-net scores (``scores.csv``), ``results.json`` and the scatter plot."""
    from train.correlation import ranking_report
    from train.rank import embed_candidates, fit_embedding_regressor, ghn_embedder
    from train.scores import GHN_SUFFIX, SCORES, add_vote, needs_ghn

    seeds = [int(s) for s in args.seeds.split(",")]
    names = list(SCORES) + [f"sgd{k}{sfx}" for k in args.sgd_steps for sfx in ("", GHN_SUFFIX)
                            if f"sgd{k}{sfx}" not in SCORES]
    test = [c.name for c in parse_candidates([f"deepnets:{args.split}/{args.nets}"], width=args.width)]
    labelled = [c.name for c in parse_candidates([f"deepnets:{args.labelled}"], width=args.width)]
    trained(test, seeds[:1], [args.steps], args)  # the ground truth first, then the labels, then the ceiling
    trained(labelled, seeds[:1], [args.steps], args)
    twice = (test if args.ceiling_nets is None else
             [c.name for c in parse_candidates([f"deepnets:{args.split}/{args.ceiling_nets}"], width=args.width)])
    cache = trained(twice, seeds[1:], [args.steps], args) if not args.skip_ceiling else load_cache(args.cache)
    if args.train_only:
        print(f"trained: {len(test)} nets of {args.split}, {len(labelled)} labelled, "
              f"{0 if args.skip_ceiling else len(twice)} with seed {seeds[1:]} (cache {args.cache})")
        return
    truth = {n: dict(cache[_key(n, args, args.steps, seeds[0])]) for n in test + labelled}
    for t in truth.values():  # runs cached before steps_to_90 left out step 0 gave 0 for nets that never learned
        if t["steps_to_90"] == 0:
            t["steps_to_90"] = args.steps

    inputs = _scoring_inputs(args.data, args.image_size, args.eval_images, args.ckpt)
    data, ghn = inputs["data"], inputs["ghn"]
    where = (f"{args.score_jobs} processes of 1 thread" if args.score_jobs > 1 else
             f"this process, {torch.get_num_threads()} threads")
    print(f"scoring {len(test)} test and {len(labelled)} labelled nets with {len(names)} per-net scores ({where})",
          file=sys.stderr, flush=True)
    rows = score_nets(test, names, args, inputs)
    lab_rows = score_nets(labelled, names, args, inputs)
    test_cands = parse_candidates(test, width=args.width)
    lab_cands = parse_candidates(labelled, width=args.width)
    rows = [r for r in rows if r.error is None]
    lab_rows = [r for r in lab_rows if r.error is None]

    # property prediction: an RBF SVR on mean-pooled GHN node embeddings, fitted on the labelled nets
    embed = ghn_embedder(ghn, data.image_size)
    kw = dict(num_classes=data.num_classes, image_size=data.image_size, seed=0)
    by_name = {c.name: c for c in test_cands + lab_cands}
    lab_x = embed_candidates([by_name[r.name] for r in lab_rows], embed, **kw)  # (L, D)
    t0 = time.perf_counter()
    test_x = embed_candidates([by_name[r.name] for r in rows], embed, **kw)  # (C, D)
    per_net = (time.perf_counter() - t0) / len(rows)
    reg = fit_embedding_regressor(lab_x, [truth[r.name]["top1"] for r in lab_rows])
    for r, v in zip(rows, reg.predict(test_x)):
        r.scores["embed"], r.score_seconds["embed"] = float(v), per_net

    # the vote: the three best single rankers on the labelled nets (chosen there, judged on the test nets)
    lab_truth = [truth[r.name]["top1"] for r in lab_rows]
    lab_tau = {n: ranking_report([r.scores[n] for r in lab_rows], lab_truth, resamples=10)["kendall_tau"]
               for n in names if n != "random"}
    members = sorted(lab_tau, key=lambda n: -np.nan_to_num(lab_tau[n], nan=-1))[:3]
    add_vote(rows, members)
    shared = max(0, sum(needs_ghn(m) for m in members) - 1)  # one GHN prediction serves every member
    for r in rows:
        r.score_seconds["vote"] = sum(r.score_seconds[m] for m in members) - shared * r.predict_seconds

    top1 = [truth[r.name]["top1"] for r in rows]
    loss = [-truth[r.name]["loss"] for r in rows]  # higher is better, as every score
    fast = [-truth[r.name]["steps_to_90"] for r in rows]
    finite_loss = all(np.isfinite(loss))
    table, results = [], {"nets": len(rows), "split": args.split, "width": args.width, "data": args.data,
                          "image_size": args.image_size, "steps": args.steps, "lr": args.lr, "seeds": seeds,
                          "vote_members": members, "labelled": len(lab_rows), "labelled_tau": lab_tau,
                          "mean_trained_top1": statistics.mean(top1), "rankers": {}}
    second = [(cache.get(_key(r.name, args, args.steps, seeds[1])), t) for r, t in zip(rows, top1)
              if len(seeds) > 1]
    second = [(s, t) for s, t in second if s is not None]
    if len(second) >= 10:  # the ceiling over the nets trained twice (all of them unless --skip-ceiling cut it)
        ceil = ranking_report([s["top1"] for s, _ in second], [t for _, t in second], resamples=args.bootstrap)
        ceil["cost_s"] = statistics.median(s["seconds"] for s, _ in second)
        results["ceiling"] = ceil
    for name in names + ["embed", "vote"]:
        scores = [r.scores[name] for r in rows]
        rep = ranking_report(scores, top1, resamples=args.bootstrap)
        rep["tau_loss"] = ranking_report(scores, loss, resamples=10)["kendall_tau"] if finite_loss else None
        rep["tau_speed"] = ranking_report(scores, fast, resamples=10)["kendall_tau"]
        rep["cost_s"] = statistics.median(r.score_seconds[name] for r in rows)
        results["rankers"][name] = rep
    named = ([(f"ceiling: seed {seeds[1]} ({results['ceiling']['n']} nets)", results["ceiling"])]
             if "ceiling" in results else [])
    named += sorted(results["rankers"].items(), key=lambda kv: -np.nan_to_num(kv[1]["kendall_tau"], nan=-1))
    print(f"{len(rows)} nets of {args.split} at width {args.width}, {args.data} {args.image_size}x{args.image_size};"
          f" ground truth: held-out top-1 after {args.steps} SGD steps (mean {results['mean_trained_top1']:.1f}%)")
    head = ("ranker", "tau", "tau 95% CI", "rho", "rho 95% CI", "top-10", "tau loss", "tau speed", "s/net")
    print("  ".join(f"{h:>12}" if i else f"{h:<24}" for i, h in enumerate(head)))
    for name, rep in named:
        cells = [name, f"{rep['kendall_tau']:.3f}", "[{:.2f}, {:.2f}]".format(*rep["kendall_tau_ci"]),
                 f"{rep['spearman_rho']:.3f}", "[{:.2f}, {:.2f}]".format(*rep["spearman_rho_ci"]),
                 f"{rep['top_k_precision']:.1f}",
                 "" if rep.get("tau_loss") is None else f"{rep['tau_loss']:.3f}",
                 "" if rep.get("tau_speed") is None else f"{rep['tau_speed']:.3f}", f"{rep['cost_s']:.4f}"]
        print("  ".join(f"{c:>12}" if i else f"{c:<24}" for i, c in enumerate(cells)))
        table.append(cells)
    print(f"vote = rank average of {', '.join(members)} (the best three on {len(lab_rows)} labelled nets)")
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "table.csv"), list(head), table)
    cols = ["name", "trained_top1", "trained_loss", "steps_to_90"] + names + ["embed", "vote"]
    write_csv(os.path.join(args.out, "scores.csv"), cols,
              [[r.name, truth[r.name]["top1"], truth[r.name]["loss"], truth[r.name]["steps_to_90"]]
               + [r.scores[n] for n in cols[4:]] for r in rows])
    write_json(os.path.join(args.out, "results.json"), results)
    print(f"wrote {args.out}/table.csv, scores.csv, results.json")
    best = next(n for n, _ in named if n in results["rankers"])  # results first: the plot may fail
    from train.plots import plot_rank_scatter
    from train.scores import BASELINES, score_help

    png = os.path.join(args.out, "rank_scatter.png")
    label = f"rank average of {', '.join(members)}" if best == "vote" else score_help(best)
    plot_rank_scatter([r.scores[best] for r in rows], top1, png, tau=results["rankers"][best]["kendall_tau"],
                      rho=results["rankers"][best]["spearman_rho"], x_label=f"{best} ({label})",
                      trained_label=f"held-out top-1 after {args.steps} SGD steps (%)",
                      baselines={b: results["rankers"][b]["kendall_tau"] for b in ("ghn_acc",) + BASELINES
                                 if b != best})
    print(f"wrote {png}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", help="the GHN (e.g. the main job's ghn.safetensors)")
    p.add_argument("--data", default="digits")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--split", default="test", help="the nets ranked")
    p.add_argument("--nets", default="0-199", help="indices of the ranked nets in --split")
    p.add_argument("--skip-ceiling", action="store_true", help="do not train the second seed; the ceiling uses the "
                   "nets already in the cache")
    p.add_argument("--ceiling-nets", default=None, help="indices in --split of the nets trained with the second "
                   "seed (default: all of --nets)")
    p.add_argument("--train-only", action="store_true", help="train the yardstick (ground truth, labelled nets, "
                   "ceiling) into the cache and stop: no GHN needed, nothing scored")
    p.add_argument("--labelled", default="val/0-59", help="labelled nets (split/ranges) for property prediction "
                   "and for choosing the vote's members")
    p.add_argument("--steps", type=int, default=TRAINED_STEPS, help="SGD steps of the yardstick")
    p.add_argument("--lr", type=float, default=SGD_LR)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", default="0,1", help="training seeds: the first is the ground truth, the second the "
                   "ceiling")
    p.add_argument("--jobs", type=int, default=2, help="training processes (one thread each)")
    p.add_argument("--cache", default="docs/bench_rank_trained.json",
                   help="trained accuracies (committed, so that a rerun only scores; new trainings are added)")
    p.add_argument("--out", default="runs/bench_rank")
    p.add_argument("--pick-steps", default=None, metavar="S1,S2,...",
                   help="only compare these training budgets on --nets (seed 0) and stop")
    p.add_argument("--sgd-steps", type=lambda v: [int(k) for k in v.split(",")], default=[],
                   metavar="K1,K2,...", help="also score sgdK and sgdK@ghn for these K (train.scores.SHORT_SGD_STEPS "
                   "is always scored)")
    p.add_argument("--score-jobs", type=int, default=1, help="scoring processes of one thread each (1: score in "
                   "this process with its threads; the costs are those of the scoring processes)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the 95%% intervals")
    p.add_argument("--eval-images", type=int, default=128, help="held-out images of the GHN's accuracy and loss "
                   "(ghn rank's default)")
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    if args.pick_steps:
        pick_steps(args)
        return
    if not args.ckpt and not args.train_only:
        p.error("--ckpt is required (the GHN whose rankers are benchmarked)")
    run_benchmark(args)


if __name__ == "__main__":
    main()
