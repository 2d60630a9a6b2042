"""Packing graphs for an engine: padding to buckets and disjoint-union batching,
with exact inverses.

Pure array work on graphs; deciding *which* requests share a batch is
:mod:`edge_sdk.serving.batcher`'s job.

Padding never changes a real node's result: padded nodes are isolated from
real nodes (padding edges join padding nodes only) and, for readout models,
belong to an extra graph id whose row is dropped. That holds for every
message-passing layer (sum, mean, max, attention) and for per-node norms,
so ``unpad(model(pad(g))) == model(g)``. A model taking neighbour tables
needs no padding edge at all (:func:`table_feeds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .graph import DynamicGraph, StaticGraph
from .io_contract import Bucket, GraphSpec, OutputLevel
from .neighbour_tables import request_tables


@dataclass(frozen=True)
class Padding:
    """What :func:`pad_graph` added, so outputs can be cut back.

    Attributes:
        num_nodes: Real node count.
        num_edges: Real edge count.
        num_graphs: Real graph count.
        node_mask: ``[N_bucket]`` True for real nodes.
        edge_mask: ``[E_bucket]`` True for real edges.
    """

    num_nodes: int
    num_edges: int
    num_graphs: int
    node_mask: np.ndarray
    edge_mask: np.ndarray


def fits(graph: DynamicGraph, bucket: Bucket, has_batch: bool, tables: bool = False) -> bool:
    """Whether ``graph`` can be padded into ``bucket``.

    A model taking ``edge_index`` needs one padding node (padding edges point at it)
    and, with ``batch``, one padding graph; a model taking neighbour tables
    (``tables``) needs neither: padding nodes have no edges and belong to no graph.
    """
    return fits_sizes(graph.num_nodes, graph.num_edges, graph.num_graphs, bucket, has_batch, tables)


def fits_sizes(
    n: int, e: int, graphs: int, bucket: Bucket, has_batch: bool, tables: bool = False
) -> bool:
    """:func:`fits` for a graph of ``n`` nodes, ``e`` edges and ``graphs`` graphs (a
    disjoint union's are its parts' sums: no need to merge them to know)."""
    if tables:
        # Without a batch input, a disjoint union of requests is one larger graph to the
        # model (node-level outputs; graph-level ones are never merged, see
        # Runtime.infer_validated): only nodes and edges bound it, not its graph count.
        return (
            n <= bucket.max_nodes
            and e <= bucket.max_edges
            and (not has_batch or graphs <= bucket.max_graphs)
        )
    # Padding edges need a padding node to point at.
    need_nodes = n + (1 if e < bucket.max_edges else 0)
    if need_nodes > bucket.max_nodes or e > bucket.max_edges:
        return False
    if has_batch:
        # Padding nodes form one extra graph whose readout row is dropped.
        padding_graph = 1 if bucket.max_nodes > n else 0
        return graphs + padding_graph <= bucket.max_graphs
    return True


def pick_bucket(
    graph: DynamicGraph, buckets: Sequence[Bucket], has_batch: bool, tables: bool = False
) -> Bucket:
    """Return the smallest bucket ``graph`` fits in (see :func:`fits`).

    Raises:
        InvalidInputError: No bucket is large enough (names nodes/edges/graphs).
    """
    for bucket in buckets:
        if fits(graph, bucket, has_batch, tables):
            return bucket
    largest = buckets[-1] if buckets else None
    raise InvalidInputError(
        "x",
        f"graph with {graph.num_nodes} nodes, {graph.num_edges} edges and "
        f"{graph.num_graphs} graph(s) fits no bucket; largest is {largest}"
        + ("" if tables else " (one node and one graph slot are reserved for padding)"),
    )


def pad_graph(
    graph: DynamicGraph, bucket: Bucket, has_batch: bool, graph_level_outputs: bool = False
) -> tuple[DynamicGraph, Padding]:
    """Pad a dynamic graph to exactly the bucket's sizes.

    Args:
        graph: A validated graph.
        bucket: Target sizes (see :func:`pick_bucket`).
        has_batch: Whether the model takes a ``batch`` vector.
        graph_level_outputs: Whether the model reads out per graph; padding
            is then only exact with a batch vector (padding nodes form their
            own graph).

    Returns:
        The padded graph and the :class:`Padding` to undo it.

    Raises:
        InvalidInputError: The graph does not fit, or padding would change a
            whole-graph readout.
    """
    if not fits(graph, bucket, has_batch):
        raise InvalidInputError("x", f"graph does not fit bucket {bucket}")
    n, e = graph.num_nodes, graph.num_edges
    nb, eb = bucket.max_nodes, bucket.max_edges
    _check_readout_padding(graph_level_outputs, has_batch, nb > n)
    x = _zero_padded(graph.x, nb)
    edge_index = np.full((2, eb), n, np.int64)  # padding edges: first padding node, self loop
    edge_index[:, :e] = graph.edge_index
    edge_attr = None if graph.edge_attr is None else _zero_padded(graph.edge_attr, eb)
    batch = None
    num_graphs = graph.num_graphs
    if has_batch:
        batch = np.full(nb, num_graphs, np.int64)
        batch[:n] = graph.batch if graph.batch is not None else 0
    node_mask = np.zeros(nb, bool)
    node_mask[:n] = True
    edge_mask = np.zeros(eb, bool)
    edge_mask[:e] = True
    padded = DynamicGraph(x=x, edge_index=edge_index, edge_attr=edge_attr, batch=batch)
    return padded, Padding(n, e, num_graphs, node_mask, edge_mask)


def table_feeds(
    graph: DynamicGraph, spec: GraphSpec, static_shapes: bool, graph_level_outputs: bool = False
) -> tuple[dict[str, np.ndarray], Padding | None]:
    """The inputs of a model taking neighbour tables (``spec.tables``) for a validated graph.

    Engines taking any shape get ``x``, ``edge_attr`` and tables sized to the graph.
    Static-shape engines get them padded to the smallest bucket that fits: ``x``
    and ``edge_attr`` with zero rows, the tables with the bucket's fixed class
    capacities (:meth:`~edge_sdk.io_contract.GraphSpec.fixed_shapes`). Padding
    nodes have no edge but their own self loop and belong to no graph, so no real
    result changes and no padding edge is needed.

    Returns:
        The feeds (every table input; the runtime keeps those the artifact takes)
        and the :class:`Padding` to cut outputs back (``None`` when not padded).

    Raises:
        InvalidInputError: A node beyond the in-degree limit (``graph.tables.max_degree``),
            a graph that fits no bucket, or a whole-graph readout without ``batch``
            that padding would change.
    """
    layout = spec.tables
    if layout is None:
        raise ValueError("the model takes no neighbour tables")
    n, e = graph.num_nodes, graph.num_edges
    batch = graph.batch if spec.has_batch else None
    if not static_shapes:
        feeds = {"x": graph.x}
        if graph.edge_attr is not None:
            feeds["edge_attr"] = graph.edge_attr
        tables = request_tables(
            graph.edge_index, n, layout, batch=batch, num_graphs=graph.num_graphs
        )
        return feeds | tables, None
    bucket = pick_bucket(graph, spec.buckets, spec.has_batch, tables=True)
    index = spec.buckets.index(bucket)
    nb, eb = bucket.max_nodes, bucket.max_edges
    _check_readout_padding(graph_level_outputs, spec.has_batch, nb > n)
    feeds = {"x": _zero_padded(graph.x, nb)}
    if graph.edge_attr is not None:
        feeds["edge_attr"] = _zero_padded(graph.edge_attr, eb)
    if batch is None:  # the real nodes are graph 0; the padding ones belong to none
        batch = np.zeros(n, np.int64)
    tables = request_tables(
        graph.edge_index,
        nb,
        layout,
        batch=batch,
        num_graphs=bucket.max_graphs,
        bucket=index,
        num_edges=eb,
    )
    node_mask = np.arange(nb) < n
    padding = Padding(n, e, graph.num_graphs, node_mask, np.arange(eb) < e)
    return feeds | tables, padding


def _check_readout_padding(graph_level_outputs: bool, has_batch: bool, padded: bool) -> None:
    if graph_level_outputs and not has_batch and padded:
        raise InvalidInputError(
            "batch",
            "padding a whole-graph readout without a batch vector would change the result; "
            "export the model with a batch input to use padded buckets",
        )


def _zero_padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` (float32 ``[R, D]``) followed by zero rows up to ``size``."""
    out = np.zeros((size, rows.shape[1]), np.float32)
    out[: rows.shape[0]] = rows
    return out


