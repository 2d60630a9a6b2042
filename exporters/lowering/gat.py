"""Dense static-topology lowering of :class:`torch_geometric.nn.GATConv`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv

from .attention import StaticAttentionConv
from .common import LowerContext


class StaticGATConv(StaticAttentionConv):
    """``GATConv`` computing its edge softmax densely over a constant ``[N, N]`` mask.

    Supports ``heads``, ``concat``, ``negative_slope``, ``add_self_loops``, ``bias``,
    ``residual`` and bipartite-style ``(in_src, in_dst)`` weights applied to one node set.
    Edge weights are ignored: ``GATConv`` takes edge features, not weights.
    """

    def _lower(self, conv: GATConv, ctx: LowerContext) -> None:
        super()._lower(conv, ctx)
        self.lin, self.lin_src, self.lin_dst = conv.lin, conv.lin_src, conv.lin_dst
        self.att_src, self.att_dst = conv.att_src, conv.att_dst
        self.res, self.bias = conv.res, conv.bias

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        n, h, c = self.num_nodes, self.heads, self.channels
        if self.lin is not None:
            x_src = x_dst = self.lin(xb).reshape(-1, n, h, c)
        else:
            x_src = self.lin_src(xb).reshape(-1, n, h, c)
            x_dst = self.lin_dst(xb).reshape(-1, n, h, c)
        # Head-major layout makes both the softmax and the aggregation plain MatMul-friendly.
        a_src = (x_src * self.att_src).sum(dim=-1).transpose(1, 2)  # [B, H, N]
        a_dst = (x_dst * self.att_dst).sum(dim=-1).transpose(1, 2)
        logits = F.leaky_relu(a_dst.unsqueeze(-1) + a_src.unsqueeze(-2), self.negative_slope)
        return self._attend(logits, x_src, xb)
