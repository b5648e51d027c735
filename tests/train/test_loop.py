"""Tests for :mod:`train.loop` with the real GHN, architecture space and digits, shrunk: training lowers the loss,
a stopped (or crashed mid-checkpoint) run resumes to bit-identical weights, non-finite steps never reach the
weights, over-cap meta-batches are skipped."""

import os
import time

import pytest
import torch

from archspace.errors import UsageError
from archspace.meta_batch import MetaBatchSampler
from train import checkpoint as ckpt_mod
from train.checkpoint import latest_checkpoint, load_checkpoint
from train.data import TrainBatches
from train.loop import Trainer, TrainingDiverged

from .conftest import TINY, assert_same_state, ghn_state, make_ghn


def make_trainer(run_dir, archs, data, steps=4, seed=0, ghn_seed=0, **kw):
    kw = dict(dict(meta_batch_size=2, max_nodes=0, ckpt_every=2, log_every=1, progress=False,
                   max_net_nodes=TINY["max_net_nodes"], device="cpu"), **kw)
    images = TrainBatches(data, TINY["batch_size"], seed=seed)
    return Trainer(make_ghn(ghn_seed), archs, images, str(run_dir), steps=steps, seed=seed, **kw)


def test_each_step_trains_on_the_meta_batch_of_the_shared_rule(tmp_path, archs, small_digits):
    trainer = make_trainer(tmp_path, archs, small_digits, seed=1)
    rule = MetaBatchSampler(len(archs), archs.num_nodes_of, 2, max_net_nodes=TINY["max_net_nodes"], seed=1)
    for step in (0, 5):
        graphs, models, nodes = trainer._meta_batch(step)
        assert graphs.net_index.tolist() == rule.draw(step)
        assert nodes == graphs.num_nodes == sum(archs.num_nodes_of(i) for i in rule.draw(step))
        assert [m.genotype for m in models] == [archs.genotype(i) for i in rule.draw(step)]


def test_meta_batches_over_max_nodes_are_skipped_and_counted(tmp_path, archs, small_digits):
    cap = 70  # two nets of at most 40 nodes: some meta-batches fit, some do not
    rule = MetaBatchSampler(len(archs), archs.num_nodes_of, 2, max_nodes=cap, max_net_nodes=TINY["max_net_nodes"])
    over = [s for s in range(6) if rule.skipped(rule.draw(s))]
    assert 0 < len(over) < 6
    trainer = make_trainer(tmp_path, archs, small_digits, steps=6, max_nodes=cap, ckpt_every=0)
    before = ghn_state(trainer.ghn)
    moved = []
    trainer.on_step = lambda row: moved.append(any(not torch.equal(v, before[k])
                                                   for k, v in ghn_state(trainer.ghn).items()))
    res = trainer.fit()
    assert res.skipped_large == len(over)
    assert [r["step"] - 1 for r in res.history if r["loss"] != r["loss"]] == over  # NaN loss: nothing trained
    first_trained = min(set(range(6)) - set(over))
    assert moved[:first_trained] == [False] * first_trained and moved[first_trained]


def test_training_lowers_the_loss(tmp_path, archs, small_digits):
    # Repeating one meta-batch and one image batch must be fitted: a real gradient signal through the GHN.
    trainer = make_trainer(tmp_path, archs, small_digits, steps=25, lr=3e-3, milestones=(0.9,), ckpt_every=0)
    fixed = trainer.sampler.draw(0)
    trainer.sampler.draw = lambda step: fixed
    x, y = trainer.images.batch(0)
    losses = [trainer.train_step(s, x, y)["loss"] for s in range(25)]
    assert losses[-1] < losses[0] - 0.2, losses


def test_run_writes_checkpoints_metrics_and_final_ghn(tmp_path, archs, small_digits):
    from ghn import GHN

    trainer = make_trainer(tmp_path, archs, small_digits, steps=4)
    res = trainer.fit()
    assert res.step == 4 and os.path.isfile(res.ghn_path)
    # The file holds the run's final weights, which training moved away from the initial ones.
    assert_same_state(ghn_state(trainer.ghn), ghn_state(GHN.load(res.ghn_path)))
    assert any(not torch.equal(v, ghn_state(make_ghn(0))[k]) for k, v in ghn_state(trainer.ghn).items())
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("step_00000004")
    ghn_path, state = load_checkpoint(path)  # weights_only load
    assert state["step"] == 4 and "optimizer" in state and "rng" in state
    assert_same_state(ghn_state(trainer.ghn), ghn_state(GHN.load(ghn_path)))
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    assert rows[0].startswith("step,loss,acc") and len(rows) == 5


