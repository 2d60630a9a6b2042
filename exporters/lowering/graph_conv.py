"""Dense static-topology lowering of :class:`torch_geometric.nn.GraphConv`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import GraphConv

from .common import (
    NEIGHBOUR_AGGRS,
    DenseAggregation,
    aggr_name,
    check_lowerable,
    oriented,
    to_batched,
    to_flat,
)


class StaticGraphConv(nn.Module):
    """``GraphConv`` with its (weighted) neighbourhood aggregation folded into constants.

    Args:
        conv: The PyG layer to lower; ``lin_rel`` and ``lin_root`` are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Optional ``[E]`` edge weights scaling each message.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazy weights or a list/custom aggregation.
    """

    def __init__(
        self,
        conv: GraphConv,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        dtype, device = check_lowerable(path, conv)
        aggr = aggr_name(path, conv, NEIGHBOUR_AGGRS)
        self.num_nodes = num_nodes
        self.lin_rel = conv.lin_rel
        self.lin_root = conv.lin_root
        self.propagate = DenseAggregation(
            oriented(conv, edge_index), num_nodes, edge_weight, aggr, dtype, device
        )

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: Flat node features ``[B * N, F_in]``.
            edge_index: Ignored; the topology is the folded constant.
            *args: Ignored (e.g. the ``edge_weight`` the original layer took).
            **kwargs: Ignored.

        Returns:
            Flat node features ``[B * N, F_out]``.
        """
        x = to_batched(x, self.num_nodes)
        out = self.lin_rel(self.propagate(x)) + self.lin_root(x)
        return to_flat(out)
