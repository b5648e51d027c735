"""``Genotype``: the complete, serialisable description of one DeepNets-1M network.

A DARTS-style net (Liu et al., ICLR 2019) as extended by DeepNets-1M (Knyazev et al., NeurIPS 2021, Sec. 3 and
Appendix): a normal and a reduction cell, each a list of ``(op, input)`` pairs, two per sum node, where input 0
and 1 are the cell's two inputs and input ``i + 2`` is sum node ``i``; the list of states concatenated into the
cell output; and the macro settings of the net (cells, stem, width, normalisation, pre-processing, head).

A genotype is a frozen value: it converts to and from a JSON-safe dict, to and from a compact byte string (the
on-disk format of :mod:`archspace.dataset`), and has a canonical SHA-1 hash that is the same on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .ops import OP_ID, OP_NAMES

_ENCODING_VERSION = 1
# version, n_cells, C, C_mult, stem_kernel, stem_type, flags, fc_layers, fc_dim
_HEADER = struct.Struct("<BBHBBBBBH")
_FLAG_STEM_POOL, _FLAG_BN, _FLAG_PREPROC, _FLAG_VGG = 1, 2, 4, 8


class GenotypeError(UsageError):
    """A genotype that is malformed (a field out of range, an unknown op) or cannot be decoded; the message names
    the field."""


def _check_cell(name: str, cell: tuple, concat: tuple) -> None:
    """Raise :class:`GenotypeError` naming the problem if a cell description is malformed."""
    if len(cell) == 0 or len(cell) % 2:
        raise GenotypeError(f"{name} must hold two (op, input) pairs per sum node, got {len(cell)} pairs")
    for k, pair in enumerate(cell):
        if len(pair) != 2:
            raise GenotypeError(f"{name}[{k}] must be an (op, input) pair, got {pair!r}")
        op, inp = pair
        if op not in OP_ID:
            raise GenotypeError(f"{name}[{k}]: unknown op {op!r}; expected one of {OP_NAMES}")
        if not 0 <= inp < k // 2 + 2:
            raise GenotypeError(f"{name}[{k}]: input {inp} of sum node {k // 2} must be in [0, {k // 2 + 2})")
    n_states = len(cell) // 2 + 2
    if not concat or any(not 2 <= c < n_states for c in concat) or len(set(concat)) != len(concat):
        raise GenotypeError(f"{name}_concat {concat!r} must be distinct sum-node states in [2, {n_states})")


@dataclass(frozen=True)
class Genotype:
    """A DeepNets-1M network description (Knyazev et al., NeurIPS 2021, Sec. 3, Appendix); build it with
    :class:`archspace.network.Network`.

    Args:
        normal: ``(op, input)`` pairs of the normal cell, two per sum node.
        normal_concat: states (``>= 2``) concatenated into the normal cell's output.
        reduce: ``(op, input)`` pairs of the reduction cell.
        reduce_concat: states concatenated into the reduction cell's output.
        n_cells: number of cells; reductions sit at ``n_cells // 3`` and ``2 * n_cells // 3``.
        C: base width (channels of the first cells).
        C_mult: channel multiplier at each reduction (1 or 2).
        stem_kernel: kernel size of the first conv (3, 5 or 7).
        stem_type: 0 simple stem (one conv, BN, optional max-pool), 1 DARTS ImageNet-style stem (two stems).
        stem_pool: max-pool after the simple stem.
        norm: ``'bn'`` (BatchNorm) or ``None`` (no normalisation layers).
        preproc: 1x1 conv pre-processing of both cell inputs.
        vgg_head: flatten the last feature map into the classifier (VGG-style) instead of global average pooling.
        fc_layers: number of linear layers in the classifier (1 or 2).
        fc_dim: hidden size of the classifier when ``fc_layers > 1``.

    Raises:
        GenotypeError: (a ``ValueError``) if any field is out of range (the message names the field).
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    n_cells: int = 8
    C: int = 32
    C_mult: int = 2
    stem_kernel: int = 3
    stem_type: int = 0
    stem_pool: bool = False
    norm: str | None = "bn"
    preproc: bool = True
    vgg_head: bool = False
    fc_layers: int = 1
    fc_dim: int = 256

    def __post_init__(self) -> None:
        for name in ("normal", "reduce"):
            cell = tuple((str(op), int(i)) for op, i in getattr(self, name))
            object.__setattr__(self, name, cell)
            concat = tuple(int(c) for c in getattr(self, name + "_concat"))
            object.__setattr__(self, name + "_concat", concat)
            _check_cell(name, cell, concat)
        for name in ("stem_pool", "preproc", "vgg_head"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name in ("n_cells", "C", "C_mult", "stem_kernel", "stem_type", "fc_layers", "fc_dim"):
            value = getattr(self, name)  # 8.5 or 2.0 would pass the range checks and fail when the net is built
            if not isinstance(value, int) or isinstance(value, bool):
                raise GenotypeError(f"{name} must be an integer, got {value!r}")
        if not 1 <= self.n_cells <= 255:
            raise GenotypeError(f"n_cells must be in [1, 255], got {self.n_cells}")
        if not 2 <= self.C <= 65535:
            raise GenotypeError(f"C (width) must be in [2, 65535], got {self.C}")
        if self.C_mult not in (1, 2, 3, 4):
            raise GenotypeError(f"C_mult must be 1..4, got {self.C_mult}")
        if self.stem_kernel not in (1, 3, 5, 7):
            raise GenotypeError(f"stem_kernel must be 1, 3, 5 or 7, got {self.stem_kernel}")
        if self.stem_type not in (0, 1):
            raise GenotypeError(f"stem_type must be 0 (simple) or 1 (ImageNet-style), got {self.stem_type}")
        if self.norm not in ("bn", None):
            raise GenotypeError(f"norm must be 'bn' or None, got {self.norm!r}")
        if self.fc_layers not in (1, 2, 3):
            raise GenotypeError(f"fc_layers must be 1..3, got {self.fc_layers}")
        if not 1 <= self.fc_dim <= 65535:
            raise GenotypeError(f"fc_dim must be in [1, 65535], got {self.fc_dim}")
        n_out = max(len(self.normal_concat), len(self.reduce_concat))
        if not self.preproc and (n_out > 1 or self.C_mult > 1):
            raise GenotypeError("preproc=False needs one concatenated state per cell and C_mult=1 (the cell inputs "
                             "must already have the cell's width)")

    @property
    def steps(self) -> int:
        """Number of sum nodes of the normal cell."""
        return len(self.normal) // 2

    @property
    def is_vit(self) -> bool:
        """True if any cell uses self-attention: the net gets the ViT stem and never reduces resolution."""
        return any(op == "msa" for op, _ in self.normal + self.reduce)

    def replace(self, **changes: Any) -> Genotype:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists instead of tuples); inverse of :meth:`from_dict`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("normal", "reduce"):
            out[name] = [[op, i] for op, i in out[name]]
            out[name + "_concat"] = list(out[name + "_concat"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        """Build a genotype from :meth:`to_dict` output (or JSON of it).

        Raises:
            GenotypeError: on unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise GenotypeError(f"unknown Genotype fields {sorted(unknown)}; expected a subset of {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; equal genotypes give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def canonical_hash(self) -> str:
        """SHA-1 hex digest of :meth:`to_json`: stable across processes, machines and Python versions."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()

    def to_bytes(self) -> bytes:
        """Compact binary encoding (about 30 bytes for a typical net); inverse of :meth:`from_bytes`."""
        flags = ((_FLAG_STEM_POOL if self.stem_pool else 0) | (_FLAG_BN if self.norm == "bn" else 0)
                 | (_FLAG_PREPROC if self.preproc else 0) | (_FLAG_VGG if self.vgg_head else 0))
        parts = [_HEADER.pack(_ENCODING_VERSION, self.n_cells, self.C, self.C_mult, self.stem_kernel,
                              self.stem_type, flags, self.fc_layers, self.fc_dim)]
        for cell, concat in ((self.normal, self.normal_concat), (self.reduce, self.reduce_concat)):
            parts.append(bytes([len(cell) // 2, len(concat)]))
            parts.append(bytes(b for op, i in cell for b in (OP_ID[op], i)))
            parts.append(bytes(concat))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Genotype:
        """Decode :meth:`to_bytes` output.

        Raises:
            GenotypeError: if the bytes are truncated, of an unknown version, or decode to an invalid genotype.
        """
        try:
            version, n_cells, C, C_mult, ks, stem_type, flags, fc_layers, fc_dim = _HEADER.unpack_from(data)
            if version != _ENCODING_VERSION:
                raise GenotypeError(f"unknown genotype encoding version {version}")
            pos = _HEADER.size
            cells = []
            for _ in range(2):
                steps, n_concat = data[pos], data[pos + 1]
                pos += 2
                raw = data[pos: pos + 4 * steps]
                if len(raw) != 4 * steps:
                    raise GenotypeError("truncated cell")
                cell = tuple((OP_NAMES[raw[2 * k]], raw[2 * k + 1]) for k in range(2 * steps))
                pos += 4 * steps
                concat = tuple(data[pos: pos + n_concat])
                if len(concat) != n_concat:
                    raise GenotypeError("truncated concat list")
                pos += n_concat
                cells.append((cell, concat))
            if pos != len(data):
                raise GenotypeError(f"{len(data) - pos} trailing bytes")
        except (struct.error, IndexError) as e:
            raise GenotypeError(f"cannot decode genotype from {len(data)} bytes: {e}") from e
        return cls(normal=cells[0][0], normal_concat=cells[0][1], reduce=cells[1][0], reduce_concat=cells[1][1],
                   n_cells=n_cells, C=C, C_mult=C_mult, stem_kernel=ks, stem_type=stem_type,
                   stem_pool=bool(flags & _FLAG_STEM_POOL), norm="bn" if flags & _FLAG_BN else None,
                   preproc=bool(flags & _FLAG_PREPROC), vgg_head=bool(flags & _FLAG_VGG), fc_layers=fc_layers,
                   fc_dim=fc_dim)


#: The DARTS-V2 cells (Liu et al., ICLR 2019), the published CIFAR-10 architecture.
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
    n_cells=20, C=36, C_mult=2, stem_kernel=3, stem_type=0, stem_pool=False, norm="bn", preproc=True,
    vgg_head=False, fc_layers=1,
)
