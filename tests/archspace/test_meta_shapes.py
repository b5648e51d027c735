"""The fast meta shape rules agree with torch's meta kernels."""

import pytest
import torch
import torch.nn.functional as F

from archspace.meta_shapes import FAST_RULES, fast_output


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


x4 = meta(2, 8, 5, 7)
CASES = [
    ("batch_norm", F.batch_norm, (x4, meta(8), meta(8), meta(8), meta(8), False), {}),
    ("layer_norm", F.layer_norm, (meta(2, 9, 16), (16,)), {}),
    ("relu", F.relu, (x4,), {}),
    ("gelu", F.gelu, (meta(3, 4),), {}),
    ("softmax", F.softmax, (meta(3, 4),), {"dim": -1}),
    ("add", torch.add, (x4, meta(8, 1, 1)), {}),
    ("__mul__", torch.Tensor.__mul__, (x4, 2.0), {}),
    ("conv2d", F.conv2d, (x4, meta(6, 4, 3, 2), None, 2, (1, 0), (2, 1), 2), {}),
    ("conv1d", F.conv1d, (meta(1, 4, 9), meta(5, 4, 3)), {"stride": 2}),
    ("linear", F.linear, (meta(2, 5, 16), meta(4, 16), meta(4)), {}),
    ("adaptive_avg_pool2d", F.adaptive_avg_pool2d, (x4, (1, None)), {}),
    ("cat", torch.cat, ([x4, x4[:, :3]], 1), {}),
    ("ne", torch.ne, (x4, 0), {}),
    ("masked_fill", torch.Tensor.masked_fill, (x4, meta(1, 1, 5, 7, dtype=torch.bool), 0.0), {}),
    ("roll", torch.roll, (x4, (1, 2), (2, 3)), {}),
    ("pad", F.pad, (x4, (1, 2, 0, 3)), {}),
    ("matmul", torch.matmul, (meta(3, 1, 4, 5), meta(2, 5, 6)), {}),
]


@pytest.mark.parametrize("name, fn, args, kwargs", CASES, ids=[c[0] for c in CASES])
def test_rule_matches_meta_kernel(name, fn, args, kwargs):
    fast = fast_output(name, args, kwargs)
    real = fn(*args, **kwargs)
    assert fast is not None and fast.device.type == "meta"
    assert fast.shape == real.shape and fast.dtype == real.dtype


def test_multi_head_attention_rule():
    q = meta(7, 2, 16)
    w_in, b_in, w_out, b_out = meta(48, 16), meta(48), meta(16, 16), meta(16)
    args = (q, q, q, 16, 4, w_in, b_in, None, None, False, 0.0, w_out, b_out)
    fast = fast_output("multi_head_attention_forward", args, {"training": False, "need_weights": True})
    real = F.multi_head_attention_forward(*args, training=False, need_weights=True)
    assert [t.shape for t in fast] == [t.shape for t in real]


def test_unusual_calls_fall_back():
    assert fast_output("add", (meta(2, 3), meta(2, 3, dtype=torch.float16)), {}) is None  # type promotion
    assert fast_output("relu", (meta(2, dtype=torch.int64),), {}) is None
    assert fast_output("conv2d", (meta(1, 3, 4, 4), meta(3, 3, 3, 3)), {"padding": "same"}) is None
    assert fast_output("max_pool2d", (meta(1, 3, 4, 4), 2), {}) is None  # no rule
    assert fast_output("add", (torch.zeros(2), torch.zeros(2)), {}) is None  # not meta
    assert all(callable(rule) for rule in FAST_RULES.values())
