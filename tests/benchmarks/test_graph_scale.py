"""benchmarks/graph_scale.py at a tiny scale: the JSON it writes, and the synthetic graphs.

Asserts the result's fields and parity numbers, never timings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import graph_scale  # noqa: E402
from synthetic_graphs import power_law_graph  # noqa: E402

pytestmark = pytest.mark.requires_backend("onnxruntime")


def test_power_law_graph_is_seeded_undirected_and_heavy_tailed() -> None:
    g = power_law_graph(2000, 10, 16, 4, seed=3)
    again = power_law_graph(2000, 10, 16, 4, seed=3)
    other = power_law_graph(2000, 10, 16, 4, seed=4)
    assert np.array_equal(g.edge_index, again.edge_index) and np.array_equal(g.x, again.x)
    assert not np.array_equal(g.edge_index, other.edge_index)
    src, dst = g.edge_index
    assert (src != dst).all()  # no self loops
    assert g.edge_index.min() >= 0 and g.edge_index.max() < 2000
    links = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert len(links) == g.num_edges  # no duplicates
    assert all((b, a) in links for a, b in links)  # undirected
    assert 9.0 < g.num_edges / 2000 <= 10.0  # ~10 directed edges per node
    deg = g.degree_stats()
    assert deg["max"] > 5 * deg["mean"]  # hubs: preferential attachment, not uniform
    assert g.x.shape == (2000, 16) and g.x.dtype == np.float32
    assert g.y.shape == (2000,) and set(np.unique(g.y)) <= set(range(4))


def test_tiny_run_writes_fields_and_parity(tmp_path: Path) -> None:
    argv = [
        "--sizes", "300", "--models", "gcn", "--engines", "ort-fp32",
        "--cora-models", "none", "--repeats", "2", "--host-runs", "3",
        "--out", str(tmp_path), "--name", "smoke",
    ]  # fmt: skip
    assert graph_scale.main(argv) == 0
    doc = json.loads((tmp_path / "smoke.json").read_text())
    meta = doc["meta"]
    assert meta["threads"] == 1 and meta["machine"] and meta["date"]
    assert {"torch", "onnxruntime", "edge-graph-sdk"} <= set(meta["versions"])
    (row,) = doc["scale"]
    assert row["graph"]["nodes"] == 300 and row["model"] == "gcn"
    assert row["export"]["aggregation"] == "tables"
    assert row["budget_bytes"] == row["weights_bytes"] + 8 * row["graph"]["edges"]
    eager, ort = row["pyg_eager"], row["engines"]["ort-fp32"]
    for r in (eager, ort):
        assert r["calls"] == 2 and r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"]
        assert r["peak_rss_mb"] >= r["rss_ready_mb"] > 0
    assert ort["built"] and ort["size_bytes"] > 0
    assert ort["max_abs_err"] < 1e-4 and ort["argmax_agreement"] == 1.0
    assert ort["size_vs_budget"] == pytest.approx(ort["size_bytes"] / row["budget_bytes"])
    assert ort["speedup_vs_pyg"] == pytest.approx(eager["median_ms"] / ort["median_ms"])
    for h in doc["host_tables"]:
        assert h["calls"] >= 3 and h["table_bytes"] > 0 and h["widths"][0] == 1
    md = (tmp_path / "smoke.md").read_text()
    assert "ONNX Runtime FP32" in md and "Threads: 1" in md
