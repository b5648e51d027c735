"""Which architectures a GHN fails on: the per-net top-1 of ``ghn-eval`` runs grouped by what the nets are made of.

Reads one or more ``eval.json`` files (``ghn-train`` / ``ghn-eval`` output) that evaluated the same nets (the same
row of the same split and width, e.g. the GHNs of several seeds), averages each net's top-1 with predicted
parameters over the files, and prints, for each genotype feature, the mean +- standard error over the nets of each
value of it:

- ``c_mult``: the channel multiplier at reductions (1: every stage as wide as the stem's cells; 2: doubled);
- ``states``: the states a cell concatenates into its output;
- ``norm``: ``bn`` or ``none``;
- ``features``: the input size of the net's first classifier layer at the row's width and ``--image-size`` (how
  many channels the classifier reads; a VGG-style head reads a flattened map, so its count depends on the size);
- ``cells``: number of cells (grouped 1-7, 8-11, 12+);
- ``msa``, ``cse``: whether a cell holds a self-attention or a channel squeeze-excitation op.

It also prints the mean pairwise Pearson correlation of the per-net top-1 between files: near 1 says that which nets
fail is a matter of the architecture, not of the training run. Example (the six default runs of the README)::

    python benchmarks/eval_by_genotype.py docs/width_policy_runs/s26_concat_parts_s{0,1,2,3,4,5}_eval.json --row 0

``--out`` writes one CSV row per net (its features and mean top-1; written atomically).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections import defaultdict

import numpy as np
import torch.nn as nn

from archspace.files import write_csv
from archspace.sampler import get_net
from train.evaluate import _summary as mean_stderr

FEATURES = ("c_mult", "states", "norm", "features", "cells", "msa", "cse")


def net_features(split: str, index: int, width: int | None, image_size: int) -> dict:
    """The genotype features of net ``index`` of ``split`` at ``width`` on ``image_size`` inputs (module
    docstring)."""
    net = get_net(split, index, 10, image_size, width)
    g = net.genotype
    ops = {op for op, _ in g.normal + g.reduce}
    # the classifier's first layer (a cell's attention or squeeze-excitation has linear layers before it)
    linear = next(m for m in net.classifier.modules() if isinstance(m, nn.Linear))
    return {"c_mult": g.C_mult, "states": len(g.normal_concat), "norm": g.norm or "none",
            "features": linear.in_features, "cells": "1-7" if g.n_cells < 8 else "8-11" if g.n_cells < 12 else "12+",
            "msa": "msa" in ops, "cse": "cse" in ops}


def load_rows(paths: list[str], row: int) -> tuple[dict, list[str], np.ndarray]:
    """Row ``row`` of every file: ``(the row of the first file, net names, top-1 (files, nets))``.

    Raises:
        SystemExit: a file without that row, or files whose rows hold other nets.
    """
    first, names, top1 = None, None, []
    for path in paths:
        with open(path) as f:
            rows = json.load(f)["rows"]
        if not 0 <= row < len(rows):
            raise SystemExit(f"{path} has {len(rows)} rows; --row {row} is not one of them")
        r = rows[row]
        these = [n["name"] for n in r["nets"]]
        if first is None:
            first, names = r, these
        elif (r["split"], r["width"], these) != (first["split"], first["width"], names):
            raise SystemExit(f"{path} row {row} holds other nets ({r['split']} at width {r['width']}, {len(these)} "
                             f"nets) than {paths[0]} ({first['split']} at width {first['width']}, {len(names)}); "
                             "pass files that evaluated the same nets")
        top1.append([n["top1"] for n in r["nets"]])
    return first, names, np.array(top1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("evals", nargs="+", help="eval.json files that evaluated the same nets")
    p.add_argument("--row", type=int, default=0, help="index of the row in each file's rows (0: the first)")
    p.add_argument("--image-size", type=int, default=16, help="input size the nets were evaluated at (the digits "
                   "default: 16)")
    p.add_argument("--out", help="CSV of the per-net features and mean top-1")
    args = p.parse_args(argv)
    first, names, top1 = load_rows(args.evals, args.row)
    split, width = first["split"], first["width"]
    mean = top1.mean(0)  # (nets,)
    feats = [net_features(split, int(n.rsplit("/", 1)[1]), width, args.image_size) for n in names]
    print(f"{split} at width {width}: {len(names)} nets, {len(args.evals)} files; top-1 with predicted parameters, "
          f"per-net mean over the files {statistics.mean(mean):.1f}%")
    if len(args.evals) > 1:
        pairs = [np.corrcoef(a, b)[0, 1] for a, b in itertools.combinations(top1, 2)]
        print(f"per-net top-1 correlation between files: mean {statistics.mean(pairs):.2f} "
              f"(min {min(pairs):.2f}, max {max(pairs):.2f})")
    for key in FEATURES:
        groups = defaultdict(list)
        for f, m in zip(feats, mean):
            groups[f[key]].append(float(m))
        parts = []
        for value in sorted(groups, key=lambda v: (type(v).__name__, v)):
            mu, se = mean_stderr(groups[value])
            parts.append(f"{value}: {mu:.1f} +- {se:.1f} ({len(groups[value])})")
        print(f"  {key:<9} " + "; ".join(parts))
    if args.out:
        write_csv(args.out, ["net", *FEATURES, "top1_mean"], [[n, *[f[k] for k in FEATURES], float(m)]
                                                              for n, f, m in zip(names, feats, mean)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
