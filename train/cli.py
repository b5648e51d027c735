"""Command-line entry points ``ghn-train`` and ``ghn-eval`` (the only place that imports Hydra).

``ghn-train`` trains a GHN (``conf/train.yaml``), then evaluates it on unseen architectures and writes
``eval.json``; ``ghn-eval`` (``conf/eval.yaml``) evaluates a saved GHN. The run directory is Hydra's
(``hydra.run.dir=...``). Under ``torchrun --nproc_per_node=N ghn-train ...`` training is data-parallel over the
meta-batch (gloo on CPU, NCCL on GPU) and rank 0 writes all files.

The configuration folder is ``$GHN_CONF_DIR``, else the checkout's ``conf/``, else the copy the wheel ships as
``train/conf`` (:func:`train.config.find_conf_dir`).

Errors: bad input (a :class:`archspace.errors.UsageError`: a bad value, a missing dataset, a foreign checkpoint,
an unknown override) is one line ``ghn-train: error: ...`` on stderr and exit status 2; anything else is a bug and
keeps its traceback. ``GHN_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` show the traceback of user errors too.

Examples::

    ghn-train                                   # digits, the offline default (about 15 minutes on 2 CPUs)
    ghn-train debug=default                     # a run of seconds
    ghn-train experiment=ghn2_cifar10 data.root=~/data
    ghn-train resume=true hydra.run.dir=runs/x  # continue a stopped run (with the same configuration)
    ghn-eval ckpt=runs/x/ghn.safetensors eval.split=wide
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from archspace.errors import UsageError, debug_enabled, run_cli
from archspace.files import atomic_write, write_json
from ghn.threads import set_threads
from train.config import ConfigError, check_eval_config, check_run_dir, check_train_config, eval_rows, find_conf_dir

log = logging.getLogger("ghn-train")


def _run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.output_dir
    except Exception:  # called outside a Hydra app (tests)
        return os.getcwd()


def _to_dict(cfg: DictConfig) -> dict:
    """The configuration as a plain, resolved dict.

    Raises:
        ConfigError: an interpolation that does not resolve (e.g. ``eval.width=${nowhere}``).
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"the configuration does not resolve: {str(e).splitlines()[0]}") from e


