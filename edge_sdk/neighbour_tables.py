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
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .table_builder import (
    LOOPS,
    RAW,
    VARIANTS,
    NeighbourTable,
    apply_variant,
    bucket_capacity,
    build_table,
    next_pow2,
    table_input_names,
    widths_up_to,
)

__all__ = [
    "GRAPH_IDS",
    "LOOPS",
    "POOL",
    "RAW",
    "VARIANTS",
    "BucketSize",
    "NeighbourTable",
    "TableLayout",
    "apply_variant",
    "bucket_capacity",
    "build_table",
    "next_pow2",
    "request_tables",
    "table_input_dtype",
    "table_input_names",
    "widths_up_to",
]

#: Prefix of the readout table's inputs (rows are graphs, slots their nodes).
POOL = "pool"
#: The input giving each node's graph id (``[num_nodes]``), for ``TableLayout.graph_ids``.
GRAPH_IDS = f"{POOL}.graph"
#: Default in-degree limit of a dynamic-form artifact (``--max-degree``).
DEFAULT_MAX_DEGREE = 512
#: Widest class of a dynamic-form artifact's node tables (wider rows spill).
DYNAMIC_WIDTH = 64
#: Widest class of the readout table (graphs of more nodes spill over several rows).
POOL_WIDTH = 256


class BucketSize(Protocol):
    """The sizes of a padding bucket (:class:`edge_sdk.io_contract.Bucket`)."""

    @property
    def max_nodes(self) -> int: ...

    @property
    def max_edges(self) -> int: ...

    @property
    def max_graphs(self) -> int: ...


