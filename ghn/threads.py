"""CPU execution settings: thread control for the many tiny tensor operations of a GHN forward pass, and
flushing denormal numbers to zero."""

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


def flush_denormals() -> bool:
    """Make this process's CPU arithmetic treat denormal (subnormal) floats as zero, in every thread created after
    the call. Returns whether the CPU supports it (x86 with SSE3, AArch64; elsewhere nothing changes).

    Why: the parts of a GHN that a training run never uses (decoder rows of kernels and channel counts its nets do
    not have) get no gradient, so weight decay shrinks them geometrically into the denormal range, and x86 cores
    compute on denormals through slow microcode. Measured on the 2-core Intel Xeon (a `/tmp` script, the default's
    nets and meta-batches): with the GHN of a finished default run, which held 403,381 denormal parameters, the
    fused Adam update took 27.8 ms a step instead of 2.4 ms, and a whole step 0.148-0.155 s instead of 0.112-0.122
    s with this call. Values below 1.2e-38 change to 0, nothing else: a ``float32`` number that small is noise.

    The mode is a per-thread register that new threads copy from the thread that creates them, so call this before
    the first parallel tensor operation (the thread pool is created then); :func:`set_threads`, which every
    command-line entry point calls first, does.
    """
    return bool(torch.set_flush_denormal(True))


def set_threads(setting) -> int:
    """Apply a ``threads`` configuration value: an integer, ``"auto"`` (:func:`auto_threads`) or ``None`` (leave
    torch's default), and flush denormals to zero (:func:`flush_denormals`). Returns the thread count now in effect.

    Raises:
        archspace.errors.UsageError: (a ``ValueError``) any other value, e.g. 0 or a negative count.
    """
    flush_denormals()
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
