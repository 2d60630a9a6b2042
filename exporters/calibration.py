"""Calibration inputs for INT8, drawn from the user's sample graphs.

Activation ranges depend on graph size (degree-normalised sums, attention over
more neighbours), so calibration must see the sizes the device will see. Each
sample contributes itself; a dynamic-form sample larger than ``min_nodes``
also contributes BFS neighbourhoods of decreasing size (1/2, 1/4, ... of its
nodes, down to ``min_nodes``), so one big graph such as Cora still covers
small requests. Static forms contribute their stacked graphs one by one.

Minimum: one sample graph per size regime the model will serve. MinMax works
with a handful of items; percentile and entropy estimate histograms and want
at least 8 to 16 items (``--calibration``, default 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .intake import Sample
from .prepare import Prepared


def calibration_feeds(
    prepared: Prepared, samples: Sequence[Sample], limit: int, min_nodes: int = 32, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Return up to ``limit`` feed dicts for calibration (full samples first).

    Args:
        prepared: The prepared model (its input names and form).
        samples: The user's sample graphs.
        limit: Maximum number of items.
        min_nodes: Smallest neighbourhood drawn from a large dynamic graph.
        seed: Seed for the neighbourhood centres.
    """
    rng = np.random.default_rng(seed)
    full = [prepared.feeds(s) for s in samples]
    extra: list[dict[str, np.ndarray]] = []
    for feeds in full:
        if "edge_index" in feeds:
            extra.extend(_neighbourhoods(feeds, min_nodes, rng))
        elif feeds["x"].shape[0] > 1:
            extra.extend({"x": feeds["x"][i : i + 1]} for i in range(feeds["x"].shape[0]))
    return (full + extra)[: max(1, limit)]


def _neighbourhoods(
    feeds: dict[str, np.ndarray], min_nodes: int, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    n = feeds["x"].shape[0]
    out = []
    size = n // 2
    while size >= min_nodes:
        nodes = _bfs(feeds["edge_index"], n, int(rng.integers(n)), size)
        out.append(induced_subgraph(feeds, nodes))
        size //= 2
    return out


def _bfs(edge_index: np.ndarray, n: int, start: int, size: int) -> np.ndarray:
    """Up to ``size`` nodes reached from ``start`` (undirected), topped up at random."""
    src = np.concatenate([edge_index[0], edge_index[1]])
    dst = np.concatenate([edge_index[1], edge_index[0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    ptr = np.searchsorted(src, np.arange(n + 1))
    seen = np.zeros(n, bool)
    seen[start] = True
    frontier = [start]
    picked = [start]
    while frontier and len(picked) < size:
        nxt = []
        for u in frontier:
            for v in dst[ptr[u] : ptr[u + 1]]:
                if not seen[v]:
                    seen[v] = True
                    picked.append(int(v))
                    nxt.append(int(v))
        frontier = nxt
    if len(picked) < size:  # a small component: top up with unseen nodes
        rest = np.flatnonzero(~seen)
        picked.extend(rest[: size - len(picked)].tolist())
    return np.sort(np.asarray(picked[:size]))


def induced_subgraph(feeds: dict[str, np.ndarray], nodes: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds of the subgraph induced by ``nodes`` (sorted ids), renumbered from 0."""
    n = feeds["x"].shape[0]
    remap = np.full(n, -1, np.int64)
    remap[nodes] = np.arange(nodes.size)
    ei = feeds["edge_index"]
    keep = (remap[ei[0]] >= 0) & (remap[ei[1]] >= 0)
    sub = {"x": feeds["x"][nodes], "edge_index": remap[ei[:, keep]]}
    if "edge_attr" in feeds:
        sub["edge_attr"] = feeds["edge_attr"][keep]
    if "batch" in feeds:
        # Graph ids must stay contiguous from 0 after taking a subset.
        _, sub["batch"] = np.unique(feeds["batch"][nodes], return_inverse=True)
    return {k: sub[k] for k in feeds}
