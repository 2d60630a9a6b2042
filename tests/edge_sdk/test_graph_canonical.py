"""Valid requests come out of ``as_graph`` canonical: float32 features, int64 indices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from graph_cases import (  # shared by the test_graph_* files
    DYN,
    DYN_ATTR,
    DYN_BATCH,
    EDGES,
    N_STATIC,
    STATIC,
    F,
    _x,
    dyn,
    dyn_attr,
)

from edge_sdk import DynamicGraph, InvalidInputError, StaticGraph, as_graph

# -- positive paths: canonical dtypes and shapes -------------------------------------------


def test_int_features_promoted_to_float32() -> None:
    x = np.arange(12, dtype=np.int64).reshape(4, F)
    g = as_graph(dyn(x=x), DYN)
    assert isinstance(g, DynamicGraph)
    assert g.x.dtype == np.float32
    np.testing.assert_array_equal(g.x, x.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.float16, np.float64])
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


def test_large_arrays_are_checked_by_a_sum_with_an_exact_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Above graph._MASK_LIMIT elements a sum replaces the mask: overflow must not
    # be taken for Inf, and NaN/Inf must still be found (and no warning escape).
    import warnings

    from edge_sdk import graph

    monkeypatch.setattr(graph, "_MASK_LIMIT", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = np.full((2, N_STATIC, F), 3e38, np.float32)
        assert as_graph(huge, STATIC).x is huge
        for bad in (np.nan, np.inf, -np.inf):
            x = huge.copy()
            x[1, 2, 0] = bad
            x[0, 0, 0] = -np.inf  # +Inf and -Inf together: the sum is NaN
            with pytest.raises(InvalidInputError, match=r"first at index \[0, 0, 0\]"):
                as_graph(x, STATIC)


def test_float32_contiguous_features_are_not_copied() -> None:
    x = np.ones((2, N_STATIC, F), np.float32)
    assert as_graph(x, STATIC).x is x
    assert as_graph({"x": x}, STATIC).x is x
    assert np.shares_memory(as_graph(x[0], STATIC).x, x)
    g = StaticGraph(x)
    assert as_graph(g, STATIC) is g  # already canonical: the same container back
    fortran = np.asfortranarray(x)
    assert as_graph(fortran, STATIC).x.flags.c_contiguous
