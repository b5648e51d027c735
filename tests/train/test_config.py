"""The real configuration composes for every preset and group option, and what it composes is usable: GHN
configs are valid ``ghn.GHN`` arguments, experiment presets carry the paper's hyper-parameters, ``debug`` shrinks
the run; a composed and shrunk ``ghn-train`` runs end to end and writes ``eval.json``."""

import json
import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .conftest import CONF_DIR

TRAIN_OVERRIDES = [
    [],
    ["debug=default"],
    ["experiment=ghn2_cifar10"],
    ["experiment=ghn2_imagenet"],
    ["experiment=ghn2_cifar10", "debug=default"],
    ["ghn=ghn1"],
    ["ghn=mlp"],
    ["data=cifar10"],
    ["data=imagenet"],
    ["archspace=deepnets1m_built"],
]


def compose_cfg(name, overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("overrides", TRAIN_OVERRIDES, ids=lambda o: ",".join(o) or "default")
def test_train_config_composes_and_resolves(overrides):
    c = OmegaConf.to_container(compose_cfg("train", overrides), resolve=True)
    for section in ("ghn", "archspace", "data", "optim", "train", "eval"):
        assert section in c, section
    assert c["optim"]["name"] == "adam" and c["optim"]["weight_decay"] == 1e-5
    assert c["train"]["clip"] == 5.0
    assert c["eval"]["bn_mode"] == "batch" and c["eval"]["batch_size"] == 64


@pytest.mark.parametrize("overrides", [[], ["debug=default"], ["data=cifar10"]], ids=str)
def test_eval_config_composes(overrides):
    c = OmegaConf.to_container(compose_cfg("eval", overrides), resolve=True)
    assert c["eval"]["split"] == "test" and c["ckpt"] is None and "sgd_steps" in c["eval"]


def test_experiments_carry_the_paper_hyper_parameters():
    c = compose_cfg("train", ["experiment=ghn2_cifar10"])
    assert c.data.name == "cifar10" and c.data.batch_size == 64 and c.data.heldout == 5000 and c.optim.lr == 1e-3
    assert c.train.max_net_nodes == 0 and c.train.time_limit_min == 0 and c.archspace.num is None
    assert c.train.meta_batch_size == 8 and c.train.max_nodes == 2200
    assert list(c.optim.milestones) == pytest.approx([200 / 300, 250 / 300], abs=1e-3) and c.optim.gamma == 0.1
    assert list(c.archspace.width_range) == [32, 128] and list(c.ghn.max_shape) == [64, 64, 11, 11]
    assert c.archspace.width_policy == "ghn2"  # the paper's width draw
    assert c.ghn.hidden_dim == 32 and c.train.ema_decay == 0.0 and c.optim.schedule == "step"  # released GHN-2
    i = compose_cfg("train", ["experiment=ghn2_imagenet"])
    assert i.data.name == "imagenet" and i.data.batch_size == 256 and i.train.label_smoothing == 0.1
    assert list(i.ghn.max_shape) == [64, 64, 16, 16] and i.optim.lr == 1e-3 and i.ghn.hidden_dim == 32
    assert list(i.optim.milestones) == pytest.approx([200 / 300, 250 / 300], abs=1e-3) and i.train.ema_decay == 0.0
    assert i.optim.schedule == "step" and i.archspace.width_policy == "ghn2"
    assert c.archspace.min_width_share == 0.0 and i.archspace.min_width_share == 0.0  # the paper's draw alone


def test_default_is_the_offline_digits_run():
    c = compose_cfg("train", [])
    assert c.data.name == "digits" and c.data.batch_size == 64
    # A run of a fixed number of steps (reproducible); the time limit is only a safety stop beyond its expected
    # length (about 14 minutes on 2 idle cores).
    assert c.train.steps == 7000 and c.train.time_limit_min >= 30
    assert c.optim.schedule == "linear" and c.optim.lr == 2e-3 and c.train.meta_batch_size == 2
    assert list(c.archspace.width_range) == [8, 8]  # width 8 alone; wider nets are widened (README)
    assert c.eval.widen is True
    assert c.data.image_size == 16 and c.archspace.eval_width == 8
    assert c.train.channels_last is True


def test_default_eval_is_the_papers_table():
    c = OmegaConf.to_container(compose_cfg("train", []), resolve=True)
    from train.config import eval_rows

    rows = eval_rows(c["eval"], c["archspace"]["eval_width"])
    assert [(r.split, r.width) for r in rows] == [("test", 8), ("test", 16), ("test", 32), ("wide", 32), ("deep", 8),
                                                  ("dense", 8), ("bnfree", 8)]
    assert rows[0].num_nets >= 100 and all(r.num_nets >= 30 for r in rows)  # the test split at the base width: 100
    assert c["eval"]["sgd_steps"] == [100] and c["eval"]["sgd_num_nets"] >= 3


def test_eval_rows_of_torchvision_models():
    from train.config import ConfigError, eval_rows

    (row,) = eval_rows({"split": "torchvision", "models": "resnet18"}, None)  # eval.models=resnet18 on the command line
    assert row.models == ("resnet18",) and row.width is None
    assert eval_rows({"split": "torchvision", "models": ["resnet18", "mobilenet_v2"]}, 8)[0].models == (
        "resnet18", "mobilenet_v2")
    with pytest.raises(ConfigError, match="eval.width does not apply to the torchvision split"):
        eval_rows({"split": "torchvision", "width": 16, "models": ["resnet18"]}, None)
    with pytest.raises(ConfigError, match=r"eval.rows\[0\].width does not apply to the predefined split"):
        eval_rows({"rows": [{"split": "predefined", "width": 16}]}, None)


def test_debug_shrinks_everything():
    d = compose_cfg("train", ["experiment=ghn2_cifar10", "debug=default"])
    assert d.train.steps <= 10 and d.eval.max_nets <= 5 and d.train.meta_batch_size <= 2


@pytest.mark.parametrize("ghn_name", ["ghn2", "ghn1", "mlp"])
def test_ghn_configs_are_constructor_arguments(ghn_name):
    from train.cli import build_ghn

    c = OmegaConf.to_container(compose_cfg("train", [f"ghn={ghn_name}"]), resolve=True)
    ghn = build_ghn(c["ghn"], num_classes=10)
    assert ghn.hypernet == ("mlp" if ghn_name == "mlp" else "gatedgnn")
    assert ghn.ve == (ghn_name != "ghn1")


def test_shrunk_ghn_train_runs_end_to_end(tmp_path):
    from train.cli import train

    run = tmp_path / "run"
    cfg = compose_cfg("train", ["debug=default", f"+run_dir={run}", "train.steps=2", "train.ckpt_every=1",
                                "eval.rows=[{split:test,num_nets:2}]", "eval.image_limit=64", "eval.sgd_steps=[1]",
                                "train.progress=false", "device=cpu", "archspace.num=200",
                                "train.max_net_nodes=60", "archspace.width_range=[4,4]", "archspace.eval_width=4",
                                "archspace.min_width_share=0.25"])  # every net at 4 either way
    summary = train(cfg)
    assert summary["step"] == 2
    for name in ("ghn.safetensors", "metrics.csv", "config.yaml", "eval.json"):
        assert os.path.isfile(run / name), name
    ev = json.loads((run / "eval.json").read_text())
    row, = ev["rows"]
    for key in ("split", "width", "num_nets", "top1_mean", "top1_stderr", "top1_default_init_mean", "top1_sgd",
                "top1_fraction_of_sgd"):
        assert key in row, key
    assert row["split"] == "test" and row["width"] == 4 and row["num_nets"] == 2 and ev["bn_mode"] == "batch"
    assert 0 <= row["top1_mean"] <= 100 and "1" in row["top1_sgd"]
    # The saved config is the resolved one and loads without Hydra.
    assert OmegaConf.load(run / "config.yaml").train.steps == 2
    # ghn.safetensors records the training width, and ghn-eval defaults to it.
    from ghn.checkpoint import read_metadata
    from train.cli import evaluate

    meta = read_metadata(str(run / "ghn.safetensors"))
    assert json.loads(meta["train_width_range"]) == [4, 4] and meta["train_width_policy"] == "uniform"
    assert meta["train_min_width_share"] == "0.25"
    # so do the checkpoints, which ghn-eval also accepts (the only GHN of a run that was killed)
    ckpt = max(d for d in os.listdir(run / "checkpoints") if d.startswith("step_"))
    meta = read_metadata(str(run / "checkpoints" / ckpt / "ghn.safetensors"))
    assert json.loads(meta["train_width_range"]) == [4, 4] and meta["train_steps"] == str(int(ckpt[5:]))
    overrides = ["debug=default", f"+run_dir={tmp_path / 'ev'}", f"ckpt={run / 'ghn.safetensors'}",
                 "archspace.eval_width=null", "eval.num_nets=1", "eval.image_limit=64", "eval.sgd_steps=[]",
                 "eval.progress=false", "device=cpu"]
    ev = evaluate(compose_cfg("eval", overrides))
    assert ev["rows"][0]["width"] == 4 and json.loads((tmp_path / "ev" / "eval.json").read_text())["base_width"] == 4


def test_shrunk_ghn_eval_runs_end_to_end(tmp_path):
    from train.cli import evaluate

    from .conftest import make_ghn

    make_ghn(0).save(str(tmp_path / "ghn.safetensors"))
    cfg = compose_cfg("eval", ["debug=default", f"+run_dir={tmp_path / 'ev'}", f"ckpt={tmp_path / 'ghn.safetensors'}",
                               "eval.num_nets=2", "eval.image_limit=64", "eval.sgd_steps=[1]", "eval.progress=false",
                               "eval.width=4", "device=cpu", "eval.split=val"])
    ev = evaluate(cfg)
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["rows"][0]["split"] == "val" and saved["rows"][0]["num_nets"] == 2 == ev["rows"][0]["num_nets"]
    assert saved["rows"][0]["top1_mean"] == pytest.approx(ev["rows"][0]["top1_mean"])
    from ghn.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        evaluate(compose_cfg("eval", [f"+run_dir={tmp_path / 'ev2'}", f"ckpt={tmp_path / 'missing.safetensors'}"]))
