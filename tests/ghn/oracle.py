"""Node-by-node re-implementation of the reference GHN-2 forward pass, used as an oracle in the tests.

Written from the reference semantics (ppuda ``GatedGNN.forward``, ``ShapeEncoder``, ``ConvDecoder``,
``GHN._tile_params``/``_normalize``) in the plainest possible form: a Python loop over nodes in topological order,
dictionary look-ups for shapes, the full maximum-shape block decoded and then sliced and tiled with ``repeat``.
It shares only the learnable weights with :class:`ghn.GHN`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from archspace.primitives import PRIMITIVE_ID


def sequential_gnn(gnn, x: torch.Tensor, edge_index: torch.Tensor, edge_dist: torch.Tensor) -> torch.Tensor:
    """Forward then backward sweep, one node at a time, states updated immediately (Eq. 3-4)."""
    n = x.shape[0]
    h = list(x.unbind(0))
    edges = list(zip(edge_index[0].tolist(), edge_index[1].tolist(), edge_dist.tolist()))
    for forward in (True, False):
        for v in (range(n) if forward else reversed(range(n))):
            m = torch.zeros_like(x[0])
            for a, b, d in edges:
                u = a if forward else b
                if (b if forward else a) != v:
                    continue
                if d == 1:
                    m = m + gnn.mlp(h[u])
                if gnn.ve:
                    m = m + gnn.mlp_ve(h[u]) * torch.tensor(1.0 / d, dtype=x.dtype)
            h[v] = gnn.gru(m[None], h[v][None])[0]
    return torch.stack(h)


@functools.lru_cache(maxsize=8)
def _table(vocab: tuple[int, ...], aliases: tuple[tuple[int, int], ...]) -> dict[int, int]:
    table = {c: i for i, c in enumerate(vocab)}
    for a, b in aliases:
        table[a] = table[b]
    for c in range(1, vocab[-1]):
        if c not in table:
            table[c] = table[vocab[int(np.argmin(np.abs(np.array(vocab) - c)))]]
    return table


def _lookup(vocab: list[int], value: int, aliases: dict[int, int]) -> int:
    return _table(tuple(vocab), tuple(sorted(aliases.items()))).get(value, len(vocab) - 1)


def shape_embedding(ghn, shapes: list[tuple[int, ...] | None]) -> torch.Tensor:
    """The reference shape encoder: dict look-ups of each 4-D shape entry; ``None`` for parameter-free nodes."""
    nc = ghn.num_classes
    channels = sorted(set([1, 3, nc] + list(range(8, 64, 8)) + list(range(64, 4096, 16)) + list(range(4096, 8193, 32))))
    spatial = sorted(set(list(range(1, max(12, ghn.max_shape[3]), 2)) + [14, 16]))
    rows = []
    for sz in shapes:
        if sz is None:
            idx = [len(channels), len(channels), len(spatial), len(spatial)]
        else:
            if len(sz) == 1:
                sz = (sz[0], 1)
            if len(sz) == 2:
                sz = (sz[0], sz[1], 1, 1)
            if len(sz) == 3:
                if sz[0] == 1 and min(sz[1:]) > 1:
                    side = int(math.floor(sz[1] ** 0.5))
                    sz = (1, sz[2], side, side)
                else:
                    sz = (sz[0], sz[1], sz[2], 1)
            idx = [_lookup(channels, sz[i], {c: 8 for c in range(4, 8)}) for i in range(2)] + \
                  [_lookup(spatial, sz[i], {2: 3}) for i in range(2, 4)]
        rows.append(torch.cat([ghn.shape_enc.embed_channel.weight[idx[0]], ghn.shape_enc.embed_channel.weight[idx[1]],
                               ghn.shape_enc.embed_spatial.weight[idx[2]], ghn.shape_enc.embed_spatial.weight[idx[3]]]))
    return torch.stack(rows)


def full_block(ghn, x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """The whole ``(S_out, S_in, h, w)`` block of the conv decoder for one node embedding ``(D,)``."""
    dec = ghn.decoder
    s = ghn.max_shape
    if ghn.decoder_type == "mlp":
        return dec.mlp(x).view(*s)[:, :, : kernel[0], : kernel[1]]
    y = dec.fc(x[None]).view(1, -1, s[2], s[3])[:, :, : kernel[0], : kernel[1]]
    return dec.conv(y).view(s[0], s[1], kernel[0], kernel[1])


def tile(w: torch.Tensor, t: tuple[int, ...]) -> torch.Tensor:
    """Slice each axis to the target, then repeat it (reference ``_tile_params``, applied to every axis)."""
    w = w[tuple(slice(0, min(a, b)) for a, b in zip(t, w.shape))]
    reps = [a // b + 1 if a > b else 1 for a, b in zip(t, w.shape)]
    return w.repeat(*reps)[tuple(slice(0, a) for a in t)]


def normalize(p: torch.Tensor, is_w: bool, pos_enc: bool) -> torch.Tensor:
    """Reference ``_normalize`` on the tiled tensor."""
    if p.dim() > 1:
        if pos_enc:
            return p
        sz = p.shape
        no_relu = len(sz) > 2 and (sz[1] == 1 or (len(sz) > 3 and sz[2] < sz[3]))
        return p * ((1.0 if no_relu else 2.0) / p[0].numel()) ** 0.5
    return 2 * torch.sigmoid(0.5 * p) if is_w else torch.tanh(0.2 * p)


def reference_predict(ghn, graph, model) -> dict[str, torch.Tensor]:
    """Predict every parameter bound in ``graph`` the slow, plain way."""
    params = dict(model.named_parameters())
    shapes = []
    for i in range(graph.num_nodes):
        nd = int(graph.param_ndim[i])
        row = tuple(graph.param_shape[i].tolist())
        # A pooling node carries its kernel as (1, 1, k, k) with ndim 0; other parameter-free nodes are all zeros.
        shapes.append(row[:nd] if nd else (row if any(row) else None))
    x = ghn.embed(graph.op_type) + shape_embedding(ghn, shapes)
    if ghn.hypernet == "gatedgnn":
        x = sequential_gnn(ghn.gnn, x, graph.edge_index, graph.edge_dist)
    else:
        x = ghn.gnn(x)
    if ghn.layernorm:
        x = ghn.ln(x)
    s = ghn.max_shape
    out = {}
    for v, names in enumerate(graph.param_names):
        for name in names:
            t = tuple(params[name].shape)
            is_w = not name.endswith("bias")
            role = int(graph.cls_role[v])
            if len(t) == 1:
                w = ghn.decoder_1d(x[v]).view(2, -1)
                if role == 2:
                    w = ghn.bias_class(w)
                p = tile(w[0 if is_w else 1], t)
            elif len(t) == 3 and t[1] == t[2] == 1:
                p = tile(ghn.decoder_1d(x[v]).view(-1, 1, 1), t)
            elif role == 1 and ghn.decoder_type == "mlp":
                w = ghn.decoder.class_layer_predictor(ghn.decoder.mlp.fc[0](x[v])).view(ghn.num_classes, -1)
                p = tile(w.reshape(w.shape[0], w.shape[1], *([1] * (len(t) - 2))), t)
            elif role == 1:
                blk = full_block(ghn, x[v], (1, 1))[:, :, :, 0]  # (S_out, S_in, 1)
                w = ghn.decoder.class_layer_predictor(blk[None])[0, :, :, 0]  # (classes, S_in)
                p = tile(w.reshape(w.shape[0], w.shape[1], *([1] * (len(t) - 2))), t)  # constant over a kernel
            else:
                t4 = t + (1,) * (4 - len(t))
                blk = full_block(ghn, x[v], (min(t4[2], s[2]), min(t4[3], s[3])))
                p = tile(blk, t4).reshape(t)
            if ghn.weight_norm:
                p = normalize(p, is_w, int(graph.op_type[v]) == PRIMITIVE_ID["pos_enc"])
            out[name] = p
    return out
