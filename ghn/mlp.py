"""A small multi-layer perceptron, the building block of the GHN's message functions and 1-D decoder."""

from __future__ import annotations

import torch
import torch.nn as nn


class MLP(nn.Module):
    """Linear layers with ReLU in between (Knyazev et al., NeurIPS 2021, Sec. 4; the ``MLP`` of Eq. 3-4).

    The layers live in ``self.fc`` as ``Linear, act, Linear, act, ...`` so that parameter names are
    ``fc.0.weight``, ``fc.2.weight``, ... exactly as in the reference checkpoints.

    Args:
        in_features: input size.
        hidden: output sizes of the successive linear layers.
        last_relu: put a ReLU after the last linear layer too (the reference's message MLPs do; its 1-D decoder
            does not).

    Shapes:
        input ``(*, in_features)``; output ``(*, hidden[-1])``.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], last_relu: bool = True) -> None:
        super().__init__()
        if len(hidden) == 0:
            raise ValueError("an MLP needs at least one layer")
        layers: list[nn.Module] = []
        for j, n_out in enumerate(hidden):
            layers.append(nn.Linear(in_features if j == 0 else hidden[j - 1], n_out))
            is_last = j == len(hidden) - 1
            layers.append(nn.ReLU() if (not is_last or last_relu) else nn.Identity())
        self.fc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers. ``(*, in_features) -> (*, hidden[-1])``."""
        return self.fc(x)

    def __repr__(self) -> str:
        sizes = [self.fc[0].in_features] + [m.out_features for m in self.fc if isinstance(m, nn.Linear)]
        return f"{type(self).__name__}({' -> '.join(map(str, sizes))})"
