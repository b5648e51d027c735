"""Shared pieces of the ``ghn rank`` / ``ghn finetune`` tests: a tiny saved GHN, debug-size options, a network that
runs at one input size only, and a runner of the real ``ghn`` entry point."""

from __future__ import annotations

import torch
import torch.nn as nn

#: Debug size: DeepNets-1M nets of width 8 on 16x16 digits.
SMALL = ["--width", "8", "--image-size", "16"]


def save_tiny_ghn(path, num_classes: int = 10, seed: int = 0, image_size: int | None = None) -> str:
    """An untrained debug-size GHN (weights drawn with ``seed``, trained-image side ``image_size``; ``None``: the
    GHN's default) saved with ``GHN.save``; returns the path."""
    from ghn import GHN

    torch.manual_seed(seed)
    GHN(max_shape=(16, 16, 3, 3), num_classes=num_classes, hidden_dim=8, image_size=image_size).save(str(path))
    return str(path)


def cnn_32(num_classes: int = 10) -> nn.Module:
    """A small CNN whose classifier expects 32x32 images: its forward fails at any other input size."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 32 * 32, num_classes))


def run_ghn(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the real ``ghn`` entry point (:func:`ghn.cli.main`, with its error boundary) in this process.

    Returns:
        ``(exit status, stdout, stderr)``.
    """
    from ghn.cli import main

    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_usage_error(status: int, err: str, message: str) -> str:
    """Check a user error as the boundary reports it: status 2, no traceback, and exactly one error line, the last
    line of stderr (progress lines may precede it), containing ``message``. Returns that line."""
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("ghn: error: ")]
    assert status == 2, err
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert message in errors[0], errors[0]
    return errors[0]


def break_plot(monkeypatch, name: str) -> None:
    """Make ``train.plots.<name>`` fail as a plot can (no display, a full disk): ``RuntimeError("no display")``."""
    import train.plots

    def broken_plot(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(train.plots, name, broken_plot)