def _init_distributed(device: str | None) -> tuple[int, int]:
    """Initialise ``torch.distributed`` when launched by ``torchrun``; returns (rank, world size)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def build_ghn(ghn_cfg: dict, num_classes: int, image_size: int | None = None):
    """Construct the GHN of a ``ghn/`` config group entry (all keys but ``name`` are constructor arguments) for
    ``num_classes`` classes and images of side ``image_size`` (recorded in its checkpoints as the default input size
    of the graphs it builds; ``None``: the GHN's default)."""
    from ghn import GHN

    kwargs = {k: v for k, v in ghn_cfg.items() if k != "name"}
    if "max_shape" in kwargs:
        kwargs["max_shape"] = tuple(kwargs["max_shape"])
    if image_size is not None:
        kwargs.setdefault("image_size", image_size)
    return GHN(num_classes=num_classes, **kwargs)


def build_arch_dataset(arch_cfg: dict, num_classes: int, image_size: int, seed: int):
    """Construct the training ``ArchDataset`` of an ``archspace/`` config group entry."""
    from archspace.dataset import ArchDataset

    width = arch_cfg.get("width_range")
    return ArchDataset(root=arch_cfg.get("root"), split=arch_cfg.get("split", "train"), num=arch_cfg.get("num"),
                       num_classes=num_classes, image_size=image_size, ve_cutoff=arch_cfg.get("ve_cutoff", 50),
                       width_range=tuple(width) if width else None,
                       width_policy=arch_cfg.get("width_policy", "uniform"), seed=seed,
                       bnfree_fraction=arch_cfg.get("bnfree_fraction", 0.0),
                       min_width_share=arch_cfg.get("min_width_share", 0.0))


def load_data(data_cfg: dict):
    """Load the image task of a ``data/`` config group entry.

    The train/test (digits) and train/held-out (CIFAR-10, ImageNet) splits are fixed (split seed 0) whatever the
    run's seed, as every other command loads them: a GHN trained with another seed is then still evaluated, by
    ``ghn-eval``, ``ghn rank`` and the rest, on images it never trained on (the run seed seeds the batches).
    """
    from train.data import load_image_data

    kwargs = {k: v for k, v in data_cfg.items() if k not in ("name", "root", "image_size", "batch_size",
                                                            "heldout", "num_workers")}
    return load_image_data(data_cfg["name"], root=data_cfg.get("root"), image_size=data_cfg.get("image_size"),
                           seed=0, heldout=data_cfg.get("heldout"), **kwargs)


def run_eval(cfg: dict, ghn, data, run_dir: str, seed: int, training: dict | None = None,
             base_width: int | None = None, width_range: list[int] | None = None) -> dict:
    """Evaluate ``ghn`` on the rows of ``cfg`` (the ``eval`` section), write ``run_dir/eval.json`` and print the
    table (:func:`train.evaluate.format_table`).

    A row whose width lies outside ``width_range`` is evaluated all the same, after a one-line warning (or note: a
    row of split nets wider than the range is predicted at its widest width and widened, unless ``eval.widen`` is
    false; :func:`train.evaluate.widened_from`). The nets are
    evaluated by ``eval.workers`` processes of one thread each (null: as many as the torch threads in effect, the
    ``threads`` setting), so that the SGD baselines, most of the time, use every core.

    Args:
        cfg: the ``eval`` section, with ``device`` and ``ve_cutoff`` added.
        ghn: the GHN, or ``None`` for default-initialisation (and SGD) figures only.
        data: the image task.
        run_dir: where ``eval.json`` goes.
        seed: seed of the SGD baseline.
        training: how the evaluated GHN was trained (``ghn-train``: steps done and planned, whether the safety
            time limit cut the run short), stored under ``training`` in ``eval.json``.
        base_width: the base width of the rows without their own (``None``: DeepNets-1M's own; the ``wide``
            split at 4x it, :func:`train.config.eval_rows`).
        width_range: the widths ``[low, high]`` the GHN was trained on (``None``: unknown, no warning).

    Returns:
        The :func:`train.evaluate.evaluate_table` dict written to ``eval.json`` (``rows`` and the shared
        settings), plus ``base_width`` and ``training``.
    """
    import torch

    from train.evaluate import evaluate_table, format_table, width_warning

    rows = eval_rows(cfg, base_width)
    for row in rows:
        warning = width_warning(row, width_range, widen=bool(cfg.get("widen", True)))
        if warning:
            print(warning)
    result = evaluate_table(ghn, rows, data, width_range=width_range, image_split=cfg.get("image_split", "test"),
                            batch_size=cfg.get("batch_size", 64), image_limit=cfg.get("image_limit"),
                            device=cfg.get("device"), bn_mode=cfg.get("bn_mode", "batch"),
                            sgd_steps=cfg.get("sgd_steps") or (), sgd_num_nets=cfg.get("sgd_num_nets"),
                            sgd_lr=cfg.get("sgd_lr", 0.05), ve_cutoff=cfg.get("ve_cutoff", 50), seed=seed,
                            progress=cfg.get("progress", True), channels_last=bool(cfg.get("channels_last", True)),
                            keep_classifier_init=bool(cfg.get("keep_classifier_init", False)),
                            workers=int(cfg.get("workers") or torch.get_num_threads()),
                            widen=bool(cfg.get("widen", True)))
    result = {"base_width": base_width, **result}
    if training is not None:
        result["training"] = training
    path = os.path.join(run_dir, "eval.json")
    write_json(path, result)
    print(format_table(result))
    print(f"wrote {path}")
    return result


def train(cfg: DictConfig) -> dict:
    """Train (and evaluate) as configured; returns a summary dict. Used by :func:`train_main` and tests.

    Every value is checked, and the run folder too (checkpoints of another run, or a resumed run whose
    configuration changed), before anything is written or computed.

    Raises:
        archspace.errors.UsageError: a bad value (:class:`train.config.ConfigError`), a missing or corrupt
            dataset (``train.data.DataError``), a missing ``archspace.root``.
    """
    import torch

    from train.data import TrainBatches
    from train.loop import Trainer

    c = _to_dict(cfg)
    set_threads(c.get("threads"))
    check_train_config(c)
    try:  # the GHN's own constructor rules (hidden_dim divisible by 4, a square kernel, ...), before the data loads
        with torch.device("meta"):
            build_ghn(c["ghn"], num_classes=1)
    except UsageError as e:
        raise ConfigError(f"ghn.{e}") from None
    run_dir = c.get("run_dir") or _run_dir()
    rank, world = _init_distributed(c.get("device"))
    if world > 1:
        import torch.distributed as dist

        box = [run_dir]
        dist.broadcast_object_list(box, src=0)  # ranks may have resolved ${now:} a second apart
        run_dir = box[0]
    check_run_dir(run_dir, c)
    seed = int(c["seed"])
    torch.manual_seed(seed)
    data = load_data(c["data"])
    archs = build_arch_dataset(c["archspace"], data.num_classes, data.image_size, seed)
    ghn = build_ghn(c["ghn"], data.num_classes, data.image_size)
    images = TrainBatches(data, batch_size=c["data"].get("batch_size", 64), seed=seed,
                          num_workers=c["data"].get("num_workers", 0))
    if rank == 0:
        atomic_write(os.path.join(run_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    t = c["train"]
    o = c["optim"]
    trainer = Trainer(
        ghn, archs, images, run_dir, steps=t["steps"], meta_batch_size=t["meta_batch_size"],
        max_nodes=t["max_nodes"], optimizer=o["name"], lr=o["lr"], weight_decay=o["weight_decay"],
        milestones=o["milestones"], gamma=o["gamma"], lr_schedule=o.get("schedule", "step"),
        warmup=float(o.get("warmup") or 0.0), clip=t["clip"],
        label_smoothing=t["label_smoothing"], amp=t["amp"], channels_last=bool(t.get("channels_last", True)),
        device=c.get("device"), seed=seed, ckpt_every=t["ckpt_every"],
        keep_checkpoints=t["keep_checkpoints"], log_every=t["log_every"], max_bad_steps=t["max_bad_steps"],
        inject_nan_steps=t.get("inject_nan_steps") or (), arch_cache=t.get("arch_cache", 0),
        max_net_nodes=t.get("max_net_nodes", 0), ema_decay=float(t.get("ema_decay") or 0.0),
        time_limit_s=60.0 * float(t.get("time_limit_min") or 0), progress=t.get("progress", True), config=c)
    result = trainer.fit(resume=bool(c.get("resume")))
    summary = {"run_dir": run_dir, "step": result.step, "loss": result.last_loss, "acc": result.last_acc,
               "skipped_large": result.skipped_large, "skipped_nonfinite": result.skipped_nonfinite,
               "train_seconds": result.total_seconds, "ghn": result.ghn_path, "planned_steps": result.planned_steps,
               "cut_short": result.cut_short}
    if rank == 0:
        resumed = (f" ({result.total_seconds:.0f} s over all segments)"
                   if result.total_seconds > result.seconds + 1 else "")
        print(f"trained {result.step} steps in {result.seconds:.0f} s{resumed}: loss {result.last_loss:.3f}, "
              f"train acc {result.last_acc:.3f}; skipped {result.skipped_large} large and "
              f"{result.skipped_nonfinite} non-finite meta-batches; GHN: {result.ghn_path}")
        if result.cut_short:
            print(f"WARNING: the safety time limit (train.time_limit_min={t.get('time_limit_min')}) cut the run short "
                  f"at step {result.step} of {result.planned_steps} ({100.0 * result.step / result.planned_steps:.1f}%"
                  f"); its GHN is not the reproducible result of this configuration. To finish it: ghn-train "
                  f"<the same overrides> hydra.run.dir={run_dir} resume=true train.time_limit_min=0")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0 and c["eval"].get("enabled", True) and result.ghn_path:
        ev = dict(c["eval"], device=c.get("device"), ve_cutoff=c["archspace"].get("ve_cutoff", 50))
        training = {"steps": result.step, "planned_steps": result.planned_steps, "cut_short": result.cut_short,
                    "train_seconds": round(result.total_seconds, 1)}
        widths = c["archspace"].get("width_range")
        summary["eval"] = run_eval(ev, trainer.final_ghn, data, run_dir, seed, training,
                                   base_width=c["archspace"].get("eval_width"), width_range=widths)
    return summary


def check_classes(ghn, num_classes: int, keep_classifier_init: bool, ckpt: str) -> str | None:
    """Refuse, before any evaluation, a GHN trained for another number of classes than the data has.

    Args:
        ghn: the loaded GHN (``num_classes``: the classes it was trained for).
        num_classes: classes of the evaluation data.
        keep_classifier_init: ``eval.keep_classifier_init``: evaluate anyway, the classifier keeping its default
            initialisation.
        ckpt: the checkpoint path, for the message.

    Returns:
        A line to print when the classifier keeps its default initialisation, else ``None``.

    Raises:
        ConfigError: the numbers differ and ``keep_classifier_init`` is false.
    """
    if keep_classifier_init:
        why = (f" (GHN trained for {ghn.num_classes} classes, the data has {num_classes})"
               if ghn.num_classes != num_classes else "")
        return ("eval.keep_classifier_init=true: every net's classifier (last layer) keeps its default "
                f"initialisation{why}")
    if ghn.num_classes != num_classes:
        raise ConfigError(f"ckpt={ckpt} was trained for {ghn.num_classes} classes but the data has {num_classes}; "
                          f"pass eval.keep_classifier_init=true to evaluate with the classifier (last layer) at its "
                          f"default initialisation, or use data with {ghn.num_classes} classes")
    return None


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate a saved GHN as configured in ``conf/eval.yaml`` (one row, ``eval.split`` at ``eval.width``, or
    the rows of ``eval.rows``); returns the ``eval.json`` dict (:func:`run_eval`).

    The configuration, the checkpoint (``ckpt``), the data and the GHN's number of classes are checked before
    anything is written or evaluated.

    Raises:
        archspace.errors.UsageError: a bad value (:class:`train.config.ConfigError`), an unusable checkpoint
            (``ghn.checkpoint.CheckpointError``), a missing or corrupt dataset, a GHN trained for another number
            of classes (unless ``eval.keep_classifier_init=true``).
    """
    from ghn import GHN
    from ghn.pretrained import resolve_checkpoint

    c = _to_dict(cfg)
    set_threads(c.get("threads"))
    check_eval_config(c)
    run_dir = c.get("run_dir") or _run_dir()
    ev = dict(c["eval"], device=c.get("device"), ve_cutoff=c["archspace"].get("ve_cutoff", 50))
    # a released GHN's name (fetched once, verified), a file or a run directory; the loaded GHN carries its widths
    path = resolve_checkpoint(c["ckpt"]) if c.get("ckpt") else None
    ghn = GHN.load(path) if path else None  # CheckpointError (a UsageError) for a file that is not a GHN
    data = load_data(c["data"])
    # rows without a width: the GHN's base width (the low end of its training widths) if it records one, else
    # archspace.eval_width (null: DeepNets-1M's own); the wide split at 4x it
    width_range = ghn.train_width_range if ghn is not None else None
    base_width = trained_width(ghn) if ghn is not None else None
    if base_width is None:
        base_width = c["archspace"].get("eval_width")
    if ghn is None:
        print("no ckpt given: reporting default-initialisation (and SGD) accuracies only")
    else:
        note = check_classes(ghn, data.num_classes, bool(ev.get("keep_classifier_init")), path)
        if note:
            print(note)
        if width_range and any(r.get("width") is None for r in (ev.get("rows") or [ev])):
            lo, hi = width_range
            which = "the width this GHN was trained on" if lo == hi else f"the low end of its training widths {lo}-{hi}"
            print(f"rows without a width are evaluated at the base width {base_width}, {which} (the wide split at "
                  f"4x it; eval.width=... to choose another)")
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(os.path.join(run_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    return run_eval(ev, ghn, data, run_dir, int(c["seed"]), base_width=base_width, width_range=width_range)


def trained_width(ghn) -> int | None:
    """The base width of a loaded GHN: the low end of the widths it was trained on (``ghn.train_width_range``, the
    width itself for a single width), ``None`` when its checkpoint does not say. ``ghn-eval`` evaluates rows without
    their own width at this width, and the ``wide`` split at 4x it."""
    widths = ghn.train_width_range
    return int(widths[0]) if widths else None


# -------------------------------------------------------------------------------------------------------------
# Hydra entry points, inside the project's one error boundary
# -------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hydra_raises():
    """Let exceptions leave Hydra unchanged for the block (Hydra's own ``HYDRA_FULL_ERROR`` switch), so that
    :func:`archspace.errors.run_cli` decides how to report them; the environment is restored on the way out."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _hydra_message(e: CompactHydraException) -> str:
    """Hydra's short message for a composition error (unknown override, missing config option), with its cause
    and without the config search path."""
    cause = e.__cause__
    extra = f" ({str(cause).splitlines()[0]})" if isinstance(cause, OmegaConfBaseException) else ""
    return str(e).split("Config search path")[0].strip() + extra


def _run_hydra_app(prog: str, config_name: str, task: Callable[[DictConfig], object]) -> int:
    """Run ``task`` as a Hydra app on ``sys.argv`` inside :func:`archspace.errors.run_cli`.

    A user error of the task is carried past Hydra (which would add its own "Error executing job" line) and
    reported by ``run_cli``; so is a Hydra composition error (unknown override, missing config option).

    Returns:
        The exit status: 0, or 2 for a user error (one line on stderr).
    """
    debug = debug_enabled()  # read before _hydra_raises sets HYDRA_FULL_ERROR

    def body() -> None:
        caught: list[UsageError] = []
        started = []  # whether Hydra got as far as the job (else an OSError is its set-up of the run directory)

        def job(cfg: DictConfig) -> None:
            started.append(True)
            try:
                task(cfg)
            except UsageError as e:
                if debug:
                    raise
                caught.append(e)

        app = hydra.main(config_path=find_conf_dir(config_name), config_name=config_name, version_base="1.3")(job)
        with _hydra_raises():
            try:
                app()
            except CompactHydraException as e:
                raise ConfigError(_hydra_message(e)) from e
            except OSError as e:
                if started or debug:  # raised by the job itself: not Hydra's set-up of the run directory
                    raise
                raise ConfigError(f"cannot create the run directory {e.filename} ({e.strerror}): set hydra.run.dir "
                                  "to a writable folder") from e
        if caught:
            raise caught[0]

    return run_cli(prog, body, debug=debug)


def _train_task(cfg: DictConfig) -> None:
    train(cfg)


def _eval_task(cfg: DictConfig) -> None:
    evaluate(cfg)


def train_main() -> int:
    """``ghn-train`` console script (Hydra overrides from ``sys.argv``); returns the exit status."""
    return _run_hydra_app("ghn-train", "train", _train_task)


def eval_main() -> int:
    """``ghn-eval`` console script (Hydra overrides from ``sys.argv``); returns the exit status."""
    return _run_hydra_app("ghn-eval", "eval", _eval_task)


if __name__ == "__main__":  # python -m train.cli [train|eval] overrides...
    if len(sys.argv) > 1 and sys.argv[1] in ("train", "eval"):
        which = sys.argv.pop(1)
        sys.exit((eval_main if which == "eval" else train_main)())
    sys.exit(train_main())
