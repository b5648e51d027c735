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
        gru = self.gru
        # A node's hidden state before its update is its state at the start of the sweep, so the hidden-state half
        # of every GRU gate is computed for all nodes at once, outside the level loop.
        hh = F.linear(x, gru.weight_hh, gru.bias_hh)  # (N, 3D): [h_r, h_z, h_n]
        return _LevelSweep.apply(x, hh, gru.weight_ih, gru.bias_ih, *self._message_weights(), steps, order, inv)

    def forward(self, x: torch.Tensor, schedule: LevelSchedule) -> torch.Tensor:
        """Propagate node embeddings.

        Args:
            x: ``(N, D)`` initial node embeddings.
            schedule: levels of the graph batch, from :func:`ghn.levels.build_schedule` (built with
                ``virtual=self.ve``).

        Returns:
            ``(N, D)`` updated embeddings.
        """
        dtype = self.gru.weight_ih.dtype
        # The sweeps run in the GNN's own dtype, also under autocast: their many small products gain nothing from
        # bfloat16, and the hand-written backward of _LevelSweep assumes one dtype.
        with one_thread(x.device), torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            for _ in range(self.num_steps):
                x = self._sweep(x, schedule.forward, schedule.order_fwd, schedule.inv_fwd)
                x = self._sweep(x, schedule.backward, schedule.order_bwd, schedule.inv_bwd)
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.hidden_dim}, ve={self.ve}, steps={self.num_steps})"


