"""Every zoo model gets all of its parameters predicted through ``ghn predict`` (slow: opt in with ``-m slow``)."""

from __future__ import annotations

import json

import pytest
import torch

from ghn.cli import main

from .conftest import REFERENCE_CKPT, needs_reference

ZOO = ["resnet18", "resnet50", "resnet152", "wide_resnet50_2", "resnext50_32x4d", "vgg11_bn", "densenet121",
       "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x1_0",
       "squeezenet1_0", "convnext_tiny", "vit_b_16", "swin_t"]


@pytest.mark.slow
@needs_reference
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_fully_predicted(name, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / f"{name}.safetensors"
    rc = main(["predict", f"torchvision:{name}", "--ckpt", REFERENCE_CKPT, "--num-classes", "10", "--small-input",
               "--out", str(out), "--report", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["untouched"] == [], report["untouched"]
    assert report["num_params_predicted"] == report["num_params_total"]
    state = load_file(str(out))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
