"""The host-side neighbour-table builder against numpy scatter, and its limits.

Each table is consumed here exactly as the exported model consumes it (gather the
slots, reduce over them per class, concatenate the classes, gather back through
``order``), in numpy, and compared with ``np.add.at`` / ``np.maximum.at`` over the
raw edges: duplicate edges, self loops, isolated nodes, zero edges and hubs that
spill over several rows included, for engines taking any shape and for a static
bucket's fixed capacities.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk import Bucket
from edge_sdk.errors import InvalidInputError
from edge_sdk.neighbour_tables import (
    LOOPS,
    POOL,
    RAW,
    TableLayout,
    build_table,
    request_tables,
    table_input_dtype,
)

F = 3


def aggregate(feeds: dict[str, np.ndarray], prefix: str, x: np.ndarray, how: str) -> np.ndarray:
    """What the exported model computes from one table: sum or max per target node."""
    rows, degree = [], []
    c = 0
    while f"{prefix}.index{c}" in feeds:
        msg = x[feeds[f"{prefix}.index{c}"]]  # [R, K, F]
        mask = feeds[f"{prefix}.mask{c}"][..., None]
        rows.append((msg * mask).sum(1) if how == "sum" else msg.max(1, initial=-np.inf))
        degree.append(mask.sum(1))
        c += 1
    cat, deg = np.concatenate(rows), np.concatenate(degree)
    order = feeds[f"{prefix}.order"]
    om = feeds.get(f"{prefix}.order_mask", np.ones(order.shape, np.float32))[..., None]
    node_deg = (deg[order] * om).sum(1)
    if how == "sum":
        return (cat[order] * om).sum(1)
    return np.where(node_deg > 0, cat[order].max(1), 0.0)


def scatter(x: np.ndarray, src: np.ndarray, dst: np.ndarray, n: int, how: str) -> np.ndarray:
    if how == "sum":
        out = np.zeros((n, x.shape[1]))
        np.add.at(out, dst, x[src])
        return out
    out = np.full((n, x.shape[1]), -np.inf)
    np.maximum.at(out, dst, x[src])
    return np.where(np.isfinite(out), out, 0.0)


def with_loops(ei: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = ei[0] != ei[1]
    nodes = np.arange(n)
    return np.concatenate([ei[0, keep], nodes]), np.concatenate([ei[1, keep], nodes])


def random_graph(rng: np.random.Generator, n: int, e: int, hub: int = 0) -> np.ndarray:
    """Edges with duplicates, self loops, isolated nodes (ids >= n // 2 + 1 get none
    as targets) and ``hub`` extra edges into node 0."""
    ei = rng.integers(0, max(1, n // 2 + 1), (2, e)) if e else np.zeros((2, 0), np.int64)
    if e >= 4:
        ei[:, :2] = ei[:, 2:4]  # duplicates
        ei[1, 1] = ei[0, 1]  # a self loop
    if hub:
        ei = np.concatenate([ei, np.stack([rng.integers(0, n, hub), np.zeros(hub, int)])], 1)
    return ei.astype(np.int64)


LAYOUT = TableLayout(widths=[1, 2, 4, 8], max_splits=4, variants=[RAW, LOOPS], edge_ids=True)
GRAPHS = [(1, 0, 0), (2, 0, 0), (5, 3, 0), (9, 40, 0), (40, 150, 20), (300, 900, 25)]


@pytest.mark.parametrize(("n", "e", "hub"), GRAPHS)
@pytest.mark.parametrize("how", ["sum", "max"])
def test_tables_aggregate_like_scatter(n: int, e: int, hub: int, how: str) -> None:
    rng = np.random.default_rng(n + e)
    ei = random_graph(rng, n, e, hub)
    x = rng.standard_normal((n, F))
    feeds = request_tables(ei, n, LAYOUT)
    assert list(feeds) == LAYOUT.input_names()
    for name, arr in feeds.items():
        assert arr.dtype == table_input_dtype(name), name
    np.testing.assert_allclose(
        aggregate(feeds, RAW, x, how), scatter(x, ei[0], ei[1], n, how), atol=1e-12
    )
    src, dst = with_loops(ei, n)
    np.testing.assert_allclose(aggregate(feeds, LOOPS, x, how), scatter(x, src, dst, n, how))
    if hub:  # node 0 spilled over several rows of the widest class
        assert feeds[f"{RAW}.order_mask"][0].sum() > 1


@pytest.mark.parametrize(("n", "e", "hub"), GRAPHS)
def test_edge_ids_gather_the_edges_of_each_slot(n: int, e: int, hub: int) -> None:
    rng = np.random.default_rng(7 + n)
    ei = random_graph(rng, n, e, hub)
    attr = rng.standard_normal((ei.shape[1], F))
    feeds = request_tables(ei, n, LAYOUT)
    # The loops variant's self loops have ids E + node: their value here is the node's id.
    loop_attr = np.repeat(np.arange(n, dtype=float)[:, None], F, 1)
    ext = np.concatenate([attr, loop_attr, np.zeros((1, F))])
    for variant in (RAW, LOOPS):
        slot_sum = []
        c = 0
        while f"{variant}.edge{c}" in feeds:
            ids, mask = feeds[f"{variant}.edge{c}"], feeds[f"{variant}.mask{c}"][..., None]
            slot_sum.append((ext[ids] * mask).sum(1))
            c += 1
        cat = np.concatenate(slot_sum)
        order, om = feeds[f"{variant}.order"], feeds[f"{variant}.order_mask"][..., None]
        got = (cat[order] * om).sum(1)
        want = np.zeros((n, F))
        keep = ei[0] != ei[1] if variant == LOOPS else np.ones(ei.shape[1], bool)
        np.add.at(want, ei[1, keep], attr[keep])
        if variant == LOOPS:
            want += loop_attr
        np.testing.assert_allclose(got, want, atol=1e-12)


BUCKETS = [Bucket(max_nodes=16, max_edges=48, max_graphs=3), Bucket(max_nodes=64, max_edges=256)]


def test_bucket_capacities_hold_any_graph_of_the_bucket_and_keep_results() -> None:
    layout = LAYOUT.model_copy(update={"pool_widths": [1, 2, 4, 8]}).with_buckets(BUCKETS)
    rng = np.random.default_rng(3)
    for trial in range(40):
        b = trial % 2
        bucket = BUCKETS[b]
        n = int(rng.integers(1, bucket.max_nodes + 1))
        e = int(rng.integers(0, bucket.max_edges + 1))
        # Adversarial degree spreads: all edges into few nodes, or spread out.
        targets = int(rng.integers(1, n + 1))
        ei = np.stack([rng.integers(0, n, e), rng.integers(0, targets, e)]).astype(np.int64)
        if np.bincount(ei[1], minlength=n).max(initial=0) + 1 > layout.max_degree:
            continue
        graphs = int(rng.integers(1, bucket.max_graphs + 1))
        batch = np.sort(rng.integers(0, graphs, n))
        batch = np.unique(batch, return_inverse=True)[1].astype(np.int64)
        x = np.zeros((bucket.max_nodes, F))
        x[:n] = rng.standard_normal((n, F))
        feeds = request_tables(
            ei,
            bucket.max_nodes,
            layout,
            batch=batch,
            num_graphs=bucket.max_graphs,
            bucket=b,
            num_edges=bucket.max_edges,
        )
        shapes = layout.fixed_shapes(bucket, b, F, 2)
        assert {k: list(v.shape) for k, v in feeds.items()} == {
            k: v for k, v in shapes.items() if k not in ("x", "edge_attr")
        }
        got = aggregate(feeds, LOOPS, x, "sum")[:n]
        src, dst = with_loops(ei, n)
        np.testing.assert_allclose(got, scatter(x, src, dst, n, "sum"), atol=1e-12)
        pooled = aggregate(feeds, POOL, x, "sum")
        want = np.zeros((bucket.max_graphs, F))
        np.add.at(want, batch, x[:n])  # padding nodes belong to no graph
        np.testing.assert_allclose(pooled, want, atol=1e-12)


def test_layout_for_a_model_records_the_degree_limit() -> None:
    layout = TableLayout.for_model([LOOPS], pool=True)
    assert layout.widths[-1] == 64 and layout.max_splits == 8 and layout.max_degree == 512
    assert layout.pool_widths[-1] == 256 and layout.pool_splits == 2
    small = TableLayout.for_model([RAW], max_degree=20)
    assert small.widths == [1, 2, 4, 8, 16, 32] and small.max_splits == 1
    assert "raw.order_mask" not in small.input_names()
    with_buckets = layout.with_buckets([Bucket(max_nodes=1000, max_edges=4000, max_graphs=8)])
    assert with_buckets.pool_splits == 4  # a graph of all 1,000 nodes: 4 rows of 256
    assert len(with_buckets.capacities) == 2 and len(with_buckets.capacities[0]) == 1


def test_over_degree_names_the_limit() -> None:
    layout = TableLayout.for_model([LOOPS], max_degree=16)
    ei = np.stack([np.arange(1, 17), np.zeros(16, int)]).astype(np.int64)  # 16 + its loop
    with pytest.raises(InvalidInputError) as info:
        request_tables(ei, 17, layout)
    assert info.value.field == "edge_index"
    message = str(info.value)
    assert "node 0 has 17 incoming edges" in message
    assert "graph.tables.max_degree" in message and "at most 16" in message
    assert "--max-degree" in message
    request_tables(ei[:, :15], 17, layout)  # 15 + its loop: at the limit


def test_capacity_overflow_names_the_bucket() -> None:
    src = np.arange(6, dtype=np.int64)
    dst = np.repeat(np.arange(3), 2).astype(np.int64)  # three nodes of degree 2
    with pytest.raises(InvalidInputError) as info:
        build_table(src, dst, 6, [1, 2], capacity=[6, 2], max_splits=1)
    assert info.value.field == "edge_index"
    assert "needs 3 rows of width 2" in str(info.value)
    assert "bucket holds 2" in str(info.value)


def test_engines_taking_any_shape_get_only_the_rows_a_request_needs() -> None:
    layout = TableLayout.for_model([RAW])
    ei = np.array([[0, 1], [1, 0]], np.int64)
    feeds = request_tables(ei, 2, layout)
    assert feeds["raw.order"].shape == (2, 1) and feeds["raw.order_mask"].shape == (2, 1)
    assert feeds["raw.index0"].shape == (2, 1)
    assert all(feeds[f"raw.index{c}"].shape[0] == 0 for c in range(1, len(layout.widths)))
