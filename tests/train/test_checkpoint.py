"""Training checkpoints: a round trip restores weights, state and RNG; old ones are pruned; a damaged or
hand-edited checkpoint folder gives one clear error."""

import os
import random

import pytest
import torch

from archspace.errors import UsageError
from ghn import GHN
from train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state

from .conftest import assert_same_state, ghn_state, make_ghn


def test_round_trip_restores_weights_state_and_rng(tmp_path):
    ghn = make_ghn(3)
    random.seed(1)
    torch.manual_seed(1)
    state = {"rng": rng_state(), "counter": 7}
    expected = (random.random(), float(torch.rand(())))
    path = save_checkpoint(str(tmp_path), 12, ghn, state)
    assert latest_checkpoint(str(tmp_path)) == path and path.endswith("step_00000012")
    ghn_path, loaded = load_checkpoint(path)
    assert loaded["step"] == 12 and loaded["counter"] == 7
    assert_same_state(ghn_state(ghn), ghn_state(GHN.load(ghn_path)))
    set_rng_state(loaded["rng"])
    assert (random.random(), float(torch.rand(()))) == expected


def test_only_the_newest_are_kept_and_no_temp_files_remain(tmp_path):
    ghn = make_ghn(0)
    for step in (1, 2, 3):
        save_checkpoint(str(tmp_path), step, ghn, {}, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["LATEST", "step_00000002", "step_00000003"]
    assert (root / "LATEST").read_text() == "step_00000003\n"
    assert latest_checkpoint(str(tmp_path / "elsewhere")) is None


def test_damaged_checkpoints_are_one_line_usage_errors(tmp_path):
    path = save_checkpoint(str(tmp_path), 1, make_ghn(0), {"x": 1})
    state = os.path.join(path, "state.pt")
    with open(state, "r+b") as f:
        f.truncate(20)
    with pytest.raises(UsageError, match=r"unreadable training checkpoint: .*state\.pt"):
        load_checkpoint(path)
    os.remove(state)
    with pytest.raises(UsageError, match=r"incomplete training checkpoint: .*state\.pt \(file missing\)"):
        load_checkpoint(path)
    with pytest.raises(UsageError, match="the latest checkpoint is incomplete: .*LATEST.*modified by hand"):
        latest_checkpoint(str(tmp_path))
