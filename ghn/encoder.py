"""Node features of the GHN: the parameter-shape embedding that is added to the primitive embedding.

Knyazev et al., NeurIPS 2021, Sec. 4.2 ("shape encoding"): every node's parameter shape, made 4-D as
``(out, in, h, w)`` (by ``GHN._node_shapes_4d``), is looked up entry by entry in a fixed vocabulary of channel counts
and spatial sizes; the four 8-wide (``D / 4``) embeddings are concatenated and added to the primitive embedding. The
vocabulary and the rule that maps unseen sizes to the nearest seen one reproduce the reference ``ShapeEncoder``
number for number, so that reference checkpoints give the same embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def channel_vocabulary(num_classes: int) -> np.ndarray:
    """Channel counts seen in training: 1, 3, ``num_classes``, 8..56 step 8, 64..4080 step 16, 4096..8192 step 32.

    Args:
        num_classes: the GHN's number of classes (the classifier's out-channels are in the vocabulary).

    Returns:
        Sorted unique int array.
    """
    values = [1, 3, num_classes] + list(range(8, 64, 8)) + list(range(64, 4096, 16)) + list(range(4096, 8193, 32))
    return np.unique(values)


def spatial_vocabulary(max_kernel: int) -> np.ndarray:
    """Spatial sizes seen in training: odd sizes below ``max(12, max_kernel)``, plus 14 and 16.

    Args:
        max_kernel: the largest kernel the decoder predicts (``max_shape[3]``).

    Returns:
        Sorted unique int array.
    """
    return np.unique(list(range(1, max(12, max_kernel), 2)) + [14, 16])


def _nearest_lookup(vocab: np.ndarray, small_aliases: dict[int, int]) -> np.ndarray:
    """Table ``value -> vocabulary index`` for values ``0..vocab[-1]``.

    Values in the vocabulary map to their own index, the ``small_aliases`` to the index of their alias, every other
    value from 1 to ``vocab[-1] - 1`` to the nearest entry (the smaller one on ties, as ``np.argmin`` picks), and 0 to
    the last entry (the reference treats anything it cannot look up as the largest size). Values beyond the table
    are clamped to its last entry by the caller, which is again the largest size.
    """
    index = {int(v): i for i, v in enumerate(vocab)}
    for value, alias in small_aliases.items():
        index[value] = index[alias]
    values = np.arange(int(vocab[-1]) + 1)
    table = np.argmin(np.abs(vocab[None, :] - values[:, None]), axis=1).astype(np.int64)  # (V,)
    for value, i in index.items():
        table[value] = i
    table[0] = len(vocab) - 1
    return table


class ShapeEncoder(nn.Module):
    """Embedding of parameter shapes (Knyazev et al., NeurIPS 2021, Sec. 4.2, shape encoding).

    Args:
        hidden_dim: node embedding size ``D``; each of the four shape entries gets ``D // 4`` features.
        num_classes: the GHN's number of classes (part of the channel vocabulary).
        max_shape: the decoder's maximum shape ``(S_out, S_in, S_h, S_w)``; ``S_w`` sets the spatial vocabulary.

    Shapes:
        ``shape_4d``: ``(N, 4)`` long, the 4-D shape of each node's parameter, all zeros for parameter-free
        nodes. Output: ``(N, D)``.
    """

    def __init__(self, hidden_dim: int, num_classes: int, max_shape: tuple[int, int, int, int]) -> None:
        super().__init__()
        if max_shape[2] != max_shape[3]:
            raise ValueError(f"max_shape must have a square kernel, got {tuple(max_shape)}")
        if hidden_dim % 4:
            raise ValueError(f"hidden_dim must be divisible by 4, got {hidden_dim}")
        self.channels = channel_vocabulary(num_classes)
        self.spatial = spatial_vocabulary(int(max_shape[3]))
        n_ch, n_sp = len(self.channels), len(self.spatial)
        # One extra row in each table is the entry of parameter-free nodes.
        self.embed_spatial = nn.Embedding(n_sp + 1, hidden_dim // 4)
        self.embed_channel = nn.Embedding(n_ch + 1, hidden_dim // 4)
        # 4-7 channels are treated as 8, a 2x2 kernel as 3x3 (reference rules for sizes unseen in training).
        ch_table = _nearest_lookup(self.channels, {c: 8 for c in range(4, 8)})
        sp_table = _nearest_lookup(self.spatial, {2: 3})
        self.register_buffer("channel_table", torch.from_numpy(ch_table), persistent=False)
        self.register_buffer("spatial_table", torch.from_numpy(sp_table), persistent=False)
        self.register_buffer("empty_index", torch.tensor([n_ch, n_ch, n_sp, n_sp]), persistent=False)

    def shape_index(self, shape_4d: torch.Tensor) -> torch.Tensor:
        """Vocabulary indices of 4-D shapes; all-zero rows (no parameter) get the extra "empty" index.

        Args:
            shape_4d: ``(N, 4)`` long.

        Returns:
            ``(N, 4)`` long: channel indices in columns 0-1, spatial indices in columns 2-3.
        """
        ch = self.channel_table[shape_4d[:, :2].clamp(0, len(self.channel_table) - 1)]  # (N, 2)
        sp = self.spatial_table[shape_4d[:, 2:].clamp(0, len(self.spatial_table) - 1)]  # (N, 2)
        index = torch.cat([ch, sp], dim=1)  # (N, 4)
        empty = (shape_4d == 0).all(dim=1, keepdim=True)  # (N, 1)
        return torch.where(empty, self.empty_index.view(1, 4), index)

    def forward(self, shape_4d: torch.Tensor) -> torch.Tensor:
        """Shape embeddings, to be added to the primitive embeddings. ``(N, 4) -> (N, D)``."""
        idx = self.shape_index(shape_4d)
        return torch.cat(
            [self.embed_channel(idx[:, 0]), self.embed_channel(idx[:, 1]),
             self.embed_spatial(idx[:, 2]), self.embed_spatial(idx[:, 3])], dim=1)  # (N, D)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(channels={len(self.channels)}, spatial={len(self.spatial)}, "
                f"dim={self.embed_channel.embedding_dim * 4})")
