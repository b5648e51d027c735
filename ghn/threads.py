"""Thread control for the many tiny tensor operations of a GHN forward pass."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread(device: torch.device):
    """Run a block with one intra-op CPU thread, restoring the setting afterwards (no-op off the CPU).

    Used for the GNN sweeps and for copying predictions into a model: every sweep level touches a few rows of width
    ``D`` and with more threads each small op pays an OpenMP fork/join that costs more than the op itself, far more
    when other processes share the cores (measured: resnet152 sweeps 1.9 s with 2 threads vs 0.16 s with 1 on a
    loaded 2-core machine); copies are memory-bound and gain little from threads. The decoder's large convolutions
    keep the caller's thread count.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
