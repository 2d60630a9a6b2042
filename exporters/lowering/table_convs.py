"""PyG conv layers lowered to neighbour-table aggregation (see :mod:`.tables`).

Each class mirrors one PyG layer's ``forward`` for inference, reusing its
weights, but aggregates over the current forward's neighbour tables instead
of scattering over ``edge_index``. The same lowered layer serves the static
form (tables folded as constants) and the dynamic form (tables as inputs).
Per-edge arguments (``edge_weight``, ``edge_attr``) stay forward arguments,
``[B * E, ...]`` in ``edge_index`` order; the layer gathers them by the
tables' per-slot edge ids. The GAT family is in :mod:`.table_attention`.
"""

from __future__ import annotations

import abc
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, GINEConv, GraphConv, SAGEConv
from torch_geometric.nn.conv import MessagePassing

from edge_sdk.errors import ExportError, UnsupportedModelError
from edge_sdk.neighbour_tables import LOOPS, RAW

from .aggregations import TableAggregation
from .common import NEIGHBOUR_AGGRS, aggr_name, check_lowerable, unsupported
from .tables import Table, current_table


class TableConv(nn.Module, abc.ABC):
    """Base of the table-lowered layers: remembers the layer path and table variant.

    Subclasses set :attr:`edge_arg` when their PyG layer takes a per-edge
    argument (its keyword name, also accepted as the first positional argument
    after ``edge_index``), and implement :meth:`_lower` and :meth:`_table_forward`.

    Args:
        conv: The PyG layer; its weights are reused, not copied.
        path: Dotted path of the layer in the model, for error messages.
    """

    variant: str = RAW
    #: The PyG forward's per-edge argument (``edge_weight`` / ``edge_attr``), if any.
    edge_arg: str | None = None

    def __init__(self, conv: MessagePassing, path: str = "") -> None:
        super().__init__()
        check_lowerable(path, conv)
        self.path = path
        self.layer = type(conv).__name__
        if conv.flow == "target_to_source":
            unsupported(path, conv, "flow", conv.flow, "flow='source_to_target'")
        self._lower(conv)

    # `conv` is Any so each subclass can narrow it to the PyG class it lowers.
    @abc.abstractmethod
    def _lower(self, conv: Any) -> None:
        """Check ``conv``'s options and keep its weights."""

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer to flat ``x [B * N, F]``; ``edge_index`` is ignored (tables).

        Raises:
            ExportError: Bipartite ``(x_src, x_dst)`` input, or ``return_attention_weights``.
        """
        if not isinstance(x, Tensor):
            raise ExportError(
                f"layer '{self.path or '<root>'}' ({self.layer}) was called with a "
                f"(source, target) pair of features; neighbour tables lower one node set"
            )
        if kwargs.get("return_attention_weights"):
            raise ExportError(
                f"layer '{self.path or '<root>'}' ({self.layer}): return_attention_weights "
                f"is not lowered to neighbour tables; call it without"
            )
        edge = None
        if self.edge_arg is not None:
            edge = kwargs.get(self.edge_arg, args[0] if args else None)
        return self._table_forward(x, edge)

    @abc.abstractmethod
    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        """The layer on flat ``x`` over the current tables (``edge``: the per-edge argument)."""

    def refuse(self, what: str) -> UnsupportedModelError:
        """The error for a forward argument this lowering cannot take."""
        return UnsupportedModelError(
            f"Cannot lower layer '{self.path or '<root>'}' ({self.layer}) to neighbour "
            f"tables: {what}."
        )


def edge_weights(table: Table, weight: Tensor | None) -> list[Tensor] | None:
    """Per-slot ``[B * R_c, K_c, 1]`` weights of ``weight [B * E]`` (``None`` stays ``None``)."""
    return None if weight is None else table.edge_slots(weight.reshape(-1, 1))


def linear_after_reduce(
    table: Table,
    x: Tensor,
    aggr: TableAggregation,
    lin: nn.Module,
    weights: list[Tensor] | None = None,
) -> Tensor:
    """``lin(aggr(x))``, projecting first where that is cheaper and still exact.

    ``sum`` and ``mean`` are linear, so ``agg(x) W^T = agg(x W^T)``; the bias is
    added after the aggregation, so a node without edges still gets ``lin(0) = b``.
    Projecting first gathers the narrower features when ``lin`` shrinks them
    (one aggregation only: a ``MultiAggregation`` reduces first, then combines).
    """
    weight = cast(Tensor, lin.weight)
    bias = cast(Tensor | None, lin.bias)
    how = aggr.single
    if how in ("sum", "mean") and weight.shape[0] < weight.shape[1]:
        out = table.reduce(F.linear(x, weight), how, weights)
        return out if bias is None else out + bias
    return lin(aggr(table, x, weights))


class TableGCNConv(TableConv):
    """``GCNConv``: symmetric normalisation computed from the table's degrees.

    With ``normalize`` PyG adds a self loop per node (``add_remaining_self_loops``)
    and weighs each edge ``1/sqrt(d_i d_j)``; here that is ``d^-1/2 * sum(d^-1/2 * h)``
    over the ``loops`` table. Without ``normalize``, a plain sum over the raw edges.
    ``edge_weight`` is taken where no self loops are added (the raw table).
    ``improved`` changes nothing without edge weights (PyG 2.8 passes its fill
    value 2.0 only to the weights of the loops it adds, and weights are ones then).

    Raises:
        UnsupportedModelError: For a non-sum aggregation, ``flow='target_to_source'``,
            or ``edge_weight`` together with the self loops PyG adds (an existing
            self loop's weight replaces the fill value there; not lowered).
    """

    edge_arg = "edge_weight"

    def _lower(self, conv: GCNConv) -> None:
        aggr_name(self.path, conv, ("sum",))
        self.normalize = conv.normalize
        self.variant = LOOPS if conv.normalize and conv.add_self_loops else RAW
        self.lin = conv.lin
        self.bias = conv.bias

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        if edge is not None and self.variant == LOOPS:
            raise self.refuse(
                "edge_weight with add_self_loops=True and normalize=True (an existing "
                "self loop keeps its weight); pass no edge_weight or add the loops yourself"
            )
        h = self.lin(x)
        table = current_table(self.variant, x)
        weights = edge_weights(table, edge)
        if self.normalize:
            deg = table.degree() if weights is None else table.reduce_slots(weights, "sum")
            dinv = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), 0.0)
            out = dinv * table.reduce(dinv * h, "sum", weights)
        else:
            out = table.reduce(h, "sum", weights)
        if self.bias is not None:
            out = out + self.bias
        return out


class TableGraphConv(TableConv):
    """``GraphConv``: ``lin_rel(agg(w_e * x_j)) + lin_root(x)`` over the raw edges.

    ``agg`` is one aggregation or a ``MultiAggregation`` (:class:`.aggregations.Combine`).
    """

    edge_arg = "edge_weight"

    def _lower(self, conv: GraphConv) -> None:
        self.aggr = TableAggregation(self.path, conv)
        self.lin_rel, self.lin_root = conv.lin_rel, conv.lin_root

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        table = current_table(RAW, x)
        out = linear_after_reduce(table, x, self.aggr, self.lin_rel, edge_weights(table, edge))
        return out + self.lin_root(x)


class TableGINConv(TableConv):
    """``GINConv``: ``nn(agg(x_j) + (1 + eps) * x)`` (``eps`` trained or not)."""

    def _lower(self, conv: GINConv) -> None:
        self.aggr = TableAggregation(self.path, conv)
        self.nn, self.eps = conv.nn, conv.eps

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        out = self.aggr(current_table(RAW, x), x)
        return self.nn(out + (1 + self.eps) * x)


class TableGINEConv(TableConv):
    """``GINEConv``: ``nn(agg(relu(x_j + lin(e_ji))) + (1 + eps) * x)``.

    The edge features reach each slot through the table's edge ids; ``lin`` (present
    with ``edge_dim``) is applied per edge before the gather.
    """

    edge_arg = "edge_attr"

    def _lower(self, conv: GINEConv) -> None:
        self.aggr = TableAggregation(self.path, conv)
        self.nn, self.eps, self.lin = conv.nn, conv.eps, conv.lin

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        if edge is None:
            raise self.refuse("GINEConv needs edge_attr; pass it as in PyG")
        e = edge if edge.dim() == 2 else edge.unsqueeze(-1)
        if self.lin is not None:
            e = self.lin(e)
        table = current_table(RAW, x)
        msgs = [(table.slots(x, c) + ea).relu() for c, ea in enumerate(table.edge_slots(e))]
        return self.nn(self.aggr.reduce_slots(table, msgs) + (1 + self.eps) * x)


class TableSAGEConv(TableConv):
    """``SAGEConv``: ``lin_l(agg(x_j)) + lin_r(x)``, optional ``project`` and ``normalize``.

    ``sum``/``mean`` aggregate after ``lin_l`` when it narrows the features (exact,
    see :func:`linear_after_reduce`). With a ``MultiAggregation`` (``aggr=['mean',
    'max']``) ``lin_l`` takes the combined result (``cat``: ``A * F_in`` wide, as
    PyG sizes it).
    """

    def _lower(self, conv: SAGEConv) -> None:
        self.aggr = TableAggregation(self.path, conv)
        self.lin = conv.lin if conv.project else None
        self.lin_l = conv.lin_l
        self.lin_r = conv.lin_r if conv.root_weight else None
        self.normalize = conv.normalize

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        src = x if self.lin is None else self.lin(x).relu()
        out = linear_after_reduce(current_table(RAW, x), src, self.aggr, self.lin_l)
        if self.lin_r is not None:
            out = out + self.lin_r(x)
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return out


#: PyG layer -> its table lowering (exact classes: a subclass may change the message).
#: :data:`.tabulate.TABLE_CONVS` joins these and :data:`.table_attention.ATTENTION_CONVS`.
MESSAGE_CONVS: dict[type, type[TableConv]] = {
    GCNConv: TableGCNConv,
    GraphConv: TableGraphConv,
    GINConv: TableGINConv,
    GINEConv: TableGINEConv,
    SAGEConv: TableSAGEConv,
}

__all__ = [
    "MESSAGE_CONVS",
    "NEIGHBOUR_AGGRS",
    "TableConv",
    "TableGCNConv",
    "TableGINConv",
    "TableGINEConv",
    "TableGraphConv",
    "TableSAGEConv",
]