def test_resume_is_exact(tmp_path, archs, small_digits):
    full = make_trainer(tmp_path / "full", archs, small_digits, steps=5)
    full.fit()
    # Stop after 3 steps, then resume in a new trainer whose GHN starts from different weights.
    make_trainer(tmp_path / "part", archs, small_digits, steps=5).fit(stop_at=3)
    resumed = make_trainer(tmp_path / "part", archs, small_digits, steps=5, ghn_seed=123)
    res = resumed.fit(resume=True)
    assert res.step == 5
    assert_same_state(ghn_state(full.ghn), ghn_state(resumed.ghn))
    rows = open(tmp_path / "part" / "metrics.csv").read().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    # a run of another length has another lr schedule: resuming it would not reproduce either run
    make_trainer(tmp_path / "short", archs, small_digits, steps=5).fit(stop_at=2)
    with pytest.raises(UsageError, match="belongs to a run of 5 steps, this run has 8"):
        make_trainer(tmp_path / "short", archs, small_digits, steps=8).fit(resume=True)


def test_resume_after_a_crash_while_writing_a_checkpoint(tmp_path, archs, small_digits, monkeypatch):
    full = make_trainer(tmp_path / "full", archs, small_digits, steps=5)
    full.fit()
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *a, **k):  # the process dies while writing the checkpoint of step 4
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(obj, f, *a, **k)
            with open(f, "r+b") as fh:
                fh.truncate(10)
            raise KeyboardInterrupt("killed")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "crash", archs, small_digits, steps=5).fit()
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert latest_checkpoint(str(tmp_path / "crash")).endswith("step_00000002")
    resumed = make_trainer(tmp_path / "crash", archs, small_digits, steps=5, ghn_seed=7)
    resumed.fit(resume=True)
    assert_same_state(ghn_state(full.ghn), ghn_state(resumed.ghn))
    assert not [d for d in os.listdir(tmp_path / "crash" / "checkpoints") if d.startswith(".tmp-")]


def test_non_finite_step_is_skipped(tmp_path, archs, small_digits):
    clean = make_trainer(tmp_path / "a", archs, small_digits, steps=3, ckpt_every=0)
    clean.fit(stop_at=1)
    nan = make_trainer(tmp_path / "b", archs, small_digits, steps=3, ckpt_every=0, inject_nan_steps=[1])
    res = nan.fit(stop_at=2)
    assert res.skipped_nonfinite == 1
    # Step 1 changed nothing: weights equal those after step 0 only.
    assert_same_state(ghn_state(clean.ghn), ghn_state(nan.ghn))
    assert all(torch.isfinite(p).all() for p in nan.ghn.parameters())


def test_consecutive_non_finite_steps_stop_the_run_and_keep_the_checkpoint(tmp_path, archs, small_digits):
    trainer = make_trainer(tmp_path, archs, small_digits, steps=8, ckpt_every=2, max_bad_steps=2,
                           inject_nan_steps=[2, 3, 4])
    with pytest.raises(TrainingDiverged, match="2 consecutive"):
        trainer.fit()
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("step_00000002")
    from ghn import GHN

    ghn = GHN.load(load_checkpoint(path)[0])
    assert all(torch.isfinite(p).all() for p in ghn.parameters())
    assert not os.path.exists(tmp_path / "ghn.safetensors")


