"""Fast output-shape rules for the commonest ops on the meta device, used by the graph capture.

Graph construction (:func:`archspace.to_graph`) runs one forward pass on ``meta`` tensors. Several of torch's meta
kernels are written in Python and cost 0.1-0.7 ms per call (``batch_norm``, ``layer_norm``, ``linear``, the
out-of-place activations and element-wise ops), which made the forward pass of a ResNet-50 take ~40 ms. The
rules here compute the output of those ops directly as an empty meta tensor of the right shape and dtype (a few
microseconds). They only cover the plain cases; anything unusual returns ``None`` and the real meta kernel runs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

_META = torch.device("meta")


def _empty(shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=_META)


def _is_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and type(t) is torch.Tensor and t.device == _META


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """``torch.broadcast_shapes(a, b)`` for two shapes (the torch function is ~30 us), ``None`` if they clash."""
    if a == b:
        return tuple(a)
    if len(a) < len(b):
        a, b = b, a
    out = list(a)
    offset = len(a) - len(b)
    for i, s in enumerate(b):
        t = out[offset + i]
        if s != t:
            if t == 1:
                out[offset + i] = s
            elif s != 1:
                return None
    return tuple(out)


def _flag(args: tuple, kwargs: dict, index: int, name: str) -> bool:
    """Value of a boolean argument given positionally at ``index`` or by keyword ``name`` (default False)."""
    if name in kwargs:
        return bool(kwargs[name])
    return bool(args[index]) if len(args) > index else False


def _same_shape(inplace_index: int | None) -> Callable[[tuple, dict], torch.Tensor | None]:
    """Rule for ops whose output has the input's shape (activations, norms, dropout, softmax)."""

    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        x = args[0] if args else kwargs.get("input")
        if not _is_meta(x) or not x.is_floating_point():
            return None
        if inplace_index is not None and _flag(args, kwargs, inplace_index, "inplace"):
            return x
        return _empty(x.shape, x)

    return rule


def _binary(inplace: bool) -> Callable[[tuple, dict], torch.Tensor | None]:
    """Rule for broadcasting element-wise ops of floating tensors of one dtype and Python numbers."""

    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if kwargs.keys() - {"alpha"} or len(args) != 2:
            return None
        a, b = args
        tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
        if not tensors or not all(_is_meta(t) for t in tensors):
            return None
        if any(not isinstance(t, (torch.Tensor, int, float)) or isinstance(t, bool) for t in (a, b)):
            return None
        dtype = tensors[0].dtype
        if not dtype.is_floating_point or any(t.dtype != dtype for t in tensors):
            return None
        if len(tensors) == 2:
            shape = _broadcast(a.shape, b.shape)
            if shape is None:
                return None
        else:
            shape = tensors[0].shape
        if inplace:
            return a if isinstance(a, torch.Tensor) and tuple(a.shape) == tuple(shape) else None
        return torch.empty(shape, dtype=dtype, device=_META)

    return rule


