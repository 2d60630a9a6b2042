"""Full-graph Cora latency: PyTorch eager vs edge_sdk Runtime vs a raw ORT session.

Measures, side by side in one run and on the same inputs, the median and p90
latency of one full-graph inference (2,708 nodes, 10,556 edges, 1,433
features) for GCN, GAT and GraphSAGE at 1 and 2 threads, and reports the
ratios Runtime / raw session (the SDK's own overhead) and Runtime / PyTorch.
Weights are random: latency does not depend on them.

Usage:
    python benchmarks/runtime_overhead.py [--root ../shared/datasets/planetoid] [--repeats 30]

Writes benchmarks/results/runtime_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from torch_geometric.datasets import Planetoid
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from edge_sdk import Runtime
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class GCN(torch.nn.Module):
    def __init__(self, f: int, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = GCNConv(f, 64), GCNConv(64, c)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


class GAT(torch.nn.Module):
    def __init__(self, f: int, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = GATConv(f, 8, heads=8), GATConv(64, c, heads=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.nn.functional.elu(self.c1(x, edge_index)), edge_index)


class SAGE(torch.nn.Module):
    def __init__(self, f: int, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = SAGEConv(f, 64), SAGEConv(64, c)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and p90 wall time in ms after 3 warm-up calls."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[int(0.9 * (len(samples) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared/datasets/planetoid")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    shutil.copytree(args.root, work / "planetoid")
    data = Planetoid(str(work / "planetoid"), "Cora")[0]
    feeds = {"x": data.x.numpy(), "edge_index": data.edge_index.numpy()}
    rows = []
    for name, cls in (("gcn", GCN), ("gat", GAT), ("sage", SAGE)):
        torch.manual_seed(0)
        model = cls(data.num_features, 7).eval()
        bundle = export_model(
            model, sample_from_arrays(feeds), work / name, ExportConfig(name=name)
        ).bundle_dir
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                eager = timed(lambda m=model: m(data.x, data.edge_index), args.repeats)
            rt = Runtime.load(bundle, backend="onnxruntime", threads=threads)
            runtime = timed(lambda rt=rt: rt.infer(feeds), args.repeats)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(bundle / "model.onnx"), so)
            raw = timed(lambda s=sess: s.run(None, feeds), args.repeats)
            rows.append(
                {
                    "model": name,
                    "threads": threads,
                    "pytorch_eager": eager,
                    "runtime_ort": runtime,
                    "raw_ort_session": raw,
                    "runtime_over_raw": runtime["median_ms"] / raw["median_ms"],
                    "runtime_over_pytorch": runtime["median_ms"] / eager["median_ms"],
                }
            )
            print(json.dumps(rows[-1]))
    meta = {
        **machine_meta("edge-graph-sdk", "torch", "torch-geometric", "onnxruntime"),
        "repeats": args.repeats,
        "workload": "Cora full graph: 2708 nodes, 10556 edges, 1433 features, random weights",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_overhead.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Runtime overhead on Cora (full graph, ms)",
        "",
        meta_line(meta),
        "",
        "| model | threads | PyTorch eager | Runtime (ORT) | raw ORT session | "
        "Runtime / raw | Runtime / PyTorch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['pytorch_eager']['median_ms']:.2f} | "
            f"{r['runtime_ort']['median_ms']:.2f} | {r['raw_ort_session']['median_ms']:.2f} | "
            f"{r['runtime_over_raw']:.3f} | {r['runtime_over_pytorch']:.2f} |"
        )
    lines += [
        "",
        "Medians of "
        f"{args.repeats} calls after 3 warm-ups; p90 in the JSON. Runtime includes input "
        "validation (dtype, shape, edge range, NaN scan) on every call.",
    ]
    (args.out / "runtime_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
