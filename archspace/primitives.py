"""The fifteen DeepNets-1M primitives and the table from module types to primitives.

The ids are rows of the GHN's primitive embedding (Knyazev et al., NeurIPS 2021, Sec. 3 and Appendix; the order
follows the reference implementation's ``PRIMITIVES_DEEPNETS1M``), so they must never be reordered: checkpoints
depend on them. Adding a supported layer type is a one-line change to :data:`MODULE_PRIMITIVES`.
"""

from __future__ import annotations

import torch.nn as nn

#: Primitive names, indexed by id (the GHN embedding row). Never reorder.
PRIMITIVES: tuple[str, ...] = (
    "max_pool",  # 0
    "avg_pool",  # 1
    "sep_conv",  # 2: grouped conv/linear weight with dilation 1
    "dil_conv",  # 3: grouped conv weight with dilation > 1
    "conv",  # 4: dense conv or linear weight
    "msa",  # 5: multi-head self-attention
    "cse",  # 6: channel squeeze-excitation
    "sum",  # 7
    "concat",  # 8
    "input",  # 9
    "bias",  # 10: bias of a conv/linear layer
    "bn",  # 11: batch norm (weight and bias on one node)
    "ln",  # 12: layer/group norm (weight and bias on one node)
    "pos_enc",  # 13: learned positional encoding / class token
    "glob_avg",  # 14: global average pooling
)

#: Number of primitives, ``K`` in the shape glossary.
NUM_PRIMITIVES: int = len(PRIMITIVES)

#: Primitive name -> id.
PRIMITIVE_ID: dict[str, int] = {name: i for i, name in enumerate(PRIMITIVES)}

#: Module types whose *weight* becomes a node of the given primitive (for conv-like primitives every ``weight*``
#: parameter, e.g. the ``weight_ih_l0`` and ``weight_hh_l0`` of recurrent layers, and every ``bias*`` a ``bias``
#: node). Conv-like weights are refined by :func:`conv_primitive` (grouped -> ``sep_conv``/``dil_conv``). Subclasses
#: are matched through the MRO.
MODULE_PRIMITIVES: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv",
    nn.ConvTranspose2d: "conv",
    nn.ConvTranspose3d: "conv",
    nn.Linear: "conv",
    nn.BatchNorm1d: "bn",
    nn.BatchNorm2d: "bn",
    nn.BatchNorm3d: "bn",
    nn.SyncBatchNorm: "bn",
    nn.LayerNorm: "ln",
    nn.GroupNorm: "ln",
    nn.InstanceNorm1d: "ln",
    nn.InstanceNorm2d: "ln",
    nn.InstanceNorm3d: "ln",
    nn.MultiheadAttention: "msa",
    nn.RNNBase: "conv",  # LSTM, GRU, RNN: every weight_* a conv node, every bias_* a bias node
    nn.MaxPool1d: "max_pool",
    nn.MaxPool2d: "max_pool",
    nn.AdaptiveMaxPool2d: "max_pool",
    nn.AvgPool1d: "avg_pool",
    nn.AvgPool2d: "avg_pool",
}

#: Parameter-free operations (functions and tensor methods, by name) and the primitive they map to.
FUNCTION_PRIMITIVES: dict[str, str] = {
    "add": "sum",
    "add_": "sum",
    "iadd": "sum",
    "__add__": "sum",
    "__iadd__": "sum",
    "__radd__": "sum",
    "cat": "concat",
    "concat": "concat",
    "max_pool1d": "max_pool",
    "max_pool2d": "max_pool",
    "adaptive_max_pool2d": "max_pool",
    "avg_pool1d": "avg_pool",
    "avg_pool2d": "avg_pool",
    # The reference maps torch's adaptive average pooling (whatever its output size) and spatial means to
    # ``glob_avg`` (``ppuda/deepnets1m/graph.py``); ``mean`` is kept only over the spatial dims, see
    # :func:`archspace.capture` for the rule.
    "adaptive_avg_pool1d": "glob_avg",
    "adaptive_avg_pool2d": "glob_avg",
    "mean": "glob_avg",
    "scaled_dot_product_attention": "msa",
}

#: Module classes, by qualified name, whose weight becomes a node of the given primitive: for classes that live in
#: optional packages or in files written later (matched through the MRO like :data:`MODULE_PRIMITIVES`).
MODULE_NAME_PRIMITIVES: dict[str, str] = {
    "archspace.ops.PosEnc": "pos_enc",
    "torchvision.models.convnext.LayerNorm2d": "ln",
}

#: Module classes, by qualified name, that become one *unit* node of the given primitive: their linear/conv
#: layers still give ``conv``/``bias`` nodes, but their parameter-free ops collapse into a single ``cse`` node (the
#: gating product), as the reference graphs show squeeze-excitation. Attention needs no entry here: the capture
#: recognises it from the operations themselves (see :data:`ATTENTION_PRODUCTS`).
UNIT_PRIMITIVES: dict[str, str] = {
    "archspace.ops.ChannelSE": "cse",
    "torchvision.ops.misc.SqueezeExcitation": "cse",
    "timm.layers.squeeze_excite.SEModule": "cse",
    "timm.layers.squeeze_excite.EffectiveSEModule": "cse",
    "timm.layers.squeeze_excite.SqueezeExciteCl": "cse",
    "timm.models._efficientnet_blocks.SqueezeExcite": "cse",  # timm's EfficientNet, MobileNetV3, MixNet, GhostNet
}

