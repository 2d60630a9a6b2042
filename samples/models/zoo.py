"""PyG's model classes end to end: train, ``edge-export export``, run every artifact, check.

For each model of :data:`MUST_SHOW` (the factories of ``zoo_models.py``, i.e.
the classes a PyG user hands over: ``GCN``, a user's ``MyGCN(GCN)``, ``GAT``,
``GIN`` + ``global_add_pool`` + an MLP head, ``GraphSAGE``; ``--only`` also
takes ``gatv2``, ``pna`` and ``edgecnn``):

1. build it seeded and train it briefly on a seeded synthetic task (node
   classification on homophilous graphs; graph classification for GIN), so
   that INT8 is measured on a model that has learned something;
2. write sample graphs (``.npz``, several graphs of different sizes; graph
   batches for GIN) and export them with the real CLI, in the dynamic form::

       edge-export export --model samples/models/zoo_models.py:gcn --weights gcn.pt \\
           --sample-data gcn.s0.npz ... --form dynamic --int8 \\
           --profile intel-core-cpu --profile raspberry-pi-5 -o gcn.bundle

   (plus ``--profile samples/models/fp32-engines.yaml``, which keeps the FP32
   OpenVINO and LiteRT builds in the bundle so that FP32 parity is measured on
   every engine; ``--no-fp32-engines`` leaves it out);
3. run every artifact of the bundle through :class:`edge_sdk.Runtime` on
   graphs of other sizes than the samples (never seen by training or export)
   and compare with eager PyG: FP32 max abs error must be <= 1e-4, INT8
   accuracy may drop at most the export's gate (``--max-accuracy-drop``, 1 pp);
4. write ``report.json`` and ``report.md`` and exit 1 when a bound is missed.

``--help`` lists the options. ``samples/`` is not a package: import this file
with ``importlib`` (see ``tests/samples/test_model_zoo.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric
from torch import nn

import edge_sdk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))  # the results' machine stamp
sys.path.insert(0, str(HERE))
from _common import machine_meta  # noqa: E402
from zoo_report import markdown  # noqa: E402
from zoo_tasks import graph_batch, node_graph  # noqa: E402

MODELS_PY = HERE / "zoo_models.py"
FP32_PROFILE = HERE / "fp32-engines.yaml"
PROFILES = ("intel-core-cpu", "raspberry-pi-5")
FP32_ATOL = 1e-4
#: The export's INT8 gate (``--max-accuracy-drop``), percentage points; the CLI's default.
GATE_PP = 1.0
FEATURES, NODE_CLASSES, GRAPH_CLASSES = 16, 7, 4
#: (node count) of the export's samples and of the unseen graphs, per node classifier.
NODE_SAMPLES = (80, 120, 160)
NODE_UNSEEN = (50, 200, 300)
NODE_TRAIN = (100, 140, 180)
#: (graphs per batch) of the export's samples and of the unseen batches, for GIN.
GRAPH_SAMPLES = (12, 16, 16)
GRAPH_UNSEEN = (5, 24, 40)
GRAPH_TRAIN = (32, 32, 32, 32)

Say = Callable[[str], None]


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo: its factory in ``zoo_models.py`` and its task."""

    name: str
    config: str
    task: str  # "node", "graph" or "edge" (node classification with edge_attr)
    lr: float = 0.01
    epochs: int = 30
    must_show: bool = True  # one of the "Must show" models (run by default)


MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "gcn", "GCN(in_channels=16, hidden_channels=64, out_channels=7, num_layers=3)", "node"
        ),
        ZooModel("my_gcn", "class MyGCN(GCN), same arguments as gcn", "node"),
        ZooModel("gat", "GAT(16, 64, 2, 7, heads=8)", "node", lr=0.005),
        ZooModel(
            "gin",
            "GIN(16, 64, 3, jk='cat') + global_add_pool(batch) + MLP([64, 64, 4])",
            "graph",
        ),
        ZooModel("sage", "GraphSAGE(16, 64, 3, 7, jk='cat')", "node"),
        ZooModel(
            "gatv2", "GAT(16, 64, 2, 7, v2=True, heads=4, edge_dim=4)", "edge", 0.005, 30, False
        ),
        ZooModel("pna", "PNA(16, 64, 2, 7, mean/min/max/std, 3 scalers)", "node", must_show=False),
        ZooModel("edgecnn", "EdgeCNN(16, 64, 2, 7)", "node", must_show=False),
    )
}
#: What a run without ``--only`` exercises: the issue's "Must show" list.
MUST_SHOW = [m.name for m in MODELS.values() if m.must_show]