class TableLayout(BaseModel):
    """The fixed shape of an artifact's neighbour tables (the manifest's ``graph.tables``).

    Attributes:
        widths: Class widths, ascending powers of two; the last is the widest row.
        max_splits: Most rows one node may spill over (in-degree limit is
            ``widths[-1] * max_splits``, self loop included for ``loops``); the
            columns of ``order`` on static-shape engines (others get as many as
            the request needs).
        variants: Table variants the model takes (see :data:`VARIANTS`).
        capacities: Rows per class for static-shape engines, per variant in
            :attr:`variants` order, per bucket in the graph contract's order;
            empty for engines that take any number of rows.
        edge_ids: Whether the model also takes per-slot edge ids (``edge_attr``).
        pool_widths: Class widths of the readout table (graphs as rows, their
            nodes as slots), or empty when the model does not pool by ``batch``.
        pool_splits: Columns of the readout table's ``order`` on static-shape
            engines (rows per graph: enough for a graph of a bucket's
            ``max_nodes``); engines taking any shape get as many as the request
            needs, without limit. At least 2 when there is a readout table, so
            ``pool.order_mask`` is an input.
        graph_ids: Whether the model also takes :data:`GRAPH_IDS`, each node's graph
            (``[num_nodes]`` int64; a bucket's padding nodes get 0), to bring per-graph
            statistics back to the nodes (graph-level norms). Implies a readout table.
            Bundles from before it load as ``False``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    widths: list[int] = Field(min_length=1)
    max_splits: int = Field(default=1, ge=1)
    variants: list[str] = Field(default_factory=lambda: [RAW])
    capacities: list[list[list[int]]] = Field(default_factory=list)
    edge_ids: bool = False
    pool_widths: list[int] = Field(default_factory=list)
    pool_splits: int = Field(default=1, ge=1)
    graph_ids: bool = False

    @model_validator(mode="after")
    def _check(self) -> TableLayout:
        for ws in (self.widths, self.pool_widths):
            if ws and ws != widths_up_to(ws[-1]):
                raise ValueError(f"widths must be 1, 2, 4, ... up to a power of two, got {ws}")
        if self.graph_ids and not self.pool_widths:
            raise ValueError("graph_ids needs the readout table (pool_widths)")
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
            names += table_input_names(POOL, len(self.pool_widths), self.pool_splits, False)
        if self.graph_ids:
            names.append(GRAPH_IDS)
        return names

    @classmethod
    def for_model(
        cls,
        variants: Sequence[str],
        *,
        max_degree: int = DEFAULT_MAX_DEGREE,
        edge_ids: bool = False,
        pool: bool = False,
        graph_ids: bool = False,
    ) -> TableLayout:
        """The layout of a dynamic-form model (capacities come with :meth:`with_buckets`).

        Args:
            variants: Table variants the model's layers read.
            max_degree: In-degree limit of a request (self loops included where the
                model adds them): classes up to :data:`DYNAMIC_WIDTH` (or the next
                power of two of a smaller limit), ``ceil(max_degree / width)`` rows per node.
            edge_ids: Whether the layers read ``edge_attr`` by edge id.
            pool: Whether the model reads out per graph of ``batch``.
            graph_ids: Whether the model takes each node's graph id (graph-level
                norms); it gets the readout table too.

        Raises:
            ValueError: ``max_degree`` < 1.
        """
        if max_degree < 1:
            raise ValueError(f"max_degree must be >= 1, got {max_degree}")
        width = min(DYNAMIC_WIDTH, next_pow2(max_degree))
        return cls(
            widths=widths_up_to(width),
            max_splits=-(-max_degree // width),
            variants=list(variants),
            edge_ids=edge_ids,
            pool_widths=widths_up_to(POOL_WIDTH) if pool or graph_ids else [],
            pool_splits=2,
            graph_ids=graph_ids,
        )

    def with_buckets(self, buckets: Sequence[BucketSize]) -> TableLayout:
        """This layout with the fixed class capacities of ``buckets`` (static-shape engines).

        Node tables of the ``loops`` variant hold ``max_edges + max_nodes`` slots (a self
        loop per node); the readout table's rows are the bucket's graphs and its slots
        the nodes, with enough rows per graph for a graph of all ``max_nodes``.
        """
        caps = [
            [
                bucket_capacity(
                    self.widths,
                    b.max_nodes,
                    b.max_edges + (b.max_nodes if v == LOOPS else 0),
                    self.max_splits,
                )
                for b in buckets
            ]
            for v in self.variants
        ]
        pool_splits = self.pool_splits
        if self.pool_widths and buckets:
            kmax = self.pool_widths[-1]
            pool_splits = max(2, *(-(-b.max_nodes // kmax) for b in buckets))
            caps.append(
                [
                    bucket_capacity(self.pool_widths, b.max_graphs, b.max_nodes, pool_splits)
                    for b in buckets
                ]
            )
        return self.model_copy(update={"capacities": caps, "pool_splits": pool_splits})

    def fixed_shapes(
        self, bucket: BucketSize, index: int, num_features: int, edge_dim: int | None = None
    ) -> dict[str, list[int]]:
        """Every model input's fixed shape for bucket ``index`` (static-shape engines).

        Args:
            bucket: The bucket's sizes (``graph.buckets[index]``).
            index: Its index (selects :attr:`capacities`).
            num_features: ``F`` of ``x``.
            edge_dim: ``D`` of ``edge_attr``, or ``None`` when the model takes none.

        Returns:
            ``x``, ``edge_attr`` and the table inputs by name, in model input order
            (dtypes: :func:`table_input_dtype`).

        Raises:
            ValueError: The layout has no capacities for bucket ``index``.
        """
        if not self.capacities or index >= len(self.capacities[0]):
            raise ValueError(
                f"the table layout has no capacities for bucket {index}: export with buckets"
            )
        shapes: dict[str, list[int]] = {"x": [bucket.max_nodes, num_features]}
        if edge_dim is not None:
            shapes["edge_attr"] = [bucket.max_edges, edge_dim]
        for k, variant in enumerate(self.variants):
            caps = self.capacities[k][index]
            shapes |= _table_shapes(
                variant, self.widths, caps, bucket.max_nodes, self.max_splits, self.edge_ids
            )
        if self.pool_widths:
            caps = self.capacities[len(self.variants)][index]
            shapes |= _table_shapes(
                POOL, self.pool_widths, caps, bucket.max_graphs, self.pool_splits, False
            )
        if self.graph_ids:
            shapes[GRAPH_IDS] = [bucket.max_nodes]
        return shapes


def table_input_dtype(name: str) -> str:
    """The numpy dtype name of a table input (``mask``/``order_mask``: float32, else int64)."""
    return "float32" if name.rsplit(".", 1)[-1].startswith(("mask", "order_mask")) else "int64"


def _table_shapes(
    prefix: str, widths: Sequence[int], caps: Sequence[int], rows: int, splits: int, edge: bool
) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for c, (k, cap) in enumerate(zip(widths, caps, strict=True)):
        shapes[f"{prefix}.index{c}"] = [cap, k]
        shapes[f"{prefix}.mask{c}"] = [cap, k]
        shapes[f"{prefix}.target{c}"] = [cap]
        if edge:
            shapes[f"{prefix}.edge{c}"] = [cap, k]
    shapes[f"{prefix}.order"] = [rows, splits]
    if splits > 1:
        shapes[f"{prefix}.order_mask"] = [rows, splits]
    return shapes


def request_tables(
    edge_index: np.ndarray,
    num_nodes: int,
    layout: TableLayout,
    *,
    batch: np.ndarray | None = None,
    num_graphs: int = 1,
    bucket: int | None = None,
    num_edges: int | None = None,
) -> dict[str, np.ndarray]:
    """The table inputs of one request (the contract between runtime and artifact).

    Engines taking any shape get as many rows per class and per node (``order``'s
    columns) as the request needs; a static-shape engine's bucket fixes both
    (``layout.capacities`` and ``layout.max_splits``/``pool_splits``). The degree
    limit (``layout.max_degree``) holds for both, so a request is accepted or refused
    the same way everywhere.

    Args:
        edge_index: ``[2, E]`` int64 edges of the request (real edges only: padding
            nodes need none).
        num_nodes: Nodes of the request (a bucket's ``max_nodes`` when padded).
        layout: The artifact's :class:`TableLayout` (``manifest.graph.tables``).
        batch: Graph id of each of the first ``len(batch)`` nodes, for the readout
            table (``layout.pool_widths``) and :data:`GRAPH_IDS`; later nodes (a
            bucket's padding) belong to no graph. ``None``: every node in graph 0.
        num_graphs: Rows of the readout table (a bucket's ``max_graphs`` when padded).
        bucket: Index of the bucket the request was padded to, for static-shape
            engines (fixed shapes); ``None`` for engines taking any shape.
        num_edges: Rows of the ``edge_attr`` the model gets (a bucket's ``max_edges``
            when padded): the self loops' edge ids start there. Default ``E``.

    Returns:
        Arrays by input name, in :meth:`TableLayout.input_names` order.

    Raises:
        InvalidInputError: The request exceeds the layout's degree or capacity limits.
    """
    fixed = bucket is not None
    feeds: dict[str, np.ndarray] = {}
    for k, variant in enumerate(layout.variants):
        src, dst, eid = apply_variant(edge_index, num_nodes, variant, num_edges)
        table = build_table(
            src,
            dst,
            num_nodes,
            layout.widths,
            eid=eid if layout.edge_ids else None,
            max_splits=layout.max_splits,
            capacity=layout.capacities[k][bucket] if bucket is not None else None,
            fixed_splits=fixed,
            order_mask=layout.max_splits > 1,
        )
        feeds |= table.arrays(variant)
    if layout.pool_widths:
        graph_of = np.zeros(num_nodes, np.int64) if batch is None else np.asarray(batch, np.int64)
        cap = layout.capacities[len(layout.variants)][bucket] if bucket is not None else None
        pool = build_table(
            np.arange(graph_of.size, dtype=np.int64),
            graph_of,
            num_graphs,
            layout.pool_widths,
            max_splits=layout.pool_splits if fixed else None,
            capacity=cap,
            fixed_splits=fixed,
            order_mask=layout.pool_splits > 1,
        )
        feeds |= pool.arrays(POOL)
        if layout.graph_ids:  # padding nodes: graph 0 (any graph; their rows are cut off)
            ids = np.zeros(num_nodes, np.int64)
            ids[: graph_of.size] = graph_of
            feeds[GRAPH_IDS] = ids
    return feeds
