"""Diversify predicted parameters before fine-tuning: noise and orthogonalisation (Knyazev, "Pretraining a Neural
Network before Knowing Its Architecture", ICML 2022 workshop, arXiv 2207.10049; reference ``ppuda/utils/init.py``).

A GHN tiles its decoded blocks to fill large layers, so predicted weights repeat channels; gradient descent from
such a start keeps the symmetry. The remedy perturbs every weight matrix (2-D or more: convolutions, linear layers)
from a given layer on, the last such layer (the classifier) excepted:

- noise: ``W += beta * std(W) * N(0, 1)`` elementwise, ``std(W)`` the standard deviation of that layer's predicted
  weights (the reference scales by the spread of the rows' correlations instead; we follow the project's issue);
- orthogonalisation: ``W`` flattened to ``(out, in * k * k)``, taken as a tall matrix (transposed when wider than
  tall), replaced by the ``Q`` of its QR decomposition with the signs of ``diag(R)`` folded in, so the tall side
  has orthonormal columns;
- or the polar factor instead of ``Q`` (not in Knyazev 2022): ``U V^T`` of the reduced SVD ``W = U S V^T``, the
  matrix with orthonormal columns nearest to ``W`` in the Frobenius norm (Higham, "Computing the polar
  decomposition", SIAM J. Sci. Stat. Comput. 1986, Sec. 1). QR's ``Q`` keeps the tall view's first column's direction
  and bends the others by Gram-Schmidt; the polar factor only sets every singular value to 1.

1-D parameters (norm layers, biases) are left as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The model's weight matrices in module order: ``(name, parameter)`` for every parameter named ``weight`` with
    two or more dims (convolutions, linear layers)."""
    return [(n, p) for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2]


#: Orthogonalisation methods of :func:`orthogonalize`.
ORTH_METHODS = ("qr", "polar")


def _check_method(method: str) -> None:
    """Raise ``ValueError`` for a method not in :data:`ORTH_METHODS`."""
    if method not in ORTH_METHODS:
        raise ValueError(f"unknown orthogonalisation {method!r}; choose from {', '.join(ORTH_METHODS)}")


def orthogonalize(w: torch.Tensor, method: str = "qr") -> torch.Tensor:
    """The orthogonal factor of ``w`` reshaped to 2-D (module docstring).

    Args:
        w: ``(out, ...)`` weights, 2-D or more.
        method: ``"qr"`` (Knyazev 2022) or ``"polar"`` (the nearest matrix with orthonormal columns; Higham 1986).

    Returns:
        A tensor of ``w``'s shape whose 2-D view ``(out, -1)`` has orthonormal columns if ``out >= prod(...)``,
        else orthonormal rows.

    Raises:
        ValueError: an unknown ``method``.
    """
    _check_method(method)
    m = w.reshape(w.shape[0], -1)
    wide = m.shape[0] < m.shape[1]
    if wide:
        m = m.t()
    if method == "polar":
        u, _, vh = torch.linalg.svd(m, full_matrices=False)  # m (rows >= cols) = u (rows, cols) diag(s) vh
        q = u @ vh  # (rows, cols)
    else:
        q, r = torch.linalg.qr(m)  # m (rows >= cols) = q (rows, cols) r (cols, cols)
        sign = torch.sign(torch.diagonal(r))
        sign[sign == 0] = 1
        q = q * sign
    return (q.t() if wide else q).reshape(w.shape).contiguous()


