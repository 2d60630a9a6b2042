"""Cora end to end: train GCN / GAT / GraphSAGE, export verified bundles, run them.

For each model: train on the public Planetoid split (140 train / 500 val /
1,000 test nodes), keep the weights of the best validation epoch, export a
bundle with :func:`edge_sdk.exporters.export_model`, load it with
:class:`edge_sdk.Runtime` and compare it to PyTorch (test accuracy, logits on
all 2,708 nodes, latency of a full-graph call).

Run it as a script (``--help`` shows an example) or import :func:`run`.

The data is read with ``torch_geometric.datasets.Planetoid`` from a temporary
copy of the raw files (Planetoid writes ``processed/`` beside ``raw/``; the
given folder is never written to). Planetoid's files are pickled SciPy
matrices, so SciPy is needed: ``pip install "edge-graph-sdk[export,samples]"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.datasets import Planetoid

import edge_sdk
from edge_sdk.exporters import ExportConfig, export_model, load_model

ENV_VAR = "EDGE_SDK_CORA_DIR"
#: Class names in Planetoid's label order (identified by the per-class counts).
CORA_LABELS = [
    "Theory",
    "Reinforcement_Learning",
    "Genetic_Algorithms",
    "Neural_Networks",
    "Probabilistic_Methods",
    "Case_Based",
    "Rule_Learning",
]
MODELS = ("gcn", "gat", "sage")
#: Adam learning rate per model (weight decay is 5e-4 for all).
LEARNING_RATES = {"gcn": 0.01, "gat": 0.005, "sage": 0.01}
WEIGHT_DECAY = 5e-4
LATENCY_CALLS = 20

_HERE = Path(__file__).resolve().parent
_MODELS_PY = _HERE / "models.py"
RAW_FILES = tuple(
    f"ind.cora.{part}" for part in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
)

Say = Callable[[str], None]


class CoraNotFoundError(FileNotFoundError):
    """The Cora raw files are not where they were looked for."""


# -- data ---------------------------------------------------------------------------------


def default_root() -> Path:
    """``$EDGE_SDK_CORA_DIR``, else ``../shared/datasets/planetoid`` beside the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return _HERE.parents[1].parent / "shared" / "datasets" / "planetoid"


def find_raw(root: str | os.PathLike[str]) -> Path:
    """The folder holding ``ind.cora.*`` under ``root``.

    Args:
        root: A ``planetoid/`` folder (holding ``Cora/raw``), a ``Cora`` folder
            or the ``raw`` folder itself.

    Raises:
        CoraNotFoundError: No candidate folder holds all eight files.
    """
    base = Path(root)
    for folder in (base / "Cora" / "raw", base / "raw", base):
        if all((folder / name).is_file() for name in RAW_FILES):
            return folder
    where = base / "Cora" / "raw"
    missing = [n for n in RAW_FILES if not (where / n).is_file()]
    what = "no ind.cora.* files" if len(missing) == len(RAW_FILES) else f"missing {missing}"
    raise CoraNotFoundError(
        f"Cora raw files not found in {where} ({what}); pass --root "
        f"or set {ENV_VAR} to a folder holding Cora/raw/ind.cora.* (the planetoid/ folder)"
    )


def load_cora(root: str | os.PathLike[str]) -> Data:
    """Cora with its public split, as ``Planetoid(root, "Cora")`` builds it.

    The raw files are copied to a temporary folder first, so ``root`` may be
    read-only and is never written to.

    Args:
        root: See :func:`find_raw`.

    Returns:
        ``x`` [2708, 1433], ``edge_index`` [2, 10556], ``y`` [2708] and the
        ``train_mask`` / ``val_mask`` / ``test_mask`` of 140 / 500 / 1,000 nodes.

    Raises:
        CoraNotFoundError: The raw files are missing.
        ModuleNotFoundError: SciPy is not installed (the message says how to get it).
    """
    raw = find_raw(root)
    if importlib.util.find_spec("scipy") is None:
        raise ModuleNotFoundError(
            "SciPy is needed to read the Planetoid files: "
            'pip install "edge-graph-sdk[export,onnxruntime,samples]"',
            name="scipy",
        )
    with tempfile.TemporaryDirectory(prefix="edge-sdk-cora-") as tmp:
        shutil.copytree(raw, Path(tmp) / "Cora" / "raw")
        return Planetoid(tmp, "Cora")[0]


def save_sample(data: Data, path: Path) -> Path:
    """Write the full graph as an SDK sample file: inputs, labels and the split.

    ``mask`` (reported metric) is the test split; ``val_mask`` is what the
    exporter's compression decisions use; ``train_mask`` is for fine-tuning.
    """
    np.savez(
        path,
        x=data.x.numpy(),
        edge_index=data.edge_index.numpy(),
        y=data.y.numpy(),
        mask=data.test_mask.numpy(),
        val_mask=data.val_mask.numpy(),
        train_mask=data.train_mask.numpy(),
    )
    return path


# -- training and measurement -------------------------------------------------------------


