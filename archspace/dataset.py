"""DeepNets-1M on disk and in training: shard files, the ``ArchDataset`` and node-capped meta-batches.

Storage (Knyazev et al., NeurIPS 2021, Sec. 3 describes the dataset; the reference stores every graph's adjacency
matrix in HDF5, about 43 GB per million). Because every net is a pure function of ``(split, index)`` and its
graph a pure function of the net, we store only what is needed to rebuild it fast and to batch it: the compact
genotype bytes (:meth:`Genotype.to_bytes`), the number of graph nodes and the number of parameters, about 50
bytes per net. Nets of a split are grouped in shards of ``shard_size`` consecutive indices, one file each::

    <root>/<split>-<shard:05d>.shard      header (magic, JSON) + payload, with the payload's SHA-256
    <root>/manifest.json                  summary rebuilt from the shard files present (informative)

Shard files are written to a temporary name and moved into place with ``os.replace``, so a shard either exists
complete or not at all; an interrupted build resumes by skipping the valid shards already there; shards built by
different processes or machines (``shard=(k, n)``) are merged by copying the files into one folder. Reading a
truncated or corrupt shard raises :class:`ShardError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import struct
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch_geometric.data import Batch
from torch_geometric.data import Dataset as PygDataset

from .data import ArchGraph
from .genotype import Genotype
from .network import Network, count_params, num_graph_nodes, num_params, plan_network
from .sampler import BASE_WIDTH, SPLITS, get_genotype, get_net
from .width_policy import WIDTH_POLICIES, net_size

_MAGIC = b"ARCHSHD1"
_PREFIX = struct.Struct("<8sI")  # magic, header length
_FORMAT_VERSION = 1
#: Default number of consecutive nets per shard file.
SHARD_SIZE: int = 10_000
_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<shard>\d{5})\.shard$")


class ShardError(RuntimeError):
    """A shard file is truncated, corrupt, or not a shard; the message names the file and what to do."""


def shard_path(root: str, split: str, shard: int) -> str:
    """Path of shard ``shard`` of ``split`` under ``root``."""
    return os.path.join(root, f"{split}-{shard:05d}.shard")


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{os.getpid()}", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
        ShardError: if the file is not a shard, or is truncated.
    """
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) != _PREFIX.size:
                raise ShardError(f"shard {path} is truncated ({len(prefix)} bytes); delete it and rerun "
                                 f"build_split to rebuild it")
            magic, header_len = _PREFIX.unpack(prefix)
            if magic != _MAGIC:
                raise ShardError(f"{path} is not an archspace shard (bad magic {magic!r}); delete or move it")
            raw = f.read(header_len)
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"shard {path} has a corrupt header ({e}); delete it and rerun build_split") from e
    size = os.path.getsize(path)
    expected = _PREFIX.size + header_len + int(header.get("payload_bytes", -1))
    if size != expected:
        raise ShardError(f"shard {path} is truncated or padded: {size} bytes on disk, header says {expected}; "
                         f"delete it and rerun build_split to rebuild it")
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
        raise ShardError(f"shard {path} is corrupt (SHA-256 mismatch); delete it and rerun build_split")
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
    _atomic_write(path, data)
    return shard, path


