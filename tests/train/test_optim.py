"""Learning-rate schedules driven by the fraction of the run done."""

import pytest
import torch

from train.optim import ProgressLinearLR, build_progress_scheduler


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_linear_decays_to_zero_at_the_end():
    opt = _opt(0.1)
    sched = build_progress_scheduler(opt, "linear")
    got = []
    for p in (0.0, 0.25, 0.5, 0.9, 1.0, 1.2):
        sched.step(p)
        got.append(opt.param_groups[0]["lr"])
    assert got == pytest.approx([0.1, 0.075, 0.05, 0.01, 0.0, 0.0])


def test_step_schedule_drops_at_milestones_and_constant_without_them():
    opt = _opt(1.0)
    sched = build_progress_scheduler(opt, "step", milestones=(0.5, 0.75), gamma=0.1)
    for p, lr in ((0.0, 1.0), (0.49, 1.0), (0.5, 0.1), (0.8, 0.01)):
        sched.step(p)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    opt = _opt(1.0)
    const = build_progress_scheduler(opt, "step", milestones=())
    const.step(0.99)
    assert opt.param_groups[0]["lr"] == 1.0


def test_state_round_trip_and_a_schedule_mismatch_is_explained():
    a = ProgressLinearLR(_opt(0.2))
    a.step(0.3)
    b = ProgressLinearLR(_opt(0.5))
    b.load_state_dict(a.state_dict())
    b.step(0.3)
    assert b.get_last_lr() == pytest.approx([0.14])
    step = build_progress_scheduler(_opt(), "step")
    with pytest.raises(ValueError, match="another lr schedule"):
        step.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="another lr schedule"):
        a.load_state_dict(step.state_dict())
    with pytest.raises(ValueError, match="unknown lr schedule 'cosine'"):
        build_progress_scheduler(_opt(), "cosine")