@torch.no_grad()
def diversify(model: nn.Module, beta: float = 1e-5, from_layer: int = 0, orth: bool = False,
              generator: torch.Generator | None = None, method: str = "qr") -> list[str]:
    """Add scaled noise to (and optionally orthogonalise) the weight matrices of ``model`` in place.

    Args:
        model: a network holding predicted parameters.
        beta: noise scale relative to each layer's weight standard deviation (>= 0; 0: no noise).
        from_layer: index (0-based, in :func:`weight_layers` order) of the first weight matrix changed.
        orth: orthogonalise after the noise (:func:`orthogonalize`).
        generator: random generator of the noise (``None``: torch's global one).
        method: the orthogonalisation, ``"qr"`` or ``"polar"`` (:func:`orthogonalize`).

    Returns:
        The names of the parameters changed.

    The noise is drawn on the CPU (``generator`` is a CPU generator) and then moved to the weights' device, so the
    same seed gives the same noise on every device. A weight with a single entry has no standard deviation and gets
    no noise.

    Raises:
        ValueError: a negative or non-finite ``beta``, a negative ``from_layer`` or one past the last weight matrix
            besides the classifier, an unknown ``method`` (checked before any weight changes).
    """
    _check_method(method)
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    layers = weight_layers(model)[:-1]  # the last weight matrix, the classifier, is left alone
    if not 0 <= from_layer < max(len(layers), 1):
        raise ValueError(f"from_layer must be between 0 and {max(len(layers) - 1, 0)} (this network has "
                         f"{len(layers)} weight matrices besides its classifier), got {from_layer}")
    changed = []
    for i, (name, p) in enumerate(layers):
        if i < from_layer:
            continue
        if beta > 0 and p.numel() > 1:
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p.add_(noise * (beta * p.std()))
        if orth:
            p.copy_(orthogonalize(p, method))
        changed.append(name)
    return changed


#: The starting points ``ghn finetune --init`` offers (issue 12): the GHN's prediction as is, with noise, with noise
#: and QR orthogonalisation (Knyazev 2022) or with noise and the polar factor instead, the network's own default
#: initialisation, or that default initialisation orthogonalised the same ways (the controls that tell what
#: ``predicted+orth`` and ``predicted+polar`` owe to the GHN and what to the orthogonalisation alone; no GHN).
INITS = ("predicted", "predicted+noise", "predicted+orth", "predicted+polar", "default", "default+orth",
         "default+polar")

#: The GHN-free controls: fine-tuning baselines, not starting points of a prediction.
CONTROLS = ("default+orth", "default+polar")

#: Default noise scale: the value GHN-3 uses "to break symmetry" (Knyazev et al., ICML 2023), here relative to each
#: layer's weight standard deviation (module docstring).
DEFAULT_BETA = 1e-5


def warm_start(model: nn.Module, init: str, predict=None, *, beta: float = DEFAULT_BETA, from_layer: int = 0,
               generator: torch.Generator | None = None) -> nn.Module:
    """Give ``model`` (at its default initialisation) the starting parameters ``init`` names, in place.

    Args:
        model: the network, at its default initialisation.
        init: one of :data:`INITS`: ``predicted`` (``predict(model)``), ``predicted+noise`` (then
            :func:`diversify` with ``beta``), ``predicted+orth`` (then :func:`diversify` with ``orth=True``),
            ``predicted+polar`` (the same with ``method="polar"``), ``default`` (left as it is), ``default+orth``
            or ``default+polar`` (:func:`diversify` with ``orth=True`` on the default initialisation, no
            prediction).
        predict: a function that sets a network's parameters to a GHN's prediction in place (e.g.
            ``lambda m: ghn.predict(m)``); needed for every ``predicted*`` init, unused by the others.
        beta, from_layer, generator: the :func:`diversify` settings.

    Returns:
        ``model``.

    Raises:
        ValueError: an unknown ``init``, or a ``predicted*`` init without ``predict``.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    if init.startswith("predicted"):
        if predict is None:
            raise ValueError(f"init {init!r} needs a GHN prediction (predict=...)")
        predict(model)
    if init not in ("predicted", "default"):  # +noise, +orth, +polar: diversified, from the prediction or default init
        method = "polar" if init.endswith("+polar") else "qr"
        diversify(model, beta=beta, from_layer=from_layer, orth=init.endswith(("+orth", "+polar")),
                  generator=generator, method=method)
    return model
