"""``ghn`` command line: ``ghn predict`` end to end, and one line on stderr with status 2 for every bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ghn import CheckpointError
from ghn.cli import build_parser, main
from ghn.model import GHN

from .conftest import REFERENCE_CKPT, needs_reference
from .nets import TinyResNet
from .test_checkpoint import BAD_FILES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "tests.ghn.nets:TinyResNet"  # a runnable 10-class CNN, spelled as pkg.module:callable
FLAT = "tests.ghn.nets:FlatNet"  # runs on 8x8 images only


def error_line(capsys) -> str:
    """The one line the command wrote on stderr (asserting there is exactly one, and no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("ghn: error: "), err
    return lines[0]


@needs_reference
def test_predict_reference_resnet18(tmp_path, capsys):
    out = tmp_path / "r18.safetensors"
    rc = main(["predict", "torchvision:resnet18", "--ckpt", REFERENCE_CKPT, "--num-classes", "10", "--small-input",
               "--out", str(out), "--report"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "predicted 62/62 parameter tensors" in printed and "0 untouched" in printed
    state = load_file(str(out))
    assert state["fc.weight"].shape == (10, 512) and state["conv1.weight"].shape == (64, 3, 3, 3)


def test_predict_writes_a_state_dict_that_loads_into_the_plain_model(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "sub" / "tiny.safetensors"
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--out", str(out)]) == 0
    assert "predicted 10/10 parameter tensors" in capsys.readouterr().out
    model = TinyResNet()
    model.load_state_dict(load_file(str(out)), strict=True)  # default --bn-mode running keeps the BN buffers
    expected = GHN.load(tiny_ckpt).predict(TinyResNet(), bn_mode="running")
    for name, p in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], p, rtol=1e-5, atol=1e-6, msg=name)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["bn_mode"] == "running" and meta["classifier"] == "predicted"
    # what rebuilds the model the file fits
    assert meta["model"] == TINY and meta["num_classes"] == "10" and meta["small_input"] == "False"


def test_bn_mode_batch_drops_the_running_buffers(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--out", str(out), "--bn-mode", "batch",
                 "--report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bn_mode"] == "batch"
    state = load_file(str(out))
    assert "bn.weight" in state and "bn.running_mean" not in state



def test_predict_widens_a_net_wider_than_the_ghns_training_widths(tmp_path, capsys):
    """A checkpoint that says it was trained on width 4: the width-32 DeepNets-1M net is predicted at width 4 and
    widened (the report and the file's metadata say so); --no-widen predicts it directly, with other weights."""
    ckpt = tmp_path / "g4.safetensors"
    torch.manual_seed(0)
    GHN(max_shape=(16, 16, 3, 3), num_classes=10, hidden_dim=8).save(str(ckpt), extra={"train_width_range": [4, 4]})
    states = {}
    for flag in ([], ["--no-widen"]):
        out = tmp_path / f"net{len(states)}.safetensors"
        assert main(["predict", "deepnets:test/0", "--ckpt", str(ckpt), "--out", str(out), "--report", "--json",
                     *flag]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["widened_from"] == (None if flag else 4)
        with safe_open(str(out), "pt") as f:
            assert f.metadata()["widened_from"] == ("not widened" if flag else "4")
        states[bool(flag)] = load_file(str(out))
    assert states[True].keys() == states[False].keys()
    assert any(not torch.equal(states[True][k], states[False][k]) for k in states[True] if k.endswith("weight"))

@pytest.mark.parametrize("old", ["keep", "reset"])
def test_old_bn_words_are_refused_in_one_line(old, tiny_ckpt, capsys):
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--bn-mode", old]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("ghn: error: argument --bn-mode: invalid choice")
    assert f"'{old}' (choose from 'batch', 'running')" in lines[0] and "see ghn predict --help" in lines[0]


@pytest.mark.parametrize("argv, phrase", [
    (["predict", TINY, "--ckpt", "x", "--input-size", "abc"], "argument --input-size: expected a positive integer"),
    (["predict", TINY, "--ckpt", "x", "--num-classes", "0"], "argument --num-classes: must be >= 1, got 0"),
    (["rnk"], "argument command: invalid choice: 'rnk'"),
    (["rank", "deepnets:test/0-3", "--ckpt", "x", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_are_one_line(argv, phrase, capsys):
    assert main(argv) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("ghn: error: ") and phrase in lines[0], lines


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_checkpoint(case, tmp_path, capsys):
    make, message = BAD_FILES[case]
    path = str(make(tmp_path))
    assert main(["predict", TINY, "--ckpt", path]) == 2
    assert error_line(capsys).startswith(f"ghn: error: {message}: {path}")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        main(["--debug", "predict", TINY, "--ckpt", str(tmp_path / "missing.pt")])


@pytest.mark.parametrize("where, message", [
    ("folder", "--out {out} is a directory; give a file name inside it"),
    ("missing folder", "--out {out} is a directory; give a file name inside it"),
    ("under a file", "--out {out}: cannot write in {parent}; choose a writable location"),
])
def test_bad_out_fails_before_prediction(where, message, tiny_ckpt, tmp_path, capsys, monkeypatch):
    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before checking --out")

    monkeypatch.setattr(GHN, "predict", no_prediction)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = {"folder": str(tmp_path), "missing folder": f"{tmp_path / 'nodir'}{os.sep}"}.get(
        where, str(blocker / "out.safetensors"))
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--out", out]) == 2
    assert error_line(capsys) == "ghn: error: " + message.format(out=out, parent=blocker)


@pytest.mark.parametrize("flag, value", [("--num-classes", "0"), ("--num-classes", "-3"), ("--input-size", "0"),
                                         ("--input-size", "-32")])
def test_non_positive_sizes(flag, value, tiny_ckpt, capsys):
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, flag, value]) == 2
    assert error_line(capsys) == f"ghn: error: argument {flag}: must be >= 1, got {value} (see ghn predict --help)"


def test_other_number_of_classes_needs_keep_classifier_init(tiny_ckpt, tmp_path, capsys):
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--num-classes", "5"]) == 2
    line = error_line(capsys)
    assert "the GHN was trained for 10 classes but the model's classifier (fc.weight, fc.bias) has 5 outputs" in line
    assert "--keep-classifier-init" in line
    out = tmp_path / "five.safetensors"
    assert main(["predict", TINY, "--ckpt", tiny_ckpt, "--num-classes", "5", "--keep-classifier-init",
                 "--out", str(out), "--report"]) == 0
    printed = capsys.readouterr().out
    assert "predicted 8/10 parameter tensors" in printed and "2 kept at their initial values (classifier)" in printed
    assert "classifier kept at its initial values (keep_classifier_init): fc.weight, fc.bias" in printed
    assert load_file(str(out))["fc.weight"].shape == (5, 8)


def test_input_size_the_model_cannot_run_at(tiny_ckpt, capsys):
    assert main(["predict", FLAT, "--ckpt", tiny_ckpt, "--input-size", "16"]) == 2
    line = error_line(capsys)
    assert line.startswith("ghn: error: FlatNet does not run at input size 16 (RuntimeError: ")
    assert line.endswith("try input size 8, the size the model declares")
    assert main(["predict", FLAT, "--ckpt", tiny_ckpt]) == 0  # its declared size is the default


@pytest.mark.parametrize("spec, words", [("torchvision:resnet1", "did you mean"), ("nocolon", "torchvision:NAME")])
def test_bad_model_spec(spec, words, tiny_ckpt, capsys):
    assert main(["predict", spec, "--ckpt", tiny_ckpt]) == 2
    assert words in error_line(capsys)


def test_subcommands_of_other_packages_come_from_entry_points():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"predict", "rank", "finetune"} <= set(sub.choices)


def test_console_script_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ghn.cli", "predict", TINY, "--ckpt", str(tmp_path / "none.pt")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr == f"ghn: error: checkpoint file not found: {tmp_path / 'none.pt'}\n"