def _softmax(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs.get("dtype") is not None or (len(args) > 3 and args[3] is not None):
        return None  # a dtype argument changes the output dtype
    return _same_shape(None)(args, kwargs)


def _linear(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs.keys() - {"bias"} or len(args) < 2:
        return None
    x, w = args[0], args[1]
    if not (_is_meta(x) and _is_meta(w)) or w.dim() != 2 or x.dim() < 1 or x.shape[-1] != w.shape[1]:
        return None
    return _empty((*x.shape[:-1], w.shape[0]), x)


def _adaptive_avg_pool(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2:
        return None
    x, size = args
    if not _is_meta(x) or x.dim() < 3:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2:
        return None
    out = tuple(x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(size))
    return _empty((*x.shape[:-2], *out), x)


def _cat(args: tuple, kwargs: dict) -> torch.Tensor | None:
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if kwargs.keys() - {"tensors", "dim"} or not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    if not all(_is_meta(t) for t in tensors) or not isinstance(dim, int):
        return None
    first = tensors[0]
    if any(t.dim() != first.dim() or t.dtype != first.dtype for t in tensors) or first.dim() == 0:
        return None
    dim = dim % first.dim()
    shape = list(first.shape)
    for t in tensors[1:]:
        if any(s != u for k, (s, u) in enumerate(zip(t.shape, first.shape)) if k != dim):
            return None
        shape[dim] += t.shape[dim]
    return _empty(tuple(shape), first)


def _compare(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2 or not _is_meta(args[0]):
        return None
    a, b = args
    if isinstance(b, torch.Tensor):
        if not _is_meta(b):
            return None
        shape = _broadcast(a.shape, b.shape)
        if shape is None:
            return None
    elif isinstance(b, (int, float)):
        shape = a.shape
    else:
        return None
    return torch.empty(shape, dtype=torch.bool, device=_META)


def _masked_fill(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 3 or not (_is_meta(args[0]) and _is_meta(args[1])):
        return None
    x, mask = args[0], args[1]
    if _broadcast(x.shape, mask.shape) != tuple(x.shape) or not x.is_floating_point():
        return None
    return _empty(x.shape, x)


def _roll(args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = args[0] if args else None
    if not _is_meta(x):
        return None
    return _empty(x.shape, x)


def _pad(args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("input")
    pad = args[1] if len(args) > 1 else kwargs.get("pad")
    if not _is_meta(x) or not isinstance(pad, (tuple, list)) or len(pad) % 2 or len(pad) // 2 > x.dim():
        return None
    shape = list(x.shape)
    for k in range(len(pad) // 2):
        shape[-1 - k] += int(pad[2 * k]) + int(pad[2 * k + 1])
    if min(shape) < 0:
        return None
    return _empty(tuple(shape), x)


def _matmul(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2 or not (_is_meta(args[0]) and _is_meta(args[1])):
        return None
    a, b = args
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2] or a.dtype != b.dtype:
        return None
    batch = _broadcast(a.shape[:-2], b.shape[:-2])
    if batch is None:
        return None
    return _empty((*batch, a.shape[-2], b.shape[-1]), a)


_CONV_ARGS = ("bias", "stride", "padding", "dilation", "groups")


def _conv(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups)`` with numeric padding."""
    if len(args) < 2 or (kwargs and kwargs.keys() - _CONV_ARGS):
        return None
    x, w = args[0], args[1]
    if not (_is_meta(x) and _is_meta(w)) or x.dim() != w.dim() or x.dtype != w.dtype:
        return None
    stride, padding, dilation, groups = (*args[3:7], None, None, None, None)[:4]
    if kwargs:
        stride, padding = kwargs.get("stride", stride), kwargs.get("padding", padding)
        dilation, groups = kwargs.get("dilation", dilation), kwargs.get("groups", groups)
    if isinstance(padding, str):
        return None
    k = w.dim() - 2
    stride, padding, dilation = _ints(stride, 1, k), _ints(padding, 0, k), _ints(dilation, 1, k)
    groups = int(groups or 1)
    if not (len(stride) == len(padding) == len(dilation) == k) or x.shape[1] != w.shape[1] * groups:
        return None
    xs, ws = x.shape, w.shape
    spatial = [(xs[2 + i] + 2 * padding[i] - dilation[i] * (ws[2 + i] - 1) - 1) // stride[i] + 1 for i in range(k)]
    if min(spatial) < 1:
        return None
    return torch.empty((xs[0], ws[0], *spatial), dtype=x.dtype, device=_META)


def _ints(v: Any, default: int, k: int) -> tuple[int, ...]:
    """A conv argument (``None``, an int or a sequence) as ``k`` ints."""
    if v is None:
        return (default,) * k
    if isinstance(v, int):
        return (int(v),) * k
    return tuple(int(a) for a in v)


_MHA_NAMES = ("query", "key", "value", "embed_dim_to_check", "num_heads")


def _multi_head_attention(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``F.multi_head_attention_forward`` on batched ``(L, N, E)`` inputs: ``(L, N, E)`` output and the attention
    weights ``(N, L, S)`` (averaged) or ``(N, heads, L, S)``, or ``None`` when not asked for."""
    named = dict(zip(_MHA_NAMES, args))
    q, k = named.get("query", kwargs.get("query")), named.get("key", kwargs.get("key"))
    heads = named.get("num_heads", kwargs.get("num_heads"))
    if not (_is_meta(q) and _is_meta(k)) or q.dim() != 3 or k.dim() != 3 or not isinstance(heads, int):
        return None
    if len(args) > 15 or kwargs.get("static_k") is not None or kwargs.get("add_zero_attn") or \
            (len(args) > 9 and args[9]) or kwargs.get("bias_k") is not None or (len(args) > 7 and args[7] is not None):
        return None  # extra key/value tokens change the attention shape: let the kernel decide
    need = kwargs.get("need_weights", args[15] if len(args) > 15 else True)
    average = kwargs.get("average_attn_weights", True)
    out = _empty(q.shape, q)
    if not need:
        return out, None
    L, N, S = q.shape[0], q.shape[1], k.shape[0]
    return out, _empty((N, L, S) if average else (N, heads, L, S), q)


#: Function name -> rule ``(args, kwargs) -> output or None``. Names are the ``__name__`` of the torch function or
#: tensor method seen by the capture mode.
FAST_RULES: dict[str, Callable[[tuple, dict], torch.Tensor | None]] = {
    "batch_norm": _same_shape(None),
    "layer_norm": _same_shape(None),
    "group_norm": _same_shape(None),
    "instance_norm": _same_shape(None),
    "relu": _same_shape(1),
    "relu6": _same_shape(1),
    "hardtanh": _same_shape(3),
    "elu": _same_shape(2),
    "leaky_relu": _same_shape(2),
    "gelu": _same_shape(None),
    "silu": _same_shape(1),
    "mish": _same_shape(1),
    "hardswish": _same_shape(1),
    "hardsigmoid": _same_shape(1),
    "sigmoid": _same_shape(None),
    "tanh": _same_shape(None),
    "softmax": _softmax,
    "dropout": _same_shape(3),
    "add": _binary(False),
    "sub": _binary(False),
    "mul": _binary(False),
    "div": _binary(False),
    "__add__": _binary(False),
    "__radd__": _binary(False),
    "__sub__": _binary(False),
    "__mul__": _binary(False),
    "__rmul__": _binary(False),
    "__truediv__": _binary(False),
    "add_": _binary(True),
    "mul_": _binary(True),
    "__iadd__": _binary(True),
    "__imul__": _binary(True),
    "linear": _linear,
    "conv1d": _conv,
    "conv2d": _conv,
    "conv3d": _conv,
    "adaptive_avg_pool2d": _adaptive_avg_pool,
    "cat": _cat,
    "concat": _cat,
    "eq": _compare,
    "ne": _compare,
    "__eq__": _compare,
    "__ne__": _compare,
    "masked_fill": _masked_fill,
    "roll": _roll,
    "pad": _pad,
    "matmul": _matmul,
    "__matmul__": _matmul,
    "multi_head_attention_forward": _multi_head_attention,
}


def fast_output(name: str, args: tuple, kwargs: dict) -> Any:
    """Output of op ``name`` on meta tensors computed without the meta kernel, or ``None`` to run the kernel.

    Args:
        name: ``__name__`` of the torch function or tensor method.
        args: its positional arguments.
        kwargs: its keyword arguments.

    Returns:
        An empty meta tensor of the output's shape and dtype (the input itself for in-place ops), or ``None``.
    """
    rule = FAST_RULES.get(name)
    if rule is None:
        return None
    try:
        return rule(args, kwargs)
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
