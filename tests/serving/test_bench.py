"""edge-export bench and its load generators."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_sdk.cli.export_cli import app
from edge_sdk.errors import ManifestError
from edge_sdk.serving.bench import bench_bundle
from edge_sdk.serving.loadgen import async_closed_loop, closed_loop, open_loop


def test_bench_writes_json_markdown_and_plot(sensor_bundle: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app,
        [
            "bench",
            str(sensor_bundle),
            "--out",
            str(tmp_path / "b"),
            "--duration",
            "0.3",
            "--concurrency",
            "4",
            "--threads",
            "1",
        ],
    )
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    runs = [(r["backend"], r["precision"], r["run"]) for r in report["rows"]]
    assert runs == [("onnxruntime", "fp32", run) for run in ("unbatched", "batched", "open")]
    for r in report["rows"]:
        assert r["errors"] == 0 and r["requests"] > 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert (tmp_path / "b" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| onnxruntime | fp32 | batched |" in (tmp_path / "b" / "bench.md").read_text()


def test_bench_refuses_a_bundle_without_canary(sensor_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sensor_bundle, tmp_path / "nocanary"))
    doc = json.loads((copy / "manifest.json").read_text())
    doc["canary"] = None
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="canary"):
        bench_bundle(copy, tmp_path / "out", duration_s=0.1)


def test_closed_loops_count_errors_apart() -> None:
    def predict(i: int) -> int:
        if i % 3 == 0:
            raise ValueError("bad")
        return i

    r = closed_loop(predict, lambda i: i, concurrency=3, duration_s=0.2, warmup_s=0)
    assert r.errors > 0 and r.requests > 0  # failures are counted, not timed

    async def apredict(i: int) -> int:
        return i

    a = async_closed_loop(apredict, lambda i: i, concurrency=8, duration_s=0.2, warmup_s=0)
    assert a.errors == 0 and a.requests > 100 and a.mode == "closed-async"


def test_open_loop_latency_counts_from_the_schedule() -> None:
    # One worker, 20 ms per call, offered 100/s: requests queue up, and their
    # latency (from when they were due) must grow far past the 20 ms service time.
    r = open_loop(
        lambda _: time.sleep(0.02), lambda i: i, rate_rps=100, duration_s=0.5, max_outstanding=1
    )
    assert r.requests == 50 and r.p50_ms >= 20
    assert r.p99_ms > 200
