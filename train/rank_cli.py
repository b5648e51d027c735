"""``ghn rank``: rank candidate architectures by their accuracy with GHN-predicted parameters.

Examples::

    ghn rank deepnets:test/0-99 --ckpt ghn.safetensors --out ranking.csv
    ghn rank torchvision:resnet18,vgg11_bn,mobilenet_v2 --ckpt ghn.pt --data cifar10 --data-root ~/data
    ghn rank deepnets:val/0-49 --ckpt ghn.pt --validate 200 --plot rank.png --out ranking.csv
    ghn rank genotypes.jsonl --ckpt ghn.pt --embed-regressor labels.csv --rank-by embed

Knyazev et al., NeurIPS 2021, Sec. 5.3. See :mod:`train.rank` for the protocol and :mod:`train.candidates` for
the candidate grammar. Errors in the arguments exit with status 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict

from train.cli_args import add_common_options
from train.finetune import SGD_LR


def add_rank_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``rank`` sub-command to an ``argparse`` sub-parser collection (the ``ghn.commands`` entry point);
    its handler is :func:`run_rank`, stored as the ``func`` default.

    Args:
        subparsers: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``rank`` parser.
    """
    p = subparsers.add_parser(
        "rank", help="rank candidate architectures by accuracy with predicted parameters",
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
    p.add_argument("--rank-by", default="accuracy", choices=("accuracy", "loss", "embed"), help="ranking key")
    p.add_argument("--out", default=None, help="write the ranking to this CSV (and a .summary.json beside it)")
    p.add_argument("--top", type=int, default=20, help="rows shown in the terminal table (0: all)")
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="also train every candidate for K SGD steps from its default init (the SGD recipe of "
                        "train/finetune.py, as ghn-eval's sgd_steps) and report Kendall's tau / Spearman's rho "
                        "between the two rankings (0: off)")
    p.add_argument("--lr", type=float, default=SGD_LR, help="peak SGD learning rate for --validate")
    p.add_argument("--train-batch-size", type=int, default=64, help="SGD batch size for --validate")
    p.add_argument("--plot", default=None, help="with --validate: scatter plot PNG, predicted vs trained accuracy")
    p.add_argument("--embed-regressor", default=None, metavar="LABELS.csv",
                   help="fit a ridge regressor on mean-pooled GHN node embeddings of the labelled "
                        "architectures in LABELS.csv (name,label) and score the candidates with it")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty of --embed-regressor")
    p.set_defaults(func=run_rank)
    return p


def _check_args(args: argparse.Namespace) -> None:
    from archspace.errors import UsageError
    from archspace.network import MIN_WIDTH
    from ghn.threads import set_threads
    from train.cli_args import check_device, check_numbers, check_outputs

    check_numbers(args, at_least={"eval_images": 1, "batch_size": 2, "image_size": 1, "width": MIN_WIDTH, "top": 0,
                                  "validate": 0, "train_batch_size": 1},
                  above={"lr": 0, "alpha": 0})
    if args.plot and not args.validate:
        raise UsageError("--plot draws predicted against trained accuracy: add --validate K")
    if args.rank_by == "embed" and not args.embed_regressor:
        raise UsageError("--rank-by embed needs --embed-regressor LABELS.csv")
    check_device(args.device)
    set_threads(args.threads)  # a count or "auto"; UsageError otherwise
    check_outputs(args)


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

    from archspace.errors import UsageError
    from archspace.files import write_json
    from ghn import GHN
    from train.candidates import parse_candidates
    from train.cli_args import check_batch_size
    from train.data import eval_batches, load_image_data
    from train.finetune import SGD_RECIPE
    from train.rank import format_table, ghn_predictor, rank_rows, score_candidates, validate_candidates, write_csv

    _check_args(args)
    candidates = parse_candidates(args.candidates, width=args.width)
    ghn = GHN.from_pretrained(args.ckpt, device=args.device).eval()
    data = load_image_data(args.data, root=args.data_root, image_size=args.image_size, seed=0)
    if args.validate:
        check_batch_size(args.train_batch_size, len(data.train), "--train-batch-size")
    batches = list(eval_batches(data, args.split, batch_size=args.batch_size, limit=args.eval_images))
    n_images = sum(len(y) for _, y in batches)
    classifier = ("default init (--keep-classifier-init)" if args.keep_classifier_init else "predicted")
    _log(f"ranking {len(candidates)} candidates on {n_images} {args.data} {args.split} images "
         f"(predicted parameters, BatchNorm batch statistics, batches of {args.batch_size}; classifier {classifier})")
    t0 = time.perf_counter()
    rows = score_candidates(candidates, ghn_predictor(ghn, data.image_size, args.keep_classifier_init), batches,
                            num_classes=data.num_classes, image_size=data.image_size, seed=args.seed,
                            device=args.device, log=_log)
    t_score = time.perf_counter() - t0
    summary: dict = {"candidates": len(candidates), "scored": sum(r.error is None for r in rows),
                     "eval_images": n_images, "data": args.data, "split": args.split,
                     "seconds_scoring": round(t_score, 2), "seconds_per_candidate": round(t_score / len(rows), 4),
                     "seconds_predicting": round(sum(r.predict_seconds for r in rows), 2),
                     "bn_mode": "batch", "classifier": classifier, "rank_by": args.rank_by}
    if summary["scored"] == 0:
        raise UsageError(f"no candidate could be scored; first error: {rows[0].name}: {rows[0].error}")

    if args.embed_regressor:
        summary["embed_regressor"] = _embed_scores(rows, candidates, ghn, data, args)

    if args.validate:
        t1 = time.perf_counter()
        _log(f"validating: {args.validate} SGD steps per candidate from the default initialisation ({SGD_RECIPE})")
        validate_candidates(rows, candidates, data, batches, steps=args.validate, lr=args.lr,
                            batch_size=args.train_batch_size, seed=args.seed, device=args.device, log=_log)
        summary["seconds_validation"] = round(time.perf_counter() - t1, 2)

    ranked = rank_rows(rows, by=args.rank_by)
    print(format_table(ranked, top=args.top))
    corr = _validation(ranked, args) if args.validate else None
    if args.validate:
        summary["validation"] = corr and {"steps": args.validate, "lr": args.lr, "recipe": SGD_RECIPE, **corr}
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
    if args.plot and corr:
        _plot(ranked, corr, args)
        print(f"wrote {args.plot}")
    return 0


