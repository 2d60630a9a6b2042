"""Input validation of ``as_graph``: every bad request names its field, expected and received.

Each negative case asserts on ``InvalidInputError.field`` and on substrings of the
message that carry the expected value and the received value, so a vague message
("bad input") fails the test as surely as a missing check does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_sdk import (
    Bucket,
    DynamicGraph,
    GraphSpec,
    InvalidInputError,
    StaticGraph,
    as_graph,
)

F = 3  # features per node in every spec below
N_STATIC = 4

DYN = GraphSpec(form="dynamic", num_features=F, max_nodes=10, max_edges=8)
DYN_ATTR = GraphSpec(form="dynamic", num_features=F, edge_dim=2)
DYN_BATCH = GraphSpec(form="dynamic", num_features=F, has_batch=True)
DYN_BUCKETS = GraphSpec(
    form="dynamic",
    num_features=F,
    buckets=[Bucket(max_nodes=4, max_edges=4), Bucket(max_nodes=6, max_edges=5)],
)
STATIC = GraphSpec(form="static", num_nodes=N_STATIC, num_features=F, max_batch=2)

SPECS = {
    "dyn": DYN,
    "dyn_attr": DYN_ATTR,
    "dyn_batch": DYN_BATCH,
    "dyn_buckets": DYN_BUCKETS,
    "static": STATIC,
}

_DROP = object()  # dyn(key=_DROP) removes the key

# A 4-node path 0 -> 1 -> 2 -> 3.
EDGES = np.array([[0, 1, 2], [1, 2, 3]], np.int64)


def _x(n: int = 4, f: int = F, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)


def _with_nan(shape: tuple[int, ...], where: list[tuple[int, ...]], value: float) -> np.ndarray:
    arr = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for idx in where:
        arr[idx] = value
    return arr


def dyn(**changes: Any) -> dict[str, Any]:
    """A valid dynamic request (4 nodes, 3 edges) with some fields replaced or removed."""
    data: dict[str, Any] = {"x": _x(), "edge_index": EDGES.copy()}
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def dyn_attr(**changes: Any) -> dict[str, Any]:
    """A valid request for DYN_ATTR (edge features [3, 2])."""
    return dyn(**{"edge_attr": np.ones((3, 2), np.float32), **changes})


# (id, spec key, request, field, substrings the message must contain)
BAD: list[tuple[str, str, Any, str, list[str]]] = [
    # -- x dtype / rank / features ------------------------------------------------------
    (
        "x-complex",
        "dyn",
        dyn(x=_x().astype(np.complex64)),
        "x",
        ["expected a float dtype", "complex64"],
    ),
    ("x-strings", "dyn", dyn(x=[["a", "b", "c"]] * 4), "x", ["expected a float dtype", "<U1"]),
    ("x-none", "dyn", dyn(x=None), "x", ["non-numbers", "expected a numeric array"]),
    ("x-rank1", "dyn", dyn(x=np.zeros(4, np.float32)), "x", ["expected rank 2", "[N, F]", "[4]"]),
    (
        "x-rank3",
        "dyn",
        dyn(x=np.zeros((1, 4, F), np.float32)),
        "x",
        ["expected rank 2", "received rank 3", "[1, 4, 3]"],
    ),
    ("x-features", "dyn", dyn(x=_x(f=5)), "x", ["expected 3 features", "received 5"]),
    (
        "static-x-rank1",
        "static",
        {"x": np.zeros(F, np.float32)},
        "x",
        ["expected rank 3", "[B, N, F]", "received rank 1"],
    ),
    (
        "static-x-rank4",
        "static",
        np.zeros((1, 1, N_STATIC, F), np.float32),
        "x",
        ["expected rank 3", "received rank 4", "[1, 1, 4, 3]"],
    ),
    (
        "static-x-complex",
        "static",
        _x(N_STATIC).astype(np.complex128),
        "x",
        ["float dtype", "complex128"],
    ),
    ("static-x-features", "static", _x(N_STATIC, 2), "x", ["expected 3 features", "received 2"]),
    ("static-x-nodes", "static", _x(5), "x", ["expected 4 nodes", "received 5"]),
    (
        "static-x-nodes-batched",
        "static",
        np.zeros((2, 3, F), np.float32),
        "x",
        ["expected 4 nodes", "received 3"],
    ),
    # -- NaN / Inf --------------------------------------------------------------------------
    (
        "x-nan",
        "dyn",
        dyn(x=_with_nan((4, F), [(2, 1)], np.nan)),
        "x",
        ["1 NaN/Inf", "[2, 1]"],
    ),
    (
        "x-inf",
        "dyn",
        dyn(x=_with_nan((4, F), [(3, 2), (1, 0)], -np.inf)),
        "x",
        ["2 NaN/Inf", "first at index [1, 0]"],
    ),
    (
        "static-x-nan",
        "static",
        _with_nan((2, N_STATIC, F), [(1, 3, 0)], np.nan),
        "x",
        ["1 NaN/Inf", "[1, 3, 0]"],
    ),
    (
        "edge-attr-nan",
        "dyn_attr",
        dyn_attr(edge_attr=_with_nan((3, 2), [(2, 1), (0, 1)], np.nan)),
        "edge_attr",
        ["2 NaN/Inf", "first at index [0, 1]"],
    ),
    (
        "edge-attr-inf",
        "dyn_attr",
        dyn_attr(edge_attr=_with_nan((3, 2), [(1, 0)], np.inf)),
        "edge_attr",
        ["1 NaN/Inf", "[1, 0]"],
    ),
    # -- edge_index -------------------------------------------------------------------------
    (
        "edge-index-float",
        "dyn",
        dyn(edge_index=EDGES.astype(np.float32)),
        "edge_index",
        ["integer dtype", "int64", "received float32"],
    ),
    (
        "edge-index-bool",
        "dyn",
        dyn(edge_index=EDGES > 0),
        "edge_index",
        ["integer dtype", "received bool"],
    ),
    (
        "edge-index-3-rows",
        "dyn",
        dyn(edge_index=np.zeros((3, 3), np.int64)),
        "edge_index",
        ["[2, E]", "received [3, 3]"],
    ),
    (
        "edge-index-rank1",
        "dyn",
        dyn(edge_index=np.array([0, 1, 1, 2, 2, 3])),
        "edge_index",
        ["[2, E]", "received [6]"],
    ),
    (
        "edge-index-transposed",
        "dyn",
        dyn(edge_index=EDGES.T.copy()),
        "edge_index",
        ["[2, E]", "received [3, 2]"],
    ),
    (
        "edge-index-negative",
        "dyn",
        dyn(edge_index=np.array([[0, 1, 2], [1, -1, 3]])),
        "edge_index",
        ["1 negative", "column 1", "(-1)"],
    ),
    (
        "edge-index-out-of-range",
        "dyn",
        dyn(edge_index=np.array([[0, 1, 7], [1, 2, 3]])),
        "edge_index",
        ["index 7", "column 2", "for 4 nodes", "valid 0..3"],
    ),
    (
        "edge-index-equal-to-n",
        "dyn",
        dyn(edge_index=np.array([[0, 1, 2], [1, 4, 3]])),
        "edge_index",
        ["index 4", "column 1", "for 4 nodes"],
    ),
    # -- edge_attr --------------------------------------------------------------------------
    ("edge-attr-missing", "dyn_attr", dyn(), "edge_attr", ["missing", "[E, 2]"]),
    (
        "edge-attr-width",
        "dyn_attr",
        dyn_attr(edge_attr=np.ones((3, 5), np.float32)),
        "edge_attr",
        ["expected shape [3, 2]", "received [3, 5]"],
    ),
    (
        "edge-attr-rows",
        "dyn_attr",
        dyn_attr(edge_attr=np.ones((2, 2), np.float32)),
        "edge_attr",
        ["expected shape [3, 2]", "received [2, 2]"],
    ),
    (
        "edge-attr-rank1",
        "dyn_attr",
        dyn_attr(edge_attr=np.ones(3, np.float32)),
        "edge_attr",
        ["expected rank 2", "[E, D]", "received rank 1"],
    ),
    (
        "edge-attr-strings",
        "dyn_attr",
        dyn_attr(edge_attr=[["a", "b"]] * 3),
        "edge_attr",
        ["float dtype", "<U1"],
    ),
    (
        "edge-attr-not-taken",
        "dyn",
        dyn(edge_attr=np.ones((3, 2), np.float32)),
        "edge_attr",
        ["takes no edge features", "received [3, 2]"],
    ),
    # -- batch ------------------------------------------------------------------------------
    (
        "batch-length",
        "dyn_batch",
        dyn(batch=np.zeros(3, np.int64)),
        "batch",
        ["expected shape [4]", "received [3]"],
    ),
    (
        "batch-rank2",
        "dyn_batch",
        dyn(batch=np.zeros((4, 1), np.int64)),
        "batch",
        ["expected shape [4]", "received [4, 1]"],
    ),
    (
        "batch-float",
        "dyn_batch",
        dyn(batch=np.zeros(4, np.float32)),
        "batch",
        ["integer dtype", "received float32"],
    ),
    (
        "batch-decreasing",
        "dyn_batch",
        dyn(batch=np.array([0, 1, 0, 1])),
        "batch",
        ["non-decreasing", "received 0 at node 2 after 1"],
    ),
    (
        "batch-negative",
        "dyn_batch",
        dyn(batch=np.array([-1, 0, 0, 0])),
        "batch",
        ["non-negative", "received -1 at node 0"],
    ),
    (
        "batch-gap",
        "dyn_batch",
        dyn(batch=np.array([0, 0, 2, 2])),
        "batch",
        ["contiguous", "received 2 after 0 at node 2"],
    ),
    (
        "batch-not-from-zero",
        "dyn_batch",
        dyn(batch=np.array([1, 1, 2, 2])),
        "batch",
        ["start at 0", "received 1"],
    ),
    (
        "batch-not-taken",
        "dyn",
        dyn(batch=np.array([0, 0, 1, 1])),
        "batch",
        ["takes no batch vector", "ids of 2 graphs"],
    ),
    # -- size limits ------------------------------------------------------------------------
    (
        "beyond-max-nodes",
        "dyn",
        dyn(x=_x(11), edge_index=np.array([[0], [10]])),
        "x",
        ["11 nodes", "max_nodes (10)"],
    ),
    (
        "beyond-max-edges",
        "dyn",
        dyn(edge_index=np.zeros((2, 9), np.int64)),
        "edge_index",
        ["9 edges", "limit (8)"],
    ),
    (
        "beyond-largest-bucket-nodes",
        "dyn_buckets",
        dyn(x=_x(7), edge_index=np.array([[0], [6]])),
        "x",
        ["7 nodes", "largest bucket (6)"],
    ),
    (
        "beyond-largest-bucket-edges",
        "dyn_buckets",
        dyn(edge_index=np.zeros((2, 6), np.int64)),
        "edge_index",
        ["6 edges", "limit (5)"],
    ),
    (
        "empty-graph",
        "dyn",
        dyn(x=np.zeros((0, F), np.float32), edge_index=np.zeros((2, 0), np.int64)),
        "x",
        ["no nodes", "N = 0"],
    ),
    ("static-empty-batch", "static", np.zeros((0, N_STATIC, F), np.float32), "x", ["B = 0"]),
    (
        "static-beyond-max-batch",
        "static",
        np.zeros((3, N_STATIC, F), np.float32),
        "x",
        ["batch of 3 graphs", "max_batch 2"],
    ),
    # -- keys and forms ---------------------------------------------------------------------
    ("unknown-key", "dyn", dyn(pos=np.zeros((4, 2))), "pos", ["unknown input field", "'x'"]),
    (
        "unknown-key-static",
        "static",
        {"x": _x(N_STATIC), "y": [1]},
        "y",
        ["unknown input field", "'edge_index'"],
    ),
    ("missing-x", "dyn", dyn(x=_DROP), "x", ["missing", "node features"]),
    ("missing-x-static", "static", {}, "x", ["missing"]),
    (
        "missing-edge-index",
        "dyn",
        dyn(edge_index=_DROP),
        "edge_index",
        ["missing", "dynamic graph", "[2, E]"],
    ),
    ("bare-array-to-dynamic", "dyn", _x(), "edge_index", ["bare ndarray", "x and edge_index"]),
    (
        "static-container-to-dynamic",
        "dyn",
        StaticGraph(_x()[None]),
        "edge_index",
        ["missing", "dynamic graph"],
    ),
    (
        "edge-index-to-static",
        "static",
        {"x": _x(N_STATIC), "edge_index": EDGES},
        "edge_index",
        ["static topology built in", "send only x [B, N, F]"],
    ),
    (
        "batch-to-static",
        "static",
        {"x": _x(N_STATIC), "batch": np.zeros(N_STATIC, np.int64)},
        "batch",
        ["static topology built in", "[B, N, F]"],
    ),
    (
        "dynamic-container-to-static",
        "static",
        DynamicGraph(_x(N_STATIC), EDGES),
        "edge_index",
        ["static topology built in", "send only x"],
    ),
    # -- ragged nested lists ----------------------------------------------------------------
    (
        "x-ragged",
        "dyn",
        dyn(x=[[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),
        "x",
        ["cannot be read as an array", "rectangular numeric array", "inhomogeneous"],
    ),
    (
        "edge-index-ragged",
        "dyn",
        dyn(edge_index=[[0, 1, 2], [1, 2]]),
        "edge_index",
        ["cannot be read as an array", "inhomogeneous"],
    ),
    (
        "static-x-ragged",
        "static",
        [[1.0, 2.0, 3.0]] * 3 + [[1.0]],
        "x",
        ["cannot be read as an array", "inhomogeneous"],
    ),
]


@pytest.mark.parametrize(
    ("spec_key", "data", "field", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_input_names_field_expected_and_received(
    spec_key: str, data: Any, field: str, fragments: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        as_graph(data, SPECS[spec_key])
    assert exc.value.field == field
    message = str(exc.value)
    assert message.startswith(f"{field}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_invalid_input_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    with pytest.raises(ValueError, match="expected 3 features"):
        as_graph(dyn(x=_x(f=2)), DYN)


# -- positive paths: canonical dtypes and shapes -------------------------------------------


def test_int_features_promoted_to_float32() -> None:
    x = np.arange(12, dtype=np.int64).reshape(4, F)
    g = as_graph(dyn(x=x), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.x.dtype == np.float32
    np.testing.assert_array_equal(g.x, x.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.bool_, np.float16, np.float64])
def test_feature_dtypes_canonicalised(dtype: type) -> None:
    x = (np.arange(12).reshape(4, F) % 2).astype(dtype)
    g = as_graph(dyn(x=x), DYN)
    assert g.x.dtype == np.float32
    assert g.x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(g.x, x.astype(np.float32))


def test_int32_edge_index_promoted_to_int64() -> None:
    g = as_graph(dyn(edge_index=EDGES.astype(np.int32)), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.edge_index.dtype == np.int64
    np.testing.assert_array_equal(g.edge_index, EDGES)


def test_nested_lists_accepted() -> None:
    g = as_graph({"x": [[1, 2, 3], [4, 5, 6]], "edge_index": [[0, 1], [1, 0]]}, DYN)
    assert isinstance(g, DynamicGraph)
    assert g.x.dtype == np.float32 and g.x.shape == (2, F)
    assert g.edge_index.dtype == np.int64 and g.edge_index.shape == (2, 2)


@pytest.mark.parametrize(
    "edge_index", [np.zeros((2, 0), np.int64), [[], []]], ids=["int64", "nested-list"]
)
def test_graph_without_edges_accepted(edge_index: Any) -> None:
    g = as_graph(dyn(edge_index=edge_index), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.num_edges == 0 and g.edge_index.dtype == np.int64


def test_non_contiguous_features_made_contiguous() -> None:
    x = np.asfortranarray(_x())
    g = as_graph(dyn(x=x), DYN)
    assert g.x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(g.x, x)


def test_static_2d_promoted_to_batch_of_one() -> None:
    x = _x(N_STATIC)
    for data in (x, {"x": x}, StaticGraph(x)):
        g = as_graph(data, STATIC)
        assert isinstance(g, StaticGraph)
        assert g.x.shape == (1, N_STATIC, F) and g.batch_size == 1
        np.testing.assert_array_equal(g.x[0], x)


def test_static_batch_kept_and_int_promoted() -> None:
    x = np.ones((2, N_STATIC, F), np.int32)
    g = as_graph(x, STATIC)
    assert isinstance(g, StaticGraph)
    assert g.x.shape == (2, N_STATIC, F) and g.x.dtype == np.float32


def test_edge_attr_promoted_to_float32() -> None:
    g = as_graph(dyn_attr(edge_attr=np.ones((3, 2), np.int64)), DYN_ATTR)
    assert isinstance(g, DynamicGraph)
    assert g.edge_attr is not None and g.edge_attr.dtype == np.float32
    assert g.feeds(DYN_ATTR)["edge_attr"].shape == (3, 2)


def test_edge_attr_none_means_absent() -> None:
    g = as_graph(dyn(edge_attr=None, batch=None), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.edge_attr is None and g.batch is None


def test_single_graph_batch_dropped_for_model_without_batch() -> None:
    g = as_graph(dyn(batch=np.zeros(4, np.int32)), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.batch is None
    assert list(g.feeds(DYN)) == ["x", "edge_index"]


def test_valid_batch_kept_and_counted() -> None:
    g = as_graph(dyn(batch=np.array([0, 0, 1, 2], np.int32)), DYN_BATCH)
    assert isinstance(g, DynamicGraph)
    assert g.batch is not None and g.batch.dtype == np.int64
    assert g.num_graphs == 3
    assert list(g.feeds(DYN_BATCH)) == ["x", "edge_index", "batch"]


def test_missing_batch_fed_as_zeros() -> None:
    g = as_graph(dyn(), DYN_BATCH)
    assert isinstance(g, DynamicGraph)
    np.testing.assert_array_equal(g.feeds(DYN_BATCH)["batch"], np.zeros(4, np.int64))


def test_limits_are_inclusive() -> None:
    # Exactly max_nodes nodes and max_edges edges are accepted.
    ei = np.stack([np.arange(8) % 10, (np.arange(8) + 1) % 10])
    g = as_graph(dyn(x=_x(10), edge_index=ei), DYN)
    assert isinstance(g, DynamicGraph)
    assert (g.num_nodes, g.num_edges) == (10, 8)
    s = as_graph(np.zeros((2, N_STATIC, F)), STATIC)
    assert isinstance(s, StaticGraph) and s.batch_size == 2


def test_as_graph_does_not_modify_the_request() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, F)
    ei = EDGES.astype(np.int32)
    before = (x.copy(), ei.copy())
    as_graph({"x": x, "edge_index": ei}, DYN)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(ei, before[1])
    assert x.dtype == np.float64 and ei.dtype == np.int32


def test_huge_finite_features_are_not_mistaken_for_inf() -> None:
    # Their sum overflows float32; the exact check must still accept them.
    g = as_graph({"x": np.full((1, N_STATIC, F), 3e38, np.float32)}, STATIC)
    assert np.isfinite(g.x).all()
    with pytest.raises(
        InvalidInputError, match=r"1 NaN/Inf value\(s\), first at index \[0, 1, 0\]"
    ):
        bad = np.full((1, N_STATIC, F), 3e38, np.float32)
        bad[0, 1, 0] = np.inf
        as_graph({"x": bad}, STATIC)
