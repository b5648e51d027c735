"""Masks of :mod:`train.lottery`: the global magnitude rule on a net whose weights are set by hand, the mask
surviving training, the random-pruning control's per-layer counts, and clear errors."""

import pytest
import torch
import torch.nn as nn

from archspace.errors import UsageError
from train.lottery import (
    apply_masks,
    count,
    dense_masks,
    level_counts,
    magnitude_masks,
    masks_of,
    plain_state_dict,
    prunable_layers,
    random_masks,
    remove_masks,
)


def hand_net() -> nn.Sequential:
    """Two hidden linear layers with known weights and a classifier (module 3)."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -5.0], [0.1, 3.0]]))
        net[2].weight.copy_(torch.tensor([[-0.2, 4.0], [2.0, 0.05]]))
        net[3].weight.copy_(torch.tensor([[0.001, 0.002]]))  # smallest of all, but the classifier is not pruned
    return net


def test_prunable_layers_leave_the_classifier_out_unless_asked():
    net = hand_net()
    assert [n for n, _ in prunable_layers(net)] == ["0", "2"]
    assert [n for n, _ in prunable_layers(net, include_classifier=True)] == ["0", "2", "3"]
    with pytest.raises(UsageError, match="--include-classifier"):
        prunable_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_global_magnitude_rule_removes_the_smallest_weights_across_layers():
    net = hand_net()
    masks = dense_masks(net)
    first = magnitude_masks(net, masks, 0.25)  # 2 of the 8 weights: |0.05| and |0.1|, in different layers
    assert first["0"].tolist() == [[True, True], [False, True]]
    assert first["2"].tolist() == [[True, True], [True, False]]
    assert "3" not in first
    # The fraction counts the weights that remain: half of the 6 left = the 3 smallest of them (0.2, 1, 2).
    apply_masks(net, first)
    second = magnitude_masks(net, first, 0.5)
    assert second["0"].tolist() == [[False, True], [False, True]]
    assert second["2"].tolist() == [[False, True], [False, False]]
    assert count(second) == (3, 8)
    # A count of weights instead of a fraction (one-shot pruning to IMP's count).
    assert count(magnitude_masks(hand_net(), dense_masks(hand_net()), 5)) == (3, 8)
    with pytest.raises(ValueError):
        magnitude_masks(hand_net(), masks, 1.0)


def test_level_counts_follow_the_rounding_of_the_rule():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 3))
    masks = dense_masks(net)
    kept = [count(masks)[0]]
    for _ in range(5):
        apply_masks(net, masks)
        masks = magnitude_masks(net, masks, 0.2)
        remove_masks(net)
        kept.append(count(masks)[0])
    assert kept == [level_counts(100, 0.2, [lv])[lv] for lv in range(6)] == [100, 80, 64, 51, 41, 33]


def test_pruned_weights_stay_zero_through_training_and_get_no_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    masks = magnitude_masks(net, dense_masks(net), 0.5)
    apply_masks(net, masks)
    assert set(masks_of(net)) == {"0", "2"}
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        assert (net[0].weight_orig.grad[~masks["0"]] == 0).all()
        opt.step()
    plain = plain_state_dict(net)
    remove_masks(net)
    assert plain.keys() == net.state_dict().keys()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in plain.items())
    assert isinstance(net[0].weight, nn.Parameter) and not hasattr(net[0], "weight_mask")
    for name in ("0", "2"):
        w = dict(net.named_modules())[name].weight
        assert (w[~masks[name]] == 0).all() and (w[masks[name]] != 0).all()


class AttentionNet(nn.Module):
    """A linear layer, multi-head attention (whose ``out_proj`` is read by its parent, never called) and a
    classifier: the layout of DeepNets-1M's ``msa`` op and of ViTs."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        h, _ = self.attn(h, h, h)
        return self.fc(h.mean(1))


def test_a_pruned_attention_projection_trains_and_stays_pruned():
    torch.manual_seed(0)
    net = AttentionNet()
    masks = magnitude_masks(net, dense_masks(net), 0.5)
    assert set(masks) == {"inp", "attn.out_proj"}
    apply_masks(net, masks)
    out_proj = net.attn.out_proj
    start = out_proj.weight_orig.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    x, y = torch.randn(5, 6, 4), torch.randint(0, 3, (5,))
    for _ in range(3):  # failed at the second backward pass when only the layer's own hook masked its weight
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        grad = out_proj.weight_orig.grad
        assert grad.abs().sum() > 0 and (grad[~masks["attn.out_proj"]] == 0).all()
        opt.step()
    net(x)
    assert torch.equal(out_proj.weight, out_proj.weight_orig * out_proj.weight_mask)  # current, not stale
    assert not torch.equal(out_proj.weight_orig[masks["attn.out_proj"]], start[masks["attn.out_proj"]])
    remove_masks(net)
    assert not net._forward_pre_hooks and isinstance(out_proj.weight, nn.Parameter)
    assert (out_proj.weight[~masks["attn.out_proj"]] == 0).all()


def test_random_pruning_keeps_each_layers_count_and_is_seeded():
    torch.manual_seed(0)
    ticket = {"0": torch.rand(8, 3, 3, 3) > 0.7, "2": torch.rand(16, 8) > 0.2}
    state = torch.random.get_rng_state()
    shuffled = random_masks(ticket, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    for name, m in ticket.items():
        assert int(shuffled[name].sum()) == int(m.sum()) and shuffled[name].shape == m.shape
        assert not torch.equal(shuffled[name], m)
    again = random_masks(ticket, seed=5)
    assert all(torch.equal(again[n], shuffled[n]) for n in ticket)
    assert not all(torch.equal(random_masks(ticket, seed=6)[n], shuffled[n]) for n in ticket)


def test_a_mask_of_another_network_is_refused():
    net = hand_net()
    with pytest.raises(UsageError, match="does not fit"):
        apply_masks(net, {"0": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(UsageError, match="does not fit"):
        apply_masks(net, {"7": torch.ones(2, 2, dtype=torch.bool)})
