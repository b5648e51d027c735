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
import json
import math
import os
import sys
import time

from train.candidates import CandidateError, parse_candidates
from train.data import DATASETS


def add_rank_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``rank`` sub-command to an ``argparse`` sub-parser collection; its handler is :func:`run_rank`
    (also stored as the ``func`` default)."""
    p = subparsers.add_parser(
        "rank", help="rank candidate architectures by accuracy with predicted parameters",
        description=__doc__.split("\n\n")[0] + " Candidates: deepnets:SPLIT[/RANGES], torchvision:NAME[,NAME...], "
        "pkg.module:callable, or a file of Genotype.to_dict() JSON lines (see train/candidates.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("candidates", nargs="+", help="candidate architectures (comma lists allowed)")
    p.add_argument("--ckpt", required=True, help="trained GHN checkpoint (GHN.load)")
    p.add_argument("--data", default="digits", choices=DATASETS, help="images to score on")
    p.add_argument("--data-root", default=None, help="dataset folder (cifar10, imagenet)")
    p.add_argument("--split", default="heldout", choices=("heldout", "test"), help="images used for scoring")
    p.add_argument("--eval-images", type=int, default=128,
                   help="score on the first N images of the split (cost per candidate grows linearly with N)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="evaluation batch (BN uses batch statistics; 64 in the paper)")
    p.add_argument("--image-size", type=int, default=None, help="image side (default: the dataset's)")
    p.add_argument("--width", type=int, default=None,
                   help="base width C of DeepNets-1M candidates (default: each genotype's own, 32)")
    p.add_argument("--rank-by", default="accuracy", choices=("accuracy", "loss", "embed"), help="ranking key")
    p.add_argument("--out", default=None, help="write the ranking to this CSV (and a .json summary beside it)")
    p.add_argument("--top", type=int, default=20, help="rows shown in the terminal table (0: all)")
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="also train every candidate for K SGD steps from its default init and report Kendall's "
                        "tau / Spearman's rho between the two rankings")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate for --validate")
    p.add_argument("--train-batch-size", type=int, default=64, help="SGD batch size for --validate")
    p.add_argument("--plot", default=None, help="with --validate: scatter plot PNG, predicted vs trained accuracy")
    p.add_argument("--embed-regressor", default=None, metavar="LABELS.csv",
                   help="fit a ridge regressor on mean-pooled GHN node embeddings of the labelled "
                        "architectures in LABELS.csv (name,label) and score the candidates with it")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty of --embed-regressor")
    p.add_argument("--seed", type=int, default=0, help="seed of default initialisations and SGD batches")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    p.set_defaults(func=run_rank)
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.eval_images is not None and args.eval_images < 1:
        raise ValueError(f"--eval-images must be >= 1, got {args.eval_images}")
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (BatchNorm needs batch statistics), got {args.batch_size}")
    if args.validate < 0:
        raise ValueError(f"--validate must be >= 0 SGD steps, got {args.validate}")
    if args.plot and not args.validate:
        raise ValueError("--plot draws predicted against trained accuracy: add --validate K")
    if args.rank_by == "embed" and not args.embed_regressor:
        raise ValueError("--rank-by embed needs --embed-regressor LABELS.csv")
    if not os.path.isfile(args.ckpt):
        raise ValueError(f"GHN checkpoint {args.ckpt!r} does not exist; pass a file saved by GHN.save or ghn-train")


def run_rank(args: argparse.Namespace) -> int:
    """Run ``ghn rank`` with parsed arguments; print the table, write the outputs.

    Returns:
        0 on success, 2 on bad input (message on stderr, no traceback).
    """
    try:
        return _run(args)
    except (CandidateError, ValueError, FileNotFoundError) as e:
        print(f"ghn rank: error: {e}", file=sys.stderr)
        return 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from train.data import eval_batches, load_image_data
    from train.rank import format_table, ghn_predictor, load_ghn, rank_rows, score_candidates, validate_candidates

    _check_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    candidates = parse_candidates(args.candidates, width=args.width)
    data = load_image_data(args.data, root=args.data_root, image_size=args.image_size, seed=0)
    ghn = load_ghn(args.ckpt, num_classes=data.num_classes, device=args.device)
    batches = list(eval_batches(data, args.split, batch_size=args.batch_size, limit=args.eval_images))
    n_images = sum(len(y) for _, y in batches)
    _log(f"ranking {len(candidates)} candidates on {n_images} {args.data} {args.split} images "
         f"(predicted parameters, BatchNorm batch statistics, batches of {args.batch_size})")
    t0 = time.perf_counter()
    rows = score_candidates(candidates, ghn_predictor(ghn, data.image_size), batches, num_classes=data.num_classes,
                            image_size=data.image_size, seed=args.seed, device=args.device, log=_log)
    t_score = time.perf_counter() - t0
    summary: dict = {"candidates": len(candidates), "scored": sum(r.error is None for r in rows),
                     "eval_images": n_images, "data": args.data, "split": args.split,
                     "seconds_scoring": round(t_score, 2), "seconds_per_candidate": round(t_score / len(rows), 4),
                     "seconds_predicting": round(sum(r.predict_seconds for r in rows), 2),
                     "bn_mode": "batch statistics", "rank_by": args.rank_by}
    if summary["scored"] == 0:
        raise ValueError(f"no candidate could be scored; first error: {rows[0].error}")

    if args.embed_regressor:
        summary["embed_regressor"] = _embed_scores(rows, candidates, ghn, data, args)

    if args.validate:
        t1 = time.perf_counter()
        _log(f"validating: {args.validate} SGD steps per candidate from the default initialisation")
        validate_candidates(rows, candidates, data, batches, steps=args.validate, lr=args.lr,
                            batch_size=args.train_batch_size, seed=args.seed, device=args.device, log=_log)
        summary["seconds_validation"] = round(time.perf_counter() - t1, 2)

    ranked = rank_rows(rows, by=args.rank_by)
    print(format_table(ranked, top=args.top))
    if args.validate:
        summary["validation"] = _validation_report(ranked, args)
    failed = [r for r in ranked if r.error is not None]
    if failed:
        _log(f"{len(failed)} candidate(s) could not be scored, e.g. {failed[0].name}: {failed[0].error}")
    print(f"scored {summary['scored']}/{len(candidates)} candidates in {t_score:.1f} s "
          f"({summary['seconds_per_candidate']:.3f} s each, of which GHN prediction "
          f"{summary['seconds_predicting'] / len(rows):.3f} s)")
    if args.out:
        from train.checkpoint import atomic_write_text
        from train.rank import write_csv

        write_csv(ranked, args.out)
        atomic_write_text(os.path.splitext(args.out)[0] + ".summary.json", json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _embed_scores(rows, candidates, ghn, data, args) -> dict:
    """Fit the embedding regressor on ``--embed-regressor`` labels and set ``embed_score`` of the scored rows."""
    from train.rank import embed_candidates, fit_embedding_regressor, ghn_embedder, read_labels

    labels = read_labels(args.embed_regressor)
    labelled = [_one_candidate(name, args.embed_regressor, args.width) for name in labels]
    embed = ghn_embedder(ghn, data.image_size)
    kw = dict(num_classes=data.num_classes, image_size=data.image_size, seed=args.seed)
    reg = fit_embedding_regressor(embed_candidates(labelled, embed, **kw), list(labels.values()), alpha=args.alpha)
    ok = [r for r in rows if r.error is None]
    by_name = {c.name: c for c in candidates}
    for r, v in zip(ok, reg.predict(embed_candidates([by_name[r.name] for r in ok], embed, **kw))):  # (C,)
        r.embed_score = float(v)
    return {"labels": args.embed_regressor, "labelled": len(labelled), "alpha": args.alpha}


def _validation_report(ranked, args) -> dict | None:
    """Rank correlation between the GHN ranking key and the SGD accuracy; print it and draw ``--plot``."""
    from train.correlation import rank_correlation

    both = [r for r in ranked if r.error is None and r.trained_accuracy is not None]
    if len(both) < 2:
        _log("fewer than 2 candidates were trained: no rank correlation")
        return None
    key = "embed_score" if args.rank_by == "embed" else "accuracy"
    corr = rank_correlation([getattr(r, key) for r in both], [r.trained_accuracy for r in both])
    finite = all(math.isfinite(v) for r in both for v in (r.loss, r.trained_loss))
    by_loss = rank_correlation([-r.loss for r in both], [-r.trained_loss for r in both]) if finite else None
    print(f"GHN ranking vs {args.validate}-step SGD ranking ({corr.n} candidates, by {key}): "
          f"Kendall tau = {corr.kendall_tau:.3f} (p={corr.kendall_p:.2g}), "
          f"Spearman rho = {corr.spearman_rho:.3f} (p={corr.spearman_p:.2g})")
    if args.plot:
        from train.plots import plot_rank_scatter

        plot_rank_scatter([getattr(r, key) for r in both], [r.trained_accuracy for r in both], args.plot,
                          labels=[r.name for r in both], tau=corr.kendall_tau, rho=corr.spearman_rho,
                          x_label="accuracy with predicted parameters (%)" if key == "accuracy" else
                          "embedding-regressor score",
                          trained_label=f"accuracy after {args.validate} SGD steps (%)")
        print(f"wrote {args.plot}")
    return {"steps": args.validate, "lr": args.lr, "by": key, **corr.as_dict(),
            "by_loss": by_loss.as_dict() if by_loss else None}


def _one_candidate(name: str, path: str, width: int | None):
    found = parse_candidates([name], width=width)
    if len(found) != 1:
        raise ValueError(f"{path}: label row {name!r} must name one architecture, e.g. deepnets:train/5")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m train.rank_cli CANDIDATES --ckpt GHN ...``."""

    parser = argparse.ArgumentParser(prog="ghn")
    add_rank_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rank", *(sys.argv[1:] if argv is None else argv)])
    return run_rank(args)


if __name__ == "__main__":
    sys.exit(main())
