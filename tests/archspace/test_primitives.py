"""The primitive ids and the module/function -> primitive tables."""

import pytest
import torch.nn as nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.ops.misc import SqueezeExcitation

from archspace.ops import ChannelSE, PosEnc, SelfAttention2d
from archspace.primitives import (
    FREE_PARAM_PRIMITIVES,
    FUNCTION_PRIMITIVES,
    MODULE_NAME_PRIMITIVES,
    MODULE_PRIMITIVES,
    NUM_PRIMITIVES,
    PRIMITIVE_ID,
    PRIMITIVES,
    UNIT_PRIMITIVES,
    primitive_of_module,
    unit_primitive,
)


def test_ids_follow_the_reference_order():
    # rows of the GHN embedding: checkpoints depend on this exact order (ppuda PRIMITIVES_DEEPNETS1M)
    assert PRIMITIVES == ("max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse", "sum", "concat",
                          "input", "bias", "bn", "ln", "pos_enc", "glob_avg")
    assert NUM_PRIMITIVES == 15
    assert all(PRIMITIVE_ID[p] == i for i, p in enumerate(PRIMITIVES))


def test_every_table_value_is_a_primitive():
    for table in (MODULE_PRIMITIVES, MODULE_NAME_PRIMITIVES, FUNCTION_PRIMITIVES, UNIT_PRIMITIVES,
                  FREE_PARAM_PRIMITIVES):
        assert set(table.values()) <= set(PRIMITIVES)


class _MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize("module, expected", [
    (nn.Conv2d(8, 8, 3), "conv"),
    (nn.Conv2d(8, 8, 3, groups=8), "sep_conv"),
    (nn.Conv2d(8, 8, 3, groups=8, dilation=2), "dil_conv"),
    (nn.Conv2d(8, 8, 3, groups=2, dilation=(1, 2)), "sep_conv"),  # the reference tests min(dilation) > 1
    (_MyConv(8, 8, 3), "conv"),  # subclasses inherit through the MRO
    (nn.Linear(4, 2), "conv"),
    (nn.BatchNorm2d(4), "bn"),
    (nn.LayerNorm(4), "ln"),
    (nn.GroupNorm(2, 4), "ln"),
    (LayerNorm2d(4), "ln"),  # by qualified name
    (PosEnc(4, 3), "pos_enc"),
    (nn.MaxPool2d(3), "max_pool"),
    (nn.ReLU(), None),
    (nn.PReLU(), None),
    (nn.LSTM(4, 4), "conv"),  # every weight_* a conv node, every bias_* a bias node
])
def test_primitive_of_module(module, expected):
    assert primitive_of_module(module) == expected


@pytest.mark.parametrize("module, expected", [
    (SqueezeExcitation(8, 2), "cse"),
    (ChannelSE(8), "cse"),
    (ShiftedWindowAttention(16, [7, 7], [3, 3], 2), None),  # attention is found from its operations
    (SelfAttention2d(8), None),  # found through its nn.MultiheadAttention instead
    (nn.Linear(2, 2), None),
])
def test_unit_primitive(module, expected):
    assert unit_primitive(module) == expected


def test_reference_function_mapping():
    # ppuda maps AdaptiveAvgPool2D to glob_avg, MaxPool2DWithIndices to max_pool, Add to sum, Cat to concat
    assert FUNCTION_PRIMITIVES["adaptive_avg_pool2d"] == "glob_avg"
    assert FUNCTION_PRIMITIVES["max_pool2d"] == "max_pool"
    assert FUNCTION_PRIMITIVES["avg_pool2d"] == "avg_pool"
    assert FUNCTION_PRIMITIVES["add_"] == FUNCTION_PRIMITIVES["__add__"] == "sum"
    assert FUNCTION_PRIMITIVES["cat"] == "concat"
