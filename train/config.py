"""The run configuration of ``ghn-train`` and ``ghn-eval``: where the Hydra config folder is, and the checks that
turn a bad value into one clear line before any work starts.

The configuration is edited in ``conf/`` at the repository root; the wheel ships the same files as
``train/conf`` (``pyproject.toml`` maps one onto the other). :func:`find_conf_dir` looks, in this order, at
``$GHN_CONF_DIR``, the checkout's ``conf/`` (an editable install) and the packaged ``train/conf``.

Every check works on the resolved configuration as a plain dict (``OmegaConf.to_container(cfg, resolve=True)``)
and raises :class:`ConfigError` naming the key as the user would override it (``train.steps must be a positive
integer, got 0``). This module reads YAML with OmegaConf but does not import Hydra.
"""

from __future__ import annotations

import importlib.resources
import math
import os
from collections.abc import Iterator
from pathlib import Path

from archspace.errors import UsageError
from archspace.network import MIN_WIDTH
from train.cli_args import check_device

#: Environment variable naming a configuration folder to use instead of the checkout's or the packaged one.
CONF_ENV = "GHN_CONF_DIR"

#: Keys that may change when a run is resumed (``resume=true``): they change how the run is watched, where it runs
#: or what is evaluated afterwards, not the weights it trains. Any other difference from the run's saved
#: config.yaml (seed, data, GHN, optimiser, training settings, ``train.time_limit_min`` excepted) is refused.
RESUME_MAY_CHANGE = (
    "resume",                   # the flag itself
    "run_dir",                  # tests name the folder with +run_dir
    "device", "threads",        # where and how fast: a run may continue on another machine
    "data.num_workers",         # loader processes only
    "train.progress",           # the progress bar
    "train.time_limit_min",     # a stopped run may be given more (or less) time
    "train.log_every", "train.ckpt_every", "train.keep_checkpoints",  # bookkeeping, not the weights
    "eval",                     # the evaluation after training (every eval.* key)
)


class ConfigError(UsageError):
    """A configuration value of ``ghn-train`` / ``ghn-eval`` that cannot work (reported as one line, exit 2)."""


# -------------------------------------------------------------------------------------------------------------
# The configuration folder
# -------------------------------------------------------------------------------------------------------------


def find_conf_dir(config_name: str = "train") -> str:
    """The folder holding ``<config_name>.yaml`` and its groups: ``$GHN_CONF_DIR``, else the checkout's ``conf/``,
    else the one packaged as ``train/conf``.

    Args:
        config_name: the primary config (``train`` or ``eval``).

    Returns:
        An absolute path.

    Raises:
        ConfigError: ``$GHN_CONF_DIR`` is set but has no ``<config_name>.yaml``, or no folder has it.
    """
    want = f"{config_name}.yaml"
    env = os.environ.get(CONF_ENV)
    if env:
        folder = Path(env).expanduser().resolve()
        if not (folder / want).is_file():
            raise ConfigError(f"{CONF_ENV}={env} has no {want}; point it at a copy of the repository's conf/ "
                              f"folder or unset it")
        return str(folder)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / want).is_file():
        return str(checkout / "conf")
    packaged = Path(str(importlib.resources.files(__package__).joinpath("conf")))
    if (packaged / want).is_file():
        return str(packaged)
    raise ConfigError(f"configuration folder not found: no {want} in {checkout / 'conf'} or {packaged}; reinstall "
                      f"ghn-archspace or set {CONF_ENV} to the repository's conf/ folder")


# -------------------------------------------------------------------------------------------------------------
# Values
# -------------------------------------------------------------------------------------------------------------


_ABSENT = object()


def _get(c: dict, key: str, default=None):
    """``c["a"]["b"]`` for ``key="a.b"``; ``default`` where a level is missing."""
    for part in key.split("."):
        if not isinstance(c, dict) or part not in c:
            return default
        c = c[part]
    return c


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(c: dict, key: str, least: int, allow_none: bool = False) -> None:
    v = _get(c, key, _ABSENT)
    if v is _ABSENT or (v is None and allow_none):  # an absent key takes the code's default
        return
    if not _is_int(v) or v < least:
        what = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ConfigError(f"{key} must be {what}{' or null' if allow_none else ''}, got {v!r}")


