"""``ghn predict`` command line."""

from __future__ import annotations

import os

import pytest

from ghn.cli import main

from .conftest import REFERENCE_CKPT

needs_reference = pytest.mark.skipif(not os.path.exists(REFERENCE_CKPT), reason="reference checkpoint not present")


@needs_reference
def test_predict_writes_state_dict(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "r18.safetensors"
    rc = main(["predict", "torchvision:resnet18", "--ckpt", REFERENCE_CKPT, "--num-classes", "10", "--small-input",
               "--out", str(out), "--report"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "predicted 62/62 parameter tensors" in printed and "0 untouched" in printed
    state = load_file(str(out))
    assert state["fc.weight"].shape == (10, 512) and state["conv1.weight"].shape == (64, 3, 3, 3)


@needs_reference
def test_bad_model_spec_exits_2(capsys):
    assert main(["predict", "torchvision:not_a_model", "--ckpt", REFERENCE_CKPT]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["predict", "nocolon", "--ckpt", REFERENCE_CKPT]) == 2


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 10)
    assert main(["predict", "torchvision:resnet18", "--ckpt", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad checkpoint" in err and "Traceback" not in err
    assert main(["predict", "torchvision:resnet18", "--ckpt", str(tmp_path / "missing.pt")]) == 2
