"""Command-line entry points ``ghn-train`` and ``ghn-eval`` (the only place that imports Hydra).

``ghn-train`` trains a GHN (``conf/train.yaml``), then evaluates it on unseen architectures and writes
``eval.json``; ``ghn-eval`` (``conf/eval.yaml``) evaluates a saved GHN. The run directory is Hydra's
(``hydra.run.dir=...``). Under ``torchrun --nproc_per_node=N ghn-train ...`` training is data-parallel over the
meta-batch (gloo on CPU, NCCL on GPU) and rank 0 writes all files.

The configuration folder is found next to the package (``<repo>/conf`` for an editable install, or
``train/conf`` if shipped inside the package), or at ``$GHN_CONF_DIR``.

Examples::

    ghn-train                                   # digits, the offline default (about 15 minutes on 2 CPUs)
    ghn-train debug=default                     # a run of seconds
    ghn-train experiment=ghn2_cifar10 data.root=~/data
    ghn-train resume=true hydra.run.dir=runs/x  # continue a stopped run
    ghn-eval ckpt=runs/x/ghn.safetensors split=wide
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ghn.threads import set_threads

log = logging.getLogger("ghn-train")


def _conf_dir() -> str:
    """The configuration folder (see the module docstring)."""
    env = os.environ.get("GHN_CONF_DIR")
    here = Path(__file__).resolve().parent
    for cand in ([Path(env)] if env else []) + [here.parent / "conf", here / "conf"]:
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise FileNotFoundError(f"configuration folder not found (looked for train.yaml in {here.parent / 'conf'} and "
                            f"{here / 'conf'}); set GHN_CONF_DIR to the repository's conf/ folder")


CONF_DIR = _conf_dir()


def _run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.output_dir
    except Exception:  # called outside a Hydra app (tests)
        return os.getcwd()


def _to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


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


def build_ghn(ghn_cfg: dict, num_classes: int):
    """Construct the GHN of a ``ghn/`` config group entry (all keys but ``name`` are constructor arguments)."""
    from ghn import GHN

    kwargs = {k: v for k, v in ghn_cfg.items() if k != "name"}
    if "max_shape" in kwargs:
        kwargs["max_shape"] = tuple(kwargs["max_shape"])
    return GHN(num_classes=num_classes, **kwargs)


def build_arch_dataset(arch_cfg: dict, num_classes: int, image_size: int, seed: int):
    """Construct the training ``ArchDataset`` of an ``archspace/`` config group entry."""
    from archspace.dataset import ArchDataset

    width = arch_cfg.get("width_range")
    return ArchDataset(root=arch_cfg.get("root"), split=arch_cfg.get("split", "train"), num=arch_cfg.get("num"),
                       num_classes=num_classes, image_size=image_size, ve_cutoff=arch_cfg.get("ve_cutoff", 50),
                       width_range=tuple(width) if width else None,
                       width_policy=arch_cfg.get("width_policy", "uniform"), seed=seed)


def load_data(data_cfg: dict, seed: int):
    """Load the image task of a ``data/`` config group entry."""
    from train.data import load_image_data

    kwargs = {k: v for k, v in data_cfg.items() if k not in ("name", "root", "image_size", "batch_size",
                                                            "heldout", "num_workers")}
    return load_image_data(data_cfg["name"], root=data_cfg.get("root"), image_size=data_cfg.get("image_size"),
                           seed=seed, heldout=data_cfg.get("heldout"), **kwargs)


def run_eval(cfg: dict, ghn, data, run_dir: str, seed: int) -> dict:
    """Evaluate ``ghn`` as configured in ``cfg`` (the ``eval`` section) and write ``eval.json``."""
    from train.evaluate import evaluate_ghn, format_summary, split_nets, torchvision_nets, write_eval_json

    split = cfg["split"]
    if split == "torchvision":
        nets = torchvision_nets(cfg["models"], num_classes=data.num_classes, image_size=data.image_size)
    else:
        nets = split_nets(split, cfg.get("num_nets"), num_classes=data.num_classes, image_size=data.image_size,
                          width=cfg.get("width"), start=cfg.get("start", 0))
    result = evaluate_ghn(ghn, nets, data, split_name=split, image_split=cfg.get("image_split", "test"),
                          batch_size=cfg.get("batch_size", 64), bn_mode=cfg.get("bn_mode", "batch"),
                          sgd_steps=cfg.get("sgd_steps") or (), sgd_num_nets=cfg.get("sgd_num_nets"),
                          sgd_lr=cfg.get("sgd_lr", 0.05), image_limit=cfg.get("image_limit"),
                          ve_cutoff=cfg.get("ve_cutoff", 50), device=cfg.get("device"), seed=seed,
                          progress=cfg.get("progress", True))
    result["width"] = cfg.get("width")
    path = os.path.join(run_dir, "eval.json")
    write_eval_json(path, result)
    print(format_summary(result))
    print(f"wrote {path}")
    return result


def train(cfg: DictConfig) -> dict:
    """Train (and evaluate) as configured; returns a summary dict. Used by :func:`train_main` and tests."""
    import torch

    from train.checkpoint import atomic_write_text
    from train.data import TrainBatches
    from train.loop import Trainer

    c = _to_dict(cfg)
    run_dir = c.get("run_dir") or _run_dir()
    rank, world = _init_distributed(c.get("device"))
    if world > 1:
        import torch.distributed as dist

        box = [run_dir]
        dist.broadcast_object_list(box, src=0)  # ranks may have resolved ${now:} a second apart
        run_dir = box[0]
    set_threads(c.get("threads"))
    seed = int(c["seed"])
    torch.manual_seed(seed)
    if rank == 0:
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_text(os.path.join(run_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    data = load_data(c["data"], seed)
    archs = build_arch_dataset(c["archspace"], data.num_classes, data.image_size, seed)
    ghn = build_ghn(c["ghn"], data.num_classes)
    t = c["train"]
    o = c["optim"]
    images = TrainBatches(data, batch_size=c["data"].get("batch_size", 64), seed=seed,
                          num_workers=c["data"].get("num_workers", 0))
    trainer = Trainer(
        ghn, archs, images, run_dir, steps=t["steps"], meta_batch_size=t["meta_batch_size"],
        max_nodes=t["max_nodes"], optimizer=o["name"], lr=o["lr"], weight_decay=o["weight_decay"],
        milestones=o["milestones"], gamma=o["gamma"], lr_schedule=o.get("schedule", "step"), clip=t["clip"],
        label_smoothing=t["label_smoothing"], amp=t["amp"], channels_last=bool(t.get("channels_last", True)),
        device=c.get("device"), seed=seed, ckpt_every=t["ckpt_every"],
        keep_checkpoints=t["keep_checkpoints"], log_every=t["log_every"], max_bad_steps=t["max_bad_steps"],
        inject_nan_steps=t.get("inject_nan_steps") or (), arch_cache=t.get("arch_cache", 0),
        max_net_nodes=t.get("max_net_nodes", 0), ema_decay=float(t.get("ema_decay") or 0.0),
        time_limit_s=60.0 * float(t.get("time_limit_min") or 0), progress=t.get("progress", True), config=c)
    result = trainer.fit(resume=bool(c.get("resume")))
    summary = {"run_dir": run_dir, "step": result.step, "loss": result.last_loss, "acc": result.last_acc,
               "skipped_large": result.skipped_large, "skipped_nonfinite": result.skipped_nonfinite,
               "train_seconds": result.seconds, "ghn": result.ghn_path}
    if rank == 0:
        print(f"trained {result.step} steps in {result.seconds:.0f} s: loss {result.last_loss:.3f}, "
              f"train acc {result.last_acc:.3f}; skipped {result.skipped_large} large and "
              f"{result.skipped_nonfinite} non-finite meta-batches; GHN: {result.ghn_path}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0 and c["eval"].get("enabled", True) and result.ghn_path:
        ev = dict(c["eval"], device=c.get("device"), ve_cutoff=c["archspace"].get("ve_cutoff", 50))
        summary["eval"] = run_eval(ev, trainer.final_ghn, data, run_dir, seed)
    return summary


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate a saved GHN as configured in ``conf/eval.yaml``; returns the eval dict."""
    from ghn import GHN
    from train.checkpoint import atomic_write_text

    c = _to_dict(cfg)
    run_dir = c.get("run_dir") or _run_dir()
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    set_threads(c.get("threads"))
    data = load_data(c["data"], int(c["seed"]))
    ghn = None
    if c.get("ckpt"):
        path = os.path.expanduser(c["ckpt"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"GHN checkpoint {path} not found (ckpt=...)")
        ghn = GHN.load(path)
    else:
        print("no ckpt given: reporting default-initialisation (and SGD) accuracies only")
    ev = dict(c["eval"], device=c.get("device"), ve_cutoff=c["archspace"].get("ve_cutoff", 50))
    if ghn is not None and ev.get("width") is None and ev["split"] not in ("torchvision", "predefined"):
        ev["width"] = trained_width(path)
        if ev["width"] is not None:
            print(f"evaluating nets of width {ev['width']}, the width this GHN was trained on (eval.width=... "
                  f"to choose another)")
    return run_eval(ev, ghn, data, run_dir, int(c["seed"]))


def trained_width(ckpt: str) -> int | None:
    """The single width a ``ghn-train`` checkpoint was trained on (``train_width_range`` ``[w, w]`` in its
    metadata), or ``None`` (several widths, or a checkpoint that does not say)."""
    from ghn.checkpoint import read_metadata

    raw = read_metadata(ckpt).get("train_width_range")
    if not raw:
        return None
    lo, hi = json.loads(raw)
    return int(lo) if lo == hi else None


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> None:
    train(cfg)


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def _eval_app(cfg: DictConfig) -> None:
    evaluate(cfg)


def train_main() -> None:
    """``ghn-train`` console script."""
    _train_app()


def eval_main() -> None:
    """``ghn-eval`` console script."""
    _eval_app()


if __name__ == "__main__":  # python -m train.cli [train|eval] overrides...
    if len(sys.argv) > 1 and sys.argv[1] in ("train", "eval"):
        which = sys.argv.pop(1)
        (eval_main if which == "eval" else train_main)()
    else:
        train_main()
