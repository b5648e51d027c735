"""The DeepNets-1M splits: a deterministic sampler of genotypes and nets for every (split, index).

Sampling follows the DeepNets-1M generator (Knyazev et al., NeurIPS 2021, Sec. 3 and Appendix; reference
``experiments/net_generator.py``): 4-18 cells, 1-4 sum nodes per cell (at most 2 in nets deeper than a random
threshold of 7-10 cells), two inputs per node, ops drawn uniformly from :data:`archspace.ops.OP_NAMES` (``none``
only with more than one node; reduction cells restricted to pooling/skip half of the time), a random subset of the
sum nodes concatenated, stem kernel 3/5/7, width multiplier 1 or 2, optional 1x1 pre-processing, 10% VGG-style
heads, no BatchNorm in some shallow nets. Out-of-distribution variants: ``deep`` (10-36 cells), ``dense`` (2-10
sum nodes), ``bnfree`` (no normalisation), ``wide`` (4x width). A candidate is redrawn if it is disconnected, has
too many parameters at base width (32 channels, 32x32 input, 10 classes), or falls in the wrong split bucket.

Determinism: each (split, index) seeds its own ``numpy.random.Generator`` from a SHA-256 of the pair, so the
result is the same in every process and on every machine, and index ``i`` never depends on other indices.

Disjointness by construction (the reference's test split repeats train): every genotype has a bucket
``int(sha1(structure)) % 100`` where the structure is the canonical JSON without the width; buckets 0-5 belong to
val, test, wide, deep, dense, bnfree, and 6-99 to train, and a candidate is kept only if its bucket is the
requested split's. No two splits can therefore share an architecture, whatever its width.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch.nn as nn

from .errors import UsageError, suggest
from .genotype import DARTS_V2, Genotype
from .network import IMAGENET_MIN_SIZE, Network, count_params, plan_network
from .ops import OP_NAMES

#: Number of nets per split.
SPLITS: dict[str, int] = {
    "train": 1_000_000,
    "val": 500,
    "test": 500,
    "wide": 100,
    "deep": 100,
    "dense": 100,
    "bnfree": 100,
    "predefined": 3,
}

#: Buckets ``int(sha1) % NUM_BUCKETS`` owned by each sampled split; train owns all others.
NUM_BUCKETS: int = 100
SPLIT_BUCKETS: dict[str, int] = {"val": 0, "test": 1, "wide": 2, "deep": 3, "dense": 4, "bnfree": 5}

#: Width at which the parameter limit is checked (the reference's ``C=32``).
BASE_WIDTH: int = 32

#: Parameter limits at base width. The reference generator allows 100M for ``deep`` and ``dense`` nets, which
#: could not otherwise reach their depth or density; every other split uses 10M.
MAX_PARAMS: dict[str, int] = {"deep": 10**8, "dense": 10**8}
DEFAULT_MAX_PARAMS: int = 10**7

#: Names of the predefined nets, by index.
PREDEFINED: tuple[str, ...] = ("resnet50", "vit", "darts")

_POOL_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")
_LARGE_CONVS = ("conv_5x5", "conv_7x7")

# Split -> (min cells, max cells, "deep" thresholds, min nodes, nodes in deep nets, max nodes).
_SHAPE = {
    "deep": (10, 36, (18,), 1, 2, 4),
    "dense": (4, 18, (7, 8, 9, 10), 2, 6, 10),
}
_DEFAULT_SHAPE = (4, 18, (7, 8, 9, 10), 1, 2, 4)

#: The predefined ViT as a genotype: every cell is one transformer block on the output of the previous cell.
VIT = Genotype(
    normal=(("none", 0), ("msa", 1)), normal_concat=(2,), reduce=(("none", 0), ("msa", 1)), reduce_concat=(2,),
    n_cells=12, C=192, C_mult=1, stem_kernel=3, stem_type=0, stem_pool=False, norm=None, preproc=False,
    vgg_head=False, fc_layers=1,
)


class _Uniforms:
    """Uniform numbers from a seeded ``numpy.random.Generator``, drawn in blocks (one numpy call per 256 draws
    keeps sampling in the tens of microseconds)."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self._buf: list[float] = []

    def random(self) -> float:
        if not self._buf:
            self._buf = self._rng.random(256).tolist()[::-1]
        return self._buf.pop()

    def randint(self, low: int, high: int) -> int:
        """Uniform integer in ``[low, high]`` (both included)."""
        return low + int(self.random() * (high - low + 1))

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


