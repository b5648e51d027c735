"""muP's coordinate check (train.coord_check) at tiny sizes: flat under muP, growing under SP."""

import math

import pytest

from train.coord_check import FLAT_RATIO, coord_check, layer_modules
from train.width_family import width_family


@pytest.fixture(scope="module")
def digits8():
    from train.data import load_digits

    return load_digits(8)


def test_mup_is_flat_and_sp_is_not_over_a_16x_width_range(digits8):
    family = width_family("mlp", 10, 8)
    widths = [32, 128, 512]
    mu = coord_check(family, widths, digits8, param="mup", steps=4, lr=2.0 ** -5, optimizer="adam")
    sp = coord_check(family, widths, digits8, param="sp", steps=4, lr=2.0 ** -5, optimizer="adam")
    assert set(mu.sizes) == {"layers.1", "layers.3", "layers.5"}
    assert all(len(mu.sizes[layer][w]) == 4 for layer in mu.sizes for w in widths)  # one size per step
    assert mu.flat(), mu.ratios()
    assert all(r <= FLAT_RATIO for r in mu.ratios().values())
    # under SP the readout's output grows with width once Adam has updated the hidden layers
    assert not sp.flat() and sp.growth()["layers.5"] > FLAT_RATIO
    assert all(math.isfinite(v) for v in mu.losses.values())


def test_step_one_is_the_initialisation(digits8):
    """At step 1 nothing was updated: SP and muP see the same default init (same seed), except the hidden biases
    that muP rescales by sqrt(fan-in multiplier) away from the base width (mup.set_base_shapes)."""
    family = width_family("mlp", 10, 8)
    mu = coord_check(family, [64, 128], digits8, param="mup", steps=1, lr=2.0 ** -6)
    sp = coord_check(family, [64, 128], digits8, param="sp", steps=1, lr=2.0 ** -6)
    for w in (64, 128):
        assert mu.sizes["layers.1"][w] == pytest.approx(sp.sizes["layers.1"][w])
    assert mu.sizes["layers.3"][64] == pytest.approx(sp.sizes["layers.3"][64])
    assert mu.sizes["layers.3"][128] != pytest.approx(sp.sizes["layers.3"][128])


def test_layers_are_leaf_modules_with_parameters():
    net = width_family("resnet18", 10, 8).build(4)
    names = [n for n, _ in layer_modules(net)]
    assert names[0] == "conv1" and names[-1] == "fc" and "layer1.0.bn2" in names and "relu" not in names


def test_needs_two_widths(digits8):
    with pytest.raises(ValueError, match="2 widths"):
        coord_check(width_family("mlp"), [64], digits8, param="mup", lr=0.01)
