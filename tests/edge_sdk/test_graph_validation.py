"""Input validation of ``as_graph``: every bad request names its field, expected and received.

Each negative case asserts on ``InvalidInputError.field`` and on substrings of the
message that carry the expected value and the received value, so a vague message
("bad input") fails the test as surely as a missing check does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from graph_cases import (  # shared by the test_graph_* files
    _DROP,
    DYN,
    DYN_BUCKETS,
    EDGES,
    N_STATIC,
    SPECS,
    F,
    _with_nan,
    _x,
    dyn,
    dyn_attr,
)

from edge_sdk import DynamicGraph, InvalidInputError, StaticGraph, as_graph
from edge_sdk.packing import pick_bucket

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
    # -- booleans are refused everywhere, never coerced to 0.0 / 1.0 -------------------------
    (
        "static-x-bool-array",
        "static",
        np.zeros((1, N_STATIC, F), np.bool_),
        "x",
        ["expected a float dtype", "received bool"],
    ),
    (
        "static-x-bool-list",
        "static",
        {"x": [[[True, False, True]] * N_STATIC]},
        "x",
        ["expected a float dtype", "received bool"],
    ),
    (
        "static-x-bool-among-floats",
        "static",
        {"x": [[[0.5, 1.5, 2.5]] * (N_STATIC - 1) + [[0.5, True, 2.5]]]},
        "x",
        ["expected a float dtype", "received bool"],
    ),
    ("x-bool-array", "dyn", dyn(x=_x() > 0), "x", ["expected a float dtype", "received bool"]),
    (
        "edge-index-bool-among-ints",
        "dyn",
        dyn(edge_index=[[0, 1, True], [1, 2, 3]]),
        "edge_index",
        ["integer dtype", "received bool"],
    ),
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


@pytest.mark.parametrize(
    ("request_graph", "fragments"),
    [
        (dyn(x=_x(7), edge_index=np.array([[0], [6]])), ["7 nodes", "fits no bucket"]),
        (dyn(edge_index=np.zeros((2, 6), np.int64)), ["6 edges", "fits no bucket"]),
    ],
    ids=["nodes", "edges"],
)
def test_buckets_bound_static_shape_engines_not_validation(
    request_graph: DynamicGraph, fragments: list[str]
) -> None:
    # An engine taking any shape runs a graph beyond the largest bucket; one with
    # fixed shapes is refused when its bucket is picked, naming the largest.
    graph = as_graph(request_graph, DYN_BUCKETS)
    with pytest.raises(InvalidInputError) as exc:
        pick_bucket(graph, DYN_BUCKETS.buckets, DYN_BUCKETS.has_batch)
    for fragment in fragments:
        assert fragment in str(exc.value)
    assert str(DYN_BUCKETS.buckets[-1]) in str(exc.value)


def test_invalid_input_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    with pytest.raises(ValueError, match="expected 3 features"):
        as_graph(dyn(x=_x(f=2)), DYN)


# -- strict mode: the wire protocols take x exactly as the metadata publishes it ------------


def test_strict_refuses_the_rank_2_shorthand_the_python_api_promotes() -> None:
    x = _x(N_STATIC)
    for data in (x, {"x": x}, {"x": x.tolist()}, StaticGraph(x)):
        loose = as_graph(data, SPECS["static"])
        assert isinstance(loose, StaticGraph) and loose.x.shape == (1, N_STATIC, F)
        with pytest.raises(InvalidInputError) as exc:
            as_graph(data, SPECS["static"], strict=True)
        assert exc.value.field == "x"
        assert str(exc.value) == (
            f"x: expected rank 3 [B, N, F], received rank 2 [{N_STATIC}, {F}]; "
            f"send one graph as [1, {N_STATIC}, {F}]"
        )
    # Strict takes a proper [B, N, F] request unchanged, and changes nothing for dynamic graphs.
    g = as_graph(x[None], SPECS["static"], strict=True)
    assert isinstance(g, StaticGraph)
    np.testing.assert_array_equal(g.x, x[None])
    d = as_graph(dyn(), DYN, strict=True)
    assert isinstance(d, DynamicGraph) and d.x.shape == (4, F)
