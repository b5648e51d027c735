"""The GHN training objective on one meta-batch (Knyazev et al., NeurIPS 2021, Eq. 2), and running a network
with predicted parameters.

The GHN predicts all parameters of every net of the meta-batch differentiably; each net runs on the same images
with ``torch.func.functional_call`` (the predicted tensors are used directly, never copied into the modules), and
the loss is the mean cross-entropy over the nets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch_geometric.data import Batch

from .accuracy import main_logits


def net_logits(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` with predicted ``params`` substituted for its own (``torch.func.functional_call``).

    Buffers (BatchNorm running statistics) stay the module's own. Networks with auxiliary heads return tuples;
    the first element is taken.

    Shapes:
        x: ``(B, C, H, W)`` -> logits ``(B, num_classes)``.
    """
    return main_logits(functional_call(model, params, (x,), strict=False))


class MetaBatchLoss(nn.Module):
    """The GHN training objective on one meta-batch (Knyazev et al., 2021, Eq. 2): mean over the networks of the
    cross-entropy of each network with GHN-predicted parameters on the same images.

    A module so that ``DistributedDataParallel`` can wrap it; its only parameters are the GHN's.

    Args:
        ghn: the hypernetwork (``predict_parameters(graphs, models) -> list[dict[str, Tensor]]``).
        label_smoothing: cross-entropy label smoothing (0.1 on ImageNet in the paper).
        channels_last: run the networks on channels-last (NHWC) images, so that every convolution, BatchNorm and
            pooling of the networks takes oneDNN's NHWC kernels: on CPU a GHN training step is 1.25-1.3x faster at the
            paper's setting (``benchmarks/bench_train.py --compare``) and about 1.2x on the digits default. The
            same step up to float rounding, though coarser rounding: PyTorch's NHWC BatchNorm kernels are 10-60x
            less precise than the NCHW ones (still ~1e-6 relative on unit-scale inputs), so gradients of deep
            networks differ from an NCHW step by up to ~1e-3 relative. ``False`` for bit-level comparisons.
    """

    def __init__(self, ghn: nn.Module, label_smoothing: float = 0.0, channels_last: bool = True):
        super().__init__()
        self.ghn = ghn
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last

    def forward(self, graphs: Batch, models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
                seeds: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (mean loss, per-network top-1 accuracy ``(M,)``).

        Args:
            seeds: per network, a torch seed set before its forward pass (dropout masks then depend only on the
                network's place in the meta-batch, not on which rank runs it).

        Shapes:
            x: ``(B, C, H, W)``; y: ``(B,)``.
        """
        params = self.ghn.predict_parameters(graphs, list(models))
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        losses, accs = [], []
        for j, (model, p) in enumerate(zip(models, params)):
            if seeds is not None:
                torch.manual_seed(seeds[j])
            logits = net_logits(model, p, x).float()  # (B, num_classes)
            losses.append(F.cross_entropy(logits, y, label_smoothing=self.label_smoothing))
            accs.append((logits.detach().argmax(1) == y).float().mean())
        return torch.stack(losses).mean(), torch.stack(accs)
