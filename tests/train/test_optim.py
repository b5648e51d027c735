"""The optimiser and the learning-rate schedule driven by the fraction of the run done (a ``LambdaLR``)."""

import io

import pytest
import torch

from archspace.errors import UsageError
from train.optim import build_optimizer, build_progress_scheduler

# These tests step the schedule without training; the trainer silences the same warning (see train.loop).
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


class Progress:
    """A settable fraction of the run done, read by the scheduler at every step."""

    def __init__(self):
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def lrs_at(opt, sched, progress, fractions):
    out = []
    for p in fractions:
        progress.value = p
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def test_linear_decays_to_zero_at_the_end():
    opt, progress = _opt(0.1), Progress()
    sched = build_progress_scheduler(opt, progress, "linear")
    assert opt.param_groups[0]["lr"] == 0.1  # set at construction, for progress 0
    got = lrs_at(opt, sched, progress, (0.25, 0.5, 0.9, 1.0, 1.2))
    assert got == pytest.approx([0.075, 0.05, 0.01, 0.0, 0.0])


def test_step_schedule_drops_at_milestones_and_constant_without_them():
    opt, progress = _opt(1.0), Progress()
    sched = build_progress_scheduler(opt, progress, "step", milestones=(0.5, 0.75), gamma=0.1)
    assert lrs_at(opt, sched, progress, (0.49, 0.5, 0.8)) == pytest.approx([1.0, 0.1, 0.01])
    opt, progress = _opt(1.0), Progress()
    const = build_progress_scheduler(opt, progress, "step", milestones=())
    assert lrs_at(opt, const, progress, (0.5, 0.99)) == [1.0, 1.0]


def test_state_round_trip_is_weights_only_and_continues_the_schedule():
    # A run checkpointed at 30% and resumed in fresh objects sets the same lrs as the uninterrupted one.
    opt, progress = _opt(0.2), Progress()
    sched = build_progress_scheduler(opt, progress, "linear")
    lrs_at(opt, sched, progress, (0.1, 0.3))
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, progress2 = _opt(0.5), Progress()
    sched2 = build_progress_scheduler(opt2, progress2, "linear")
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.14)
    assert lrs_at(opt2, sched2, progress2, (0.6, 0.9)) == lrs_at(opt, sched, progress, (0.6, 0.9))
    assert sched2.get_last_lr() == pytest.approx([0.02])


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown lr schedule 'cosine'"):
        build_progress_scheduler(_opt(), Progress(), "cosine")
    with pytest.raises(UsageError, match="unknown lr schedule 'linaer'; did you mean linear"):
        build_progress_scheduler(_opt(), Progress(), "linaer")
    with pytest.raises(UsageError, match="milestones must be increasing fractions"):
        build_progress_scheduler(_opt(), Progress(), "step", milestones=(0.8, 0.5))
    with pytest.raises(UsageError, match="milestones must be increasing fractions"):
        build_progress_scheduler(_opt(), Progress(), "step", milestones=(200, 250))
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(UsageError, match="unknown optimizer 'adma'; did you mean adam"):
        build_optimizer(params, "adma")
    with pytest.raises(UsageError, match="optim.lr must be positive, got 0"):
        build_optimizer(params, "adam", lr=0)
    assert isinstance(build_optimizer(params, "adamw", lr=1e-3), torch.optim.AdamW)


def test_warmup_ramps_linearly_then_follows_the_schedule():
    # 10% warm-up on the linear decay: the ramp multiplies the decay, so the factor at 5% is 0.5 x 0.95.
    opt, progress = _opt(1.0), Progress()
    sched = build_progress_scheduler(opt, progress, "linear", warmup=0.1)
    assert opt.param_groups[0]["lr"] == 0.0  # the first step of the run
    assert lrs_at(opt, sched, progress, (0.05, 0.1, 0.5)) == pytest.approx([0.5 * 0.95, 0.9, 0.5])
    opt, progress = _opt(1.0), Progress()
    sched = build_progress_scheduler(opt, progress, "step", milestones=(0.5,), gamma=0.1, warmup=0.2)
    assert lrs_at(opt, sched, progress, (0.1, 0.3, 0.6)) == pytest.approx([0.5, 1.0, 0.1])
    with pytest.raises(UsageError, match=r"optim.warmup must be a fraction of the run in \[0, 1\), got 1.5"):
        build_progress_scheduler(_opt(), Progress(), "linear", warmup=1.5)
