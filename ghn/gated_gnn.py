"""The gated graph neural network of GHN-2, with level-parallel forward and backward sweeps."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .levels import LevelSchedule, LevelStep
from .mlp import MLP
from .threads import one_thread


class GatedGNN(nn.Module):
    """Gated GNN with forward and backward sweeps and virtual edges (Knyazev et al., NeurIPS 2021, Eq. 3-4;
    Zhang et al., ICLR 2019).

    On the forward sweep each node ``v``, in topological order, receives

        m_v = sum_{u -> v real} MLP(h_u) + sum_{u -> v, sp(u, v) <= s} MLP_ve(h_u) / sp(u, v)

    (the second sum runs over real and virtual edges alike, as in the reference) and becomes
    ``h_v = GRUCell(m_v, h_v)``; the backward sweep does the same on the reversed graph. A whole topological level of
    every graph in the batch is updated at once (see :mod:`ghn.levels`), which equals the node-by-node definition.

    Args:
        hidden_dim: node embedding size ``D``.
        ve: use virtual edges (GHN-2); without them only real edges carry messages (GHN-1).
        num_steps: rounds of forward + backward sweeps (the released GHNs use 1).

    Shapes:
        ``x``: ``(N, D)``; output ``(N, D)``.
    """

    def __init__(self, hidden_dim: int = 32, ve: bool = True, num_steps: int = 1) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.ve = ve
        self.num_steps = num_steps
        # Names and sizes follow the reference checkpoints: mlp is D -> D/2 -> D with virtual edges, D -> D -> D
        # without; mlp_ve is D -> D/2 -> D; both end with a ReLU.
        self.mlp = MLP(hidden_dim, ((hidden_dim // 2) if ve else hidden_dim, hidden_dim))
        if ve:
            self.mlp_ve = MLP(hidden_dim, (hidden_dim // 2, hidden_dim))
        self.gru = nn.GRUCell(hidden_dim, hidden_dim)

    def _message_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both message MLPs fused into one: first layers stacked, second layers block-diagonal.

        Returns ``(W1, b1, W2, b2)`` such that ``relu(relu(h W1^T + b1) W2^T + b2)`` is ``[MLP(h), MLP_ve(h)]``,
        ``(n, C * D)``.
        """
        a1, a2 = self.mlp.fc[0], self.mlp.fc[2]
        if not self.ve:
            return a1.weight, a1.bias, a2.weight, a2.bias
        v1, v2 = self.mlp_ve.fc[0], self.mlp_ve.fc[2]
        w1 = torch.cat([a1.weight, v1.weight], 0)  # (H_a + H_v, D)
        b1 = torch.cat([a1.bias, v1.bias], 0)
        w2 = torch.block_diag(a2.weight, v2.weight)  # (2D, H_a + H_v)
        b2 = torch.cat([a2.bias, v2.bias], 0)
        return w1, b1, w2, b2

    def _sweep(self, x: torch.Tensor, steps: list[LevelStep], order: torch.Tensor,
               inv: torch.Tensor) -> torch.Tensor:
        """One sweep over the levels. ``x``: ``(N, D)`` states before the sweep; returns ``(N, D)`` after."""
        n, d = x.shape
        w1, b1, w2, b2 = self._message_weights()
        gru = self.gru
        # A node's hidden state before its update is its state at the start of the sweep, so the hidden-state half
        # of every GRU gate is computed for all nodes at once; one gather per level then fetches both.
        xg = torch.cat([F.linear(x, gru.weight_hh, gru.bias_hh), x], 1)  # (N, 4D): [h_r, h_z, h_n, h]
        acc = x.new_zeros(n, d)  # summed incoming messages of every node
        outs = []
        for k, step in enumerate(steps):
            xs = xg.index_select(0, step.nodes)  # (n_k, 4D)
            if k == 0:
                gi = gru.bias_ih.expand(len(step.nodes), 3 * d)  # zero message
            else:
                gi = F.linear(acc.index_select(0, step.nodes), gru.weight_ih, gru.bias_ih)  # (n_k, 3D)
            # GRU cell, computed as torch.nn.GRUCell does on the CPU.
            i_rz, i_n = gi.split_with_sizes((2 * d, d), 1)
            h_rz, h_n, h = xs.split_with_sizes((2 * d, d, d), 1)
            r, z = torch.sigmoid(i_rz + h_rz).chunk(2, 1)  # reset and update gates, (n_k, D) each
            new = torch.tanh(torch.addcmul(i_n, r, h_n))  # (n_k, D)
            h = torch.addcmul(new, z, h - new)  # (n_k, D)
            outs.append(h)
            if len(step.receivers):
                msg = torch.relu(F.linear(torch.relu(F.linear(h, w1, b1)), w2, b2))  # (n_k, C*D)
                msg = step.weights @ msg.view(-1, d)  # (U_k, D): weighted sums over (sender, channel)
                # acc is only ever read through index_select, so it is not saved for backward and may be updated
                # in place without breaking autograd. Under autocast msg is bfloat16 and acc keeps x's dtype.
                acc.index_put_((step.receivers,), msg.to(acc.dtype), accumulate=True)  # (N, D)
        return torch.cat(outs, 0).index_select(0, inv)  # (N, D) back in node-id order

    def forward(self, x: torch.Tensor, schedule: LevelSchedule) -> torch.Tensor:
        """Propagate node embeddings.

        Args:
            x: ``(N, D)`` initial node embeddings.
            schedule: levels of the graph batch, from :func:`ghn.levels.build_schedule` (built with
                ``virtual=self.ve``).

        Returns:
            ``(N, D)`` updated embeddings.
        """
        with one_thread(x.device):
            for _ in range(self.num_steps):
                x = self._sweep(x, schedule.forward, schedule.order_fwd, schedule.inv_fwd)
                x = self._sweep(x, schedule.backward, schedule.order_bwd, schedule.inv_bwd)
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.hidden_dim}, ve={self.ve}, steps={self.num_steps})"
