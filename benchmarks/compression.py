"""Compression on Cora: model × {FP32, INT8, pruned, pruned+INT8}.

For GCN, GAT and GraphSAGE (hidden 64, as in samples/cora), trains with the
sample's recipe, then exports twice through the public API:

* ``--int8``: the FP32 and INT8 artifacts of the trained model;
* ``--prune structured:0.5 --fine-tune-epochs E --int8``: the pruned FP32 and
  pruned INT8 artifacts (gate 1.5 pp, as the compression issue asks).

Each artifact is loaded with ``Runtime.load(..., precision=...)`` and measured
side by side in this one run: test accuracy (1,000 nodes), file size and
full-graph latency at 1 and 2 threads (median of N calls).

Usage:
    python benchmarks/compression.py [--root ../shared/datasets/planetoid] [--calls 20]

Writes benchmarks/results/compression.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk import Runtime
from edge_sdk.exporters import ExportConfig, export_model, load_samples

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _load_sample_module() -> Any:
    spec = importlib.util.spec_from_file_location("cora_sample", REPO / "samples/cora/cora.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cora_sample"] = module
    spec.loader.exec_module(module)
    return module


def _median_ms(rt: Runtime, feeds: dict[str, np.ndarray], calls: int) -> float:
    for _ in range(3):
        rt.infer(feeds)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        rt.infer(feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _measure(
    bundle: Path,
    precision: str,
    feeds: dict[str, np.ndarray],
    y: np.ndarray,
    test: np.ndarray,
    calls: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for threads in (1, 2):
        rt = Runtime.load(bundle, backend="onnxruntime", precision=precision, threads=threads)
        if threads == 1:
            logits = next(iter(rt.infer(feeds).values()))
            row["test_acc"] = float((logits.argmax(-1)[test] == y[test]).mean())
            row["size_bytes"] = rt.artifact.size_bytes
        row[f"ms_{threads}t"] = _median_ms(rt, feeds, calls)
        rt.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared/datasets/planetoid")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--fine-tune-epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    cora = _load_sample_module()
    data = cora.load_cora(args.root)
    work = Path(tempfile.mkdtemp(prefix="bench-compression-"))
    sample_path = cora.save_sample(data, work / "cora.npz")
    sample = load_samples(sample_path)
    feeds = {"x": data.x.numpy(), "edge_index": data.edge_index.numpy()}
    y, test = data.y.numpy(), data.test_mask.numpy()
    rows = []
    for name in ("gcn", "gat", "sage"):
        torch.manual_seed(0)
        np.random.seed(0)
        model = getattr(_models(), name)()
        cora.train(model, data, 0.005 if name == "gat" else 0.01, args.epochs)
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(-1)
            torch_acc = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
        full = export_model(
            model, sample, work / f"{name}-int8", ExportConfig(name=name, int8=True)
        )
        small = export_model(
            model,
            sample,
            work / f"{name}-pruned",
            ExportConfig(
                name=f"{name}-pruned",
                prune="structured:0.5",
                fine_tune_epochs=args.fine_tune_epochs,
                int8=True,
                max_accuracy_drop=0.015,
            ),
        )
        variants = {
            "fp32": (full.bundle_dir, "fp32"),
            "int8": (full.bundle_dir, "int8"),
            "pruned": (small.bundle_dir, "fp32"),
            "pruned+int8": (small.bundle_dir, "int8"),
        }
        fp32_size = None
        for variant, (bundle, precision) in variants.items():
            row = {
                "model": name,
                "variant": variant,
                "torch_fp32_test_acc": torch_acc,
                **_measure(bundle, precision, feeds, y, test, args.calls),
            }
            fp32_size = fp32_size or row["size_bytes"]
            row["size_ratio"] = fp32_size / row["size_bytes"]
            row["delta_pp"] = 100 * (row["test_acc"] - torch_acc)
            rows.append(row)
            print(json.dumps(row))
        rows[-1]["stayed_float"] = small.manifest.compression.stayed_float
    _write(args, rows)
    shutil.rmtree(work, ignore_errors=True)


def _models() -> Any:
    spec = importlib.util.spec_from_file_location("cora_models", REPO / "samples/cora/models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    meta = {
        **machine_meta("edge-graph-sdk", "torch", "torch-geometric", "onnx", "onnxruntime"),
        "calls": args.calls,
        "epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compression.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n"
    )
    lines = [
        "# Compression on Cora (test split, 1,000 nodes)",
        "",
        meta_line(meta),
        "",
        "| model | variant | test acc | Δ vs PyTorch FP32 (pp) | size KiB | smaller by | "
        "ORT ms (1 thr) | ORT ms (2 thr) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {100 * r['test_acc']:.1f}% | "
            f"{r['delta_pp']:+.1f} | {r['size_bytes'] / 1024:.0f} | {r['size_ratio']:.1f}x | "
            f"{r['ms_1t']:.1f} | {r['ms_2t']:.1f} |"
        )
    lines += [
        "",
        f"Pruned = structured 50 % of hidden channels + {args.fine_tune_epochs} epochs of "
        "fine-tuning; INT8 = QDQ, symmetric, per-channel weights, MinMax calibration; "
        f"latency = median of {args.calls} full-graph `Runtime.infer` calls on ONNX Runtime.",
    ]
    (args.out / "compression.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
