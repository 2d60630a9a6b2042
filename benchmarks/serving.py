"""Serving the TEP-size model: batching gain, batcher cost, runtime overhead, vs PyTorch.

The model: static topology, 52 sensor nodes, a window of 20 values per node,
two GCN layers of hidden 64, a mean-pooled 22-class head (about 1.3 MFLOP per
window). All in one process, one inference thread, side by side on the same
inputs:

* **latency at batch 1** (median and p90 of single calls): a raw ONNX Runtime
  session on the bundle's file, ``Runtime.infer``, and PyTorch eager on the
  same weights;
* **throughput at concurrency 32** (closed loop, 32 client threads, one window
  per request): ``Runtime.infer`` unbatched vs a ``DynamicBatcher`` in front of
  the same runtime; and the raw session's own batch-32 throughput (one thread
  calling ``run`` on [32, 52, 20] back to back), the ceiling a batcher can reach.

Ratios reported: batched / unbatched (target >= 3x), batched / raw batch-32
(target >= 0.8: what the batcher costs), Runtime / raw latency (target within
10 % or 10 µs), Runtime / PyTorch eager.

Usage:
    python benchmarks/serving.py [--seconds 5] [--repeats 2000]

Writes benchmarks/results/serving.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edge_sdk import Runtime
from edge_sdk.serving.batcher import BatcherConfig, DynamicBatcher
from edge_sdk.serving.loadgen import closed_loop

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY, BATCH = 32, 32


def _sensor_module():
    spec = importlib.util.spec_from_file_location(
        "tep_sensor_model", REPO / "samples/tep/sensor_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _times(fn, repeats: int) -> dict[str, float]:
    for _ in range(50):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    us = sorted(s * 1e6 for s in samples)
    return {"median_us": statistics.median(us), "p90_us": us[int(0.9 * len(us))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    ap.add_argument("--repeats", type=int, default=2000, help="calls per latency run")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)

    mod = _sensor_module()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-serving-"))
    result = mod.export_sensor_bundle(work / "tep.bundle")
    bundle = result.bundle_dir
    with torch.random.fork_rng(devices=[]):  # the same seeded weights as the export
        torch.manual_seed(0)
        model = mod.SensorGCN().eval()

    rng = np.random.default_rng(0)
    windows = rng.standard_normal((256, 1, mod.NUM_SENSORS, mod.WINDOW), dtype=np.float32)
    x1 = windows[0]
    x32 = windows[:BATCH, 0]

    rt = Runtime.load(bundle, backend="onnxruntime", precision="fp32", threads=1)
    rt.warmup()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / rt.artifact.path), so, ["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    ei = torch.from_numpy(mod.sensor_graph())
    flat1 = torch.from_numpy(x1.reshape(-1, mod.WINDOW))
    batch1 = torch.zeros(mod.NUM_SENSORS, dtype=torch.long)
    np.testing.assert_allclose(
        rt.infer(x1)["out"], model(flat1, ei, batch1).detach().numpy(), atol=1e-4
    )

    def eager() -> None:
        with torch.no_grad():
            model(flat1, ei, batch1)

    latency = {
        "raw_ort_session": _times(lambda: sess.run(None, {in_name: x1}), args.repeats),
        "runtime_infer": _times(lambda: rt.infer(x1), args.repeats),
        "pytorch_eager": _times(eager, args.repeats),
    }
    raw_us = latency["raw_ort_session"]["median_us"]
    run_us = latency["runtime_infer"]["median_us"]

    def make(i: int) -> np.ndarray:
        return windows[i % len(windows)]

    unbatched = closed_loop(rt.infer, make, CONCURRENCY, args.seconds)
    with DynamicBatcher(rt, BatcherConfig(max_batch=BATCH, max_delay_ms=2.0)) as batcher:
        batched = closed_loop(batcher.infer, make, CONCURRENCY, args.seconds)
        batch_stats = batcher.stats
    raw32 = _times(lambda: sess.run(None, {in_name: x32}), max(200, args.repeats // 10))
    raw32_wps = BATCH / (raw32["median_us"] / 1e6)

    report = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "versions": {
                d: version(d) for d in ("edge-graph-sdk", "onnxruntime", "torch", "numpy")
            },
            "threads": 1,
            "workload": "TEP-size static GCN: 52 nodes x 20 features, 2 x GCN(64), 22 classes",
        },
        "latency_batch1": latency,
        "runtime_over_raw": run_us / raw_us,
        "runtime_minus_raw_us": run_us - raw_us,
        "runtime_over_pytorch": run_us / latency["pytorch_eager"]["median_us"],
        "throughput_c32": {
            "unbatched_runtime": unbatched.as_dict(),
            "batched": batched.as_dict(),
            "batcher_stats": {
                k: v for k, v in batch_stats.items() if isinstance(v, int | float | str)
            },
            "raw_session_batch32_windows_per_s": raw32_wps,
        },
        "batched_over_unbatched": batched.throughput_rps / unbatched.throughput_rps,
        "batched_over_raw_batch32": batched.throughput_rps / raw32_wps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["meta"]
    lines = [
        "# Serving the TEP-size model (one inference thread)",
        "",
        f"{m['date']} · {m['machine']} · {m['cpus']} CPUs · Python {m['python']} · "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "## Latency of one window (batch 1)",
        "",
        "| path | median µs | p90 µs |",
        "|---|---|---|",
    ]
    for name, t in latency.items():
        lines.append(f"| {name} | {t['median_us']:.1f} | {t['p90_us']:.1f} |")
    lines += [
        "",
        f"Runtime / raw session: **{report['runtime_over_raw']:.3f}** "
        f"(+{report['runtime_minus_raw_us']:.1f} µs; target within 10 % or 10 µs). "
        f"Runtime / PyTorch eager: **{report['runtime_over_pytorch']:.2f}**.",
        "",
        f"## Throughput at concurrency {CONCURRENCY} (one window per request)",
        "",
        "| path | windows/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| Runtime.infer, unbatched | {unbatched.throughput_rps:.0f} | "
        f"{unbatched.p50_ms:.2f} | {unbatched.p99_ms:.2f} |",
        f"| DynamicBatcher (max {BATCH}, 2 ms) | {batched.throughput_rps:.0f} | "
        f"{batched.p50_ms:.2f} | {batched.p99_ms:.2f} |",
        f"| raw session, batch {BATCH} back to back | {raw32_wps:.0f} | | |",
        "",
        f"Batched / unbatched: **{report['batched_over_unbatched']:.2f}x** (target >= 3x). "
        f"Batched / raw batch-{BATCH}: **{report['batched_over_raw_batch32']:.2f}** "
        "(target >= 0.8).",
        "",
        "Reproduce with `python benchmarks/serving.py`.",
    ]
    (args.out / "serving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
