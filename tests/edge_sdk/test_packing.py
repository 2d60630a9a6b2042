"""Pure-numpy tests of bucket padding and disjoint-union batching (``edge_sdk.packing``)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk import (
    Bucket,
    DynamicGraph,
    GraphSpec,
    InvalidInputError,
    OutputLevel,
    StaticGraph,
    as_graph,
)
from edge_sdk.packing import (
    batch_graphs,
    pad_graph,
    pad_static,
    pick_bucket,
    unbatch_outputs,
    unpad_outputs,
)

F, D = 3, 2
NODE, GRAPH, BATCH = OutputLevel.NODE, OutputLevel.GRAPH, OutputLevel.BATCH
BUCKETS = [
    Bucket(max_nodes=4, max_edges=4, max_graphs=2),
    Bucket(max_nodes=8, max_edges=16, max_graphs=2),
    Bucket(max_nodes=16, max_edges=32, max_graphs=4),
]


def graph(
    n: int,
    e: int,
    seed: int = 0,
    batch: list[int] | None = None,
    edge_attr: bool = False,
) -> DynamicGraph:
    """A random valid graph; edges stay inside each graph of ``batch``."""
    rng = np.random.default_rng(seed)
    ids = np.zeros(n, np.int64) if batch is None else np.asarray(batch, np.int64)
    src = rng.integers(0, n, e)
    # pick each target among the nodes of the source's graph
    dst = np.array([rng.choice(np.flatnonzero(ids == ids[s])) for s in src], np.int64)
    return DynamicGraph(
        x=rng.standard_normal((n, F)).astype(np.float32),
        edge_index=np.stack([src, dst]).astype(np.int64).reshape(2, e),
        edge_attr=rng.standard_normal((e, D)).astype(np.float32) if edge_attr else None,
        batch=None if batch is None else ids,
    )


# -- pick_bucket ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "e", "expected"),
    [
        (2, 0, 0),
        (3, 3, 0),  # 3 nodes + 1 padding node, 3 edges + 1 padding edge
        (4, 4, 0),  # exact fit: no padding edge, so no padding node is needed
        (4, 3, 1),  # a padding edge needs a padding node: 5 > 4
        (3, 5, 1),  # too many edges for the first bucket
        (7, 16, 1),
        (8, 16, 1),  # exact fit of the second bucket
        (8, 15, 2),
        (15, 31, 2),
    ],
)
def test_pick_bucket_smallest_that_fits(n: int, e: int, expected: int) -> None:
    assert pick_bucket(graph(n, e), BUCKETS, has_batch=False) == BUCKETS[expected]


def test_pick_bucket_reserves_a_graph_slot_for_padding() -> None:
    two = graph(3, 2, batch=[0, 0, 1])
    # Without a batch input graph slots do not matter.
    assert pick_bucket(two, BUCKETS, has_batch=False) == BUCKETS[0]
    # With one: 2 real graphs + 1 padding graph > max_graphs 2 of the first two buckets.
    assert pick_bucket(two, BUCKETS, has_batch=True) == BUCKETS[2]
    # An exact node fit adds no padding graph, so 2 graphs fit max_graphs 2.
    exact = graph(4, 4, batch=[0, 0, 1, 1])
    assert pick_bucket(exact, BUCKETS, has_batch=True) == BUCKETS[0]


@pytest.mark.parametrize(
    ("g", "has_batch", "fragments"),
    [
        (graph(16, 3), False, ["16 nodes", "3 edges", "fits no bucket", "max_nodes=16"]),
        (graph(5, 33), False, ["5 nodes", "33 edges", "largest is"]),
        (
            graph(8, 4, batch=[0, 0, 1, 1, 2, 2, 3, 3]),
            True,
            ["4 graph(s)", "fits no bucket", "max_graphs=4"],
        ),
    ],
    ids=["nodes", "edges", "graphs"],
)
def test_pick_bucket_none_fits(g: DynamicGraph, has_batch: bool, fragments: list[str]) -> None:
    with pytest.raises(InvalidInputError) as exc:
        pick_bucket(g, BUCKETS, has_batch=has_batch)
    assert exc.value.field == "x"
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_pick_bucket_without_buckets() -> None:
    with pytest.raises(InvalidInputError, match="fits no bucket; largest is None"):
        pick_bucket(graph(2, 1), [], has_batch=False)


# -- pad_graph -----------------------------------------------------------------------------


@pytest.mark.parametrize("has_batch", [False, True])
def test_pad_graph_shapes_masks_and_padding(has_batch: bool) -> None:
    g = graph(5, 6, seed=1, edge_attr=True)
    bucket = Bucket(max_nodes=8, max_edges=10, max_graphs=2)
    padded, info = pad_graph(g, bucket, has_batch=has_batch)

    assert padded.x.shape == (8, F) and padded.x.dtype == np.float32
    assert padded.edge_index.shape == (2, 10) and padded.edge_index.dtype == np.int64
    assert padded.edge_attr is not None and padded.edge_attr.shape == (10, D)
    assert (info.num_nodes, info.num_edges, info.num_graphs) == (5, 6, 1)
    np.testing.assert_array_equal(info.node_mask, [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(info.edge_mask, [True] * 6 + [False] * 4)

    # Real part untouched, padding zero.
    np.testing.assert_array_equal(padded.x[info.node_mask], g.x)
    np.testing.assert_array_equal(padded.x[~info.node_mask], 0)
    np.testing.assert_array_equal(padded.edge_index[:, info.edge_mask], g.edge_index)
    assert g.edge_attr is not None
    np.testing.assert_array_equal(padded.edge_attr[info.edge_mask], g.edge_attr)
    np.testing.assert_array_equal(padded.edge_attr[~info.edge_mask], 0)

    # Padding edges join padding nodes only, and stay in range.
    pad_edges = padded.edge_index[:, ~info.edge_mask]
    assert (pad_edges >= g.num_nodes).all() and (pad_edges < 8).all()
    # No real edge touches a padding node.
    assert (padded.edge_index[:, info.edge_mask] < g.num_nodes).all()

    if has_batch:
        assert padded.batch is not None
        np.testing.assert_array_equal(padded.batch, [0] * 5 + [1] * 3)
    else:
        assert padded.batch is None


def test_pad_graph_offsets_graph_ids_of_a_batched_request() -> None:
    g = graph(5, 4, seed=2, batch=[0, 0, 1, 1, 1])
    padded, info = pad_graph(g, Bucket(max_nodes=8, max_edges=8, max_graphs=3), has_batch=True)
    assert padded.batch is not None
    np.testing.assert_array_equal(padded.batch, [0, 0, 1, 1, 1, 2, 2, 2])
    assert info.num_graphs == 2
    # The padded graph is itself a valid request for a model with a batch input.
    spec = GraphSpec(form="dynamic", num_features=F, has_batch=True)
    valid = as_graph(padded, spec)
    assert isinstance(valid, DynamicGraph) and valid.num_graphs == 3


def test_pad_graph_exact_fit_adds_nothing() -> None:
    g = graph(4, 4, seed=3)
    padded, info = pad_graph(g, BUCKETS[0], has_batch=True, graph_level_outputs=True)
    np.testing.assert_array_equal(padded.x, g.x)
    np.testing.assert_array_equal(padded.edge_index, g.edge_index)
    assert padded.batch is not None and (padded.batch == 0).all()
    assert info.node_mask.all() and info.edge_mask.all()


def test_pad_graph_refuses_readout_without_batch() -> None:
    g = graph(3, 2)
    with pytest.raises(InvalidInputError) as exc:
        pad_graph(g, BUCKETS[1], has_batch=False, graph_level_outputs=True)
    assert exc.value.field == "batch"
    assert "would change the result" in str(exc.value)
    # Node-level outputs pad fine without a batch input ...
    pad_graph(g, BUCKETS[1], has_batch=False, graph_level_outputs=False)
    # ... and a readout model pads fine once it has one.
    padded, _ = pad_graph(g, BUCKETS[1], has_batch=True, graph_level_outputs=True)
    assert padded.batch is not None and padded.batch.max() == 1
    # Exact fit needs no padding node, so nothing can leak into the readout.
    pad_graph(graph(4, 4), BUCKETS[0], has_batch=False, graph_level_outputs=True)


@pytest.mark.parametrize(
    ("n", "e", "bucket"),
    [
        (4, 3, Bucket(max_nodes=4, max_edges=4)),  # no room for the padding node
        (3, 5, Bucket(max_nodes=8, max_edges=4)),  # too many edges
        (9, 0, Bucket(max_nodes=8, max_edges=4)),  # too many nodes
    ],
)
def test_pad_graph_rejects_a_graph_that_does_not_fit(n: int, e: int, bucket: Bucket) -> None:
    with pytest.raises(InvalidInputError) as exc:
        pad_graph(graph(n, e), bucket, has_batch=False)
    assert exc.value.field == "x"
    assert "does not fit bucket" in str(exc.value)


def test_pad_graph_leaves_the_input_alone() -> None:
    g = graph(3, 3, seed=4, batch=[0, 1, 1])
    copies = [a.copy() for a in (g.x, g.edge_index, g.batch)]
    pad_graph(g, BUCKETS[2], has_batch=True)
    for before, after in zip(copies, (g.x, g.edge_index, g.batch), strict=True):
        np.testing.assert_array_equal(before, after)


# -- unpad_outputs -------------------------------------------------------------------------


def test_unpad_outputs_cuts_by_level() -> None:
    g = graph(5, 4, batch=[0, 0, 1, 1, 1])
    _, info = pad_graph(g, Bucket(max_nodes=8, max_edges=8, max_graphs=3), has_batch=True)
    outputs = {
        "node": np.arange(8 * 2).reshape(8, 2),
        "graph": np.arange(3 * 4).reshape(3, 4),
        "stacked": np.arange(6).reshape(6, 1),
        "unlisted": np.arange(7),
    }
    levels = {"node": NODE, "graph": GRAPH, "stacked": BATCH}
    cut = unpad_outputs(outputs, info, levels)
    np.testing.assert_array_equal(cut["node"], outputs["node"][:5])
    np.testing.assert_array_equal(cut["graph"], outputs["graph"][:2])
    np.testing.assert_array_equal(cut["stacked"], outputs["stacked"])
    np.testing.assert_array_equal(cut["unlisted"], outputs["unlisted"])


def _numpy_gnn(g: DynamicGraph, w: np.ndarray) -> dict[str, np.ndarray]:
    """A tiny message-passing model: sum, mean and max aggregation, then a mean readout.

    Like PyG's pooling, the graph count is taken from the data (batch.max() + 1).
    """
    n = g.num_nodes
    h = np.tanh(g.x @ w)
    src, dst = g.edge_index
    msg = h[src]
    if g.edge_attr is not None:
        msg = msg * (1.0 + g.edge_attr.sum(1, keepdims=True))
    total = np.zeros_like(h)
    np.add.at(total, dst, msg)
    deg = np.bincount(dst, minlength=n).astype(np.float32)[:, None]
    mean = total / np.maximum(deg, 1)
    top = np.full_like(h, -np.inf)
    np.maximum.at(top, dst, msg)
    top[np.isinf(top)] = 0
    node = h + total + mean + top
    batch = g.batch if g.batch is not None else np.zeros(n, np.int64)
    k = int(batch.max()) + 1
    pooled = np.zeros((k, node.shape[1]), np.float32)
    np.add.at(pooled, batch, node)
    pooled /= np.bincount(batch, minlength=k)[:, None]
    return {"node": node, "graph": pooled}


@pytest.mark.parametrize("seed", range(4))
def test_pad_then_unpad_is_exact_for_a_message_passing_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((F, 4)).astype(np.float32)
    sizes = rng.integers(1, 4, size=3)
    batch = np.repeat(np.arange(3), sizes).tolist()
    g = graph(len(batch), int(rng.integers(0, 12)), seed=seed, batch=batch, edge_attr=True)
    # duplicate some edges
    keep = rng.integers(0, max(g.num_edges, 1), size=min(g.num_edges, 3))
    assert g.edge_attr is not None
    g = DynamicGraph(
        g.x,
        np.concatenate([g.edge_index, g.edge_index[:, keep]], axis=1),
        np.concatenate([g.edge_attr, g.edge_attr[keep]]),
        g.batch,
    )
    bucket = pick_bucket(g, BUCKETS, has_batch=True)
    padded, info = pad_graph(g, bucket, has_batch=True, graph_level_outputs=True)
    assert padded.num_nodes > g.num_nodes  # padding really happened
    levels = {"node": NODE, "graph": GRAPH}
    got = unpad_outputs(_numpy_gnn(padded, w), info, levels)
    want = _numpy_gnn(g, w)
    for name in levels:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6)


# -- pad_static ----------------------------------------------------------------------------


def test_pad_static_appends_zero_graphs() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5, F)).astype(np.float32)
    padded = pad_static(StaticGraph(x), 4)
    assert padded.x.shape == (4, 5, F) and padded.batch_size == 4
    np.testing.assert_array_equal(padded.x[:2], x)
    np.testing.assert_array_equal(padded.x[2:], 0)


def test_pad_static_same_size_is_unchanged() -> None:
    g = StaticGraph(np.ones((3, 5, F), np.float32))
    assert pad_static(g, 3) is g


def test_pad_static_refuses_a_larger_batch() -> None:
    with pytest.raises(InvalidInputError) as exc:
        pad_static(StaticGraph(np.ones((5, 2, F), np.float32)), 4)
    assert exc.value.field == "x"
    assert "batch of 5" in str(exc.value) and "bucket of 4" in str(exc.value)


# -- batch_graphs / unbatch_outputs -------------------------------------------------------


def test_batch_graphs_offsets_node_and_graph_ids() -> None:
    g1 = graph(3, 2, seed=1)
    g2 = graph(3, 3, seed=2, batch=[0, 0, 1])  # already a union of 2 graphs
    g3 = graph(2, 1, seed=3)
    merged, layout = batch_graphs([g1, g2, g3])

    assert layout.nodes == (3, 3, 2) and layout.graphs == (1, 2, 1)
    np.testing.assert_array_equal(merged.x, np.concatenate([g1.x, g2.x, g3.x]))
    np.testing.assert_array_equal(
        merged.edge_index,
        np.concatenate([g1.edge_index, g2.edge_index + 3, g3.edge_index + 6], axis=1),
    )
    assert merged.batch is not None
    np.testing.assert_array_equal(merged.batch, [0, 0, 0, 1, 1, 2, 3, 3])
    assert merged.num_graphs == 4 and merged.edge_attr is None
    # No edge crosses between requests.
    src_graph, dst_graph = merged.batch[merged.edge_index]
    np.testing.assert_array_equal(src_graph, dst_graph)
    # The union is a valid request.
    spec = GraphSpec(form="dynamic", num_features=F, has_batch=True)
    assert isinstance(as_graph(merged, spec), DynamicGraph)


def test_batch_graphs_concatenates_edge_attr() -> None:
    g1, g2 = graph(3, 2, seed=1, edge_attr=True), graph(2, 3, seed=2, edge_attr=True)
    merged, _ = batch_graphs([g1, g2])
    assert merged.edge_attr is not None and g1.edge_attr is not None
    assert g2.edge_attr is not None
    np.testing.assert_array_equal(merged.edge_attr, np.concatenate([g1.edge_attr, g2.edge_attr]))


def test_batch_graphs_single_graph_gets_zero_batch() -> None:
    g = graph(3, 2)
    merged, layout = batch_graphs([g])
    assert merged.batch is not None and (merged.batch == 0).all()
    np.testing.assert_array_equal(merged.edge_index, g.edge_index)
    assert layout.nodes == (3,) and layout.graphs == (1,)


def test_batch_graphs_errors() -> None:
    with pytest.raises(InvalidInputError) as exc:
        batch_graphs([])
    assert exc.value.field == "graphs"
    with pytest.raises(InvalidInputError) as exc:
        batch_graphs([graph(2, 1, edge_attr=True), graph(2, 1)])
    assert exc.value.field == "edge_attr"
    assert "some graphs have edge features and some do not" in str(exc.value)


def test_unbatch_outputs_splits_in_order() -> None:
    graphs = [graph(3, 2, seed=1), graph(4, 3, seed=2, batch=[0, 1, 1, 2]), graph(1, 0)]
    merged, layout = batch_graphs(graphs)
    assert merged.batch is not None
    outputs = {
        "node": merged.x * 2,
        "graph": np.arange(merged.num_graphs, dtype=np.float32)[:, None],
    }
    parts = unbatch_outputs(
        outputs,
        {NODE: layout.nodes, GRAPH: layout.graphs},
        {
            "node": NODE,
            "graph": GRAPH,
        },
    )
    assert len(parts) == 3
    for part, g in zip(parts, graphs, strict=True):
        np.testing.assert_array_equal(part["node"], g.x * 2)
    assert [p["graph"].ravel().tolist() for p in parts] == [[0.0], [1.0, 2.0, 3.0], [4.0]]


def test_batch_pad_unpad_unbatch_round_trip() -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((F, 4)).astype(np.float32)
    graphs = [graph(2, 3, seed=1), graph(4, 5, seed=2, batch=[0, 0, 1, 1]), graph(3, 0, seed=3)]
    merged, layout = batch_graphs(graphs)
    # 4 real graphs + 1 padding graph need max_graphs >= 5.
    bucket = pick_bucket(merged, [*BUCKETS, Bucket(max_nodes=16, max_edges=32, max_graphs=5)], True)
    assert bucket.max_graphs == 5
    padded, info = pad_graph(merged, bucket, has_batch=True, graph_level_outputs=True)
    levels = {"node": NODE, "graph": GRAPH}
    out = unpad_outputs(_numpy_gnn(padded, w), info, levels)
    parts = unbatch_outputs(out, {NODE: layout.nodes, GRAPH: layout.graphs}, levels)
    for part, g in zip(parts, graphs, strict=True):
        want = _numpy_gnn(g, w)
        for name in levels:
            np.testing.assert_allclose(part[name], want[name], rtol=0, atol=1e-6)


def test_unbatch_outputs_errors() -> None:
    levels = {"node": NODE, "graph": GRAPH}
    outputs = {"node": np.zeros((5, 1)), "graph": np.zeros((2, 1))}
    with pytest.raises(ValueError, match="same requests"):
        unbatch_outputs(outputs, {NODE: (2, 3), GRAPH: (1, 1, 0)}, levels)
    with pytest.raises(ValueError, match="has 5 rows, expected 6"):
        unbatch_outputs(outputs, {NODE: (3, 3), GRAPH: (1, 1)}, levels)


def test_group_for_buckets_splits_only_when_the_union_overflows() -> None:
    from edge_sdk.packing import group_for_buckets

    rng = np.random.default_rng(11)

    def g(n: int, e: int) -> DynamicGraph:
        return DynamicGraph(
            x=rng.normal(size=(n, 2)).astype(np.float32), edge_index=rng.integers(0, n, (2, e))
        )

    buckets = [
        Bucket(max_nodes=8, max_edges=16, max_graphs=2),
        Bucket(max_nodes=20, max_edges=40, max_graphs=4),
    ]
    graphs = [g(6, 10), g(6, 10), g(6, 10), g(15, 30), g(2, 1)]
    groups = group_for_buckets(graphs, buckets, has_batch=True)
    # 6+6+6 nodes and 3 graphs (+1 padding graph) fit 20/40/4; the 15-node graph does not join.
    assert groups == [[0, 1, 2], [3, 4]]
    assert group_for_buckets(graphs, [], has_batch=True) == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("tables", [False, True])
@pytest.mark.parametrize("has_batch", [False, True])
def test_group_for_buckets_agrees_with_merging_each_candidate(
    has_batch: bool, tables: bool
) -> None:
    """Groups come from running sums of nodes, edges and graphs (no merge per candidate:
    that was quadratic in the group size): the same groups as merging each candidate union
    and asking whether it fits, on 300 requests of mixed sizes, some already batched."""
    from edge_sdk.packing import batch_graphs, fits, group_for_buckets

    rng = np.random.default_rng(13)
    graphs = []
    for _ in range(300):
        n, e, k = int(rng.integers(1, 30)), int(rng.integers(0, 60)), int(rng.integers(1, 3))
        batch = np.sort(rng.integers(0, k, n)) if k > 1 else None
        x = rng.normal(size=(n, 2)).astype(np.float32)
        graphs.append(DynamicGraph(x=x, edge_index=rng.integers(0, n, (2, e)), batch=batch))
    buckets = [
        Bucket(max_nodes=32, max_edges=64, max_graphs=4),
        Bucket(max_nodes=200, max_edges=400, max_graphs=12),
    ]
    want: list[list[int]] = []
    for i in range(len(graphs)):
        union = batch_graphs([graphs[j] for j in [*want[-1], i]])[0] if want else None
        if union is not None and fits(union, buckets[-1], has_batch, tables):
            want[-1].append(i)
        else:
            want.append([i])
    got = group_for_buckets(graphs, buckets, has_batch, tables)
    assert got == want and len(got) > 10 and max(len(g) for g in got) > 5


def test_group_for_buckets_merges_table_requests_without_batch() -> None:
    """A node-level table model without ``batch``: the union is one larger graph to it, so
    requests merge while nodes and edges fit (not one per call, #19's LiteRT batches)."""
    from edge_sdk.packing import group_for_buckets

    rng = np.random.default_rng(12)
    graphs = [
        DynamicGraph(x=rng.normal(size=(5, 2)).astype(np.float32), edge_index=np.zeros((2, 8), int))
        for _ in range(5)
    ]
    buckets = [Bucket(max_nodes=6, max_edges=8), Bucket(max_nodes=16, max_edges=32, max_graphs=1)]
    assert group_for_buckets(graphs, buckets, has_batch=False, tables=True) == [[0, 1, 2], [3, 4]]
    # With a batch input the bucket's graph count still bounds a group.
    assert group_for_buckets(graphs, buckets, has_batch=True, tables=True) == [
        [0],
        [1],
        [2],
        [3],
        [4],
    ]
