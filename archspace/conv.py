"""The convolution layer of DeepNets-1M nets: ``nn.Conv2d`` that avoids a oneDNN crash on AVX2-only CPUs.

On x86 CPUs without AVX-512 (e.g. AMD EPYC Zen 2/3), PyTorch 2.14's oneDNN kernel for the weight gradient of a 1x1
convolution with stride 2 on channels-last (NHWC) tensors with fewer than 8 input channels
(``jit_avx2_1x1_convolution_bwd_weights_t``) calls a null function pointer: the process dies with a segmentation
fault or an abort. Measured on this project's 2-core AMD EPYC machine (torch 2.14.1, ``ONEDNN_VERBOSE=1`` names the
primitive): input channels 2, 4 and 6 crash at 8x8 to 32x32 inputs, 8, 12 and 20 do not, NCHW never does. The
narrow nets of the tests (width 4) have such convolutions in the DARTS factorized reduction and in strided 1x1
``conv`` operations. :class:`Conv2d` computes just those convolutions as the same 1x1 convolution with stride 1 on
the subsampled input ``x[:, :, ::s, ::s]`` (the same numbers up to rounding; oneDNN then takes another kernel; NCHW
copies do not help, as a 1x1 weight is channels-last by its strides too); every other convolution runs unchanged, and
the parameters, state-dict keys and graph (``archspace.to_graph``) are those of ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Input channels from which oneDNN's AVX2 1x1 strided weight-gradient kernel is safe (its SIMD width in floats).
_SAFE_IN_CHANNELS = 8


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose unpadded 1x1 strided convolutions with fewer than 8 input channels run as stride-1
    convolutions of the subsampled input on the CPU when their input is channels-last (see the module docstring for
    the oneDNN crash this avoids).

    Shapes:
        as ``nn.Conv2d``: ``(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s))`` for the 1x1 case, channels-last
        in and out.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the name nn.Conv2d uses)
        if (self.in_channels < _SAFE_IN_CHANNELS and self.kernel_size == (1, 1) and max(self.stride) > 1
                and self.padding == (0, 0) and input.dim() == 4 and input.device.type == "cpu"
                and input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()):
            sub = input[:, :, :: self.stride[0], :: self.stride[1]].contiguous(memory_format=torch.channels_last)
            return F.conv2d(sub, self.weight, self.bias, 1, 0, self.dilation, self.groups)
        return super().forward(input)