def _check_number(c: dict, key: str, positive: bool, below: float | None = None, allow_none: bool = False) -> None:
    v = _get(c, key, _ABSENT)
    if v is _ABSENT or (v is None and allow_none):
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or
                                                                                           (not positive and v == 0))
    if not ok or (below is not None and v >= below):
        bound = f" below {below:g}" if below is not None else ""
        raise ConfigError(f"{key} must be a {'positive' if positive else 'non-negative'} number{bound}"
                          f"{' or null' if allow_none else ''}, got {v!r}")


#: Keys of one row of ``eval.rows``.
ROW_KEYS = ("split", "width", "num_nets", "start")


def eval_rows(ev: dict, base_width: int | None = None) -> list:
    """The rows of an ``eval`` section, as :class:`train.evaluate.EvalRow` with their widths resolved.

    ``eval.rows`` (a list of ``{split, width, num_nets, start}``; ``ghn-train``'s default is the paper's Table 2)
    or, when it is null or absent, the one row of ``eval.split``, ``eval.width``, ``eval.num_nets`` and
    ``eval.start`` (``ghn-eval``'s default). A row without a width takes ``base_width``, 4x it for the ``wide``
    split (:func:`train.evaluate.row_width`); ``eval.max_nets`` caps every row's number of nets (``debug``).

    Args:
        ev: the ``eval`` section as a plain dict.
        base_width: the base width of evaluation (``None``: DeepNets-1M's own).

    Returns:
        The rows, in order.

    Raises:
        ConfigError: ``eval.rows`` is not a list of mappings with known keys, or a value of a row has the wrong
            type (named as ``eval.rows[i].key``).
    """
    from train.evaluate import EvalRow, row_width

    specs = ev.get("rows")
    if specs is None:
        specs, names = [{**{k: ev.get(k) for k in ROW_KEYS}, "split": ev.get("split") or "test"}], ["eval."]
    elif isinstance(specs, list) and specs:
        names = [f"eval.rows[{i}]." for i in range(len(specs))]
    else:
        raise ConfigError(f"eval.rows must be a non-empty list of rows {{split, width, num_nets, start}} or null, "
                          f"got {specs!r}")
    cap = ev.get("max_nets")
    models = ev.get("models") or ()
    if isinstance(models, str):  # eval.models=resnet18: one model, not its letters
        models = (models,)
    elif not isinstance(models, (list, tuple)):
        raise ConfigError(f"eval.models must be a list of torchvision model names, got {models!r}")
    rows = []
    for spec, name in zip(specs, names):
        if not isinstance(spec, dict) or not spec.get("split"):
            raise ConfigError(f"{name[:-1]} must be a mapping with a split (e.g. {{split: test, width: 16, "
                              f"num_nets: 30}}), got {spec!r}")
        unknown = sorted(set(spec) - set(ROW_KEYS))
        if unknown:
            raise ConfigError(f"{name}{unknown[0]} is not a row key; a row has {', '.join(ROW_KEYS)}")
        for key, least in (("width", 1), ("num_nets", 1), ("start", 0)):
            v = spec.get(key)
            if v is not None and (not _is_int(v) or v < least):
                what = "a positive integer" if least == 1 else f"an integer >= {least}"
                raise ConfigError(f"{name}{key} must be {what}{' or null' if key != 'start' else ''}, got {v!r}")
        split, n = str(spec["split"]), spec.get("num_nets")
        if split in ("predefined", "torchvision") and spec.get("width") is not None:
            how = "set eval.width=null" if name == "eval." else "drop it from the row"
            raise ConfigError(f"{name}width does not apply to the {split} split, whose models keep their own "
                              f"widths: {how}")
        if cap is not None:
            n = cap if n is None else min(n, cap)
        rows.append(EvalRow(split=split, width=row_width(split, spec.get("width"), base_width), num_nets=n,
                            start=spec.get("start") or 0, models=tuple(str(m) for m in models)))
    return rows


