"""Tests of archspace.dataset.ArchDataset: stored and on-the-fly nets agree, width draws, errors for bad input."""

from __future__ import annotations

import pytest
import torch

from archspace.dataset import ArchDataset
from archspace.errors import UsageError
from archspace.network import num_graph_nodes
from archspace.sampler import get_genotype
from archspace.shards import ShardError, build_split

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stored_and_sampled_nets_are_the_same(tmp_path):
    build_split("val", str(tmp_path), num=12, shard_size=5)
    stored = ArchDataset(str(tmp_path), "val", num=10, width_range=(8, 16))
    sampled = ArchDataset(None, "val", num=10, width_range=(8, 16))
    assert len(stored) == len(sampled) == 10
    for i in range(10):
        assert stored.genotype(i) == sampled.genotype(i) == get_genotype("val", i)
        assert stored.num_nodes_of(i) == sampled.num_nodes_of(i)
    graph, model = stored.get_pair(3)
    assert graph.num_nodes == stored.num_nodes_of(3) and graph.net_index.tolist() == [3]
    assert model.genotype == get_genotype("val", 3) and model.plan.C == stored.width(3)


def test_missing_root_says_how_to_build_it(tmp_path):
    root = str(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=rf"archspace.root {root} does not exist; build it with `archspace build "
                                         rf"--split val --out {root}` or set archspace.root=null"):
        ArchDataset(root, "val")
    with pytest.raises(ShardError, match="no shards of split 'val'"):
        ArchDataset(str(tmp_path), "val")  # exists, but holds no shards


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="unknown split 'trian'; did you mean train"):
        ArchDataset(split="trian")
    with pytest.raises(UsageError, match="num must be in"):
        ArchDataset(split="val", num=0)
    with pytest.raises(UsageError, match="width_range"):
        ArchDataset(split="val", width_range=(0, 8))
    with pytest.raises(UsageError, match="unknown width_policy 'ghn'; did you mean ghn2"):
        ArchDataset(split="val", width_range=(8, 16), width_policy="ghn")
    with pytest.raises(UsageError, match="predefined split is built on the fly"):
        ArchDataset("somewhere", split="predefined")


def test_width_draws_are_deterministic():
    a = ArchDataset(split="train", num=50, width_range=(32, 128), seed=3)
    b = ArchDataset(split="train", num=50, width_range=(32, 128), seed=3)
    widths = [a.width(i) for i in range(50)]
    assert widths == [b.width(i) for i in range(50)]
    assert all(32 <= w <= 128 for w in widths) and len(set(widths)) > 10
    assert widths != [ArchDataset(split="train", num=50, width_range=(32, 128), seed=4).width(i) for i in range(50)]
    assert a.build_model(7).plan.C == widths[7]


def test_predefined_on_the_fly():
    ds = ArchDataset(split="predefined")
    assert len(ds) == 3 and ds.genotype(0) is None
    assert ds.num_nodes_of(2) == num_graph_nodes(get_genotype("predefined", 2))


def test_bnfree_fraction_drops_batchnorm_from_a_deterministic_share(tmp_path):
    plain = ArchDataset(split="train", num=200, width_range=(8, 32), width_policy="loguniform", seed=1)
    mixed = ArchDataset(split="train", num=200, width_range=(8, 32), width_policy="loguniform", seed=1,
                        bnfree_fraction=0.3)
    dropped = [i for i in range(200) if plain.genotype(i).norm == "bn" and mixed.genotype(i).norm is None]
    assert 40 <= len(dropped) <= 80  # about 30% of about 195 nets with BatchNorm
    for i in range(200):  # nothing else changes: the same cells, and the same width draws
        assert mixed.genotype(i).replace(norm=plain.genotype(i).norm) == plain.genotype(i)
        assert mixed.width(i) == plain.width(i)
    i = dropped[0]
    model = mixed.build_model(i)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    graph, _ = mixed.get_pair(i)
    assert graph.num_nodes == mixed.num_nodes_of(i) < plain.num_nodes_of(i)
    again = ArchDataset(split="train", num=200, width_range=(8, 32), width_policy="loguniform", seed=1,
                        bnfree_fraction=0.3)
    assert [again.genotype(j).norm for j in range(200)] == [mixed.genotype(j).norm for j in range(200)]
    # the nets read from shards are dropped the same way, and their stored node counts are not used for them
    build_split("train", str(tmp_path), num=30, shard_size=10)
    stored = ArchDataset(str(tmp_path), "train", num=30, width_range=(8, 32), seed=1, bnfree_fraction=0.3)
    for j in range(30):
        assert stored.genotype(j) == mixed.genotype(j) and stored.num_nodes_of(j) == mixed.num_nodes_of(j)
    with pytest.raises(UsageError, match="bnfree_fraction must be between 0 and 1, got 1.5"):
        ArchDataset(split="train", bnfree_fraction=1.5)
