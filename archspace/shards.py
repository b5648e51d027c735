"""DeepNets-1M on disk: the shard file format, building a split into shards, and reading it back.

Knyazev et al. (NeurIPS 2021, Sec. 3) describe the dataset; the reference stores every graph's adjacency matrix in
HDF5, about 43 GB per million. Because every net is a pure function of ``(split, index)`` and its graph a pure
function of the net, we store only what is needed to rebuild it fast and to batch it: the compact genotype bytes
(:meth:`Genotype.to_bytes`), the number of graph nodes and the number of parameters, about 50 bytes per net. Nets
of a split are grouped in shards of ``shard_size`` consecutive indices, one file each::

    <root>/<split>-<shard:05d>.shard      header (magic, JSON) + payload, with the payload's SHA-256
    <root>/manifest.json                  summary rebuilt from the shard files present (informative)

Shard files are written atomically (:func:`archspace.files.atomic_write`), so a shard either exists complete or
not at all; an interrupted build resumes by skipping the valid shards already there; shards built by different
processes or machines (``shard=(k, n)``) are merged by copying the files into one folder. Reading a truncated or
corrupt shard raises :class:`ShardError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import signal
import struct
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import UsageError
from .files import atomic_write
from .genotype import Genotype
from .network import count_params, num_graph_nodes, plan_network
from .sampler import SPLITS, get_genotype

_MAGIC = b"ARCHSHD1"
_PREFIX = struct.Struct("<8sI")  # magic, header length
_FORMAT_VERSION = 1
#: Default number of consecutive nets per shard file.
SHARD_SIZE: int = 10_000
_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<shard>\d{5})\.shard$")
_REBUILD = "delete it and rerun the `archspace build` that made it (the valid shards are kept)"


class ShardError(UsageError):
    """A shard folder or file is missing, truncated, corrupt, or not a shard; the message names the file and what
    to do."""


def shard_path(root: str, split: str, shard: int) -> str:
    """Path of shard ``shard`` of ``split`` under ``root``."""
    return os.path.join(root, f"{split}-{shard:05d}.shard")


def encode_shard(split: str, shard: int, start: int, genotypes: Sequence[Genotype], num_nodes: Sequence[int],
                 num_params: Sequence[int]) -> bytes:
    """Serialise one shard (see the module docstring for the layout).

    Args:
        split: split name.
        shard: shard number.
        start: index of the first net.
        genotypes: the nets, in index order.
        num_nodes: graph nodes of each net.
        num_params: parameters of each net (its own width, 32x32 input, 10 classes).

    Returns:
        The file content.
    """
    blobs = [g.to_bytes() for g in genotypes]
    offsets = np.zeros(len(blobs) + 1, dtype="<u4")
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    payload = b"".join([offsets.tobytes(), np.asarray(num_nodes, dtype="<i4").tobytes(),
                        np.asarray(num_params, dtype="<i8").tobytes(), *blobs])
    header = json.dumps({"format": _FORMAT_VERSION, "split": split, "shard": shard, "start": start,
                         "count": len(blobs), "payload_bytes": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True).encode()
    return _PREFIX.pack(_MAGIC, len(header)) + header + payload


def read_shard_header(path: str) -> dict:
    """Read and check the header of a shard file (cheap: no checksum).

    Args:
        path: shard file.

    Returns:
        The header dict (``split``, ``shard``, ``start``, ``count``, ``payload_bytes``, ``sha256``, ...).

    Raises:
        ShardError: if the file is unreadable, not a shard, or truncated.
    """
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) != _PREFIX.size:
                raise ShardError(f"shard {path} is truncated ({len(prefix)} bytes); {_REBUILD}")
            magic, header_len = _PREFIX.unpack(prefix)
            if magic != _MAGIC:
                raise ShardError(f"{path} is not an archspace shard (bad magic {magic!r}); delete or move it")
            raw = f.read(header_len)
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"shard {path} has a corrupt header ({e}); {_REBUILD}") from e
    except OSError as e:
        raise ShardError(f"cannot read shard {path}: {e.strerror}") from e
    missing = [k for k in ("payload_bytes", "count", "start", "sha256", "split")
               if not isinstance(header, dict) or k not in header]
    if missing:
        raise ShardError(f"shard {path} has a corrupt header (no {', '.join(missing)}); {_REBUILD}")
    size = os.path.getsize(path)
    expected = _PREFIX.size + header_len + int(header["payload_bytes"])
    if size != expected:
        raise ShardError(f"shard {path} is truncated or padded: {size} bytes on disk, header says {expected}; "
                         f"{_REBUILD}")
    header["header_bytes"] = _PREFIX.size + header_len
    return header


def read_shard(path: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, bytes]:
    """Read and verify a whole shard file.

    Args:
        path: shard file.

    Returns:
        ``(header, offsets (count + 1,), num_nodes (count,), num_params (count,), genotype blob)``.

    Raises:
        ShardError: if the file is truncated or its checksum does not match.
    """
    header = read_shard_header(path)
    with open(path, "rb") as f:
        f.seek(header["header_bytes"])
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ShardError(f"shard {path} is corrupt (SHA-256 mismatch); {_REBUILD}")
    n = header["count"]
    pos = 4 * (n + 1)
    offsets = np.frombuffer(payload[:pos], dtype="<u4")
    nodes = np.frombuffer(payload[pos: pos + 4 * n], dtype="<i4")
    params = np.frombuffer(payload[pos + 4 * n: pos + 12 * n], dtype="<i8")
    return header, offsets, nodes, params, payload[pos + 12 * n:]


def net_record(split: str, index: int) -> tuple[Genotype, int, int]:
    """Genotype, graph-node count and parameter count (32x32 input, 10 classes) of one sampled net.

    Args:
        split: a sampled split (not ``predefined``).
        index: net index.

    Returns:
        ``(genotype, num_nodes, num_params)``.
    """
    genotype = get_genotype(split, index)
    plan = plan_network(genotype)
    return genotype, num_graph_nodes(plan), count_params(plan)


def _build_shard(job: tuple[str, str, int, int, int]) -> tuple[int, str]:
    """Worker: build and atomically write one shard; returns ``(shard, path)``."""
    split, root, shard, start, count = job
    records = [net_record(split, i) for i in range(start, start + count)]
    data = encode_shard(split, shard, start, [r[0] for r in records], [r[1] for r in records],
                        [r[2] for r in records])
    path = shard_path(root, split, shard)
    atomic_write(path, data)
    return shard, path


def _ignore_interrupts() -> None:
    """Pool initializer: workers leave Ctrl-C to the parent, which stops them all (:func:`build_split`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shard_is_valid(path: str, split: str, start: int, count: int) -> bool:
    """True if ``path`` is a complete, uncorrupted shard of ``split`` that starts at ``start`` and holds at least
    ``count`` nets (a shard of an earlier, larger build is kept whole: readers slice to the ``num`` they ask for)."""
    if not os.path.exists(path):
        return False
    try:
        header = read_shard(path)[0]
    except ShardError:
        return False
    return header["split"] == split and header["start"] == start and header["count"] >= count


def build_split(split: str, out_dir: str, num: int | None = None, workers: int = 1,
                shard: tuple[int, int] | None = None, shard_size: int = SHARD_SIZE, progress: bool = False
                ) -> dict:
    """Sample the first ``num`` nets of ``split`` and write them as shard files under ``out_dir`` (resumable).

    Shards already present and valid are kept; missing, truncated or corrupt ones are (re)built. The manifest is
    rebuilt from the shard files present at the end.

    Args:
        split: a key of :data:`archspace.sampler.SPLITS` other than ``predefined`` (built on the fly).
        out_dir: output folder (created if needed).
        num: number of nets (default: the split's size).
        workers: worker processes (``multiprocessing``); 1 builds in this process.
        shard: ``(k, n)``: build only the shards ``j`` with ``j % n == k`` (one of ``n`` processes or machines).
        shard_size: nets per shard file; all builders of one folder must use the same value.
        progress: show a tqdm progress bar.

    Returns:
        A summary: ``written`` (sorted paths of the shards this call wrote; empty if all were there already),
        ``kept`` (number of valid shards left as they were), ``num_nets`` (nets of ``split`` now in ``out_dir``).

    Raises:
        UsageError: for an unknown or predefined split, or bad ``num``/``shard``/``workers``.
    """
    if split not in SPLITS or split == "predefined":
        raise UsageError(f"split must be one of {sorted(set(SPLITS) - {'predefined'})}, got {split!r} "
                         f"(predefined nets are built on the fly by ArchDataset)")
    num = SPLITS[split] if num is None else num
    if not 0 < num <= SPLITS[split]:
        raise UsageError(f"num must be in [1, {SPLITS[split]}] for split {split!r}, got {num}")
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise UsageError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
    if workers < 1 or shard_size < 1:
        raise UsageError(f"workers and shard_size must be positive, got {workers}, {shard_size}")
    os.makedirs(out_dir, exist_ok=True)
    jobs = []
    kept = 0
    for j in range(math.ceil(num / shard_size)):
        if shard is not None and j % shard[1] != shard[0]:
            continue
        start = j * shard_size
        count = min(shard_size, num - start)
        if _shard_is_valid(shard_path(out_dir, split, j), split, start, count):
            kept += 1
        else:
            jobs.append((split, out_dir, j, start, count))
    written = []
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"{split} shards")
    if workers == 1 or len(jobs) <= 1:
        results: Iterator = map(_build_shard, jobs)
        pool = None
    else:
        # Workers run only pure-Python sampling (no torch ops), so forking is safe and avoids re-importing torch.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ctx.Pool(min(workers, len(jobs)), initializer=_ignore_interrupts)
        results = pool.imap_unordered(_build_shard, jobs)
    try:
        for _, path in results:
            written.append(path)
            if bar is not None:
                bar.update()
    except BaseException as e:
        # Ctrl-C or a failed shard: stop the other workers now (the shards written so far are kept and the next
        # build resumes) instead of waiting for every remaining shard
        if pool is not None:
            pool.terminate()
        if isinstance(e, OSError):
            raise UsageError(f"archspace build: writing the shards of {split} to {out_dir} failed ({e}); the "
                             "complete shards are kept: free space or fix the folder, then run the same build "
                             "again") from e
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    manifest = rebuild_manifest(out_dir)
    return {"written": sorted(written), "kept": kept, "num_nets": manifest.get(split, {}).get("num_nets", 0)}


