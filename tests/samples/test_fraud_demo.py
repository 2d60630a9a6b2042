"""The fraud demo (``make demo-fraud``) end to end on a tiny SYNTHETIC stream, with a real broker.

One short run of ``samples/fraud/fraud.py`` (a small world, 2 epochs, the
profiles whose engines run here, a 2-second stream per serving run) shared by
the tests below: generate, build the requests through the event-graph store,
train both GNNs and the baseline, export the INT8 bundle, score the test
period on each engine, serve it with ``edge-node`` against a real mosquitto,
write the report. The default-size numbers are the sample README's.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sample_scripts import fraud_module

pytestmark = [
    pytest.mark.requires_backend("onnxruntime"),
    # the shared run (generate, train, export, serve) is set up in the first test
    pytest.mark.timeout(600),
]

# 400 accounts x 5 days (seed 0): ~2,600 transactions, every pattern in the test period;
# generic-x86 (ONNX Runtime FP32 + INT8) keeps the export short: the LiteRT and OpenVINO
# artifacts are tests/samples/test_fraud_export.py's
TINY = [
    "--accounts", "400", "--days", "5", "--epochs", "1", "--seconds", "2", "--rate", "250",
    "--profiles", "generic-x86",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, mosquitto_path: str) -> dict[str, Any]:
    fraud = fraud_module("fraud")
    out = tmp_path_factory.mktemp("fraud-demo")
    # what a previous run left in the output folder: a second `make demo-fraud` replaces it
    for stale in ("fraud.bundle/manifest.json", "node/batched/state/outbox.sqlite"):
        (out / stale).parent.mkdir(parents=True, exist_ok=True)
        (out / stale).write_text("a previous run's")
    results = fraud.run(fraud.parse_args(["--out", str(out), *TINY]), Console(file=io.StringIO()))
    return {"out": out, "results": results, "fraud": fraud}


def test_a_second_run_replaces_the_previous_bundle_and_node_state(demo: dict[str, Any]) -> None:
    out = demo["out"]
    manifest = json.loads((out / "fraud.bundle" / "manifest.json").read_text())
    assert manifest["event_graph"]["roles"]  # the new export's, not the stale file
    outbox = (out / "node" / "batched" / "state" / "outbox.sqlite").read_bytes()
    assert outbox.startswith(b"SQLite format 3")  # the new node's own outbox


def _unit(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0


def test_every_output_says_synthetic(demo: dict[str, Any]) -> None:
    out, fraud = demo["out"], demo["fraud"]
    banner = fraud.report.BANNER
    assert banner.startswith("SYNTHETIC DATA")
    assert (out / "report.md").read_text().splitlines()[2] == f"> **⚠ {banner}**"
    assert html.escape(banner) in (out / "report.html").read_text()
    saved = json.loads((out / "results.json").read_text())
    assert saved["synthetic"] is True and saved["note"].startswith("SYNTHETIC")
    for png in ("pr_curves.png", "pattern_recall.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_for_every_method_and_pattern_are_finite_probabilities(
    demo: dict[str, Any],
) -> None:
    saved = json.loads((demo["out"] / "results.json").read_text())
    metrics, patterns = saved["metrics"], saved["patterns"]
    assert patterns == ["ring", "mule", "burst", "takeover"]
    # a pattern is scored where the test period has it (the generator places incidents by
    # seed and size; the tiny world has at least three of the four there)
    present = {p for p, n in saved["data"]["test_patterns"].items() if n > 0}
    assert len(present) >= 3, saved["data"]
    engines = set(saved["engines"])
    # both GNNs in PyTorch, the baseline, and one INT8 engine per CPU backend of the bundle
    assert {"GraphSAGE FP32 (PyTorch)", "GATv2+GINE FP32 (PyTorch)", "HGB baseline"} <= set(metrics)
    assert {(e["backend"], e["precision"]) for e in saved["engines"].values()} >= {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    assert engines <= set(metrics) and saved["gnn"] in metrics
    for m, v in metrics.items():
        for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
            assert _unit(v[k]), (m, k, v[k])
        assert set(v["per_pattern"]) == present, m
        for p, pv in v["per_pattern"].items():
            assert pv["n_fraud"] > 0, (m, p)
            for k in ("pr_auc", "roc_auc", "recall_at_1pct_fpr"):
                assert _unit(pv[k]), (m, p, k, pv[k])
    # the report's must-show table carries the numbers of results.json
    md = (demo["out"] / "report.md").read_text()
    assert f"| overall | {metrics[saved['gnn']]['positives']:,} | " in md
    assert f"{metrics[saved['gnn']]['pr_auc']:.3f} | {metrics['HGB baseline']['pr_auc']:.3f}" in md


def test_engine_pr_aucs_come_from_the_engines_own_scores(demo: dict[str, Any]) -> None:
    out = demo["out"]
    saved = json.loads((out / "results.json").read_text())
    arrays = np.load(out / "scores.npz")
    metrics = fraud_module("metrics")
    y = arrays["y"]
    assert y.size == saved["data"]["splits"]["test"]["n"]
    fp32 = arrays[f"score/{saved['gnn']}"]
    for name, engine in saved["engines"].items():
        scores = arrays[f"score/{name}"]
        assert scores.shape == y.shape
        # recomputed from the saved scores: the number in results.json is this engine's own
        assert metrics.pr_auc(y, scores) == pytest.approx(saved["metrics"][name]["pr_auc"])
        assert engine["pr_auc_minus_fp32"] == pytest.approx(
            saved["metrics"][name]["pr_auc"] - saved["metrics"][saved["gnn"]]["pr_auc"]
        )
        assert np.corrcoef(scores, fp32)[0, 1] > 0.9, name
        if engine["precision"] == "int8":  # its own scores, not a copy of the FP32 ones
            assert not np.array_equal(scores, fp32), name


def test_node_decides_every_streamed_transaction_none_lost(demo: dict[str, Any]) -> None:
    serving = demo["results"]["serving"]
    assert serving["mode"] == "mqtt", demo["results"]["skipped"]
    assert serving["broker"].startswith("mosquitto on mqtt://127.0.0.1:")
    assert set(serving["runs"]) == {"batched", "unbatched"}
    for name, run in serving["runs"].items():
        assert run["transactions"] == 2 * 250, name
        assert run["decisions"] == run["transactions"] and run["lost"] == 0, (name, run)
        assert run["latency_ms"]["n"] >= run["decisions"]
        assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
    assert serving["runs"]["batched"]["max_batch"] > serving["runs"]["unbatched"]["max_batch"] == 1
    lat = np.load(demo["out"] / "scores.npz")["latency/batched"]
    assert lat.size == serving["runs"]["batched"]["latency_ms"]["n"]


def test_step_timings_and_threshold_are_recorded(demo: dict[str, Any]) -> None:
    saved = json.loads((demo["out"] / "results.json").read_text())
    seconds = saved["seconds"]
    steps = ("generate", "requests", "train", "export", "engines", "serve", "report")
    for step in steps:
        assert seconds[step] > 0, step
    assert seconds["total"] >= sum(seconds[s] for s in steps)
    # the export's own split of its step: ONNX, parity, INT8, targets (each engine's compile)
    export = saved["export"]
    assert {"onnx_s", "int8_s", "targets_s"} <= set(export["steps_s"]), export
    # (export["seconds"] is rounded to 0.1 s)
    assert 0 < sum(export["steps_s"].values()) <= export["seconds"] + 0.1
    assert export["seconds"] <= seconds["export"] + 0.1
    th = saved["threshold"]
    assert th["budget"] == 0.01 and _unit(th["value"]) and "validation" in th["fitted_on"]
    assert _unit(th["test_alert_rate"]) and th["test_alert_rate"] < 0.1


def test_bad_knobs_are_refused_by_name() -> None:
    fraud = fraud_module("fraud")
    for argv, word in ((["--epochs", "0"], "--epochs"), (["--days", "-1"], "--days")):
        with pytest.raises(SystemExit) as exc:
            fraud.parse_args(argv)
        assert exc.value.code == 2, word
