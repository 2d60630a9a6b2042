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
    assert set(doc["stamps"]) == {"scale", "host_tables"}  # --cora-models none
    for stamp in doc["stamps"].values():
        assert stamp["run"] == meta["date"] and stamp["threads"] == 1 and stamp["wall_s"] >= 0
        assert stamp["git"]["start"]["commit"] and "start" in stamp["loadavg_1min"]
    md = (tmp_path / "smoke.md").read_text()
    assert "ONNX Runtime FP32" in md and "threads 1" in md and "different runs" not in md

    # --only host --merge: that section is replaced, the synthetic one kept with its stamp
    before = doc
    argv = ["--only", "host", "--sizes", "300", "--host-runs", "4"]
    assert graph_scale.main([*argv, "--merge", str(tmp_path / "smoke.json")]) == 0
    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert doc["scale"] == before["scale"] and doc["stamps"]["scale"] == before["stamps"]["scale"]
    assert doc["stamps"]["host_tables"]["command"].endswith(
        "--only host --sizes 300 --host-runs 4 --merge " + str(tmp_path / "smoke.json")
    )
    assert all(h["calls"] == 4 for h in doc["host_tables"] if h["nodes"] != 300)
    md = (tmp_path / "smoke.md").read_text()
    assert "merges sections from 2 different runs" in md
    assert md.count("*Run:*") == 2


def test_old_results_render_with_one_stamp_per_section() -> None:
    from graph_scale_report import render_md, upgrade

    doc = {
        "meta": {
            "date": "2026-01-01T00:00:00+00:00", "machine": "x", "cpus": 2, "python": "3",
            "versions": {}, "threads": 1, "seed": 0, "command": "python b.py", "wall_s": 60.0,
            "git": {"start": {"commit": "abc", "uncommitted_files": []},
                    "end": {"commit": "abc", "uncommitted_files": []}, "commits_during_run": []},
            "loadavg_1min": {"start": 0.5, "end": 0.6},
            "repeats": {"scale_engine": 3, "cora": 4, "host_tables": 5}, "workload": "w",
        },
        "scale": [],
        "host_tables": [],
    }  # fmt: skip
    up = upgrade(doc)
    assert set(up["stamps"]) == {"scale", "host_tables"}
    assert up["stamps"]["scale"]["run"] == "2026-01-01T00:00:00+00:00"
    md = render_md(doc)
    assert md.count("*Run:*") == 1 and "commit abc" in md and "different runs" not in md


def test_best_cora_artifact_is_fastest_whole_model_row() -> None:
    rows = {
        "tables/ort-fp32": {"median_ms": 8.0, "speedup_vs_pyg": 2.5, "acc_delta_pp": 0.0},
        "tables/ort-int8": {"median_ms": 6.0, "speedup_vs_pyg": 3.3, "acc_delta_pp": -0.4},
        "dense/ort-fp32": {"median_ms": 19.0, "speedup_vs_pyg": 1.05},
        "matmul-only/ort-int8": {"median_ms": 4.0},  # not a whole model
        "tables/litert-int8": {"built": False, "reason": "x"},
    }
    rows["tables/ort-int8"]["over_matmul_only"] = 1.5
    best = graph_scale.best_artifact({"model": "gcn", "rows": rows})
    assert best is not None and best["row"] == "tables/ort-int8"
    assert best["bar"] == 2.0 and best["meets_bar"] and best["acc_delta_pp"] == -0.4
    assert best["over_matmul_only"] == 1.5
    args = graph_scale.parse_args([])
    assert graph_scale.cora_engines_for("dense", args) == ["ort-fp32", "ov-fp32"]
    assert graph_scale.cora_engines_for("tables", args) == list(graph_scale.ENGINES)
