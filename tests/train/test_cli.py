"""``ghn-train`` and ``ghn-eval`` through their real entry functions (``train.cli.train_main`` / ``eval_main`` with
``sys.argv`` as a user would type it): every bad input is one line ``PROG: error: ...`` on stderr with exit status
2 and no traceback; real bugs keep their traceback; ``GHN_DEBUG=1`` / ``HYDRA_FULL_ERROR=1`` show it for user
errors too. Each case stops before any training, so the file runs in seconds beside one shrunk training run."""

from __future__ import annotations

import json
import os
import pickle
import sys

import pytest
import torch
from omegaconf import OmegaConf

import train.cli
from train.cli import eval_main, train_main
from train.config import ConfigError, config_difference, find_conf_dir

from .conftest import CONF_DIR, make_ghn
from .test_data import write_tiny_cifar10

#: A shrunk ghn-train run (seconds): tiny nets, a tiny GHN, two steps, one evaluation net in each row of the table.
SHRUNK = ["debug=default", "device=cpu", "train.steps=2", "train.ckpt_every=1", "train.progress=false",
          "archspace.num=200", "train.max_net_nodes=60", "archspace.width_range=[4,4]", "archspace.eval_width=4",
          "eval.max_nets=1", "eval.image_limit=64", "eval.sgd_steps=[]"]

#: A shrunk ghn-eval run.
SHRUNK_EVAL = ["debug=default", "device=cpu", "eval.num_nets=1", "eval.image_limit=64", "eval.sgd_steps=[]",
               "eval.progress=false", "eval.width=4"]


