"""Dense static-topology lowering of :class:`torch_geometric.nn.GATConv`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATConv

from .attention import StaticAttentionConv
from .common import LowerContext


class StaticGATConv(StaticAttentionConv):
    """``GATConv`` with its edge softmax dense over a constant ``[N, N]`` edge-count matrix.

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
        # Everything stays at most 3-D (heads folded into the batch): converters that read
        # 4-D tensors as NCHW (onnx2tf) otherwise transpose one side of the pairwise sum.
        if self.lin is not None:
            x_src = x_dst = self.lin(xb)  # [B, N, H * C]
        else:
            x_src, x_dst = self.lin_src(xb), self.lin_dst(xb)
        a_src = _head_scores(x_src, self.att_src, n, h, c)  # [B * H, N]
        a_dst = _head_scores(x_dst, self.att_dst, n, h, c)
        logits = F.leaky_relu(a_dst.unsqueeze(-1) + a_src.unsqueeze(-2), self.negative_slope)
        return self._attend(logits, x_src, xb)


def _head_scores(x: Tensor, att: Tensor, n: int, h: int, c: int) -> Tensor:
    """``sum_c x[b, i, h, c] * att[h, c]`` as ``[B * H, N]`` without a 4-D intermediate.

    Args:
        x: ``[B, N, H * C]`` projected features.
        att: ``[1, H, C]`` attention vector.
        n: Nodes. h: Heads. c: Channels per head.
    """
    scores = (x * att.reshape(1, 1, h * c)).reshape(-1, n * h, c).sum(dim=-1)  # [B, N * H]
    return scores.reshape(-1, n, h).transpose(1, 2).reshape(-1, n)
