"""Zero-cost proxies on tiny networks whose value is worked out by hand."""

import math

import pytest
import torch
import torch.nn as nn

from train.zero_cost import JACOB_COV_K, PROXIES, grad_norm, jacob_cov, naswot, snip, synflow


def _linear(weight, bias=False):
    w = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias:
            layer.bias.zero_()
    return layer


def test_grad_norm_of_a_zero_linear_layer():
    # W = 0: uniform softmax, dL/dlogits = (0.5, 0.5) - onehot(0) = (-0.5, 0.5); dL/dW = outer(that, x)
    model = _linear([[0.0, 0.0], [0.0, 0.0]])
    value = grad_norm(model, torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    assert value == pytest.approx(math.sqrt(0.25 + 1.0 + 0.25 + 1.0), rel=1e-6)


def test_grad_norm_sums_the_layer_norms():
    # two identity layers, x = (3, 4), label 1: logits (3, 4), dL/dlogits = (a, -a) with a = 1 / (1 + e);
    # dL/dW2 = outer((a, -a), x) and, through W2 = I, dL/dW1 the same: each has norm a * sqrt(2) * 5, and the
    # score is their sum (a global norm would be sqrt(2) times smaller)
    model = nn.Sequential(_linear([[1.0, 0.0], [0.0, 1.0]]), _linear([[1.0, 0.0], [0.0, 1.0]]))
    value = grad_norm(model, torch.tensor([[3.0, 4.0]]), torch.tensor([1]))
    a = 1.0 / (1.0 + math.e)
    assert value == pytest.approx(2 * a * math.sqrt(2.0) * 5.0, rel=1e-6)


def test_snip_is_the_sum_of_absolute_weight_times_gradient():
    # W = [[1, -1], [0, 2]], x = (1, 1), label 0: logits (0, 2), dL/dlogits = (-b, b) with b = e^2 / (1 + e^2);
    # dL/dW = [[-b, -b], [b, b]], so w * g = [[-b, b], [0, 2b]]: sum |w g| = 4b (sum w g would be 2b)
    model = _linear([[1.0, -1.0], [0.0, 2.0]])
    value = snip(model, torch.tensor([[1.0, 1.0]]), torch.tensor([0]))
    b = math.e**2 / (1.0 + math.e**2)
    assert value == pytest.approx(4 * b, rel=1e-6)


def test_synflow_of_a_linear_chain_is_depth_times_the_path_sum():
    # without biases R = 1^T |W2| |W1| 1 is homogeneous of degree 1 in each layer: sum |w dR/dw| = 2 R
    w1 = [[1.0, -2.0], [-0.5, 3.0], [2.0, 1.0]]
    w2 = [[-1.0, 0.5, 2.0]]
    r = sum(abs(a) * sum(abs(v) for v in row) for a, row in zip(w2[0], w1))
    model = nn.Sequential(_linear(w1), nn.BatchNorm1d(3), _linear(w2))  # BatchNorm is removed by synflow
    assert synflow(model, torch.randn(4, 2), torch.zeros(4, dtype=torch.long)) == pytest.approx(2 * r, rel=1e-9)


def test_jacob_cov_of_a_linear_model():
    # f(x) = W x: every image has the same input gradient W^T 1, so the correlation matrix is all ones,
    # with eigenvalues B (once) and 0 (B - 1 times)
    b, k = 5, JACOB_COV_K
    model = _linear([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]])
    expected = -(math.log(b + k) + 1 / (b + k) + (b - 1) * (math.log(k) + 1 / k))
    assert jacob_cov(model, torch.randn(b, 3), None) == pytest.approx(expected, rel=1e-5)


def test_jacob_cov_prefers_uncorrelated_input_gradients():
    # a ReLU net whose images switch different units on gets less correlated Jacobian rows than a linear model
    torch.manual_seed(0)
    relu_net = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3))
    linear_net = nn.Sequential(nn.Linear(6, 64), nn.Linear(64, 3))
    x = torch.randn(8, 6)
    assert jacob_cov(relu_net, x, None) > jacob_cov(linear_net, x, None)
    with pytest.raises(ValueError, match="at least 2"):
        jacob_cov(relu_net, x[:1], None)


def test_naswot_hamming_kernel():
    # one ReLU over 2 units with weights (1, -1): image 1 activates unit 0 only, image 2 unit 1 only;
    # they agree on no unit, so K_H = diag(2, 2) and log det = log 4
    model = nn.Sequential(_linear([[1.0], [-1.0]]), nn.ReLU())
    assert naswot(model, torch.tensor([[1.0], [-1.0]]), None) == pytest.approx(math.log(4.0), rel=1e-9)
    # identical codes make K_H singular: log |det| = -inf, reported as nan
    assert math.isnan(naswot(model, torch.tensor([[1.0], [2.0]]), None))
    assert math.isnan(naswot(_linear([[1.0]]), torch.ones(2, 1), None))  # no ReLU module
    # ReLU6 and LeakyReLU count as ReLUs (as in the reference code): the same codes, the same kernel
    for act in (nn.ReLU6(), nn.LeakyReLU(0.1), nn.ReLU(inplace=True)):
        model = nn.Sequential(_linear([[1.0], [-1.0]]), act)
        assert naswot(model, torch.tensor([[1.0], [-1.0]]), None) == pytest.approx(math.log(4.0), rel=1e-9)


def test_synflow_overflow_ranks_first():
    # weights of 1e30 over 20 layers overflow float64: the largest network gets inf, not nan
    model = nn.Sequential(*[_linear([[1e30]]) for _ in range(20)])
    assert synflow(model, torch.ones(2, 1), None) == math.inf


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_proxies_leave_the_network_unchanged(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = PROXIES[name](model, torch.randn(6, 3, 8, 8), torch.arange(6))
    assert math.isfinite(value)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