def _check_eval_section(c: dict) -> None:
    """The ``eval`` section, checked completely before any work (``ghn-train`` evaluates after its whole run):
    types here, then the same rules :func:`train.evaluate.evaluate_ghn` applies, and the nets of every row."""
    from archspace.models import check_spec
    from train.evaluate import check_eval_args, check_split_range

    _check_int(c, "eval.num_nets", 1, allow_none=True)
    _check_int(c, "eval.start", 0)
    _check_int(c, "eval.width", 1, allow_none=True)
    _check_int(c, "eval.max_nets", 1, allow_none=True)
    _check_int(c, "eval.workers", 1, allow_none=True)
    _check_int(c, "archspace.eval_width", 1, allow_none=True)
    _check_int(c, "eval.batch_size", 1)
    _check_int(c, "eval.sgd_num_nets", 0, allow_none=True)
    _check_int(c, "eval.image_limit", 1, allow_none=True)
    _check_number(c, "eval.sgd_lr", positive=True)
    _check_bool(c, "eval.widen")
    steps = _get(c, "eval.sgd_steps") or []
    if not isinstance(steps, list) or not all(_is_int(s) and s >= 1 for s in steps):
        raise ConfigError(f"eval.sgd_steps must be a list of positive integers (e.g. [10,100]), got {steps!r}")
    ev = c.get("eval") or {}
    check_eval_args(ev.get("bn_mode", "batch"), ev.get("batch_size", 64), steps, ev.get("sgd_num_nets"),
                    ev.get("sgd_lr", 0.05), ev.get("image_limit"), prefix="eval.")
    base = _get(c, "archspace.eval_width")
    if base is not None and base < MIN_WIDTH:
        raise ConfigError(f"archspace.eval_width must be at least {MIN_WIDTH}, got {base}")
    given = ev.get("rows") is not None
    for i, row in enumerate(eval_rows(ev, base)):
        prefix = f"eval.rows[{i}]." if given else "eval."
        if row.split == "torchvision":
            for name in row.models:
                check_spec(name if ":" in str(name) else f"torchvision:{name}")
        else:
            check_split_range(row.split, row.num_nets, row.start, row.width, prefix=prefix)
    image_split = ev.get("image_split", "test")
    if image_split not in ("train", "heldout", "val", "test"):
        raise ConfigError(f"eval.image_split must be train, heldout (val) or test, got {image_split!r}")
    if image_split in ("heldout", "val") and _get(c, "data.heldout", None) == 0:
        raise ConfigError("eval.image_split=heldout but data.heldout=0 keeps no held-out images; set data.heldout "
                          "or use eval.image_split=test")


def _check_bool(c: dict, key: str) -> None:
    v = _get(c, key, _ABSENT)
    if v is not _ABSENT and not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")


def _check_common(c: dict) -> None:
    if not _is_int(c.get("seed")) or c["seed"] < 0:  # numpy's seed sequences refuse negative seeds
        raise ConfigError(f"seed must be an integer >= 0, got {c.get('seed')!r}")
    check_device(c.get("device"), flag="device")
    _check_int(c, "data.batch_size", 1)
    _check_int(c, "data.num_workers", 0)
    _check_int(c, "data.image_size", 1, allow_none=True)  # null: the dataset's own size
    _check_int(c, "data.heldout", 0, allow_none=True)
    _check_eval_section(c)