#: Products of two tensors. A product of two activations starts an attention score map ``q k^T``; an ``msa`` node
#: is made when :data:`ATTENTION_NORMALISERS` is applied to it, and the product of that node with the values ``v``
#: joins it (the explicit ``softmax(q k^T / sqrt(d)) v`` of Vaswani et al., 2017, Sec. 3.2.1). The fused
#: ``scaled_dot_product_attention`` is ``msa`` in :data:`FUNCTION_PRIMITIVES`.
ATTENTION_PRODUCTS: frozenset[str] = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "einsum"})

#: Functions that turn an attention score map into attention weights.
ATTENTION_NORMALISERS: frozenset[str] = frozenset({"softmax", "_softmax"})

#: Parameters that belong to no layer of the tables above (*free* parameters: layer scales, class and distillation
#: tokens, position embeddings, relative-position tables, attention biases) are bound where the forward pass uses
#: them, by the operation that first combines them with activations (the parameter may be reshaped, indexed or
#: interpolated before that). Parameters that enter an attention score map or ``scaled_dot_product_attention`` are
#: bound to its ``msa`` node whatever the operation; a free parameter computed together with a layer's weight (a
#: weight-standardisation gain) joins that weight's node. Otherwise, by operation:
#:
#: - ``pos_enc``: a source node feeding the op (concatenated class/register tokens);
#: - ``sum``: added; a ``pos_enc`` source when the added tensor extends over more than one dim (a position
#:   embedding), else a ``bias`` node (a per-channel offset);
#: - ``conv``: used as a weight: ``conv`` for a tensor of 2 or more dims, ``bias`` for a vector;
#: - ``ln`` / ``bn``: one norm-like node for all free parameters of the op (a per-channel scale such as a layer
#:   scale is ``ln``, as torchvision's ConvNeXt ``layer_scale``).
#:
#: A free parameter first used by any other op stays unbound and is reported.
FREE_PARAM_PRIMITIVES: dict[str, str] = {
    "cat": "pos_enc",
    "concat": "pos_enc",
    "add": "sum",
    "add_": "sum",
    "__add__": "sum",
    "__iadd__": "sum",
    "__radd__": "sum",
    "sub": "sum",
    "sub_": "sum",
    "__sub__": "sum",
    "__isub__": "sum",
    "__rsub__": "sum",
    "mul": "ln",
    "mul_": "ln",
    "__mul__": "ln",
    "__imul__": "ln",
    "__rmul__": "ln",
    "div": "ln",
    "div_": "ln",
    "__truediv__": "ln",
    "__itruediv__": "ln",
    "addcmul": "ln",
    "addcmul_": "ln",
    "maximum": "ln",  # a learned per-channel threshold (the TLU of filter response normalisation)
    "minimum": "ln",
    "layer_norm": "ln",
    "group_norm": "ln",
    "rms_norm": "ln",
    "instance_norm": "ln",
    "batch_norm": "bn",
    "linear": "conv",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "matmul": "conv",
    "__matmul__": "conv",
    "__rmatmul__": "conv",
    "bmm": "conv",
    "mm": "conv",
    "einsum": "conv",
}


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, the key of the by-name tables."""
    return f"{cls.__module__}.{cls.__qualname__}"


def primitive_of_module(module: nn.Module) -> str | None:
    """Return the primitive name for a module type, or ``None`` if the type is not in the table.

    Looks up :data:`MODULE_PRIMITIVES` by type and :data:`MODULE_NAME_PRIMITIVES` by qualified name, walking the
    MRO so that subclasses inherit their base's primitive.

    Args:
        module: any ``nn.Module``.

    Returns:
        A name from :data:`PRIMITIVES` (conv-like weights already refined by :func:`conv_primitive`), or ``None``.
    """
    for cls in type(module).__mro__:
        name = MODULE_PRIMITIVES.get(cls) or MODULE_NAME_PRIMITIVES.get(qualified_name(cls))
        if name is not None:
            return conv_primitive(module) if name == "conv" else name
    return None


def unit_primitive(module: nn.Module) -> str | None:
    """Return ``"cse"`` if the module's class (or a base class) is in :data:`UNIT_PRIMITIVES`, else ``None``.

    Args:
        module: any ``nn.Module``.

    Returns:
        The unit's primitive name or ``None``.
    """
    for cls in type(module).__mro__:
        name = UNIT_PRIMITIVES.get(qualified_name(cls))
        if name is not None:
            return name
    return None


def conv_primitive(module: nn.Module) -> str:
    """Refine a conv/linear weight into ``conv``, ``sep_conv`` (grouped, dilation 1) or ``dil_conv`` (grouped,
    dilation > 1), following the DeepNets-1M graph rules (Knyazev et al., 2021, Appendix).

    Args:
        module: a convolution or linear module.

    Returns:
        ``"conv"``, ``"sep_conv"`` or ``"dil_conv"``.
    """
    groups = getattr(module, "groups", 1)
    if groups > 1:
        dilation = getattr(module, "dilation", (1,))
        dilation = dilation if isinstance(dilation, (tuple, list)) else (dilation,)
        return "dil_conv" if min(dilation) > 1 else "sep_conv"  # the reference tests min(dilation)
    return "conv"
