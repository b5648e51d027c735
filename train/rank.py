"""Rank candidate architectures without training them, and judge a ranking against trained accuracy.

A GHN predicts all parameters of a network in one forward pass, so the accuracy of those parameters is a cheap
proxy for how good the design is (Knyazev et al., NeurIPS 2021, Sec. 5.3, "property prediction"; Table 5
correlates it with the accuracy after training). :func:`score_candidates` builds each candidate at its default
initialisation and computes the requested scores of :mod:`train.scores` (the accuracy of predicted parameters on
held-out batches with BatchNorm in batch-statistics mode, batches of 64 as in the paper; zero-cost proxies;
baselines). :func:`train_to_convergence` is the yardstick: the project's SGD recipe for :data:`TRAINED_STEPS`
steps from the default initialisation, shared by ``ghn rank --validate`` (:func:`validate_candidates`) and
``benchmarks/bench_rank.py``, so that :mod:`train.correlation` can say how well a ranking agrees with training.
:func:`fit_embedding_regressor` is the other property predictor of Sec. 5.3: an RBF support-vector regressor on
the mean-pooled GHN node embeddings, fitted to labelled architectures.

Scoring takes the predictor and the embedder as plain callables (tests pass stubs); :func:`ghn_predictor` and
:func:`ghn_embedder` make them from a :class:`ghn.GHN`. A GHN trained for another number of classes than the task
has is refused (:class:`ghn.model.ClassMismatchError`) unless the classifier is kept at its default
initialisation (``keep_classifier_init``).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from archspace.errors import UsageError
from archspace.files import write_csv as write_csv_file
from ghn.model import ClassMismatchError
from train.accuracy import chance
from train.candidates import Candidate
from train.data import ImageData
from train.finetune import SGD_LR, Batches, train_sgd

#: Sets a model's parameters in place (e.g. with a GHN) and returns it.
Predictor = Callable[[nn.Module], nn.Module]
#: Maps a model to a fixed-size feature vector ``(D,)`` (e.g. mean-pooled GHN node embeddings).
Embedder = Callable[[nn.Module], np.ndarray]


@dataclass
class RankRow:
    """Scores of one candidate. Accuracies in %, losses are mean cross-entropy on the held-out batches."""

    name: str
    params: int = 0
    accuracy: float = float("nan")  # with predicted parameters, BN batch statistics
    loss: float = float("nan")
    seconds: float = 0.0  # build + predict + evaluate
    predict_seconds: float = 0.0  # graph + GHN prediction alone
    trained_accuracy: float | None = None  # after --validate K SGD steps from the default initialisation
    trained_loss: float | None = None
    embed_score: float | None = None  # regressor on GHN embeddings (--embed-regressor)
    scores: dict[str, float] = field(default_factory=dict)  # train.scores.SCORES by name (higher is better)
    score_seconds: dict[str, float] = field(default_factory=dict)  # the cost of each score
    rank: int | None = None
    trained_rank: int | None = None
    error: str | None = None  # why the candidate could not be scored


def score_candidates(candidates: Sequence[Candidate], predict: Predictor | None, eval_batches: Batches, *,
                     num_classes: int, image_size: int, seed: int = 0, device: str | torch.device = "cpu",
                     scores: Sequence[str] = ("ghn_acc", "ghn_loss"),
                     proxy_batch: tuple[torch.Tensor, torch.Tensor] | None = None, train_data: ImageData | None = None,
                     jobs: int = 1, log: Callable[[str], None] | None = None) -> list[RankRow]:
    """Build every candidate at its default initialisation and compute its ``scores``
    (:func:`train.scores.candidate_scores`); a candidate that fails gets a row with ``error`` set.

    Args:
        candidates: the architectures.
        predict: sets the parameters of a freshly built model in place and returns it (``None`` when no score
            needs a GHN); with ``jobs > 1`` it must be picklable, as :func:`ghn_predictor`'s is.
        eval_batches: held-out ``(images (B, C, H, W), labels (B,))`` batches, reused for every candidate
            (materialise an iterator as a list first).
        num_classes: classifier outputs of the built networks.
        image_size: input resolution.
        seed: global RNG seed set before building each candidate (same default initialisation as
            :func:`validate_candidates`).
        device: where to evaluate.
        scores: per-candidate scores of :data:`train.scores.SCORES`; ``ghn_acc``/``ghn_loss`` also fill
            ``accuracy``/``loss``.
        proxy_batch: one training batch for the zero-cost proxies.
        train_data: the task the ``sgdK`` scores train on.
        jobs: worker processes of one thread each (:func:`train.workers.task_runner`; ``1``: score here). Every
            candidate is scored the same way in either case, so the scores do not depend on ``jobs`` (up to
            floating-point rounding when this process uses several threads); ``seconds`` are then the costs of
            one thread.
        log: optional ``callable(str)`` for progress lines.

    Returns:
        One :class:`RankRow` per candidate, in input order (call :func:`rank_rows` to sort).

    Raises:
        ghn.model.ClassMismatchError: the predictor refuses the task's number of classes (a setting of the whole
            run, not a property of one candidate).
        ValueError: an unknown score, or a score whose input is missing (see :func:`train.scores.candidate_scores`).
    """
    from functools import partial

    from train.scores import check_inputs
    from train.workers import task_runner

    check_inputs(scores, predict, eval_batches, proxy_batch, train_data)
    score_one = partial(_score_one, predict=predict, eval_batches=eval_batches, num_classes=num_classes,
                        image_size=image_size, seed=seed, device=device, scores=tuple(scores),
                        proxy_batch=proxy_batch, train_data=train_data)
    rows = []
    t_all = time.perf_counter()
    with task_runner(score_one, jobs, device) as run:
        for row in run((c,) for c in candidates):
            rows.append(row)
            if log and (len(rows) % 10 == 0 or len(rows) == len(candidates)):
                log(f"scored {len(rows)}/{len(candidates)} candidates in {time.perf_counter() - t_all:.1f} s")
    return rows


def _score_one(cand: Candidate, *, predict: Predictor | None, eval_batches: Batches, num_classes: int,
               image_size: int, seed: int, device: str | torch.device, scores: Sequence[str],
               proxy_batch: tuple[torch.Tensor, torch.Tensor] | None, train_data: ImageData | None) -> RankRow:
    """The :class:`RankRow` of one candidate (the task of :func:`score_candidates`)."""
    from train.scores import candidate_scores

    t0 = time.perf_counter()
    row = RankRow(cand.name)
    try:
        torch.manual_seed(seed)
        model = cand.build(num_classes=num_classes, image_size=image_size)
        row.params = sum(p.numel() for p in model.parameters())
        row.scores, row.score_seconds, row.predict_seconds = candidate_scores(
            model, scores, name=cand.name, image_size=image_size, predict=predict, eval_batches=eval_batches,
            proxy_batch=proxy_batch, train_data=train_data, seed=seed, device=device)
        if "ghn_acc" in row.scores:
            row.accuracy = row.scores["ghn_acc"]
        if "ghn_loss" in row.scores:
            row.loss = -row.scores["ghn_loss"]
    except ClassMismatchError:
        raise
    except (RuntimeError, ValueError, NotImplementedError) as e:  # the candidate fails (torch or our checks)
        row.error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    row.seconds = time.perf_counter() - t0
    return row


#: SGD steps of the ranking yardstick on the digits default. Measured with ``benchmarks/bench_rank.py --pick-steps``
#: (README): the mean top-1 of 10 test nets still rises from 200 to 400 steps (83.5 -> 89.1%), so 400 is the budget
#: the benchmark could afford, not a proven convergence. ``ghn rank --validate`` and the benchmark both train with
#: :func:`train_to_convergence`.
TRAINED_STEPS = 400
#: Evaluations per yardstick run (for the steps needed to reach 90% of the final accuracy).
TRAINED_EVALS = 10


@dataclass(frozen=True)
class Trained:
    """The yardstick of one candidate: held-out ``top1`` (%) and mean cross-entropy ``loss`` after a full run of the
    recipe (BatchNorm with running statistics, as a trained net is used), ``steps_to_90`` the first evaluation step
    after 0 at which the held-out accuracy reached 90% of its final value, and the run's ``seconds``. A run that
    diverged scores as chance with ``loss = inf``; it, and a run that ends at most at twice the chance accuracy (it
    learned nothing to reach 90% of), gets ``steps_to_90 = steps``."""

    top1: float
    loss: float
    steps_to_90: int
    seconds: float


def train_to_convergence(model: nn.Module, data: ImageData, eval_batches: Batches, *, steps: int = TRAINED_STEPS,
                         lr: float = SGD_LR, batch_size: int = 64, seed: int = 0,
                         device: str | torch.device = "cpu") -> Trained:
    """Train a copy of ``model`` for ``steps`` steps of the project's SGD recipe (:func:`train.finetune.train_sgd`,
    cosine decay over the run) and score it on ``eval_batches``: the ground truth that rankers are judged against
    (Knyazev et al., NeurIPS 2021, Sec. 5.3 correlate with the accuracy of trained networks). ``model`` is not
    changed.

    Args:
        model: the network at its starting point (the default initialisation).
        data: the task whose training images are used.
        eval_batches: held-out ``(images (B, C, H, W), labels (B,))`` batches.
        steps: the budget (default :data:`TRAINED_STEPS`, the yardstick's); evaluated every ``steps /
            TRAINED_EVALS`` steps.
        lr, batch_size, seed: the recipe (same seed: same batches in the same order).
        device: where to train.

    Returns:
        The :class:`Trained` scores.

    Raises:
        ValueError: ``steps < 1`` or ``lr <= 0``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    net = copy.deepcopy(model)
    curve = train_sgd(net, data, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_batches=eval_batches,
                      eval_every=max(1, steps // TRAINED_EVALS), device=device)
    if curve.diverged_at is not None or not curve.accuracy:
        c = chance(data.num_classes)
        return Trained(c.top1, c.loss, steps, curve.seconds)
    final = curve.accuracy[-1]
    if final <= 2 * 100.0 / data.num_classes:  # never learned beyond twice chance: it reached nothing
        return Trained(final, curve.eval_loss[-1], steps, curve.seconds)
    reach = next(s for s, a in zip(curve.eval_steps, curve.accuracy) if s > 0 and a >= 0.9 * final)
    return Trained(final, curve.eval_loss[-1], reach, curve.seconds)


def validate_candidates(rows: Sequence[RankRow], candidates: Sequence[Candidate], data: ImageData,
                        eval_batches: Batches, *, steps: int = TRAINED_STEPS, lr: float = SGD_LR,
                        batch_size: int = 64, seed: int = 0, device: str | torch.device = "cpu", jobs: int = 1,
                        log: Callable[[str], None] | None = None) -> None:
    """Train each scored candidate from its default initialisation with :func:`train_to_convergence` (the recipe
    and budget of ``benchmarks/bench_rank.py``) and record ``trained_accuracy``/``trained_loss`` on the held-out
    batches. All candidates see the same batches in the same order; a run that diverges scores as chance.

    Args:
        rows: rows from :func:`score_candidates` (updated in place; rows with an error are skipped, and a row
            whose training fails keeps ``trained_accuracy = None``).
        candidates: the same candidates, same order.
        data: the task whose training images are used.
        eval_batches: held-out batches.
        steps: SGD steps per candidate (``--validate K``).
        lr, batch_size, seed: the :func:`train.finetune.train_sgd` recipe.
        device: where to train.
        jobs: worker processes of one thread each (as in :func:`score_candidates`; ``1``: train here).
        log: optional progress callable.
    """
    from functools import partial

    from train.workers import task_runner

    by_name = {c.name: c for c in candidates}
    t_all = time.perf_counter()
    todo = [r for r in rows if r.error is None]
    train_one = partial(train_candidate, data=data, eval_batches=eval_batches, lr=lr, batch_size=batch_size,
                        device=device)
    with task_runner(train_one, jobs, device) as run:
        for i, (row, result) in enumerate(zip(todo, run((by_name[r.name], steps, seed) for r in todo))):
            if isinstance(result, str):  # keep the ranking score; the candidate just has no SGD score
                if log:
                    log(f"{row.name}: SGD validation failed: {result}")
            else:
                row.trained_accuracy, row.trained_loss = result.top1, result.loss
            if log and ((i + 1) % 5 == 0 or i + 1 == len(todo)):
                log(f"trained {i + 1}/{len(todo)} candidates for {steps} steps in "
                    f"{time.perf_counter() - t_all:.1f} s")


def train_candidate(cand: Candidate, steps: int, seed: int, *, data: ImageData, eval_batches: Batches,
                    lr: float = SGD_LR, batch_size: int = 64, device: str | torch.device = "cpu") -> Trained | str:
    """The yardstick of one candidate: built at its default initialisation (global seed ``seed``) and trained by
    :func:`train_to_convergence` for ``steps`` steps of the recipe with data-order seed ``seed``; the task of
    :func:`validate_candidates` and of ``benchmarks/bench_rank.py``.

    Returns:
        The :class:`Trained` scores, or a one-line ``"Error: message"`` when the candidate cannot be built or
        trained (a torch error or a failed check: ``RuntimeError``/``ValueError``).
    """
    try:
        torch.manual_seed(seed)
        model = cand.build(num_classes=data.num_classes, image_size=data.image_size)
        return train_to_convergence(model, data, eval_batches, steps=steps, lr=lr, batch_size=batch_size,
                                    seed=seed, device=device)
    except (RuntimeError, ValueError) as e:
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def rank_rows(rows: Sequence[RankRow], by: str = "accuracy") -> list[RankRow]:
    """Sort rows best first and number them (``rank``; ``trained_rank`` too when trained scores exist).

    Args:
        rows: scored rows.
        by: ``accuracy`` (higher first, ties broken by lower loss), ``loss`` (lower first), ``embed`` (higher
            ``embed_score`` first) or the name of a score in the rows' ``scores`` (higher first, ``nan`` last,
            ties broken by lower loss).

    Returns:
        The rows, failed ones last with ``rank = None``.

    Raises:
        ValueError: unknown ``by``, or ``embed`` without embedding scores.
    """
    keys = {
        "accuracy": lambda r: (-r.accuracy, r.loss),
        "loss": lambda r: (r.loss, -r.accuracy),
        "embed": lambda r: (-(r.embed_score if r.embed_score is not None else -math.inf), r.loss),
    }
    ok = [r for r in rows if r.error is None]
    if by not in keys:
        if not ok or not all(by in r.scores for r in ok):
            raise ValueError(f"unknown ranking key {by!r}: neither one of {sorted(keys)} nor a score of every row")

        def key(r: RankRow):  # higher first, +inf first, nan last; ties by the lower loss
            v = r.scores[by]
            return (math.inf if math.isnan(v) else -v, r.loss if math.isfinite(r.loss) else math.inf)

        keys[by] = key
    if by == "embed" and not any(r.embed_score is not None for r in ok):
        raise ValueError("ranking by embed needs embedding-regressor scores (--embed-regressor LABELS.csv)")
    ranked = sorted(ok, key=keys[by])
    for i, r in enumerate(ranked, 1):
        r.rank = i
    trained = [r for r in ok if r.trained_accuracy is not None]
    for i, r in enumerate(sorted(trained, key=lambda r: (-r.trained_accuracy, r.trained_loss)), 1):
        r.trained_rank = i
    return ranked + [r for r in rows if r.error is not None]


_COLUMNS = ("rank", "name", "params", "accuracy", "loss", "trained_rank", "trained_accuracy", "trained_loss",
            "embed_score", "seconds", "predict_seconds", "error")


def _fmt(v, digits: str = ".4f") -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:{digits}}" if math.isfinite(v) else str(v)
    return str(v)


def _score_columns(rows: Sequence[RankRow]) -> list[str]:
    """Scores of the rows other than those shown as ``accuracy``/``loss``, in :data:`train.scores.ALL_SCORES`
    order (``sgdK`` scores outside it last, by name)."""
    from train.scores import ALL_SCORES

    present = {k for r in rows for k in r.scores} - {"ghn_acc", "ghn_loss", "embed"} - set(_COLUMNS)
    return [k for k in ALL_SCORES if k in present] + sorted(present - set(ALL_SCORES))


def _present_columns(rows: Sequence[RankRow]) -> list[str]:
    optional = ("trained_rank", "trained_accuracy", "trained_loss", "embed_score", "error")
    cols = [c for c in _COLUMNS if c not in optional or any(getattr(r, c) is not None for r in rows)]
    i = cols.index("loss") + 1
    return cols[:i] + _score_columns(rows) + cols[i:]


def _value(r: RankRow, c: str):
    return r.scores.get(c) if c not in _COLUMNS else getattr(r, c)


def write_csv(rows: Sequence[RankRow], path: str) -> str:
    """Write the ranking as CSV, atomically (:func:`archspace.files.write_csv`).

    Columns: ``rank, name, params, accuracy, loss``, then every other score the rows carry
    (:data:`train.scores.ALL_SCORES` order), [``trained_rank, trained_accuracy, trained_loss``] [``embed_score``]
    ``seconds, predict_seconds`` [``error``]; bracketed groups only when present.

    Returns:
        ``path``.
    """
    cols = _present_columns(rows)
    write_csv_file(path, cols, [[_fmt(_value(r, c), ".4f" if c in _COLUMNS else ".6g") for c in cols]
                                for r in rows])
    return path


def format_table(rows: Sequence[RankRow], top: int | None = None) -> str:
    """A fixed-width terminal table of the (ranked) rows; ``top`` limits the scored rows shown."""
    cols = [c for c in _present_columns(rows) if c not in ("seconds", "predict_seconds")]
    heads = {"trained_rank": "sgd_rank", "trained_accuracy": "sgd_acc", "trained_loss": "sgd_loss",
             "accuracy": "acc", "embed_score": "embed"}
    shown = [r for r in rows if r.error is None][: top or None] + [r for r in rows if r.error is not None]

    def cell(r, c):
        v = _value(r, c)
        if c == "params":
            return f"{v / 1e6:.3f}M"
        if isinstance(v, float):
            return f"{v:.4g}" if c in r.scores and c not in _COLUMNS else f"{v:.2f}" if math.isfinite(v) else str(v)
        return "" if v is None else str(v)

    table = [[heads.get(c, c) for c in cols]] + [[cell(r, c) for c in cols] for r in shown]
    widths = [max(len(row[j]) for row in table) for j in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if j in (1, len(cols) - 1) else v.rjust(w) for j, (v, w) in
                       enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    hidden = sum(r.error is None for r in rows) - sum(r.error is None for r in shown)
    if hidden > 0:
        lines.append(f"... {hidden} more (see the CSV)")
    return "\n".join(lines)


def read_labels(path: str) -> dict[str, float]:
    """Read ``name,label`` rows (a header line is skipped when its label is not a number).

    Names are candidate tokens (``deepnets:train/5``, ``torchvision:resnet18``); labels are e.g. accuracies.

    Raises:
        UsageError: missing file, a row without two columns, a non-numeric label, or fewer than 2 labels.
    """
    if not os.path.isfile(path):
        raise UsageError(f"labels file {path!r} does not exist; write name,label rows (deepnets:train/5,61.2)")
    out: dict[str, float] = {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise UsageError(f"{path}:{lineno}: expected 'name,label', got {row}")
            try:
                label = float(row[1])
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise UsageError(f"{path}:{lineno}: label {row[1]!r} is not a number") from None
            if not math.isfinite(label):
                raise UsageError(f"{path}:{lineno}: label {row[1]!r} is not a finite number")
            out[row[0].strip()] = label
    if len(out) < 2:
        raise UsageError(f"{path}: need at least 2 labelled architectures to fit a regressor, got {len(out)}")
    return out


def fit_embedding_regressor(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """Fit an RBF support-vector regressor from mean-pooled GHN node embeddings to labels, its ``C``, ``gamma`` and
    ``epsilon`` chosen by a 5-fold grid search (Knyazev et al., NeurIPS 2021, Sec. 5.3, "property prediction";
    the reference fits the same model on the val split and scores the test split).

    Args:
        features: ``(L, D)`` embeddings of the labelled architectures.
        labels: ``(L,)`` targets, e.g. accuracy after training.
        seed: seed of the folds' shuffling.

    Returns:
        A fitted scikit-learn estimator with ``predict((C, D)) -> (C,)`` (features standardised first).

    Raises:
        ValueError: shapes that do not match or fewer than 2 examples.
    """
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] < 2:
        raise ValueError(f"need (L, D) features and (L,) labels with L >= 2, got {features.shape} and "
                         f"{labels.shape}")
    scale = float(labels.std()) or 1.0
    grid = {"svr__C": [scale * c for c in (0.1, 1.0, 10.0, 100.0)],
            "svr__gamma": [g / features.shape[1] for g in (0.1, 1.0, 10.0)],
            "svr__epsilon": [scale * e for e in (0.01, 0.1, 0.5)]}
    folds = KFold(min(5, features.shape[0]), shuffle=True, random_state=seed)
    search = GridSearchCV(make_pipeline(StandardScaler(), SVR(kernel="rbf")), grid, cv=folds,
                          scoring="neg_mean_squared_error")
    return search.fit(features, labels).best_estimator_


def embed_candidates(candidates: Sequence[Candidate], embed: Embedder, *, num_classes: int, image_size: int,
                     seed: int = 0) -> np.ndarray:
    """Embedding features of candidates, ``(C, D)``: each built at its default initialisation, then embedded."""
    feats = []
    for cand in candidates:
        torch.manual_seed(seed)
        with torch.no_grad():
            feats.append(np.asarray(embed(cand.build(num_classes=num_classes, image_size=image_size))))
    return np.stack(feats)  # (C, D)


# ---- a GHN as predictor and embedder ----------------------------------------------------------------------------


def ghn_predictor(ghn: nn.Module, image_size: int, keep_classifier_init: bool = False,
                  widen_from: int | None | str = "trained") -> Predictor:
    """A :data:`Predictor` that sets a model's parameters in place with ``ghn.predict`` (graph traced at
    ``image_size``); BatchNorm layers are left as they are (``bn_mode="running"``): evaluation chooses the mode.
    The predictor is picklable (it can be sent to the worker processes of ``score_candidates(jobs=N)``).

    Args:
        ghn: the GHN.
        image_size: input side used to trace the network's graph.
        keep_classifier_init: leave the classifier (last layer) at its default initialisation instead of predicting
            it; required when the task has another number of classes than the GHN was trained for.
        widen_from: DeepNets-1M nets wider than this base width are predicted at it and widened function-
            preservingly (``GHN.predict``, :mod:`ghn.widen`, Net2WiderNet). ``"trained"`` (default): the widest
            width the GHN was trained on (``ghn.max_train_width``, from its checkpoint), so that every command
            serves wider nets as ``ghn-eval`` does, or no widening where the GHN does not record its widths (a
            released GHN); ``None``: every net predicted directly at its width.

    Returns:
        The predictor (its ``widen_from`` is the resolved width or ``None``); calling it raises
        :class:`ghn.model.ClassMismatchError` for another number of classes without ``keep_classifier_init``, and
        :class:`ghn.model.InputSizeError` when the model's forward pass fails at ``image_size``.

    Raises:
        ValueError: ``widen_from`` is a string other than ``"trained"``.
    """
    if isinstance(widen_from, str):
        if widen_from != "trained":
            raise ValueError(f"widen_from must be a width, None or 'trained', got {widen_from!r}")
        widen_from = getattr(ghn, "max_train_width", None)  # None: not recorded (or not a GHN)
    return _GHNPredictor(ghn, image_size, keep_classifier_init, widen_from)


@dataclass
class _GHNPredictor:
    """:func:`ghn_predictor`'s predictor: a class rather than a closure, so that it pickles."""

    ghn: nn.Module
    image_size: int
    keep_classifier_init: bool
    widen_from: int | None = None

    def __call__(self, model: nn.Module) -> nn.Module:
        return self.ghn.predict(model, input_size=self.image_size, bn_mode="running",
                                keep_classifier_init=self.keep_classifier_init, widen_from=self.widen_from)


def ghn_embedder(ghn: nn.Module, image_size: int) -> Embedder:
    """An :data:`Embedder`: the mean over nodes of the GHN node embeddings of a model's graph, ``(D,)``."""

    from archspace import to_graph

    def embed(model: nn.Module) -> np.ndarray:
        with torch.no_grad():
            x = ghn.node_embeddings(to_graph(model, image_size, ve_cutoff=50 if ghn.ve else 1))  # (N, D)
        return x.mean(0).cpu().numpy()  # (D,)

    return embed