def call(main, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run a console-script function on ``args``; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["prog", *args])
    status = main()
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, prog: str, phrase: str) -> str:
    """Exit status 2, exactly one non-empty stderr line ``PROG: error: ...`` containing ``phrase``, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    """No debug switches or configuration override from the caller's shell."""
    for name in ("GHN_DEBUG", "HYDRA_FULL_ERROR", "GHN_CONF_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished shrunk ghn-train run: its folder (config.yaml, checkpoints, ghn.safetensors)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("GHN_DEBUG", "HYDRA_FULL_ERROR", "GHN_CONF_DIR"):
            mp.delenv(name, raising=False)
        mp.setattr(sys, "argv", ["ghn-train", *SHRUNK, f"hydra.run.dir={run}"])
        assert train_main() == 0
    return run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny real GHN checkpoint for 10 classes."""
    path = tmp_path_factory.mktemp("ckpt") / "ghn.safetensors"
    make_ghn(0).save(str(path))
    return path


# ------------------------------------------------------------------------------------------------ ghn-train


def test_shrunk_run_succeeds_and_writes_its_results(trained):
    for name in ("ghn.safetensors", "config.yaml", "eval.json", "metrics.csv"):
        assert (trained / name).is_file(), name
    assert OmegaConf.load(trained / "config.yaml").train.steps == 2
    ev = json.loads((trained / "eval.json").read_text())
    # The paper's Table 2 rows at base width 4 (archspace.eval_width), the wide split at 4x it.
    assert [(r["split"], r["width"], r["num_nets"]) for r in ev["rows"]] == [
        ("test", 4, 1), ("test", 16, 1), ("test", 32, 1), ("wide", 16, 1), ("deep", 4, 1), ("dense", 4, 1),
        ("bnfree", 4, 1)]
    assert ev["trained_width_range"] == [4, 4] and ev["base_width"] == 4 and ev["training"]["steps"] == 2
    assert [r["in_trained_widths"] for r in ev["rows"]] == [True] + [False] * 3 + [True] * 3
    # the wider rows: predicted at the training width 4 and widened, so the test nets keep their width-4 top-1
    assert [r["predicted_at_width"] for r in ev["rows"]] == [None, 4, 4, 4, None, None, None]
    assert ev["rows"][1]["top1_mean"] == ev["rows"][2]["top1_mean"] == pytest.approx(ev["rows"][0]["top1_mean"])


@pytest.mark.parametrize("override, phrase", [
    ("train.steps=0", "train.steps must be a positive integer, got 0"),
    ("train.steps=-5", "train.steps must be a positive integer, got -5"),
    ("archspace.width_range=[0,8]", "archspace.width_range must be [low, high] with 2 <= low <= high"),
    ("archspace.width_range=[16,8]", "archspace.width_range must be [low, high]"),
    ("eval.rows=[{split:test,width:0}]", "eval.rows[0].width must be a positive integer or null, got 0"),
    ("archspace.eval_width=-2", "archspace.eval_width must be a positive integer or null, got -2"),
    ("archspace.eval_width=1", "archspace.eval_width must be at least 2, got 1"),
    ("data.batch_size=0", "data.batch_size must be a positive integer"),
    ("data.batch_size=5000", "batch_size must be in [1, 1437]"),
    ("eval.batch_size=-1", "eval.batch_size must be a positive integer"),
    ("eval.max_nets=0", "eval.max_nets must be a positive integer or null"),
    ("eval.rows=[{split:test,num_nets:0}]", "eval.rows[0].num_nets must be a positive integer or null, got 0"),
    ("eval.rows=[{split:test,nets:3}]", "eval.rows[0].nets is not a row key; a row has split, width, num_nets, start"),
    ("eval.rows=[]", "eval.rows must be a non-empty list of rows"),
    ("eval.rows=[test]", "eval.rows[0] must be a mapping with a split"),
    ("train.meta_batch_size=0", "train.meta_batch_size must be a positive integer"),
    ("train.max_nodes=-1", "train.max_nodes must be an integer >= 0"),
    ("ghn.hidden_dim=0", "ghn.hidden_dim must be a positive integer"),
    ("ghn.max_shape=[64,64,11]", "ghn.max_shape must be 4 positive integers"),
    ("ghn.hidden_dim=6", "ghn.hidden_dim must be divisible by 4"),  # the constructor's rule, before data loads
    ("threads=0", "threads must be a positive integer, 'auto' or null, got 0"),
    ("threads=-3", "threads must be a positive integer, 'auto' or null, got -3"),
    ("threads=many", "threads must be a positive integer, 'auto' or null, got 'many'"),
    ("eval.bn_mode=keep", "eval.bn_mode must be one of batch, running, got 'keep'"),
    ("eval.sgd_steps=[0]", "eval.sgd_steps must be a list of positive integers"),
    ("train.clip=null", "train.clip must be a non-negative number, got None"),
    ("train.label_smoothing=1.5", "train.label_smoothing must be a non-negative number below 1"),
    ("train.ema_decay=1", "train.ema_decay must be a non-negative number below 1 or null"),
    ("optim.weight_decay=-1", "optim.weight_decay must be a non-negative number"),
    ("data.image_size=abc", "data.image_size must be a positive integer or null, got 'abc'"),
    ("data.image_size=0", "data.image_size must be a positive integer or null, got 0"),  # ran at 32 before
    ("optim.warmup=abc", "optim.warmup must be a non-negative number below 1 or null"),
    ("optim.gamma=abc", "optim.gamma must be a positive number, got 'abc'"),
    ("optim.milestones=abc", "optim.milestones must be a list of fractions of the run in (0, 1)"),
    ("archspace.min_width_share=abc", "archspace.min_width_share must be a number between 0 and 1, got 'abc'"),
    ("archspace.bnfree_fraction=2", "archspace.bnfree_fraction must be a number between 0 and 1, got 2"),
    ("train.amp=maybe", "train.amp must be true or false, got 'maybe'"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("train.channels_last=abc", "train.channels_last must be true or false, got 'abc'"),
    # The eval section is checked before training, not after the whole run.
    ("eval.rows=[{split:test},{split:tset}]", "unknown architecture split eval.rows[1].split='tset'; did you mean "
     "test?"),
    ("eval.rows=[{split:test,num_nets:2,start:499}]", "split 'test' has nets 0-499; asked for 2 nets from index 499 "
     "(eval.rows[0].num_nets, eval.rows[0].start)"),
    ("eval.rows=[{split:wide,width:1}]", "eval.rows[0].width must be at least 2, got 1"),
    ("eval.image_split=dev", "eval.image_split must be train, heldout (val) or test"),
    ("device=tpu9", "device=tpu9 is not a torch device"),
    ("eval.max_nets=${nowhere}", "the configuration does not resolve"),
    ("data=mnist", "Could not find 'data/mnist'"),
    ("colour=blue", "Could not override 'colour'"),
])
def test_bad_values_are_one_line(override, phrase, tmp_path, monkeypatch, capsys):
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path / 'run'}", override],
                          monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", phrase)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything was written


def test_cuda_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path}", "device=cuda"],
                          monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", "device=cuda but torch sees no CUDA device; use device=cpu")


@pytest.mark.parametrize("data, phrase", [
    ("cifar10", "cifar-10-batches-py does not exist"),
    ("imagenet", "train does not exist"),
])
def test_missing_dataset_root(data, phrase, tmp_path, monkeypatch, capsys):
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path / 'run'}", f"data={data}",
                                       f"data.root={tmp_path / 'nowhere'}"], monkeypatch, capsys)
    line = assert_one_line_error(status, err, "ghn-train", phrase)
    assert "data.root=" in line


def test_corrupt_cifar10(tmp_path, monkeypatch, capsys):
    write_tiny_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])  # truncated
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path / 'run'}", "data=cifar10",
                                       f"data.root={tmp_path}"], monkeypatch, capsys)
    line = assert_one_line_error(status, err, "ghn-train", "is corrupt")
    assert str(tmp_path / "cifar-10-batches-py") in line and "data.root=" in line


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={blocker}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", f"cannot create the run directory {blocker} (File exists): set "
                                                    "hydra.run.dir to a writable folder")


def test_corrupt_imagenet(tmp_path, monkeypatch, capsys):
    for sub in ("train", "val"):
        (tmp_path / sub).mkdir()  # no class folders
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path / 'run'}", "data=imagenet",
                                       f"data.root={tmp_path}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", "is corrupt")


def test_missing_archspace_root(tmp_path, monkeypatch, capsys):
    status, _, err = call(train_main, ["debug=default", f"hydra.run.dir={tmp_path / 'run'}",
                                       f"archspace.root={tmp_path / 'nets'}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", f"archspace.root {tmp_path / 'nets'} does not exist")


@pytest.mark.parametrize("change, key", [("seed=1", "seed"), ("train.steps=3", "train.steps"),
                                         ("ghn.hidden_dim=32", "ghn.hidden_dim"), ("data=cifar10", "data.name")])
def test_resume_with_another_configuration_names_the_key(change, key, trained, monkeypatch, capsys):
    saved = (trained / "config.yaml").read_text()
    status, _, err = call(train_main, [*SHRUNK, f"hydra.run.dir={trained}", "resume=true", change],
                          monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", f"resume=true but {key} differs from the run's config.yaml")
    assert (trained / "config.yaml").read_text() == saved  # compared before anything was overwritten


def test_resume_with_the_same_configuration_continues(trained, monkeypatch, capsys):
    # eval.* and the progress bar may change on resume; the finished run only evaluates again.
    status, out, err = call(train_main, [*SHRUNK, f"hydra.run.dir={trained}", "resume=true", "eval.image_limit=32"],
                            monkeypatch, capsys)
    assert status == 0, err
    assert "trained 2 steps" in out


def test_a_run_folder_with_checkpoints_needs_resume(trained, monkeypatch, capsys):
    status, _, err = call(train_main, [*SHRUNK, f"hydra.run.dir={trained}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-train", "already has checkpoints; pass resume=true")


def test_config_difference_ignores_what_may_change_on_resume():
    saved = {"seed": 0, "threads": 1, "train": {"steps": 5, "progress": True, "time_limit_min": 15},
             "eval": {"num_nets": 100}}
    assert config_difference(saved, {**saved, "threads": 2, "device": "cpu",
                                     "train": {"steps": 5, "progress": False, "time_limit_min": 30},
                                     "eval": {"num_nets": 3, "split": "wide"}}) is None
    assert config_difference(saved, {**saved, "train": {**saved["train"], "steps": 6}}) == ("train.steps", 5, 6)
    assert config_difference(saved, {**saved, "extra": 1}) == ("extra", "<absent>", 1)


def test_bugs_keep_their_traceback(tmp_path, monkeypatch):
    def broken(cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(train.cli, "train", broken)
    monkeypatch.setattr(sys, "argv", ["ghn-train", "debug=default", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="a bug"):
        train_main()


@pytest.mark.parametrize("switch", ["GHN_DEBUG", "HYDRA_FULL_ERROR"])
def test_debug_switches_show_the_traceback_of_user_errors(switch, tmp_path, monkeypatch):
    monkeypatch.setenv(switch, "1")
    monkeypatch.setattr(sys, "argv", ["ghn-train", "debug=default", f"hydra.run.dir={tmp_path}", "train.steps=0"])
    with pytest.raises(ConfigError, match="train.steps"):
        train_main()
    assert os.environ[switch] == "1"


def test_hydra_full_error_is_not_left_set(tmp_path, monkeypatch, capsys):
    call(train_main, ["debug=default", f"hydra.run.dir={tmp_path}", "train.steps=0"], monkeypatch, capsys)
    assert "HYDRA_FULL_ERROR" not in os.environ


# ------------------------------------------------------------------------------------------------ ghn-eval


def test_shrunk_eval_succeeds(ckpt, tmp_path, monkeypatch, capsys):
    status, out, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}"],
                            monkeypatch, capsys)
    assert status == 0, err
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert [(r["split"], r["width"], r["num_nets"]) for r in ev["rows"]] == [("test", 4, 1)] and "wrote" in out
    assert ev["trained_width_range"] is None and "WARNING" not in out  # a checkpoint that does not say


@pytest.fixture(scope="module")
def ranged_ckpt(tmp_path_factory):
    """A tiny GHN whose metadata says it was trained on widths 4-8, as ghn-train records a width range."""
    path = tmp_path_factory.mktemp("ranged") / "ghn.safetensors"
    make_ghn(0).save(str(path), extra={"train_width_range": [4, 8]})
    return path


def test_trained_width_is_the_low_end_of_the_range(ranged_ckpt, ckpt, tmp_path):
    from ghn import GHN
    from train.cli import trained_width

    ranged, plain = GHN.load(str(ranged_ckpt)), GHN.load(str(ckpt))
    assert trained_width(ranged) == 4 and list(ranged.train_width_range) == [4, 8]
    assert trained_width(plain) is None and plain.train_width_range is None  # not recorded
    odd = tmp_path / "odd.safetensors"
    make_ghn(0).save(str(odd), extra={"train_width_range": "wide"})  # written by another tool: ignored
    assert trained_width(GHN.load(str(odd))) is None


def test_eval_of_the_wide_split_is_at_4x_the_base_width(ranged_ckpt, tmp_path, monkeypatch, capsys):
    args = [a for a in SHRUNK_EVAL if not a.startswith("eval.width=")]
    status, out, err = call(eval_main, [*args, f"ckpt={ranged_ckpt}", f"hydra.run.dir={tmp_path}", "eval.split=wide"],
                            monkeypatch, capsys)
    assert status == 0, err
    row, = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert (row["split"], row["width"], row["in_trained_widths"]) == ("wide", 16, False)  # 4 x 4, not 4
    assert row["predicted_at_width"] == 8  # beyond the training widths: predicted at the widest and widened
    assert "base width 4, the low end of its training widths 4-8" in out
    assert ("eval row wide@16 lies beyond the widths 4-8 this GHN was trained on: its nets are predicted at width 8 "
            "and widened function-preservingly") in out and "WARNING" not in out
    assert any(line.split()[:2] == ["wide", "16+"] for line in out.splitlines())  # the table marks the row
    status, out, err = call(eval_main, [*args, f"ckpt={ranged_ckpt}", f"hydra.run.dir={tmp_path}", "eval.split=wide",
                                        "eval.widen=false"], monkeypatch, capsys)
    assert status == 0, err
    row, = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert row["predicted_at_width"] is None
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert warnings == ["WARNING: eval row wide@16 lies outside the widths 4-8 this GHN was trained on; it is "
                        "evaluated all the same (its figures measure extrapolation)"]
    assert any(line.split()[:2] == ["wide", "16*"] for line in out.splitlines())  # the table marks the row


def test_eval_inside_the_trained_widths_warns_nothing(ranged_ckpt, tmp_path, monkeypatch, capsys):
    status, out, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ranged_ckpt}", f"hydra.run.dir={tmp_path}",
                                        "eval.width=8", "eval.split=deep"], monkeypatch, capsys)
    assert status == 0, err
    row, = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert (row["split"], row["width"], row["in_trained_widths"]) == ("deep", 8, True) and "WARNING" not in out


def test_eval_rows_give_several_rows(ranged_ckpt, tmp_path, monkeypatch, capsys):
    status, out, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ranged_ckpt}", f"hydra.run.dir={tmp_path}",
                                        "eval.rows=[{split:test,num_nets:2},{split:bnfree,width:8}]",
                                        "eval.max_nets=1"], monkeypatch, capsys)
    assert status == 0, err
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert [(r["split"], r["width"], r["num_nets"]) for r in rows] == [("test", 4, 1), ("bnfree", 8, 1)]


def write_with_config(src, dst, **changes) -> None:
    """Copy a safetensors checkpoint with its stored config changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps({**json.loads(meta["config"]), **changes})
    save_file(tensors, str(dst), metadata=meta)


def bad_checkpoint(kind: str, ckpt, tmp_path):
    """A path to a checkpoint that is wrong in the way ``kind`` says."""
    if kind == "directory":
        return tmp_path
    if kind == "missing":
        return tmp_path / "missing.safetensors"
    path = tmp_path / "bad.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(ckpt.read_bytes()[:300])
    elif kind == "foreign safetensors":
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(3)}, str(path))
    elif kind == "foreign pickle":
        path = tmp_path / "bad.pt"
        torch.save({"model": torch.zeros(3)}, path)
    elif kind == "invalid config":
        write_with_config(ckpt, path, max_shape=[64, 64, 11])
    return path


