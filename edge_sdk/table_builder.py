"""Degree-bucketed neighbour tables (ELL): the vectorised host-side builder.

See :mod:`edge_sdk.neighbour_tables` for what the tables are and how an artifact
takes them; this module builds one table from edges (numpy only, no Python loop
over nodes or edges) and bounds a bucket's class capacities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    edge_index: np.ndarray, num_nodes: int, variant: str, num_edges: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources, targets and edge ids of ``edge_index`` after the variant's self loops.

    ``loops`` mirrors PyG's ``remove_self_loops`` + ``add_self_loops`` (GAT) and,
    for unweighted graphs, ``add_remaining_self_loops`` (GCN): every node ends with
    exactly one self loop, whose edge id is ``E + node``.

    Args:
        edge_index: ``[2, E]`` edges.
        num_nodes: Nodes (self loops are added to all of them).
        variant: One of :data:`VARIANTS`.
        num_edges: ``E`` of the self loops' ids: the rows of the ``edge_attr`` the
            model gets (a bucket's ``max_edges`` when it is padded); default ``E``.
    """
    src = np.asarray(edge_index[0], np.int64)
    dst = np.asarray(edge_index[1], np.int64)
    eid = np.arange(src.size, dtype=np.int64)
    if variant == LOOPS:
        keep = src != dst
        nodes = np.arange(num_nodes, dtype=np.int64)
        src = np.concatenate([src[keep], nodes])
        dst = np.concatenate([dst[keep], nodes])
        first_loop = edge_index.shape[1] if num_edges is None else num_edges
        eid = np.concatenate([eid[keep], nodes + first_loop])
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
    fixed_splits: bool = True,
    order_mask: bool | None = None,
) -> NeighbourTable:
    """Build one neighbour table from edges ``src -> dst``.

    Args:
        src: ``[E]`` source node of each edge.
        dst: ``[E]`` target node of each edge.
        num_nodes: Nodes ``N`` (rows of ``order``); ids must be in ``[0, N)``.
        widths: Class widths, ascending powers of two (:func:`widths_up_to`).
        eid: ``[E]`` edge ids to record per slot (for ``edge_attr``), or ``None``.
        max_splits: Most rows per node (the in-degree limit is ``widths[-1] * max_splits``);
            ``None``: no limit.
        capacity: Fixed rows per class for static shapes; ``None``: as many as needed.
        index_dtype: Integer dtype of ``index``/``target``/``order``/``edge``.
        fixed_splits: ``order`` has exactly ``max_splits`` columns (static shapes);
            False: as many as the graph needs (engines taking any shape).
        order_mask: Whether to return ``order_mask``; ``None``: when ``S > 1``.

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
        if fixed_splits:
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
    # One flat buffer of every class's [R_c, K_c] block, back to back (no padding to the
    # widest class: a bucket's narrow classes hold most rows), cut into classes at the end.
    k_arr = np.asarray(widths, np.int64)
    block = np.concatenate([[0], np.cumsum(counts * k_arr)])
    row_class = np.repeat(np.arange(len(widths)), counts)
    row_width = k_arr[row_class]
    row_start = block[row_class] + (np.arange(total) - base[row_class]) * row_width
    pos = row_start[row] + slot
    slots = int(block[-1])
    flat = np.full(slots, -1, np.int64)
    flat[pos] = src[edge_order]
    mask = np.zeros(slots, np.float32)
    mask[pos] = 1.0
    # Padding slots repeat their row's first slot (a real one, or node/edge 0 if none).
    first_of_slot = np.repeat(row_start, row_width)
    first = flat[first_of_slot]
    index = np.where(flat >= 0, flat, np.maximum(first, 0))
    edge = None
    if eid is not None:
        edge = np.full(slots, -1, np.int64)
        edge[pos] = eid[edge_order]
        edge = np.where(edge >= 0, edge, np.maximum(edge[first_of_slot], 0))
    target = np.zeros(total, np.int64)
    node_rows = first_row[:, None] + np.arange(s)[None, :]
    valid = np.arange(s)[None, :] < rows_per_node[:, None]
    order = np.where(valid, node_rows, first_row[:, None])
    target[order[valid]] = np.nonzero(valid)[0]
    with_mask = s > 1 if order_mask is None else order_mask
    spans = list(zip(block[:-1].tolist(), block[1:].tolist(), widths, strict=True))
    rows = list(zip(base.tolist(), np.cumsum(counts).tolist(), strict=True))

    def cut(a: np.ndarray, dtype: type) -> list[np.ndarray]:
        return [a[b:t].reshape(-1, k).astype(dtype, copy=False) for b, t, k in spans]

    table = NeighbourTable(
        index=cut(index, index_dtype),
        mask=cut(mask, np.float32),
        target=[target[b:t].astype(index_dtype) for b, t in rows],
        edge=None if edge is None else cut(edge, index_dtype),
        order=order.astype(index_dtype),
        order_mask=valid.astype(np.float32) if with_mask else None,
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
