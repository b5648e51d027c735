"""GHN: the graph hypernetwork of Knyazev et al., NeurIPS 2021 ("Parameter Prediction for Unseen Deep
Architectures"), compatible number for number with the reference checkpoints."""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch_geometric.data import Batch, Data

from archspace.capture import ForwardError
from archspace.errors import UsageError
from archspace.graph import input_shape, to_graph
from archspace.primitives import NUM_PRIMITIVES

from .assign import (
    CLS_B,
    CLS_W,
    COL,
    CONV,
    VEC,
    Assignment,
    assign,
    check_bindings,
    copy_tiled,
    fit_to_shape,
    is_tiled,
)
from .batchnorm import check_bn_mode, set_bn_mode
from .checkpoint import CheckpointError, load_checkpoint, load_state_into, read_train_width_range, save_checkpoint
from .concat_parts import concat_inputs
from .decoder import ConvDecoder, MLPDecoder
from .encoder import ShapeEncoder
from .gated_gnn import GatedGNN
from .levels import build_schedule
from .mlp import MLP
from .normalize import normalize
from .report import PredictionReport
from .threads import limit_threads, one_thread
from .widen import narrow_sibling, widen_network


class ClassMismatchError(UsageError):
    """The network's classifier has another number of outputs than the classes the GHN was trained for."""


class InputSizeError(UsageError):
    """The input size is not a size, or the network's forward pass fails at it."""


def _default_image_size(num_classes: int) -> int:
    """Training image size assumed for checkpoints that do not store one: ImageNet (1000 classes) 224, else 32."""
    return 224 if num_classes == 1000 else 32


