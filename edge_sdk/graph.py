"""Typed containers for the three graph forms, and their validation.

The runtime turns whatever a caller hands it into one of these containers and
validates it against the model's :class:`~edge_sdk.io_contract.GraphSpec` before
any backend sees it. Errors name the field, what was expected and what was
received.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .io_contract import GraphForm, GraphSpec


@dataclass(frozen=True)
class StaticGraph:
    """Node features of one or more graphs sharing a fixed topology.

    Used for the static and learned forms, where the topology lives inside
    the model. ``x`` is ``[B, N, F]``; a single ``[N, F]`` graph is accepted
    by :func:`as_graph` and promoted to ``B = 1``, except in strict mode (the
    wire protocols), where ``x`` must have the published rank 3.
    """

    x: np.ndarray

    @property
    def batch_size(self) -> int:
        """Number of stacked graphs B."""
        return int(self.x.shape[0])

    def feeds(self) -> dict[str, np.ndarray]:
        """Model inputs by name."""
        return {"x": self.x}


@dataclass(frozen=True)
class DynamicGraph:
    """One graph (or a disjoint union of graphs) that brings its own edges.

    Attributes:
        x: Node features ``[N, F]``.
        edge_index: ``[2, E]`` int64, row 0 sources, row 1 targets.
        edge_attr: Optional edge features ``[E, D]``.
        batch: Optional graph id per node ``[N]`` (non-decreasing), for readout.
    """

    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray | None = None
    batch: np.ndarray | None = None

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        """E."""
        return int(self.edge_index.shape[1])

    @property
    def num_graphs(self) -> int:
        """Graphs in this (possibly batched) object."""
        if self.batch is None or self.batch.size == 0:
            return 1
        return int(self.batch[-1]) + 1

    def feeds(self, spec: GraphSpec) -> dict[str, np.ndarray]:
        """Model inputs by name, in the order the model declares."""
        out = {"x": self.x, "edge_index": self.edge_index}
        if spec.edge_dim is not None:
            assert self.edge_attr is not None  # guaranteed by validate()
            out["edge_attr"] = self.edge_attr
        if spec.has_batch:
            out["batch"] = (
                self.batch if self.batch is not None else np.zeros(self.num_nodes, np.int64)
            )
        return out


Graph = StaticGraph | DynamicGraph

_GRAPH_KEYS = ("x", "edge_index", "edge_attr", "batch")


def as_graph(data: Any, spec: GraphSpec, *, strict: bool = False) -> Graph:
    """Build the container the spec's form needs from loose user data.

    Booleans are refused wherever numbers are expected (a boolean array, or
    ``true``/``false`` among the values of a nested list): a mask sent where
    readings belong is a client bug, not a number.

    Args:
        data: A :class:`StaticGraph`/:class:`DynamicGraph`, a mapping with keys
            ``x``/``edge_index``/``edge_attr``/``batch`` (numpy arrays or
            nested lists), or a bare array for the static/learned forms.
        spec: The model's graph contract.
        strict: Take inputs exactly as the model's metadata publishes them:
            a static-form ``x`` must be ``[B, N, F]``. False (the Python API's
            convenience) promotes a single ``[N, F]`` graph to ``B = 1``. The
            HTTP and MQTT ``infer`` protocols are strict.

    Returns:
        A validated graph with canonical dtypes (float32 features, int64 indices).

    Raises:
        InvalidInputError: Naming the field at fault.
    """
    if type(data) is np.ndarray and spec.form is not GraphForm.DYNAMIC:
        return _validate_static(data, spec, strict)  # the hot path: a bare [B, N, F] array
    if isinstance(data, StaticGraph | DynamicGraph):
        graph = data
    elif isinstance(data, Mapping):
        unknown = sorted(set(data) - set(_GRAPH_KEYS))
        if unknown:
            raise InvalidInputError(
                unknown[0], f"unknown input field; expected some of {list(_GRAPH_KEYS)}"
            )
        if "x" not in data:
            raise InvalidInputError("x", "missing: node features are required")
        if spec.form is GraphForm.DYNAMIC:
            if "edge_index" not in data:
                raise InvalidInputError(
                    "edge_index", "missing: this model takes a dynamic graph ([2, E] int64)"
                )
            graph = DynamicGraph(
                x=_array("x", data["x"]),
                edge_index=_array("edge_index", data["edge_index"]),
                edge_attr=_array("edge_attr", data["edge_attr"])
                if data.get("edge_attr") is not None
                else None,
                batch=_array("batch", data["batch"]) if data.get("batch") is not None else None,
            )
        else:
            extra = [k for k in ("edge_index", "edge_attr", "batch") if k in data]
            if extra:
                raise InvalidInputError(
                    extra[0],
                    f"this model has a {spec.form} topology built in; send only x [B, N, F]",
                )
            graph = StaticGraph(_array("x", data["x"]))
    else:
        if spec.form is GraphForm.DYNAMIC:
            raise InvalidInputError(
                "edge_index",
                f"received a bare {type(data).__name__}; this model takes a dynamic graph: "
                "pass a mapping with x and edge_index",
            )
        graph = StaticGraph(_array("x", data))
    return validate(graph, spec, strict=strict)


#: What each field holds, for the words of a dtype error.
_EXPECTED_DTYPE = {
    "x": "a float dtype",
    "edge_attr": "a float dtype",
    "edge_index": "an integer dtype (int64)",
    "batch": "an integer dtype (int64)",
}


def _array(field: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            field, f"cannot be read as an array (expected a rectangular numeric array): {exc}"
        ) from None
    if arr.dtype == object:
        raise InvalidInputError(field, "is ragged or holds non-numbers; expected a numeric array")
    if arr.dtype.kind != "b" and isinstance(value, list | tuple) and holds_bool(value):
        # numpy reads [true, 0.5] as [1.0, 0.5]: the boolean would pass as a number.
        expected = _EXPECTED_DTYPE.get(field, "numbers")
        raise InvalidInputError(field, f"expected {expected}, received bool (true/false values)")
    return arr


def holds_bool(values: list[Any] | tuple[Any, ...]) -> bool:
    """Whether a nested list (decoded JSON) holds a boolean anywhere.

    One C-level pass per list (``set(map(type, ...))``): about 18 µs for a
    flat 1,040-value window, against ~300 µs to parse its JSON.
    """
    kinds = set(map(type, values))
    if bool in kinds or np.bool_ in kinds:
        return True
    if list in kinds or tuple in kinds:
        return any(holds_bool(v) for v in values if type(v) in (list, tuple))
    return False


_F32 = np.dtype(np.float32)
#: Below this many elements the finiteness mask is cheapest; above, a sum avoids the temporary.
_MASK_LIMIT = 1 << 16


def _all_finite(arr: np.ndarray) -> bool:
    """Exactly whether every element of a float array is finite (no NaN, no +-Inf)."""
    if arr.size <= _MASK_LIMIT:
        # One SIMD pass that raises no FP flags, then a count (cheaper than .all(), a
        # ufunc reduction): at request sizes faster than a sum, which would need
        # np.errstate and an overflow fallback.
        return int(np.count_nonzero(np.isfinite(arr))) == arr.size
    # Large arrays: one reduction and no temporary. A sum is non-finite iff an element
    # is NaN/Inf or finite values overflow; only then does the exact mask run.
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(arr.sum())
    return math.isfinite(total) or int(np.count_nonzero(np.isfinite(arr))) == arr.size


def _float_field(field: str, arr: np.ndarray, rank: int, shape_hint: str) -> np.ndarray:
    if arr.ndim != rank:
        raise InvalidInputError(
            field, f"expected rank {rank} {shape_hint}, received rank {arr.ndim} {list(arr.shape)}"
        )
    if arr.dtype != _F32 or not arr.flags.c_contiguous:  # else: used as is, no copy
        if arr.dtype == object:
            raise InvalidInputError(
                field, "is ragged or holds non-numbers; expected a numeric array"
            )
        # Integers are exact readings; booleans are not numbers (refused, never coerced).
        convertible = np.issubdtype(arr.dtype, np.integer)
        if not (np.issubdtype(arr.dtype, np.floating) or convertible):
            raise InvalidInputError(field, f"expected a float dtype, received {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not _all_finite(arr):
        finite = np.isfinite(arr)
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        n_bad = int((~finite).sum())
        raise InvalidInputError(
            field, f"contains {n_bad} NaN/Inf value(s), first at index {list(bad)}"
        )
    return arr


def _index_field(field: str, arr: np.ndarray) -> np.ndarray:
    if arr.size == 0 and np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.int64)  # an empty nested list ([[], []]) reads as float64
    if not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
        raise InvalidInputError(field, f"expected an integer dtype (int64), received {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def validate(graph: Graph, spec: GraphSpec, *, strict: bool = False) -> Graph:
    """Check a graph against the model's contract and canonicalise dtypes.

    Args:
        graph: The request.
        spec: The model's graph contract.
        strict: Refuse a static-form ``x`` of rank 2 instead of promoting it
            to ``B = 1`` (see :func:`as_graph`).

    Returns:
        The graph with float32 features and int64 indices.

    Raises:
        InvalidInputError: Wrong form, dtype (booleans included), rank, shape or feature count;
            negative or out-of-range edge indices; NaN/Inf; a graph larger
            than the model's limits (padding buckets are checked where an engine
            needs them, see :func:`~edge_sdk.packing.pick_bucket`).
    """
    if spec.form is GraphForm.DYNAMIC:
        if not isinstance(graph, DynamicGraph):
            raise InvalidInputError(
                "edge_index", "missing: this model takes a dynamic graph (x [N, F], edge_index)"
            )
        return _validate_dynamic(graph, spec)
    if not isinstance(graph, StaticGraph):
        raise InvalidInputError(
            "edge_index", f"this model has a {spec.form} topology built in; send only x [B, N, F]"
        )
    return _validate_static(graph, spec, strict)


def _validate_static(
    graph: StaticGraph | np.ndarray, spec: GraphSpec, strict: bool = False
) -> StaticGraph:
    given = graph.x if isinstance(graph, StaticGraph) else graph
    if type(given) is not np.ndarray or given.dtype.kind == "O":
        given = _array("x", given)
    if given.ndim == 2 and strict:
        raise InvalidInputError(
            "x",
            f"expected rank 3 [B, N, F], received rank 2 {list(given.shape)}; "
            f"send one graph as [1, {given.shape[0]}, {given.shape[1]}]",
        )
    x = given[None] if given.ndim == 2 else given
    x = _float_field("x", x, 3, "[B, N, F]")
    b, n, f = x.shape
    if n != spec.num_nodes:
        raise InvalidInputError(
            "x", f"expected {spec.num_nodes} nodes on axis 1 ([B, N, F]), received {n}"
        )
    if f != spec.num_features:
        raise InvalidInputError(
            "x", f"expected {spec.num_features} features on axis 2 ([B, N, F]), received {f}"
        )
    if b == 0:
        raise InvalidInputError("x", "batch is empty (B = 0)")
    if b > spec.max_batch:
        raise InvalidInputError(
            "x", f"batch of {b} graphs exceeds the model's max_batch {spec.max_batch}"
        )
    return graph if isinstance(graph, StaticGraph) and x is given else StaticGraph(x)


def _validate_dynamic(graph: DynamicGraph, spec: GraphSpec) -> DynamicGraph:
    x = _float_field("x", graph.x, 2, "[N, F]")
    n, f = x.shape
    if f != spec.num_features:
        raise InvalidInputError(
            "x", f"expected {spec.num_features} features on axis 1 ([N, F]), received {f}"
        )
    if n == 0:
        raise InvalidInputError("x", "graph has no nodes (N = 0)")
    # Padding buckets bound what static-shape engines take (``pick_bucket`` says so by
    # name); engines taking any shape run larger graphs, up to the model's limits.
    if n > spec.max_nodes:
        raise InvalidInputError(
            "x", f"graph has {n} nodes, beyond the model's max_nodes ({spec.max_nodes})"
        )

    ei = _index_field("edge_index", graph.edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise InvalidInputError("edge_index", f"expected shape [2, E], received {list(ei.shape)}")
    e = ei.shape[1]
    if e > spec.max_edges:
        raise InvalidInputError(
            "edge_index", f"graph has {e} edges, beyond the model's limit ({spec.max_edges})"
        )
    if e and (ei.min() < 0 or ei.max() >= n):
        if (neg := ei < 0).any():
            col = int(np.argwhere(neg)[0][1])
            raise InvalidInputError(
                "edge_index",
                f"{int(neg.sum())} negative index(es), first at column {col} "
                f"({int(ei[:, col].min())})",
            )
        if (high := ei >= n).any():
            col = int(np.argwhere(high)[0][1])
            raise InvalidInputError(
                "edge_index",
                f"index {int(ei[:, col].max())} at column {col} is out of range for {n} nodes "
                f"(valid 0..{n - 1})",
            )

    edge_attr = None
    if spec.edge_dim is not None:
        if graph.edge_attr is None:
            raise InvalidInputError("edge_attr", f"missing: the model expects [E, {spec.edge_dim}]")
        edge_attr = _float_field("edge_attr", graph.edge_attr, 2, "[E, D]")
        if edge_attr.shape != (e, spec.edge_dim):
            raise InvalidInputError(
                "edge_attr",
                f"expected shape [{e}, {spec.edge_dim}], received {list(edge_attr.shape)}",
            )
    elif graph.edge_attr is not None:
        raise InvalidInputError(
            "edge_attr",
            f"this model takes no edge features; received {list(np.shape(graph.edge_attr))}",
        )

    batch = None
    if graph.batch is not None:
        batch = _index_field("batch", graph.batch)
        if batch.shape != (n,):
            raise InvalidInputError(
                "batch",
                f"expected shape [{n}] (one graph id per node), received {list(batch.shape)}",
            )
        steps = np.diff(batch)
        if batch.size and (batch[0] < 0 or (steps < 0).any()):
            i = 0 if batch[0] < 0 else int(np.argmax(steps < 0)) + 1
            raise InvalidInputError(
                "batch",
                "graph ids must be non-negative and non-decreasing (nodes grouped by graph); "
                f"received {int(batch[i])} at node {i}"
                + (f" after {int(batch[i - 1])}" if i else ""),
            )
        if batch.size and (steps > 1).any():
            i = int(np.argmax(steps > 1)) + 1
            raise InvalidInputError(
                "batch",
                "graph ids must be contiguous (0, 1, 2, ... no gaps); "
                f"received {int(batch[i])} after {int(batch[i - 1])} at node {i}",
            )
        if batch.size and batch[0] != 0:
            raise InvalidInputError("batch", f"graph ids must start at 0, received {int(batch[0])}")
        if not spec.has_batch and int(batch[-1]) > 0:
            raise InvalidInputError(
                "batch",
                "this model reads out one graph at a time; it takes no batch vector "
                f"(received ids of {int(batch[-1]) + 1} graphs)",
            )
        if not spec.has_batch:
            batch = None
    return DynamicGraph(x=x, edge_index=ei, edge_attr=edge_attr, batch=batch)


def with_batch(graph: DynamicGraph) -> DynamicGraph:
    """Return ``graph`` with an explicit all-zero batch vector when it has none."""
    if graph.batch is not None:
        return graph
    return replace(graph, batch=np.zeros(graph.num_nodes, np.int64))


def zero_request(spec: GraphSpec) -> dict[str, np.ndarray]:
    """The smallest valid request for ``spec``, all zeros (to warm an engine up).

    One ``[1, N, F]`` window for the static and learned forms; a two-node,
    two-edge graph for the dynamic form.
    """
    if spec.form is not GraphForm.DYNAMIC:
        assert spec.num_nodes is not None  # required for these forms by GraphSpec
        return {"x": np.zeros((1, spec.num_nodes, spec.num_features), np.float32)}
    inputs: dict[str, np.ndarray] = {
        "x": np.zeros((2, spec.num_features), np.float32),
        "edge_index": np.array([[0, 1], [1, 0]], np.int64),
    }
    if spec.edge_dim is not None:
        inputs["edge_attr"] = np.zeros((2, spec.edge_dim), np.float32)
    return inputs
