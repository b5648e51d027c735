"""The options that ``ghn rank``, ``ghn finetune`` and ``ghn prune`` share (among them the rule for the image size
of their data, :func:`data_image_size`), and the checks of their arguments that argparse cannot make, each failing
with a one-line :class:`archspace.errors.UsageError` before any long work (the ``ghn`` command's error boundary
prints it as ``ghn: error: MESSAGE`` and exits with status 2).
"""

from __future__ import annotations

import argparse
import math

from archspace.errors import UsageError
from archspace.files import check_writable
from train.data import DATASETS


def add_common_options(p: argparse.ArgumentParser, ckpt_required: bool = True) -> None:
    """Add the options every GHN-using subcommand takes: the checkpoint, the image task, the network's width and
    classifier, the seed and where to run.

    Args:
        p: the subcommand's parser.
        ckpt_required: whether ``--ckpt`` must be given (``ghn prune`` needs a GHN only for predicted starts).
    """
    from ghn.pretrained import CKPT_HELP

    p.add_argument("--ckpt", required=ckpt_required, default=None,
                   help=CKPT_HELP + ("" if ckpt_required else " (optional: needed for predicted parameters)"))
    p.add_argument("--data", default="digits", choices=DATASETS, help="image task: training and held-out images")
    p.add_argument("--data-root", default=None, help="dataset folder (cifar10, imagenet)")
    p.add_argument("--image-size", type=int, default=None,
                   help="image side (default: on digits the GHN's training size, else the dataset's)")
    p.add_argument("--width", type=int, default=None,
                   help="base width C of DeepNets-1M nets (default: each genotype's own, 32)")
    p.add_argument("--keep-classifier-init", action="store_true",
                   help="keep the classifier (last layer) at its default init instead of predicting it; needed "
                        "when the GHN was trained for another number of classes than the data has")
    p.add_argument("--seed", type=int, default=0, help="seed of default initialisations, data order and dropout")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", default=None,
                   help="torch CPU threads: a number or 'auto' (default: torch's choice; 1 is faster on a busy "
                        "machine)")


def data_image_size(args: argparse.Namespace, ghn=None) -> int | None:
    """The image side a GHN-using command loads its data at: ``--image-size`` if given; else, on the digits (which
    are resized to any size), the size the GHN was trained at (``ghn.image_size``, 16 for the main job's default),
    so that the networks see the images the GHN predicted for; else ``None`` (the dataset's own size).

    Args:
        args: the parsed arguments (``image_size``, ``data``).
        ghn: the loaded GHN, or ``None`` where the command runs without one.

    Returns:
        The side in pixels, or ``None`` for the dataset's default.
    """
    if args.image_size is not None:  # the commands reject values below 1 first (check_numbers)
        return args.image_size
    return ghn.image_size if ghn is not None and args.data == "digits" else None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_numbers(args: argparse.Namespace, at_least: dict[str, float], above: dict[str, float] | None = None
                  ) -> None:
    """Check numeric options against their bounds; an option left at ``None`` (unset) is not checked.

    Args:
        args: the parsed arguments.
        at_least: option (attribute name) -> smallest allowed value.
        above: option -> a bound the value must exceed (e.g. ``{"lr": 0}``).

    Raises:
        UsageError: the first option out of bounds, e.g. ``--width must be >= 1, got 0``, or not a finite number
            (``nan`` and ``inf`` parse as floats but pass no bound meaningfully).
    """
    for name in (*at_least, *(above or {})):
        value = getattr(args, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{_flag(name)} must be a finite number, got {value}")
    for name, low in at_least.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"{_flag(name)} must be >= {low}, got {value}")
    for name, low in (above or {}).items():
        value = getattr(args, name)
        if value is not None and not value > low:
            raise UsageError(f"{_flag(name)} must be > {low}, got {value}")


def check_outputs(args: argparse.Namespace, names: tuple[str, ...] = ("out", "plot")) -> None:
    """Check that every output file option that is set can be written (:func:`archspace.files.check_writable`;
    ``--plot`` also needs an image extension, :func:`archspace.plot.check_plot_path`).

    Raises:
        UsageError: an output that is a directory, lies in a folder that cannot be written, or a plot name
            without an image extension.
    """
    from archspace.plot import check_plot_path

    for name in names:
        if getattr(args, name) is not None:
            (check_plot_path if name == "plot" else check_writable)(getattr(args, name), _flag(name))


def check_device(device: str | None, flag: str = "--device") -> None:
    """Check a device setting against this machine: ``None`` (the default), a torch device name, and a CUDA device
    only where torch sees one. The one device check of the ``ghn`` subcommands and the Hydra entry points.

    Args:
        device: the value given, e.g. ``"cpu"``, ``"cuda:1"``, or ``None``.
        flag: how the user spelt the option, for the message (``--device`` or ``device``).

    Raises:
        UsageError: an unknown device name, or a CUDA device that torch does not see.
    """
    if device is None:
        return
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag}={device} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"{flag}={device} but torch sees no CUDA device; use {flag}=cpu")
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"{flag}={device} but torch sees only {count} CUDA device(s) (cuda:0-{count - 1})")


def check_batch_size(value: int, num_train: int, flag: str) -> None:
    """Check a training batch size against the size of the training set.

    Raises:
        UsageError: ``value`` exceeds ``num_train``.
    """
    if value > num_train:
        raise UsageError(f"{flag} {value} is larger than the {num_train} training images; choose at most "
                         f"{num_train}")
