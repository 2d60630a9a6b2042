"""Train the adaptive-graph GNN on TEP and compare it with PCA T² / SPE, the standard way.

Protocol (nothing is fitted or chosen on test data):

- scaler, PCA and its control limits: the train segment (first 80 %) of ``d00.dat``;
- GNN: trained on the train segments of ``d00.dat`` .. ``d21.dat`` (sliding
  windows), best epoch by validation loss on the last 20 % of each training run;
  its alarm threshold is the 99 % quantile of the anomaly score on the
  validation segment of ``d00.dat``;
- test: ``d00_te.dat`` (false-alarm rate) and ``dNN_te.dat`` (detection rate on
  samples 161..960, false alarms on samples 1..160, detection delay); averages
  exclude faults 3, 9 and 15, which are reported apart.

Run ``python samples/tep/evaluate.py --help``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from rich import box
from rich.console import Console
from rich.table import Table

_HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> ModuleType:
    """Import ``samples/tep/<name>.py`` (samples are not a package) under a private name."""
    key = f"_edge_sdk_sample_tep_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


data = _sibling("data")
pca = _sibling("pca")
gnn = _sibling("model")


def run(
    root: Path | None,
    window: int = 20,
    epochs: int = 12,
    seed: int = 0,
    variance: float = 0.9,
    quantile: float = 0.99,
    skip_train_faults: Sequence[int] = (),
    console: Console | None = None,
) -> dict[str, Any]:
    """Train, evaluate and print the comparison; returns the per-fault results.

    Args:
        root: TEP folder (None: ``$EDGE_SDK_TEP_DIR`` or ../shared/datasets/tep).
        window: Samples per window.
        epochs: GNN training epochs.
        seed: Random seed.
        variance: PCA cumulative explained variance.
        quantile: Share of normal validation windows below the GNN threshold.
        skip_train_faults: Faults whose training files the GNN does not see
            (e.g. 3, 9, 15, which look like normal operation); they are still tested.
        console: Where the progress and the table go.
    """
    console = console or Console()
    say = console.print
    torch.manual_seed(seed)
    splits = data.load_splits(root)
    monitor = pca.PcaMonitor.fit(splits.train[0].data, variance=variance)
    say(
        f"PCA: {monitor.n_components} components ({variance:.0%} variance), "
        f"T² limit {monitor.t2_limit:.2f}, SPE limit {monitor.spe_limit:.2f}"
    )
    tr, va = splits.windows("train", window), splits.windows("val", window)
    if skip_train_faults:
        keep_tr, keep_va = (
            ~np.isin(tr.fault, skip_train_faults),
            ~np.isin(va.fault, skip_train_faults),
        )
        tr = data.Windows(tr.x[keep_tr], tr.y[keep_tr], tr.end[keep_tr], tr.fault[keep_tr])
        va = data.Windows(va.x[keep_va], va.y[keep_va], va.end[keep_va], va.fault[keep_va])
    say(f"GNN: {len(tr)} training windows, {len(va)} validation windows of {window} samples")
    model = gnn.AdaptiveGraphGNN(window=window)
    report = gnn.train(model, tr.x, tr.y, va.x, va.y, epochs=epochs, seed=seed, say=say)
    normal_val = va.x[va.fault == 0]
    threshold = gnn.score_threshold(gnn.predict(model, normal_val)[1], quantile)
    say(
        f"GNN: trained in {report.seconds:.1f} s, best epoch {report.best_epoch}, "
        f"val acc {report.val_accuracy:.3f}, score threshold {threshold:.4f}"
    )
    scores: dict[str, dict[int, Any]] = {"gnn": {}, "t2": {}, "spe": {}}
    static = model.static()
    for fault, test_run in splits.test.items():
        t2_alarm, spe_alarm = monitor.alarms(test_run.data)
        idx = np.arange(len(test_run.data))
        scores["t2"][fault] = pca.score_run(t2_alarm, idx, test_run.onset, fault)
        scores["spe"][fault] = pca.score_run(spe_alarm, idx, test_run.onset, fault)
        w = data.make_windows(test_run, window)
        _, s = gnn.predict(static, w.x)
        scores["gnn"][fault] = pca.score_run(s > threshold, w.end, test_run.onset, fault)
    summaries = {k: pca.summarize(v) for k, v in scores.items()}
    console.print(_table(scores, summaries))
    return {
        "train_seconds": report.seconds,
        "best_epoch": report.best_epoch,
        "threshold": threshold,
        "pca_components": monitor.n_components,
        "scores": scores,
        "summaries": summaries,
    }


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.1f}"


def _table(scores: dict[str, dict[int, Any]], summaries: dict[str, Any]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title="TEP test files: detection rate % after onset (FAR % before onset / on d00_te)",
    )
    table.add_column("fault", justify="right", no_wrap=True)
    for m in ("GNN", "PCA T²", "PCA SPE"):
        table.add_column(f"{m} DR", justify="right")
        table.add_column(f"{m} delay", justify="right")
    for fault in sorted(scores["gnn"]):
        if fault == 0:
            continue
        cells = []
        for m in ("gnn", "t2", "spe"):
            s = scores[m][fault]
            cells += [
                _pct(s.detection_rate),
                "-" if s.delay_samples is None else str(s.delay_samples),
            ]
        mark = " *" if fault in pca.HARD_FAULTS else ""
        table.add_row(f"{fault}{mark}", *cells)
    table.add_section()
    for label, attr in (
        ("avg DR (excl. 3,9,15)", "mean_detection"),
        ("avg DR 3,9,15", "mean_detection_hard"),
        ("FAR d00_te", "far_normal"),
        ("FAR pre-onset", "far_pre_onset"),
    ):
        row = []
        for m in ("gnn", "t2", "spe"):
            row += [_pct(getattr(summaries[m], attr)), ""]
        table.add_row(label, *row)
    return table


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  python samples/tep/evaluate.py --root ../shared/datasets/tep --epochs 12\n\n"
            f"--root defaults to ${data.ENV_VAR}, else ../shared/datasets/tep\n"
            "beside the repository."
        ),
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="folder holding d00.dat..d21_te.dat"
    )
    parser.add_argument("--window", type=int, default=20, help="samples per window (20)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--skip-train-faults",
        default="",
        help="comma-separated faults left out of GNN training (e.g. 3,9,15); still tested",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse(argv)
    try:
        t = time.perf_counter()
        skip = [int(f) for f in args.skip_train_faults.split(",") if f.strip()]
        result = run(args.root, args.window, args.epochs, args.seed, skip_train_faults=skip)
    except data.TepDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "train_seconds": result["train_seconds"],
            "total_seconds": time.perf_counter() - t,
            "best_epoch": result["best_epoch"],
            "skip_train_faults": skip,
            "threshold": result["threshold"],
            "scores": {
                m: {str(f): vars(s) for f, s in v.items()} for m, v in result["scores"].items()
            },
            "summaries": {m: vars(s) for m, s in result["summaries"].items()},
        }
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
