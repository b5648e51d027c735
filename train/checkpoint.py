"""Resumable training checkpoints, written so that a crash at any moment leaves the last complete one usable.

Layout inside a run directory::

    checkpoints/
        step_00000100/          one complete checkpoint
            ghn.safetensors     GHN weights + constructor config (``GHN.save``; loadable with ``GHN.load``)
            state.pt            optimiser, scheduler, RNG states, step, counters, resolved config
        step_00000200/
        LATEST                  name of the newest complete checkpoint (replaced atomically)

A checkpoint is first written to a ``.tmp-*`` folder, renamed into place, and only then does ``LATEST`` point at
it (:func:`archspace.files.atomic_write`). A process killed mid-write leaves a stray temp folder (ignored and
cleaned up) and ``LATEST`` still naming the previous complete checkpoint. ``state.pt`` holds only tensors,
numbers, strings, lists, tuples and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

import numpy as np
import torch

from archspace.files import atomic_write
from ghn.checkpoint import CheckpointError

LATEST = "LATEST"
CKPT_DIR = "checkpoints"


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and, if present, CUDA) RNG states as weights-only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: str) -> str | None:
    """Path of the newest complete checkpoint of a run, or ``None`` when it has none.

    Raises:
        CheckpointError: ``LATEST`` names a checkpoint folder without its ``state.pt``.
    """
    root = os.path.join(run_dir, CKPT_DIR)
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    path = os.path.join(root, name)
    if not os.path.isfile(os.path.join(path, "state.pt")):
        raise CheckpointError(pointer, "the latest checkpoint is incomplete",
                              f"it names {name!r} but {path}/state.pt is missing; the checkpoint folder was modified "
                              f"by hand: restore it, or train in a new run directory")
    return path


def save_checkpoint(run_dir: str, step: int, ghn, state: dict, keep: int = 2,
                    metadata: dict[str, str] | None = None) -> str:
    """Write a complete checkpoint of step ``step`` and make it the latest, atomically.

    Args:
        run_dir: the run directory.
        step: number of finished steps (the run resumes at this step).
        ghn: the GHN (saved with its own ``save``: safetensors + constructor config).
        state: everything else (optimiser/scheduler state dicts, RNG states, counters, config).
        keep: number of complete checkpoints kept (older ones are deleted after the switch).
        metadata: recorded in the checkpoint's ``ghn.safetensors`` (the training widths, so that ``ghn-eval`` of a
            checkpoint folder defaults to them and warns outside them as for a finished run).

    Returns:
        The path of the new checkpoint folder.
    """
    root = os.path.join(run_dir, CKPT_DIR)
    os.makedirs(root, exist_ok=True)
    for stray in os.listdir(root):  # left by a process killed mid-write
        if stray.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, stray), ignore_errors=True)
    name = f"step_{step:08d}"
    tmp = tempfile.mkdtemp(dir=root, prefix=".tmp-")
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    ghn.save(os.path.join(tmp, "ghn.safetensors"), metadata)
    torch.save(dict(state, step=step), os.path.join(tmp, "state.pt"))
    final = os.path.join(root, name)
    if os.path.exists(final):
        # Re-saving the same step (a run cut short at a multiple of ckpt_every, or the end of a resumed finished
        # run): the state is the same, so keep the complete folder that LATEST may already name rather than open a
        # window in which it names a missing one.
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, final)
    atomic_write(os.path.join(root, LATEST), name + "\n")
    done = sorted(d for d in os.listdir(root) if d.startswith("step_") and d != name)
    for old in done[:max(0, len(done) - (keep - 1))]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def load_checkpoint(path: str) -> tuple[str, dict]:
    """Read a checkpoint folder: returns (path of its ``ghn.safetensors``, the state dict).

    Raises:
        CheckpointError: the folder is not a complete checkpoint, or its ``state.pt`` cannot be read.
    """
    st, ghn_path = os.path.join(path, "state.pt"), os.path.join(path, "ghn.safetensors")
    for p in (st, ghn_path):
        if not os.path.isfile(p):
            raise CheckpointError(p, "incomplete training checkpoint", "file missing")
    try:
        return ghn_path, torch.load(st, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises RuntimeError, pickle and zip errors for a damaged file
        raise CheckpointError(st, "unreadable training checkpoint", f"{type(e).__name__}: {e}") from e
