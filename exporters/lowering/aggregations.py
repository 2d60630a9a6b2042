"""A lowered layer's neighbourhood aggregation: one reduction, or a ``MultiAggregation``.

PyG layers take ``aggr`` as ``sum``/``mean``/``max``/``min`` (a string or the
aggregation module) or as a list of them, a ``MultiAggregation`` whose results
are joined by its ``mode`` (``aggr_kwargs={'mode': ...}``): ``cat`` (PyG's
default; the layer's next ``Linear`` is as many times wider), ``proj`` (the
concatenation through its own ``Linear``) or element-wise over the results
(``sum``, ``mean``, ``max``, ``min``, ``logsumexp``, ``std``, ``var``). ``attn``
(multi-head attention across the results) has no lowering and is refused by
:func:`.common.aggr_names`, naming the layer and the mode.

The dense lowering (:func:`dense_aggregation`) and the table lowering
(:class:`TableAggregation`) compute each named reduction their own way and join
them with the same :class:`Combine`. Tensors stay at most 3-D: the element-wise
modes combine pairwise instead of stacking the results.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn.aggr import Aggregation, MultiAggregation
from torch_geometric.nn.conv import MessagePassing

from .common import NEIGHBOUR_AGGRS, DenseAggregation, LowerContext, aggr_names
from .tables import Table


class Combine(nn.Module):
    """``MultiAggregation.combine`` for inference: joins the per-aggregation results.

    A single aggregation (a plain ``aggr``, or a list of one) passes through.

    Args:
        aggr_module: The layer's ``aggr_module`` (its ``Linear`` is reused for ``proj``).
    """

    def __init__(self, aggr_module: Aggregation) -> None:
        super().__init__()
        multi = isinstance(aggr_module, MultiAggregation) and len(aggr_module.aggrs) > 1
        self.mode = aggr_module.mode if multi else None
        self.lin = aggr_module.lin if self.mode == "proj" else None

    def forward(self, outs: Sequence[Tensor]) -> Tensor:
        """Join ``outs`` (one per aggregation, same shape) as PyG's ``combine`` does."""
        if self.mode is None:
            return outs[0]
        if self.mode in ("cat", "proj"):
            cat = torch.cat(list(outs), dim=-1)
            return cat if self.lin is None else self.lin(cat)
        if self.mode == "max":
            return functools.reduce(torch.maximum, outs)
        if self.mode == "min":
            return functools.reduce(torch.minimum, outs)
        total = functools.reduce(torch.add, outs)
        if self.mode == "sum":
            return total
        mean = total / len(outs)
        if self.mode == "mean":
            return mean
        if self.mode == "logsumexp":
            top = functools.reduce(torch.maximum, outs)
            return top + functools.reduce(torch.add, [(o - top).exp() for o in outs]).log()
        # torch.var / torch.std over the results: unbiased (divided by count - 1).
        var = functools.reduce(torch.add, [(o - mean).square() for o in outs]) / (len(outs) - 1)
        return var if self.mode == "var" else var.sqrt()


class DenseMultiAggregation(nn.Module):
    """Several :class:`.common.DenseAggregation` over one topology, then :class:`Combine`."""

    def __init__(self, reductions: Sequence[DenseAggregation], combine: Combine) -> None:
        super().__init__()
        self.reductions = nn.ModuleList(reductions)
        self.combine = combine

    def forward(self, x: Tensor) -> Tensor:
        """Aggregate ``x [B, N, F]``; returns ``[B, N, F']`` (``F' = A * F`` for ``cat``)."""
        return self.combine([r(x) for r in self.reductions])


def dense_aggregation(
    conv: MessagePassing, ctx: LowerContext, num_nodes: int, weighted: bool = False
) -> nn.Module:
    """The dense lowering of ``conv``'s aggregation over ``ctx``'s topology.

    Args:
        conv: The PyG layer.
        ctx: Its topology, path, dtype and device.
        num_nodes: ``N`` of one graph.
        weighted: Whether the layer scales messages by ``ctx.edge_weight`` (``GraphConv``).

    Returns:
        A :class:`.common.DenseAggregation` for one aggregation, else a
        :class:`DenseMultiAggregation`; either maps ``[B, N, F]`` to ``[B, N, F']``.

    Raises:
        UnsupportedModelError: An aggregation or combine mode without a lowering.
    """
    names = aggr_names(ctx.path, conv, NEIGHBOUR_AGGRS)
    weight = ctx.edge_weight if weighted else None
    reductions = [
        DenseAggregation(ctx.edge_index, num_nodes, weight, name, ctx.dtype, ctx.device)
        for name in names
    ]
    if len(reductions) == 1:
        return reductions[0]
    return DenseMultiAggregation(reductions, Combine(conv.aggr_module))


class TableAggregation(nn.Module):
    """A layer's aggregation over neighbour tables: each reduction, then :class:`Combine`.

    Args:
        path: Dotted path of the layer, for error messages.
        conv: The PyG layer.
        allowed: Aggregations the layer's lowering takes.

    Raises:
        UnsupportedModelError: An aggregation or combine mode without a lowering.
    """

    def __init__(
        self, path: str, conv: MessagePassing, allowed: tuple[str, ...] = NEIGHBOUR_AGGRS
    ) -> None:
        super().__init__()
        self.names = aggr_names(path, conv, allowed)
        self.combine = Combine(conv.aggr_module)

    @property
    def single(self) -> str | None:
        """The one aggregation's name, or ``None`` for a ``MultiAggregation`` of several."""
        return self.names[0] if len(self.names) == 1 else None

    def forward(
        self, table: Table, x: Tensor, slot_weight: Sequence[Tensor] | None = None
    ) -> Tensor:
        """Aggregate ``x [B * N, F]`` over ``table`` (see :meth:`.tables.Table.reduce`)."""
        msgs = [table.slots(x, c) for c in range(len(table.mask))]
        if slot_weight is not None:
            msgs = [m * w for m, w in zip(msgs, slot_weight, strict=True)]
        return self.reduce_slots(table, msgs)

    def reduce_slots(self, table: Table, messages: Sequence[Tensor]) -> Tensor:
        """Aggregate per-slot ``messages`` (see :meth:`.tables.Table.reduce_slots`)."""
        return self.combine([table.reduce_slots(messages, how) for how in self.names])
