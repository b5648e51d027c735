"""archspace.conv.Conv2d: nn.Conv2d's numbers, with the 1x1 strided convolutions of few input channels on
channels-last CPU tensors computed as stride-1 convolutions of the subsampled input (oneDNN's AVX2 kernel for their
weight gradient crashes the process; on an AVX2-only CPU the unguarded case below would kill this test run)."""

import pytest
import torch
import torch.nn as nn

from archspace import get_net, to_graph
from archspace.conv import Conv2d
from archspace.ops import FactorizedReduce

pytestmark = pytest.mark.usefixtures("one_thread")  # the crash shows with one thread (two threads can hang instead)


def _reference(conv: nn.Conv2d) -> nn.Conv2d:
    """An nn.Conv2d with the same weights, run in NCHW (the safe oneDNN kernel)."""
    ref = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    ref.load_state_dict(conv.state_dict())
    return ref


@pytest.mark.parametrize("c_in,stride,size", [(4, 2, 16), (2, 2, 9), (6, 3, 8), (8, 2, 16), (4, 1, 8)])
def test_same_outputs_and_gradients_as_nn_conv2d_in_channels_last(c_in, stride, size):
    torch.manual_seed(0)
    ours = Conv2d(c_in, 5, 1, stride=stride, bias=True).to(memory_format=torch.channels_last)
    ref = _reference(ours)
    x = torch.randn(3, c_in, size, size)
    g = torch.randn(3, 5, -(-size // stride), -(-size // stride))
    out = []
    for m, xi in ((ours, x.contiguous(memory_format=torch.channels_last)), (ref, x)):
        xi = xi.clone().requires_grad_()
        y = m(xi)
        y.backward(g)
        out.append((y.detach(), xi.grad, m.weight.grad, m.bias.grad))
    assert out[0][0].is_contiguous(memory_format=torch.channels_last)  # the next layers stay in NHWC
    for a, b in zip(*out):
        torch.testing.assert_close(a, b.contiguous(memory_format=torch.channels_last) if a.dim() == 4 else b,
                                   rtol=1e-5, atol=1e-5)


def test_factorized_reduce_of_four_channels_trains_in_channels_last():
    torch.manual_seed(0)
    op = FactorizedReduce(4, 8).to(memory_format=torch.channels_last)
    x = torch.randn(32, 4, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
    op(x).square().mean().backward()
    assert op.conv_1.weight.grad.abs().sum() > 0 and op.conv_2.weight.grad.abs().sum() > 0


def test_the_graph_and_state_dict_are_those_of_nn_conv2d():
    net = get_net("test", 0, num_classes=10, width=4)
    guarded = [m for m in net.modules() if type(m) is Conv2d]
    assert guarded, "the narrow net has 1x1 strided convolutions"
    g = to_graph(net, 32)
    swapped = get_net("test", 0, num_classes=10, width=4)
    for m in list(swapped.modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is Conv2d:
                setattr(m, child_name, _reference(child))
    assert not any(type(m) is Conv2d for m in swapped.modules())
    h = to_graph(swapped, 32)
    assert g.num_nodes == h.num_nodes and torch.equal(g.op_type, h.op_type)
    assert torch.equal(g.edge_index, h.edge_index)
    assert net.state_dict().keys() == swapped.state_dict().keys()
