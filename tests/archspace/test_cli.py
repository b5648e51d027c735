"""The ``archspace`` command line."""

import json
import subprocess
import sys
import types

import pytest

from archspace.cli import main


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
    assert "parameters bound to nodes" in text and str(png) in text
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("spec", ["torchvision:resnet1", "resnet18", "deepnets:test"])
def test_unknown_model_exits_2_with_spelling_help(spec, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["graph", spec])
    assert exc.value.code == 2
    assert "torchvision:NAME" in capsys.readouterr().err or spec == "deepnets:test"


def test_console_script_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "archspace.cli", "graph", "torchvision:not_a_net"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown torchvision model" in proc.stderr


def test_build_wires_flags(monkeypatch, tmp_path, capsys):
    calls = []

    def build_split(split, out_dir, num=None, workers=1, shard=None):
        calls.append((split, out_dir, num, workers, shard))
        return {"nets": num}

    monkeypatch.setitem(sys.modules, "archspace.dataset", types.SimpleNamespace(build_split=build_split))
    out = str(tmp_path / "val")
    assert main(["build", "--split", "val", "--num", "3", "--out", out, "--workers", "2", "--shard", "1/4"]) == 0
    assert calls == [("val", out, 3, 2, (1, 4))]
    assert "nets: 3" in capsys.readouterr().out


@pytest.mark.parametrize("shard", ["4/4", "a/b", "1"])
def test_build_rejects_bad_shard(shard, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--split", "val", "--out", str(tmp_path), "--shard", shard])
    assert exc.value.code == 2
