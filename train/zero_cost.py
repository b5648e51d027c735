"""Zero-cost proxies: scores of an untrained (or GHN-initialised) network from one batch, used to rank designs.

The ranking baselines of the NAS field (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS",
Sec. 3; Mellor et al., ICML 2021, "Neural Architecture Search without Training"). Each proxy takes the network
as it is (default initialisation, or parameters set by a GHN), one batch of images ``(B, C, H, W)`` and its labels
``(B,)``, and returns one float where higher means a better design. None of them changes the network: each works
on a copy, so its parameters, buffers, gradients and train/eval mode are left as they were.

- ``grad_norm``: the sum over convolution and linear layers of the Euclidean norm of the gradient of the
  cross-entropy loss with respect to the layer's weight (Abdelfattah et al., Sec. 3.1).
- ``snip``: the sum over the same weights of ``|w * dL/dw|``, the connection sensitivity of SNIP (Lee et al.,
  ICLR 2019, Eq. 6) summed over the network (Abdelfattah et al., Sec. 3.1).
- ``synflow``: with every parameter replaced by its absolute value, BatchNorm removed and float64 arithmetic,
  the input an all-ones image ``(1, C, H, W)`` and ``R`` the sum of the outputs, the sum over the weights of
  ``|w * dR/dw|`` (Tanaka et al., NeurIPS 2020, Eq. 2; Abdelfattah et al., Sec. 3.1). Data-independent.
- ``jacob_cov``: the score of Mellor et al.'s first version as Abdelfattah et al. define it (Sec. 3.1): ``J`` the
  gradients of the summed outputs with respect to each input image ``(B, C*H*W)``, ``Sigma`` the correlation
  matrix of its rows ``(B, B)`` with eigenvalues ``lambda_i``, score ``-sum_i log(lambda_i + k) + 1 / (lambda_i +
  k)``, ``k = 1e-5``. Labels are not used.
- ``naswot``: the ICML 2021 score (Mellor et al., Sec. 3, Eq. 2): each image's binary code of which ReLU units are
  active (inputs > 0 of every module whose class name contains ``ReLU``: ``nn.ReLU``, ``ReLU6``, ``LeakyReLU``, as
  the reference code selects them), the kernel ``K_H[i, j] = N_A - hamming(c_i, c_j)`` ``(B, B)``, score
  ``log |det K_H|``. Labels are not used.

``grad_norm``, ``snip``, ``jacob_cov`` and ``naswot`` run in training mode (BatchNorm normalises with the batch's
statistics, as at the start of training; running statistics are not updated because the copy is thrown away;
dropout draws from the global RNG, so seed it before each call for reproducible values). ``synflow`` runs in
evaluation mode, a deliberate difference from the reference code (which keeps the network's mode): with BatchNorm
removed only dropout differs, and DeepNets-1M nets have dropout before the classifier. A ``nan`` value means the
proxy is undefined for that network (ranking code puts it last); ``synflow`` returns ``inf`` when even float64
overflows, which happens for the largest networks, so they rank first as in the reference.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.accuracy import main_logits

#: Layers whose weights the gradient-based proxies sum over (as in Abdelfattah et al.'s code: conv and linear).
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: The constant ``k`` of ``jacob_cov`` (Abdelfattah et al., Sec. 3.1).
JACOB_COV_K = 1e-5

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS) and m.weight is not None]


def _copy_for_gradients(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model)
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    return net


def _finite(v: float) -> float:
    return v if math.isfinite(v) else float("nan")


def _is_relu(module: nn.Module) -> bool:
    return "ReLU" in type(module).__name__


def _loss_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor,
                                                                                                   torch.Tensor]]:
    """``(weight, dL/dweight)`` of every conv/linear layer of a training-mode copy, ``L`` the mean cross-entropy."""
    net = _copy_for_gradients(model)
    loss = F.cross_entropy(main_logits(net(images)), labels)
    weights = _weights(net)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), g) for w, g in zip(weights, grads) if g is not None]


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum over conv/linear layers of ``||dL/dW||_2`` (Abdelfattah et al., ICLR 2021, Sec. 3.1).

    Args:
        model: the network (not changed).
        images: ``(B, C, H, W)``.
        labels: ``(B,)`` class indices.

    Returns:
        The score (``nan`` when not finite).
    """
    return _finite(float(sum(g.norm() for _, g in _loss_gradients(model, images, labels))))


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum over conv/linear weights of ``|w * dL/dw|`` (SNIP, Lee et al., ICLR 2019, Eq. 6; as a network score:
    Abdelfattah et al., ICLR 2021, Sec. 3.1). Arguments and return as :func:`grad_norm`."""
    return _finite(float(sum((w * g).abs().sum() for w, g in _loss_gradients(model, images, labels))))


def _without_batchnorm(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return model


def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """SynFlow: ``sum |w * dR/dw|`` over conv/linear weights, ``R = 1^T f(1)`` with ``|theta|`` for every
    parameter, BatchNorm removed, float64 (Tanaka et al., NeurIPS 2020, Eq. 2; Abdelfattah et al., Sec. 3.1).

    Args:
        model: the network (not changed; the score is computed on a float64 copy in evaluation mode, so dropout is
            off).
        images: ``(B, C, H, W)``; only the shape of one image is used (the input is all ones).
        labels: unused.

    Returns:
        The score (``inf`` when it overflows even in float64).
    """
    net = _without_batchnorm(copy.deepcopy(model)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)
    r = main_logits(net(ones)).sum()
    weights = _weights(net)
    grads = torch.autograd.grad(r, weights, allow_unused=True)
    value = float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None))
    return math.inf if math.isinf(value) or (math.isnan(value) and not torch.isfinite(r)) else value


def jacob_cov(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """``-sum_i log(lambda_i + k) + 1 / (lambda_i + k)`` over the eigenvalues of the correlation matrix of the
    per-image input gradients of the summed outputs (Mellor et al., arXiv 2006.04647v1, as defined by Abdelfattah
    et al., ICLR 2021, Sec. 3.1; ``k = 1e-5``).

    Args:
        model: the network (not changed; a training-mode copy is used).
        images: ``(B, C, H, W)`` with ``B >= 2``.
        labels: unused.

    Returns:
        The score (``nan`` when a row of the Jacobian is constant, which leaves its correlation undefined).

    Raises:
        ValueError: fewer than 2 images.
    """
    if images.shape[0] < 2:
        raise ValueError(f"jacob_cov needs a batch of at least 2 images, got {images.shape[0]}")
    net = _copy_for_gradients(model)
    x = images.detach().clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(main_logits(net(x)).sum(), x)
    jac = jac.reshape(jac.shape[0], -1).double()  # (B, C*H*W)
    corr = torch.corrcoef(jac)  # (B, B)
    if not torch.isfinite(corr).all():
        return float("nan")
    v = torch.linalg.eigvalsh(corr)  # (B,)
    return _finite(float(-(torch.log(v + JACOB_COV_K) + 1.0 / (v + JACOB_COV_K)).sum()))


def naswot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """``log |det K_H|`` of the Hamming kernel of ReLU activation codes (Mellor et al., ICML 2021, Eq. 2):
    ``K_H[i, j]`` counts the ReLU units on which images ``i`` and ``j`` agree (both active or both inactive).

    Args:
        model: the network (not changed; a training-mode copy is used, as in the paper's code).
        images: ``(B, C, H, W)``.
        labels: unused.

    Returns:
        The score (``nan`` for a network without ReLU modules, no code to compare, or with a singular kernel).
    """
    net = copy.deepcopy(model).train()
    b = images.shape[0]
    kernel = torch.zeros((b, b), dtype=torch.float64, device=images.device)  # (B, B)
    seen = [0]

    def hook(_module, inputs, _output):
        c = (inputs[0].detach().reshape(b, -1) > 0).double()  # (B, units)
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)
        seen[0] += 1

    handles = [m.register_forward_hook(hook) for m in net.modules() if _is_relu(m)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for h in handles:
            h.remove()
    if not seen[0]:
        return float("nan")
    return _finite(float(torch.linalg.slogdet(kernel)[1]))


#: The proxies by name, each ``proxy(model, images (B, C, H, W), labels (B,)) -> float`` (higher is better).
PROXIES: dict[str, Proxy] = {"synflow": synflow, "jacob_cov": jacob_cov, "naswot": naswot, "snip": snip,
                             "grad_norm": grad_norm}