def _shard_is_valid(path: str, split: str, start: int, count: int) -> bool:
    """True if ``path`` is a complete, uncorrupted shard of ``split`` covering ``[start, start + count)``."""
    if not os.path.exists(path):
        return False
    try:
        header = read_shard(path)[0]
    except ShardError:
        return False
    return header["split"] == split and header["start"] == start and header["count"] == count


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
        ValueError: for an unknown or predefined split, or bad ``num``/``shard``/``workers``.
    """
    if split not in SPLITS or split == "predefined":
        raise ValueError(f"split must be one of {sorted(set(SPLITS) - {'predefined'})}, got {split!r} "
                         f"(predefined nets are built on the fly by ArchDataset)")
    num = SPLITS[split] if num is None else num
    if not 0 < num <= SPLITS[split]:
        raise ValueError(f"num must be in [1, {SPLITS[split]}] for split {split!r}, got {num}")
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
    if workers < 1 or shard_size < 1:
        raise ValueError(f"workers and shard_size must be positive, got {workers}, {shard_size}")
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
        pool = ctx.Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(_build_shard, jobs)
    try:
        for _, path in results:
            written.append(path)
            if bar is not None:
                bar.update()
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
    _atomic_write(os.path.join(root, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


class ShardStore:
    """All shards of one split loaded in memory (about 50 bytes per net), verified on load.

    Args:
        root: dataset folder.
        split: split name.
        num: number of nets needed (from index 0); default all contiguous nets present.

    Raises:
        FileNotFoundError: if there is no shard of ``split`` in ``root``.
        ShardError: if a shard is corrupt or truncated, or shards needed for ``num`` are missing.
    """

    def __init__(self, root: str, split: str, num: int | None = None):
        found = [(int(m["shard"]), n) for n in os.listdir(root) if (m := _SHARD_RE.match(n)) and m["split"] == split]
        if not found:
            raise FileNotFoundError(f"no shards of split {split!r} in {root}; build them with "
                                    f"archspace.dataset.build_split({split!r}, {root!r})")
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
                                 f"next (shards missing, or built with different shard sizes); run build_split to "
                                 f"build the missing shards, or remove the stray files")
            header, offsets, n_nodes, n_params, blob = read_shard(path)
            starts.append(start)
            self._offsets.append(offsets)
            self._blobs.append(blob)
            nodes.append(n_nodes)
            params.append(n_params)
            expected = start + header["count"]
        if num is not None and expected < num:
            raise ShardError(f"split {split!r} in {root} holds nets 0..{expected - 1} but {num} were requested; "
                             f"run build_split({split!r}, {root!r}, num={num})")
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


def num_params_at(genotype: Genotype, image_size: int = 32) -> int:
    """Parameters of a net at the base width with 10 classes (what GHN-2's width policy looks at)."""
    return num_params(genotype, 10, image_size, BASE_WIDTH)


class ArchDataset(PygDataset):
    """A DeepNets-1M split as a PyG dataset (Knyazev et al., NeurIPS 2021, Sec. 3): item ``i`` is the
    :class:`~archspace.data.ArchGraph` of net ``i`` (with ``net_index = i``), built by
    :func:`archspace.graph.to_graph` on the network.

    Args:
        root: folder of shards built by :func:`build_split`; ``None`` samples the nets on the fly.
        split: a key of :data:`archspace.sampler.SPLITS`.
        num: use the first ``num`` nets (default: all of the split, or all stored).
        num_classes: classifier outputs of the built nets.
        image_size: input size of the built nets (32 or 224).
        ve_cutoff: virtual-edge cutoff ``s`` of the graphs (GHN-2: 50).
        width_range: ``(lo, hi)``: each net's width is drawn from it (deterministically from ``seed`` and the
            index); ``None`` keeps the genotype's width.
        width_policy: how widths are drawn from ``width_range`` (:mod:`archspace.width_policy`): ``'uniform'``, or
            ``'ghn2'``, GHN-2's training distribution (large nets narrow, a drawn classifier size).
        seed: seed of the width draws.

    Raises:
        ValueError: for an unknown split or a bad ``num``/``width_range``/``width_policy``.
    """

    def __init__(self, root: str | None = None, split: str = "train", num: int | None = None, num_classes: int = 10,
                 image_size: int = 32, ve_cutoff: int = 50, width_range: tuple[int, int] | None = None,
                 width_policy: str = "uniform", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if num is not None and not 0 < num <= SPLITS[split]:
            raise ValueError(f"num must be in [1, {SPLITS[split]}] for split {split!r}, got {num}")
        if width_range is not None and not (len(width_range) == 2 and 2 <= width_range[0] <= width_range[1]):
            raise ValueError(f"width_range must be (lo, hi) with 2 <= lo <= hi, got {width_range!r}")
        if width_policy not in WIDTH_POLICIES:
            raise ValueError(f"unknown width_policy {width_policy!r}; expected one of {WIDTH_POLICIES}")
        super().__init__(root=None)
        self.data_root = root
        self.split = split
        self._num_classes = num_classes
        self.image_size = image_size
        self.ve_cutoff = ve_cutoff
        self.width_range = tuple(width_range) if width_range is not None else None
        self.width_policy = width_policy
        self.seed = seed
        if root is not None:
            if split == "predefined":
                raise ValueError("the predefined split is built on the fly; use root=None")
            self._store: ShardStore | None = ShardStore(root, split, num)
            self._num = len(self._store)
        else:
            self._store = None
            self._num = SPLITS[split] if num is None else num
        self._nodes_cache: dict[int, int] = {}

    @property
    def num_classes(self) -> int:
        """Classifier outputs of the built nets."""
        return self._num_classes

    def len(self) -> int:
        return self._num

    def genotype(self, index: int) -> Genotype | None:
        """The genotype of net ``index`` (``None`` for the predefined ResNet-50)."""
        if self._store is not None:
            return self._store.genotype(index)
        if self.split == "predefined" and index == 0:
            return None
        return get_genotype(self.split, index)

    def net_size(self, index: int, genotype: Genotype | None = None) -> tuple[int | None, int | None]:
        """``(width, fc_dim)`` of net ``index`` under the dataset's width policy; ``None``: the genotype's own.
        ``genotype``: net ``index``'s, where the caller has it already."""
        if self.width_range is None:
            return None, None
        if self.width_policy == "ghn2" and genotype is None:
            genotype = self.genotype(index)
        base = num_params_at(genotype, self.image_size) if self.width_policy == "ghn2" and genotype else None
        return net_size(self.width_policy, self.width_range, self.seed, index, genotype, base)

    def width(self, index: int) -> int | None:
        """Width used for net ``index`` (``None``: the genotype's own)."""
        return self.net_size(index)[0]

    def build_model(self, index: int, width: int | None = None) -> nn.Module:
        """Build net ``index`` (randomly initialised, on the CPU) at ``width``, or at the dataset's size for it
        (:meth:`net_size`: its width and, under the ``ghn2`` policy, its classifier size)."""
        if not 0 <= index < self._num:
            raise IndexError(f"index {index} out of range for {self._num} nets")
        genotype = self.genotype(index)
        fc_dim = None
        if width is None:
            width, fc_dim = self.net_size(index, genotype)
        if genotype is None:
            return get_net(self.split, index, self._num_classes, self.image_size, width)
        if fc_dim is not None and genotype.fc_layers > 1:
            genotype = genotype.replace(fc_dim=fc_dim)
        return Network(genotype, self._num_classes, self.image_size, width)

    def num_nodes_of(self, index: int) -> int:
        """Graph nodes of net ``index``, from the stored metadata or computed without building the graph."""
        if self._store is not None:
            return int(self._store.num_nodes[index])
        if index not in self._nodes_cache:
            genotype = self.genotype(index)
            if genotype is None:
                self._nodes_cache[index] = int(self.get(index).num_nodes)
            else:
                self._nodes_cache[index] = num_graph_nodes(plan_network(genotype, self._num_classes,
                                                                        self.image_size))
        return self._nodes_cache[index]

    def get_pair(self, index: int) -> tuple[ArchGraph, nn.Module]:
        """The graph of net ``index`` and the model it describes."""
        from .graph import to_graph

        model = self.build_model(index)
        graph = to_graph(model, (1, 3, self.image_size, self.image_size), ve_cutoff=self.ve_cutoff)
        graph.net_index = torch.tensor([index])
        return graph, model

    def get(self, idx: int) -> ArchGraph:
        return self.get_pair(idx)[0]


class MetaBatchSampler(torch.utils.data.Sampler):
    """Groups net indices into meta-batches of at most ``meta_batch_size`` nets and ``max_nodes`` graph nodes
    (GHN-2 training, Knyazev et al., 2021, Sec. 4: the reference skips meta-batches over 2,200 nodes; here a
    meta-batch that would overflow is closed early instead, and only a single net over the cap is skipped).

    Args:
        num_nodes: graph nodes of each net.
        meta_batch_size: nets per meta-batch.
        max_nodes: node cap per meta-batch.
        shuffle: shuffle the nets each epoch (seeded by ``seed`` and :meth:`set_epoch`).
        seed: shuffle seed.

    Raises:
        ValueError: for a non-positive ``meta_batch_size`` or ``max_nodes``.
    """

    def __init__(self, num_nodes: Sequence[int], meta_batch_size: int = 8, max_nodes: int = 2200,
                 shuffle: bool = True, seed: int = 0):
        if meta_batch_size < 1 or max_nodes < 1:
            raise ValueError(f"meta_batch_size and max_nodes must be positive, got {meta_batch_size}, {max_nodes}")
        self.num_nodes = np.asarray(num_nodes)
        self.meta_batch_size = meta_batch_size
        self.max_nodes = max_nodes
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use a different shuffle for ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.num_nodes)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        batch: list[int] = []
        nodes = 0
        for i in order.tolist():
            k = int(self.num_nodes[i])
            if k > self.max_nodes:
                continue  # a single net over the cap can never be batched
            if batch and (len(batch) == self.meta_batch_size or nodes + k > self.max_nodes):
                yield batch
                batch, nodes = [], 0
            batch.append(i)
            nodes += k
        if batch:
            yield batch

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Pairs(torch.utils.data.Dataset):
    """``dataset.get_pair`` as a map-style torch dataset (for ``DataLoader`` workers)."""

    def __init__(self, dataset: ArchDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[ArchGraph, nn.Module]:
        return self.dataset.get_pair(index)


def collate_meta_batch(items: list[tuple[ArchGraph, nn.Module]]) -> tuple[Batch, list[nn.Module]]:
    """Collate ``(graph, model)`` pairs into a PyG ``Batch`` and the list of models.

    ``ArchGraph`` does not offset ``net_index`` when batching, so ``batch.net_index`` lists the nets in order.

    Args:
        items: pairs from :meth:`ArchDataset.get_pair`.

    Returns:
        ``(batch, models)``; ``batch.net_index`` is ``(B,)``.
    """
    graphs = [g for g, _ in items]
    batch = Batch.from_data_list(graphs)  # batch.net_index: (B,)
    return batch, [m for _, m in items]


def meta_batches(dataset: ArchDataset, meta_batch_size: int = 8, max_nodes: int = 2200, shuffle: bool = True,
                 seed: int = 0, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Iterate over a dataset in node-capped meta-batches of ``(Batch of ArchGraphs, list of models)``.

    Node counts come from the stored metadata; with ``root=None`` every net is sampled once up front to count its
    nodes analytically (about 1 ms per net), so prefer a built split for the full training set.

    Args:
        dataset: an :class:`ArchDataset`.
        meta_batch_size: nets per meta-batch (GHN-2: 8).
        max_nodes: node cap per meta-batch (GHN-2: 2,200).
        shuffle: shuffle the nets (call ``loader.batch_sampler.set_epoch(e)`` for a new order each epoch).
        seed: shuffle seed.
        num_workers: ``DataLoader`` worker processes building graphs and models in parallel.

    Returns:
        A ``DataLoader`` yielding ``(Batch, list[nn.Module])``.
    """
    num_nodes = [dataset.num_nodes_of(i) for i in range(len(dataset))]
    sampler = MetaBatchSampler(num_nodes, meta_batch_size, max_nodes, shuffle, seed)
    return torch.utils.data.DataLoader(_Pairs(dataset), batch_sampler=sampler, collate_fn=collate_meta_batch,
                                       num_workers=num_workers, persistent_workers=num_workers > 0)
