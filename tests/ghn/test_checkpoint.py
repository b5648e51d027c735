"""Checkpoints: round trip of our format, the reference format, and one clear error for every bad file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import ghn.checkpoint
from archspace.errors import UsageError
from ghn import GHN, CheckpointError
from ghn.checkpoint import FORMAT, atomic_save_safetensors, copy_state_into, read_metadata

from .conftest import REFERENCE_CKPT, needs_reference

SMALL = {"max_shape": [8, 8, 3, 3], "num_classes": 10, "hidden_dim": 8}


def small_state() -> dict[str, torch.Tensor]:
    """The state dict of a GHN with the :data:`SMALL` config."""
    return GHN(**SMALL).state_dict()



def test_a_loaded_ghn_carries_its_training_widths_and_saves_them_again(tmp_path):
    """``ghn-train`` records the widths in the metadata; a loaded GHN carries them (so predictors widen the nets
    wider than them), saving it again keeps them, and a checkpoint that does not say, or says something else than
    a pair of widths, gives ``None``."""
    from ghn.checkpoint import read_train_width_range

    path, again = tmp_path / "ranged.safetensors", tmp_path / "again.safetensors"
    GHN(**SMALL).save(str(path), extra={"train_width_range": [4, 8]})
    ghn = GHN.load(str(path))
    assert ghn.train_width_range == (4, 8) and read_train_width_range(str(path)) == (4, 8)
    assert ghn.max_train_width == 8  # where wider nets are predicted and widened from
    ghn.save(str(again))
    assert GHN.load(str(again)).train_width_range == (4, 8)
    plain = tmp_path / "plain.safetensors"
    GHN(**SMALL).save(str(plain))
    assert GHN(**SMALL).train_width_range is None and GHN.load(str(plain)).train_width_range is None
    assert GHN.load(str(plain)).max_train_width is None
    assert "train_width_range" not in read_metadata(str(plain))
    for odd in ("wide", "[8, 4]", "[0, 4]", "[4]"):
        bad = tmp_path / "odd.safetensors"
        GHN(**SMALL).save(str(bad), extra={"train_width_range": odd})
        assert GHN.load(str(bad)).train_width_range is None, odd

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
    assert [p.name for p in tmp_path.iterdir()] == ["ghn.safetensors"]  # no temporary file left behind
    meta = read_metadata(str(path))
    assert meta["epoch"] == "3" and meta["format"] == FORMAT and json.loads(meta["config"]) == ghn.config


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.safetensors"
    atomic_save_safetensors({"w": torch.ones(3)}, str(path))
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type for a non-string metadata value
        atomic_save_safetensors({"w": torch.zeros(3)}, str(path), {"bad": 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]


@needs_reference
def test_reference_format_loads_as_is():
    ref = torch.load(REFERENCE_CKPT, weights_only=True)
    ghn = GHN.load(REFERENCE_CKPT)
    assert sum(p.numel() for p in ghn.parameters()) == 1_620_764
    assert ghn.config["hidden_dim"] == ref["config"]["hid"] and ghn.image_size == 32
    for k, v in ref["state_dict"].items():
        assert torch.equal(ghn.state_dict()[k], v), k


def test_reference_format_round_trip_and_no_metadata(tmp_path):
    path = tmp_path / "ghn.pt"
    state = small_state()
    torch.save({"state_dict": state, "config": {"max_shape": (8, 8, 3, 3), "num_classes": 10, "hid": 8,
                                                "debug_level": 0}}, path)
    back = GHN.load(str(path))
    assert back.hidden_dim == 8 and all(torch.equal(back.state_dict()[k], v) for k, v in state.items())
    assert read_metadata(str(path)) == {}  # reference-format files carry no metadata


def test_errors_are_usage_errors():
    assert issubclass(CheckpointError, UsageError) and issubclass(CheckpointError, ValueError)


# ---- every bad file: (how to make it, the start of the message) ---------------------------------------------------
def make_directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


def make_missing(tmp_path):
    return tmp_path / "nope.safetensors"


def make_empty(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    return p


def make_truncated_safetensors(tmp_path):
    p = tmp_path / "ghn.safetensors"
    GHN(**SMALL).save(str(p))
    p.write_bytes(p.read_bytes()[:-100])
    return p


def make_truncated_header(tmp_path):
    p = tmp_path / "ghn.safetensors"
    GHN(**SMALL).save(str(p))
    p.write_bytes(p.read_bytes()[:100])
    return p


def make_truncated_torch(tmp_path):
    p = tmp_path / "ghn.pt"
    torch.save({"state_dict": small_state(), "config": SMALL}, p)
    p.write_bytes(p.read_bytes()[:-200])
    return p


def make_text(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, not a checkpoint")
    return p


def make_plain_state_dict(tmp_path):
    p = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), p)  # tensors, but no GHN config
    return p


def make_pickled_module(tmp_path):
    p = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), p)  # a whole module: not loadable with weights_only
    return p


def make_plain_safetensors(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))  # safetensors without our metadata
    return p


def torch_with_config(**change):
    def make(tmp_path):
        p = tmp_path / "ghn.pt"
        torch.save({"state_dict": small_state(), "config": {**SMALL, **change}}, p)
        return p
    return make


def make_config_not_json(tmp_path):
    p = tmp_path / "ghn.safetensors"
    save_file(small_state(), str(p), metadata={"format": FORMAT, "config": "{max_shape: 8"})
    return p


def make_config_mismatch(tmp_path):
    p = tmp_path / "ghn.pt"
    torch.save({"state_dict": small_state(), "config": {**SMALL, "hidden_dim": 16}}, p)
    return p


def make_unfinished_run(tmp_path):
    step = tmp_path / "run" / "checkpoints" / "step_00000030"
    step.mkdir(parents=True)
    (step / "ghn.safetensors").write_bytes(b"")
    return tmp_path / "run"


BAD_FILES = {
    "directory": (make_directory, "checkpoint is a directory, not a file"),
    "unfinished run": (make_unfinished_run, "checkpoint is the folder of an unfinished training run"),
    "missing": (make_missing, "checkpoint file not found"),
    "empty": (make_empty, "empty checkpoint file"),
    "truncated safetensors": (make_truncated_safetensors, "truncated or corrupt checkpoint"),
    "truncated header": (make_truncated_header, "truncated or corrupt checkpoint"),
    "truncated torch file": (make_truncated_torch, "truncated or corrupt checkpoint"),
    "text file": (make_text, "not a GHN checkpoint"),
    "plain state dict": (make_plain_state_dict, "not a GHN checkpoint"),
    "pickled module": (make_pickled_module, "not a GHN checkpoint"),
    "plain safetensors": (make_plain_safetensors, "not a GHN checkpoint"),
    "3-entry max_shape": (torch_with_config(max_shape=[64, 64, 11]), "invalid GHN config"),
    "negative hidden_dim": (torch_with_config(hidden_dim=-8), "invalid GHN config"),
    "zero num_classes": (torch_with_config(num_classes=0), "invalid GHN config"),
    "unknown key": (torch_with_config(colour="blue"), "invalid GHN config"),
    "unknown hypernet": (torch_with_config(hypernet="transformer"), "invalid GHN config"),
    "config not JSON": (make_config_not_json, "invalid GHN config"),
    "config and weights disagree": (make_config_mismatch, "weights do not match the checkpoint's configuration"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_gives_one_clear_error(case, tmp_path):
    make, message = BAD_FILES[case]
    path = str(make(tmp_path))
    with pytest.raises(CheckpointError) as info:
        GHN.load(path)
    text = str(info.value)
    assert text.startswith(f"{message}: {path}"), text
    assert "\n" not in text
    if case == "unfinished run":
        assert f"the latest: {path}/checkpoints/step_00000030/ghn.safetensors" in text and "resume=true" in text


def test_invalid_config_names_the_value(tmp_path):
    with pytest.raises(CheckpointError, match=r"max_shape must be 4 positive integers.*\[64, 64, 11\]"):
        GHN.load(str(torch_with_config(max_shape=[64, 64, 11])(tmp_path)))
    with pytest.raises(CheckpointError, match="hidden_dim must be an integer >= 4, got -8"):
        GHN.load(str(torch_with_config(hidden_dim=-8)(tmp_path)))
    with pytest.raises(CheckpointError, match="unknown key 'colour'"):
        GHN.load(str(torch_with_config(colour="blue")(tmp_path)))
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\) missing.*of another shape"):
        state = small_state()
        del state["embed.weight"], state["ln.weight"]
        path = tmp_path / "partial.pt"
        torch.save({"state_dict": state, "config": {**SMALL, "hidden_dim": 16}}, path)
        GHN.load(str(path))


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "ghn.safetensors"
    GHN(**SMALL).save(str(path))
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads any file: make the read itself fail as it would for a user
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(ghn.checkpoint, "open", refuse, raising=False)
    try:
        with pytest.raises(CheckpointError, match=f"cannot read checkpoint: {path} \\(Permission denied\\)"):
            GHN.load(str(path))
        with pytest.raises(CheckpointError, match="cannot read checkpoint"):
            read_metadata(str(path))
    finally:
        os.chmod(path, 0o644)


def test_read_metadata_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="is a directory"):
        read_metadata(str(tmp_path))


def test_the_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    """safetensors orders its metadata at random (a Rust hash map per save); ours sorts it, so a reproducible run
    writes a byte-identical file, and the file still reads back whole."""
    state = small_state()
    meta = {f"key{i}": f"value {i}" for i in range(16)}
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:
        atomic_save_safetensors(state, f, meta)
    assert len({f.read_bytes() for f in files}) == 1
    from safetensors import safe_open

    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata() == meta
        assert all(torch.equal(f.get_tensor(k), v) for k, v in state.items())
    raw = files[0].read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == sorted(meta)


def test_copy_state_into_loads_safetensors_weights_into_a_version_checking_module(tmp_path):
    """torchvision's MNASNet refuses load_state_dict without the module versions that safetensors drops;
    copy_state_into copies the tensors in place, and refuses weights of another network."""
    import torchvision
    from safetensors.torch import load_file

    torch.manual_seed(0)
    src = torchvision.models.mnasnet0_5(num_classes=10)
    path = tmp_path / "w.safetensors"
    atomic_save_safetensors(src.state_dict(), path)
    state = load_file(str(path))
    dst = torchvision.models.mnasnet0_5(num_classes=10)
    with pytest.raises(ValueError):
        dst.load_state_dict(state)
    copy_state_into(dst, state)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(ValueError, match="do not fit"):
        copy_state_into(torch.nn.Linear(2, 2), state)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ValueError, match="classifier.1.weight has shape"):
        # other values everywhere, so that a copy begun before the check would show
        copy_state_into(dst, {**{k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
                              "classifier.1.weight": torch.zeros(5, 1280)})
    for k, v in before.items():  # refused before any tensor was copied
        assert torch.equal(dst.state_dict()[k], v), k
