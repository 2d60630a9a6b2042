"""Degree-bucketed neighbour tables (ELL): how aggregation reaches every engine.

A node's incoming edges become one row of a table: ``index[row, slot]`` is a
source node, ``mask[row, slot]`` is 1.0 for a real edge and 0.0 for padding.
Rows are grouped in classes of width ``K`` (powers of two), so padding stays
below 2x the edge count, and a node whose in-degree exceeds the widest class
spills over several rows of that class (``order[node, s]`` lists them; the
model combines them in a second step). Aggregation over a table is
``Gather`` + masked ``ReduceSum``/``ReduceMax``/``Softmax`` over the slot axis,
``Concat`` of the classes and one ``Gather`` back to node order: ops every
engine, NPU and INT8 path runs, unlike ``ScatterElements``.

This module builds tables on the host, vectorised (no Python loop over nodes
or edges). The exporter folds them into static-topology models as constants;
the runtime builds them per request for dynamic graphs and pads them to the
fixed class capacities of a :class:`TableLayout` so static-shape engines
(LiteRT, NPUs, TensorRT profiles) run graphs they never saw.

Padding slots repeat the row's first real source (so ``max``/``min`` need no
mask and no ``-inf`` constant, which INT8 converters choke on); a row with no
edge points at node 0 with mask 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import InvalidInputError

#: Table variants: which self loops the layer's PyG code adds before aggregating.
RAW = "raw"  #: the edges as given (SAGE, GIN, GraphConv, custom sums)
LOOPS = "loops"  #: existing self loops removed, one per node added (GCN, GAT, GATv2)
VARIANTS = (RAW, LOOPS)


def widths_up_to(max_width: int) -> list[int]:
    """Class widths ``1, 2, 4, ...`` up to ``max_width`` (a power of two)."""
    if max_width < 1 or max_width & (max_width - 1):
        raise ValueError(f"max_width must be a power of two >= 1, got {max_width}")
    return [1 << i for i in range(max_width.bit_length())]


def next_pow2(n: int) -> int:
    """Smallest power of two ``>= max(n, 1)``."""
    return 1 << max(0, int(n) - 1).bit_length()


class TableLayout(BaseModel):
    """The fixed shape of an artifact's neighbour tables (the manifest's ``graph.tables``).

    Attributes:
        widths: Class widths, ascending powers of two; the last is the widest row.
        max_splits: Most rows one node may spill over (in-degree limit is
            ``widths[-1] * max_splits``, self loop included for ``loops``).
        variants: Table variants the model takes (see :data:`VARIANTS`).
        capacities: Rows per class for static-shape engines, per variant in
            :attr:`variants` order, per bucket in the graph contract's order;
            empty for engines that take any number of rows.
        edge_ids: Whether the model also takes per-slot edge ids (``edge_attr``).
        pool_widths: Class widths of the readout table (graphs as rows, their
            nodes as slots), or empty when the model does not pool by ``batch``.
        pool_splits: ``max_splits`` of the readout table.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    widths: list[int] = Field(min_length=1)
    max_splits: int = Field(default=1, ge=1)
    variants: list[str] = Field(default_factory=lambda: [RAW])
    capacities: list[list[list[int]]] = Field(default_factory=list)
    edge_ids: bool = False
    pool_widths: list[int] = Field(default_factory=list)
    pool_splits: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TableLayout:
        for ws in (self.widths, self.pool_widths):
            if ws and ws != widths_up_to(ws[-1]):
                raise ValueError(f"widths must be 1, 2, 4, ... up to a power of two, got {ws}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown table variants {sorted(unknown)}; known: {VARIANTS}")
        return self

    @property
    def max_degree(self) -> int:
        """The largest in-degree a request may have (after the variant's self loops)."""
        return self.widths[-1] * self.max_splits

    def input_names(self) -> list[str]:
        """The table inputs of an artifact taking tables, in order."""
        names: list[str] = []
        for v in self.variants:
            names += table_input_names(v, len(self.widths), self.max_splits, self.edge_ids)
        if self.pool_widths:
            names += table_input_names("pool", len(self.pool_widths), self.pool_splits, False)
        return names


