"""The fraud report from a hand-made results dict: no training, so it runs in a second or two.

The end-to-end run (``tests/samples/test_fraud_demo.py``) checks that the demo
fills the dict with real numbers; here the report is checked against the
schema in ``samples/fraud/report.py``: every table shows the dict's numbers,
the plots exist and are linked, and the report says SYNTHETIC.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sample_scripts import fraud_module

PATTERNS = ("ring", "mule", "burst", "takeover")
GNN, BASE = "GATv2 FP32 (PyTorch)", "HGB baseline"


def _results_and_arrays() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.02).astype(np.int8)
    pattern = np.where(y == 1, rng.integers(1, 5, 2000), 0).astype(np.int8)
    scores = {
        GNN: y * 0.6 + rng.random(2000) * 0.5,
        "GraphSAGE FP32 (PyTorch)": y * 0.4 + rng.random(2000) * 0.5,
        BASE: y * 0.2 + rng.random(2000) * 0.5,
        "GATv2 INT8 ONNX Runtime": y * 0.6 + rng.random(2000) * 0.5,
    }
    metrics = {}
    for k, (name, _) in enumerate(scores.items()):
        per = {
            p: {
                "pr_auc": 0.5 + 0.01 * k + 0.1 * j,
                "roc_auc": 0.9,
                "recall_at_1pct_fpr": 0.3 + 0.1 * j,
                "n_fraud": 10 + j,
            }
            for j, p in enumerate(PATTERNS)
        }
        metrics[name] = {
            "pr_auc": 0.61 - 0.123 * (name == BASE),
            "roc_auc": 0.95,
            "recall_at_1pct_fpr": 0.4,
            "n": 2000,
            "positives": int(y.sum()),
            "per_pattern": per,
        }
    results = {
        "synthetic": True,
        "gnn": GNN,
        "baseline": BASE,
        "data": {"splits": {"test": {"n": 2000, "fraud": int(y.sum())}}},
        "threshold": {
            "budget": 0.01,
            "value": 0.83,
            "fitted_on": "validation",
            "test_alert_rate": 0.011,
        },
        "metrics": metrics,
        "engines": {
            "GATv2 INT8 ONNX Runtime": {
                "backend": "onnxruntime",
                "profile": "intel-core-cpu",
                "precision": "int8",
                "pr_auc_minus_fp32": -0.004,
            }
        },
        "litert_parity": {"sizes": "3..97 nodes", "max_abs_diff": 0.0021},
        "serving": {
            "mode": "mqtt",
            "broker": "mosquitto on mqtt://127.0.0.1:1",
            "runs": {
                "batched": {
                    "transactions": 500,
                    "decisions": 500,
                    "lost": 0,
                    "seconds": 2.0,
                    "throughput_tps": 250.0,
                    "latency_ms": {"p50": 3.2, "p99": 9.87},
                },
                "unbatched": {
                    "transactions": 500,
                    "decisions": 500,
                    "lost": 0,
                    "seconds": 3.0,
                    "throughput_tps": 166.0,
                    "latency_ms": {"p50": 4.0, "p99": 12.0},
                },
            },
        },
        "alerts": [
            {
                "id": "tx7",
                "score": 0.97,
                "label": 1,
                "pattern": "ring",
                "why": [{"event": "tx3", "role": "device", "entity": "d5", "drop": 0.41}],
            }
        ],
        "seconds": {"generate": 1.0, "train": 10.0, "total": 30.0},
        "export": {
            "seconds": 9.0,
            "steps_s": {"onnx_s": 2.25, "targets_s": 6.0},
            "engines_s": {"litert": 4.5},
            "int8_routes": {"litert": {"int8_flavours": ["dynamic_range_quant"]}},
        },
        "skipped": ["nothing really; a test note"],
    }
    arrays = {"y": y, "pattern": pattern, **{f"score/{k}": v for k, v in scores.items()}}
    arrays["latency/batched"] = rng.gamma(2.0, 2.0, 500)
    arrays["latency/unbatched"] = rng.gamma(2.0, 3.0, 500)
    return results, arrays


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    report = fraud_module("report")
    out = tmp_path_factory.mktemp("fraud-report")
    results, arrays = _results_and_arrays()
    report.write_report(out, results, arrays)
    return out, results


def test_report_says_synthetic_and_links_its_plots(written: tuple[Path, dict[str, Any]]) -> None:
    out, _ = written
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    banner = fraud_module("report").BANNER
    assert banner.startswith("SYNTHETIC DATA")
    assert md.splitlines()[2] == f"> **⚠ {banner}**" and html.escape(banner) in page
    for png in ("pr_curves.png", "pattern_recall.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in md and f'src="{png}"' in page


def test_tables_show_the_dicts_numbers(written: tuple[Path, dict[str, Any]]) -> None:
    out, results = written
    md = (out / "report.md").read_text()
    # the must-show row: GNN 0.610, baseline 0.487, gap +0.123
    assert "| overall | " in md and "| 0.610 | 0.487 | +0.123 |" in md
    ring = results["metrics"][GNN]["per_pattern"]["ring"]
    assert f"| ring | 10 | {ring['pr_auc']:.3f} |" in md
    assert "| intel-core-cpu | onnxruntime | int8 |" in md and "| -0.004 | yes |" in md
    assert "| batched | 500 | 500 | 0 |" in md and "| 9.87 |" in md
    assert "`tx3` via device `d5`" in md and "0.410" in md
    assert "0.0021" in md  # LiteRT parity shown as measured
    # the export's own split of its seconds, and the INT8 routes it limited
    assert "export: onnx_s 2.2, targets_s 6.0, litert 4.5" in md and "dynamic_range_quant" in md


def test_a_ragged_table_is_refused() -> None:
    report = fraud_module("report")
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        report.Table(["a", "b"], [["x"]])
