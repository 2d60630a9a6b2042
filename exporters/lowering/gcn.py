"""Dense static-topology lowering of :class:`torch_geometric.nn.GCNConv`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from .common import (
    NEIGHBOUR_AGGRS,
    DenseAggregation,
    aggr_name,
    check_lowerable,
    oriented,
    to_batched,
    to_flat,
)


class StaticGCNConv(nn.Module):
    """``GCNConv`` with its normalised adjacency folded into a constant ``[N, N]`` matrix.

    The normalisation is computed by PyG's own ``gcn_norm`` on the single-graph topology
    and the resulting per-edge weights are summed into the matrix, so self-loop handling
    (``add_remaining_self_loops``), ``improved`` and duplicate edges behave exactly as in
    PyG.

    Args:
        conv: The PyG layer to lower; its ``lin`` and ``bias`` are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Optional ``[E]`` edge weights.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazily initialised weights or a custom aggregation.
    """

    def __init__(
        self,
        conv: GCNConv,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        dtype, device = check_lowerable(path, conv)
        aggr = aggr_name(path, conv, NEIGHBOUR_AGGRS)
        edge_index = oriented(conv, edge_index)
        if conv.normalize:
            if edge_weight is not None:
                edge_weight = edge_weight.to(dtype)
            edge_index, edge_weight = gcn_norm(
                edge_index,
                edge_weight,
                num_nodes,
                conv.improved,
                conv.add_self_loops,
                "source_to_target",
                dtype,
            )
        self.num_nodes = num_nodes
        self.lin = conv.lin
        self.bias = conv.bias
        self.propagate = DenseAggregation(edge_index, num_nodes, edge_weight, aggr, dtype, device)

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
        out = self.propagate(self.lin(to_batched(x, self.num_nodes)))
        if self.bias is not None:
            out = out + self.bias
        return to_flat(out)