def table_input_names(prefix: str, classes: int, splits: int, edge_ids: bool) -> list[str]:
    """Input names of one table: per class index/mask/target(/edge), then order(/order_mask)."""
    names: list[str] = []
    for c in range(classes):
        names += [f"{prefix}.index{c}", f"{prefix}.mask{c}", f"{prefix}.target{c}"]
        if edge_ids:
            names.append(f"{prefix}.edge{c}")
    names.append(f"{prefix}.order")
    if splits > 1:
        names.append(f"{prefix}.order_mask")
    return names


@dataclass
class NeighbourTable:
    """One variant's tables for one graph.

    Attributes:
        index: Per class ``[R_c, K_c]`` source node of each slot.
        mask: Per class ``[R_c, K_c]`` float32, 1.0 on real slots.
        target: Per class ``[R_c]`` the node each row aggregates into (0 on padding rows).
        edge: Per class ``[R_c, K_c]`` edge id of each slot (self loops added by the
            ``loops`` variant get ``E + node``), or ``None`` when not asked for.
        order: ``[N, S]`` rows of each node in the concatenation of the classes;
            a node with fewer than ``S`` rows repeats its first.
        order_mask: ``[N, S]`` float32, 1.0 on a node's real rows (``None`` when S == 1).
        edges: Real slots (edges after the variant's self loops).
    """

    index: list[np.ndarray]
    mask: list[np.ndarray]
    target: list[np.ndarray]
    edge: list[np.ndarray] | None
    order: np.ndarray
    order_mask: np.ndarray | None
    edges: int

    @property
    def slots(self) -> int:
        """Slots in all classes, padding included."""
        return int(sum(i.size for i in self.index))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The table as named model inputs (see :func:`table_input_names`)."""
        out: dict[str, np.ndarray] = {}
        for c, (idx, mask, tgt) in enumerate(zip(self.index, self.mask, self.target, strict=True)):
            out[f"{prefix}.index{c}"] = idx
            out[f"{prefix}.mask{c}"] = mask
            out[f"{prefix}.target{c}"] = tgt
            if self.edge is not None:
                out[f"{prefix}.edge{c}"] = self.edge[c]
        out[f"{prefix}.order"] = self.order
        if self.order_mask is not None:
            out[f"{prefix}.order_mask"] = self.order_mask
        return out


def apply_variant(
    edge_index: np.ndarray, num_nodes: int, variant: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources, targets and edge ids of ``edge_index`` after the variant's self loops.

    ``loops`` mirrors PyG's ``remove_self_loops`` + ``add_self_loops`` (GAT) and,
    for unweighted graphs, ``add_remaining_self_loops`` (GCN): every node ends with
    exactly one self loop, whose edge id is ``E + node``.
    """
    src = np.asarray(edge_index[0], np.int64)
    dst = np.asarray(edge_index[1], np.int64)
    eid = np.arange(src.size, dtype=np.int64)
    if variant == LOOPS:
        keep = src != dst
        nodes = np.arange(num_nodes, dtype=np.int64)
        src = np.concatenate([src[keep], nodes])
        dst = np.concatenate([dst[keep], nodes])
        eid = np.concatenate([eid[keep], nodes + edge_index.shape[1]])
    elif variant != RAW:
        raise ValueError(f"unknown table variant {variant!r}; known: {VARIANTS}")
    return src, dst, eid


