"""Dense static-topology lowering of :class:`torch_geometric.nn.GraphConv`."""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import GraphConv

from .common import NEIGHBOUR_AGGRS, DenseAggregation, LowerContext, StaticConv, aggr_name


class StaticGraphConv(StaticConv):
    """``GraphConv`` with its neighbourhood aggregation folded into constants.

    Edge weights, when given, scale each message as in PyG.

    Raises:
        UnsupportedModelError: For a list/custom aggregation.
    """

    def _lower(self, conv: GraphConv, ctx: LowerContext) -> None:
        aggr = aggr_name(ctx.path, conv, NEIGHBOUR_AGGRS)
        self.lin_rel = conv.lin_rel
        self.lin_root = conv.lin_root
        self.propagate = DenseAggregation(
            ctx.edge_index, self.num_nodes, ctx.edge_weight, aggr, ctx.dtype, ctx.device
        )

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        return self.lin_rel(self.propagate(xb)) + self.lin_root(xb)
