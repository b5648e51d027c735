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

#: Module types whose *weight* becomes a node of the given primitive. Conv-like weights are refined by
#: :func:`conv_primitive` (grouped -> ``sep_conv``/``dil_conv``). Subclasses are matched through the MRO.
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
#: gating product) or ``msa`` node (the attention softmax), as the reference graphs show them.
UNIT_PRIMITIVES: dict[str, str] = {
    "archspace.ops.ChannelSE": "cse",
    "torchvision.ops.misc.SqueezeExcitation": "cse",
    "timm.layers.squeeze_excite.SEModule": "cse",
    "torchvision.models.swin_transformer.ShiftedWindowAttention": "msa",
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": "msa",
    "torchvision.models.maxvit.RelativePositionalMultiHeadAttention": "msa",
    "timm.models.vision_transformer.Attention": "msa",
}

#: Parameters that are not the ``weight``/``bias`` of a layer in the tables above, by attribute name. ``pos_enc``
#: parameters become source nodes feeding the op that consumes them (ViT class token and position embedding, as
#: the reference's ``PosEnc``); ``msa``/``cse`` parameters are bound to the unit node of the module that owns them
#: (Swin's relative position bias table); any other primitive gives a node in the data path (ConvNeXt's per-channel
#: ``layer_scale`` acts as a norm-layer scale, ``ln``).
PARAM_PRIMITIVES: dict[str, str] = {
    "class_token": "pos_enc",
    "cls_token": "pos_enc",
    "dist_token": "pos_enc",
    "pos_embedding": "pos_enc",
    "pos_embed": "pos_enc",
    "layer_scale": "ln",
    "relative_position_bias_table": "msa",
    "logit_scale": "msa",
    "bias_k": "msa",
    "bias_v": "msa",
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
    """Return ``"cse"``/``"msa"`` if the module's class (or a base class) is in :data:`UNIT_PRIMITIVES`, else ``None``.

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