def check_train_config(c: dict) -> None:
    """Check the values of a resolved ``ghn-train`` configuration (``conf/train.yaml``) before any work
    (``threads`` is checked where it is applied, :func:`ghn.threads.set_threads`).

    Args:
        c: the configuration as a plain dict.

    Raises:
        ConfigError: the first value that cannot work, named as its override (``train.steps``).
    """
    _check_common(c)
    for key in ("train.steps", "train.meta_batch_size", "train.ckpt_every", "train.keep_checkpoints",
                "train.log_every", "train.max_bad_steps", "ghn.hidden_dim", "ghn.num_steps"):
        _check_int(c, key, 1)
    for key in ("train.max_nodes", "train.max_net_nodes", "train.arch_cache"):  # 0: no cap / no cache
        _check_int(c, key, 0)
    _check_int(c, "archspace.num", 1, allow_none=True)
    for key in ("archspace.min_width_share", "archspace.bnfree_fraction"):  # shares of the training nets
        v = _get(c, key, _ABSENT)
        if v is not _ABSENT and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
            raise ConfigError(f"{key} must be a number between 0 and 1, got {v!r}")
    for key in ("train.amp", "train.channels_last", "train.progress"):  # the ghn section's flags: GHN's constructor
        _check_bool(c, key)
    _check_number(c, "train.time_limit_min", positive=False, allow_none=True)  # null or 0: no safety stop
    _check_number(c, "train.clip", positive=False)  # 0: no clipping
    _check_number(c, "train.label_smoothing", positive=False, below=1.0)
    _check_number(c, "train.ema_decay", positive=False, below=1.0, allow_none=True)  # null or 0: no average
    _check_number(c, "optim.lr", positive=True)
    _check_number(c, "optim.weight_decay", positive=False)
    _check_number(c, "optim.warmup", positive=False, below=1.0, allow_none=True)  # a fraction of the run
    _check_number(c, "optim.gamma", positive=True)
    milestones = _get(c, "optim.milestones", _ABSENT)
    if milestones is not _ABSENT and not (isinstance(milestones, list) and all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in milestones)):
        raise ConfigError(f"optim.milestones must be a list of fractions of the run in (0, 1) (e.g. [0.6667, "
                          f"0.8333]), got {milestones!r}")
    # The GHN's own constructor checks the rest of the ghn section (train/cli.py builds it on the meta device).
    width = _get(c, "archspace.width_range")
    if width is not None and (not isinstance(width, list) or len(width) != 2 or
                              not all(_is_int(w) and w >= MIN_WIDTH for w in width) or width[0] > width[1]):
        raise ConfigError(f"archspace.width_range must be [low, high] with {MIN_WIDTH} <= low <= high, got {width!r}")


def check_eval_config(c: dict) -> None:
    """Check the values of a resolved ``ghn-eval`` configuration (``conf/eval.yaml``) before any work
    (``threads`` is checked where it is applied, :func:`ghn.threads.set_threads`).

    Raises:
        ConfigError: the first value that cannot work, named as its override (``eval.width``).
    """
    _check_common(c)


# -------------------------------------------------------------------------------------------------------------
# Resuming
# -------------------------------------------------------------------------------------------------------------


def _flat(c, prefix: str = "") -> Iterator[tuple[str, object]]:
    """``(dotted key, value)`` of every leaf of a nested dict, in order."""
    if isinstance(c, dict) and c:
        for k, v in c.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], c


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def config_difference(saved: dict, new: dict) -> tuple[str, object, object] | None:
    """The first key whose value differs between a run's saved configuration and a new one, ignoring
    :data:`RESUME_MAY_CHANGE`.

    Returns:
        ``(key, saved value, new value)`` (a missing key's value is ``"<absent>"``), or ``None`` if they agree.
    """
    a, b = dict(_flat(saved)), dict(_flat(new))
    for key in list(b) + [k for k in a if k not in b]:
        if _may_change(key):
            continue
        old, now = a.get(key, "<absent>"), b.get(key, "<absent>")
        if old != now:
            return key, old, now
    return None


def check_run_dir(run_dir: str, c: dict) -> None:
    """Check that a ``ghn-train`` run may write into ``run_dir``, before anything there is overwritten.

    A folder with checkpoints is continued only with ``resume=true``, and then only with the configuration it
    was started with (:data:`RESUME_MAY_CHANGE` excepted), compared with its ``config.yaml``.

    Args:
        run_dir: the run folder (``hydra.run.dir``).
        c: the new resolved configuration.

    Raises:
        ConfigError: checkpoints there without ``resume=true``, or a key that differs from the saved config.
    """
    from omegaconf import OmegaConf

    from train.checkpoint import latest_checkpoint

    if not os.path.isdir(run_dir):
        return
    if not c.get("resume"):
        if latest_checkpoint(run_dir) is not None:
            raise ConfigError(f"{run_dir} already has checkpoints; pass resume=true to continue that run or choose "
                              f"another hydra.run.dir")
        return
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    diff = config_difference(saved, c)
    if diff is not None:
        key, old, now = diff
        raise ConfigError(f"resume=true but {key} differs from the run's config.yaml ({old!r} there, {now!r} now); "
                          f"resume with the same configuration or start a new run in another hydra.run.dir")
