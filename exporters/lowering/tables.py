"""Aggregation over neighbour tables (degree-bucketed ELL) in PyTorch, for export.

The tables themselves are built on the host by :mod:`edge_sdk.neighbour_tables`;
this module holds what the exported model does with them: ``Gather`` the
slots, reduce over the slot axis per class, ``Concat`` the classes and gather
back to node order (combining the rows of nodes that spill over several).

Lowered layers do not take the tables as arguments (they are called by the
user's own ``forward`` with ``(x, edge_index)``): the wrapper makes them
current for the duration of one forward with :func:`use_tables`, either as
constants (static topology, :class:`ConstantTables`) or as model inputs
(dynamic graphs, :class:`InputTables`). Every layer works on the flat node
features ``[B * N, F]``; constants of one graph are offset per stacked graph
with ``B`` kept symbolic.

Only ``Gather``, elementwise ops, reductions, ``Concat``, ``Reshape`` and
``MatMul`` appear, tensors stay at most 3-D (converters read 4-D as images),
and padding is masked by multiplication, never by ``-inf`` or ``Where``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from edge_sdk.errors import ExportError
from edge_sdk.neighbour_tables import NeighbourTable, table_input_names


@dataclass
class Table:
    """One variant's tables as tensors, already expanded to the ``B`` stacked graphs.

    Attributes:
        index: Per class ``[B * R_c, K_c]`` rows into the flat ``[B * N, F]`` features.
        mask: Per class ``[B * R_c, K_c]`` 1.0 on real slots.
        target: Per class ``[B * R_c]`` the node each row aggregates into.
        edge: Per class ``[B * R_c, K_c]`` edge ids within each graph (stacked graphs
            repeat graph 0's; :meth:`edge_slots` offsets them), or ``None``.
        order: ``[B * N, S]`` rows of each node in the flat concatenation of the classes.
        order_mask: ``[B * N, S]`` 1.0 on a node's real rows, ``None`` when ``S == 1``.
        graphs: ``B`` (1 for dynamic graphs).
    """

    index: list[Tensor]
    mask: list[Tensor]
    target: list[Tensor]
    edge: list[Tensor] | None
    order: Tensor
    order_mask: Tensor | None
    graphs: int | torch.SymInt

    def slots(self, x: Tensor, c: int) -> Tensor:
        """``x[index_c]`` as ``[B * R_c, K_c, F]``."""
        idx = self.index[c]
        return x.index_select(0, idx.reshape(-1)).reshape(idx.shape[0], idx.shape[1], x.shape[1])

    def edge_slots(self, edges: Tensor, loops: Tensor | None = None) -> list[Tensor]:
        """Per-edge values at each slot's edge id: per class ``[B * R_c, K_c, F]``.

        Args:
            edges: ``[B * E, F]`` one row per edge of each stacked graph, in
                ``edge_index`` order (padding edges included).
            loops: ``[B * N, F]`` values of the self loops the ``loops`` variant adds
                (edge id ``E + node``), or ``None`` for the ``raw`` variant.

        Raises:
            ExportError: The tables carry no edge ids (``TableLayout.edge_ids``).
        """
        if self.edge is None:
            raise ExportError(
                "this layer reads per-edge values (edge_attr / edge_weight) but the "
                "neighbour tables carry no edge ids; build them with edge ids "
                "(TableLayout.edge_ids=True)"
            )
        b, feat = self.graphs, edges.shape[-1]
        single = isinstance(b, int) and b == 1
        # Per graph: its edges, its loops, one zero row (the id padding rows of a
        # graph without edges point at), so every id is in range.
        parts = [edges.reshape(b, edges.shape[0] // b, feat)]
        if loops is not None:
            parts.append(loops.reshape(b, loops.shape[0] // b, feat))
        parts.append(edges.new_zeros(1, 1, feat).expand(b, 1, feat))
        ext = torch.cat(parts, dim=1)
        per = ext.shape[1]
        ext = ext.reshape(-1, feat)
        out = []
        for ids in self.edge:
            if not single:  # graph g's ids index its own block of ext
                k = ids.shape[1]
                graphs = cast(int, b)  # a SymInt under export: stays symbolic
                graph = torch.arange(graphs, device=ids.device).view(-1, 1, 1) * per
                ids = (ids.reshape(b, ids.shape[0] // b, k) + graph).reshape(-1, k)
            out.append(ext.index_select(0, ids.reshape(-1)).reshape(*ids.shape, feat))
        return out

    def rows(self, v: Tensor, c: int) -> Tensor:
        """Per-node values ``v [B * N, F]`` at each row's target node: ``[B * R_c, F]``."""
        return v.index_select(0, self.target[c])

    def to_nodes(self, rows: Sequence[Tensor], how: str = "sum") -> Tensor:
        """Combine per-class row results ``[B * R_c, F]`` into node order ``[B * N, F]``.

        Args:
            rows: One result per class.
            how: ``sum`` (spilled rows add up), ``max`` or ``min``.
        """
        b = self.graphs
        feat = rows[0].shape[-1]
        if isinstance(b, int) and b == 1:
            cat = torch.cat(list(rows), dim=0)
        else:  # class blocks per graph: [B, R_c, F] side by side, then flat
            cat = torch.cat([r.reshape(b, -1, feat) for r in rows], dim=1).reshape(-1, feat)
        if self.order_mask is None:  # one row per node (decided by the layout, not a shape)
            return cat.index_select(0, self.order.reshape(-1))
        got = cat.index_select(0, self.order.reshape(-1)).reshape(-1, self.order.shape[1], feat)
        if how == "sum":
            return (got * self.order_mask.unsqueeze(-1)).sum(dim=1)
        return got.amax(dim=1) if how == "max" else got.amin(dim=1)

    def degree(self) -> Tensor:
        """In-degree of every node (real slots), ``[B * N, 1]``."""
        return self.to_nodes([m.sum(dim=1, keepdim=True) for m in self.mask])

    def reduce(self, x: Tensor, how: str, slot_weight: Sequence[Tensor] | None = None) -> Tensor:
        """Aggregate ``x [B * N, F]`` over incoming edges like PyG's scatter reductions.

        Args:
            x: Source features.
            how: ``sum``, ``mean``, ``max`` or ``min``; a node without incoming
                edges gets 0, as in PyG.
            slot_weight: Optional per-class ``[B * R_c, K_c, 1 or F]`` message weights
                (``sum``/``mean``: multiplied in; ``max``/``min``: applied before reducing).

        Returns:
            ``[B * N, F]``.
        """
        msgs = [self.slots(x, c) for c in range(len(self.mask))]
        if slot_weight is not None:
            msgs = [m * w for m, w in zip(msgs, slot_weight, strict=True)]
        return self.reduce_slots(msgs, how)

    def reduce_slots(self, messages: Sequence[Tensor], how: str) -> Tensor:
        """Aggregate per-slot messages (per class ``[B * R_c, K_c, F]``) into nodes.

        Padding slots must hold a copy of a real slot of their row (as gathers by
        ``index`` and :meth:`edge_slots` do) for ``max``/``min``; ``sum``/``mean``
        mask them. A node without incoming edges gets 0, as in PyG.

        Returns:
            ``[B * N, F]``.
        """
        out: list[Tensor] = []
        for msg, mask in zip(messages, self.mask, strict=True):
            if how in ("sum", "mean"):
                out.append((msg * mask.unsqueeze(-1)).sum(dim=1))
            elif how == "max":
                out.append(msg.amax(dim=1))
            elif how == "min":
                out.append(msg.amin(dim=1))
            else:
                raise ExportError(f"no neighbour-table reduction {how!r}")
        if how in ("sum", "mean"):
            total = self.to_nodes(out, "sum")
            return total / self.degree().clamp(min=1.0) if how == "mean" else total
        return self.to_nodes(out, how) * (self.degree() > 0).to(messages[0].dtype)

    def softmax(self, logits: Sequence[Tensor], messages: Sequence[Tensor], heads: int) -> Tensor:
        """Attention: softmax of ``logits`` over each node's incoming slots, weighting ``messages``.

        Exact with spilled rows: each row keeps its shift, sum and weighted sum; the
        node combines them rescaled to the largest shift. The shift is the row's
        largest score, found without a mask because padding slots must copy a real
        slot of their row (as gathers by ``index`` and :meth:`edge_slots` do): exact
        however negative the scores (a masked max would take a padding 0 instead, and
        ``exp`` of scores below about -87 relative to it underflows to 0).

        Args:
            logits: Per class ``[B * R_c, K_c, H]`` scores, padding slots copying a
                real slot of their row.
            messages: Per class ``[B * R_c, K_c, H * C]`` source features.
            heads: ``H``.

        Returns:
            ``[B * N, H * C]`` (rows without edges get 0).
        """
        shifts, sums, wsums = [], [], []
        for c, mask in enumerate(self.mask):
            m = mask.unsqueeze(-1)
            shift = logits[c].amax(dim=1, keepdim=True)  # [R, 1, H]
            w = torch.exp((logits[c] - shift).clamp(max=0.0)) * m  # [R, K, H]
            shifts.append(shift.squeeze(1))
            sums.append(w.sum(dim=1))
            wsums.append((expand_heads(w, messages[c].shape[-1], heads) * messages[c]).sum(dim=1))
        tiny = torch.finfo(logits[0].dtype).tiny
        if self.order_mask is None:
            total = self.to_nodes(sums)
            out = self.to_nodes(wsums)
            return out / expand_heads(total.clamp(min=tiny), out.shape[-1], heads)
        top = self.to_nodes(shifts, "max")  # [BN, H]
        scaled_sums, scaled_wsums = [], []
        for c in range(len(self.mask)):
            # [R, H], <= 1; clamped for a bucket's padding rows, which no node reads
            f = torch.exp((shifts[c] - self.rows(top, c)).clamp(max=0.0))
            scaled_sums.append(sums[c] * f)
            scaled_wsums.append(wsums[c] * expand_heads(f, wsums[c].shape[-1], heads))
        total = self.to_nodes(scaled_sums)
        out = self.to_nodes(scaled_wsums)
        return out / expand_heads(total.clamp(min=tiny), out.shape[-1], heads)


def expand_heads(w: Tensor, width: int, heads: int) -> Tensor:
    """Repeat each of ``heads`` columns ``width // heads`` times (``[..., H] -> [..., H * C]``).

    A ``MatMul`` with a constant 0/1 matrix instead of a 4-D reshape/broadcast, which
    image-minded converters would transpose.
    """
    if heads == 1:
        return w
    per = width // heads
    spread = torch.repeat_interleave(torch.eye(heads, dtype=w.dtype, device=w.device), per, dim=1)
    return torch.matmul(w, spread)


class TableSource(nn.Module, abc.ABC):
    """Where the current forward's tables come from."""

    @abc.abstractmethod
    def table(self, variant: str, x: Tensor) -> Table:
        """The tables of ``variant`` for the features ``x [B * N, F]``."""


#: Most graphs one request of the static form stacks (``GraphSpec.max_batch``'s default).
MAX_STACKED = 4096


class ConstantTables(TableSource):
    """Tables of one fixed graph, stored as buffers and offset per stacked graph.

    Args:
        tables: Per variant (``"pool"`` for the readout), the host-built table.
        num_nodes: ``N`` of the fixed graph.
    """

    def __init__(self, tables: dict[str, NeighbourTable], num_nodes: int) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.variants = {v: _safe(v) for v in tables}
        self.splits = {v: t.order.shape[1] for v, t in tables.items()}
        self.classes = {v: len(t.index) for v, t in tables.items()}
        self.rows_total = {v: sum(i.shape[0] for i in t.index) for v, t in tables.items()}
        # Ids are offset per stacked graph in their own dtype: int32 only while the ids
        # of MAX_STACKED graphs still fit.
        self.span = MAX_STACKED * max(num_nodes, *self.rows_total.values(), 1)
        for variant, t in tables.items():
            for name, arr in t.arrays(_safe(variant)).items():
                # 0/1 masks as uint8 and ids as int32: a quarter and half the bytes in the
                # artifact; cast only after tiling (a cast of a constant would be folded back).
                dtype = torch.uint8 if arr.dtype.kind == "f" else _index_dtype(arr, self.span)
                self.register_buffer(name.replace(".", "_"), torch.from_numpy(arr).to(dtype))

    def table(self, variant: str, x: Tensor) -> Table:
        if variant not in self.variants:
            raise ExportError(f"no {variant!r} neighbour table was built for this model")
        p, n = self.variants[variant], self.num_nodes
        b = x.shape[0] // n

        def buf(name: str) -> Tensor:
            return getattr(self, f"{p}_{name}")

        def tile(t: Tensor) -> Tensor:  # [R, K] constant -> [B * R, K]
            return t.unsqueeze(0).expand(b, *t.shape).reshape(-1, *t.shape[1:])

        def weights(t: Tensor) -> Tensor:  # uint8 0/1 constant -> [B * R, K] in x's dtype
            return tile(t).to(x.dtype)

        def offset(t: Tensor, step: int) -> Tensor:  # ids of graph 0 -> ids of every graph
            # In the ids' own dtype (int32 mostly: Gather takes it), so the exporter folds
            # no int64 copy of the table into the artifact.
            graphs = torch.arange(b, device=x.device, dtype=t.dtype)
            shape = (-1,) + (1,) * t.dim()
            return (t.unsqueeze(0) + (graphs * step).view(shape)).reshape(-1, *t.shape[1:])

        classes = range(self.classes[variant])
        edge = None
        if hasattr(self, f"{p}_edge0"):
            edge = [tile(buf(f"edge{c}")).long() for c in classes]
        order_mask = buf("order_mask") if self.splits[variant] > 1 else None
        return Table(
            index=[offset(buf(f"index{c}"), n) for c in classes],
            mask=[weights(buf(f"mask{c}")) for c in classes],
            target=[offset(buf(f"target{c}"), n).reshape(-1) for c in classes],
            edge=edge,
            order=offset(buf("order"), self.rows_total[variant]),
            order_mask=None if order_mask is None else weights(order_mask),
            graphs=b,
        )


class InputTables(TableSource):
    """Tables fed as model inputs (dynamic graphs: built per request on the host).

    Args:
        feeds: The table inputs by name (see :func:`edge_sdk.neighbour_tables.table_input_names`).
        layout: Per variant: (classes, splits, has edge ids).
    """

    def __init__(self, feeds: dict[str, Tensor], layout: dict[str, tuple[int, int, bool]]) -> None:
        super().__init__()
        self.feeds = feeds
        self.layout = layout

    def table(self, variant: str, x: Tensor) -> Table:
        if variant not in self.layout:
            raise ExportError(f"no {variant!r} neighbour table is an input of this model")
        classes, splits, edge_ids = self.layout[variant]
        f = self.feeds
        r = range(classes)
        return Table(
            index=[f[f"{variant}.index{c}"].long() for c in r],
            mask=[f[f"{variant}.mask{c}"] for c in r],
            target=[f[f"{variant}.target{c}"].long() for c in r],
            edge=[f[f"{variant}.edge{c}"].long() for c in r] if edge_ids else None,
            order=f[f"{variant}.order"].long(),
            order_mask=f.get(f"{variant}.order_mask") if splits > 1 else None,
            graphs=1,
        )

    @staticmethod
    def names(layout: dict[str, tuple[int, int, bool]]) -> list[str]:
        """Input names for ``layout``, in order."""
        out: list[str] = []
        for v, (classes, splits, edge_ids) in layout.items():
            out += table_input_names(v, classes, splits, edge_ids)
        return out


_CURRENT: ContextVar[TableSource | None] = ContextVar("edge_sdk_tables", default=None)


@contextmanager
def use_tables(source: TableSource) -> Iterator[None]:
    """Make ``source`` the tables of lowered layers called inside the block."""
    token = _CURRENT.set(source)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_table(variant: str, x: Tensor) -> Table:
    """The current forward's ``variant`` table for features ``x``.

    Raises:
        ExportError: A table-lowered layer called outside :func:`use_tables`.
    """
    source = _CURRENT.get()
    if source is None:
        raise ExportError(
            "a neighbour-table layer ran without tables: call it inside the export wrapper"
        )
    return source.table(variant, x)


def _safe(variant: str) -> str:
    return variant.replace(".", "_")


def _index_dtype(arr: np.ndarray, span: int = 0) -> torch.dtype:
    """int32 where the ids (and ``span``, their largest offset value) fit: half the bytes."""
    top = max(span, int(arr.max()) if arr.size else 0)
    return torch.int32 if top < 2**31 - 1 else torch.int64
