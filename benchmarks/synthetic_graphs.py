"""Seeded synthetic power-law graphs for the scale benchmarks (numpy only, no downloads).

:func:`power_law_graph` grows a Barabási–Albert-like graph by preferential
attachment, vectorised: new node ``t`` sends ``m`` edges; each edge picks,
with probability ``uniform``, a uniformly random earlier node, otherwise a
random endpoint of a random *earlier* edge (an endpoint is drawn in
proportion to its degree: that is preferential attachment). An edge that
copies the target of an earlier edge points at that edge, and the chains of
such copies are resolved by pointer jumping (``log2(E)`` vectorised rounds
instead of a Python loop over edges). The graph is made undirected (both
directions), without self loops or duplicate edges, so about ``2 m`` directed
edges per node with a heavy-tailed degree distribution (hubs of a few
hundred edges at 100k nodes).

Features are standard normal; labels are a seeded linear read-out of the
features (``argmax(x @ R)``), so they are learnable but the benchmark does
not train: latency, size and parity do not depend on the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticGraph:
    """One synthetic graph.

    Attributes:
        x: ``[N, F]`` float32 node features.
        edge_index: ``[2, E]`` int64 directed edges (both directions of each link).
        y: ``[N]`` int64 labels.
        seed: The seed it was generated with.
    """

    x: np.ndarray
    edge_index: np.ndarray
    y: np.ndarray
    seed: int

    @property
    def num_nodes(self) -> int:
        """Nodes ``N``."""
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        """Directed edges ``E``."""
        return int(self.edge_index.shape[1])

    def degree_stats(self) -> dict[str, float]:
        """Mean, median and largest in-degree."""
        deg = np.bincount(self.edge_index[1], minlength=self.num_nodes)
        return {
            "mean": float(deg.mean()),
            "median": float(np.median(deg)),
            "max": int(deg.max()),
        }


def attachment_targets(
    num_nodes: int, m: int, uniform: float, rng: np.random.Generator
) -> np.ndarray:
    """Targets of the ``m`` edges each node ``t >= m`` sends, ``[(N - m) * m]``.

    Edge ``k`` (of node ``t = m + k // m``) picks a uniform node ``< t`` with
    probability ``uniform``; otherwise an earlier edge ``j < t0 * m`` (``t0`` the
    first edge of node ``t``) and, with probability 1/2, its source (node
    ``m + j // m``) or its target (resolved by pointer jumping).
    """
    n_edges = (num_nodes - m) * m
    k = np.arange(n_edges, dtype=np.int64)
    src_node = m + k // m
    first_edge = (k // m) * m  # edges of earlier nodes only: no edge copies its sibling
    target = rng.integers(0, src_node)  # the uniform choice, and the seed graph's edges
    ptr = np.full(n_edges, -1, np.int64)
    attach = (rng.random(n_edges) >= uniform) & (first_edge > 0)
    earlier = (rng.random(n_edges) * np.maximum(first_edge, 1)).astype(np.int64)
    take_source = rng.random(n_edges) < 0.5
    src_pick = attach & take_source
    target[src_pick] = m + earlier[src_pick] // m
    copy = attach & ~take_source
    ptr[copy] = earlier[copy]
    # Pointer jumping: every copy chain ends at an edge whose target is settled.
    while True:
        open_ = np.nonzero(ptr >= 0)[0]
        if not open_.size:
            break
        p = ptr[open_]
        done = ptr[p] < 0
        target[open_[done]] = target[p[done]]
        ptr[open_[done]] = -1
        ptr[open_[~done]] = ptr[p[~done]]
    return target


def power_law_graph(
    num_nodes: int,
    edges_per_node: int = 10,
    num_features: int = 128,
    num_classes: int = 16,
    *,
    uniform: float = 0.1,
    seed: int = 0,
) -> SyntheticGraph:
    """A seeded undirected power-law graph with ~``edges_per_node`` directed edges per node.

    Args:
        num_nodes: Nodes ``N`` (> ``edges_per_node // 2``).
        edges_per_node: Directed edges per node (each link counts twice), even.
        num_features: Feature width ``F``.
        num_classes: Label classes.
        uniform: Share of edges attached uniformly instead of preferentially.
        seed: Seed of everything.

    Returns:
        The graph; ``E`` is slightly below ``N * edges_per_node`` (duplicates removed).
    """
    m = max(1, edges_per_node // 2)
    if num_nodes <= m:
        raise ValueError(f"num_nodes must exceed edges_per_node // 2 = {m}, got {num_nodes}")
    rng = np.random.default_rng(seed)
    tgt = attachment_targets(num_nodes, m, uniform, rng)
    src = m + np.arange(tgt.size, dtype=np.int64) // m
    # Undirected, no self loops, no duplicate links.
    a, b = np.minimum(src, tgt), np.maximum(src, tgt)
    keep = a != b
    links = np.unique(a[keep] * num_nodes + b[keep])
    a, b = links // num_nodes, links % num_nodes
    edge_index = np.stack([np.concatenate([a, b]), np.concatenate([b, a])])
    x = rng.standard_normal((num_nodes, num_features), dtype=np.float32)
    readout = rng.standard_normal((num_features, num_classes), dtype=np.float32)
    y = (x @ readout).argmax(axis=1).astype(np.int64)
    return SyntheticGraph(x=x, edge_index=edge_index.astype(np.int64), y=y, seed=seed)