def build_table(
    src: np.ndarray,
    dst: np.ndarray,
    num_nodes: int,
    widths: Sequence[int],
    *,
    eid: np.ndarray | None = None,
    max_splits: int | None = None,
    capacity: Sequence[int] | None = None,
    index_dtype: type = np.int64,
) -> NeighbourTable:
    """Build one neighbour table from edges ``src -> dst``.

    Args:
        src: ``[E]`` source node of each edge.
        dst: ``[E]`` target node of each edge.
        num_nodes: Nodes ``N`` (rows of ``order``); ids must be in ``[0, N)``.
        widths: Class widths, ascending powers of two (:func:`widths_up_to`).
        eid: ``[E]`` edge ids to record per slot (for ``edge_attr``), or ``None``.
        max_splits: Fixed ``S`` (rows per node) for static shapes; ``None``: as many
            as the graph needs.
        capacity: Fixed rows per class for static shapes; ``None``: as many as needed.
        index_dtype: Integer dtype of ``index``/``target``/``order``/``edge``.

    Returns:
        The table.

    Raises:
        InvalidInputError: A node's in-degree exceeds ``widths[-1] * max_splits``,
            or a class holds more rows than ``capacity`` allows (field ``edge_index``).
    """
    widths = list(widths)
    kmax = widths[-1]
    e = int(src.size)
    deg = np.bincount(dst, minlength=num_nodes)[:num_nodes] if e else np.zeros(num_nodes, int)
    rows_per_node = np.maximum(1, -(-deg // kmax))
    s = int(rows_per_node.max()) if num_nodes else 1
    if max_splits is not None:
        if s > max_splits:
            worst = int(np.argmax(deg))
            raise InvalidInputError(
                "edge_index",
                f"node {worst} has {int(deg[worst])} incoming edges (self loops included "
                f"where the model adds them); this artifact's neighbour tables hold at most "
                f"{kmax * max_splits} per node (graph.tables.max_degree); re-export with a "
                f"larger --max-degree",
            )
        s = max_splits
    # Class of each node: the narrowest width that holds its degree (spilled nodes: widest).
    cls = np.searchsorted(np.asarray(widths), np.minimum(deg, kmax))
    counts = np.bincount(cls, weights=rows_per_node, minlength=len(widths)).astype(np.int64)
    if capacity is not None:
        over = np.nonzero(counts > np.asarray(capacity))[0]
        if over.size:
            c = int(over[0])
            raise InvalidInputError(
                "edge_index",
                f"the graph needs {int(counts[c])} rows of width {widths[c]} (nodes with "
                f"{widths[c] // 2 + 1}..{widths[c]} incoming edges) but this artifact's "
                f"bucket holds {capacity[c]}; send a smaller or sparser graph, or re-export "
                f"with larger buckets",
            )
        counts = np.asarray(capacity, np.int64)
    base = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # First row of each node: nodes sorted by class, each taking rows_per_node rows.
    by_class = np.argsort(cls, kind="stable")
    rows_sorted = rows_per_node[by_class]
    start_in_class = np.cumsum(rows_sorted) - rows_sorted
    cls_sorted = cls[by_class]
    class_first = np.zeros(len(widths), np.int64)
    present = np.nonzero(np.bincount(cls_sorted, minlength=len(widths)))[0]
    firsts = np.searchsorted(cls_sorted, present)
    class_first[present] = start_in_class[firsts]
    first_row = np.empty(num_nodes, np.int64)
    first_row[by_class] = base[cls_sorted] + start_in_class - class_first[cls_sorted]
    # Each edge's row and slot.
    edge_order = np.argsort(dst, kind="stable")
    d_sorted = dst[edge_order]
    edge_start = np.concatenate([[0], np.cumsum(deg)[:-1]]) if num_nodes else np.zeros(0, int)
    j = np.arange(e) - edge_start[d_sorted]
    row = first_row[d_sorted] + j // kmax
    slot = j % kmax
    total = int(counts.sum())
    # Fill one flat [total, kmax] buffer, then cut per class (narrow classes use slots < K).
    index = np.full((total, kmax), -1, np.int64)
    index[row, slot] = src[edge_order]
    mask = np.zeros((total, kmax), np.float32)
    mask[row, slot] = 1.0
    edge = None
    if eid is not None:
        edge = np.zeros((total, kmax), np.int64)
        edge[row, slot] = eid[edge_order]
        edge = np.where(mask > 0, edge, edge[:, :1])
    first = index[:, :1]
    index = np.where(index >= 0, index, np.where(first >= 0, first, 0))
    target = np.zeros(total, np.int64)
    node_rows = first_row[:, None] + np.arange(s)[None, :]
    valid = np.arange(s)[None, :] < rows_per_node[:, None]
    order = np.where(valid, node_rows, first_row[:, None])
    target[order[valid]] = np.nonzero(valid)[0]
    spans = list(zip(base.tolist(), np.cumsum(counts).tolist(), widths, strict=True))
    table = NeighbourTable(
        index=[index[b:t, :k].astype(index_dtype) for b, t, k in spans],
        mask=[mask[b:t, :k] for b, t, k in spans],
        target=[target[b:t].astype(index_dtype) for b, t, _ in spans],
        edge=None if edge is None else [edge[b:t, :k].astype(index_dtype) for b, t, k in spans],
        order=order.astype(index_dtype),
        order_mask=valid.astype(np.float32) if s > 1 else None,
        edges=e,
    )
    return table


def bucket_capacity(
    widths: Sequence[int], max_nodes: int, max_edges: int, max_splits: int
) -> list[int]:
    """Rows per class that any graph of ``max_nodes`` nodes and ``max_edges`` edges fits.

    A class of width ``K > 1`` holds nodes of in-degree ``K/2+1 .. K``, so at most
    ``max_edges // (K/2+1)`` of them; the widest class also takes the spill-over rows.
    """
    caps = []
    kmax = widths[-1]
    for k in widths:
        lo = 0 if k == 1 else k // 2 + 1
        cap = max_nodes if lo == 0 else min(max_nodes, max_edges // lo)
        if k == kmax:
            cap = min(max_nodes * max_splits, cap + max_edges // kmax)
        caps.append(max(1, cap))
    return caps


def request_tables(
    edge_index: np.ndarray,
    num_nodes: int,
    layout: TableLayout,
    *,
    batch: np.ndarray | None = None,
    num_graphs: int = 1,
    bucket: int | None = None,
) -> dict[str, np.ndarray]:
    """The table inputs of one request (the contract between runtime and artifact).

    Args:
        edge_index: ``[2, E]`` int64 edges of the (already padded) request.
        num_nodes: Nodes of the request (padding nodes included).
        layout: The artifact's :class:`TableLayout` (``manifest.graph.tables``).
        batch: ``[N]`` graph id per node, for the readout table (``layout.pool_widths``).
        num_graphs: Graphs in the request (padding graph included).
        bucket: Index of the bucket the request was padded to, for static-shape
            engines (fixed class capacities); ``None`` for engines taking any shape.

    Returns:
        Arrays by input name, in :meth:`TableLayout.input_names` order.

    Raises:
        InvalidInputError: The request exceeds the layout's degree or capacity limits.
    """
    feeds: dict[str, np.ndarray] = {}
    for k, variant in enumerate(layout.variants):
        src, dst, eid = apply_variant(edge_index, num_nodes, variant)
        cap = layout.capacities[k][bucket] if bucket is not None else None
        table = build_table(
            src,
            dst,
            num_nodes,
            layout.widths,
            eid=eid if layout.edge_ids else None,
            max_splits=layout.max_splits,
            capacity=cap,
        )
        feeds |= table.arrays(variant)
    if layout.pool_widths:
        nodes = np.arange(num_nodes, dtype=np.int64)
        graph_of = np.zeros(num_nodes, np.int64) if batch is None else np.asarray(batch, np.int64)
        cap = None
        if bucket is not None:
            cap = layout.capacities[len(layout.variants)][bucket]
        pool = build_table(
            nodes,
            graph_of,
            num_graphs,
            layout.pool_widths,
            max_splits=layout.pool_splits,
            capacity=cap,
        )
        feeds |= pool.arrays("pool")
    return feeds
