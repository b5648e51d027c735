"""muP for width families (train.width_family, train.mup_param): base shapes, readout, predicted parameters and
per-parameter learning rates as the mup package documents them."""

import mup
import pytest
import torch

from archspace.errors import UsageError
from train.mup_param import make_optimizer, parametrise, readout_name, width_mult
from train.width_family import width_family


def infshape_dims(model):
    """Parameter name -> tuple of booleans: which dimensions muP found to be widths."""
    return {n: tuple(d.isinf() for d in p.infshape) for n, p in model.named_parameters()}


def mup_model(spec, width, **kwargs):
    family = width_family(spec, 10, 8)
    torch.manual_seed(0)
    return parametrise(family.build(width), family, "mup", **kwargs), family


def test_mlp_base_shapes():
    model, family = mup_model("mlp", 256)
    dims = infshape_dims(model)
    assert dims["layers.1.weight"] == (True, False)  # input layer: fan-out grows, 192 inputs do not
    assert dims["layers.3.weight"] == (True, True)  # hidden layer
    assert dims["layers.5.weight"] == (False, True)  # readout
    assert dims["layers.1.bias"] == (True,) and dims["layers.5.bias"] == (False,)
    assert isinstance(model.layers[5], mup.MuReadout) and width_mult(model) == 256 / family.base_width


def test_resnet_base_shapes_are_channel_counts():
    model, family = mup_model("resnet18", 8)
    dims = infshape_dims(model)
    assert dims["conv1.weight"] == (True, False, False, False)  # RGB in, kernel finite
    assert dims["layer2.0.conv1.weight"] == (True, True, False, False)
    assert dims["layer2.0.downsample.0.weight"] == (True, True, False, False)
    assert dims["bn1.weight"] == (True,)
    assert dims["fc.weight"] == (False, True)
    assert width_mult(model) == 8 / family.base_width


def test_deepnets_base_shapes():
    model, _ = mup_model("deepnets:test/0", 16)
    dims = infshape_dims(model)
    name = readout_name(model)
    assert dims[f"{name}.weight"] == (False, True)
    params = dict(model.named_parameters())
    convs = {n: d for n, d in dims.items() if len(d) == 4}
    assert all(d[2:] == (False, False) for d in convs.values())  # kernel sizes never grow
    fixed_fan_in = [n for n, d in convs.items() if d[:2] == (True, False)]
    # a conv has a finite fan-in only when it sees the 3 image channels or is depthwise (1 channel per group)
    assert sorted({params[n].shape[1] for n in fixed_fan_in}) == [1, 3]
    assert [n for n in fixed_fan_in if params[n].shape[1] == 3] == ["stem.0.weight"]
    assert all(d[:2] == (True, True) for n, d in convs.items() if n not in fixed_fan_in)


@pytest.mark.parametrize("spec, match", [("deepnets:test/7", "self-attention"), ("deepnets:test/1", "fc_layers"),
                                         ("vgg11", "not a width family")])
def test_families_muP_does_not_cover_are_refused(spec, match):
    with pytest.raises(UsageError, match=match):
        width_family(spec)


def test_default_init_is_converted_as_mup_documents():
    family = width_family("mlp", 10, 8)
    torch.manual_seed(0)
    sp = family.build(256)
    readout_before = sp.layers[5].weight.detach().clone()
    model = parametrise(sp, family, "mup")
    # set_base_shapes rescales the readout of a default init by sqrt(width_mult) (mup.MuReadout._rescale_parameters)
    torch.testing.assert_close(model.layers[5].weight.detach(), readout_before * 2.0)


def test_predicted_parameters_keep_their_function():
    family = width_family("resnet18", 10, 8)
    torch.manual_seed(1)
    sp = family.build(16).eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        for p in sp.parameters():  # stand-in for a GHN prediction: any parameters
            p.add_(0.1 * torch.randn_like(p))
        expected = sp(x)
    model = parametrise(sp, family, "mup", predicted=True, output_mult=2.0)
    readout = model.get_submodule(readout_name(model))
    assert isinstance(readout, mup.MuReadout) and readout.width_mult() == 4.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_at_the_base_width_mup_is_sp():
    family = width_family("mlp", 10, 8)
    x = torch.randn(5, 3, 8, 8)
    torch.manual_seed(0)
    sp = parametrise(family.build(family.base_width), family, "sp")
    torch.manual_seed(0)
    mu = parametrise(family.build(family.base_width), family, "mup")
    torch.testing.assert_close(mu(x), sp(x))
    assert all(g["lr"] == 0.1 for g in make_optimizer(mu.parameters(), name="adam", lr=0.1).param_groups)