@pytest.mark.parametrize("kind, phrase", [
    ("directory", "checkpoint is a directory"),
    ("missing", "checkpoint file not found"),
    ("empty", "empty checkpoint file"),
    ("truncated", "truncated or corrupt checkpoint"),
    ("foreign safetensors", "not a GHN checkpoint"),
    ("foreign pickle", "not a GHN checkpoint"),
    ("invalid config", "max_shape"),
])
def test_bad_checkpoints_are_one_line(kind, phrase, ckpt, tmp_path, monkeypatch, capsys):
    path = bad_checkpoint(kind, ckpt, tmp_path)
    status, _, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={path}", f"hydra.run.dir={tmp_path / 'ev'}"],
                          monkeypatch, capsys)
    line = assert_one_line_error(status, err, "ghn-eval", phrase)
    assert str(path) in line
    assert not (tmp_path / "ev" / "eval.json").exists()


def test_unreadable_checkpoint(ckpt, tmp_path, monkeypatch, capsys):
    import ghn.checkpoint

    def refuse(*args, **kwargs):  # tests run as root, who reads any file: make the read fail as for a user
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ghn.checkpoint, "open", refuse, raising=False)
    status, _, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-eval", "cannot read checkpoint")


def test_missing_dataset_for_eval(ckpt, tmp_path, monkeypatch, capsys):
    status, _, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}", "data=cifar10",
                                      f"data.root={tmp_path / 'nowhere'}"], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-eval", "cifar-10-batches-py does not exist")


