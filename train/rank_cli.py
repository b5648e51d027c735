"""``ghn rank``: rank candidate architectures without training them to the end.

Examples::

    ghn rank deepnets:test/0-99 --ckpt ghn.safetensors --out ranking.csv
    ghn rank torchvision:resnet18,vgg11_bn,mobilenet_v2 --ckpt ghn.pt --data cifar10 --data-root ~/data
    ghn rank deepnets:val/0-49 --ckpt ghn.pt --validate --plot rank.png --out ranking.csv
    ghn rank deepnets:test/0-99 --ckpt ghn.pt --score synflow
    ghn rank genotypes.jsonl --ckpt ghn.pt --embed-regressor labels.csv --score embed

Knyazev et al., NeurIPS 2021, Sec. 5.3. ``--score`` chooses the ranker (:mod:`train.scores`: the GHN's accuracy
or loss with predicted parameters, zero-cost proxies at the default or the predicted parameters, short SGD runs
from either, the baselines, property prediction, a vote); its default is the best ranker of
``benchmarks/bench_rank.py`` (``sgd30``: 30 SGD steps from the default initialisation). See
:mod:`train.rank` for the protocol and :mod:`train.candidates` for the candidate grammar. Errors in the
arguments exit with status 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from train.cli_args import add_common_options
from train.finetune import SGD_LR
from train.rank import TRAINED_STEPS
from train.scores import ALL_SCORES, BASELINES, DEFAULT_SCORE, score_help

#: The old ``--rank-by`` keys and the scores they name.
_RANK_BY = {"accuracy": "ghn_acc", "loss": "ghn_loss", "embed": "embed"}


def add_rank_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``rank`` sub-command to an ``argparse`` sub-parser collection (the ``ghn.commands`` entry point);
    its handler is :func:`run_rank`, stored as the ``func`` default.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``rank`` parser.
    """
    p = subparsers.add_parser(
        "rank", help="rank candidate architectures (short SGD runs, GHN scores, zero-cost proxies)",
        description=__doc__.split("\n\n")[0] + " Candidates: deepnets:SPLIT[/RANGES], torchvision:NAME[,NAME...], "
        "pkg.module:callable, or a file of Genotype.to_dict() JSON lines (see train/candidates.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("candidates", nargs="+", help="candidate architectures (comma lists allowed)")
    add_common_options(p)
    p.add_argument("--split", default="heldout", choices=("heldout", "test"), help="images used for scoring")
    p.add_argument("--eval-images", type=int, default=128,
                   help="score on the first N images of the split (cost per candidate grows linearly with N)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="evaluation batch (BN uses batch statistics; 64 in the paper)")
    p.add_argument("--score", default=None, metavar="NAME",
                   help=f"the ranker (default {DEFAULT_SCORE}, the best of benchmarks/bench_rank.py): "
                        + ", ".join(ALL_SCORES) + "; sgdK and sgdK@ghn for any K (K SGD steps from the default "
                        "init or from the predicted parameters, then the held-out top-1)")
    p.add_argument("--rank-by", default=None, choices=tuple(_RANK_BY), help=argparse.SUPPRESS)  # the old name
    p.add_argument("--out", default=None, help="write the ranking to this CSV (and a .summary.json beside it)")
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="worker processes of one thread each that score (and --validate) the candidates; auto: one "
                        "per CPU core when the ranker trains (sgdK, vote) or with --validate, each candidate on one "
                        "thread whatever the core count (the training scores depend on the thread count through "
                        "rounding), else 1; 1: all in this process, on --threads threads")
    p.add_argument("--top", type=int, default=20, help="rows shown in the terminal table (0: all)")
    p.add_argument("--validate", type=int, nargs="?", const=TRAINED_STEPS, default=0, metavar="K",
                   help=f"also train every candidate from its default init for K SGD steps (default "
                        f"{TRAINED_STEPS}, the yardstick of benchmarks/bench_rank.py, same recipe and code) "
                        "and report Kendall's tau and Spearman's rho with bootstrap 95%% intervals and top-10 "
                        "precision of the ranker and of the baselines against the trained accuracy (0: off; put "
                        "the candidates before --validate or give K)")
    p.add_argument("--validate-images", type=int, default=1000,
                   help="with --validate: trained accuracy on the first N images of --split")
    p.add_argument("--lr", type=float, default=SGD_LR, help="peak SGD learning rate for --validate")
    p.add_argument("--train-batch-size", type=int, default=64, help="SGD batch size for --validate")
    p.add_argument("--plot", default=None, help="with --validate: scatter plot PNG, the score vs trained accuracy")
    p.add_argument("--embed-regressor", default=None, metavar="LABELS.csv",
                   help="fit an RBF support-vector regressor on mean-pooled GHN node embeddings of the labelled "
                        "architectures in LABELS.csv (name,label) and score the candidates with it (--score embed)")
    p.set_defaults(func=run_rank)
    return p


def _check_args(args: argparse.Namespace) -> None:
    from archspace.errors import UsageError
    from archspace.network import MIN_WIDTH
    from ghn.threads import set_threads
    from train.cli_args import check_device, check_numbers, check_outputs
    from train.scores import check_score_names

    check_numbers(args, at_least={"eval_images": 1, "batch_size": 2, "image_size": 1, "width": MIN_WIDTH, "top": 0,
                                  "validate": 0, "train_batch_size": 1, "seed": 0,
                                  "validate_images": 1},
                  above={"lr": 0})
    if args.rank_by and args.score and _RANK_BY[args.rank_by] != args.score:
        raise UsageError(f"--rank-by {args.rank_by} and --score {args.score} disagree: give --score alone")
    args.score = args.score or (_RANK_BY[args.rank_by] if args.rank_by else
                                "embed" if args.embed_regressor else DEFAULT_SCORE)
    try:
        check_score_names([args.score])
    except ValueError as e:
        raise UsageError(f"--score: {e}") from None
    if args.embed_regressor and args.score != "embed":
        raise UsageError(f"--embed-regressor fits the ranker of --score embed, not of --score {args.score}")
    if args.plot and not args.validate:
        raise UsageError("--plot draws the score against trained accuracy: add --validate [K]")
    if args.score == "embed" and not args.embed_regressor:
        raise UsageError("--score embed needs --embed-regressor LABELS.csv")
    if args.embed_regressor and not os.path.isfile(args.embed_regressor):
        raise UsageError(f"labels file {args.embed_regressor!r} does not exist; write name,label rows "
                         "(deepnets:train/5,61.2)")
    if args.jobs != "auto":
        try:
            args.jobs = int(args.jobs)
        except ValueError:
            raise UsageError(f"--jobs must be a number of processes or 'auto', got {args.jobs!r}") from None
        check_numbers(args, at_least={"jobs": 1})
    check_device(args.device)
    set_threads(args.threads)  # a count or "auto"; UsageError otherwise
    check_outputs(args)


def _auto_jobs(names: list[str], args: argparse.Namespace, num_candidates: int) -> int:
    """``--jobs auto``: one process of one thread per CPU core (at most one per candidate) when a score trains or
    ``--validate`` is on, so that every candidate is trained on one thread whatever the machine (``sgdK`` scores
    move with the thread count through rounding, which their SGD steps amplify); this process alone otherwise.
    With a single process for training scores and no ``--threads``, this process then runs on one thread."""
    import torch

    from ghn.threads import auto_threads
    from train.scores import short_sgd_steps

    trains = bool(args.validate) or any(short_sgd_steps(n) for n in names)
    if not trains or torch.device(args.device).type != "cpu":
        return 1
    jobs = max(1, min(auto_threads(), num_candidates))
    if jobs == 1 and args.threads is None:
        torch.set_num_threads(1)
    return jobs


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_rank(args: argparse.Namespace) -> int:
    """Run ``ghn rank`` with parsed arguments: score, print the table, write the CSV and summary, then draw
    ``--plot`` (last, so that a failing plot loses no result).

    Returns:
        0 on success.

    Raises:
        archspace.errors.UsageError: bad input (a bad option, candidate, checkpoint, dataset, or a GHN trained for
            another number of classes without ``--keep-classifier-init``); ``ghn``'s error boundary prints it in
            one line and exits with status 2.
    """

    import torch

    from archspace.errors import UsageError
    from archspace.files import write_json
    from ghn import GHN
    from train.candidates import parse_candidates
    from train.cli_args import check_batch_size, data_image_size
    from train.data import eval_batches, load_image_data
    from train.finetune import SGD_RECIPE, bn_batches
    from train.rank import format_table, ghn_predictor, rank_rows, score_candidates, validate_candidates, write_csv
    from train.scores import add_vote, needs_proxy_batch, per_candidate_scores

    _check_args(args)
    candidates = parse_candidates(args.candidates, width=args.width)
    names = per_candidate_scores(args.score, with_baselines=bool(args.validate))
    if args.jobs == "auto":
        args.jobs = _auto_jobs(names, args, len(candidates))
    ghn = GHN.from_pretrained(args.ckpt, device=args.device).eval()
    data = load_image_data(args.data, root=args.data_root, image_size=data_image_size(args, ghn), seed=0)
    if args.validate:
        check_batch_size(args.train_batch_size, len(data.train), "--train-batch-size")
    batches = list(eval_batches(data, args.split, batch_size=args.batch_size, limit=args.eval_images))
    n_images = sum(len(y) for _, y in batches)
    classifier = ("default init (--keep-classifier-init)" if args.keep_classifier_init else "predicted")
    where = f"{args.jobs} processes of 1 thread" if args.jobs > 1 else f"{torch.get_num_threads()} threads"
    _log(f"ranking {len(candidates)} candidates by {args.score} on {n_images} {args.data} {args.split} images "
         f"(predicted parameters, BatchNorm batch statistics, batches of {args.batch_size}; classifier {classifier}; "
         f"{where})")
    t0 = time.perf_counter()
    proxy_batch = (next(iter(bn_batches(data, 1, batch_size=min(64, len(data.train)), seed=args.seed)))
                   if needs_proxy_batch(names) else None)
    predictor = ghn_predictor(ghn, data.image_size, args.keep_classifier_init)
    rows = score_candidates(candidates, predictor, batches,
                            num_classes=data.num_classes, image_size=data.image_size, seed=args.seed,
                            device=args.device, scores=names, proxy_batch=proxy_batch, train_data=data, jobs=args.jobs,
                            log=_log)
    t_score = time.perf_counter() - t0
    summary: dict = {"candidates": len(candidates), "scored": sum(r.error is None for r in rows),
                     "eval_images": n_images, "data": args.data, "split": args.split,
                     "seconds_scoring": round(t_score, 2), "seconds_per_candidate": round(t_score / len(rows), 4),
                     "seconds_predicting": round(sum(r.predict_seconds for r in rows), 2),
                     "bn_mode": "batch", "classifier": classifier, "score": args.score, "jobs": args.jobs}
    if summary["scored"] == 0:
        raise UsageError(f"no candidate could be scored; first error: {rows[0].name}: {rows[0].error}")

    if args.score == "embed":
        summary["embed_regressor"] = _embed_scores(rows, candidates, ghn, data, args)
    if args.score == "vote":
        add_vote([r for r in rows if r.error is None])

    if args.validate:
        t1 = time.perf_counter()
        held = list(eval_batches(data, args.split, batch_size=100, limit=args.validate_images))
        _log(f"validating: {args.validate} SGD steps per candidate from the default initialisation ({SGD_RECIPE}), "
             f"held-out accuracy on {sum(len(y) for _, y in held)} images")
        validate_candidates(rows, candidates, data, held, steps=args.validate, lr=args.lr,
                            batch_size=args.train_batch_size, seed=args.seed, device=args.device, jobs=args.jobs,
                            log=_log)
        summary["seconds_validation"] = round(time.perf_counter() - t1, 2)

    ranked = rank_rows(rows, by=args.score)
    print(format_table(ranked, top=args.top))
    report = _validation(rows, args) if args.validate else None  # input order: ties not broken by the ranker
    if args.validate:
        summary["validation"] = report and {"steps": args.validate, "lr": args.lr, "recipe": SGD_RECIPE, **report}
    failed = [r for r in ranked if r.error is not None]
    if failed:
        _log(f"{len(failed)} candidate(s) could not be scored, e.g. {failed[0].name}: {failed[0].error}")
    print(f"scored {summary['scored']}/{len(candidates)} candidates in {t_score:.1f} s "
          f"({summary['seconds_per_candidate']:.3f} s each, of which GHN prediction "
          f"{summary['seconds_predicting'] / len(rows):.3f} s)")
    if args.out:  # results first: the plot below is optional and may fail
        write_csv(ranked, args.out)
        write_json(os.path.splitext(args.out)[0] + ".summary.json", summary)
        print(f"wrote {args.out}")
    if args.plot and report:
        _plot(ranked, report, args)
        print(f"wrote {args.plot}")
    return 0


def _embed_scores(rows, candidates, ghn, data, args) -> dict:
    """Fit the embedding regressor on ``--embed-regressor`` labels and set the ``embed`` score of the scored rows."""
    from train.candidates import one_candidate
    from train.rank import embed_candidates, fit_embedding_regressor, ghn_embedder, read_labels

    labels = read_labels(args.embed_regressor)
    labelled = [one_candidate(name, width=args.width, where=f"{args.embed_regressor}: label row") for name in labels]
    embed = ghn_embedder(ghn, data.image_size)
    kw = dict(num_classes=data.num_classes, image_size=data.image_size, seed=args.seed)
    reg = fit_embedding_regressor(embed_candidates(labelled, embed, **kw), list(labels.values()), seed=args.seed)
    ok = [r for r in rows if r.error is None]
    by_name = {c.name: c for c in candidates}
    for r, v in zip(ok, reg.predict(embed_candidates([by_name[r.name] for r in ok], embed, **kw))):  # (C,)
        r.embed_score = r.scores["embed"] = float(v)
    return {"labels": args.embed_regressor, "labelled": len(labelled), "regressor": "RBF SVR, 5-fold grid search"}


def _validation(rows, args) -> dict | None:
    """Agreement of the ranker and of the baselines with the trained accuracy (printed); ``None`` under 2
    trained. ``rows`` in input order: top-k precision breaks ties by position, so rows sorted by the ranker would
    lend its order to a baseline with tied scores (a constant one would score the ranker's precision)."""
    from train.correlation import ranking_report

    both = [r for r in rows if r.error is None and r.trained_accuracy is not None]
    if len(both) < 2:
        _log("fewer than 2 candidates were trained: no rank correlation")
        return None
    truth = [r.trained_accuracy for r in both]
    out = {"n": len(both), "rankers": {}}
    for name in [args.score] + [b for b in BASELINES if b != args.score]:
        rep = ranking_report([r.scores[name] for r in both], truth, seed=args.seed)
        out["rankers"][name] = rep
        lo, hi = rep["kendall_tau_ci"]
        print(f"{name:>10} vs {args.validate}-step SGD accuracy ({len(both)} candidates): Kendall tau = "
              f"{rep['kendall_tau']:.3f} [{lo:.2f}, {hi:.2f}], Spearman rho = {rep['spearman_rho']:.3f}, "
              f"top-{rep['k']} precision = {rep['top_k_precision']:.2f} (chance {rep['top_k_chance']:.2f})")
    return out


def _plot(ranked, report: dict, args) -> None:
    """Draw ``--plot``: the ranking score against the accuracy after ``--validate`` SGD steps, with the baselines'
    Kendall tau in the legend."""
    from train.plots import plot_rank_scatter

    both = [r for r in ranked if r.error is None and r.trained_accuracy is not None]
    mine = report["rankers"][args.score]
    plot_rank_scatter([r.scores[args.score] for r in both], [r.trained_accuracy for r in both], args.plot,
                      labels=[r.name for r in both], tau=mine["kendall_tau"], rho=mine["spearman_rho"],
                      x_label=f"{args.score} ({score_help(args.score)})",
                      trained_label=f"accuracy after {args.validate} SGD steps (%)",
                      baselines={k: v["kendall_tau"] for k, v in report["rankers"].items() if k != args.score})
