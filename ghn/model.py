"""GHN: the graph hypernetwork of Knyazev et al., NeurIPS 2021 ("Parameter Prediction for Unseen Deep
Architectures"), compatible number for number with the reference checkpoints."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch_geometric.data import Batch, Data

from archspace.primitives import NUM_PRIMITIVES

from .assign import CLS_B, CLS_W, COL, CONV, VEC, Assignment, assign, copy_tiled, fit_to_shape, is_tiled
from .checkpoint import load_checkpoint, load_state_into, save_checkpoint
from .decoder import ConvDecoder, MLPDecoder
from .encoder import ShapeEncoder
from .gated_gnn import GatedGNN
from .levels import build_schedule
from .mlp import MLP
from .normalize import normalize
from .report import PredictionReport
from .threads import limit_threads, one_thread


def _default_image_size(num_classes: int) -> int:
    """Training image size assumed for checkpoints that do not store one: ImageNet (1000 classes) 224, else 32."""
    return 224 if num_classes == 1000 else 32


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

    Raises:
        ValueError: for an unknown ``hypernet``/``decoder`` or a malformed ``max_shape``.
    """

    def __init__(self, max_shape: Sequence[int] = (64, 64, 11, 11), num_classes: int = 10, hidden_dim: int = 32,
                 hypernet: str = "gatedgnn", decoder: str = "conv", weight_norm: bool = True, ve: bool = True,
                 layernorm: bool = True, image_size: int | None = None, num_steps: int = 1) -> None:
        super().__init__()
        if len(max_shape) != 4:
            raise ValueError(f"max_shape must have 4 entries, got {tuple(max_shape)}")
        self.max_shape = tuple(int(s) for s in max_shape)
        self.num_classes = int(num_classes)
        self.hidden_dim = int(hidden_dim)
        self.hypernet = hypernet
        self.decoder_type = decoder
        self.weight_norm = bool(weight_norm)
        self.ve = bool(ve)
        self.layernorm = bool(layernorm)
        self.image_size = int(image_size) if image_size else _default_image_size(self.num_classes)
        self.num_steps = int(num_steps)

        if layernorm:
            self.ln = nn.LayerNorm(hidden_dim)
        self.embed = nn.Embedding(NUM_PRIMITIVES, hidden_dim)
        self.shape_enc = ShapeEncoder(hidden_dim, num_classes, self.max_shape)
        if hypernet == "gatedgnn":
            self.gnn = GatedGNN(hidden_dim, ve=ve, num_steps=num_steps)
        elif hypernet == "mlp":
            self.gnn = MLP(hidden_dim, (hidden_dim, hidden_dim))
        else:
            raise ValueError(f"hypernet must be 'gatedgnn' or 'mlp', got {hypernet!r}")
        if decoder == "conv":
            self.decoder = ConvDecoder(hidden_dim, (hidden_dim * 4, hidden_dim * 8), self.max_shape, num_classes)
        elif decoder == "mlp":
            self.decoder = MLPDecoder(hidden_dim, (hidden_dim * 2,), self.max_shape, num_classes)
        else:
            raise ValueError(f"decoder must be 'conv' or 'mlp', got {decoder!r}")
        max_ch = max(self.max_shape[:2])
        self.decoder_1d = MLP(hidden_dim, (hidden_dim * 2, 2 * max_ch), last_relu=False)
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(max_ch, num_classes))
        # Initialisation: PyTorch's defaults for every layer, as the reference (no custom init).

    # ------------------------------------------------------------------ configuration and checkpoints
    @property
    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this GHN (stored in checkpoints)."""
        return {"max_shape": list(self.max_shape), "num_classes": self.num_classes, "hidden_dim": self.hidden_dim,
                "hypernet": self.hypernet, "decoder": self.decoder_type, "weight_norm": self.weight_norm,
                "ve": self.ve, "layernorm": self.layernorm, "image_size": self.image_size,
                "num_steps": self.num_steps}

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> GHN:
        """Load a GHN from our safetensors checkpoint or a reference ``torch.save`` checkpoint.

        Args:
            path: checkpoint file.
            device: where to put the GHN.

        Returns:
            The GHN, in eval mode.

        Raises:
            ghn.checkpoint.CheckpointError: missing, truncated or foreign file.
        """
        config, state = load_checkpoint(path)
        ghn = cls(**config)
        load_state_into(ghn, state, path)
        return ghn.to(device).eval()

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
        """The 4-D shape (reference ``tensor_shape_to_4d``) of each node's main parameter. ``-> (N, 4)`` long."""
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
                schedule = build_schedule(g.edge_index, g.edge_dist, g.num_nodes, self.ve, x.dtype)
                if dev.type != "cpu":
                    schedule = schedule.to(dev)
            x = self.gnn(x, schedule)
        else:
            x = self.gnn(x)
        if self.layernorm:
            x = self.ln(x)
        return x

    def _assignment(self, g: Batch, models: Sequence[nn.Module]) -> Assignment:
        names = g.param_names  # PyG collates the per-graph lists into a list of lists
        offsets = g.ptr[:-1].tolist()  # (B,) global id of each graph's first node
        return assign(names, offsets, g.cls_role.tolist(), g.op_type.tolist(), list(models), self.max_shape,
                      self.weight_norm)

    def _decode(self, x: torch.Tensor, plan: Assignment) -> dict:
        """Run the decoders once per needed (source, kernel, channels) on the needed nodes; all conv-decoder and
        classifier requests go to the decoder together (see :meth:`ghn.decoder.ConvDecoder.decode`)."""
        blocks, requests = {}, []
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
            rows = torch.tensor([r for _, members in groups for _, r in members], device=blk.device)
            parts = blk.index_select(0, rows).split([len(members) for _, members in groups])  # (n_g, *block) each
            for ((_, _, _, _, fit_shape, shape, norm), members), part in zip(groups, parts):
                m = [min(a, b) for a, b in zip(fit_shape, part.shape[1:])]
                part = part[(slice(None), *(slice(0, k) for k in m))]  # (n_g, *m)
                # The normalisation is elementwise, so applying it before tiling gives the same numbers, cheaper.
                yield members, normalize(part, *norm), fit_shape, shape

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

    @torch.no_grad()
    def predict(self, model: nn.Module, input_size: int | Sequence[int] | None = None, bn_mode: str = "batch",
                graph: Data | None = None, threads: int | None = 1,
                return_report: bool = False) -> nn.Module | tuple[nn.Module, PredictionReport]:
        """Predict all parameters of one network and set them in place: ``model = ghn.predict(model)``.

        Args:
            model: the network.
            input_size: image side or shape used to trace the graph; default: the GHN's training image size.
            bn_mode: what to do with BatchNorm running statistics, which are not predicted (see
                :func:`ghn.batchnorm.set_bn_mode`): ``"batch"`` (default) always normalise with batch statistics,
                even in eval mode; ``"keep"`` leave BN layers as they are (then call
                :func:`ghn.batchnorm.recompute_bn_stats` before evaluating); ``"reset"`` reset the running
                statistics to their initial values.
            graph: a prebuilt graph of ``model`` (built with ``archspace.to_graph`` if ``None``).
            threads: cap on intra-op CPU threads while predicting (restored afterwards); ``None`` keeps the
                current setting. One prediction is a long chain of small operations; measured on a 2-core machine
                shared with other jobs, 1 thread was 2-3x faster than 2 (resnet50: 86 vs 228 ms); on an idle
                machine 2 threads would save a few ms of decoder time.

        Returns:
            ``(model, report)``: the same model object with predicted parameters, and a
            :class:`ghn.report.PredictionReport` (what was predicted, tiled, left untouched).

        Raises:
            ValueError: for an unknown ``bn_mode``.
        """
        from .batchnorm import set_bn_mode

        start = time.perf_counter()
        with limit_threads(threads, self.embed.weight.device):
            if graph is None:
                from archspace import to_graph

                size = self.image_size if input_size is None else input_size
                graph = to_graph(model, size, ve_cutoff=50 if self.ve else 1)
            g = Batch.from_data_list([graph])
            plan = self._assignment(g, [model])
            params = dict(model.named_parameters())
            with torch.inference_mode():  # lighter than no_grad for the many small operations
                predicted, tiled = self._write_predictions(g, plan, params)
        set_bn_mode(model, bn_mode)
        order = {n: i for i, n in enumerate(params)}
        predicted.sort(key=order.__getitem__)
        tiled.sort(key=order.__getitem__)
        if not return_report:
            return model
        return model, PredictionReport(
            predicted=predicted, tiled=tiled, untouched=plan.untouched[0],
            num_params_predicted=sum(params[n].numel() for n in predicted),
            num_params_total=sum(p.numel() for p in params.values()), bn_mode=bn_mode,
            seconds=time.perf_counter() - start)

    def forward(self, model: nn.Module, input_size: int | Sequence[int] | None = None, bn_mode: str = "batch",
                graph: Data | None = None, threads: int | None = 1,
                return_report: bool = False) -> nn.Module | tuple[nn.Module, PredictionReport]:
        """Same as :meth:`predict`: ``model = ghn(model)``, or ``model, report = ghn(model, return_report=True)``."""
        return self.predict(model, input_size=input_size, bn_mode=bn_mode, graph=graph, threads=threads,
                            return_report=return_report)

    def extra_repr(self) -> str:
        c = self.config
        return ", ".join(f"{k}={v}" for k, v in c.items())
