"""Dense static-topology lowering of :class:`torch_geometric.nn.SAGEConv`."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv

from .common import (
    NEIGHBOUR_AGGRS,
    DenseAggregation,
    aggr_name,
    check_lowerable,
    oriented,
    to_batched,
    to_flat,
)


class StaticSAGEConv(nn.Module):
    """``SAGEConv`` with its neighbourhood aggregation folded into constants.

    Supports ``aggr`` sum/add, mean, max (and min), ``project``, ``normalize`` and
    ``root_weight``. Edge weights are ignored because PyG's ``SAGEConv`` has none.

    Args:
        conv: The PyG layer to lower; its linear layers are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Ignored (kept for a uniform constructor signature).
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazy weights or an ``lstm``/list/custom aggregation.
    """

    def __init__(
        self,
        conv: SAGEConv,
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
        self.normalize = conv.normalize
        # PyG only creates `lin` for project=True; mirror its hasattr check.
        self.lin = conv.lin if conv.project and hasattr(conv, "lin") else None
        self.lin_l = conv.lin_l
        self.lin_r = conv.lin_r if conv.root_weight else None
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
        x = to_batched(x, self.num_nodes)
        # Projection only feeds the messages; the root term keeps the raw features.
        src = self.lin(x).relu() if self.lin is not None else x
        out = self.lin_l(self.propagate(src))
        if self.lin_r is not None:
            out = out + self.lin_r(x)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return to_flat(out)