# -- synthetic tasks ------------------------------------------------------------------------


def make_graphs(task: str, sizes: Sequence[int], seed: int) -> list[dict[str, np.ndarray]]:
    """Graphs of ``sizes`` (nodes, or graphs per batch for ``task == "graph"``), seeded."""
    centroids = np.random.default_rng(1234).normal(
        0.0, 1.0, (GRAPH_CLASSES if task == "graph" else NODE_CLASSES, FEATURES)
    )  # the same classes for every split
    rng = np.random.default_rng(seed)
    if task == "graph":
        return [graph_batch(rng, s, centroids) for s in sizes]
    edge_dim = 4 if task == "edge" else 0
    return [node_graph(rng, s, centroids, edge_dim) for s in sizes]


def model_inputs(g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request a model (and the runtime) takes: everything but the labels."""
    return {k: v for k, v in g.items() if k != "y"}


def run_eager(model: nn.Module, g: dict[str, np.ndarray]) -> np.ndarray:
    """Eager PyG output of ``model`` on ``g`` (float64)."""
    with torch.no_grad():
        kwargs = {k: torch.from_numpy(v) for k, v in model_inputs(g).items()}
        return model(**kwargs).double().numpy()


def train(model: nn.Module, graphs: list[dict[str, np.ndarray]], lr: float, epochs: int) -> float:
    """Adam over all training graphs each step; returns the last loss; leaves eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=5e-4)
    tensors = [{k: torch.from_numpy(v) for k, v in g.items()} for g in graphs]
    loss = torch.zeros(())
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        loss = sum(
            (F.cross_entropy(model(**{k: t[k] for k in t if k != "y"}), t["y"]) for t in tensors),
            torch.zeros(()),
        ) / len(tensors)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


# -- export and measurement -----------------------------------------------------------------


def edge_export_exe() -> str:
    """The ``edge-export`` console script beside this Python, else the one on ``PATH``."""
    beside = Path(sys.executable).with_name("edge-export")
    found = str(beside) if beside.is_file() else shutil.which("edge-export")
    if not found:
        raise FileNotFoundError("edge-export not found: pip install 'edge-graph-sdk[export]'")
    return found


