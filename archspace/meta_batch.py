"""Meta-batches of architectures for GHN training (Knyazev et al., NeurIPS 2021, Sec. 4): which nets each step
trains on, and their graphs and modules.

This is the project's one meta-batching rule, used by ``train.loop.Trainer`` and by :func:`meta_batches`:

- the nets of step ``t`` are drawn uniformly, with replacement, from a generator seeded by ``(seed, t)``: a pure
  function of ``(seed, step)``, so a resumed run, or the ranks of a data-parallel one, draw exactly the nets of an
  uninterrupted single-process run, and step ``t`` can be drawn without drawing the steps before it;
- ``max_net_nodes`` caps each net: a drawn net with more graph nodes is redrawn (a curriculum of small nets; no
  step is lost);
- ``max_nodes`` caps the meta-batch: one with more graph nodes in total is skipped, as the reference training
  script does with 2,200 nodes (``experiments/train_ghn.py``); its step trains nothing.

Node counts come from :meth:`ArchDataset.num_nodes_of` (stored metadata, or computed analytically in about 1 ms
per net), so a meta-batch is drawn and checked against the caps without building any graph.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
from torch_geometric.data import Batch

from .data import ArchGraph
from .dataset import ArchDataset
from .errors import UsageError
from .seeding import mix_seed

#: Draws tried per net of a meta-batch before ``max_net_nodes`` is declared too small.
_DRAWS_PER_NET = 1000


class MetaBatchSampler(torch.utils.data.Sampler):
    """The net indices of each training step's meta-batch (see the module docstring for the rule).

    Args:
        num_nets: nets to draw from (indices ``0 .. num_nets - 1``).
        num_nodes: graph nodes of net ``i`` (e.g. :meth:`ArchDataset.num_nodes_of`).
        meta_batch_size: nets per meta-batch (GHN-2: 8).
        max_nodes: a meta-batch with more graph nodes in total is skipped (GHN-2: 2,200); 0: no cap.
        max_net_nodes: a net with more graph nodes is redrawn; 0: no cap.
        seed: run seed.
        num_steps: steps iterated by ``iter(sampler)``; ``None``: endless.
        start: first step iterated (a resumed run starts at its checkpoint's step).

    Raises:
        UsageError: no nets, a non-positive ``meta_batch_size``, negative caps, steps or start.
    """

    def __init__(self, num_nets: int, num_nodes: Callable[[int], int], meta_batch_size: int = 8,
                 max_nodes: int = 2200, max_net_nodes: int = 0, seed: int = 0, num_steps: int | None = None,
                 start: int = 0):
        if num_nets < 1:
            raise UsageError("the architecture dataset is empty; choose archspace.num >= 1")
        if meta_batch_size < 1:
            raise UsageError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        if max_nodes < 0 or max_net_nodes < 0:
            raise UsageError(f"max_nodes and max_net_nodes must be >= 0 (0: no cap), got {max_nodes}, "
                             f"{max_net_nodes}")
        if start < 0 or (num_steps is not None and num_steps < 0):
            raise UsageError(f"start and num_steps must be >= 0, got {start}, {num_steps}")
        self.num_nets, self.num_nodes, self.meta_batch_size = num_nets, num_nodes, meta_batch_size
        self.max_nodes, self.max_net_nodes, self.seed = max_nodes, max_net_nodes, seed
        self.num_steps, self.start = num_steps, start

    def draw(self, step: int) -> list[int]:
        """The nets of ``step``, in order (a pure function of ``(seed, step)``; ``max_net_nodes`` applied).

        Raises:
            UsageError: ``max_net_nodes`` is so small that ``meta_batch_size`` nets under it were not found in
                1,000 draws per net.
        """
        g = torch.Generator().manual_seed(mix_seed(self.seed, 3, step))
        out: list[int] = []
        for _ in range(_DRAWS_PER_NET * self.meta_batch_size):
            i = int(torch.randint(0, self.num_nets, (1,), generator=g))
            if self.max_net_nodes and self.num_nodes(i) > self.max_net_nodes:
                continue
            out.append(i)
            if len(out) == self.meta_batch_size:
                return out
        raise UsageError(f"could not draw {self.meta_batch_size} nets with at most {self.max_net_nodes} graph nodes "
                         f"in {_DRAWS_PER_NET * self.meta_batch_size} draws; raise max_net_nodes")

    def total_nodes(self, indices: list[int]) -> int:
        """Graph nodes of the nets ``indices`` together."""
        return sum(int(self.num_nodes(i)) for i in indices)

    def skipped(self, indices: list[int]) -> bool:
        """Whether the meta-batch ``indices`` is over ``max_nodes`` and is skipped."""
        return bool(self.max_nodes) and self.total_nodes(indices) > self.max_nodes

    def __iter__(self) -> Iterator[list[int]]:
        """The meta-batches of steps ``start, start + 1, ...`` (``num_steps`` of them), skipped ones left out."""
        step = self.start
        while self.num_steps is None or step < self.start + self.num_steps:
            indices = self.draw(step)
            if not self.skipped(indices):
                yield indices
            step += 1

    def __len__(self) -> int:
        """Meta-batches ``iter`` yields (the steps not skipped).

        Raises:
            TypeError: for an endless sampler (``num_steps=None``).
        """
        if self.num_steps is None:
            raise TypeError("an endless MetaBatchSampler (num_steps=None) has no length")
        return sum(1 for _ in self)


class ArchPairs(torch.utils.data.Dataset):
    """``(graph, module)`` of each net of an :class:`ArchDataset`, built under a seed fixed by ``(seed, index)``,
    with a cache of the most recently used ones.

    The module's own initial parameters are never used in training (the GHN predicts them), only its structure and
    buffers; building it under a fixed seed makes a cache hit and a rebuild the same, so caching never changes
    results.

    Args:
        dataset: the nets.
        seed: run seed.
        cache_size: pairs kept in memory (0: none).
    """

    def __init__(self, dataset: ArchDataset, seed: int = 0, cache_size: int = 0):
        self.dataset, self.seed, self.cache_size = dataset, seed, cache_size
        self._cache: OrderedDict[int, tuple[ArchGraph, nn.Module]] = OrderedDict()

    def __len__(self) -> int:
        """Number of nets."""
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[ArchGraph, nn.Module]:
        """The graph and the module of net ``index`` (the module on the CPU)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, 5, index))
            item = self.dataset.get_pair(index)
        if self.cache_size > 0:
            self._cache[index] = item
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return item


