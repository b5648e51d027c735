"""Decoders from node embeddings to parameter blocks of the maximum shape (Knyazev et al., NeurIPS 2021, Sec. 4.2)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mlp import MLP


class ConvDecoder(nn.Module):
    """GHN-2 convolutional decoder: a node embedding becomes a ``(S_out, S_in, h, w)`` block.

    A linear layer maps ``D`` to ``H1 x S_h x S_w`` (read as an ``H1``-channel image), the image is cropped to the
    kernel size ``(h, w)``, and 1x1 convolutions ``H1 -> H2 -> S_out * S_in`` give the block. Only the rows of the
    linear layer and the output channels of the last convolution that the caller needs are computed; the result
    equals computing the full block and slicing it. A classifier head maps the out-channel axis to ``num_classes``.

    Args:
        in_features: node embedding size ``D``.
        hidden: the two hidden sizes ``(H1, H2)`` (reference: ``(4D, 8D)``).
        max_shape: ``S = (S_out, S_in, S_h, S_w)``.
        num_classes: out-channels of the classifier head.

    Shapes:
        ``x``: ``(n, D)``; :meth:`forward` output ``(n, n_out, n_in, h, w)``; :meth:`classifier` output
        ``(n, num_classes, n_in)``.
    """

    def __init__(self, in_features: int, hidden: tuple[int, int], max_shape: tuple[int, int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.max_shape = tuple(int(s) for s in max_shape)
        self.num_classes = num_classes
        h1, h2 = hidden
        self.fc = nn.Sequential(nn.Linear(in_features, h1 * max_shape[2] * max_shape[3]), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(h1, h2, 1), nn.ReLU(), nn.Conv2d(h2, max_shape[0] * max_shape[1], 1))
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Conv2d(max_shape[0], num_classes, 1))
        self._rows_cache: dict[tuple, torch.Tensor] = {}

    def _rows(self, kind: str, a: int, b: int, device: torch.device) -> torch.Tensor:
        """Indices of the needed rows: ``fc`` rows of an ``(a, b)`` crop in ``(h, w, channel)`` order, or rows of
        the last convolution for ``a`` out x ``b`` in channels."""
        key = (kind, a, b, str(device))
        rows = self._rows_cache.get(key)
        if rows is None:
            with torch.inference_mode(False):  # cached across calls: must stay usable by autograd later
                rows = self._make_rows(kind, a, b).to(device)
            self._rows_cache[key] = rows
        return rows

    def _make_rows(self, kind: str, a: int, b: int) -> torch.Tensor:
        s_out, s_in, s_h, s_w = self.max_shape
        if kind == "fc":
            grid = torch.arange(self.fc[0].out_features).view(-1, s_h, s_w)  # (H1, S_h, S_w)
            return grid[:, :a, :b].permute(1, 2, 0).reshape(-1)  # pixel-major: the output is channels-last
        return torch.arange(s_out * s_in).view(s_out, s_in)[:a, :b].reshape(-1)

    def _gather_rows(self, layer: nn.Module, kind: str, crops: list[tuple[int, int]],
                     device: torch.device) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        """Per distinct crop, the (weight, bias) rows of ``layer`` it needs, from one gather of all of them."""
        crops = list(dict.fromkeys(crops))
        rows = [self._rows(kind, *c, device) for c in crops]
        sizes = [len(r) for r in rows]
        index = torch.cat(rows) if len(rows) > 1 else rows[0]
        weights = layer.weight.flatten(1).index_select(0, index).split(sizes)
        biases = layer.bias.index_select(0, index).split(sizes)
        return dict(zip(crops, zip(weights, biases)))

    def decode(self, requests: list[tuple[torch.Tensor, tuple[int, int], int | None, int | None, bool]]
               ) -> list[torch.Tensor]:
        """Predict the blocks of several node sets at once, each cropped to its kernel and channels.

        The rows of the linear layer and of the last convolution that the requests need are gathered with one
        ``index_select`` per layer and then split: a gather per request would make autograd allocate a zero
        gradient of the whole layer per request in the backward pass (a 4096 x 8D matrix for the released
        ``max_shape``; measured: most of a training step on small networks). The numbers equal :meth:`forward`
        per request.

        Args:
            requests: per request ``(x, kernel, n_out, n_in, classifier)``: node embeddings ``(n, D)``, the crop
                ``(h, w)`` with ``1 <= h <= S_h``, ``1 <= w <= S_w``, the channels needed (``None``: all) and
                whether to apply the classifier head (then ``kernel`` must be ``(1, 1)`` and ``n_out`` ``S_out``).

        Returns:
            Per request ``(n, n_out, n_in, h, w)``, or ``(n, num_classes, n_in)`` for a classifier request.

        Raises:
            ValueError: a classifier request with another kernel or fewer out-channels.
        """
        if not requests:
            return []
        s_out, s_in = self.max_shape[:2]
        conv0 = self.conv[0]
        device = requests[0][0].device
        reqs = [(x, tuple(k), s_out if o is None else o, s_in if i is None else i, c) for x, k, o, i, c in requests]
        for _, kernel, n_out, _, classifier in reqs:
            if classifier and (kernel != (1, 1) or n_out != s_out):
                raise ValueError(f"a classifier request needs kernel (1, 1) and all {s_out} out-channels, got "
                                 f"kernel {kernel} and {n_out}")
        fc_rows = self._gather_rows(self.fc[0], "fc", [r[1] for r in reqs], device)
        out_rows = self._gather_rows(self.conv[2], "conv", [(r[2], r[3]) for r in reqs], device)
        out = []
        for x, (h, w), n_out, n_in, classifier in reqs:
            n = x.shape[0]
            y = torch.relu(F.linear(x, *fc_rows[(h, w)]))  # (n, h*w*H1)
            y = y.view(n * h * w, -1)  # (n*h*w, H1)
            y = torch.relu(F.linear(y, conv0.weight.flatten(1), conv0.bias))  # (n*h*w, H2)
            y = F.linear(y, *out_rows[(n_out, n_in)])  # (n*h*w, n_out*n_in)
            # Contiguous, so predicted weights have the standard layout (convolutions are slow on odd strides).
            blk = y.view(n, h, w, n_out, n_in).permute(0, 3, 4, 1, 2).contiguous()  # (n, n_out, n_in, h, w)
            if classifier:
                blk = self.class_layer_predictor(blk[..., 0])[..., 0]  # (n, num_classes, n_in)
            out.append(blk)
        return out

    def forward(self, x: torch.Tensor, kernel: tuple[int, int], n_out: int | None = None,
                n_in: int | None = None) -> torch.Tensor:
        """Predict blocks cropped to ``kernel`` and to the first ``n_out`` x ``n_in`` channels.

        The 1x1 convolutions run as matrix products on channels-last pixels (same numbers as the convolutions, up
        to float rounding, and faster on the CPU).

        Args:
            x: ``(n, D)`` node embeddings.
            kernel: ``(h, w)`` with ``1 <= h <= S_h``, ``1 <= w <= S_w``.
            n_out, n_in: channels needed (default: all ``S_out``, ``S_in``).

        Returns:
            ``(n, n_out, n_in, h, w)``.
        """
        return self.decode([(x, kernel, n_out, n_in, False)])[0]

    def classifier(self, x: torch.Tensor, n_in: int | None = None) -> torch.Tensor:
        """Classifier-weight blocks: the 1x1 block with its out axis mapped to classes.

        Args:
            x: ``(n, D)``.
            n_in: input channels needed (default ``S_in``).

        Returns:
            ``(n, num_classes, n_in)``.
        """
        return self.decode([(x, (1, 1), None, n_in, True)])[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(in={self.fc[0].in_features}, max_shape={self.max_shape}, "
                f"classes={self.num_classes})")


class MLPDecoder(nn.Module):
    """The MLP decoder of the reference (GHN-1 ablation): a node embedding becomes the whole maximum-shape block.

    Args:
        in_features: node embedding size ``D``.
        hidden: hidden sizes (reference: ``(2D,)``).
        max_shape: ``S``.
        num_classes: out-channels of the classifier head.

    Shapes:
        as :class:`ConvDecoder`.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], max_shape: tuple[int, int, int, int],
                 num_classes: int) -> None:
        super().__init__()
        self.max_shape = tuple(int(s) for s in max_shape)
        self.num_classes = num_classes
        self.mlp = MLP(in_features, (*hidden, math.prod(self.max_shape)), last_relu=False)
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Linear(hidden[0], num_classes * self.max_shape[0]))

    def forward(self, x: torch.Tensor, kernel: tuple[int, int], n_out: int | None = None,
                n_in: int | None = None) -> torch.Tensor:
        """Blocks cropped to ``kernel`` and channels. ``(n, D) -> (n, n_out, n_in, h, w)``."""
        y = self.mlp(x).view(-1, *self.max_shape)  # (n, S_out, S_in, S_h, S_w)
        return y[:, :n_out, :n_in, :kernel[0], :kernel[1]]

    def classifier(self, x: torch.Tensor, n_in: int | None = None) -> torch.Tensor:
        """Classifier-weight blocks from the shared first layer. ``(n, D) -> (n, num_classes, n_in)``."""
        y = self.class_layer_predictor(self.mlp.fc[0](x))  # (n, num_classes * S_out)
        return y.view(x.shape[0], self.num_classes, self.max_shape[1])[:, :, :n_in]

    def decode(self, requests: list[tuple[torch.Tensor, tuple[int, int], int | None, int | None, bool]]
               ) -> list[torch.Tensor]:
        """Several requests at once, as :meth:`ConvDecoder.decode` (here simply one after the other)."""
        return [self.classifier(x, n_in) if classifier else self.forward(x, kernel, n_out, n_in)
                for x, kernel, n_out, n_in, classifier in requests]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_shape={self.max_shape}, classes={self.num_classes})"
