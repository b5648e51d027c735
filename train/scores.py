"""The scores ``ghn rank`` can rank candidate designs by, higher is better for every one.

Per candidate (:func:`candidate_scores`), from one build at the default initialisation:

==================  ===========================================================================================
``ghn_acc``         top-1 (%) on the held-out batches with GHN-predicted parameters, BatchNorm batch statistics
                    (Knyazev et al., NeurIPS 2021, Sec. 5.3)
``ghn_loss``        minus the mean cross-entropy with predicted parameters
``PROXY``           a zero-cost proxy of :data:`train.zero_cost.PROXIES` at the default initialisation
``PROXY@ghn``       the same proxy at the GHN-predicted parameters
``sgdK``            top-1 (%) on the held-out batches after ``K`` steps of the project's SGD recipe from the default
                    initialisation (:func:`train.finetune.train_sgd`, its cosine decay over the ``K`` steps; data
                    order seeded apart from the yardstick's), BatchNorm batch statistics: a short training run,
                    the reduced-training proxy of the NAS field, at a cost of seconds rather than milliseconds
``sgdK@ghn``        the same ``K`` steps from the GHN-predicted parameters (a warm start scored after ``K`` steps)
``params``          parameter count (a baseline every ranker must beat)
``flops``           floating-point operations of one forward pass of one image (``torch.utils.flop_counter``)
``depth``           nodes on the longest path of the network's graph (real edges, :func:`archspace.to_graph`)
``random``          a uniform number fixed by the candidate's name and the seed (the chance baseline)
==================  ===========================================================================================

and, over a set of candidates: ``embed``, an RBF support-vector regressor on mean-pooled GHN node embeddings fitted
to labelled architectures (:func:`train.rank.fit_embedding_regressor`), and ``vote``, the average rank of several
scores (:func:`rank_average`). Each score's cost in seconds is recorded beside it: the GHN's prediction is counted
in every score that needs it, building the candidate in none.
"""

from __future__ import annotations

import copy
import re
import time
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from train.accuracy import accuracy
from train.zero_cost import PROXIES

GHN_SUFFIX = "@ghn"
#: ``K`` of the short-training scores in :data:`SCORES` (any ``sgdK`` / ``sgdK@ghn`` is accepted by name): of 10, 20
#: and 30 steps, 30 ranked best on the 200 test nets of ``benchmarks/bench_rank.py`` (README, "Ranking candidate
#: designs").
SHORT_SGD_STEPS = 30
#: Added to the ranking seed for the data order of the short-training scores, so that they never replay the
#: batches of the yardstick run they are judged against (:func:`train.rank.train_to_convergence`, seed 0).
SHORT_SGD_SEED_OFFSET = 1000
_SHORT_SGD = re.compile(r"sgd([1-9][0-9]{0,5})$")
#: Scores computed per candidate, in table order. ``embed`` and ``vote`` come from sets of candidates.
SCORES: tuple[str, ...] = (("ghn_acc", "ghn_loss") + tuple(PROXIES) + tuple(p + GHN_SUFFIX for p in PROXIES)
                           + (f"sgd{SHORT_SGD_STEPS}", f"sgd{SHORT_SGD_STEPS}{GHN_SUFFIX}")
                           + ("params", "flops", "depth", "random"))
#: Scores that need the GHN (prediction or embeddings), besides any ``sgdK@ghn`` (see :func:`needs_ghn`).
GHN_SCORES = frozenset({"ghn_acc", "ghn_loss", "embed"} | {p + GHN_SUFFIX for p in PROXIES})
#: Scores over sets of candidates.
SET_SCORES = ("embed", "vote")
ALL_SCORES = SCORES + SET_SCORES
#: The baselines any ranker must beat (reported beside it by ``ghn rank --validate``).
BASELINES = ("params", "flops", "depth", "random")
#: The members of ``vote``: the three best single rankers on the 60 labelled val nets of ``benchmarks/bench_rank.py``
#: (digits default, main-job GHN; README, "Ranking candidate designs").
VOTE = ("sgd30@ghn", "sgd20@ghn", "sgd30")
#: ``ghn rank``'s ranker: the best of ``benchmarks/bench_rank.py`` on 200 test nets (README, "Ranking candidate
#: designs": Kendall tau 0.56 against 400-step accuracy, the seed-to-seed ceiling 0.60, the vote 0.53, FLOPs 0.22,
#: the GHN's accuracy alone 0.19).
DEFAULT_SCORE = f"sgd{SHORT_SGD_STEPS}"
#: One line per score but ``sgdK`` (see :func:`score_help`), for help texts and plot labels.
SCORE_HELP = {"ghn_acc": "top-1 % with predicted parameters", "ghn_loss": "minus the loss with predicted parameters",
              **{p: f"{p} at the default init" for p in PROXIES},
              **{p + GHN_SUFFIX: f"{p} at the predicted parameters" for p in PROXIES},
              "params": "parameter count", "flops": "FLOPs of one image", "depth": "longest path of the graph",
              "random": "chance", "embed": "SVR on GHN embeddings", "vote": "rank average of " + ", ".join(VOTE)}


