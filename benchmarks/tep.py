"""TEP fault detection: GNN FP32 / INT8 per CPU backend vs PCA, and the node path, in one run.

Runs the TEP sample (``samples/tep/tep.py``, what ``make demo`` runs) on the
Braatz files and writes ``benchmarks/results/tep.json`` (everything the
sample measured) and ``tep.md`` (the per-fault table, the backends' latency
per window side by side, sizes, the streamed files, the machine stamp).

    .venv/bin/python benchmarks/tep.py [--root ../shared/datasets/tep] [--out DIR]

Latencies are medians of 200 single-window calls through ``Runtime.infer``
at one thread, on the same machine in the same run, so their ratios compare.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from _common import machine_meta, meta_line, sample_module
from rich.console import Console

TEP_SCRIPT = Path(__file__).resolve().parents[1] / "samples" / "tep" / "tep.py"
RESULTS = Path(__file__).resolve().parent / "results"


def markdown(res: dict[str, Any], report_md: str, meta: dict[str, Any]) -> str:
    """``tep.md``: the report's tables (no images), latencies and sizes."""
    lines = ["# TEP fault detection: adaptive-graph GNN vs PCA, FP32 and INT8", "", meta_line(meta)]
    if res["synthetic"]:
        lines += ["", "**SYNTHETIC DATA**: the TEP files were not found; numbers are not TEP."]
    lines += [
        "",
        f"Data: {res['data']}. Train {res['seconds']['train']:.0f} s, export "
        f"{res['seconds']['export']:.0f} s, whole run {res['seconds']['total']:.0f} s.",
        "",
        "## Latency per window (median, 1 thread, `Runtime.infer`, batch 1)",
        "",
        "| artifact | ms | vs ONNX Runtime INT8 | size |",
        "|---|---:|---:|---:|",
    ]
    lat = res["latency_ms_per_window"]
    base = lat.get("GNN INT8 ONNX Runtime")
    sizes = {
        "GNN INT8 ONNX Runtime": "onnx-int8",
        "GNN INT8 OpenVINO": "openvino-int8",
        "GNN INT8 LiteRT": "litert-int8",
    }
    for name, ms in lat.items():
        ratio = f"{ms / base:.2f}x" if base else "–"
        size = res["sizes_bytes"].get(sizes.get(name, ""), 0)
        lines.append(f"| {name} | {ms:.3f} | {ratio} | {size / 1e3:.0f} kB |")
    lines += [
        "",
        f"FP32 ONNX: {res['sizes_bytes'].get('onnx-fp32', 0) / 1e3:.0f} kB. Node latency "
        f"(sensor row received → result queued, {res['stream']['rows']} rows streamed): "
        f"p50 {res['stream']['latency_ms'].get('p50')} ms, "
        f"p99 {res['stream']['latency_ms'].get('p99')} ms.",
        "",
    ]
    body = [ln for ln in report_md.splitlines() if not ln.startswith("![")]
    start = next(i for i, ln in enumerate(body) if ln.startswith("## "))
    stop = next((i for i, ln in enumerate(body) if ln == "## Run"), len(body))
    return "\n".join(lines + body[start:stop]).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="TEP folder")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where tep.json/.md go")
    args = parser.parse_args()
    tep = sample_module("_edge_sdk_sample_tep_bench", TEP_SCRIPT)
    meta = machine_meta("edge-graph-sdk", "torch", "onnxruntime", "openvino", "ai-edge-litert")
    with tempfile.TemporaryDirectory(prefix="edge-sdk-tep-") as tmp:
        argv = ["--out", tmp] + (["--root", str(args.root)] if args.root else [])
        console = Console(file=io.StringIO(), width=120)
        res = tep.run(tep.parse_args(argv), console)
        report_md = (Path(tmp) / "report.md").read_text()
    res["meta"] = meta
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tep.json").write_text(json.dumps(res, indent=2, default=float))
    (args.out / "tep.md").write_text(markdown(res, report_md, meta))
    print(f"wrote {args.out / 'tep.json'} and {args.out / 'tep.md'}")


if __name__ == "__main__":
    main()