@pytest.fixture(scope="module")
def ckpt_5_classes(tmp_path_factory):
    from ghn import GHN

    path = tmp_path_factory.mktemp("ckpt5") / "ghn5.safetensors"
    GHN(max_shape=(16, 16, 7, 7), num_classes=5, hidden_dim=8).save(str(path))
    return path


def test_class_mismatch_is_refused_before_any_work(ckpt_5_classes, tmp_path, monkeypatch, capsys):
    status, out, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ckpt_5_classes}", f"hydra.run.dir={tmp_path}"],
                            monkeypatch, capsys)
    line = assert_one_line_error(status, err, "ghn-eval", "was trained for 5 classes but the data has 10")
    assert "eval.keep_classifier_init=true" in line
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "config.yaml").exists()


def test_class_mismatch_with_keep_classifier_init_says_so(ckpt_5_classes, tmp_path, monkeypatch, capsys):
    status, out, err = call(eval_main, [*SHRUNK_EVAL, f"ckpt={ckpt_5_classes}", f"hydra.run.dir={tmp_path}",
                                        "eval.keep_classifier_init=true"], monkeypatch, capsys)
    assert status == 0, err
    assert "classifier (last layer) keeps its default initialisation" in out
    assert "5 classes, the data has 10" in out
    assert json.loads((tmp_path / "eval.json").read_text())["classifier"] != "predicted"
    assert "keep_classifier_init" in out.split("wrote")[0]  # the table says so too


# ------------------------------------------------------------------------------------------------ the config folder


def test_the_checkout_conf_is_found_and_GHN_CONF_DIR_overrides_it(tmp_path, monkeypatch):
    assert find_conf_dir("train") == CONF_DIR and find_conf_dir("eval") == CONF_DIR
    (tmp_path / "train.yaml").write_text("seed: 0\n")
    monkeypatch.setenv("GHN_CONF_DIR", str(tmp_path))
    assert find_conf_dir("train") == str(tmp_path)
    with pytest.raises(ConfigError, match=f"GHN_CONF_DIR={tmp_path} has no eval.yaml"):
        find_conf_dir("eval")


def test_bad_GHN_CONF_DIR_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GHN_CONF_DIR", str(tmp_path))
    status, _, err = call(eval_main, [], monkeypatch, capsys)
    assert_one_line_error(status, err, "ghn-eval", "GHN_CONF_DIR")


def test_corrupt_cifar10_meta_is_named(tmp_path):
    from train.data import DataError, load_cifar10

    write_tiny_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({"wrong": 1}, f)
    with pytest.raises(DataError, match="is corrupt"):
        load_cifar10(str(tmp_path))
