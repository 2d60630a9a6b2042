"""The zoo's seeded synthetic tasks: homophilous node graphs, and graph batches whose
class shows in features and density (``samples/models/zoo.py`` trains and measures on them)."""

from __future__ import annotations

import numpy as np


def node_graph(
    rng: np.random.Generator, n: int, centroids: np.ndarray, edge_dim: int = 0
) -> dict[str, np.ndarray]:
    """A homophilous graph: 4 undirected edges per node, 80 % to a node of the same class.

    Features are noise plus a weak class signal, so a node alone is often
    misread and its neighbours decide (a model that ignores edges does worse).
    ``edge_dim`` > 0 adds ``edge_attr``: noise, its first column shifted up on
    edges between nodes of the same class.
    """
    y = rng.integers(0, len(centroids), n)
    x = rng.normal(0.0, 1.0, (n, centroids.shape[1])) + 0.5 * centroids[y]
    src = rng.integers(0, n, 4 * n)
    dst = rng.integers(0, n, 4 * n)
    by_class = [np.flatnonzero(y == c) for c in range(len(centroids))]
    for i in np.flatnonzero(rng.random(4 * n) < 0.8):
        same = by_class[y[src[i]]]
        dst[i] = same[rng.integers(0, len(same))]
    ei = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)
    g = {"x": x.astype(np.float32), "edge_index": ei.astype(np.int64), "y": y.astype(np.int64)}
    if edge_dim:
        attr = rng.normal(0.0, 1.0, (ei.shape[1], edge_dim))
        attr[:, 0] += 1.5 * (y[ei[0]] == y[ei[1]])
        g["edge_attr"] = attr.astype(np.float32)
    return g


def graph_batch(
    rng: np.random.Generator, graphs: int, centroids: np.ndarray
) -> dict[str, np.ndarray]:
    """``graphs`` small graphs (8 to 24 nodes) as one disjoint union with ``batch``.

    A graph's class shows in a third of its nodes (a class signal on their
    features) and in its density (class ``c`` has ``c + 1`` extra edges per
    node beside a ring), so pooling over the whole graph decides.
    """
    xs, eis, batch, ys, offset = [], [], [], [], 0
    for g in range(graphs):
        c = int(rng.integers(0, len(centroids)))
        n = int(rng.integers(8, 25))
        x = rng.normal(0.0, 1.0, (n, centroids.shape[1]))
        marked = rng.random(n) < 1 / 3
        x[marked] += 0.8 * centroids[c]
        ring = np.stack([np.arange(n), (np.arange(n) + 1) % n])
        extra = rng.integers(0, n, (2, (c + 1) * n // 2))
        ei = np.concatenate([ring, extra], axis=1)
        ei = np.concatenate([ei, ei[::-1]], axis=1) + offset
        xs.append(x)
        eis.append(ei)
        batch.append(np.full(n, g))
        ys.append(c)
        offset += n
    return {
        "x": np.concatenate(xs).astype(np.float32),
        "edge_index": np.concatenate(eis, axis=1).astype(np.int64),
        "batch": np.concatenate(batch).astype(np.int64),
        "y": np.asarray(ys, dtype=np.int64),
    }
