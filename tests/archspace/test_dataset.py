"""Tests of archspace.dataset: shard round trip, resume, corruption, merging, meta-batches."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from archspace.dataset import (
    ArchDataset,
    MetaBatchSampler,
    ShardError,
    ShardStore,
    build_split,
    meta_batches,
    rebuild_manifest,
    shard_path,
)
from archspace.network import num_graph_nodes, num_params
from archspace.sampler import get_genotype


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny CPU ops are much faster single-threaded on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def file_ids(paths) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each file: changes whenever a file is rewritten."""
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


def test_round_trip(tmp_path):
    summary = build_split("val", str(tmp_path), num=25, shard_size=10)
    written = summary["written"]
    assert summary["kept"] == 0 and summary["num_nets"] == 25
    assert [os.path.basename(p) for p in written] == ["val-00000.shard", "val-00001.shard", "val-00002.shard"]
    store = ShardStore(str(tmp_path), "val")
    assert len(store) == 25
    for i in range(25):
        g = get_genotype("val", i)
        assert store.genotype(i) == g
        assert store.num_nodes[i] == num_graph_nodes(g)
        assert store.num_params[i] == num_params(g)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["val"]["num_nets"] == 25 and len(manifest["val"]["shards"]) == 3
    ds = ArchDataset(str(tmp_path), "val", num=12)
    assert len(ds) == 12 and ds.genotype(11) == get_genotype("val", 11)
    with pytest.raises(ShardError, match="requested"):
        ShardStore(str(tmp_path), "val", num=40)


def test_resume_keeps_finished_shards(tmp_path):
    root = str(tmp_path)
    paths = build_split("train", root, num=40, shard_size=10)["written"]
    before = file_ids(paths)
    os.remove(paths[1])  # an interrupted build: this shard never landed
    with open(paths[2], "r+b") as f:  # ... and this one was cut short
        f.truncate(os.path.getsize(paths[2]) - 7)
    (tmp_path / ".tmp-abc-123").write_bytes(b"half a shard")  # a temp file left by a killed worker
    rebuilt = build_split("train", root, num=40, shard_size=10)
    assert rebuilt["written"] == [paths[1], paths[2]] and rebuilt["kept"] == 2
    after = file_ids(paths)
    assert after[paths[0]] == before[paths[0]] and after[paths[3]] == before[paths[3]]
    assert build_split("train", root, num=40, shard_size=10)["written"] == []
    assert ShardStore(root, "train").genotype(25) == get_genotype("train", 25)


def test_truncated_shard_error_names_file(tmp_path):
    root = str(tmp_path)
    build_split("test", root, num=20, shard_size=10)
    path = shard_path(root, "test", 1)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ShardError, match="test-00001.shard.*truncated"):
        ShardStore(root, "test")


def test_corrupt_shard_error_names_file(tmp_path):
    root = str(tmp_path)
    build_split("test", root, num=20, shard_size=10)
    path = shard_path(root, "test", 0)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ShardError, match="test-00000.shard.*corrupt"):
        ShardStore(root, "test")
    with pytest.raises(ShardError, match="test-00001.shard starts at net 10 but net 0"):
        os.remove(path)
        ShardStore(root, "test")


def test_shards_from_two_machines_merge(tmp_path):
    a, b, whole = (str(tmp_path / n) for n in ("a", "b", "whole"))
    build_split("train", a, num=30, shard_size=10, shard=(0, 2))
    build_split("train", b, num=30, shard_size=10, shard=(1, 2))
    assert sorted(os.listdir(a)) == ["manifest.json", "train-00000.shard", "train-00002.shard"]
    for name in os.listdir(b):
        if name.endswith(".shard"):
            shutil.copy(os.path.join(b, name), a)
    assert rebuild_manifest(a)["train"]["num_nets"] == 30
    build_split("train", whole, num=30, shard_size=10, workers=2)
    for k in range(3):
        assert open(shard_path(a, "train", k), "rb").read() == open(shard_path(whole, "train", k), "rb").read()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="predefined"):
        build_split("predefined", str(tmp_path))
    with pytest.raises(ValueError, match="shard"):
        build_split("val", str(tmp_path), num=5, shard=(2, 2))
    with pytest.raises(FileNotFoundError, match="build_split"):
        ArchDataset(str(tmp_path), "val")


def test_width_draws_are_deterministic():
    a = ArchDataset(split="train", num=50, width_range=(32, 128), seed=3)
    b = ArchDataset(split="train", num=50, width_range=(32, 128), seed=3)
    widths = [a.width(i) for i in range(50)]
    assert widths == [b.width(i) for i in range(50)]
    assert all(32 <= w <= 128 for w in widths) and len(set(widths)) > 10
    assert widths != [ArchDataset(split="train", num=50, width_range=(32, 128), seed=4).width(i) for i in range(50)]


def test_meta_batch_sampler_respects_cap():
    rng = np.random.default_rng(0)
    nodes = rng.integers(20, 700, size=200)
    nodes[[3, 50]] = 5000  # too large to ever fit
    sampler = MetaBatchSampler(nodes, meta_batch_size=8, max_nodes=2200, seed=1)
    batches = list(sampler)
    assert all(len(b) <= 8 and nodes[b].sum() <= 2200 for b in batches)
    flat = sorted(i for b in batches for i in b)
    assert flat == [i for i in range(200) if i not in (3, 50)]
    assert batches == list(sampler)
    sampler.set_epoch(1)
    assert batches != list(sampler)


def test_meta_batches_of_graphs():
    pytest.importorskip("archspace.graph")
    ds = ArchDataset(split="train", num=10, width_range=(8, 16))
    loader = meta_batches(ds, meta_batch_size=4, max_nodes=500, shuffle=True, seed=0)
    seen = []
    for batch, models in loader:
        assert batch.num_nodes <= 500 and batch.num_graphs == len(models) <= 4
        for k, i in enumerate(batch.net_index.tolist()):
            assert int((batch.batch == k).sum()) == ds.num_nodes_of(i)
            assert models[k].genotype == ds.genotype(i)
        seen += batch.net_index.tolist()
    assert sorted(seen) == [i for i in range(10) if ds.num_nodes_of(i) <= 500]


def test_predefined_on_the_fly():
    ds = ArchDataset(split="predefined")
    assert len(ds) == 3 and ds.genotype(0) is None
    assert ds.num_nodes_of(2) == num_graph_nodes(get_genotype("predefined", 2))