def group_lr(opt, param):
    return next(g["lr"] for g in opt.param_groups if any(p is param for p in g["params"]))


def test_learning_rates_scale_with_width_as_the_package_documents():
    """Two muP MLPs that differ only in width (4x): MuAdam divides matrix-like (hidden) learning rates by the width
    multiplier and keeps vector-like ones; MuSGD multiplies vector-like ones (input weights, biases, readout) by it
    and scales hidden weights by fan-out / fan-in multiplier (1 for a square hidden layer)."""
    narrow, family = mup_model("mlp", family_base := 64)
    wide, _ = mup_model("mlp", 4 * family_base)
    for model, r in ((narrow, 1.0), (wide, 4.0)):
        adam = make_optimizer(model.parameters(), name="adam", lr=0.01)
        assert group_lr(adam, model.layers[3].weight) == pytest.approx(0.01 / r)
        assert group_lr(adam, model.layers[1].weight) == pytest.approx(0.01)
        assert group_lr(adam, model.layers[5].weight) == pytest.approx(0.01)
        sgd = make_optimizer(model.parameters(), name="sgd", lr=0.01)
        assert group_lr(sgd, model.layers[3].weight) == pytest.approx(0.01)
        assert group_lr(sgd, model.layers[1].weight) == pytest.approx(0.01 * r)
        assert group_lr(sgd, model.layers[5].weight) == pytest.approx(0.01 * r)
        assert group_lr(sgd, model.layers[3].bias) == pytest.approx(0.01 * r)
    sp = make_optimizer(width_family("mlp").build(256).parameters(), name="adam", lr=0.01, param="sp")
    assert [g["lr"] for g in sp.param_groups] == [0.01]


def test_bad_settings():
    family = width_family("mlp", 10, 8)
    with pytest.raises(UsageError, match="parametrisation"):
        parametrise(family.build(64), family, "ntk")
    with pytest.raises(UsageError, match="multipliers"):
        parametrise(family.build(64), family, "mup", output_mult=0)
    with pytest.raises(UsageError, match="optimizer"):
        make_optimizer([], name="lion", lr=0.1)
    with pytest.raises(UsageError, match="lr must be > 0"):
        make_optimizer([], name="sgd", lr=0.0)


def test_a_default_classifier_behind_predicted_layers_gets_mups_default_conversion():
    """--keep-classifier-init: the GHN predicted the hidden layers only, so the readout is a default init and is
    rescaled by sqrt(width_mult) like one, not by width_mult / output_mult like a predicted classifier."""
    family = width_family("mlp", 10, 8)
    torch.manual_seed(0)
    sp = family.build(256)
    before = sp.layers[5].weight.detach().clone()
    model = parametrise(sp, family, "mup", predicted=True, predicted_readout=False)
    torch.testing.assert_close(model.layers[5].weight.detach(), before * 2.0)


def test_resnet_stem_keeps_its_size_under_mup():
    """torchvision draws conv weights with Kaiming fan_out: the stem (3 input channels) shrinks with width under
    SP; muP redraws it with mup.init, which keeps input weights at a fixed size and hidden ones at 1/sqrt(fan-in)."""
    family = width_family("resnet18", 10, 8)
    stds = {}
    for param in ("sp", "mup"):
        for w in (4, 64):
            torch.manual_seed(0)
            m = parametrise(family.build(w), family, param)
            stds[param, w] = (m.conv1.weight.std().item(), m.layer2[0].conv1.weight.std().item())
    assert stds["sp", 4][0] / stds["sp", 64][0] == pytest.approx(4.0, rel=0.15)  # 1/sqrt(fan_out), 16x width
    assert stds["mup", 4][0] / stds["mup", 64][0] == pytest.approx(1.0, rel=0.15)
    assert stds["mup", 4][1] / stds["mup", 64][1] == pytest.approx(4.0, rel=0.15)


def test_sp_output_multiplier_is_mups_at_the_base_width():
    """With the same output multiplier, SP and muP at the base width give the same logits before and after an
    update (the multiplier scales the readout's input in both, so the gradients agree too)."""
    family = width_family("mlp", 10, 8)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    models = {}
    for param in ("sp", "mup"):
        torch.manual_seed(0)
        m = parametrise(family.build(family.base_width), family, param, output_mult=4.0)
        opt = make_optimizer(m.parameters(), name="sgd", lr=0.05, param=param)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        models[param] = m
    with torch.no_grad():
        torch.testing.assert_close(models["mup"](x), models["sp"](x))