def _positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int (any integer type, not a bool), at least ``minimum``; :class:`UsageError` otherwise."""
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if isinstance(value, bool) or n is None or n < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def _flag(name: str, value) -> bool:
    """``value`` as a bool (``True``/``False`` or 0/1); :class:`UsageError` otherwise."""
    if not isinstance(value, int) or value not in (0, 1):
        raise UsageError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _declared_input_size(model: nn.Module) -> int | None:
    """The input size a model declares: ``expected_input_sz`` (set by :func:`archspace.adapt_small_input` and
    DeepNets-1M nets) or ``image_size`` (torchvision's ViT)."""
    return getattr(model, "expected_input_sz", None) or getattr(model, "image_size", None)


class GHN(nn.Module):
    """Graph hypernetwork GHN-2 (Knyazev et al., NeurIPS 2021, Sec. 4): predicts all parameters of a network from
    its computational graph in one forward pass.

    Node features are a primitive embedding plus a shape embedding (:class:`ghn.encoder.ShapeEncoder`); a gated
    GNN with forward and backward sweeps and virtual edges (Eq. 3-4, :class:`ghn.gated_gnn.GatedGNN`) propagates
    them; LayerNorm; a conv decoder predicts ``max_shape`` blocks, a 1-D decoder norm weights and biases, two heads
    the classifier; blocks are fitted to the target shapes by slicing and tiling and normalised per operation.

    Variants: GHN-2 is the default; GHN-1 is ``ve=False, layernorm=False, weight_norm=False``; the MLP baseline is
    ``hypernet="mlp"`` (no message passing). Submodule names equal the reference's, so a reference ``state_dict``
    loads as is.

    Args:
        max_shape: largest predicted block ``(S_out, S_in, S_h, S_w)``; released: ``(64, 64, 11, 11)`` for
            CIFAR-10, ``(64, 64, 16, 16)`` for ImageNet.
        num_classes: classes of the training task.
        hidden_dim: node embedding size ``D`` (released: 32).
        hypernet: ``"gatedgnn"`` or ``"mlp"``.
        decoder: ``"conv"`` or ``"mlp"``.
        weight_norm: operation-dependent normalisation of predicted tensors.
        ve: virtual edges in the GNN (Eq. 4).
        layernorm: LayerNorm on node embeddings after the GNN.
        image_size: image side the GHN was trained on (the default input size when building graphs); ``None``:
            224 for 1000 classes, else 32.
        num_steps: rounds of forward + backward sweeps.
        concat_parts: decode a weight whose input is a concatenation of equal parts (a DARTS cell's output read by
            the next cell or the classifier) part by part, each from the weight's node embedding plus a learnt
            projection (zero at initialisation) of the embedding of the part's producer, instead of as one block
            whose input axis is sliced and tiled as a whole (:mod:`ghn.concat_parts`). Not in GHN-2; ``False`` for
            the reference checkpoints.

    Attributes:
        train_width_range: ``(low, high)``, the widths of the nets the GHN was trained on, set by :meth:`load` from
            a ``ghn-train`` checkpoint; ``None`` for a new GHN or a checkpoint that does not record them. Predictors
            (``train.rank.ghn_predictor``, ``ghn predict``) widen DeepNets-1M nets wider than ``high`` from it.

    Raises:
        archspace.errors.UsageError: (a ``ValueError``) an unknown ``hypernet``/``decoder``, a ``max_shape`` that is
            not 4 positive integers with a square kernel, a non-positive size or count, ``hidden_dim`` not divisible
            by 4, a flag that is not a bool.
    """

    def __init__(self, max_shape: Sequence[int] = (64, 64, 11, 11), num_classes: int = 10, hidden_dim: int = 32,
                 hypernet: str = "gatedgnn", decoder: str = "conv", weight_norm: bool = True, ve: bool = True,
                 layernorm: bool = True, image_size: int | None = None, num_steps: int = 1,
                 concat_parts: bool = False) -> None:
        super().__init__()
        if isinstance(max_shape, (str, bytes)) or not hasattr(max_shape, "__len__") or len(max_shape) != 4:
            raise UsageError(f"max_shape must be 4 positive integers (S_out, S_in, S_h, S_w), got {max_shape!r}")
        self.max_shape = tuple(_positive_int("each max_shape entry", s) for s in max_shape)
        if self.max_shape[2] != self.max_shape[3]:
            raise UsageError(f"max_shape must have a square kernel (S_h == S_w), got {self.max_shape}")
        self.num_classes = _positive_int("num_classes", num_classes)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim, 4)
        if self.hidden_dim % 4:
            raise UsageError(f"hidden_dim must be divisible by 4 (four shape embeddings of D/4), got {hidden_dim}")
        if hypernet not in ("gatedgnn", "mlp"):
            raise UsageError(f"hypernet must be 'gatedgnn' or 'mlp', got {hypernet!r}")
        if decoder not in ("conv", "mlp"):
            raise UsageError(f"decoder must be 'conv' or 'mlp', got {decoder!r}")
        self.hypernet = hypernet
        self.decoder_type = decoder
        self.weight_norm = _flag("weight_norm", weight_norm)
        self.ve = _flag("ve", ve)
        self.layernorm = _flag("layernorm", layernorm)
        self.image_size = (_default_image_size(self.num_classes) if image_size is None
                           else _positive_int("image_size", image_size))
        self.num_steps = _positive_int("num_steps", num_steps)
        self.concat_parts = _flag("concat_parts", concat_parts)
        # not a constructor argument: it describes the training, not the model (class docstring, Attributes)
        self.train_width_range: tuple[int, int] | None = None
        hidden_dim = self.hidden_dim

        if self.layernorm:
            self.ln = nn.LayerNorm(hidden_dim)
        self.embed = nn.Embedding(NUM_PRIMITIVES, hidden_dim)
        self.shape_enc = ShapeEncoder(hidden_dim, self.num_classes, self.max_shape)
        if hypernet == "gatedgnn":
            self.gnn = GatedGNN(hidden_dim, ve=self.ve, num_steps=self.num_steps)
        else:
            self.gnn = MLP(hidden_dim, (hidden_dim, hidden_dim))
        if decoder == "conv":
            self.decoder = ConvDecoder(hidden_dim, (hidden_dim * 4, hidden_dim * 8), self.max_shape, self.num_classes)
        else:
            self.decoder = MLPDecoder(hidden_dim, (hidden_dim * 2,), self.max_shape, self.num_classes)
        max_ch = max(self.max_shape[:2])
        self.decoder_1d = MLP(hidden_dim, (hidden_dim * 2, 2 * max_ch), last_relu=False)
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(max_ch, self.num_classes))
        if self.concat_parts:
            self.part_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
            nn.init.zeros_(self.part_proj.weight)  # starts with every part decoded from the weight's own node
        # Initialisation: PyTorch's defaults for every layer, as the reference (no custom init).

    # ------------------------------------------------------------------ configuration and checkpoints
    @property
    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this GHN (stored in checkpoints)."""
        return {"max_shape": list(self.max_shape), "num_classes": self.num_classes, "hidden_dim": self.hidden_dim,
                "hypernet": self.hypernet, "decoder": self.decoder_type, "weight_norm": self.weight_norm,
                "ve": self.ve, "layernorm": self.layernorm, "image_size": self.image_size,
                "num_steps": self.num_steps, "concat_parts": self.concat_parts}

    @property
    def max_train_width(self) -> int | None:
        """The widest width the GHN was trained on (the high end of ``train_width_range``), from which DeepNets-1M
        nets wider than it are predicted and widened (``predict(widen_from=...)``); ``None`` where not recorded."""
        return int(self.train_width_range[1]) if self.train_width_range else None

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> GHN:
        """Load a GHN from our safetensors checkpoint or a reference ``torch.save`` checkpoint.

        Args:
            path: checkpoint file.
            device: where to put the GHN.

        Returns:
            The GHN, in eval mode, with ``train_width_range`` set from the checkpoint's metadata where ``ghn-train``
            recorded it (:func:`ghn.checkpoint.read_train_width_range`).

        Raises:
            ghn.checkpoint.CheckpointError: the file is missing, a directory, empty, unreadable, truncated or
                corrupt, foreign, holds an invalid config, or weights that do not fit its config.
        """
        config, state = load_checkpoint(path)
        try:
            ghn = cls(**config)
        except UsageError as e:
            raise CheckpointError(path, "invalid GHN config", str(e)) from e
        load_state_into(ghn, state, path)
        ghn.train_width_range = read_train_width_range(path)
        return ghn.to(device).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: torch.device | str = "cpu", progress: bool = True) -> GHN:
        """Load a released GHN by name, a checkpoint file, or a ``ghn-train`` run directory (:mod:`ghn.pretrained`).

        Names: ``ghn2-cifar10``, ``ghn2-imagenet``, ``ghn1-cifar10``, ``ghn1-imagenet``, ``mlp-cifar10``, the
        checkpoints released with Knyazev et al., NeurIPS 2021 (facebookresearch/ppuda at a pinned commit),
        downloaded once into the cache folder (``$GHN_CACHE``, default ``~/.cache/ghn-archspace``) and verified by
        their Git blob id before every use.

        Args:
            name_or_path: a released GHN's name, a checkpoint file (ours or a reference ``.pt``), or a run
                directory holding ``ghn.safetensors``.
            device: where to put the GHN.
            progress: show a progress bar while downloading.

        Returns:
            The GHN, in eval mode.

        Raises:
            archspace.errors.UsageError: an unknown name (with a "did you mean").
            ghn.pretrained.DownloadError: offline, an HTTP error, or a download that is truncated or does not match
                (deleted); the message gives the URL and the cache path to put the file at by hand.
            ghn.checkpoint.CheckpointError: as :meth:`load`.
        """
        from .pretrained import resolve_checkpoint

        return cls.load(resolve_checkpoint(name_or_path, progress=progress), device=device)

    def save(self, path: str, extra: dict | None = None) -> None:
        """Write weights and config to a safetensors file, atomically. ``extra``: str-valued metadata to add."""
        save_checkpoint(self, path, extra)

    # ------------------------------------------------------------------ the hypernetwork
    def _as_batch(self, graphs: Batch | Data | Sequence[Data]) -> Batch:
        if isinstance(graphs, Batch):
            return graphs
        if isinstance(graphs, Data):
            return Batch.from_data_list([graphs])
        return Batch.from_data_list(list(graphs))

    def _node_shapes_4d(self, g: Batch) -> torch.Tensor:
        """The 4-D shape ``(out, in, h, w)`` of each node's main parameter, as the reference shape encoder makes it
        (``tensor_shape_to_4d``).

        1-D ``(c,)`` -> ``(c, 1, 1, 1)``; 2-D ``(a, b)`` -> ``(a, b, 1, 1)``; 3-D ``(1, t, d)`` with ``t, d > 1`` (a
        positional encoding) -> ``(1, d, s, s)`` with ``s = floor(sqrt(t))``; other 3-D ``(a, b, c)`` ->
        ``(a, b, c, 1)``; 4-D and more: the first four dims (as stored in ``param_shape``); parameter-free nodes
        (``param_ndim == 0``) pass ``param_shape`` through: zeros, or a pooling kernel ``(1, 1, k, k)``.

        Shapes:
            ``g.param_shape (N, 4)``, ``g.param_ndim (N,)`` -> ``(N, 4)`` long.
        """
        s = g.param_shape.long()  # (N, 4) zero-padded
        nd = g.param_ndim.long().view(-1, 1)  # (N, 1)
        one = torch.ones_like(s[:, :1])
        a, b, c = s[:, 0:1], s[:, 1:2], s[:, 2:3]
        side = torch.sqrt(b.double()).floor().long()
        pos_enc_like = (a == 1) & (torch.minimum(b, c) > 1)
        shape3 = torch.where(pos_enc_like, torch.cat([one, c, side, side], 1), torch.cat([a, b, c, one], 1))
        out = torch.where(nd == 1, torch.cat([a, one, one, one], 1), s)
        out = torch.where(nd == 2, torch.cat([a, b, one, one], 1), out)
        out = torch.where(nd == 3, shape3, out)
        # ndim 0 rows pass through: zeros (parameter-free) get the "no parameter" embedding, and a pooling node's
        # kernel stored as (1, 1, k, k) is embedded like a shape, as the reference does.
        return out  # (N, 4)

    def node_embeddings(self, graphs: Batch | Data | Sequence[Data], schedule=None) -> torch.Tensor:
        """Node embeddings after the GNN and LayerNorm (used by the decoders, ranking and property prediction).

        Args:
            graphs: a PyG ``Batch`` of ``ArchGraph`` (or one graph, or a list).
            schedule: a precomputed :class:`ghn.levels.LevelSchedule` (built on the fly if ``None``).

        Returns:
            ``(N, D)``.
        """
        g = self._as_batch(graphs)
        dev = self.embed.weight.device
        x = self.embed(g.op_type.to(dev)) + self.shape_enc(self._node_shapes_4d(g).to(dev))  # (N, D)
        if isinstance(self.gnn, GatedGNN):
            if schedule is None:
                # in the GNN's dtype (its sweeps run in it, also under autocast): 1 / sp is not rounded to bfloat16
                schedule = build_schedule(g.edge_index, g.edge_dist, g.num_nodes, self.ve, self.embed.weight.dtype)
                if dev.type != "cpu":
                    schedule = schedule.to(dev)
            x = self.gnn(x, schedule)
        else:
            x = self.gnn(x)
        if self.layernorm:
            x = self.ln(x)
        return x

    def _assignment(self, g: Batch, models: Sequence[nn.Module], skip: frozenset[str] = frozenset()) -> Assignment:
        """Bind the parameters named by the graphs to decoder outputs; names in ``skip`` are left unbound."""
        names = g.param_names  # PyG collates the per-graph lists into a list of lists
        if skip:
            names = [[tuple(n for n in node if n not in skip) for node in graph] for graph in names]
        offsets = g.ptr[:-1].tolist()  # (B,) global id of each graph's first node
        parts = (concat_inputs(g.op_type, g.edge_index, g.edge_dist, g.param_shape, g.param_ndim)
                 if self.concat_parts else None)
        return assign(names, offsets, g.cls_role.tolist(), g.op_type.tolist(), list(models), self.max_shape,
                      self.weight_norm, parts)

    def _decode(self, x: torch.Tensor, plan: Assignment) -> dict:
        """Run the decoders once per needed (source, kernel, channels) on the needed nodes; all conv-decoder and
        classifier requests go to the decoder together (see :meth:`ghn.decoder.ConvDecoder.decode`)."""
        blocks, requests = {}, []
        if plan.virtual:  # one embedding per part of the weights decoded part by part (ghn.concat_parts)
            pairs = torch.tensor(plan.virtual, device=x.device)  # (P, 2): weight node, producer node
            x = torch.cat([x, x.index_select(0, pairs[:, 0]) + self.part_proj(x.index_select(0, pairs[:, 1]))])
        for key, nodes in plan.decode.items():
            src, kernel, (n_out, n_in) = key
            xs = x.index_select(0, torch.tensor(nodes, device=x.device))  # (n, D)
            if src in (CONV, CLS_W):
                requests.append((key, (xs, kernel, n_out, n_in, src == CLS_W)))
            else:
                blocks[key] = self.decoder_1d(xs).view(len(nodes), 2, -1)  # (n, 2, S_ch)
        decoded = self.decoder.decode([r for _, r in requests])
        for (key, _), blk in zip(requests, decoded):
            # conv: (n, n_out, n_in, h, w); classifier: (n, classes, n_in, 1)
            blocks[key] = blk.unsqueeze(3) if key[0] == CLS_W else blk
        return blocks

    def _groups(self, blocks: dict, plan: Assignment):
        """Yield ``(members, block, fit_shape, shape)`` per group: ``block`` ``(n_g, *m)`` holds each member's
        block sliced to the target and normalised, still to be tiled to ``fit_shape`` and reshaped to ``shape``.

        The rows of all groups that read one decoded block are gathered with a single ``index_select`` and then
        split: a separate gather per group would make autograd allocate a zero tensor of the whole decoded block
        per group in the backward pass (measured: seconds per training step).
        """
        by_source: dict[tuple, list[tuple]] = {}
        for key, members in plan.groups.items():
            source, kernel, channels = key[:3]
            src_key = (VEC if source in (VEC, COL, CLS_B) else source, kernel, channels)
            view = (source, key[3]) if source in (VEC, CLS_B) else (source, None)  # (source, 1-D decoder row)
            by_source.setdefault((src_key, view), []).append((key, members))
        for (src_key, (source, row)), groups in by_source.items():
            blk = blocks[src_key]
            if source == CLS_B:
                blk = self.bias_class(blk)[:, row]  # (n, classes)
            elif source == VEC:
                blk = blk[:, row]  # (n, S_ch)
            elif source == COL:
                blk = blk.reshape(blk.shape[0], -1)  # (n, 2 S_ch): both rows, as the reference's 3-D path
            rows = torch.tensor([r for _, members in groups for _, rs in members for r in rs], device=blk.device)
            sizes = [sum(len(rs) for _, rs in members) for _, members in groups]
            parts = blk.index_select(0, rows).split(sizes)  # (n_g, *block) each; (n_g * k, *block) by parts
            for ((_, _, _, _, fit_shape, shape, norm, part_channels), members), part in zip(groups, parts):
                if part_channels:
                    part = self._join_parts(part, len(members), part_channels)
                m = [min(a, b) for a, b in zip(fit_shape, part.shape[1:])]
                part = part[(slice(None), *(slice(0, k) for k in m))]  # (n_g, *m)
                # Under autocast (bfloat16 on CUDA) the decoders' products are bfloat16; the predicted parameters
                # keep the GHN's own dtype, as the nets' parameters and BatchNorm buffers do.
                part = part.to(self.embed.weight.dtype)
                # The normalisation is elementwise, so applying it before tiling gives the same numbers, cheaper.
                yield members, normalize(part, *norm), fit_shape, shape

    @staticmethod
    def _join_parts(part: torch.Tensor, n: int, part_channels: int) -> torch.Tensor:
        """Blocks decoded part by part, ``(n * k, b_out, b_in, ...)``, fitted to ``part_channels`` inputs each and
        concatenated along the input axis: ``(n, b_out, k * part_channels, ...)``."""
        per = part.shape[1:]
        part = fit_to_shape(part, (per[0], part_channels, *per[2:]))  # (n * k, b_out, C_part, ...)
        part = part.view(n, -1, per[0], part_channels, *per[2:]).movedim(1, 2)  # (n, b_out, k, C_part, ...)
        return part.reshape(n, per[0], -1, *per[2:])

    def predict_parameters(self, graphs: Batch | Data | Sequence[Data],
                           models: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
        """Predict the parameters of a batch of networks, differentiably (nothing is copied into the models).

        Use with ``torch.func.functional_call(model, params[i], (x,))`` to train the GHN.

        Args:
            graphs: PyG ``Batch`` of ``ArchGraph`` (or one graph / a list), one per model, same order.
            models: the networks (only their parameter names and shapes are read).

        Returns:
            Per model, ``{parameter name: tensor of the parameter's shape}`` for every parameter bound to a node.

        Raises:
            KeyError / ValueError: graphs and models do not match (see :func:`ghn.assign.assign`).
        """
        g = self._as_batch(graphs)
        plan = self._assignment(g, models)
        x = self.node_embeddings(g)
        out: list[dict[str, torch.Tensor]] = [{} for _ in models]
        for members, blk, fit_shape, shape in self._groups(self._decode(x, plan), plan):
            tensors = fit_to_shape(blk, fit_shape).reshape(len(members), *shape).contiguous()  # (n_g, *shape)
            for (i, _), tensor in zip(members, tensors.unbind(0)):
                t = plan.targets[i]
                out[t.graph][t.name] = tensor
        return out

    def _write_predictions(self, g: Batch, plan: Assignment,
                           params: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Predict one graph's parameters and copy them into ``params`` in place; returns (predicted, tiled)."""
        predicted, tiled = [], []
        x = self.node_embeddings(g)
        blocks = self._decode(x, plan)
        with one_thread(x.device):
            for members, blk, fit_shape, _ in self._groups(blocks, plan):
                targets = [plan.targets[i] for i, _ in members]
                dsts = [params[t.name] for t in targets]
                m = blk.shape[1:]
                whole_tiles = all(a % k == 0 for a, k in zip(fit_shape, m)) and tuple(m) != tuple(fit_shape)
                if whole_tiles or not all(p.is_contiguous() for p in dsts):
                    # Large tiled tensors: broadcast each block straight into its parameter (no temporary).
                    for p, b in zip(dsts, blk.unbind(0)):
                        copy_tiled(p, b, fit_shape)
                else:
                    # Untiled or ragged tiles: tile the group at once, then one fused copy.
                    fitted = fit_to_shape(blk, fit_shape)  # (n_g, *fit_shape)
                    torch._foreach_copy_([p.view(fit_shape) for p in dsts], list(fitted.unbind(0)))
                for t in targets:
                    predicted.append(t.name)
                    if is_tiled(t, self.max_shape, self.num_classes):
                        tiled.append(t.name)
        return predicted, tiled

    def _check_graph(self, graph: Data, params: dict[str, nn.Parameter]) -> None:
        """Check that ``graph`` was built from a network with these parameters: every name it binds exists, is
        bound once (:func:`ghn.assign.check_bindings`), and the node's recorded shape is the parameter's.

        Raises:
            UsageError: the first node that does not match.
        """
        if not isinstance(graph, Data) or not hasattr(graph, "param_names"):
            raise UsageError(f"graph must be an archspace ArchGraph (archspace.to_graph), got {type(graph).__name__}")
        labels = getattr(graph, "node_names", None) or [""] * graph.num_nodes
        check_bindings(graph.param_names, params, labels)
        rows = zip(graph.param_names, graph.param_shape.tolist(), graph.param_ndim.tolist(), labels)  # N rows
        for i, (names, shape, ndim, label) in enumerate(rows):
            where = f"node {i} ({label})" if label else f"node {i}"
            want = tuple(shape[:min(4, ndim)])
            if names and ndim > 0 and not any(tuple(params[n].shape[:4]) == want for n in names):
                raise UsageError(f"the graph does not match the model: {where} records shape {want} but the model's "
                                 f"{names[0]!r} has {tuple(params[names[0]].shape)}; build the graph from this model "
                                 "(archspace.to_graph)")

    def _trace(self, model: nn.Module, input_size: int | Sequence[int]) -> Data:
        """The graph of ``model`` traced at ``input_size`` (:func:`archspace.to_graph`).

        Raises:
            InputSizeError: the model's forward pass fails at this size; the message suggests another.
        """
        try:
            return to_graph(model, input_size, ve_cutoff=50 if self.ve else 1)
        except ForwardError as e:  # the model's own forward failed (a bug of the tracer keeps its traceback)
            text = e.reason[:200] + ("..." if len(e.reason) > 200 else "")
            h = input_size if isinstance(input_size, int) else tuple(input_size)[-2]
            declared = _declared_input_size(model)
            if declared and declared != h:
                hint = f"try input size {declared}, the size the model declares"
            elif h != 224:
                hint = "try input size 224"
            else:
                hint = "try input size 32 with the CIFAR recipe (archspace.adapt_small_input, --small-input)"
            raise InputSizeError(f"{type(model).__name__} does not run at input size {input_size} ({text}); "
                                 f"{hint}") from e

    @torch.no_grad()
    def predict(self, model: nn.Module, input_size: int | Sequence[int] | None = None, bn_mode: str = "batch",
                graph: Data | None = None, threads: int | None = 1, keep_classifier_init: bool = False,
                return_report: bool = False, widen_from: int | None = None
                ) -> nn.Module | tuple[nn.Module, PredictionReport]:
        """Predict all parameters of one network and set them in place: ``model = ghn.predict(model)``.

        Every argument is checked before any parameter changes: on an error the model is left as it was.

        Args:
            model: the network.
            input_size: image side ``H``, or ``(C, H, W)``, used to trace the graph; default: the size the model
                declares (``expected_input_sz``, set by :func:`archspace.adapt_small_input` and DeepNets-1M nets,
                or ``image_size``, e.g. torchvision's ViT), else the GHN's training image size.
            bn_mode: how BatchNorm layers are left, since running statistics are not predicted (see
                :mod:`ghn.batchnorm`): ``"batch"`` (default) removes the running buffers, so BN always normalises
                with batch statistics, also in eval mode (as the paper evaluates); ``"running"`` leaves the layers
                as they are, with running buffers at their initial values (call
                :func:`ghn.batchnorm.recompute_bn_stats` before evaluating in eval mode), so the state dict loads
                into the plain model.
            graph: a prebuilt graph of ``model`` (built with ``archspace.to_graph`` at ``input_size`` if ``None``).
            threads: cap on intra-op CPU threads while predicting (restored afterwards); ``None`` keeps the
                current setting. One prediction is a long chain of small operations; measured on a 2-core machine
                shared with other jobs, 1 thread was 2-3x faster than 2 (resnet50: 86 vs 228 ms); on an idle
                machine 2 threads would save a few ms of decoder time.
            keep_classifier_init: leave the classifier (the graph's last layer, nodes with ``cls_role > 0``) at its
                current values, typically its default initialisation, and predict everything else; required when
                the classifier has another number of outputs than the GHN's classes.
            return_report: also return a :class:`ghn.report.PredictionReport`.
            widen_from: a DeepNets-1M network (:class:`archspace.network.Network`) wider than this base width is
                predicted at this width (its narrow sibling) and widened function-preservingly into ``model``
                (:mod:`ghn.widen`, Net2WiderNet): for a GHN trained on nets up to this width. ``graph`` is then
                unused; a classifier kept with ``keep_classifier_init`` keeps ``model``'s own values.
                A widened net that does not compute what its sibling does (checked on a random batch:
                :func:`ghn.widen.widen_network`) is predicted directly instead (the report's ``widened_from`` is
                then ``None``). ``None``, or any other model: predicted as it is.

        Returns:
            ``model`` (the same object, parameters predicted), or ``(model, report)`` with ``return_report``: what
            was predicted, tiled, left untouched or kept at its initial values.

        Raises:
            archspace.errors.UsageError: an unknown ``bn_mode``, a bad ``threads``, or a ``graph`` that does not
                match ``model``.
            InputSizeError: ``input_size`` is not a size, or the model's forward pass fails at it.
            ClassMismatchError: the classifier has M outputs but the GHN was trained for N != M classes and
                ``keep_classifier_init`` is false.
        """
        start = time.perf_counter()
        check_bn_mode(bn_mode)
        if not isinstance(model, nn.Module):
            raise UsageError(f"predict expects an nn.Module, got {type(model).__name__}")
        if threads is not None:
            _positive_int("threads", threads)
        if input_size is None:
            input_size = _declared_input_size(model) or self.image_size
        try:
            input_shape(input_size)
        except ValueError as e:
            raise InputSizeError(str(e)) from e
        if widen_from is not None:
            _positive_int("widen_from", widen_from)
            narrow = narrow_sibling(model, widen_from)
            if narrow is not None:
                _, report = self.predict(narrow, input_size=input_size, bn_mode="running", threads=threads,
                                         keep_classifier_init=keep_classifier_init, return_report=True)
                before = {k: v.clone() for k, v in model.state_dict().items()}
                if not widen_network(narrow, model, input_shape(input_size)):  # not exact: predicted directly
                    model.load_state_dict(before)
                    return self.predict(model, input_size=input_size, bn_mode=bn_mode, graph=graph, threads=threads,
                                        keep_classifier_init=keep_classifier_init, return_report=return_report)
                if report.kept_init:  # the model's own classifier, not the sibling's widened one
                    own = dict(model.named_parameters())
                    for name in report.kept_init:
                        own[name].copy_(before[name])
                set_bn_mode(model, bn_mode)
                if not return_report:
                    return model
                report.widened_from, report.bn_mode = int(widen_from), bn_mode
                report.num_params_total = sum(p.numel() for p in model.parameters())
                report.num_params_predicted = report.num_params_total - sum(
                    p.numel() for n, p in model.named_parameters() if n in report.untouched or n in report.kept_init)
                report.seconds = time.perf_counter() - start
                return model, report
        with limit_threads(threads, self.embed.weight.device):
            if graph is None:
                graph = self._trace(model, input_size)
            params = dict(model.named_parameters())
            self._check_graph(graph, params)
            head = [n for role, names in zip(graph.cls_role.tolist(), graph.param_names) if role > 0 for n in names]
            outputs = params[head[0]].shape[0] if head else None
            if outputs is not None and outputs != self.num_classes and not keep_classifier_init:
                raise ClassMismatchError(
                    f"the GHN was trained for {self.num_classes} classes but the model's classifier "
                    f"({', '.join(head)}) has {outputs} outputs; use a GHN trained for {outputs} classes, or pass "
                    "keep_classifier_init=True (--keep-classifier-init) to leave the classifier at its default "
                    "initialisation")
            kept = head if keep_classifier_init else []
            g = Batch.from_data_list([graph])
            if kept:  # the classifier is embedded with the GHN's own class count, as if the model had it (the
                # reference's predict_class_layers=False), so the other layers get what they get on that task
                g.param_shape = g.param_shape.clone()
                g.param_shape[g.cls_role > 0, 0] = self.num_classes
            plan = self._assignment(g, [model], skip=frozenset(kept))
            with torch.inference_mode():  # lighter than no_grad for the many small operations
                predicted, tiled = self._write_predictions(g, plan, params)
        set_bn_mode(model, bn_mode)
        if not return_report:
            return model
        order = {n: i for i, n in enumerate(params)}
        predicted.sort(key=order.__getitem__)
        tiled.sort(key=order.__getitem__)
        return model, PredictionReport(
            predicted=predicted, tiled=tiled, untouched=[n for n in plan.untouched[0] if n not in kept],
            kept_init=sorted(kept, key=order.__getitem__),
            num_params_predicted=sum(params[n].numel() for n in predicted),
            num_params_total=sum(p.numel() for p in params.values()), bn_mode=bn_mode,
            seconds=time.perf_counter() - start)

    def forward(self, model: nn.Module, input_size: int | Sequence[int] | None = None, bn_mode: str = "batch",
                graph: Data | None = None, threads: int | None = 1, keep_classifier_init: bool = False,
                return_report: bool = False, widen_from: int | None = None
                ) -> nn.Module | tuple[nn.Module, PredictionReport]:
        """Same as :meth:`predict`: ``model = ghn(model)``, or ``model, report = ghn(model, return_report=True)``."""
        return self.predict(model, input_size=input_size, bn_mode=bn_mode, graph=graph, threads=threads,
                            keep_classifier_init=keep_classifier_init, return_report=return_report,
                            widen_from=widen_from)

    def extra_repr(self) -> str:
        c = self.config
        return ", ".join(f"{k}={v}" for k, v in c.items())
