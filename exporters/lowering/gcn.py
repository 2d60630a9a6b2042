"""Dense static-topology lowering of :class:`torch_geometric.nn.GCNConv`."""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from .common import NEIGHBOUR_AGGRS, DenseAggregation, LowerContext, StaticConv, aggr_name


class StaticGCNConv(StaticConv):
    """``GCNConv`` with its normalised adjacency folded into a constant ``[N, N]`` matrix.

    The normalisation is computed by PyG's own ``gcn_norm`` on the single-graph topology
    and the resulting per-edge weights are summed into the matrix, so self-loop handling
    (``add_remaining_self_loops``), ``improved``, edge weights and duplicate edges behave
    exactly as in PyG.

    Raises:
        UnsupportedModelError: For a list/custom aggregation.
    """

    def _lower(self, conv: GCNConv, ctx: LowerContext) -> None:
        aggr = aggr_name(ctx.path, conv, NEIGHBOUR_AGGRS)
        edge_index, edge_weight = ctx.edge_index, ctx.edge_weight
        if conv.normalize:
            if edge_weight is not None:
                edge_weight = edge_weight.to(ctx.dtype)
            edge_index, edge_weight = gcn_norm(
                edge_index,
                edge_weight,
                self.num_nodes,
                conv.improved,
                conv.add_self_loops,
                "source_to_target",
                ctx.dtype,
            )
        self.lin = conv.lin
        self.bias = conv.bias
        self.propagate = DenseAggregation(
            edge_index, self.num_nodes, edge_weight, aggr, ctx.dtype, ctx.device
        )

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        out = self.propagate(self.lin(xb))
        if self.bias is not None:
            out = out + self.bias
        return out
