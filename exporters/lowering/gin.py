"""Dense static-topology lowering of :class:`torch_geometric.nn.GINConv`."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GINConv

from .aggregations import dense_aggregation
from .common import LowerContext, StaticConv, to_flat


class StaticGINConv(StaticConv):
    """``GINConv`` with its neighbourhood sum folded into a constant ``[N, N]`` matrix.

    The inner ``nn`` is called on the flat ``[B * N, F]`` tensor, exactly as PyG calls it,
    so layers such as ``BatchNorm1d`` keep working. Edge weights are ignored because
    PyG's ``GINConv`` has none.

    ``aggr`` is sum, mean, max, min or a ``MultiAggregation`` of those.

    Raises:
        UnsupportedModelError: For a learnable/custom aggregation or ``attn`` mode.
    """

    def _lower(self, conv: GINConv, ctx: LowerContext) -> None:
        self.nn = conv.nn
        if isinstance(conv.eps, nn.Parameter):
            self.eps = conv.eps
        else:
            self.register_buffer("eps", conv.eps)
        self.propagate = dense_aggregation(conv, ctx, self.num_nodes)

    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        out = to_flat(self.propagate(xb))
        return self.nn(out + (1 + self.eps) * x_flat)
