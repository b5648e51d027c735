"""Tests for :mod:`ghn.widen`: the channel map, the input-axis division, and that a widened DeepNets-1M net computes
what its narrow sibling computes (factorized reductions, squeeze-excitation and concatenated cell states included),
also for a ratio that is not a whole number."""

import pytest
import torch
import torch.nn as nn

from archspace.errors import UsageError
from ghn.batchnorm import bn_mode
from ghn.widen import channel_map, widen_parameters, widen_tensor
from train.evaluate import _SplitNet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_channel_map_repeats_each_narrow_channel_in_place():
    assert channel_map(3, 7).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert channel_map(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # repeat_interleave for a whole ratio
    assert channel_map(5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot be read from a narrow one"):
        channel_map(8, 4)


def test_input_axis_is_divided_by_the_repeats():
    w = torch.tensor([[1.0, 2.0, 3.0]])  # (1 out, 3 in)
    wide = widen_tensor(w, (2, 7), input_axis=1)
    # columns read channels 0,0,0,1,1,2,2: channel 0 repeats 3 times, 1 and 2 twice each
    assert torch.allclose(wide[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1.5, 1.5]))
    assert torch.equal(wide[0], wide[1])  # the out axis is only repeated
    x = torch.tensor([0.5, -1.0, 2.0])
    assert torch.allclose(wide @ x[channel_map(3, 7)], (w @ x).expand(2))  # the same pre-activation
    with pytest.raises(ValueError, match="cannot widen a tensor"):
        widen_tensor(w, (2, 7, 1))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), bn_mode(model, "batch"):
        return model(x)


@pytest.mark.parametrize("index", [0, 2, 5])  # 2 has squeeze-excitation; all have factorized reductions
@pytest.mark.parametrize("wide_width", [8, 6])  # a whole ratio and 1.5
def test_widened_net_computes_what_the_narrow_one_does(index, wide_width):
    narrow = _SplitNet("test", index, 4, 10, 16).build()
    wide = _SplitNet("test", index, wide_width, 10, 16).build()
    for p in narrow.parameters():  # not the default init: biases and norm weights away from 0 and 1
        p.data.add_(0.1 * torch.randn_like(p))
    widen_parameters(narrow, wide)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(index))
    a, b = _logits(narrow, x), _logits(wide, x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())


def test_attention_nets_are_widened_close_to_the_narrow_net():
    narrow = _SplitNet("test", 7, 8, 10, 16).build()  # multi-head attention and LayerNorm
    wide = _SplitNet("test", 7, 16, 10, 16).build()
    widen_parameters(narrow, wide)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = _logits(narrow, x), _logits(wide, x)
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())), float((a - b).abs().max())


def test_other_architectures_are_refused():
    with pytest.raises(UsageError, match="differ in their parameters"):
        widen_parameters(_SplitNet("test", 0, 4, 10, 16).build(), _SplitNet("test", 1, 8, 10, 16).build())
    with pytest.raises(UsageError, match="cannot widen"):  # narrower, not wider
        widen_parameters(_SplitNet("test", 0, 8, 10, 16).build(), _SplitNet("test", 0, 4, 10, 16).build())


def test_ghn_predicts_a_wider_net_through_its_narrow_sibling():
    from ghn import GHN

    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 7, 7), hidden_dim=8, num_classes=10, image_size=16).eval()
    narrow = ghn.predict(_SplitNet("test", 0, 4, 10, 16).build(), bn_mode="batch")
    wide, report = ghn.predict(_SplitNet("test", 0, 8, 10, 16).build(), bn_mode="batch", widen_from=4,
                               return_report=True)
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a, b = _logits(narrow, x), _logits(wide, x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert report.widened_from == 4 and report.complete and "predicted at width 4 and widened" in report.summary()
    assert report.num_params_total == sum(p.numel() for p in wide.parameters())
    direct = ghn.predict(_SplitNet("test", 0, 8, 10, 16).build(), bn_mode="batch")  # not widened: another net
    assert not torch.allclose(_logits(direct, x), b, rtol=1e-3, atol=1e-3)
    same = ghn.predict(_SplitNet("test", 0, 4, 10, 16).build(), bn_mode="batch", widen_from=4)  # not wider
    assert torch.equal(_logits(same, x), a)
    with pytest.raises(UsageError, match="widen_from"):
        ghn.predict(_SplitNet("test", 0, 8, 10, 16).build(), widen_from=0)


def test_vgg_head_reads_whole_channels_of_the_flattened_map():
    from ghn.widen import widen_network

    narrow = _SplitNet("test", 45, 8, 10, 16).build()  # a VGG head: its first linear layer reads (C, S, S)
    assert narrow.genotype.vgg_head
    wide = _SplitNet("test", 45, 16, 10, 16).build()
    assert widen_network(narrow, wide, (1, 3, 16, 16))
    assert channel_map(4, 8, inner=2).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


def test_nets_that_widening_cannot_match_are_predicted_directly():
    """At width 9 a factorized reduction's halves (4 and 5 channels) do not line up with width 8's (4 and 4): the
    check fails and the GHN predicts the net as it is."""
    from ghn import GHN
    from ghn.widen import widen_network

    narrow = _SplitNet("test", 1, 8, 10, 16).build()
    assert not widen_network(narrow, _SplitNet("test", 1, 9, 10, 16).build(), (1, 3, 16, 16))
    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 7, 7), hidden_dim=8, num_classes=10, image_size=16).eval()
    model, report = ghn.predict(_SplitNet("test", 1, 9, 10, 16).build(), widen_from=8, return_report=True)
    assert report.widened_from is None and report.complete
    direct = ghn.predict(_SplitNet("test", 1, 9, 10, 16).build())
    for p, q in zip(model.parameters(), direct.parameters()):
        assert torch.equal(p, q)


def test_a_kept_classifier_is_the_wide_nets_own():
    from ghn import GHN

    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 7, 7), hidden_dim=8, num_classes=10, image_size=16).eval()
    wide = _SplitNet("test", 0, 8, 10, 16).build()
    own = {n: p.detach().clone() for n, p in wide.classifier.named_parameters()}
    _, report = ghn.predict(wide, widen_from=4, keep_classifier_init=True, return_report=True)
    assert report.widened_from == 4 and report.kept_init
    for n, p in wide.classifier.named_parameters():
        assert torch.equal(p, own[n]), n
