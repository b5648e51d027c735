"""Shape encoder: the reference vocabulary and nearest-size rules."""

from __future__ import annotations

import torch

from ghn.encoder import ShapeEncoder


def _index(enc, shape):
    return enc.shape_index(torch.tensor([shape])).tolist()[0]


def test_vocabulary_sizes_match_reference_checkpoint():
    enc = ShapeEncoder(32, 10, (64, 64, 11, 11))
    assert enc.embed_channel.weight.shape == (392, 8) and enc.embed_spatial.weight.shape == (9, 8)
    assert list(enc.spatial) == [1, 3, 5, 7, 9, 11, 14, 16]
    assert len(ShapeEncoder(32, 1000, (64, 64, 16, 16)).spatial) == 10


def test_nearest_size_rules():
    enc = ShapeEncoder(32, 10, (64, 64, 11, 11))
    ch = {int(c): i for i, c in enumerate(enc.channels)}
    sp = {int(c): i for i, c in enumerate(enc.spatial)}
    assert _index(enc, [5, 2, 2, 4]) == [ch[8], ch[1], sp[3], sp[3]]  # 4-7 -> 8, tie 2 -> 1; 2x2 -> 3; tie 4 -> 3
    assert _index(enc, [10, 100, 12, 13]) == [ch[10], ch[96], sp[11], sp[14]]
    assert _index(enc, [9000, 0, 17, 15]) == [ch[8192], ch[8192], sp[16], sp[14]]
    assert _index(enc, [0, 0, 0, 0]) == [len(ch), len(ch), len(sp), len(sp)]  # parameter-free node