def unpad_outputs(
    outputs: Mapping[str, np.ndarray], padding: Padding, levels: Mapping[str, OutputLevel]
) -> dict[str, np.ndarray]:
    """Cut padded rows off each output (by its level)."""
    keep = {OutputLevel.NODE: padding.num_nodes, OutputLevel.GRAPH: padding.num_graphs}
    return {
        name: value[: keep[levels[name]]] if levels.get(name) in keep else value
        for name, value in outputs.items()
    }


def pad_static(graph: StaticGraph, batch_size: int) -> StaticGraph:
    """Pad a stacked static batch with zero graphs up to ``batch_size``."""
    b = graph.batch_size
    if b > batch_size:
        raise InvalidInputError("x", f"batch of {b} exceeds the bucket of {batch_size}")
    if b == batch_size:
        return graph
    pad = np.zeros((batch_size - b, *graph.x.shape[1:]), np.float32)
    return StaticGraph(np.concatenate([graph.x, pad]))


def group_for_buckets(
    graphs: Sequence[DynamicGraph], buckets: Sequence[Bucket], has_batch: bool, tables: bool = False
) -> list[list[int]]:
    """Split requests, in order, into groups whose union fits the largest bucket.

    A request that fits no bucket alone gets a group of its own (padding it
    then raises the precise error, for that request only).
    """
    if not buckets:
        return [list(range(len(graphs)))]
    largest = buckets[-1]
    groups: list[list[int]] = []
    n = e = k = 0  # the last group's union so far: nodes, edges, graphs
    for i, g in enumerate(graphs):
        gn, ge, gk = g.num_nodes, g.num_edges, g.num_graphs
        if groups and fits_sizes(n + gn, e + ge, k + gk, largest, has_batch, tables):
            groups[-1].append(i)
            n, e, k = n + gn, e + ge, k + gk
        else:
            groups.append([i])
            n, e, k = gn, ge, gk
    return groups


