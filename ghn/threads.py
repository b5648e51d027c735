"""Thread control for the many tiny tensor operations of a GHN forward pass."""

from __future__ import annotations

import contextlib
import os

import torch

from archspace.errors import UsageError


@contextlib.contextmanager
def limit_threads(num_threads: int | None, device: torch.device | str = "cpu"):
    """Run a block with at most ``num_threads`` intra-op CPU threads (``None``: leave the setting), restoring it.

    Args:
        num_threads: thread cap, or ``None``.
        device: the computation's device; nothing changes off the CPU.
    """
    n = torch.get_num_threads()
    if num_threads is None or torch.device(device).type != "cpu" or n <= num_threads:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def one_thread(device: torch.device | str = "cpu"):
    """Run a block with one intra-op CPU thread, restoring the setting afterwards (no-op off the CPU).

    Used for the GNN sweeps and for copying predictions into a model: every sweep level touches a few rows of width
    ``D`` and with more threads each small op pays an OpenMP fork/join that costs more than the op itself, far more
    when other processes share the cores (measured: resnet152 sweeps 1.9 s with 2 threads vs 0.16 s with 1 on a
    loaded 2-core machine); copies are memory-bound and gain little from threads. The decoder's large convolutions
    keep the caller's thread count.
    """
    return limit_threads(1, device)


def auto_threads() -> int:
    """Intra-op threads for one process: the CPUs this process may run on, divided among the processes that
    ``torchrun`` started on this node (``LOCAL_WORLD_SIZE``), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def set_threads(setting) -> int:
    """Apply a ``threads`` configuration value: an integer, ``"auto"`` (:func:`auto_threads`) or ``None`` (leave
    torch's default). Returns the thread count now in effect.

    Raises:
        archspace.errors.UsageError: (a ``ValueError``) any other value, e.g. 0 or a negative count.
    """
    if setting is None:
        return torch.get_num_threads()
    if setting == "auto":
        n = auto_threads()
    else:
        try:
            n = int(setting)
        except (TypeError, ValueError):
            raise UsageError(f"threads must be a positive integer, 'auto' or null, got {setting!r}") from None
        if n < 1:
            raise UsageError(f"threads must be a positive integer, 'auto' or null, got {setting!r}")
    torch.set_num_threads(n)
    return n
