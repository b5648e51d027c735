"""ghn.warm_start: noise of the specified scale, orthogonal results, the classifier and earlier layers untouched."""

import math

import pytest
import torch
import torch.nn as nn

from ghn.warm_start import diversify, orthogonalize, weight_layers


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 1), nn.Flatten(),
                         nn.Linear(6, 5), nn.Linear(5, 3))


def test_weight_layers_are_the_matrices_in_module_order():
    assert [n for n, _ in weight_layers(tiny())] == ["0.weight", "3.weight", "5.weight", "6.weight"]


def test_noise_has_the_specified_scale_and_leaves_the_rest_alone():
    m = nn.Sequential(nn.Linear(400, 500), nn.Linear(500, 10))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    changed = diversify(m, beta=0.1, generator=torch.Generator().manual_seed(1))
    assert changed == ["0.weight"]
    delta = m[0].weight - before["0.weight"]
    assert delta.std().item() == pytest.approx(0.1 * before["0.weight"].std().item(), rel=0.02)
    assert abs(delta.mean().item()) < 0.01 * before["0.weight"].std().item()  # zero-mean noise
    for n in ("0.bias", "1.weight", "1.bias"):  # biases and the classifier are untouched
        assert torch.equal(dict(m.named_parameters())[n], before[n])


def test_from_layer_skips_the_first_layers():
    m = tiny()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    assert diversify(m, beta=0.5, from_layer=1) == ["3.weight", "5.weight"]
    assert torch.equal(m[0].weight, before["0.weight"]) and torch.equal(m[6].weight, before["6.weight"])
    assert not torch.equal(m[3].weight, before["3.weight"])
    assert torch.equal(m[1].weight, before["1.weight"])  # BatchNorm weights are 1-D: left alone


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (6, 4, 1, 1), (5, 6), (6, 5)])
def test_orthogonalize_gives_orthonormal_columns_of_the_tall_view(shape):
    torch.manual_seed(0)
    w = torch.randn(shape)
    q = orthogonalize(w)
    assert q.shape == w.shape
    m = q.reshape(shape[0], -1)
    tall = m if m.shape[0] >= m.shape[1] else m.t()
    torch.testing.assert_close(tall.t() @ tall, torch.eye(tall.shape[1]), rtol=1e-5, atol=1e-5)
    # Q's columns span W's: projecting W onto them gives W back (the sign convention keeps diag(R) positive)
    wt = w.reshape(shape[0], -1)
    wt = wt if wt.shape[0] >= wt.shape[1] else wt.t()
    r = tall.t() @ wt
    assert (torch.diagonal(r) > 0).all()
    torch.testing.assert_close(tall @ r, wt, rtol=1e-4, atol=1e-4)


def test_orth_option_orthogonalises_all_but_the_classifier():
    m = tiny()
    last = m[6].weight.detach().clone()
    changed = diversify(m, beta=0.0, orth=True)
    assert changed == ["0.weight", "3.weight", "5.weight"]
    for _, p in weight_layers(m)[:-1]:
        v = p.reshape(p.shape[0], -1)
        v = v if v.shape[0] >= v.shape[1] else v.t()
        torch.testing.assert_close(v.t() @ v, torch.eye(v.shape[1]), rtol=1e-5, atol=1e-5)
    assert torch.equal(m[6].weight, last)


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (6, 4, 1, 1), (5, 6), (6, 5)])
def test_polar_factor_is_the_nearest_matrix_with_orthonormal_columns(shape):
    torch.manual_seed(0)
    m = shape[0], math.prod(shape[1:])
    tall = (max(m), min(m))
    u0 = torch.linalg.qr(torch.randn(tall)).Q  # (rows, cols), orthonormal columns
    v0 = torch.linalg.qr(torch.randn(tall[1], tall[1])).Q  # (cols, cols), orthogonal
    s = torch.linspace(0.2, 3.0, tall[1])
    t = u0 @ torch.diag(s) @ v0.t()  # known SVD: its polar factor is u0 v0^T
    w = (t if m[0] >= m[1] else t.t()).reshape(shape)
    q = orthogonalize(w, "polar")
    expected = u0 @ v0.t()
    torch.testing.assert_close(q.reshape(m), expected if m[0] >= m[1] else expected.t(), rtol=1e-5, atol=1e-5)
    # nearer to w than QR's factor, which has orthonormal columns too
    assert (w - q).norm() < (w - orthogonalize(w, "qr")).norm()


