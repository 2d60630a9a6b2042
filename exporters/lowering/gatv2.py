"""Dense static-topology lowering of :class:`torch_geometric.nn.GATv2Conv`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATv2Conv

from .attention import StaticAttentionConv
from .common import LowerContext


class StaticGATv2Conv(StaticAttentionConv):
    """``GATv2Conv`` with its edge softmax dense over a constant ``[N, N]`` edge-count matrix.

    GATv2 scores ``att . leaky_relu(W_r x_i + W_l x_j)`` cannot be split per node, so
    the forward materialises a ``[B, N, N * H * C]`` tensor; fine for sensor-sized graphs.
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
        x_l = self.lin_l(xb)  # [B, N, H * C], source (message) side
        x_r = x_l if self.share_weights else self.lin_r(xb)
        # pair[b, i, j * H * C + k] = x_r[b, i, k] + x_l[b, j, k]; kept 3-D (no [B, N, N, H, C])
        # so converters that read 4-D tensors as NCHW (onnx2tf) leave the broadcast alone.
        pair = x_r.repeat(1, 1, n) + x_l.reshape(-1, 1, n * h * c)
        pair = F.leaky_relu(pair, self.negative_slope) * self.att.reshape(1, 1, h * c).repeat(
            1, 1, n
        )
        scores = pair.reshape(-1, n * n * h, c).sum(dim=-1)  # [B, N_dst * N_src * H]
        logits = scores.reshape(-1, n * n, h).transpose(1, 2).reshape(-1, n, n)  # [B * H, ..]
        return self._attend(logits, x_l, xb)
