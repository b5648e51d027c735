"""Shared, shrunk pieces for the training tests: the real digits task, the real architecture space and the real
GHN, made small enough that a step takes a fraction of a second on one CPU core."""

from __future__ import annotations

import os

import pytest
import torch

from train.data import ImageData, TensorImages, load_digits

CONF_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "conf"))

#: Settings of a tiny run: narrow, small nets, a tiny GHN.
TINY = dict(width=4, max_net_nodes=40, hidden_dim=8, batch_size=16)


@pytest.fixture(scope="session")
def digits() -> ImageData:
    return load_digits()


@pytest.fixture(scope="session")
def small_digits(digits) -> ImageData:
    """Digits with 256 training and 64 test images (same format, fewer images)."""
    tr = TensorImages(digits.train.images[:256], digits.train.labels[:256])
    te = TensorImages(digits.test.images[:64], digits.test.labels[:64])
    return ImageData("digits", tr, te, te, 10, 32, digits.mean, digits.std, crop_pad=digits.crop_pad, hflip=False)


@pytest.fixture(scope="session")
def archs():
    from archspace.dataset import ArchDataset

    return ArchDataset(split="train", num=500, width_range=(TINY["width"], TINY["width"]))


def make_ghn(seed: int = 0):
    """A tiny real GHN-2, initialised from ``seed``."""
    from ghn import GHN

    torch.manual_seed(seed)
    return GHN(max_shape=(16, 16, 7, 7), num_classes=10, hidden_dim=TINY["hidden_dim"])


def ghn_state(ghn) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ghn.state_dict().items()}


def assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