class _LevelSweep(torch.autograd.Function):
    """One level-parallel sweep of :class:`GatedGNN` with a hand-written backward pass.

    The forward pass runs the levels in order (GRU update of a level's nodes, then their messages, Eq. 3-4); every
    tensor lives in the sweep's level order, so a level's rows are a slice and only the messages need an indexed
    add. The backward pass runs the levels in reverse but keeps in the loop only what depends on later levels (the
    gradient of a node's state through the messages it sent): the gate derivatives are computed for all nodes at
    once beforehand, and every weight gradient is one product over all nodes afterwards. This is the same
    arithmetic as autograd through the loop with far fewer operations per level: forward and backward 2.5x faster
    on the default's meta-batches (README, "Speed"); ``tests/ghn/test_gated_gnn.py`` checks values and gradients
    against the node-by-node definition.

    Inputs: ``x (N, D)`` states before the sweep, ``hh (N, 3D)`` the GRU's hidden-state products ``x W_hh^T +
    b_hh``, the GRU's ``w_ih (3D, D)``, ``b_ih (3D,)``, the fused message MLP ``w1 (H, D)``, ``b1 (H,)``,
    ``w2 (C D, H)``, ``b2 (C D,)`` (:meth:`GatedGNN._message_weights`), the sweep's steps, ``order`` and ``inv``
    (``(N,)`` long). Output: ``(N, D)`` states after the sweep, in node-id order. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x, hh, w_ih, b_ih, w1, b1, w2, b2, steps, order, inv):
        n, d = x.shape
        xo, ho = x.index_select(0, order), hh.index_select(0, order)  # (N, D), (N, 3D) in level order
        # Gate pre-activations without the message term: [h_r + b_ir, h_z + b_iz, b_in]; a level adds its summed
        # messages times W_ih in one product, and the candidate gate reads h_n separately (r * h_n).
        pre0 = torch.cat([ho[:, :2 * d] + b_ih[:2 * d], b_ih[2 * d:].expand(n, d)], 1)  # (N, 3D)
        h_n = ho[:, 2 * d:]
        acc = x.new_zeros(n, d)  # summed incoming messages, level order
        out = x.new_empty(n, d)  # states after the update, level order
        gates = x.new_empty(n, 3 * d)  # [r, z, candidate]
        u = x.new_zeros(n, w1.shape[0])  # message MLP hidden layer (rows of levels that send nothing stay 0)
        m = x.new_zeros(n, w2.shape[0])  # message MLP output
        w_ih_t, w1_t, w2_t = w_ih.t(), w1.t(), w2.t()
        for k, st in enumerate(steps):
            a, b = st.start, st.stop
            g = gates[a:b]
            if k == 0:  # a zero message
                g.copy_(pre0[a:b])
            else:
                torch.addmm(pre0[a:b], acc[a:b], w_ih_t, out=g)
            # GRU cell (torch.nn.GRUCell): reset and update gates, candidate state, new state
            rz = g[:, :2 * d].sigmoid_()
            cand = g[:, 2 * d:].addcmul_(rz[:, :d], h_n[a:b]).tanh_()
            h = torch.addcmul(cand, rz[:, d:], xo[a:b] - cand, out=out[a:b])
            if len(st.receiver_pos):
                torch.addmm(b1, h, w1_t, out=u[a:b]).relu_()
                torch.addmm(b2, u[a:b], w2_t, out=m[a:b]).relu_()
                msg = st.weights.to(x.dtype) @ m[a:b].view(-1, d)  # (U_k, D): weighted sums over (sender, channel)
                acc.index_put_((st.receiver_pos,), msg, accumulate=True)  # receivers are distinct within a level
        ctx.steps = steps
        ctx.save_for_backward(xo, ho, acc, out, gates, u, m, w_ih, w1, w2, order, inv)
        return out.index_select(0, inv)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        xo, ho, acc, out, gates, u, m, w_ih, w1, w2, order, inv = ctx.saved_tensors
        n, d = xo.shape
        with one_thread(xo.device):
            r, z, cand = gates[:, :d], gates[:, d:2 * d], gates[:, 2 * d:]
            # d h / d (input-side gate pre-activations) per node, by which the incoming gradient is multiplied:
            # reset gate, update gate, candidate; (N, 3, D)
            c_cand = (1 - z) * (1 - cand * cand)
            coef = torch.stack([c_cand * ho[:, 2 * d:] * r * (1 - r), (xo - cand) * z * (1 - z), c_cand], 1)
            gh = grad_out.index_select(0, order)  # (N, D) gradient of the states, messages' share added below
            g_gi = torch.empty_like(coef)  # (N, 3, D) gradient of the input-side gate pre-activations
            g_acc = torch.zeros_like(xo)  # (N, D) gradient of the summed messages
            g_m = torch.zeros_like(m)
            g_u = torch.zeros_like(u)
            m_on, u_on = m > 0, u > 0
            for k in range(len(ctx.steps) - 1, -1, -1):
                st = ctx.steps[k]
                a, b = st.start, st.stop
                if len(st.receiver_pos):
                    g_msg = g_acc.index_select(0, st.receiver_pos)  # (U_k, D)
                    gm = torch.mul((st.weights.to(xo.dtype).t() @ g_msg).view(b - a, -1), m_on[a:b], out=g_m[a:b])
                    gu = torch.mul(gm @ w2, u_on[a:b], out=g_u[a:b])
                    gh[a:b].addmm_(gu, w1)
                gi = torch.mul(gh[a:b].unsqueeze(1), coef[a:b], out=g_gi[a:b])
                if k > 0:
                    torch.mm(gi.view(b - a, 3 * d), w_ih, out=g_acc[a:b])
            g_gi = g_gi.view(n, 3 * d)
            g_x = (gh * z).index_select(0, inv)
            g_hh = torch.cat([g_gi[:, :2 * d], g_gi[:, 2 * d:] * r], 1).index_select(0, inv)
            g_w_ih, g_b_ih = g_gi.t() @ acc, g_gi.sum(0)  # level 0 reads a zero message: its rows of acc are 0
            g_w1, g_b1 = g_u.t() @ out, g_u.sum(0)
            g_w2, g_b2 = g_m.t() @ u, g_m.sum(0)
        return g_x, g_hh, g_w_ih, g_b_ih, g_w1, g_b1, g_w2, g_b2, None, None, None