def _seed(split: str, index: int) -> int:
    """A 64-bit seed from SHA-256 of ``(split, index)``: stable everywhere, unlike Python's ``hash``."""
    digest = hashlib.sha256(f"archspace.deepnets1m/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def structure_hash(genotype: Genotype) -> str:
    """SHA-1 of the genotype's canonical JSON without its width ``C``: the identity of an architecture.

    Args:
        genotype: any genotype.

    Returns:
        A 40-character hex digest.
    """
    d = genotype.to_dict()
    del d["C"]
    return hashlib.sha1(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def bucket_of(genotype: Genotype) -> int:
    """Split bucket of a genotype, ``int(structure_hash) % NUM_BUCKETS`` (see the module docstring)."""
    return int(structure_hash(genotype), 16) % NUM_BUCKETS


def split_of_bucket(bucket: int) -> str:
    """The sampled split that owns ``bucket``: one of val/test/wide/deep/dense/bnfree, or train."""
    for split, b in SPLIT_BUCKETS.items():
        if b == bucket:
            return split
    return "train"


def _sample_cell(u: _Uniforms, steps: int, ops: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Two distinct inputs per sum node, each with a uniformly drawn op."""
    cell = []
    for i in range(steps):
        a = u.randint(0, i + 1)
        b = u.randint(0, i)
        b += b >= a  # distinct from a, uniform over the rest
        cell.append((u.choice(ops), a))
        cell.append((u.choice(ops), b))
    return tuple(cell)


def _candidate(u: _Uniforms, split: str) -> Genotype | None:
    """One draw of the reference generator for ``split``; ``None`` if it fails the reference's op filters."""
    min_cells, max_cells, deep_all, min_steps, medium_steps, max_steps = _SHAPE.get(split, _DEFAULT_SHAPE)
    n_cells = u.randint(min_cells, max_cells)
    deep_threshold = u.choice(deep_all)
    steps = u.randint(min_steps, max_steps if n_cells <= deep_threshold else medium_steps)
    only_pool = u.random() > 0.5  # reduction cells without trainable ops
    drop_concat = steps > 1 and u.random() > 0.5
    ops = OP_NAMES if steps > 1 else OP_NAMES[1:]  # 'none' needs more than one sum node
    normal = _sample_cell(u, steps, ops)
    reduce = _sample_cell(u, steps, (("none",) if steps > 1 else ()) + _POOL_OPS if only_pool else ops)
    if drop_concat:
        concat = tuple(i for i in range(2, steps + 2) if i == steps + 1 or u.random() > 0.5)
    else:
        concat = tuple(range(2, steps + 2))
    stem_kernel = u.choice((3, 5, 7))

    # Reference filters: squeeze-excitation needs a conv, at most one cse and one large dense conv per cell, and
    # at least one trainable op.
    all_ops = [op for op, _ in normal + reduce]
    has_cse = "cse" in all_ops
    has_conv = any("conv" in op for op in all_ops)
    is_vit = "msa" in all_ops
    for cell in (normal, reduce):
        names = [op for op, _ in cell]
        if names.count("cse") > 1 or sum(names.count(c) for c in _LARGE_CONVS) > 1:
            return None
    if (has_cse and not has_conv) or not (has_cse or is_vit or has_conv):
        return None

    C_mult = u.choice((1, 2))
    preproc = steps > 1 or C_mult > 1 or not is_vit or u.random() > 0.8
    vgg_head = not (is_vit or n_cells > deep_threshold or u.random() > 0.1)
    if split == "bnfree":
        norm = None
    elif n_cells <= min_cells + 1 and steps <= medium_steps:
        norm = u.choice(("bn", None))
    else:
        norm = "bn"
    stem_type = u.choice((0, 1))
    stem_pool = stem_type == 0 and u.random() > 0.5
    fc_layers = u.randint(1, 2)
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat, n_cells=n_cells,
                    C=BASE_WIDTH, C_mult=C_mult, stem_kernel=stem_kernel, stem_type=stem_type, stem_pool=stem_pool,
                    norm=norm, preproc=preproc, vgg_head=vgg_head, fc_layers=fc_layers, fc_dim=256)


def _check_split(split: str, index: int) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown DeepNets-1M split {split!r}" + suggest(split, SPLITS))
    if not isinstance(index, (int, np.integer)) or not 0 <= index < SPLITS[split]:
        raise IndexError(f"index {index!r} out of range for split {split!r} of {SPLITS[split]} nets")


def get_genotype(split: str, index: int, max_attempts: int = 100_000) -> Genotype:
    """The genotype of net ``index`` of ``split``: a pure function of ``(split, index)`` (see the module docstring).

    Args:
        split: a key of :data:`SPLITS`. For ``predefined``, index 1 is the ViT and 2 the DARTS-V2 net (36
            channels, 20 cells); index 0 (ResNet-50) has no genotype.
        index: ``0 <= index < SPLITS[split]``.
        max_attempts: safety bound on redraws (a train net needs about 1.3 draws, other splits about 130).

    Returns:
        The :class:`Genotype` (width 128 for ``wide``, 32 otherwise).

    Raises:
        UsageError: (a ``ValueError``) for an unknown split.
        ValueError: for ``predefined`` index 0.
        IndexError: if ``index`` is out of range.
        RuntimeError: if no valid genotype was found in ``max_attempts`` draws (should not happen).
    """
    _check_split(split, index)
    if split == "predefined":
        if index == 0:
            raise ValueError("predefined net 0 is torchvision's ResNet-50, which has no genotype; use get_net")
        return VIT if index == 1 else DARTS_V2
    u = _Uniforms(_seed(split, index))
    max_params = MAX_PARAMS.get(split, DEFAULT_MAX_PARAMS)
    for _ in range(max_attempts):
        genotype = _candidate(u, split)
        if genotype is None or split_of_bucket(bucket_of(genotype)) != split:
            continue
        plan = plan_network(genotype, num_classes=10, image_size=32)
        if not plan.connected or count_params(plan) > max_params:
            continue
        return genotype.replace(C=4 * BASE_WIDTH) if split == "wide" else genotype
    raise RuntimeError(f"no valid genotype for ({split!r}, {index}) in {max_attempts} draws")


def _resnet50(num_classes: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-50; below :data:`IMAGENET_MIN_SIZE` adapted with the CIFAR recipe
    (:func:`archspace.small_input.adapt_small_input`: 3x3 stride-1 first conv, no max-pool)."""
    import torchvision

    model = torchvision.models.resnet50(num_classes=num_classes)
    if image_size < IMAGENET_MIN_SIZE:
        from .small_input import adapt_small_input

        model = adapt_small_input(model)
    model.expected_input_sz = image_size
    return model


def get_net(split: str, index: int, num_classes: int = 10, image_size: int = 32, width: int | None = None
            ) -> nn.Module:
    """Build net ``index`` of ``split`` (randomly initialised).

    Args:
        split: a key of :data:`SPLITS`.
        index: ``0 <= index < SPLITS[split]``.
        num_classes: classifier outputs.
        image_size: input size (32 for CIFAR-style stems, 224 for ImageNet).
        width: overrides the genotype's width ``C``; ignored by ResNet-50 (``predefined`` index 0).

    Returns:
        A :class:`~archspace.network.Network`, or torchvision's ResNet-50 for ``('predefined', 0)``.

    Raises:
        ValueError / IndexError: as :func:`get_genotype`.
    """
    _check_split(split, index)
    if split == "predefined" and index == 0:
        return _resnet50(num_classes, image_size)
    return Network(get_genotype(split, index), num_classes=num_classes, image_size=image_size, width=width)