def rebuild_manifest(root: str) -> dict:
    """Rewrite ``<root>/manifest.json`` from the shard headers present (use after merging shard folders).

    Args:
        root: dataset folder.

    Returns:
        The manifest: ``{split: {"shards": [{"file", "start", "count", "sha256"}, ...], "num_nets": int}}``.
        Unreadable shards are listed under ``"invalid"``.
    """
    manifest: dict = {}
    for name in sorted(os.listdir(root)):
        m = _SHARD_RE.match(name)
        if not m:
            continue
        entry = manifest.setdefault(m["split"], {"shards": [], "num_nets": 0, "invalid": []})
        try:
            h = read_shard_header(os.path.join(root, name))
        except ShardError as e:
            entry["invalid"].append({"file": name, "error": str(e)})
            continue
        entry["shards"].append({"file": name, "start": h["start"], "count": h["count"], "sha256": h["sha256"]})
        entry["num_nets"] += h["count"]
    atomic_write(os.path.join(root, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


class ShardStore:
    """All shards of one split loaded in memory (about 50 bytes per net), verified on load.

    Args:
        root: dataset folder.
        split: split name.
        num: number of nets needed (from index 0); default all contiguous nets present.

    Raises:
        ShardError: if there is no shard of ``split`` in ``root``, a shard is corrupt or truncated, or shards
            needed for ``num`` are missing.
    """

    def __init__(self, root: str, split: str, num: int | None = None):
        names = os.listdir(root) if os.path.isdir(root) else []
        found = [(int(m["shard"]), n) for n in names if (m := _SHARD_RE.match(n)) and m["split"] == split]
        if not found:
            raise ShardError(f"no shards of split {split!r} in {root}; build them with "
                             f"`archspace build --split {split} --out {root}`")
        self._offsets, self._blobs, starts = [], [], []
        nodes, params = [], []
        expected = 0
        for _, name in sorted(found):
            path = os.path.join(root, name)
            start = read_shard_header(path)["start"]
            if num is not None and start >= num:
                break
            if start != expected:
                raise ShardError(f"split {split!r} in {root}: {path} starts at net {start} but net {expected} comes "
                                 f"next (shards missing, or built with different shard sizes); rerun the `archspace "
                                 f"build` that made them to build the missing shards, or remove the stray files")
            header, offsets, n_nodes, n_params, blob = read_shard(path)
            starts.append(start)
            self._offsets.append(offsets)
            self._blobs.append(blob)
            nodes.append(n_nodes)
            params.append(n_params)
            expected = start + header["count"]
        if num is not None and expected < num:
            raise ShardError(f"split {split!r} in {root} holds nets 0..{expected - 1} but {num} were requested; "
                             f"run `archspace build --split {split} --num {num} --out {root}`")
        self.num = expected if num is None else num
        self._starts = np.asarray(starts)
        self.num_nodes = np.concatenate(nodes)[: self.num]
        self.num_params = np.concatenate(params)[: self.num]

    def __len__(self) -> int:
        return self.num

    def genotype(self, index: int) -> Genotype:
        """Decode the genotype of net ``index``."""
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} stored nets")
        s = int(np.searchsorted(self._starts, index, side="right")) - 1
        k = index - int(self._starts[s])
        off = self._offsets[s]
        return Genotype.from_bytes(self._blobs[s][int(off[k]): int(off[k + 1])])
