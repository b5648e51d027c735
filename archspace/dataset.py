"""A DeepNets-1M split as a PyG dataset: the graph and the module of every net, read from shards or sampled.

Nets come from a folder of shards built by ``archspace build`` (:mod:`archspace.shards`) or are sampled on the fly
(``root=None``); either way net ``i`` of a split is the same network. Meta-batches of them are drawn by
:mod:`archspace.meta_batch`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
from torch_geometric.data import Dataset as PygDataset

from .data import ArchGraph
from .errors import UsageError, suggest
from .genotype import Genotype
from .graph import to_graph
from .network import Network, num_graph_nodes, num_params, plan_network
from .sampler import BASE_WIDTH, SPLITS, get_genotype, get_net
from .shards import ShardStore
from .width_policy import WIDTH_POLICIES, net_size


def num_params_at(genotype: Genotype, image_size: int = 32) -> int:
    """Parameters of a net at the base width with 10 classes (what GHN-2's width policy looks at)."""
    return num_params(genotype, 10, image_size, BASE_WIDTH)


class ArchDataset(PygDataset):
    """A DeepNets-1M split as a PyG dataset (Knyazev et al., NeurIPS 2021, Sec. 3): item ``i`` is the
    :class:`~archspace.data.ArchGraph` of net ``i`` (with ``net_index = i``), built by
    :func:`archspace.graph.to_graph` on the network.

    Args:
        root: folder of shards built by :func:`archspace.shards.build_split`; ``None`` samples the nets on the fly.
        split: a key of :data:`archspace.sampler.SPLITS`.
        num: use the first ``num`` nets (default: all of the split, or all stored).
        num_classes: classifier outputs of the built nets.
        image_size: input size of the built nets (32 or 224).
        ve_cutoff: virtual-edge cutoff ``s`` of the graphs (GHN-2: 50).
        width_range: ``(lo, hi)``: each net's width is drawn from it (deterministically from ``seed`` and the
            index); ``None`` keeps the genotype's width.
        width_policy: how widths are drawn from ``width_range`` (:mod:`archspace.width_policy`): ``'uniform'``,
            ``'loguniform'``, ``'reciprocal'`` (density ``1 / w^2``), ``'octave'`` or ``'half_octave'`` (uniform
            over the geometric grid ``lo, 2 lo, ...`` or ``lo, sqrt(2) lo, ...``), or ``'ghn2'``, GHN-2's training
            distribution (large nets narrow, a drawn classifier size).
        seed: seed of the width draws and of the normalisation draws.
        bnfree_fraction: probability (``0..1``) that a net with BatchNorm is used without it (its genotype's
            ``norm`` set to ``None``), drawn per net from ``seed`` and the index. DeepNets-1M's training split has
            normalisation-free nets only among its shallowest ones (about 3% of them), while its ``bnfree`` test
            split removes it from nets of every size (measured on the digits default, README: 20% of such nets
            does not help the GHN on that split). ``0`` keeps the split as sampled.
        min_width_share: probability (``0..1``) that a net is placed at the narrowest width of ``width_range``
            before ``width_policy`` draws (:mod:`archspace.width_policy`); ``0``: the policy alone.

    Raises:
        UsageError: for an unknown split, a bad ``num``/``width_range``/``width_policy``, or a ``root`` that does
            not exist, or a ``bnfree_fraction`` or ``min_width_share`` outside ``0..1``;
            :class:`~archspace.shards.ShardError` (a ``UsageError``) when ``root`` holds no valid shards of ``split``.
    """

    def __init__(self, root: str | None = None, split: str = "train", num: int | None = None, num_classes: int = 10,
                 image_size: int = 32, ve_cutoff: int = 50, width_range: tuple[int, int] | None = None,
                 width_policy: str = "uniform", seed: int = 0, bnfree_fraction: float = 0.0,
                 min_width_share: float = 0.0):
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}{suggest(split, SPLITS)}")
        if num is not None and not 0 < num <= SPLITS[split]:
            raise UsageError(f"num must be in [1, {SPLITS[split]}] for split {split!r}, got {num}")
        if width_range is not None and not (len(width_range) == 2 and 2 <= width_range[0] <= width_range[1]):
            raise UsageError(f"width_range must be (lo, hi) with 2 <= lo <= hi, got {width_range!r}")
        if width_policy not in WIDTH_POLICIES:
            raise UsageError(f"unknown width_policy {width_policy!r}{suggest(width_policy, WIDTH_POLICIES)}")
        if not 0.0 <= bnfree_fraction <= 1.0:
            raise UsageError(f"bnfree_fraction must be between 0 and 1, got {bnfree_fraction!r}")
        if not 0.0 <= min_width_share <= 1.0:
            raise UsageError(f"min_width_share must be between 0 and 1, got {min_width_share!r}")
        super().__init__(root=None)
        self.data_root = root
        self.split = split
        self._num_classes = num_classes
        self.image_size = image_size
        self.ve_cutoff = ve_cutoff
        self.width_range = tuple(width_range) if width_range is not None else None
        self.width_policy = width_policy
        self.seed = seed
        self.bnfree_fraction = float(bnfree_fraction)
        self.min_width_share = float(min_width_share)
        if root is not None:
            if split == "predefined":
                raise UsageError("the predefined split is built on the fly; set archspace.root=null (root=None)")
            if not os.path.isdir(root):
                raise UsageError(f"archspace.root {root} does not exist; build it with `archspace build --split "
                                 f"{split} --out {root}` or set archspace.root=null to sample nets on the fly")
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
        """The genotype of net ``index`` (``None`` for the predefined ResNet-50), without its normalisation where
        the ``bnfree_fraction`` draw of the net says so."""
        if self._store is not None:
            genotype = self._store.genotype(index)
        elif self.split == "predefined" and index == 0:
            return None
        else:
            genotype = get_genotype(self.split, index)
        if self.bnfree_fraction > 0 and genotype.norm is not None:
            # a stream of its own ([seed, index, 1]), so the width draws ([seed, index]) stay as they were
            if np.random.default_rng([self.seed, index, 1]).random() < self.bnfree_fraction:
                genotype = genotype.replace(norm=None)
        return genotype

    def net_size(self, index: int, genotype: Genotype | None = None) -> tuple[int | None, int | None]:
        """``(width, fc_dim)`` of net ``index`` under the dataset's width policy; ``None``: the genotype's own.
        ``genotype``: net ``index``'s, where the caller has it already."""
        if self.width_range is None:
            return None, None
        if self.width_policy == "ghn2" and genotype is None:
            genotype = self.genotype(index)
        base = num_params_at(genotype, self.image_size) if self.width_policy == "ghn2" and genotype else None
        return net_size(self.width_policy, self.width_range, self.seed, index, genotype, base,
                        self.min_width_share)

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
        if self._store is not None and not self.bnfree_fraction:  # stored counts are of the nets as stored
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
        model = self.build_model(index)
        graph = to_graph(model, (1, 3, self.image_size, self.image_size), ve_cutoff=self.ve_cutoff)
        graph.net_index = torch.tensor([index])
        return graph, model

    def get(self, idx: int) -> ArchGraph:
        return self.get_pair(idx)[0]
