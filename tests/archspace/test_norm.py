"""archspace.norm.BatchNorm2d: nn.BatchNorm2d's numbers, with its channels-last CPU backward on one thread."""

import pytest
import torch
import torch.nn as nn

from archspace import get_net, to_graph
from archspace.norm import BatchNorm2d
from archspace.ops import norm_layer


@pytest.fixture(autouse=True)
def _two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _pair(channels):
    torch.manual_seed(0)
    ours, theirs = BatchNorm2d(channels), nn.BatchNorm2d(channels)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.linspace(0.5, 1.5, channels))
            m.bias.copy_(torch.linspace(-1, 1, channels))
    return ours, theirs


@pytest.mark.parametrize("channels", [8, 12, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_outputs_gradients_and_running_statistics_as_nn_batchnorm(channels, channels_last):
    ours, theirs = _pair(channels)
    x = torch.randn(4, channels, 5, 5) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, channels, 5, 5)
    grads = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.backward(g)
        grads.append((y.detach(), xi.grad, m.weight.grad, m.bias.grad, m.running_mean, m.running_var))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads[0][0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_the_backward_runs_on_one_thread_and_the_setting_comes_back():
    seen = []

    class Probe(torch.autograd.Function):  # records the thread setting when the gradient reaches the input
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            seen.append(torch.get_num_threads())
            return g

    ours, _ = _pair(8)
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    ours(Probe.apply(x)).sum().backward()
    assert seen == [2] and torch.get_num_threads() == 2


@pytest.mark.parametrize("channels, fmt, calls", [(8, torch.channels_last, [1, 2]), (12, torch.channels_last, [1, 2]),
                                                  (8, torch.contiguous_format, []), (16, torch.channels_last, [])])
def test_only_the_slow_case_changes_threads(monkeypatch, channels, fmt, calls):
    m = BatchNorm2d(channels)
    x = torch.randn(4, channels, 5, 5).contiguous(memory_format=fmt).requires_grad_()
    y = m(x)
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    y.sum().backward()
    assert seen == calls


def test_deepnets_nets_use_it_and_their_graphs_are_unchanged():
    assert isinstance(norm_layer("bn", 8), BatchNorm2d)
    net = get_net("test", 0, width=8)
    assert any(isinstance(m, BatchNorm2d) for m in net.modules())
    g_ours = to_graph(net, input_size=32)
    for m in list(net.modules()):  # the same net with torch's own class
        for child_name, child in list(m.named_children()):
            if isinstance(child, BatchNorm2d):
                plain = nn.BatchNorm2d(child.num_features)
                plain.load_state_dict(child.state_dict())
                setattr(m, child_name, plain)
    assert not any(isinstance(m, BatchNorm2d) for m in net.modules())
    g_plain = to_graph(net, input_size=32)
    assert torch.equal(g_ours.op_type, g_plain.op_type)
    assert torch.equal(g_ours.edge_index, g_plain.edge_index)
    assert g_ours.param_names == g_plain.param_names
