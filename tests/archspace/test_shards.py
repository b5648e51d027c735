"""Tests of archspace.shards: round trip, resume, corruption, merging of shard files."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from archspace.errors import UsageError
from archspace.network import num_graph_nodes, num_params
from archspace.sampler import get_genotype
from archspace.shards import ShardError, ShardStore, build_split, rebuild_manifest, shard_path


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
    assert len(ShardStore(str(tmp_path), "val", num=12)) == 12
    with pytest.raises(ShardError, match="holds nets 0..24 but 40 were requested"):
        ShardStore(str(tmp_path), "val", num=40)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_shard_that_cannot_be_written_is_one_line_and_the_rest_resume(tmp_path, monkeypatch, workers):
    import archspace.shards as shards

    real = shards.net_record

    def disk_full(split, index):  # the second shard fails (forked workers inherit the patch)
        if index == 10:
            raise OSError(28, "No space left on device")
        return real(split, index)

    monkeypatch.setattr(shards, "net_record", disk_full)
    with pytest.raises(UsageError, match="writing the shards of val to .* failed .*No space left.*run the same build"):
        build_split("val", str(tmp_path), num=40, shard_size=10, workers=workers)
    monkeypatch.setattr(shards, "net_record", real)
    again = build_split("val", str(tmp_path), num=40, shard_size=10, workers=workers)
    assert shard_path(str(tmp_path), "val", 1) in again["written"] and again["num_nets"] == 40


def test_a_smaller_build_keeps_the_larger_builds_shards(tmp_path):
    root = str(tmp_path)
    build_split("val", root, num=30, shard_size=10)
    again = build_split("val", root, num=15, shard_size=10)  # rewrote shard 1 as a partial one, stranding shard 2
    assert again["written"] == [] and again["kept"] == 2 and again["num_nets"] == 30
    assert ShardStore(root, "val", num=15).genotype(14) == get_genotype("val", 14)
    assert ShardStore(root, "val").genotype(29) == get_genotype("val", 29)


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
    with pytest.raises(ShardError, match="test-00001.shard is truncated.*archspace build"):
        ShardStore(root, "test")


def test_corrupt_shard_error_names_file(tmp_path):
    root = str(tmp_path)
    build_split("test", root, num=20, shard_size=10)
    path = shard_path(root, "test", 0)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ShardError, match="test-00000.shard is corrupt"):
        ShardStore(root, "test")
    os.remove(path)
    with pytest.raises(ShardError, match="test-00001.shard starts at net 10 but net 0"):
        ShardStore(root, "test")
    open(path, "wb").write(b"not a shard at all")
    with pytest.raises(ShardError, match="test-00000.shard is not an archspace shard"):
        ShardStore(root, "test")


def test_shard_errors_are_usage_errors(tmp_path):
    # Reported to users as one line by every entry point's error boundary.
    assert issubclass(ShardError, UsageError)
    with pytest.raises(ShardError, match=r"no shards of split 'val' in .*archspace build --split val --out"):
        ShardStore(str(tmp_path), "val")


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
    with pytest.raises(UsageError, match="predefined"):
        build_split("predefined", str(tmp_path))
    with pytest.raises(UsageError, match="shard must be"):
        build_split("val", str(tmp_path), num=5, shard=(2, 2))
    with pytest.raises(UsageError, match="num must be in"):
        build_split("val", str(tmp_path), num=0)
    assert os.listdir(tmp_path) == []  # refused before writing anything
