"""Default padding buckets of a dynamic-form table model (when none were given).

Static-shape engines (LiteRT, OpenVINO NPU, TensorRT) run a table-input model
only at fixed table shapes, one artifact per padding bucket. When the export
names none (``--bucket`` / ``ExportConfig(buckets=...)``) and a profile asks
for such an engine, :func:`default_buckets` derives them from the samples:
the powers of two that hold the largest sample, and a second bucket
:data:`HEADROOM` times larger for requests above the samples' sizes. Device
profiles declare no buckets, so the samples are the only source.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_sdk.io_contract import Bucket
from edge_sdk.neighbour_tables import next_pow2
from edge_sdk.profiles import DeviceProfile

from .intake import Sample

#: The larger default bucket holds this many times the smaller one's sizes.
HEADROOM = 4


def needs_buckets(profiles: Sequence[DeviceProfile]) -> list[str]:
    """The targets of ``profiles`` that need fixed shapes (static-shape engines)."""
    return sorted({t.key for p in profiles for t in p.targets if t.static_shapes})


def sample_sizes(samples: Sequence[Sample]) -> tuple[int, int, int]:
    """The largest nodes, edges and graphs (a ``batch`` vector's count) of ``samples``."""
    nodes = edges = graphs = 1
    for s in samples:
        nodes = max(nodes, int(s.inputs["x"].shape[0]))
        edge_index = s.inputs.get("edge_index")
        edges = max(edges, 0 if edge_index is None else int(np.shape(edge_index)[1]))
        batch = s.inputs.get("batch")
        if batch is not None and np.size(batch):
            graphs = max(graphs, int(np.max(batch)) + 1)
    return nodes, edges, graphs


def default_buckets(
    samples: Sequence[Sample], has_batch: bool, max_nodes: int, max_edges: int
) -> list[Bucket]:
    """Two buckets: powers of two holding the largest sample, and :data:`HEADROOM` x that.

    Edges are at least one per node (samples without edges still leave room for
    requests with some); graphs count only for a model with a ``batch`` input.
    Sizes stay within the export's ``max_nodes`` / ``max_edges``.

    Args:
        samples: The export's samples (dynamic form).
        has_batch: Whether the model takes a ``batch`` vector (several graphs per request).
        max_nodes: The largest request the runtime accepts.
        max_edges: The largest edge count the runtime accepts.
    """
    nodes, edges, graphs = sample_sizes(samples)
    n, e = next_pow2(max(nodes, 2)), next_pow2(max(edges, nodes, 1))
    g = next_pow2(graphs) if has_batch else 1
    buckets = []
    for scale in (1, HEADROOM):
        b = Bucket(
            max_nodes=max(2, min(n * scale, max_nodes)),
            max_edges=min(e * scale, max_edges),
            max_graphs=g * scale if has_batch else 1,
        )
        if b not in buckets:
            buckets.append(b)
    return buckets