def short_sgd_steps(name: str) -> int | None:
    """``K`` of a short-training score name (``sgdK`` or ``sgdK@ghn``, ``1 <= K < 10**6``), else ``None``."""
    m = _SHORT_SGD.match(name.removesuffix(GHN_SUFFIX))
    return int(m.group(1)) if m else None


def needs_ghn(name: str) -> bool:
    """Whether the score ``name`` needs the GHN (its prediction or its embeddings)."""
    return name in GHN_SCORES or (short_sgd_steps(name) is not None and name.endswith(GHN_SUFFIX))


def score_help(name: str) -> str:
    """One line describing the score ``name`` (help texts, plot labels)."""
    k = short_sgd_steps(name)
    if k is not None:
        start = "the predicted parameters" if name.endswith(GHN_SUFFIX) else "the default init"
        return f"top-1 % after {k} SGD steps from {start}"
    return SCORE_HELP[name]


def per_candidate_scores(score: str, with_baselines: bool = False) -> list[str]:
    """The per-candidate scores ``ghn rank`` computes to rank by ``score``: ``ghn_acc`` and ``ghn_loss`` always
    (the table's ``accuracy``/``loss``), the score itself (or the members of ``vote``), and the :data:`BASELINES`
    when asked."""
    names = ["ghn_acc", "ghn_loss"]
    wanted = list(VOTE) if score == "vote" else [] if score == "embed" else [score]
    wanted += list(BASELINES) if with_baselines else []
    return names + [n for n in dict.fromkeys(wanted) if n not in names]


def add_vote(rows, members: Sequence[str] = VOTE) -> None:
    """Set ``scores["vote"]`` of rows (objects with a ``scores`` dict holding ``members``) to the rank average
    of the members (:func:`rank_average`) over these rows."""
    votes = rank_average([[r.scores[m] for r in rows] for m in members]) if rows else []
    for r, v in zip(rows, votes):
        r.scores["vote"] = float(v)


def check_score_names(names: Sequence[str]) -> list[str]:
    """Validate score names (see the module table).

    Raises:
        ValueError: an unknown name, with the list of known ones.
    """
    bad = [n for n in names if n not in ALL_SCORES and short_sgd_steps(n) is None]
    if bad:
        raise ValueError(f"unknown score {bad[0]!r}; choose from {', '.join(ALL_SCORES)} (or sgdK, sgdK@ghn "
                         "for any number of steps K)")
    return list(names)