def _accuracy(logits: Tensor | np.ndarray, y: Tensor, mask: Tensor) -> float:
    pred = torch.as_tensor(np.asarray(logits)).argmax(-1)
    return int((pred[mask] == y[mask]).sum()) / int(mask.sum())  # exact: hits / count


def train(model: nn.Module, data: Data, lr: float, epochs: int) -> tuple[int, float]:
    """Full-batch training; leaves ``model`` in eval mode with its best-validation weights.

    Args:
        model: Untrained model, ``forward(x, edge_index)``.
        data: The graph and split.
        lr: Adam learning rate (weight decay is :data:`WEIGHT_DECAY`).
        epochs: Training epochs.

    Returns:
        The best epoch (1-based) and its validation accuracy.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    best_acc, best_epoch = -1.0, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val_acc = _accuracy(model(data.x, data.edge_index), data.y, data.val_mask)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return best_epoch, best_acc


def paired_median_ms(
    first: Callable[[], object],
    second: Callable[[], object],
    calls: int = LATENCY_CALLS,
    warmup: int = 3,
) -> tuple[float, float]:
    """Median wall time (ms) of two callables, timed alternately.

    Alternating the calls exposes both to the same background load, so their
    ratio stays meaningful on a busy machine.
    """
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for fn, acc in zip((first, second), times, strict=True):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fresh_bundle_dir(path: Path) -> None:
    """Remove a bundle left by an earlier run; refuse to delete anything else."""
    if not path.exists():
        return
    if path.is_dir() and (path / "manifest.json").is_file():
        shutil.rmtree(path)
    elif not path.is_dir() or any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not a bundle from an earlier run")


def _run_model(
    name: str,
    data: Data,
    sample_path: Path,
    out: Path,
    epochs: int,
    seed: int,
    threads: int | None,
    latency_calls: int,
    say: Say,
) -> dict[str, Any]:
    torch_geometric.seed_everything(seed)
    model = load_model(f"{_MODELS_PY}:{name}")  # the same spec the export CLI takes
    lr = LEARNING_RATES[name]
    say(f"[bold]{name}[/]: training {epochs} epochs (Adam lr {lr}, weight decay {WEIGHT_DECAY})")
    t = time.perf_counter()
    best_epoch, best_val = train(model, data, lr, epochs)
    train_s = time.perf_counter() - t
    with torch.no_grad():
        ref = model(data.x, data.edge_index).numpy()
    torch_acc = _accuracy(ref, data.y, data.test_mask)
    say(
        f"{name}: best val acc {best_val:.3f} at epoch {best_epoch} ({train_s:.1f} s); "
        f"PyTorch test acc {torch_acc:.3f}"
    )

    torch.save(model.state_dict(), out / f"{name}.pt")  # for edge-export --weights
    bundle_dir = out / f"{name}.bundle"
    _fresh_bundle_dir(bundle_dir)
    config = ExportConfig(
        name=f"cora-{name}",
        task="node_classification",
        labels=list(CORA_LABELS),
        output_names=["logits"],
        int8=True,  # a second, INT8 artifact behind the 1 pp accuracy gate
    )
    t = time.perf_counter()
    result = export_model(
        model, sample_path, bundle_dir, config, progress=lambda m: say(f"{name}: {escape(m)}")
    )
    export_s = time.perf_counter() - t
    parity = result.manifest.parity[0]

    feeds = {"x": data.x.numpy(), "edge_index": data.edge_index.numpy()}
    with (
        edge_sdk.Runtime.load(bundle_dir, threads=threads, precision="fp32") as rt,
        torch.no_grad(),
    ):
        logits = rt.infer(feeds)["logits"]
        ort_ms, torch_ms = paired_median_ms(
            lambda: rt.infer(feeds), lambda: model(data.x, data.edge_index), latency_calls
        )
        backend = rt.describe().get("backend", "")
    with edge_sdk.Runtime.load(bundle_dir, threads=threads, precision="int8") as rt8:
        int8_acc = _accuracy(rt8.infer(feeds)["logits"], data.y, data.test_mask)
        int8_kb = rt8.artifact.size_bytes / 1024
    bundle_acc = _accuracy(logits, data.y, data.test_mask)
    max_diff = float(np.abs(logits.astype(np.float64) - ref.astype(np.float64)).max())
    row: dict[str, Any] = {
        "model": name,
        "torch_acc": torch_acc,
        "bundle_acc": bundle_acc,
        "delta_pp": 100 * (bundle_acc - torch_acc),
        "max_abs_logit_diff": max_diff,
        "bundle_kb": _dir_size(bundle_dir) / 1024,
        "onnx_kb": result.manifest.artifacts[0].size_bytes / 1024,
        "int8_acc": int8_acc,
        "int8_kb": int8_kb,
        "export_s": export_s,
        "ort_ms": ort_ms,
        "torch_ms": torch_ms,
        "train_s": train_s,
        "best_epoch": best_epoch,
        "best_val_acc": best_val,
        "graph_form": str(result.manifest.graph.form),
        "backend": backend,
        "parity_artifact_acc": parity.artifact_metric,
        "parity_reference_acc": parity.reference_metric,
        "parity_max_abs_err": max(o.max_abs_err for o in parity.outputs),
        "bundle": str(bundle_dir),
    }
    say(
        f"{name}: bundle test acc {bundle_acc:.3f} (INT8 {int8_acc:.3f}), "
        f"max |Δlogit| {max_diff:.1e}; "
        f"ORT {ort_ms:.1f} ms, PyTorch {torch_ms:.1f} ms"
    )
    return row


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "edge_graph_sdk": edge_sdk.__version__,
    }


def run(
    root: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    models: Sequence[str] = MODELS,
    epochs: int = 200,
    seed: int = 0,
    *,
    threads: int | None = None,
    latency_calls: int = LATENCY_CALLS,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Train, export, load and compare each model; write ``cora_results.json``.

    Args:
        root: Planetoid folder (see :func:`find_raw`); ``None`` = :func:`default_root`.
        out: Output folder: the sample graph ``cora.npz``, per model the
            trained weights ``<model>.pt`` and the bundle ``<model>.bundle/``,
            and ``cora_results.json``. Bundles of an earlier run are replaced.
        models: Any of ``gcn``, ``gat``, ``sage``.
        epochs: Training epochs per model.
        seed: Seed set before each model is built.
        threads: Intra-op threads for PyTorch and ONNX Runtime (default: theirs).
        latency_calls: Full-graph calls timed per engine (median reported).
        console: Where progress and the table go (default: stdout).

    Returns:
        One dict per model: ``torch_acc``, ``bundle_acc``, ``delta_pp``,
        ``max_abs_logit_diff``, ``bundle_kb``, ``export_s``, ``ort_ms``,
        ``torch_ms`` and more (the rows of ``cora_results.json``).

    Raises:
        CoraNotFoundError: The raw files are missing.
        ValueError: An unknown model name or a non-positive epoch count.
        edge_sdk.EdgeSDKError: The export or the runtime failed.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    con = console or Console()

    def say(message: str) -> None:
        con.print(message, soft_wrap=True)

    if threads is not None:
        torch.set_num_threads(threads)
    src = Path(root) if root is not None else default_root()
    data = load_cora(src)
    split = "/".join(str(int(m.sum())) for m in (data.train_mask, data.val_mask, data.test_mask))
    say(
        f"Cora from {escape(str(find_raw(src)))}: {data.num_nodes} nodes, "
        f"{data.num_edges} edges, {split} train/val/test nodes"
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample_path = save_sample(data, out_dir / "cora.npz")
    rows = [
        _run_model(name, data, sample_path, out_dir, epochs, seed, threads, latency_calls, say)
        for name in models
    ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "settings": {
            "epochs": epochs,
            "seed": seed,
            "threads": threads,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "latency_calls": latency_calls,
        },
        "results": rows,
    }
    (out_dir / "cora_results.json").write_text(json.dumps(report, indent=2) + "\n")
    con.print(results_table(rows, latency_calls))
    say(f"wrote {escape(str(out_dir / 'cora_results.json'))}")
    return rows


def results_table(rows: Sequence[dict[str, Any]], latency_calls: int = LATENCY_CALLS) -> Table:
    """The summary table of :func:`run`'s rows."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title="Cora test split (1,000 nodes): PyTorch vs exported bundle",
        caption=f"latency: median of {latency_calls} full-graph calls (2,708 nodes), "
        "ONNX Runtime via edge_sdk.Runtime vs PyTorch eager",
    )
    headers = (
        "model",
        "torch\nacc",
        "bundle\nacc",
        "Δ pp",
        "max\n|Δlogit|",
        "INT8\nacc",
        "ONNX KB\nfp32→int8",
        "ORT\nms",
        "torch\nms",
    )
    for col in headers:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"],
            f"{100 * r['torch_acc']:.1f}%",
            f"{100 * r['bundle_acc']:.1f}%",
            f"{r['delta_pp']:+.2f}",
            f"{r['max_abs_logit_diff']:.1e}",
            f"{100 * r['int8_acc']:.1f}%",
            f"{r['onnx_kb']:.0f}→{r['int8_kb']:.0f}",
            f"{r['ort_ms']:.1f}",
            f"{r['torch_ms']:.1f}",
        )
    return table


# -- command line -------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cora.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  python samples/cora/cora.py --root ../shared/datasets/planetoid --out out/cora \\\n"
            "      --models gcn,gat --epochs 200 --seed 0\n\n"
            f"--root defaults to ${ENV_VAR}, else ../shared/datasets/planetoid beside the\n"
            "repository; it may be a planetoid/ folder, a Cora/ folder or Cora/raw."
        ),
    )
    parser.add_argument("--root", type=Path, default=None, help="folder holding Cora/raw")
    parser.add_argument("--out", type=Path, default=Path("out/cora"), help="output folder")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated subset of gcn,gat,sage"
    )
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        run(args.root, args.out, models, args.epochs, args.seed, threads=args.threads)
    except (CoraNotFoundError, ModuleNotFoundError, ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except edge_sdk.EdgeSDKError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
