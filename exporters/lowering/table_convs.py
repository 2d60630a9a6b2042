"""PyG conv layers lowered to neighbour-table aggregation (see :mod:`.tables`).

Each class mirrors one PyG layer's ``forward`` for inference, reusing its
weights, but aggregates over the current forward's neighbour tables instead
of scattering over ``edge_index``. The same lowered layer serves the static
form (tables folded as constants) and the dynamic form (tables as inputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv import MessagePassing

from edge_sdk.neighbour_tables import LOOPS, RAW

from .common import NEIGHBOUR_AGGRS, aggr_name, check_lowerable, unsupported
from .tables import current_table


class TableConv(nn.Module):
    """Base of the table-lowered layers: remembers the layer path and table variant.

    Args:
        conv: The PyG layer; its weights are reused, not copied.
        path: Dotted path of the layer in the model, for error messages.
    """

    variant: str = RAW

    def __init__(self, conv: MessagePassing, path: str = "") -> None:
        super().__init__()
        check_lowerable(path, conv)
        self.path = path
        self.flip = conv.flow == "target_to_source"
        if self.flip:
            unsupported(path, conv, "flow", conv.flow, "flow='source_to_target'")
        self._lower(conv)

    def _lower(self, conv: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer to flat ``x [B * N, F]``; ``edge_index`` is ignored (tables)."""
        return self._table_forward(x)

    def _table_forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TableGCNConv(TableConv):
    """``GCNConv``: symmetric normalisation computed from the table's degrees.

    With ``normalize`` PyG adds a self loop per node (``add_remaining_self_loops``;
    fill 2.0 with ``improved``) and weighs each edge ``1/sqrt(d_i d_j)``; here that is
    ``d^-1/2 * sum(d^-1/2 * h)`` over the ``loops`` table, plus the extra self weight
    of ``improved``. Without ``normalize``, a plain sum over the raw edges.

    Raises:
        UnsupportedModelError: For a non-sum aggregation or ``flow='target_to_source'``.
    """

    def _lower(self, conv: GCNConv) -> None:
        aggr_name(self.path, conv, ("sum",))
        self.normalize = conv.normalize
        self.variant = LOOPS if conv.normalize and conv.add_self_loops else RAW
        self.extra_loop = 1.0 if conv.improved and self.variant == LOOPS else 0.0
        self.lin = conv.lin
        self.bias = conv.bias

    def _table_forward(self, x: Tensor) -> Tensor:
        h = self.lin(x)
        table = current_table(self.variant, x)
        if self.normalize:
            deg = table.degree() + self.extra_loop
            dinv = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), 0.0)
            out = dinv * table.reduce(dinv * h, "sum")
            if self.extra_loop:
                out = out + self.extra_loop * dinv * dinv * h
        else:
            out = table.reduce(h, "sum")
        if self.bias is not None:
            out = out + self.bias
        return out


#: PyG layer -> its table lowering (exact classes: a subclass may change the message).
TABLE_CONVS: dict[type, type[TableConv]] = {GCNConv: TableGCNConv}

__all__ = ["NEIGHBOUR_AGGRS", "TABLE_CONVS", "TableConv", "TableGCNConv"]
