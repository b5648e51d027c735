"""The ``archspace`` command line: its outputs, and one line on stderr with exit status 2 for every bad input."""

import json
import os
import subprocess
import sys

import pytest

from archspace.cli import main


def error_line(capsys, argv: list[str]) -> str:
    """Run ``archspace ARGV``; check it exits with 2 and prints exactly one ``archspace: error:`` line on stderr
    (no usage block, no traceback); return that line."""
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured
    assert len(lines) == 1 and lines[0].startswith("archspace: error: "), captured.err
    assert captured.out == ""
    return lines[0]


def test_graph_json_resnet18_small_input(capsys):
    assert main(["graph", "torchvision:resnet18", "--small-input", "--json", "--num-classes", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["num_nodes"], out["num_real_edges"], out["num_virtual_edges"]) == (52, 59, 1243)
    assert out["op_counts"] == {"conv": 21, "sum": 8, "input": 1, "bias": 1, "bn": 20, "glob_avg": 1}
    assert out["unbound_params"] == [] and out["input_size"] == [1, 3, 32, 32]


def test_graph_text_and_plot(tmp_path, capsys):
    png = tmp_path / "r18.png"
    assert main(["graph", "torchvision:resnet18", "--input-size", "32", "--ve-cutoff", "1", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "53 nodes, 60 real edges, 0 virtual edges" in text  # with the stem max-pool
    assert "parameters bound to nodes" in text and f"plot written to {png}" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert os.listdir(tmp_path) == ["r18.png"]  # no temporary file left behind


@pytest.mark.parametrize("spec, expected", [
    ("torchvision:resnt18", "unknown torchvision model 'resnt18'; did you mean resnet18"),
    ("resnet18", "did you mean torchvision:resnet18"),
    ("torchvison:resnet18", "did you mean torchvision?"),
    ("deepnets:tset/0", "unknown DeepNets-1M split 'tset'; did you mean test?"),
    ("deepnets:test", "expected deepnets:SPLIT/INDEX"),
    ("deepnets:test/500", "index 500 is out of range; split 'test' has nets 0-499"),
])
def test_unknown_model_gives_one_line_with_a_suggestion(spec, expected, capsys):
    assert expected in error_line(capsys, ["graph", spec])


@pytest.mark.parametrize("argv, expected", [
    (["graph", "torchvision:resnet18", "--input-size", "0"], "argument --input-size: must be >= 1, got 0"),
    (["graph", "torchvision:resnet18", "--input-size", "-32"], "argument --input-size: must be >= 1, got -32"),
    (["graph", "torchvision:resnet18", "--input-size", "big"], "expected a positive integer, got 'big'"),
    (["graph", "torchvision:resnet18", "--ve-cutoff", "0"], "argument --ve-cutoff: must be >= 1"),
    (["graph", "torchvision:resnet18", "--num-classes", "-3"], "argument --num-classes: must be >= 1"),
    (["build", "--split", "val", "--out", "OUT", "--num", "0"], "argument --num: must be >= 1"),
    (["build", "--split", "val", "--out", "OUT", "--workers", "0"], "argument --workers: must be >= 1"),
    (["build", "--split", "val", "--out", "OUT", "--shard", "4/4"], "--shard must be K/N with 0 <= K < N"),
    (["build", "--split", "val", "--out", "OUT", "--shard", "a/b"], "--shard must be K/N"),
    (["build", "--split", "vall", "--out", "OUT"], "'vall'"),
    (["build", "--split", "val", "--out", "OUT", "--num", "501"], "501"),
    (["build", "--out", "OUT"], "the following arguments are required: --split"),
    (["grpah", "torchvision:resnet18"], "invalid choice: 'grpah'"),
])
def test_bad_values_give_one_line(argv, expected, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert expected in error_line(capsys, argv)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_plot_that_cannot_be_written_is_refused_before_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = {
        str(tmp_path): "is a directory",
        str(blocker / "g.png"): "cannot write in",
        str(tmp_path / "g.unknown"): "cannot tell the image format from '.unknown'",
    }
    for plot, expected in cases.items():
        line = error_line(capsys, ["graph", "torchvision:resnet18", "--small-input", "--plot", plot])
        assert f"--plot {plot}" in line and expected in line


def test_build_out_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is a file; give a folder" in error_line(capsys, ["build", "--split", "val", "--out", str(blocker)])
    line = error_line(capsys, ["build", "--split", "val", "--out", str(blocker / "sub")])
    assert f"--out {blocker / 'sub'}: cannot write in {blocker}" in line


def test_forward_failing_at_the_input_size_names_it_and_suggests_another(capsys):
    # SqueezeNet's three stride-2 max-pools cannot run on a 16x16 input.
    line = error_line(capsys, ["graph", "torchvision:squeezenet1_1", "--input-size", "16"])
    assert "fails on a 16x16 input (--input-size 16)" in line and "Output size is too small" in line
    assert "try --input-size 224" in line


def test_small_input_without_a_recipe(capsys):
    line = error_line(capsys, ["graph", "torchvision:squeezenet1_1", "--small-input"])
    assert "no small-input recipe for SqueezeNet" in line


def test_build_writes_a_split_and_resumes(tmp_path, capsys):
    out = tmp_path / "val"
    assert main(["build", "--split", "val", "--num", "3", "--out", str(out), "--shard", "0/2"]) == 0
    first = capsys.readouterr().out
    assert "built split 'val' shard 0/2" in first and "written: 1" in first and "num_nets: 3" in first
    assert sorted(os.listdir(out)) == ["manifest.json", "val-00000.shard"]
    assert main(["build", "--split", "val", "--num", "3", "--out", str(out)]) == 0
    second = capsys.readouterr().out
    assert "written: 0" in second and "kept: 1" in second


def test_console_script_prints_one_line_and_debug_shows_the_traceback():
    argv = [sys.executable, "-m", "archspace.cli", "graph", "torchvision:not_a_net"]
    env = {k: v for k, v in os.environ.items() if k not in ("GHN_DEBUG", "HYDRA_FULL_ERROR")}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["archspace: error: unknown torchvision model 'not_a_net'; list the names "
                                        "with: python -c 'import torchvision; print(torchvision.models.list_models())'"]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**env, "GHN_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ModelSpecError" in proc.stderr
