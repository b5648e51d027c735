"""Checkpoints: round trip of our format, the reference format, and clear errors for bad files."""

from __future__ import annotations

import os

import pytest
import torch

from ghn import GHN, CheckpointError
from ghn.checkpoint import read_metadata

from .conftest import REFERENCE_CKPT


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    ghn = GHN(max_shape=(16, 16, 5, 5), hidden_dim=16, num_classes=7, ve=False, image_size=64)
    path = tmp_path / "ghn.safetensors"
    ghn.save(str(path), extra={"epoch": 3})
    back = GHN.load(str(path))
    assert back.config == ghn.config and back.image_size == 64
    for (k, a), (k2, b) in zip(ghn.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not back.training
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the temp file is gone
    meta = read_metadata(str(path))
    assert meta["epoch"] == "3" and meta["format"] == "ghn-archspace/1" and "config" in meta


@pytest.mark.skipif(not os.path.exists(REFERENCE_CKPT), reason="reference checkpoint not present")
def test_reference_format_loads_as_is():
    ref = torch.load(REFERENCE_CKPT, weights_only=True)
    ghn = GHN.load(REFERENCE_CKPT)
    assert sum(p.numel() for p in ghn.parameters()) == 1_620_764
    assert ghn.config["hidden_dim"] == ref["config"]["hid"] and ghn.image_size == 32
    for k, v in ref["state_dict"].items():
        assert torch.equal(ghn.state_dict()[k], v), k


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        GHN.load(str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize("cut", [0, 5, 100, -100])
def test_truncated_safetensors(tmp_path, cut):
    path = tmp_path / "ghn.safetensors"
    GHN(max_shape=(8, 8, 3, 3), hidden_dim=8).save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        GHN.load(str(path))


def test_truncated_torch_file(tmp_path):
    ghn = GHN(max_shape=(8, 8, 3, 3), hidden_dim=8)
    path = tmp_path / "ghn.pt"
    torch.save({"state_dict": ghn.state_dict(), "config": {"max_shape": (8, 8, 3, 3), "num_classes": 10,
                                                            "hid": 8}}, path)
    assert GHN.load(str(path)).hidden_dim == 8
    assert read_metadata(str(path)) == {}  # reference-format files carry no metadata
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        GHN.load(str(path))


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a GHN checkpoint"):
        GHN.load(str(text))
    other = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)  # a plain state dict, no GHN config
    with pytest.raises(CheckpointError, match="not a GHN checkpoint"):
        GHN.load(str(other))
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))  # safetensors without our metadata
    with pytest.raises(CheckpointError, match="not a GHN checkpoint"):
        GHN.load(str(plain))


def test_config_state_mismatch(tmp_path):
    path = tmp_path / "ghn.pt"
    torch.save({"state_dict": GHN(max_shape=(8, 8, 3, 3), hidden_dim=8).state_dict(),
                "config": {"max_shape": (8, 8, 3, 3), "num_classes": 10, "hid": 16}}, path)
    with pytest.raises(CheckpointError, match="configuration"):
        GHN.load(str(path))
