"""Dense static-topology lowering of :class:`torch_geometric.nn.SAGEConv`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import SAGEConv

from .aggregations import dense_aggregation
from .common import LowerContext, StaticConv


class StaticSAGEConv(StaticConv):
    """``SAGEConv`` with its neighbourhood aggregation folded into constants.

    Supports ``aggr`` sum/add, mean, max, min and a ``MultiAggregation`` of those
    (``aggr=['mean', 'max']``: ``lin_l`` takes the combined result), ``project``,
    ``normalize`` and ``root_weight``. Edge weights are ignored because PyG's
    ``SAGEConv`` has none.

    Raises:
        UnsupportedModelError: For an ``lstm``/learnable/custom aggregation or ``attn`` mode.
    """

    def _lower(self, conv: SAGEConv, ctx: LowerContext) -> None:
        self.normalize = conv.normalize
        # PyG only creates `lin` for project=True; mirror its hasattr check.
        self.lin = conv.lin if conv.project and hasattr(conv, "lin") else None
        self.lin_l = conv.lin_l
        self.lin_r = conv.lin_r if conv.root_weight else None
        self.propagate = dense_aggregation(conv, ctx, self.num_nodes)

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        # Projection only feeds the messages; the root term keeps the raw features.
        src = self.lin(xb).relu() if self.lin is not None else xb
        out = self.lin_l(self.propagate(src))
        if self.lin_r is not None:
            out = out + self.lin_r(xb)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return out
