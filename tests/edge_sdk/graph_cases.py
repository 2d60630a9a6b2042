"""Shared specs and request builders for the graph-input tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk import Bucket, GraphSpec

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
