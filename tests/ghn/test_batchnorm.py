"""BatchNorm modes after prediction and re-estimation of running statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ghn import recompute_bn_stats, set_bn_mode


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_batch_mode_uses_batch_statistics_in_eval():
    net = _net()
    x = torch.randn(16, 3, 6, 6) * 3 + 1
    net(x)
    set_bn_mode(net, "batch").eval()
    bn = net[1]
    assert bn.running_mean is None and not bn.track_running_stats
    y = net[1](net[0](x))
    torch.testing.assert_close(y.mean((0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)
    assert "1.running_mean" not in net.state_dict()


def test_recompute_restores_eval_correctness():
    net = _net()
    x = torch.randn(64, 3, 6, 6) * 3 + 1
    net(x)
    set_bn_mode(net, "batch")
    batches = [(x[i: i + 16], None) for i in range(0, 64, 16)]
    recompute_bn_stats(net, batches, num_batches=4)
    bn = net[1]
    assert bn.track_running_stats and bn.momentum == 0.1 and int(bn.num_batches_tracked) == 4
    feats = net[0](x)
    torch.testing.assert_close(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    net.eval()
    assert not net[1].training


def test_modes_keep_reset_and_errors():
    net = _net()
    net.train()
    net(torch.randn(8, 3, 6, 6) + 5)
    before = net[1].running_mean.clone()
    set_bn_mode(net, "keep")
    assert torch.equal(net[1].running_mean, before)
    set_bn_mode(net, "reset")
    assert torch.equal(net[1].running_mean, torch.zeros(4))
    with pytest.raises(ValueError, match="bn_mode"):
        set_bn_mode(net, "train")
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_stats(net, [], 3)
