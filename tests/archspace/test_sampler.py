"""Tests of archspace.sampler: determinism, split disjointness, variants, the parameter limit, predefined nets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from archspace.errors import UsageError
from archspace.genotype import DARTS_V2
from archspace.network import Network, num_params
from archspace.sampler import (
    MAX_PARAMS,
    NUM_BUCKETS,
    SPLIT_BUCKETS,
    SPLITS,
    bucket_of,
    get_genotype,
    get_net,
    split_of_bucket,
    structure_hash,
)

pytestmark = pytest.mark.usefixtures("one_thread")


SAMPLED = [s for s in SPLITS if s != "predefined"]


def hashes(split: str, indices) -> list[str]:
    return [get_genotype(split, i).canonical_hash() for i in indices]


def test_split_sizes():
    assert SPLITS == {"train": 1_000_000, "val": 500, "test": 500, "wide": 100, "deep": 100, "dense": 100,
                      "bnfree": 100, "predefined": 3}


def test_deterministic_in_process():
    for split in SAMPLED:
        assert hashes(split, range(3)) == hashes(split, range(3))
    # Index i does not depend on which indices were drawn before it.
    assert get_genotype("train", 7) == get_genotype("train", 7)
    assert len(set(hashes("train", range(20)))) == 20


def test_deterministic_across_processes():
    code = ("import json; from archspace.sampler import get_genotype; "
            "print(json.dumps({s: [get_genotype(s, i).canonical_hash() for i in (0, 5, 99)] "
            "for s in ('train', 'val', 'deep')}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    remote = json.loads(out.strip().splitlines()[-1])
    assert remote == {s: hashes(s, (0, 5, 99)) for s in ("train", "val", "deep")}


def test_pinned_nets():
    # Fixed values: a change means every stored dataset and every reported result refers to other nets.
    assert get_genotype("train", 0).canonical_hash() == "252d1387600bde1e1fad537db690e92709277acf"
    assert get_genotype("val", 0).canonical_hash() == "5254f1e02cc1bdc231676fd876b0e2f662dec040"


def test_bucket_rule():
    assert sorted(SPLIT_BUCKETS.values()) == list(range(len(SPLIT_BUCKETS)))
    assert split_of_bucket(NUM_BUCKETS - 1) == "train"
    for split in SAMPLED:
        for i in range(5):
            assert split_of_bucket(bucket_of(get_genotype(split, i))) == split


def test_splits_disjoint():
    seen: dict[str, str] = {}
    sizes = {"train": 500, "val": 200, "test": 200, "wide": 100, "deep": 100, "dense": 100, "bnfree": 100}
    for split, n in sizes.items():
        for i in range(n):
            g = get_genotype(split, i)
            assert split_of_bucket(bucket_of(g)) == split
            h = structure_hash(g)
            assert seen.setdefault(h, split) == split, f"{split}[{i}] also in {seen[h]}"
    # Widening never creates or breaks an overlap: the structure hash ignores the width.
    g = get_genotype("wide", 0)
    assert g.C == 128 and structure_hash(g) == structure_hash(g.replace(C=32))


def test_variants():
    for i in range(20):
        t = get_genotype("train", i)
        assert 4 <= t.n_cells <= 18 and 1 <= t.steps <= 4 and t.C == 32
        assert 10 <= get_genotype("deep", i).n_cells <= 36
        assert 2 <= get_genotype("dense", i).steps <= 10
        assert get_genotype("bnfree", i).norm is None
        assert get_genotype("wide", i).C == 128
    assert any(get_genotype("train", i).norm is None for i in range(200))
    assert any(get_genotype("train", i).vgg_head for i in range(200))
    assert any(get_genotype("train", i).is_vit for i in range(200))


def test_parameter_limit():
    for split in ("train", "val", "bnfree", "wide"):
        for i in range(40):
            g = get_genotype(split, i)
            assert num_params(g, width=32) <= 10**7
    for split in ("deep", "dense"):
        for i in range(10):
            assert num_params(get_genotype(split, i), width=32) <= MAX_PARAMS[split]


def test_analytic_count_matches_built_net():
    for i in range(15):
        g = get_genotype("train", i)
        with torch.device("meta"):
            model = Network(g)
        assert sum(p.numel() for p in model.parameters()) == num_params(g), i


def test_predefined():
    assert get_genotype("predefined", 2) == DARTS_V2
    assert get_genotype("predefined", 2).C == 36 and DARTS_V2.n_cells == 20
    with pytest.raises(ValueError, match="ResNet-50"):
        get_genotype("predefined", 0)
    with torch.device("meta"):
        resnet = get_net("predefined", 0)
        vit = get_net("predefined", 1)
        darts = get_net("predefined", 2)
        assert resnet(torch.empty(2, 3, 32, 32)).shape == (2, 10)
        assert vit(torch.empty(2, 3, 32, 32)).shape == (2, 10)
    assert type(resnet).__name__ == "ResNet" and resnet.conv1.kernel_size == (3, 3)
    assert any(type(m).__name__ == "SelfAttention2d" for m in vit.modules())
    assert any(type(m).__name__ == "PosEnc" for m in vit.modules())
    assert 3.2e6 < sum(p.numel() for p in darts.parameters()) < 3.5e6  # DARTS-V2 on CIFAR-10: 3.3M


def test_bad_input():
    with pytest.raises(UsageError, match="unknown DeepNets-1M split 'trian'; did you mean train?"):
        get_genotype("trian", 0)
    with pytest.raises(IndexError, match="out of range"):
        get_genotype("val", 500)
    with pytest.raises(IndexError):
        get_net("predefined", 3)