def test_bad_settings_are_explained(tmp_path, archs, small_digits):
    with pytest.raises(UsageError, match="train.steps must be >= 1, got 0"):
        make_trainer(tmp_path, archs, small_digits, steps=0)
    with pytest.raises(UsageError, match="train.clip must be >= 0"):
        make_trainer(tmp_path, archs, small_digits, clip=-1.0)
    with pytest.raises(UsageError, match="unknown lr schedule 'cosine'"):
        make_trainer(tmp_path, archs, small_digits, lr_schedule="cosine")
    make_trainer(tmp_path, archs, small_digits, steps=2).fit()
    with pytest.raises(UsageError, match="already has checkpoints; pass resume=True"):
        make_trainer(tmp_path, archs, small_digits, steps=2).fit()
    with pytest.raises(UsageError, match="trained with seed 0, this run has 1"):
        make_trainer(tmp_path, archs, small_digits, steps=2, seed=1).fit(resume=True)
    with pytest.raises(UsageError, match="lr schedule step, this run has linear"):
        make_trainer(tmp_path, archs, small_digits, steps=2, lr_schedule="linear").fit(resume=True)
    with pytest.raises(UsageError, match=r"lr schedule step, this run has step\+warmup0.1; resume with the "
                                         r"optim.schedule and optim.warmup"):
        make_trainer(tmp_path, archs, small_digits, steps=2, warmup=0.1).fit(resume=True)
    with pytest.raises(UsageError, match="no weight average but this run has ema_decay=0.5"):
        make_trainer(tmp_path, archs, small_digits, steps=2, ema_decay=0.5).fit(resume=True)


def test_weight_average_follows_its_definition_and_resumes_exactly(tmp_path, archs, small_digits):
    from ghn import GHN

    decay = 0.5
    # The average after each step, computed by hand from the raw weights of the same run without averaging.
    raw = []
    plain = make_trainer(tmp_path / "plain", archs, small_digits, steps=3,
                         on_step=lambda row: raw.append([p.detach().clone() for p in plain.ghn.parameters()]))
    expected = [p.detach().clone() for p in plain.ghn.parameters()]
    plain.fit()
    for weights in raw:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    full = make_trainer(tmp_path / "full", archs, small_digits, steps=3, ema_decay=decay)
    res = full.fit()
    saved = GHN.load(res.ghn_path)
    for name_p, e in zip(saved.named_parameters(), expected):
        torch.testing.assert_close(name_p[1], e, rtol=0, atol=1e-6, msg=name_p[0])
    # The average moved away from the raw weights, so the comparison above is not the raw weights again.
    assert any(not torch.allclose(a, b) for a, b in zip(saved.parameters(), full.ghn.parameters()))
    # Stopped after 2 steps and resumed from a GHN with other weights: the same average at the end.
    make_trainer(tmp_path / "part", archs, small_digits, steps=3, ema_decay=decay).fit(stop_at=2)
    resumed = make_trainer(tmp_path / "part", archs, small_digits, steps=3, ema_decay=decay, ghn_seed=9)
    resumed.fit(resume=True)
    assert_same_state(ghn_state(full.final_ghn), ghn_state(resumed.final_ghn))
    with pytest.raises(UsageError, match="ema_decay must be in"):
        make_trainer(tmp_path / "x", archs, small_digits, steps=3, ema_decay=1.0)


def test_resume_is_exact_with_the_linear_schedule(tmp_path, archs, small_digits):
    full = make_trainer(tmp_path / "full", archs, small_digits, steps=5, lr_schedule="linear")
    full.fit()
    make_trainer(tmp_path / "part", archs, small_digits, steps=5, lr_schedule="linear").fit(stop_at=3)
    resumed = make_trainer(tmp_path / "part", archs, small_digits, steps=5, ghn_seed=123, lr_schedule="linear")
    resumed.fit(resume=True)
    assert_same_state(ghn_state(full.ghn), ghn_state(resumed.ghn))
    # The lr of step s (0-based) is 1e-3 * (1 - s / 5), in the uninterrupted and in the resumed run alike.
    for run in ("full", "part"):
        lrs = [float(r.split(",")[4]) for r in open(tmp_path / run / "metrics.csv").read().split()[1:]]
        assert lrs == pytest.approx([1e-3 * (1 - s / 5) for s in range(5)], rel=1e-5)


