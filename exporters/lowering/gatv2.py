"""Dense static-topology lowering of :class:`torch_geometric.nn.GATv2Conv`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATv2Conv

from .attention import StaticAttentionConv
from .common import LowerContext


class StaticGATv2Conv(StaticAttentionConv):
    """``GATv2Conv`` computing its edge softmax densely over a constant ``[N, N]`` mask.

    GATv2 scores ``att . leaky_relu(W_r x_i + W_l x_j)`` cannot be split per node, so
    the forward materialises a ``[B, N, N, H, C]`` tensor; fine for sensor-sized graphs.
    Supports ``heads``, ``concat``, ``negative_slope``, ``add_self_loops``, ``bias``,
    ``share_weights`` and ``residual``. Edge weights are ignored: ``GATv2Conv`` takes
    edge features, not weights.
    """

    def _lower(self, conv: GATv2Conv, ctx: LowerContext) -> None:
        super()._lower(conv, ctx)
        self.share_weights = conv.share_weights
        self.lin_l, self.lin_r, self.att = conv.lin_l, conv.lin_r, conv.att
        self.res, self.bias = conv.res, conv.bias

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        n, h, c = self.num_nodes, self.heads, self.channels
        x_l = self.lin_l(xb).reshape(-1, n, h, c)  # source (message) side
        x_r = x_l if self.share_weights else self.lin_r(xb).reshape(-1, n, h, c)
        pair = F.leaky_relu(x_r.unsqueeze(2) + x_l.unsqueeze(1), self.negative_slope)
        logits = (pair * self.att).sum(dim=-1).permute(0, 3, 1, 2)  # [B, H, N_dst, N_src]
        return self._attend(logits, x_l, xb)
