"""Top-1 / top-5 accuracy and mean cross-entropy of a classifier on evaluation batches: the one measure that
``ghn-eval``, ``ghn rank`` and ``ghn finetune`` report.

BatchNorm is handled by :func:`ghn.batchnorm.bn_mode`: ``"batch"`` normalises with the statistics of each
evaluation batch (how Knyazev et al., NeurIPS 2021, Sec. 5 evaluate predicted parameters, whose running statistics
are not predicted; batches of 64), ``"running"`` with the layers' running buffers (plain ``model.eval()``). Either
way the model's modes and buffers are as before afterwards.

Shapes: images ``(B, C, H, W)``, labels ``(B,)``, logits ``(B, num_classes)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ghn import batchnorm


class Accuracy(NamedTuple):
    """Scores of a classifier on evaluation batches: ``top1``, ``top5`` (percent) and mean cross-entropy ``loss``
    (``inf`` when the network outputs non-finite logits)."""

    top1: float
    top5: float
    loss: float


def main_logits(output) -> torch.Tensor:
    """The main logits of a network's output ``(B, num_classes)``: networks with auxiliary heads (GoogLeNet,
    Inception in train mode) return a tuple whose first element they are."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, bn_mode: str,
             device: str | torch.device = "cpu") -> Accuracy:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy of ``model`` on ``batches``, in evaluation mode.

    Args:
        model: the classifier; its train/eval modes and BatchNorm buffers are left as they were.
        batches: ``(images (B, C, H, W), labels (B,))`` pairs.
        bn_mode: ``"batch"`` (BatchNorm with the statistics of each batch) or ``"running"`` (running buffers).
        device: where to run; the model must already be there.

    Returns:
        An :class:`Accuracy`. Top-5 counts a hit within the ``min(5, num_classes)`` highest logits.

    Raises:
        ValueError: ``batches`` holds no image, or an unknown ``bn_mode``.
    """
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    with batchnorm.bn_mode(model, bn_mode):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = main_logits(model(x))  # (B, num_classes)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
            correct1 += int((top[:, 0] == y).sum())
            correct5 += int((top == y[:, None]).any(1).sum())
            total += y.numel()
    if total == 0:
        raise ValueError("no evaluation images: the evaluation split or the image limit is empty")
    loss = loss_sum / total
    return Accuracy(100.0 * correct1 / total, 100.0 * correct5 / total, loss if math.isfinite(loss) else math.inf)


def chance(num_classes: int) -> Accuracy:
    """The scores of a network that guesses: what a run that diverged (non-finite loss) is reported as."""
    return Accuracy(100.0 / num_classes, 100.0 * min(5, num_classes) / num_classes, math.inf)
