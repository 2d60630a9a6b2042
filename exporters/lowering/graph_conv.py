"""Dense static-topology lowering of :class:`torch_geometric.nn.GraphConv`."""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import GraphConv

from .aggregations import dense_aggregation
from .common import LowerContext, StaticConv


class StaticGraphConv(StaticConv):
    """``GraphConv`` with its neighbourhood aggregation folded into constants.

    Edge weights, when given, scale each message as in PyG. ``aggr`` is sum, mean,
    max, min or a ``MultiAggregation`` of those.

    Raises:
        UnsupportedModelError: For a learnable/custom aggregation or ``attn`` mode.
    """

    def _lower(self, conv: GraphConv, ctx: LowerContext) -> None:
        self.lin_rel = conv.lin_rel
        self.lin_root = conv.lin_root
        self.propagate = dense_aggregation(conv, ctx, self.num_nodes, weighted=True)

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        return self.lin_rel(self.propagate(xb)) + self.lin_root(xb)
