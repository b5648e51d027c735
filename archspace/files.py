"""Result files written safely: atomically (a reader never sees half a file) and as strict JSON.

Every result file the project writes goes through :func:`atomic_path`: the content is written to a temporary file
in the destination's folder and moved into place with ``os.replace``, so a process killed mid-write leaves the old
file (or none), never a truncated one. (Logs that grow line by line, such as ``metrics.csv``, are appended in place
and truncated to the last checkpoint on resume instead.) JSON results go through :func:`json_safe` first, which
turns NaN and infinities into ``null`` (strict JSON has no NaN).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from .errors import UsageError


def check_writable(path: str | os.PathLike, what: str = "--out") -> str:
    """Check, before any long work, that a file can later be written at ``path``.

    Args:
        path: the destination file (its folder is created later if missing).
        what: how the user named it, for the message (``--out``, ``--plot``).

    Returns:
        ``path`` as a string.

    Raises:
        UsageError: ``path`` is a directory (or ends with a path separator), or its nearest existing folder is not
            writable.
    """
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(os.sep):
        raise UsageError(f"{what} {path} is a directory; give a file name inside it")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: cannot write in {folder}; choose a writable location")
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> str:
    """Check, before any work, that ``path`` is or can become a writable folder.

    Returns:
        ``path`` as a string.

    Raises:
        UsageError: ``path`` is an existing file, or the folder (or its nearest existing parent) is not writable.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path} is a file; give a folder (it is created if missing)")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {path}: cannot write in this folder; choose a writable location")
        return path
    check_writable(path, what)  # the nearest existing parent must be writable
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[str]:
    """A temporary path to write to; on success it replaces ``path`` in one step, on failure it is removed.

    Use it with writers that take a file name (``torch.save``, ``safetensors``' ``save_file``, ``savefig``)::

        with atomic_path("model.safetensors") as tmp:
            save_file(tensors, tmp)

    Args:
        path: the destination; its folder is created if missing.
        mode: permission bits of the final file (``mkstemp`` would leave 0600).

    Yields:
        The temporary file's path, in the destination's folder (so ``os.replace`` is atomic).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically, flushed to disk (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by ``None``, recursively through dicts, lists
    and tuples (tuples become lists); dict keys become strings, as JSON requires."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write ``obj`` as strict JSON (non-finite numbers as ``null``, see :func:`json_safe`), atomically."""
    atomic_write(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, columns: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV file (a header row, then ``rows``, cells as given by ``str``; ``None`` as an empty cell),
    atomically (:func:`atomic_write`).

    Raises:
        ValueError: a row with another number of cells than ``columns``.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a CSV row has {len(row)} cells for {len(columns)} columns")
        w.writerow(["" if v is None else v for v in row])
    atomic_write(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks (e.g. to tell whether a checkpoint at a path
    is still the one a run was started with).

    Raises:
        OSError: the file cannot be read.
    """
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
