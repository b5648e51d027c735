"""How much of a predicted network's shortfall is its classifier: a linear probe on predicted features.

For each network (DeepNets-1M test nets at ``--width`` by default), the held-out top-1 of the network with
GHN-predicted parameters is set against a *linear probe*: a multinomial logistic regression (scikit-learn, L2,
``C=1``, standardised inputs) fitted on the input of the network's last ``nn.Linear`` (the penultimate features,
``(N, F)``) over the training images, and scored on the same held-out images. The same is done for the network at
its default initialisation, whose probe measures what random features of that architecture already give. The probe
is a diagnostic, not a predictor: it uses the labels of the training images, which a predicted network never sees.
BatchNorm uses batch statistics (batches of 64, as the main job's evaluation).

A probe far above the predicted top-1 says that the GHN's features are better than its classifier; a probe near
the default-init probe says that the features themselves carry little. Example::

    python benchmarks/probe_features.py --ckpt runs/train/<run>/ghn.safetensors --nets deepnets:test/0-19 --width 8

Prints one line per network and the mean +- standard error and median of each column; ``--out`` writes the per-net
rows as CSV (written atomically).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import numpy as np
import torch
import torch.nn as nn

from archspace.files import write_csv
from ghn import GHN
from ghn.batchnorm import set_bn_mode
from train.candidates import parse_candidates
from train.data import eval_batches, load_image_data
from train.evaluate import _summary as mean_stderr
from train.rank import ghn_predictor


def penultimate(model: nn.Module, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inputs and outputs of ``model``'s last ``nn.Linear`` over ``batches``, and the labels.

    Returns:
        features ``(N, F)``, logits ``(N, classes)``, labels ``(N,)`` as NumPy arrays.

    Raises:
        ValueError: the model has no ``nn.Linear``.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to probe")
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = linears[-1].register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o.detach())))
    labels = []
    try:
        with torch.no_grad():
            for x, y in batches:
                model(x)
                labels.append(y)
    finally:
        hook.remove()
    return (torch.cat([f for f, _ in seen]).numpy(), torch.cat([o for _, o in seen]).numpy(),
            torch.cat(labels).numpy())


def probe(model: nn.Module, train_batches, test_batches) -> tuple[float, float, int]:
    """``(top-1 of the model's own classifier, top-1 of a linear probe on its features, number of features F)``,
    top-1 in % on ``test_batches``; the probe is fitted on ``train_batches`` (module docstring)."""
    from sklearn.linear_model import LogisticRegression

    model = copy.deepcopy(model)
    set_bn_mode(model, "batch")
    model.eval()
    f_train, _, y_train = penultimate(model, train_batches)
    f_test, logits, y_test = penultimate(model, test_batches)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=1.0).fit((f_train - mu) / sd, y_train)
    return (100.0 * float((logits.argmax(1) == y_test).mean()), 100.0 * clf.score((f_test - mu) / sd, y_test),
            f_train.shape[1])


def _summary(values: list[float]) -> str:
    mean, se = mean_stderr(values)  # the main job's table uses the same mean and standard error
    return f"{mean:.1f} +- {se:.1f} (median {statistics.median(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="GHN checkpoint (ghn.safetensors)")
    p.add_argument("--nets", default="deepnets:test/0-19", help="candidate list (train/candidates.py grammar)")
    p.add_argument("--width", type=int, default=8, help="base width of the DeepNets-1M nets")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the default initialisation")
    p.add_argument("--out", default=None, help="CSV of the per-network rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ghn = GHN.from_pretrained(args.ckpt).eval()
    data = load_image_data("digits", image_size=ghn.image_size)
    train_b = list(eval_batches(data, "train", batch_size=64))
    test_b = list(eval_batches(data, "test", batch_size=64))
    predict = ghn_predictor(ghn, data.image_size)
    cols = ("predicted", "predicted_probe", "default", "default_probe")
    rows = []
    print(f"{'net':<32} {'features':>8} " + " ".join(f"{c:>16}" for c in cols))
    for cand in parse_candidates([args.nets], width=args.width):
        torch.manual_seed(args.seed)
        model = cand.build(num_classes=data.num_classes, image_size=data.image_size)
        default, default_probe, _ = probe(model, train_b, test_b)
        predict(model)
        predicted, predicted_probe, dim = probe(model, train_b, test_b)
        row = dict(net=cand.name, features=dim, predicted=predicted, predicted_probe=predicted_probe,
                   default=default, default_probe=default_probe)
        rows.append(row)
        print(f"{cand.name:<32} {dim:>8} " + " ".join(f"{row[c]:>16.1f}" for c in cols), flush=True)
    print(f"\n{len(rows)} networks, top-1 in % on {sum(len(y) for _, y in test_b)} held-out images, mean +- s.e.:")
    for c in cols:
        print(f"  {c:<16} {_summary([r[c] for r in rows])}")
    if args.out:
        write_csv(args.out, ["net", "features", *cols],
                  [[r["net"], r["features"], *(round(r[c], 2) for c in cols)] for r in rows])
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