def _embed_scores(rows, candidates, ghn, data, args) -> dict:
    """Fit the embedding regressor on ``--embed-regressor`` labels and set ``embed_score`` of the scored rows."""
    from train.candidates import one_candidate
    from train.rank import embed_candidates, fit_embedding_regressor, ghn_embedder, read_labels

    labels = read_labels(args.embed_regressor)
    labelled = [one_candidate(name, width=args.width, where=f"{args.embed_regressor}: label row") for name in labels]
    embed = ghn_embedder(ghn, data.image_size)
    kw = dict(num_classes=data.num_classes, image_size=data.image_size, seed=args.seed)
    reg = fit_embedding_regressor(embed_candidates(labelled, embed, **kw), list(labels.values()), alpha=args.alpha)
    ok = [r for r in rows if r.error is None]
    by_name = {c.name: c for c in candidates}
    for r, v in zip(ok, reg.predict(embed_candidates([by_name[r.name] for r in ok], embed, **kw))):  # (C,)
        r.embed_score = float(v)
    return {"labels": args.embed_regressor, "labelled": len(labelled), "alpha": args.alpha}


def _validation_key(args: argparse.Namespace) -> str:
    return "embed_score" if args.rank_by == "embed" else "accuracy"


def _validation(ranked, args) -> dict | None:
    """Rank correlation between the GHN ranking key and the SGD accuracy (printed); ``None`` under 2 trained."""
    from train.correlation import rank_correlation

    both = [r for r in ranked if r.error is None and r.trained_accuracy is not None]
    if len(both) < 2:
        _log("fewer than 2 candidates were trained: no rank correlation")
        return None
    key = _validation_key(args)
    corr = rank_correlation([getattr(r, key) for r in both], [r.trained_accuracy for r in both])
    finite = all(math.isfinite(v) for r in both for v in (r.loss, r.trained_loss))
    by_loss = rank_correlation([-r.loss for r in both], [-r.trained_loss for r in both]) if finite else None
    print(f"GHN ranking vs {args.validate}-step SGD ranking ({corr.n} candidates, by {key}): "
          f"Kendall tau = {corr.kendall_tau:.3f} (p={corr.kendall_p:.2g}), "
          f"Spearman rho = {corr.spearman_rho:.3f} (p={corr.spearman_p:.2g})")
    return {"by": key, **asdict(corr), "by_loss": asdict(by_loss) if by_loss else None}


def _plot(ranked, corr: dict, args) -> None:
    """Draw ``--plot``: the ranking key against the accuracy after ``--validate`` SGD steps."""
    from train.plots import plot_rank_scatter

    key = _validation_key(args)
    both = [r for r in ranked if r.error is None and r.trained_accuracy is not None]
    plot_rank_scatter([getattr(r, key) for r in both], [r.trained_accuracy for r in both], args.plot,
                      labels=[r.name for r in both], tau=corr["kendall_tau"], rho=corr["spearman_rho"],
                      x_label="accuracy with predicted parameters (%)" if key == "accuracy" else
                      "embedding-regressor score",
                      trained_label=f"accuracy after {args.validate} SGD steps (%)")
