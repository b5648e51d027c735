"""BatchNorm modes after prediction and re-estimation of running statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from archspace.errors import UsageError
from ghn import recompute_bn_stats, set_bn_mode
from ghn.batchnorm import BN_MODES, bn_mode


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
    # the cumulative average of each batch's unbiased variance (momentum None), as nn.BatchNorm2d keeps it
    batch_vars = torch.stack([feats[i: i + 16].var((0, 2, 3)) for i in range(0, 64, 16)])
    torch.testing.assert_close(bn.running_var, batch_vars.mean(0), atol=1e-4, rtol=1e-4)
    net.eval()
    assert not net[1].training


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_recompute_in_the_models_dtype(dtype):
    net = _net()
    x = torch.randn(32, 3, 6, 6)
    net(x)
    net = net.to(dtype)
    set_bn_mode(net, "batch")  # removes the buffers; they come back in the layer's dtype
    recompute_bn_stats(net, [(x.to(dtype), None)], num_batches=1)
    assert net[1].running_mean.dtype == dtype and net[1].running_var.dtype == dtype
    assert net.eval()(x.to(dtype)).dtype == dtype


def test_running_mode_leaves_the_layers_and_unknown_modes_fail():
    net = _net()
    net.train()
    net(torch.randn(8, 3, 6, 6) + 5)
    before = net[1].running_mean.clone()
    set_bn_mode(net, "running")
    assert torch.equal(net[1].running_mean, before) and net[1].track_running_stats
    for old in ("keep", "reset", "train"):  # the old vocabulary is gone
        with pytest.raises(UsageError, match=f"bn_mode must be one of batch, running, got '{old}'"):
            set_bn_mode(net, old)
    assert torch.equal(net[1].running_mean, before)
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_stats(net, [], 3)


@pytest.mark.parametrize("mode", BN_MODES)
def test_bn_mode_block_leaves_no_trace(mode):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(64, 2))
    net.train()
    net(torch.randn(8, 3, 6, 6) + 5)
    net[4].eval()  # a mixed state that must come back as it was
    flags = [m.training for m in net.modules()]
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 6, 6) * 2 + 3
    with bn_mode(net, mode):
        assert not net[2].training  # dropout off
        assert net[1].training == (mode == "batch")
        y = net[1](net[0](x))
        if mode == "batch":  # batch statistics: each channel has the BN bias as its mean
            torch.testing.assert_close(y.mean((0, 2, 3)), net[1].bias.detach(), atol=1e-5, rtol=0)
    assert [m.training for m in net.modules()] == flags
    for k, v in net.state_dict().items():
        assert torch.equal(v, buffers[k]), k
