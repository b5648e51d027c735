"""Run one function over many independent tasks (networks to evaluate, candidates to score or train) in worker
processes of one thread each.

On a few CPU cores, PyTorch's intra-op threads help little with the small networks of this project (many small
operations), while separate processes keep every core busy: ``ghn-eval`` evaluates nets and ``ghn rank --jobs``
scores candidates this way. The processes are started once per :func:`task_runner` block with ``spawn`` (nothing of
this process's thread pools is inherited, which ``fork`` would do) and receive the function once, pickled: a
:func:`functools.partial` of a module-level function, or an instance of a module-level class with ``__call__``,
carrying the GHN, the data and the batches with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ghn.threads import set_threads

_TASK_FN: Callable[..., Any] | None = None  # the function of a worker process (set by _init_worker)


def _init_worker(fn: Callable[..., Any]) -> None:
    global _TASK_FN
    set_threads(1)  # the processes share the cores: one thread each; denormals flushed as in the parent
    _TASK_FN = fn


def _call(task: tuple) -> Any:
    return _TASK_FN(*task)


@contextlib.contextmanager
def task_runner(fn: Callable[..., Any], workers: int, device: str | torch.device = "cpu"
                ) -> Iterator[Callable[[Iterable[tuple]], Iterator[Any]]]:
    """Yields ``run(tasks)``: the results ``fn(*task)`` of an iterable of argument tuples, lazily and in the tasks'
    order, computed in this process (``workers <= 1`` or a non-CPU ``device``) or by ``workers`` processes of one
    thread each, shared by every ``run`` call inside the block.

    Each task is computed the same way in either case when this process also runs on one thread: results do not
    depend on ``workers`` (with more threads here, only through floating-point rounding).

    Args:
        fn: the task function; with ``workers > 1`` it must be picklable (see the module docstring).
        workers: processes (``<= 1``: none, run here).
        device: where ``fn`` computes; processes are used on the CPU only.

    Raises:
        Whatever ``fn`` raises, re-raised in this process when its result is reached.
    """
    if workers <= 1 or torch.device(device).type != "cpu":
        yield lambda tasks: (fn(*t) for t in tasks)
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(fn,)) as pool:
        yield lambda tasks: pool.imap(_call, tasks)