def export_command(
    name: str, weights: Path, samples: Sequence[Path], bundle: Path, profiles: Sequence[str]
) -> list[str]:
    """The ``edge-export export`` command line of one model (dynamic form, INT8)."""
    cmd = [
        edge_export_exe(),
        "export",
        "--model",
        f"{MODELS_PY}:{name}",
        "--weights",
        str(weights),
    ]
    for s in samples:
        cmd += ["--sample-data", str(s)]
    cmd += ["--form", "dynamic", "--int8", "--output-name", "logits", "--name", f"zoo-{name}"]
    for p in profiles:
        cmd += ["--profile", p]
    return [*cmd, "-o", str(bundle)]


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose argmax is the label."""
    return float((logits.argmax(-1) == y).mean())


def measure_artifact(
    bundle: Path,
    backend: str,
    precision: str,
    unseen: list[dict[str, np.ndarray]],
    refs: list[np.ndarray],
) -> dict[str, Any]:
    """Run ``unseen`` through one artifact with :class:`edge_sdk.Runtime`; errors and accuracy."""
    with edge_sdk.Runtime.load(bundle, backend=backend, precision=precision) as rt:
        artifact = rt.artifact.name
        outs = [rt.infer(model_inputs(g))["logits"].astype(np.float64) for g in unseen]
    err = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs, strict=True))
    scale = max(float(np.abs(r).max()) for r in refs)
    y = np.concatenate([g["y"] for g in unseen])
    got = np.concatenate(outs)
    ref = np.concatenate(refs)
    return {
        "artifact": artifact,
        "backend": backend,
        "precision": precision,
        "max_abs_err": err,
        "rel_err": err / scale if scale else err,
        "accuracy": accuracy(got, y),
        "agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


def judge(row: dict[str, Any], torch_acc: float, gate_pp: float) -> dict[str, Any]:
    """Add the bound an artifact is held to and whether it met it."""
    if row["precision"] == "fp32":
        row["bound"] = f"max abs err <= {FP32_ATOL:g}"
        row["passed"] = row["max_abs_err"] <= FP32_ATOL
    else:
        row["drop_pp"] = 100 * (torch_acc - row["accuracy"])
        row["bound"] = f"accuracy drop <= {gate_pp:g} pp"
        row["passed"] = row["drop_pp"] <= gate_pp + 1e-9
    return row


def profile_choices(bundle: Path, profiles: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per profile: what the export chose (manifest) and what ``Runtime.load(profile=)`` runs."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for p in profiles:
        chosen = [
            {"backend": c["backend"], "artifact": c["artifact"], "reason": c["reason"]}
            for c in manifest["targets"]
            if c["profile"] == p
        ]
        try:
            with edge_sdk.Runtime.load(bundle, profile=p) as rt:
                runs = {"backend": rt.describe().get("backend"), "artifact": rt.artifact.name}
        except edge_sdk.EdgeSDKError as err:
            runs = {"backend": None, "artifact": f"none ({err})"}
        out[p] = {"export_chose": chosen, "runtime_runs": runs}
    return out


def run_model(
    spec: ZooModel,
    out: Path,
    seed: int,
    profiles: Sequence[str],
    fp32_engines: bool,
    epochs: int | None,
    say: Say,
) -> dict[str, Any]:
    """Train, export, measure one model; its report row."""
    from edge_sdk.exporters import load_model

    work = out / spec.name
    work.mkdir(parents=True, exist_ok=True)
    torch_geometric.seed_everything(seed)
    model = load_model(f"{MODELS_PY}:{spec.name}")  # the spec the CLI takes
    t = time.perf_counter()
    train_graphs = make_graphs(
        spec.task, GRAPH_TRAIN if spec.task == "graph" else NODE_TRAIN, seed + 1
    )
    loss = train(model, train_graphs, spec.lr, epochs or spec.epochs)
    train_s = time.perf_counter() - t
    weights = work / f"{spec.name}.pt"
    torch.save(model.state_dict(), weights)

    sample_graphs = make_graphs(
        spec.task, GRAPH_SAMPLES if spec.task == "graph" else NODE_SAMPLES, seed + 2
    )
    samples = []
    for i, g in enumerate(sample_graphs):
        path = work / f"{spec.name}.s{i}.npz"
        np.savez(path, **g)
        samples.append(path)
    unseen = make_graphs(spec.task, GRAPH_UNSEEN if spec.task == "graph" else NODE_UNSEEN, seed + 3)
    refs = [run_eager(model, g) for g in unseen]
    torch_acc = accuracy(np.concatenate(refs), np.concatenate([g["y"] for g in unseen]))
    say(
        f"{spec.name}: {spec.config}; trained {train_s:.1f} s (loss {loss:.3f}), "
        f"eager accuracy on unseen graphs {100 * torch_acc:.1f} %"
    )

    bundle = work / f"{spec.name}.bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    all_profiles = [*profiles, *([str(FP32_PROFILE)] if fp32_engines else [])]
    cmd = export_command(spec.name, weights, samples, bundle, all_profiles)
    say(f"{spec.name}: {' '.join(cmd[1:])}")
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"}, check=False
    )
    export_s = time.perf_counter() - t
    (work / "export.log").write_text(proc.stdout + proc.stderr)
    row: dict[str, Any] = {
        "model": spec.name,
        "config": spec.config,
        "task": spec.task,
        "command": " ".join(["edge-export", *cmd[1:]]),
        "train_s": round(train_s, 1),
        "export_s": round(export_s, 1),
        "export_rc": proc.returncode,
        "unseen": [int(g["x"].shape[0]) for g in unseen],
        "torch_accuracy": torch_acc,
        "artifacts": [],
        "profiles": {},
    }
    if proc.returncode != 0:
        say(
            f"[FAIL] {spec.name}: export exit {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
        row["passed"] = False
        return row
    say(f"{spec.name}: exported in {export_s:.0f} s")

    manifest = json.loads((bundle / "manifest.json").read_text())
    pairs = sorted({(a["target"], a["precision"]) for a in manifest["artifacts"]})
    for backend, precision in pairs:
        try:
            m = measure_artifact(bundle, backend, precision, unseen, refs)
        except edge_sdk.EdgeSDKError as err:  # recorded, so the other artifacts still run
            say(f"[FAIL] {spec.name}: {backend} {precision}: {err}")
            row["artifacts"].append(
                {"artifact": "?", "backend": backend, "precision": precision, "error": str(err)}
            )
            continue
        m = judge(m, torch_acc, GATE_PP)
        row["artifacts"].append(m)
        extra = f", drop {m['drop_pp']:+.2f} pp" if "drop_pp" in m else ""
        say(
            f"{spec.name}: {m['artifact']:<16} {backend:<12} {precision}: max |err| "
            f"{m['max_abs_err']:.2e}, accuracy {100 * m['accuracy']:.2f} %{extra} "
            f"[{'ok' if m['passed'] else 'FAIL'}: {m['bound']}]"
        )
    row["profiles"] = profile_choices(bundle, profiles)
    for p, c in row["profiles"].items():
        say(
            f"{spec.name}: profile {p} runs {c['runtime_runs']['artifact']} "
            f"({c['runtime_runs']['backend']})"
        )
    pi = row["profiles"].get("raspberry-pi-5")
    row["pi5_on_litert"] = pi is None or pi["runtime_runs"]["backend"] == "litert"
    row["passed"] = (
        bool(row["artifacts"])
        and row["pi5_on_litert"]
        and all(a.get("passed", False) for a in row["artifacts"])
    )
    return row


# -- report ---------------------------------------------------------------------------------


#: What made the numbers: stamped on the report with the machine (benchmarks/_common.py).
DISTRIBUTIONS = (
    "edge-graph-sdk", "torch", "torch_geometric", "onnxruntime", "openvino", "nncf",
    "onnx2tf", "tensorflow-cpu", "ai-edge-litert",
)  # fmt: skip


def run(
    out: str | os.PathLike[str],
    only: Sequence[str] | None = None,
    seed: int = 0,
    *,
    profiles: Sequence[str] = PROFILES,
    fp32_engines: bool = True,
    epochs: int | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run the zoo; write ``report.json`` and ``report.md`` under ``out``.

    Args:
        out: Output folder (per model: weights, samples, bundle, export log).
        only: Model names to run (default: the must-show ones, :data:`MUST_SHOW`).
        seed: Seed of the models and the synthetic graphs.
        profiles: Device profiles of the export.
        fp32_engines: Also keep the FP32 OpenVINO / LiteRT builds (``fp32-engines.yaml``).
        epochs: Training epochs (default: each model's own).
        say: Where progress lines go.

    Returns:
        The report (as written to ``report.json``); ``report["passed"]`` is the verdict.

    Raises:
        ValueError: An unknown model name.
    """
    names = list(only or MUST_SHOW)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "meta": machine_meta(*DISTRIBUTIONS),
        "seed": seed,
        "profiles": list(profiles),
        "fp32_engines": fp32_engines,
        "fp32_atol": FP32_ATOL,
        "gate_pp": GATE_PP,
        "models": [],
    }
    for n in names:  # the report is rewritten after each model: a long run keeps what it did
        report["models"].append(
            run_model(MODELS[n], out_dir, seed, profiles, fp32_engines, epochs, say)
        )
        report["passed"] = all(r["passed"] for r in report["models"])
        (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (out_dir / "report.md").write_text(markdown(report, FP32_ATOL, GATE_PP))
    say(f"report: {out_dir / 'report.md'}; all bounds met: {report['passed']}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; exit 1 when a bound is missed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python samples/models/zoo.py --out out/models --only gcn",
    )
    parser.add_argument("--out", default="out/models", help="output folder (default out/models)")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(MODELS),
        help=f"run this model only; repeatable (default: {', '.join(MUST_SHOW)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of models and graphs (0)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 30)")
    parser.add_argument(
        "--profile",
        action="append",
        help=f"device profile; repeatable (default {', '.join(PROFILES)})",
    )
    parser.add_argument(
        "--no-fp32-engines",
        action="store_true",
        help="do not keep FP32 OpenVINO/LiteRT artifacts (faster; FP32 then on ONNX Runtime only)",
    )
    args = parser.parse_args(argv)
    report = run(
        args.out,
        args.only,
        args.seed,
        profiles=args.profile or PROFILES,
        fp32_engines=not args.no_fp32_engines,
        epochs=args.epochs,
        say=lambda m: print(m, flush=True),
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