def random_score(name: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by ``name`` and ``seed`` (the same on every machine and run)."""
    return float(np.random.default_rng([zlib.crc32(name.encode()), seed]).random())


def forward_flops(model: nn.Module, image_shape: Sequence[int]) -> float:
    """FLOPs of one forward pass of one image ``(C, H, W)`` counted by ``torch.utils.flop_counter.FlopCounterMode``
    (matrix products and convolutions; a multiply-add counts 2). The model runs in evaluation mode on a copy."""
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).eval()
    device = next(net.parameters(), torch.zeros(())).device
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros((1, *image_shape), device=device))
    return float(counter.get_total_flops())


def graph_depth(model: nn.Module, image_size: int) -> int:
    """Nodes on the longest path of the network's graph (real edges only; Knyazev et al., NeurIPS 2021, Sec. 4.1)."""
    from archspace import to_graph
    from archspace.dag import longest_path_levels

    g = to_graph(model, image_size, ve_cutoff=1)
    src, dst = g.edge_index.numpy()
    return int(longest_path_levels(src, dst, int(g.num_nodes)).max()) + 1


def needs_proxy_batch(names: Sequence[str]) -> bool:
    """Whether any of the scores ``names`` is a zero-cost proxy (at the default or the predicted parameters)."""
    return any(n.split("@")[0] in PROXIES for n in names)


def check_inputs(names: Sequence[str], predict, eval_batches, proxy_batch, train_data=None) -> list[str]:
    """Check that per-candidate scores ``names`` are known and have their inputs (see :func:`candidate_scores`).

    Raises:
        ValueError: an unknown or set-level score name, or a missing input a requested score needs.
    """
    names = check_score_names(names)
    if any(n in SET_SCORES for n in names):
        raise ValueError(f"{', '.join(SET_SCORES)} are scored over sets of candidates, not one at a time")
    with_ghn = [n for n in names if needs_ghn(n)]
    if with_ghn and predict is None:
        raise ValueError(f"score {with_ghn[0]!r} needs a GHN (predict)")
    if any(n in ("ghn_acc", "ghn_loss") or short_sgd_steps(n) for n in names) and eval_batches is None:
        raise ValueError("ghn_acc, ghn_loss and sgdK need held-out batches (eval_batches)")
    short = [n for n in names if short_sgd_steps(n)]
    if short and train_data is None:
        raise ValueError(f"score {short[0]!r} trains the candidate: it needs the training images (train_data)")
    if needs_proxy_batch(names) and proxy_batch is None:
        raise ValueError("zero-cost proxies need one batch of images and labels (proxy_batch)")
    return names


def candidate_scores(model: nn.Module, names: Sequence[str], *, name: str, image_size: int,
                     predict: Callable[[nn.Module], nn.Module] | None = None, eval_batches=None,
                     proxy_batch: tuple[torch.Tensor, torch.Tensor] | None = None, train_data=None, seed: int = 0,
                     device: str | torch.device = "cpu") -> tuple[dict[str, float], dict[str, float], float]:
    """Compute the per-candidate scores ``names`` of one network at its default initialisation.

    Args:
        model: the network at its default initialisation (not changed: the prediction works on a copy).
        names: scores of :data:`SCORES`.
        name: the candidate's name (seeds ``random``).
        image_size: input side (``flops``, ``depth``).
        predict: sets a model's parameters in place and returns it (a GHN); needed by the ``@ghn`` and ``ghn_*``
            scores.
        eval_batches: held-out ``(images (B, C, H, W), labels (B,))`` batches for ``ghn_acc``/``ghn_loss``.
        proxy_batch: one training batch ``(images (B, C, H, W), labels (B,))`` for the zero-cost proxies.
        train_data: the task (:class:`train.data.ImageData`) whose training images the ``sgdK`` scores train on.
        seed: seed of ``random``; ``seed +`` :data:`SHORT_SGD_SEED_OFFSET` seeds the data order of ``sgdK``.
        device: where to evaluate.

    Returns:
        ``(scores, seconds, predict_seconds)``: the first two keyed by score name; ``seconds`` includes the GHN's
        prediction (``predict_seconds``, 0 without one) for the scores that use it. A score that fails or is
        undefined for this network is ``nan`` (ranked last); the others are still computed. ``random`` is
        reseeded, and the global RNG is seeded with ``seed`` before each score, so a score does not depend on
        which others were computed before it.

    Raises:
        ValueError: an unknown or set-level score name, or a missing input a requested score needs.
    """
    names = check_inputs(names, predict, eval_batches, proxy_batch, train_data)
    scores: dict[str, float] = {}
    seconds: dict[str, float] = {}
    image_shape = (proxy_batch[0].shape[1:] if proxy_batch is not None else
                   next(iter(eval_batches))[0].shape[1:] if eval_batches is not None else (3, image_size, image_size))

    def timed(key: str, fn, extra: float = 0.0) -> None:
        torch.manual_seed(seed)  # dropout in the training-mode proxies: the same draws whatever ran before
        t = time.perf_counter()
        try:
            scores[key] = float(fn())
        except (RuntimeError, ValueError, NotImplementedError, torch.linalg.LinAlgError):
            scores[key] = float("nan")  # this score is undefined for this network; the others still count
        seconds[key] = time.perf_counter() - t + extra

    predicted, t_predict = None, 0.0
    if any(needs_ghn(n) for n in names):
        t = time.perf_counter()
        with torch.no_grad():
            predicted = predict(copy.deepcopy(model)).to(device)
        t_predict = time.perf_counter() - t
    if "ghn_acc" in names or "ghn_loss" in names:
        t = time.perf_counter()
        acc = accuracy(predicted, eval_batches, bn_mode="batch", device=device)
        spent = time.perf_counter() - t + t_predict
        for key, value in (("ghn_acc", acc.top1), ("ghn_loss", -acc.loss)):
            if key in names:
                scores[key], seconds[key] = value, spent
    if proxy_batch is not None:
        x, y = proxy_batch[0].to(device), proxy_batch[1].to(device)
    on_device = None

    def start(n: str) -> tuple[nn.Module, float]:
        """The network score ``n`` starts from (predicted or default, on ``device``) and the prediction's cost."""
        nonlocal on_device
        if n.endswith(GHN_SUFFIX):
            return predicted, t_predict
        if on_device is None:
            on_device = copy.deepcopy(model).to(device)
        return on_device, 0.0

    for n in names:
        base = n.split("@")[0]
        if base in PROXIES:
            net, extra = start(n)
            timed(n, lambda base=base, net=net: PROXIES[base](net, x, y), extra)
        elif short_sgd_steps(n):
            net, extra = start(n)
            timed(n, lambda n=n, net=net: short_sgd_score(net, train_data, eval_batches, short_sgd_steps(n),
                                                          seed=seed, device=device), extra)
        elif n == "params":
            timed(n, lambda: sum(p.numel() for p in model.parameters()))
        elif n == "flops":
            timed(n, lambda: forward_flops(model, image_shape))
        elif n == "depth":
            timed(n, lambda: graph_depth(model, image_size))
        elif n == "random":
            timed(n, lambda: random_score(name, seed))
    return {n: scores[n] for n in names}, {n: seconds[n] for n in names}, t_predict


def short_sgd_score(model: nn.Module, data, eval_batches, steps: int, *, seed: int = 0,
                    device: str | torch.device = "cpu") -> float:
    """The ``sgdK`` score: held-out top-1 (%) of a copy of ``model`` after ``steps`` steps of the project's SGD
    recipe (:func:`train.finetune.train_sgd`: lr :data:`train.finetune.SGD_LR` with its cosine decay over the
    ``steps``, batches of 64 in the order of seed ``seed +`` :data:`SHORT_SGD_SEED_OFFSET`), BatchNorm with batch
    statistics. Reduced training is the NAS field's conventional cheap proxy (Zhou et al., CVPR 2020, EcoNAS; the
    baseline Abdelfattah et al., ICLR 2021, hold zero-cost proxies against).

    Args:
        model: the network at its starting point (not changed).
        data: the task (:class:`train.data.ImageData`) whose training images are used.
        eval_batches: held-out ``(images (B, C, H, W), labels (B,))`` batches.
        steps: SGD steps (>= 1).

    Returns:
        The top-1 in %, ``nan`` when the run diverges (ranked last).
    """
    from train.finetune import train_sgd

    net = copy.deepcopy(model)
    curve = train_sgd(net, data, steps=steps, seed=seed + SHORT_SGD_SEED_OFFSET, device=device)
    if curve.diverged_at is not None:
        return float("nan")
    return accuracy(net, eval_batches, bn_mode="batch", device=device).top1


def rank_average(columns: Sequence[Sequence[float]]) -> np.ndarray:
    """The ``vote`` of several scores: the mean over scores of each candidate's rank (higher score, higher rank),
    a ``nan`` score ranked lowest. Abdelfattah et al. (ICLR 2021, Sec. 5) vote with synflow, jacob_cov and snip.

    Args:
        columns: ``K`` scorings of the same ``C`` candidates, each ``(C,)``.

    Returns:
        ``(C,)`` average ranks (1 = worst, ``C`` = best).

    Raises:
        ValueError: no columns, or columns of different lengths.
    """
    if not columns:
        raise ValueError("a vote needs at least one score")
    a = np.asarray(columns, dtype=np.float64)  # (K, C)
    if a.ndim != 2:
        raise ValueError("the scores of a vote must cover the same candidates")
    from train.correlation import score_ranks

    return np.mean([score_ranks(col) for col in a], axis=0)
