"""Dense static-topology lowering of :class:`torch_geometric.nn.GINConv`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import GINConv

from .common import (
    NEIGHBOUR_AGGRS,
    DenseAggregation,
    aggr_name,
    check_lowerable,
    oriented,
    to_batched,
    to_flat,
)


class StaticGINConv(nn.Module):
    """``GINConv`` with its neighbourhood sum folded into a constant ``[N, N]`` matrix.

    The inner ``nn`` is called on the flat ``[B * N, F]`` tensor, exactly as PyG calls it,
    so layers such as ``BatchNorm1d`` keep working.

    Args:
        conv: The PyG layer to lower; its ``nn`` and ``eps`` are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Ignored; PyG's ``GINConv`` has no edge weights.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazy weights or a list/custom aggregation.
    """

    def __init__(
        self,
        conv: GINConv,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        del edge_weight
        dtype, device = check_lowerable(path, conv)
        aggr = aggr_name(path, conv, NEIGHBOUR_AGGRS)
        self.num_nodes = num_nodes
        self.nn = conv.nn
        if isinstance(conv.eps, nn.Parameter):
            self.eps = conv.eps
        else:
            self.register_buffer("eps", conv.eps)
        self.propagate = DenseAggregation(
            oriented(conv, edge_index), num_nodes, None, aggr, dtype, device
        )

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: Flat node features ``[B * N, F_in]``.
            edge_index: Ignored; the topology is the folded constant.
            *args: Ignored.
            **kwargs: Ignored.

        Returns:
            Flat node features ``[B * N, F_out]``.
        """
        out = to_flat(self.propagate(to_batched(x, self.num_nodes)))
        return self.nn(out + (1 + self.eps) * x)
