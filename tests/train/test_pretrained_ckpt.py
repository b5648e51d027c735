"""``ghn rank``, ``ghn finetune`` and ``ghn-eval`` take a released GHN's name or a run directory as ``--ckpt`` /
``ckpt=`` (:meth:`ghn.GHN.from_pretrained`), served here by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from ghn import pretrained
from tests.ghn.loopback import closed_port_url, loopback_release, register
from train.cli import eval_main

from .conftest import make_ghn
from .helpers import SMALL, assert_usage_error, run_ghn
from .test_cli import SHRUNK_EVAL, assert_one_line_error, call

pytestmark = pytest.mark.usefixtures("one_thread")

NAME, FILE = "test-ghn", "test_ghn.safetensors"
#: The shrunk evaluation without its width, so that the width comes from the checkpoint's metadata.
EVAL = [*(a for a in SHRUNK_EVAL if not a.startswith("eval.width=")), "eval.width=null"]


def saved_ghn(path) -> bytes:
    """A tiny GHN as ``ghn-train`` leaves it (trained on width 4, said in its metadata); returns its bytes."""
    make_ghn(0).save(str(path), extra={"train_width_range": [4, 4]})
    return path.read_bytes()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A registered release on a machine without network; returns its cache path."""
    register(monkeypatch, NAME, FILE, b"not downloaded")
    monkeypatch.setenv(pretrained.URL_ENV, closed_port_url())
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / FILE


@pytest.mark.parametrize("command", ["rank", "finetune"])
def test_rank_and_finetune_offline_say_where_to_put_the_file(command, offline, capsys):
    status, _, err = run_ghn([command, "deepnets:test/0", "--ckpt", NAME, *SMALL], capsys)
    assert_usage_error(status, err, f"put it at {offline}")


def test_rank_with_a_released_name(tmp_path, monkeypatch, capsys):
    data = saved_ghn(tmp_path / "src.safetensors")
    with loopback_release(monkeypatch, tmp_path / "cache") as server:
        server.serve(FILE, data)
        register(monkeypatch, NAME, FILE, data)
        status, printed, err = run_ghn(["rank", "deepnets:test/0,1", "--ckpt", NAME, *SMALL, "--eval-images",
                                        "64", "--out", str(tmp_path / "r.csv")], capsys)
    assert status == 0, err
    assert "scored 2/2 candidates" in printed and len(server.requests) == 1


def test_eval_offline_says_where_to_put_the_file(offline, tmp_path, monkeypatch, capsys):
    status, _, err = call(eval_main, [*EVAL, f"ckpt={NAME}", f"hydra.run.dir={tmp_path / 'ev'}"], monkeypatch,
                          capsys)
    assert_one_line_error(status, err, "ghn-eval", f"put it at {offline}")


def test_eval_with_a_released_name_reads_its_metadata(tmp_path, monkeypatch, capsys):
    data = saved_ghn(tmp_path / "src.safetensors")
    with loopback_release(monkeypatch, tmp_path / "cache") as server:
        server.serve(FILE, data)
        register(monkeypatch, NAME, FILE, data)
        status, out, err = call(eval_main, [*EVAL, f"ckpt={NAME}", f"hydra.run.dir={tmp_path / 'ev'}"],
                                monkeypatch, capsys)
    assert status == 0, err
    assert "evaluated at the base width 4, the width this GHN was trained on" in out  # the cached file's metadata
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["rows"][0]["num_nets"] == 1


def test_eval_with_a_run_directory(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    saved_ghn(run / "ghn.safetensors")
    status, out, err = call(eval_main, [*EVAL, f"ckpt={run}", f"hydra.run.dir={tmp_path / 'ev'}"], monkeypatch,
                            capsys)
    assert status == 0, err
    assert "evaluated at the base width 4, the width this GHN was trained on" in out
