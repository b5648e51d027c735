"""Tests of archspace.meta_batch: the one meta-batching rule (draws per (seed, step), nets over max_net_nodes
redrawn, meta-batches over max_nodes skipped), the seeded pair cache and the DataLoader of meta-batches."""

from __future__ import annotations

import pytest
import torch

from archspace.dataset import ArchDataset
from archspace.errors import UsageError
from archspace.meta_batch import ArchPairs, MetaBatchSampler, meta_batches

pytestmark = pytest.mark.usefixtures("one_thread")


def nodes_of(i: int) -> int:
    """Made-up node counts: net i has 10 * (i + 1) nodes."""
    return 10 * (i + 1)


def test_draws_are_a_function_of_seed_and_step():
    a = MetaBatchSampler(100, nodes_of, meta_batch_size=4, seed=1)
    draws = [a.draw(s) for s in range(6)]
    # A fresh sampler drawing only step 5 (a resumed run, another rank) gets the same nets.
    assert MetaBatchSampler(100, nodes_of, meta_batch_size=4, seed=1).draw(5) == draws[5]
    assert len({tuple(d) for d in draws}) == 6  # steps differ
    assert MetaBatchSampler(100, nodes_of, meta_batch_size=4, seed=2).draw(5) != draws[5]
    assert all(len(d) == 4 and all(0 <= i < 100 for i in d) for d in draws)


def test_nets_over_max_net_nodes_are_redrawn():
    capped = MetaBatchSampler(100, nodes_of, meta_batch_size=4, max_net_nodes=300, seed=0)
    free = MetaBatchSampler(100, nodes_of, meta_batch_size=4, seed=0)
    for s in range(20):
        got = capped.draw(s)
        assert len(got) == 4 and all(nodes_of(i) <= 300 for i in got)
        # Redrawing keeps the draws under the cap in order: the uncapped draws of the step start the same way.
        under = [i for i in free.draw(s) if nodes_of(i) <= 300]
        assert got[:len(under)] == under
    with pytest.raises(UsageError, match="could not draw 4 nets with at most 5 graph nodes.*raise max_net_nodes"):
        MetaBatchSampler(100, nodes_of, meta_batch_size=4, max_net_nodes=5).draw(0)


def test_meta_batches_over_max_nodes_are_skipped():
    sampler = MetaBatchSampler(100, nodes_of, meta_batch_size=4, max_nodes=1500, seed=0, num_steps=40)
    draws = [sampler.draw(s) for s in range(40)]
    totals = [sum(nodes_of(i) for i in d) for d in draws]
    assert 0 < sum(t > 1500 for t in totals) < 40  # the cap matters on this pool, and not always
    assert list(sampler) == [d for d, t in zip(draws, totals) if t <= 1500]
    assert len(sampler) == sum(t <= 1500 for t in totals)
    assert [sampler.skipped(d) for d in draws] == [t > 1500 for t in totals]
    later = MetaBatchSampler(100, nodes_of, meta_batch_size=4, max_nodes=1500, seed=0, num_steps=10, start=30)
    assert list(later) == [d for d, t in zip(draws[30:], totals[30:]) if t <= 1500]
    assert not MetaBatchSampler(100, nodes_of, meta_batch_size=4, max_nodes=0).skipped(draws[0])  # 0: no cap


def test_bad_settings_are_usage_errors():
    for kwargs, message in ((dict(num_nets=0), "empty"), (dict(meta_batch_size=0), "meta_batch_size"),
                            (dict(max_nodes=-1), "max_nodes"), (dict(start=-1), "start")):
        with pytest.raises(UsageError, match=message):
            MetaBatchSampler(**dict(dict(num_nets=10, num_nodes=nodes_of), **kwargs))
    with pytest.raises(TypeError, match="endless"):
        len(MetaBatchSampler(10, nodes_of))


def test_pairs_are_built_under_a_fixed_seed_and_cached():
    ds = ArchDataset(split="train", num=10, width_range=(4, 4))
    params = [torch.cat([p.flatten() for p in ArchPairs(ds, seed=3)[2][1].parameters()]) for _ in range(2)]
    assert torch.equal(params[0], params[1])  # a rebuild equals the cached build
    other = torch.cat([p.flatten() for p in ArchPairs(ds, seed=4)[2][1].parameters()])
    assert not torch.equal(params[0], other)
    cached = ArchPairs(ds, seed=3, cache_size=2)
    first = cached[1]
    assert cached[1] is first
    _ = cached[2], cached[3]  # evicts net 1, the least recently used
    assert cached[1] is not first and len(cached) == 10


def test_meta_batches_are_the_samplers_with_their_graphs():
    ds = ArchDataset(split="train", num=10, width_range=(4, 4))
    sampler = MetaBatchSampler(len(ds), ds.num_nodes_of, meta_batch_size=3, max_nodes=400, seed=0, num_steps=6)
    expected = list(sampler)
    assert 0 < len(expected) < 6  # some steps skipped over max_nodes
    loader = meta_batches(ds, num_steps=6, meta_batch_size=3, max_nodes=400, seed=0)
    got = []
    for batch, models in loader:
        nets = batch.net_index.tolist()
        assert batch.num_graphs == len(models) == 3 and batch.num_nodes <= 400
        for k, i in enumerate(nets):
            assert int((batch.batch == k).sum()) == ds.num_nodes_of(i)  # (N,) node-to-graph map
            assert models[k].genotype == ds.genotype(i)
        got.append(nets)
    assert got == expected