def test_channels_last_runs_the_nets_in_nhwc_with_the_same_step(tmp_path, archs, small_digits):
    # The memory format changes only the kernels: the same loss and gradient up to float rounding.
    formats, grads, losses = [], {}, {}
    for cl in (True, False):
        trainer = make_trainer(tmp_path / str(cl), archs, small_digits, channels_last=cl)
        graphs, models, _ = trainer._meta_batch(0)
        handles = [m.register_forward_pre_hook(lambda mod, args, cl=cl: formats.append(
            (cl, args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous())))
            for model in models for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        x, y = trainer.images.batch(0)
        loss, _ = trainer.objective(graphs, models, x, y, [0, 1])
        loss.backward()
        for h in handles:
            h.remove()
        losses[cl] = float(loss.detach())
        grads[cl] = torch.cat([p.grad.flatten() for p in trainer.ghn.parameters() if p.grad is not None])
    assert {f for cl, f in formats if cl} == {True} and {f for cl, f in formats if not cl} == {False}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert float((grads[True] - grads[False]).norm() / grads[False].norm()) < 1e-2


def test_two_runs_of_the_same_configuration_give_identical_weights(tmp_path, archs, small_digits):
    """The default run is defined by steps: the lr follows steps, not the clock, so a slow (loaded) machine gives
    the same weights as a fast one. In the second run the first step seems to take 90% of the time limit (a
    schedule that followed the clock would then be nearly at its end after one step)."""
    a = make_trainer(tmp_path / "a", archs, small_digits, steps=5, lr_schedule="linear", time_limit_s=1e6)
    a.fit()
    slow_first_step = {"calls": 0}

    def clock() -> float:  # from the end of step 0 on (the 3rd reading), 900,000 s ahead of the real clock
        slow_first_step["calls"] += 1
        return time.time() + (9e5 if slow_first_step["calls"] > 2 else 0.0)

    b = make_trainer(tmp_path / "b", archs, small_digits, steps=5, lr_schedule="linear", time_limit_s=1e6,
                     clock=clock)
    result = b.fit()
    assert not result.cut_short and result.step == result.planned_steps == 5 and b.elapsed > 8e5
    assert_same_state(ghn_state(a.ghn), ghn_state(b.ghn))
    # The delivered files are byte-identical (metadata included).
    fa, fb = (tmp_path / run / "ghn.safetensors" for run in "ab")
    assert fa.read_bytes() == fb.read_bytes()


def test_the_safety_time_limit_cuts_the_run_short_and_says_so(tmp_path, archs, small_digits, caplog):
    trainer = make_trainer(tmp_path, archs, small_digits, steps=50, lr_schedule="linear", time_limit_s=1e-9)
    with caplog.at_level("WARNING"):
        result = trainer.fit()
    assert result.cut_short and result.step == 1 and result.planned_steps == 50
    assert os.path.exists(result.ghn_path)
    assert "CUT SHORT at step 1 of 50 (2.0%" in caplog.text
    # The lr schedule of a cut run is the step schedule, truncated: the one step ran at the initial lr.
    lrs = [float(r.split(",")[4]) for r in open(tmp_path / "metrics.csv").read().split()[1:]]
    assert lrs == pytest.approx([1e-3])


def test_resuming_a_cut_short_run_needs_a_larger_time_limit(tmp_path, archs, small_digits):
    """A cut-short run resumed with the limit it already used would stop again after one step (and evaluate a
    GHN it knows is not the run's): it is refused up front, with the limit that lets it finish."""
    cut = make_trainer(tmp_path, archs, small_digits, steps=4, lr_schedule="linear", time_limit_s=1e-9)
    first = cut.fit()
    assert first.cut_short and first.total_seconds == cut.elapsed > 0
    again = make_trainer(tmp_path, archs, small_digits, steps=4, lr_schedule="linear", time_limit_s=1e-9)
    with pytest.raises(UsageError, match=r"cut short at step 1 of 4 .*train\.time_limit_min=1\)"):
        again.fit(resume=True)
    done = make_trainer(tmp_path, archs, small_digits, steps=4, lr_schedule="linear", time_limit_s=1e6).fit(resume=True)
    assert not done.cut_short and done.step == 4 and os.path.exists(done.ghn_path)
    assert done.total_seconds > first.total_seconds  # eval.json's train_seconds covers both segments
