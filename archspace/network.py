"""``Network``: build a DeepNets-1M net from a :class:`~archspace.genotype.Genotype`, and count its parameters.

The macro structure follows DARTS (Liu et al., ICLR 2019) as extended by DeepNets-1M (Knyazev et al., NeurIPS
2021, Sec. 3 and Appendix): a stem, ``n_cells`` cells with reduction cells at one and two thirds of the depth, and
a classifier on globally pooled (or, VGG-style, flattened) features. Nets with self-attention get a ViT stem
(strided patch conv plus learned positional encoding) and keep their resolution.

Unlike the reference, the builder first works out which operations can influence the output (``none`` edges,
unused sum nodes and unused cell inputs can cut whole branches, even whole cells) and builds only those, so every
parameter of a :class:`Network` is used in ``forward``. That analysis is a :class:`NetPlan`; the same plan gives the
exact parameter count without building any module (:func:`count_params`), which is what makes sampling fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import UsageError
from .genotype import Genotype, GenotypeError
from .ops import OPS, FactorizedReduce, PosEnc, ReLUConvBN, Stride, norm_layer, op_num_params

#: Inputs at least this large get the ImageNet stem (stride 4 simple stem, stride 2 convs in the DARTS stem,
#: 16x16 ViT patches); smaller inputs get the CIFAR stem.
IMAGENET_MIN_SIZE: int = 128

#: The narrowest channel width a DeepNets-1M net can be built at (half of it must be a whole channel).
MIN_WIDTH = 2


def _down(size: int, stride: int) -> int:
    """Output size of a 'same'-padded op with this stride: ``ceil(size / stride)``."""
    return -(-size // stride)


@dataclass(frozen=True)
class OpPlan:
    """One live operation of a cell: genotype position ``pos`` (``2 * node + {0, 1}``), name, input state and
    channels."""

    pos: int
    name: str
    inp: int
    C_in: int
    C_out: int
    stride: int


@dataclass(frozen=True)
class CellPlan:
    """What one cell builds: pre-processing of its inputs (``None`` when the input is unused), live operations
    and the concatenated states (``concat_live[j]`` False means state ``concat[j]`` is all zeros)."""

    index: int
    reduction: bool
    live: bool
    prep0: str | None  # 'conv' (1x1 ReLUConvBN), 'reduce' (FactorizedReduce), 'stride', 'identity' or None
    prep1: str | None  # 'conv', 'identity' or None
    C_prev_prev: int
    C_prev: int
    C_out: int
    ops: tuple[OpPlan, ...]
    steps: int
    concat: tuple[int, ...]
    concat_live: tuple[bool, ...]
    out_channels: int
    out_size: int


@dataclass(frozen=True)
class NetPlan:
    """The structure of a :class:`Network` before any module is built (see the module docstring).

    ``connected`` is False when no path leads from the input to the classifier (``none`` edges cut all of them);
    such a net cannot be built.
    """

    genotype: Genotype
    C: int
    num_classes: int
    image_size: int
    imagenet: bool
    is_vit: bool
    stem_channels: tuple[int, int]  # channels of the two stem outputs (s0, s1)
    stem_size: int  # spatial size of the stem output feeding the first cell as s0
    stem1_live: bool  # DARTS stem: the second stem is used
    cells: tuple[CellPlan, ...]
    connected: bool
    head_in: int  # classifier input features


def _cell_states(cell, concat, a0: bool, a1: bool) -> tuple[list[bool], bool]:
    """Forward pass over a cell: which states can be non-empty given which inputs are, and whether the output is."""
    avail = [a0, a1]
    for i in range(len(cell) // 2):
        (op1, j1), (op2, j2) = cell[2 * i], cell[2 * i + 1]
        avail.append((op1 != "none" and avail[j1]) or (op2 != "none" and avail[j2]))
    return avail, any(avail[c] for c in concat)


def _cell_live_ops(cell, concat, avail: list[bool], needed: bool) -> tuple[list[int], bool, bool]:
    """Backward pass over a cell: positions of the ops that reach the output, and whether inputs 0 / 1 are used."""
    if not needed:
        return [], False, False
    need = [False] * len(avail)
    for c in concat:
        need[c] = avail[c]
    live = []
    for i in reversed(range(len(cell) // 2)):
        if not need[i + 2]:
            continue
        for k in (2 * i, 2 * i + 1):
            op, j = cell[k]
            if op != "none" and avail[j]:
                live.append(k)
                need[j] = True
    return sorted(live), need[0], need[1]


def plan_network(genotype: Genotype, num_classes: int = 10, image_size: int = 32, width: int | None = None
                 ) -> NetPlan:
    """Work out the live structure, channels and resolutions of the net described by ``genotype``.

    Channel bookkeeping follows the reference DeepNets-1M builder (Knyazev et al., 2021, Appendix): the simple
    stem has ``3 C`` channels on CIFAR-size inputs with pre-processing; each reduction multiplies the cell width
    by ``C_mult``; a cell outputs ``len(concat)`` times its width.

    Args:
        genotype: the net description.
        num_classes: classifier outputs.
        image_size: input height and width (see :data:`IMAGENET_MIN_SIZE`).
        width: overrides ``genotype.C`` when given.

    Returns:
        The :class:`NetPlan`.

    Raises:
        UsageError: (a ``ValueError``) for a non-positive ``num_classes`` or ``image_size``, or a width below 2.
    """
    if num_classes < 1 or image_size < 1:
        raise UsageError(f"num_classes and image_size must be positive, got {num_classes}, {image_size}")
    C = genotype.C if width is None else int(width)
    if C < MIN_WIDTH:
        raise UsageError(f"width must be at least {MIN_WIDTH}, got {width}")
    g = genotype
    imagenet = image_size >= IMAGENET_MIN_SIZE
    is_vit = g.is_vit
    n = g.n_cells

    # Stem: channels and spatial sizes of the two streams feeding the first cell.
    if is_vit:
        patch = 16 if imagenet else 3
        size = (image_size + 2 * int(patch < 4) - patch) // patch + 1
        C_pp = C_p = C
        sizes = [size, size]
    elif g.stem_type == 0:
        C_pp = C_p = C * (3 if (g.preproc and not imagenet) else 1)
        size = _down(image_size, 4 if imagenet else 1)
        size = _down(size, 2) if g.stem_pool else size
        sizes = [size, size]
    else:
        C_pp = C_p = C
        size = _down(_down(image_size, 2 if imagenet else 1), 2 if imagenet else 1)
        sizes = [size, _down(size, 2)]
    stem_channels = (C_pp, C_p)

    def is_reduction(i: int) -> bool:
        return i > 0 and i in (n // 3, 2 * n // 3)

    # Channels, cell inputs and resolution of every cell (independent of liveness).
    layout = []
    C_curr = C
    reduction_prev = g.stem_type == 1 and not is_vit
    for i in range(n):
        reduction = is_reduction(i)
        cell, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
        if reduction:
            C_curr *= g.C_mult
        steps = len(cell) // 2
        C_out = C_curr * (g.C_mult if is_reduction(i + 1) and steps == 1 and not g.preproc else 1)
        C_in = C_curr if g.preproc else C_p
        out_size = _down(sizes[-1], 2) if reduction and not is_vit else sizes[-1]
        layout.append((reduction, reduction_prev, cell, concat, C_pp, C_p, C_in, C_out, out_size))
        sizes.append(out_size)
        reduction_prev = reduction
        C_pp, C_p = C_p, len(concat) * C_curr
    head_channels, final_size = C_p, sizes[-1]

    # Forward: which cell outputs can be non-empty (streams -2, -1 are the stem outputs).
    avail = {-2: True, -1: True}
    states = []
    for i, (_, _, cell, concat, *_rest) in enumerate(layout):
        st, avail[i] = _cell_states(cell, concat, avail[i - 2], avail[i - 1])
        states.append(st)
    connected = avail[n - 1]

    # Backward: which cell outputs reach the classifier, and which ops inside each cell do.
    needed = {i: False for i in range(-2, n)}
    needed[n - 1] = connected
    live_ops: list[list[int]] = [[] for _ in range(n)]
    uses: list[tuple[bool, bool]] = [(False, False)] * n
    for i in reversed(range(n)):
        cell, concat = layout[i][2], layout[i][3]
        live_ops[i], u0, u1 = _cell_live_ops(cell, concat, states[i], needed[i])
        uses[i] = (u0, u1)
        needed[i - 1] |= u1
        needed[i - 2] |= u0

    cells = []
    for i, (reduction, reduction_prev, cell, concat, C_pp_i, C_p_i, C_in, C_out, out_size) in enumerate(layout):
        u0, u1 = uses[i]
        if not u0:
            prep0 = None
        elif g.preproc:
            prep0 = "reduce" if reduction_prev and not is_vit else "conv"
        else:
            prep0 = "stride" if reduction_prev and not is_vit else "identity"
        prep1 = None if not u1 else ("conv" if g.preproc else "identity")
        ops = []
        for k in live_ops[i]:
            name, j = cell[k]
            stride = 2 if (reduction and j < 2 and not is_vit) else 1
            ops.append(OpPlan(k, name, j, C_in if j < 2 else C_out, C_out, stride))
        cells.append(CellPlan(
            index=i, reduction=reduction, live=needed[i] and avail[i], prep0=prep0, prep1=prep1,
            C_prev_prev=C_pp_i, C_prev=C_p_i, C_out=C_out, ops=tuple(ops), steps=len(cell) // 2,
            concat=tuple(concat), concat_live=tuple(bool(states[i][c]) for c in concat),
            out_channels=len(concat) * C_out, out_size=out_size))

    head_in = head_channels * (final_size * final_size if g.vgg_head else 1)
    return NetPlan(genotype=g, C=C, num_classes=num_classes, image_size=image_size, imagenet=imagenet,
                   is_vit=is_vit, stem_channels=stem_channels, stem_size=sizes[0],
                   stem1_live=needed[-1] and g.stem_type == 1 and not is_vit, cells=tuple(cells),
                   connected=connected, head_in=head_in)


def count_params(plan: NetPlan) -> int:
    """Exact number of parameters of ``Network`` built from ``plan``, computed without building it.

    Args:
        plan: from :func:`plan_network`.

    Returns:
        The parameter count (0 if the plan is not connected).
    """
    if not plan.connected:
        return 0
    g, C = plan.genotype, plan.C
    bn = 2 if g.norm == "bn" else 0
    if plan.is_vit:
        patch = 16 if plan.imagenet else 3
        total = 3 * C * patch * patch + C * plan.stem_size * plan.stem_size
    elif g.stem_type == 0:
        C_stem = plan.stem_channels[0]
        total = 3 * C_stem * g.stem_kernel ** 2 + bn * C_stem
    else:
        half = C // 2
        total = 3 * half * g.stem_kernel ** 2 + bn * half + half * C * 9 + bn * C
        if plan.stem1_live:
            total += C * C * 9 + bn * C
    for cell in plan.cells:
        if cell.prep0 in ("conv", "reduce"):
            total += cell.C_prev_prev * cell.C_out + bn * cell.C_out
        if cell.prep1 == "conv":
            total += cell.C_prev * cell.C_out + bn * cell.C_out
        for op in cell.ops:
            total += op_num_params(op.name, op.C_in, op.C_out, op.stride, g.norm)
    dims = [plan.head_in] + [g.fc_dim] * (g.fc_layers - 1) + [plan.num_classes]
    total += sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
    return total


def num_params(genotype: Genotype, num_classes: int = 10, image_size: int = 32, width: int | None = None) -> int:
    """Number of parameters of ``Network(genotype, num_classes, image_size, width)`` (0 if disconnected), computed
    analytically; a few hundred microseconds.

    Args:
        genotype: the net description.
        num_classes: classifier outputs.
        image_size: input size.
        width: overrides ``genotype.C``.

    Returns:
        The parameter count.
    """
    return count_params(plan_network(genotype, num_classes, image_size, width))


# Graph nodes of each cell operation (Knyazev et al., 2021, Sec. 4.1 graph rules as implemented by
# :func:`archspace.graph.to_graph`): ``(nodes without norm layers, norm nodes)``; checked against ``to_graph`` in
# the tests. Strided skip is a FactorizedReduce: two convs and a concat.
_OP_NODES: dict[str, tuple[int, int]] = {
    "max_pool_3x3": (1, 0),
    "avg_pool_3x3": (1, 0),
    "sep_conv_3x3": (4, 2),
    "sep_conv_5x5": (4, 2),
    "dil_conv_3x3": (2, 1),
    "dil_conv_5x5": (2, 1),
    "conv_1x1": (1, 1),
    "conv_7x1_1x7": (2, 1),
    "conv_3x3": (1, 1),
    "conv_5x5": (1, 1),
    "conv_7x7": (1, 1),
    "msa": (13, 0),
    "cse": (5, 0),
}
_REDUCE_NODES = (3, 1)  # FactorizedReduce: two convs and a concat, one norm


def count_graph_nodes(plan: NetPlan) -> int:
    """Number of nodes of ``archspace.graph.to_graph`` applied to the ``Network`` of ``plan``, computed without
    building the net or its graph (needed for the meta-batch node cap of GHN-2 training, Knyazev et al., 2021,
    Sec. 4; tracing a net costs 10-300 ms, this a few microseconds per cell).

    The count follows the graph rules: one node per weight, bias and norm layer, per pooling, per sum or concat
    of two or more *distinct* tensors (identity ops, parameter-free pre-processing and zero-filled states do not
    make new tensors), ``msa``/``cse``/``glob_avg`` nodes and the input. Tensor identity is tracked symbolically.

    Args:
        plan: from :func:`plan_network`.

    Returns:
        The node count (0 if the plan is not connected).
    """
    if not plan.connected:
        return 0
    g = plan.genotype
    bn = 1 if g.norm == "bn" else 0
    total = 1  # input
    fresh = iter(range(1, 1 << 30))  # ids of tensors made by graph nodes
    if plan.is_vit:
        total += 3  # patch conv, positional encoding and its sum
        s0 = s1 = next(fresh)
    elif g.stem_type == 0:
        total += 1 + bn + int(g.stem_pool)
        s0 = s1 = next(fresh)
    else:
        total += 2 * (1 + bn) + (1 + bn) * plan.stem1_live
        s0, s1 = next(fresh), (next(fresh) if plan.stem1_live else None)
    reduce_nodes = _REDUCE_NODES[0] + bn * _REDUCE_NODES[1]
    for cell in plan.cells:
        if not cell.live:
            s0, s1 = s1, None
            continue
        states: list[int | None] = []
        for prep, inp in ((cell.prep0, s0), (cell.prep1, s1)):
            if prep == "conv":
                total += 1 + bn
                states.append(next(fresh))
            elif prep == "reduce":
                total += reduce_nodes
                states.append(next(fresh))
            else:  # identity, stride or unused: the same tensor (or none)
                states.append(inp if prep is not None else None)
        by_node: list[list[OpPlan]] = [[] for _ in range(cell.steps)]
        for op in cell.ops:
            by_node[op.pos // 2].append(op)
        for node_ops in by_node:
            ins: set[int] = set()
            for op in node_ops:
                if op.name == "skip_connect" and op.stride == 1:
                    ins.add(states[op.inp])
                    continue
                if op.name == "skip_connect":
                    total += reduce_nodes
                else:
                    base, norms = _OP_NODES[op.name]
                    total += base + bn * norms
                ins.add(next(fresh))
            if len(ins) > 1:
                total += 1  # sum
                states.append(next(fresh))
            else:
                states.append(ins.pop() if ins else None)
        outs = {states[c] for c in cell.concat if states[c] is not None}
        if len(outs) > 1:
            total += 1  # concat
            out_value = next(fresh)
        else:
            out_value = next(iter(outs))
        s0, s1 = s1, out_value
    total += 0 if g.vgg_head else 1  # global average pooling
    total += 2 * g.fc_layers  # classifier weights and biases
    return total


def num_graph_nodes(genotype_or_plan: Genotype | NetPlan) -> int:
    """Graph nodes of the net of a genotype (any width, 32x32 input) or of a plan; see :func:`count_graph_nodes`.

    Args:
        genotype_or_plan: a :class:`Genotype` or a :class:`NetPlan`.

    Returns:
        The node count.
    """
    plan = genotype_or_plan if isinstance(genotype_or_plan, NetPlan) else plan_network(genotype_or_plan)
    return count_graph_nodes(plan)


_PREP = {
    "conv": lambda C_in, C_out, norm: ReLUConvBN(C_in, C_out, 1, 1, norm),
    "reduce": lambda C_in, C_out, norm: FactorizedReduce(C_in, C_out, norm),
    "stride": lambda C_in, C_out, norm: Stride(2),
    "identity": lambda C_in, C_out, norm: nn.Identity(),
}


class Cell(nn.Module):
    """A DARTS cell (Liu et al., ICLR 2019) holding only its live operations (see :class:`CellPlan`): each sum node
    adds its live incoming ops; the output concatenates the listed states along channels, with zeros for states
    that ``none`` edges left empty.

    Args:
        plan: the cell's :class:`CellPlan`.
        norm: ``'bn'`` or ``None``.

    Shapes:
        ``s0: (B, C_prev_prev, 2H or H, ...)``, ``s1: (B, C_prev, H, W)`` -> ``(B, len(concat) * C_out, H', W')``
    """

    def __init__(self, plan: CellPlan, norm: str | None):
        super().__init__()
        self.live = plan.live
        self.steps = plan.steps
        self.concat = plan.concat
        if plan.prep0 is not None:
            self.preprocess0 = _PREP[plan.prep0](plan.C_prev_prev, plan.C_out, norm)
        if plan.prep1 is not None:
            self.preprocess1 = _PREP[plan.prep1](plan.C_prev, plan.C_out, norm)
        self.ops = nn.ModuleDict({str(op.pos): OPS[op.name](op.C_in, op.C_out, op.stride, norm) for op in plan.ops})
        # Live ops per sum node: list of (op key, input state).
        self._node_ops: list[list[tuple[str, int]]] = [[] for _ in range(plan.steps)]
        for op in plan.ops:
            self._node_ops[op.pos // 2].append((str(op.pos), op.inp))

    def forward(self, s0: torch.Tensor | None, s1: torch.Tensor | None) -> torch.Tensor:
        states: list[torch.Tensor | None] = [
            self.preprocess0(s0) if hasattr(self, "preprocess0") else None,
            self.preprocess1(s1) if hasattr(self, "preprocess1") else None,
        ]
        for node_ops in self._node_ops:
            out = None
            for key, j in node_ops:
                h = self.ops[key](states[j])
                out = h if out is None else out + h
            states.append(out)
        outs = [states[c] for c in self.concat]
        if len(outs) == 1:
            return outs[0]
        ref = next(s for s in outs if s is not None)
        return torch.cat([s if s is not None else torch.zeros_like(ref) for s in outs], dim=1)  # (B, k*C, H, W)


class Network(nn.Module):
    """A DeepNets-1M network (Knyazev et al., NeurIPS 2021, Sec. 3 and Appendix) built from a genotype, with only
    the operations that reach the output (every parameter is used in ``forward``).

    Args:
        genotype: the net description.
        num_classes: classifier outputs.
        image_size: input height and width; ``>= IMAGENET_MIN_SIZE`` selects the ImageNet stem (stride 4 simple
            stem, stride-2 DARTS stem convs, 16x16 ViT patches), smaller sizes the CIFAR stem.
        width: overrides ``genotype.C`` (the base number of channels).

    Raises:
        GenotypeError: (a ``UsageError``) if the genotype is disconnected (``none`` edges cut every path to the
            classifier).
        UsageError: for bad sizes.

    Shapes:
        ``x: (B, 3, image_size, image_size) -> logits (B, num_classes)``
    """

    def __init__(self, genotype: Genotype, num_classes: int = 10, image_size: int = 32, width: int | None = None):
        super().__init__()
        plan = plan_network(genotype, num_classes, image_size, width)
        if not plan.connected:
            raise GenotypeError(f"genotype is disconnected: 'none' edges cut every path to the classifier: {genotype}")
        self.genotype = genotype
        self.plan = plan
        self.expected_input_sz = image_size  # default input size of archspace.to_graph
        g, C, norm = genotype, plan.C, genotype.norm
        self.is_vit = plan.is_vit
        self.stem_type = g.stem_type
        if plan.is_vit:
            patch = 16 if plan.imagenet else 3
            self.stem0 = nn.Conv2d(3, C, patch, stride=patch, padding=int(patch < 4), bias=False)
            self.pos_enc = PosEnc(C, plan.stem_size)
        elif g.stem_type == 0:
            C_stem = plan.stem_channels[0]
            layers = [nn.Conv2d(3, C_stem, g.stem_kernel, stride=4 if plan.imagenet else 1,
                                padding=g.stem_kernel // 2, bias=False), norm_layer(norm, C_stem)]
            if g.stem_pool:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            self.stem = nn.Sequential(*[m for m in layers if m is not None])
        else:
            s = 2 if plan.imagenet else 1
            layers = [nn.Conv2d(3, C // 2, g.stem_kernel, stride=s, padding=g.stem_kernel // 2, bias=False),
                      norm_layer(norm, C // 2), nn.ReLU(),
                      nn.Conv2d(C // 2, C, 3, stride=s, padding=1, bias=False), norm_layer(norm, C)]
            self.stem0 = nn.Sequential(*[m for m in layers if m is not None])
            if plan.stem1_live:
                layers = [nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), norm_layer(norm, C)]
                self.stem1 = nn.Sequential(*[m for m in layers if m is not None])
        self.cells = nn.ModuleList(Cell(cell, norm) for cell in plan.cells)
        if not g.vgg_head:
            self.global_pooling = nn.AdaptiveAvgPool2d(1)
        dims = [plan.head_in] + [g.fc_dim] * (g.fc_layers - 1) + [num_classes]
        fc: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if k > 0:
                fc += [nn.ReLU(), nn.Dropout(0.5)]
            fc.append(nn.Linear(a, b))
        self.classifier = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_vit:
            s0 = s1 = self.pos_enc(self.stem0(x))  # (B, C, S, S)
        elif self.stem_type == 0:
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem0(x)
            s1 = self.stem1(s0) if hasattr(self, "stem1") else None
        for cell in self.cells:
            s0, s1 = s1, (cell(s0, s1) if cell.live else None)
        out = self.global_pooling(s1) if hasattr(self, "global_pooling") else s1
        return self.classifier(out.flatten(1))  # (B, num_classes)
