"""The training metrics of a run: ``metrics.csv`` (one row every ``log_every`` steps) and, when TensorBoard is
installed, the same scalars under ``tb/``.

A resumed run first drops the rows after its checkpoint's step (written by the segment that was stopped after
its last checkpoint), so the file lists every logged step exactly once.
"""

from __future__ import annotations

import csv
import os

from archspace.files import atomic_write

#: Columns of ``metrics.csv``, in order.
METRIC_FIELDS = ("step", "loss", "acc", "grad_norm", "lr", "nodes", "nets", "skipped_large", "skipped_nonfinite",
                 "sec_per_step")
#: Columns also written to TensorBoard (as ``train/<name>``).
TENSORBOARD_FIELDS = ("loss", "acc", "grad_norm", "lr", "sec_per_step")


def truncate_metrics(path: str, step: int) -> None:
    """Drop the rows of ``path`` after ``step`` (atomically); nothing when the file does not exist.

    Args:
        path: a ``metrics.csv``.
        step: the last step kept (the step a run resumes from).
    """
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    lines = [",".join(METRIC_FIELDS)] + [",".join(r.get(k, "") for k in METRIC_FIELDS) for r in rows]
    atomic_write(path, "\n".join(lines) + "\n")


def append_metrics(path: str, row: dict) -> None:
    """Append one row (a step's metrics; floats to 6 significant digits), with the header for a new file.

    Args:
        path: a ``metrics.csv``.
        row: values by :data:`METRIC_FIELDS` name; other keys are ignored.
    """
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def tensorboard_writer(run_dir: str):
    """A TensorBoard ``SummaryWriter`` writing to ``run_dir/tb``, or ``None`` when TensorBoard is not installed
    (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(run_dir, "tb"))
