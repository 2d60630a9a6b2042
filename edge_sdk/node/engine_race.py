"""Which engine scores events fastest on this machine, timed when the node loads a model.

A bundle's export picks an engine per device profile from its declared order
(``intel-core-cpu``: OpenVINO INT8 first, ONNX Runtime FP32 as its fallback),
both parity-checked. For an event graph that order can be wrong on a given CPU:
every request is a small subgraph of a new size, and an engine with a high
per-call or per-shape cost (OpenVINO with dynamic shapes re-plans each new
shape) spends more time per event than a plain one. Measured on the fraud
sample's GATv2 (x86 with AVX-512 VNNI, 1 thread): OpenVINO INT8 2.4 ms of CPU
per single subgraph and 0.25-0.50 ms per event in 32-subgraph unions, ONNX
Runtime FP32 0.62 and 0.13-0.14 ms. Which one wins depends on the CPU and the
engine versions, so the node does not assume it: it times every engine the
export chose for the profile on synthetic subgraphs of varying size (alone
and merged, as the worker runs them) and keeps the fastest, the export's
first choice unless another is clearly faster (:data:`MARGIN`). The timings
and the choice are logged and kept in ``Runtime.describe()["why"]``; the node's
status message names the engine (``backend``, ``precision``).

A ``backend`` or ``precision`` in the node config is obeyed as it is, untimed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime import Runtime

if TYPE_CHECKING:
    from ..manifest import Manifest
    from .config import NodeConfig

log = logging.getLogger(__name__)

#: Synthetic subgraphs timed per engine (sizes vary, as real requests do).
GRAPHS = 48
#: Another engine replaces the export's first choice only when this much faster.
MARGIN = 1.2


def load_runtime(cfg: NodeConfig, bundle_dir: Path) -> Runtime:
    """Load ``bundle_dir`` as the node config says; an event graph on its fastest engine."""

    def load(backend: str | None = None, precision: str | None = None) -> Runtime:
        return Runtime.load(
            bundle_dir,
            profile=cfg.profile,
            backend=backend or cfg.backend,
            threads=cfg.threads,
            precision=precision or cfg.precision,
            trusted_keys=cfg.trusted_keys or None,
        )

    rt = load()
    if cfg.backend or cfg.precision or getattr(rt.manifest, "event_graph", None) is None:
        return rt
    return fastest(rt, load, cfg.max_batch)


def fastest(first: Runtime, load: Callable[[str, str], Runtime], max_batch: int) -> Runtime:
    """``first`` or, when clearly faster per event here, another engine of its profile.

    Args:
        first: The runtime the profile's order gave.
        load: Loads the bundle on ``(backend, precision)``.
        max_batch: Subgraphs merged into one call by the worker.
    """
    m = first.manifest
    mine = first.artifact.name
    profile = next((t.profile for t in m.targets if t.artifact == mine), None)
    others = [
        (t.backend, str(t.precision))
        for t in m.targets
        if t.profile == profile and t.artifact and t.artifact != mine
    ]
    if not others:
        return first
    graphs = synthetic_graphs(m, GRAPHS)
    best, best_ms = first, cost_ms(first, graphs, max_batch)
    notes = [f"{_label(first)} {best_ms:.3f}"]
    for backend, precision in others:
        try:
            rt = load(backend, precision)
        except Exception as exc:  # not installed here, or does not load: not a candidate
            notes.append(f"{backend} {precision} did not load ({type(exc).__name__})")
            continue
        try:
            ms = cost_ms(rt, graphs, max_batch)
        except Exception as exc:
            notes.append(f"{_label(rt)} failed ({type(exc).__name__}: {exc})"[:200])
            rt.close()
            continue
        notes.append(f"{_label(rt)} {ms:.3f}")
        if ms * MARGIN < best_ms:
            if best is not first:
                best.close()
            best, best_ms = rt, ms
        else:
            rt.close()
    if best is not first:
        first.close()
    note = (
        f"event graph: CPU ms per event, single + merged subgraphs, timed at load: "
        f"{'; '.join(notes)} -> {_label(best)}"
    )
    best.note(note)
    log.info("%s", note)
    return best


def cost_ms(rt: Runtime, graphs: list[dict[str, np.ndarray]], max_batch: int) -> float:
    """CPU milliseconds per event: one subgraph alone plus one in a merged call.

    Process CPU time, not wall time: the node's other threads are idle while it
    loads, and a machine shared with other work skews wall time (best of two).
    """
    rt.infer_batch(graphs[:2])  # lazy setup out of the timing
    rt.infer_batch(graphs[:1])
    size = max(1, min(max_batch, len(graphs)))
    runs = []
    for _ in range(2):
        t0 = time.process_time()
        for g in graphs[: len(graphs) // 2]:
            rt.infer_batch([g])
        t1 = time.process_time()
        for i in range(0, len(graphs), size):
            rt.infer_batch(graphs[i : i + size])
        t2 = time.process_time()
        runs.append((t1 - t0) / (len(graphs) // 2) + (t2 - t1) / len(graphs))
    return min(runs) * 1e3


def synthetic_graphs(m: Manifest, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` random subgraphs shaped as the model takes them, of varying size.

    Up to the smallest padding bucket (the size one request was exported for),
    else 64 nodes; about two edges per node; no self-loops.
    """
    spec = m.graph
    rng = np.random.default_rng(seed)
    small = min(spec.buckets, key=lambda b: b.max_nodes) if spec.buckets else None
    top = small.max_nodes if small else 64
    per_node = small.max_edges / small.max_nodes if small else 2.0
    out: list[dict[str, Any]] = []
    for _ in range(n):
        nodes = int(rng.integers(max(2, top // 8), top + 1))
        edges = max(1, int(nodes * min(2.0, per_node)))
        src = rng.integers(0, nodes, edges)
        dst = (src + rng.integers(1, nodes, edges)) % nodes
        g = {
            "x": rng.standard_normal((nodes, spec.num_features)).astype(np.float32),
            "edge_index": np.stack([src, dst]).astype(np.int64),
        }
        if spec.edge_dim:
            g["edge_attr"] = rng.standard_normal((edges, spec.edge_dim)).astype(np.float32)
        out.append(g)
    return out


def _label(rt: Runtime) -> str:
    return f"{rt.backend.name} {rt.artifact.precision}"