@dataclass(frozen=True)
class BatchLayout:
    """Per-request sizes of a merged batch, to split results back in order."""

    nodes: tuple[int, ...]
    graphs: tuple[int, ...]


def batch_graphs(graphs: Sequence[DynamicGraph]) -> tuple[DynamicGraph, BatchLayout]:
    """Merge graphs into one disjoint union (node ids and graph ids offset).

    Args:
        graphs: Validated graphs, each possibly already a union of graphs.

    Returns:
        The union (with a batch vector) and the layout to split outputs.

    Raises:
        InvalidInputError: The graphs disagree on having edge features.
    """
    if not graphs:
        raise InvalidInputError("graphs", "empty list: nothing to batch")
    with_attr = {g.edge_attr is not None for g in graphs}
    if len(with_attr) > 1:
        raise InvalidInputError("edge_attr", "some graphs have edge features and some do not")
    node_off = 0
    graph_off = 0
    xs, eis, attrs, batches = [], [], [], []
    for g in graphs:
        xs.append(g.x)
        eis.append(g.edge_index + node_off)
        if g.edge_attr is not None:
            attrs.append(g.edge_attr)
        local = g.batch if g.batch is not None else np.zeros(g.num_nodes, np.int64)
        batches.append(local + graph_off)
        node_off += g.num_nodes
        graph_off += g.num_graphs
    merged = DynamicGraph(
        x=np.concatenate(xs),
        edge_index=np.concatenate(eis, axis=1),
        edge_attr=np.concatenate(attrs) if attrs else None,
        batch=np.concatenate(batches),
    )
    layout = BatchLayout(
        nodes=tuple(g.num_nodes for g in graphs), graphs=tuple(g.num_graphs for g in graphs)
    )
    return merged, layout


def unbatch_outputs(
    outputs: Mapping[str, np.ndarray],
    sizes: Mapping[OutputLevel, Sequence[int]],
    levels: Mapping[str, OutputLevel],
) -> list[dict[str, np.ndarray]]:
    """Split merged outputs back to one dict per request, in order.

    Args:
        outputs: Outputs of the merged call.
        sizes: Rows per request for each output level present.
        levels: Level of each output name.

    Returns:
        One dict of outputs per request.
    """
    counts = {len(v) for v in sizes.values()}
    if len(counts) != 1:
        raise ValueError("sizes of all levels must cover the same requests")
    n_requests = counts.pop()
    result: list[dict[str, np.ndarray]] = [{} for _ in range(n_requests)]
    for name, value in outputs.items():
        level = levels[name]
        bounds = np.cumsum([0, *sizes[level]])
        if bounds[-1] > value.shape[0]:
            raise ValueError(f"output {name!r} has {value.shape[0]} rows, expected {bounds[-1]}")
        for i in range(n_requests):
            result[i][name] = value[bounds[i] : bounds[i + 1]]
    return result