def test_a_single_weight_gets_no_nan_noise():
    m = nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 2))
    before = m[0].weight.detach().clone()
    assert diversify(m, beta=0.5) == ["0.weight"]
    assert torch.equal(m[0].weight, before)  # no standard deviation to scale noise by: left as it was


def test_bad_arguments():
    for beta in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
            diversify(tiny(), beta=beta)
    with pytest.raises(ValueError, match="from_layer must be between 0 and 2 .*3 weight matrices.*got -2"):
        diversify(tiny(), from_layer=-2)
    with pytest.raises(ValueError, match="from_layer must be between 0 and 2"):
        diversify(tiny(), from_layer=3)  # the fourth weight matrix is the classifier, never changed
    with pytest.raises(ValueError, match="unknown orthogonalisation 'svd'"):
        diversify(tiny(), orth=True, method="svd")
    with pytest.raises(ValueError, match="unknown orthogonalisation"):
        orthogonalize(torch.ones(3, 3), "gram")


def test_warm_start_inits():
    from ghn.warm_start import warm_start

    def predict(m):
        with torch.no_grad():
            for p in m.parameters():  # a "prediction" that repeats values, as tiling does
                p.copy_((torch.arange(p.numel()) % 3).reshape(p.shape) * 0.5)
        return m

    def predicted(p):
        return (torch.arange(p.numel()) % 3).reshape(p.shape) * 0.5

    default = tiny()
    assert all(torch.equal(a, b) for a, b in zip(warm_start(tiny(), "default").parameters(), default.parameters()))
    pred = warm_start(tiny(), "predicted", predict)
    assert all(torch.equal(p, predicted(p)) for p in pred.parameters())
    orth = warm_start(tiny(), "predicted+orth", predict, beta=1e-3, generator=torch.Generator().manual_seed(0))
    w = orth[3].weight.reshape(6, -1)  # (6, 4): orthonormal columns
    assert torch.allclose(w.t() @ w, torch.eye(4), atol=1e-5)
    assert torch.equal(orth[6].weight, predicted(orth[6].weight))  # the classifier is left as predicted
    polar = warm_start(tiny(), "predicted+polar", predict, beta=0.0)
    for (n, p), (_, q) in zip(weight_layers(polar)[:-1], weight_layers(pred)[:-1]):
        torch.testing.assert_close(p, orthogonalize(q, "polar"), msg=n)  # beta 0: the polar factor of the prediction
    assert not torch.allclose(polar[3].weight, orthogonalize(pred[3].weight, "qr"))  # not QR's factor
    assert torch.equal(polar[6].weight, predicted(polar[6].weight))
    noisy = warm_start(tiny(), "predicted+noise", predict, beta=0.1, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy[0].weight, predicted(noisy[0].weight))
    assert torch.equal(noisy[0].bias, predicted(noisy[0].bias))
    with pytest.raises(ValueError, match="needs a GHN prediction"):
        warm_start(tiny(), "predicted+orth")
    with pytest.raises(ValueError, match="unknown init"):
        warm_start(tiny(), "pretrained", predict)


def test_default_orth_orthogonalises_the_default_init_without_a_ghn():
    from ghn.warm_start import warm_start

    default = tiny()
    ctrl = warm_start(tiny(), "default+orth", None, beta=0.0)  # no predictor needed
    for (n, p), (_, d) in zip(weight_layers(ctrl)[:-1], weight_layers(default)[:-1]):
        torch.testing.assert_close(p, orthogonalize(d), msg=n)  # beta 0: the QR factor of the default weights
    torch.testing.assert_close(ctrl[3].weight.reshape(6, -1).t() @ ctrl[3].weight.reshape(6, -1), torch.eye(4),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(ctrl[6].weight, default[6].weight)  # the classifier keeps its default init
    assert torch.equal(ctrl[1].weight, default[1].weight) and torch.equal(ctrl[0].bias, default[0].bias)


def test_default_polar_is_the_polar_factor_of_the_default_init():
    from ghn.warm_start import warm_start

    default = tiny()
    ctrl = warm_start(tiny(), "default+polar", None, beta=0.0)
    for (n, p), (_, d) in zip(weight_layers(ctrl)[:-1], weight_layers(default)[:-1]):
        torch.testing.assert_close(p, orthogonalize(d, "polar"), msg=n)
    assert torch.equal(ctrl[6].weight, default[6].weight)


@pytest.mark.parametrize("control", ["default+orth", "default+polar"])
def test_tune_refuses_the_fine_tuning_controls(control):
    from archspace.errors import UsageError
    from train.tune import build

    with pytest.raises(UsageError, match="--init must be one of"):
        build(None, 8, None, param="sp", init=control)