def collate_meta_batch(items: list[tuple[ArchGraph, nn.Module]]) -> tuple[Batch, list[nn.Module]]:
    """Collate ``(graph, model)`` pairs into a PyG ``Batch`` and the list of models.

    ``ArchGraph`` does not offset ``net_index`` when batching, so ``batch.net_index`` lists the nets in order.

    Args:
        items: pairs from :class:`ArchPairs` (or :meth:`ArchDataset.get_pair`).

    Returns:
        ``(batch, models)``; ``batch.net_index`` is ``(B,)``.
    """
    batch = Batch.from_data_list([g for g, _ in items])  # batch.net_index: (B,)
    return batch, [m for _, m in items]


def meta_batches(dataset: ArchDataset, num_steps: int | None, meta_batch_size: int = 8, max_nodes: int = 2200,
                 max_net_nodes: int = 0, seed: int = 0, start: int = 0, cache_size: int = 0,
                 num_workers: int = 0) -> torch.utils.data.DataLoader:
    """The meta-batches of ``num_steps`` training steps as ``(Batch of ArchGraphs, list of models)``: the nets a
    ``train.loop.Trainer`` with the same ``seed`` and caps trains on at those steps (skipped steps left out).

    Args:
        dataset: an :class:`ArchDataset`.
        num_steps: steps to draw; ``None``: endless.
        meta_batch_size: nets per meta-batch (GHN-2: 8).
        max_nodes: a meta-batch with more graph nodes in total is skipped (GHN-2: 2,200); 0: no cap.
        max_net_nodes: a net with more graph nodes is redrawn; 0: no cap.
        seed: run seed.
        start: first step.
        cache_size: pairs kept in memory per process (see :class:`ArchPairs`).
        num_workers: ``DataLoader`` worker processes building graphs and models in parallel.

    Returns:
        A ``DataLoader`` yielding ``(Batch, list[nn.Module])``.

    Raises:
        UsageError: bad sizes or caps (see :class:`MetaBatchSampler`).
    """
    sampler = MetaBatchSampler(len(dataset), dataset.num_nodes_of, meta_batch_size, max_nodes, max_net_nodes, seed,
                               num_steps, start)
    return torch.utils.data.DataLoader(ArchPairs(dataset, seed, cache_size), batch_sampler=sampler,
                                       collate_fn=collate_meta_batch, num_workers=num_workers,
                                       persistent_workers=num_workers > 0)
