"""Per-target compilation: backend x precision x layout -> latency, size, accuracy.

For each model one static-form bundle is exported with ``int8=True`` and one
custom device profile per (engine, precision, layout) combination, so the
orchestrator keeps every variant (it keeps only the chosen artifact of each
profile target):

* OpenVINO CPU FP32, OpenVINO CPU INT8 (NNCF or QDQ source, whichever the
  compiler keeps);
* LiteRT/XNNPACK FP32 and INT8, each in the ``native`` layout (x ``[1, N, F]``)
  and the ``nhwc`` layout (node-wise linear layers as 1x1 convolutions);
* ONNX Runtime FP32 and INT8 (always in the bundle);
* PyTorch eager on the same weights (the reference row).

Every artifact is run through :class:`edge_sdk.Runtime` on the full-graph
request (Cora: x ``[1, 2708, 1433]``; sensor model: x ``[1, 52, 20]``).
Latency is timed round-robin: at each thread count (1, 2) every row is called
once per round, so all rows see the same background load and their ratios
stay fair on a busy machine. Accuracy is the Cora test split (1,000 nodes)
from the runtime's own outputs; the sensor model is untrained, so it reports
the relative output error against PyTorch instead (max |out - ref| / max |ref|
over 64 random windows).

Models: ``sensor`` (52-node TEP-size static GCN, samples/tep/sensor_model.py),
``gcn`` and ``gat`` (Cora, trained 200 epochs with seed 0 by
samples/cora/cora.py's ``train``; exported static with ``aggregation="dense"``
so the 2,708-node adjacency is folded into dense operators, as when the results were
taken: before neighbour tables this was the only form LiteRT could convert; the
tables' numbers are in graph_scale.py's results).

Example:
    python benchmarks/targets.py --quick            # sensor model, few calls (~1 min)
    python benchmarks/targets.py --models gcn gat   # the Cora models only
    python benchmarks/targets.py                    # everything (tens of minutes)

Writes benchmarks/results/targets.{json,md} (``--quick`` writes targets_quick.*).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from edge_sdk import Runtime, runtimes
from edge_sdk.bundle import Bundle
from edge_sdk.exporters import ExportConfig, export_model, load_model, sample_from_arrays
from edge_sdk.manifest import Artifact
from edge_sdk.profiles import load_profile
from edge_sdk.runtimes import BackendOptions

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, sample_module, sensor_module
from targets_report import render_md

REPO = Path(__file__).resolve().parents[1]
CORA_PY = REPO / "samples" / "cora" / "cora.py"
CORA_MODELS_PY = REPO / "samples" / "cora" / "models.py"
MODELS = ("sensor", "gcn", "gat")
THREADS = (1, 2)
EPOCHS, SEED = 200, 0

#: One profile per variant: ``name -> target`` (a capability set with overrides).
VARIANTS: dict[str, dict[str, Any]] = {
    "bench-ov-fp32": {"use": "openvino-cpu", "precisions": ["fp32"]},
    "bench-ov-int8": {"use": "openvino-cpu", "precisions": ["int8"]},
    "bench-litert-fp32-native": {
        "use": "litert-xnnpack",
        "precisions": ["fp32"],
        "layout": "native",
    },
    "bench-litert-int8-native": {
        "use": "litert-xnnpack",
        "precisions": ["int8"],
        "layout": "native",
    },
    "bench-litert-fp32-nhwc": {"use": "litert-xnnpack", "precisions": ["fp32"], "layout": "nhwc"},
    "bench-litert-int8-nhwc": {"use": "litert-xnnpack", "precisions": ["int8"], "layout": "nhwc"},
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- models ----------------------------------------------------------------------------------


@dataclass
class Subject:
    """A model to benchmark: its export inputs, request and reference."""

    name: str
    model: torch.nn.Module
    samples: Any
    config: dict[str, Any]
    request: np.ndarray  # the full-graph request, x [1, N, F]
    eager: Callable[[], torch.Tensor]  # PyTorch on the same request
    workload: str
    # Cora: labels and test mask; sensor: evaluation windows [K, 1, N, F]
    y: np.ndarray | None = None
    mask: np.ndarray | None = None
    windows: np.ndarray | None = None
    window_ref: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cora_module() -> Any:
    return sample_module("cora_sample", CORA_PY)


def cora_subject(name: str, work: Path) -> Subject:
    import torch_geometric

    cora = _cora_module()
    data = cora.load_cora(cora.default_root())  # $EDGE_SDK_CORA_DIR or ../shared
    torch_geometric.seed_everything(SEED)
    model = load_model(f"{CORA_MODELS_PY}:{name}")
    t = time.perf_counter()
    best_epoch, best_val = cora.train(model, data, cora.LEARNING_RATES[name], EPOCHS)
    say(
        f"{name}: trained {EPOCHS} epochs in {time.perf_counter() - t:.1f} s "
        f"(best val {best_val:.3f} at epoch {best_epoch})"
    )
    sample = cora.save_sample(data, work / f"cora-{name}.npz")
    x, ei = data.x, data.edge_index
    return Subject(
        name=name,
        model=model,
        samples=sample,
        config={
            "name": f"cora-{name}",
            "task": "node_classification",
            "labels": list(cora.CORA_LABELS),
            "output_names": ["logits"],
            "dense_threshold": 4096,
            "aggregation": "dense",
        },
        request=data.x.numpy()[None],
        eager=lambda: model(x, ei),
        workload=f"Cora {name.upper()} (2,708 nodes x 1,433 features, 7 classes), "
        "static form, dense adjacency",
        y=data.y.numpy(),
        mask=data.test_mask.numpy(),
        extra={"best_epoch": best_epoch, "best_val_acc": best_val},
    )


def sensor_subject(work: Path) -> Subject:
    mod = sensor_module()
    with torch.random.fork_rng(devices=[]):  # the weights export_sensor_bundle uses
        torch.manual_seed(SEED)
        model = mod.SensorGCN().eval()
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((8, mod.NUM_SENSORS, mod.WINDOW), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": mod.sensor_graph()})
    ei = torch.from_numpy(mod.sensor_graph())
    eval_rng = np.random.default_rng(1)
    windows = eval_rng.standard_normal((64, 1, mod.NUM_SENSORS, mod.WINDOW), dtype=np.float32)
    batch1 = torch.zeros(mod.NUM_SENSORS, dtype=torch.long)

    def ref(w: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(w.reshape(-1, mod.WINDOW)), ei, batch1).numpy()

    request = windows[0]
    flat = torch.from_numpy(request.reshape(-1, mod.WINDOW))
    return Subject(
        name="sensor",
        model=model,
        samples=sample,
        config={
            "name": "tep-sensor-gcn",
            "labels": ["normal"] + [f"fault_{i}" for i in range(1, mod.NUM_CLASSES)],
        },
        request=request,
        eager=lambda: model(flat, ei, batch1),
        workload="TEP-size static GCN: 52 nodes x 20 features, 2 x GCN(64), 22 classes "
        "(untrained, seeded)",
        windows=windows,
        window_ref=np.stack([ref(w) for w in windows]),
    )


# -- export ----------------------------------------------------------------------------------


def write_profiles(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, target in VARIANTS.items():
        path = folder / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "description": f"benchmarks/targets.py variant {name}",
                    "targets": [target],
                },
                sort_keys=False,
            )
        )
        load_profile(path)  # fail here, with the field named, not mid-export
        paths.append(path)
    return paths


def export(subject: Subject, work: Path, profiles: list[Path]) -> tuple[Path, float]:
    """Export one bundle with every variant; return it and the export seconds.

    A variant the compiler cannot build (an onnx2tf failure, a refused
    artifact) is recorded in the manifest's targets with the reason and shows
    as a "not built" row.
    """
    t = time.perf_counter()
    out = work / f"{subject.name}.bundle"
    cfg = ExportConfig(
        form="static", int8=True, profiles=[str(p) for p in profiles], **subject.config
    )
    export_model(
        subject.model,
        subject.samples,
        out,
        cfg,
        progress=lambda m: say(f"{subject.name}: export: {m}"),
    )
    return out, time.perf_counter() - t


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    precision: str
    layout: str
    artifact: str | None
    path: str | None
    size_bytes: int | None
    profile: str | None = None
    open_fn: Callable[[int], Runtime] | None = None
    stats: dict[int, dict[str, float]] = field(default_factory=dict)
    accuracy: float | None = None
    delta_pp: float | None = None
    rel_error: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "layout": self.layout,
            "artifact": self.artifact,
            "path": self.path,
            "profile": self.profile,
            "size_bytes": self.size_bytes,
            "latency_ms": {str(t): s for t, s in self.stats.items()},
            "accuracy": self.accuracy,
            "delta_pp": self.delta_pp,
            "rel_error_vs_pytorch": self.rel_error,
            "note": self.note,
        }


def _open(
    bundle: Bundle, art: Artifact, threads: int, extra: dict[str, Any], profile: Path | None
) -> Runtime:
    """A Runtime on exactly ``art``, through ``Runtime.load`` where it can name it.

    Variant rows load with their profile (the export's recorded choice, with
    the profile's engine settings); ONNX Runtime rows with ``backend=`` and
    ``precision=``. The LiteRT native and NHWC artifacts of one precision share
    one artifact name, and ``Manifest.artifact(name)`` returns the first, so a
    profile load can land on the other layout's file: those are opened the way
    ``Runtime.load`` does it internally, on the artifact object itself.
    """
    name = runtimes.backend_for_target(art.target)
    assert name is not None
    if profile is not None:
        rt = Runtime.load(bundle, profile=profile, threads=threads)
    else:
        rt = Runtime.load(bundle, backend=name, precision=str(art.precision), threads=threads)
    if rt.artifact.path == art.path:
        return rt
    rt.close()
    be = runtimes.create_backend(name, BackendOptions(threads=threads, extra=extra or None))
    be.load(bundle.path_of(art.path), art, bundle.manifest.inputs, bundle.manifest.outputs)
    return Runtime(bundle, be, art, [f"benchmark: artifact {art.name} at {art.path}"])


def rows_for(bundle_dir: Path, subject: Subject) -> tuple[list[Row], list[dict[str, Any]]]:
    bundle = Bundle.open(bundle_dir)
    m = bundle.manifest
    profiles = {c.profile: c for c in m.targets}
    rows: list[Row] = []
    seen_paths: dict[str, Row] = {}
    # Variant rows in VARIANTS order (what each profile chose), then ONNX Runtime.
    for pname, target in VARIANTS.items():
        choice = profiles.get(pname)
        backend = "openvino" if "ov" in pname.split("-")[1] else "litert"
        precision = target["precisions"][0]
        asked_layout = target.get("layout", "native")
        if choice is None or choice.artifact is None:
            rows.append(
                Row(
                    backend,
                    precision,
                    asked_layout,
                    None,
                    None,
                    None,
                    pname,
                    note="not built: " + (choice.reason if choice else "no choice recorded"),
                )
            )
            continue
        # The artifact name is shared by the native and NHWC LiteRT variants: find the file
        # by layout (the orchestrator's choice records the layout it kept).
        cands = [
            a
            for a in m.artifacts
            if a.name == choice.artifact
            and a.precision == choice.precision
            and a.layout == choice.layout
        ]
        art = cands[0] if cands else m.artifact(choice.artifact)
        layout = {"BNF": "native", "NHWC": "nhwc"}.get(art.layout, art.layout)
        size = art.size_bytes + sum(c.size_bytes for c in art.companions)
        flavour = art.options.get("int8_flavour")
        shown = f"{art.precision} ({flavour})" if flavour else str(art.precision)
        row = Row(backend, shown, layout, art.name, art.path, size, pname)
        if layout != asked_layout:
            row.note = f"asked {asked_layout}, got {layout}: {choice.reason}"
        if art.path in seen_paths:
            row.note = (
                row.note + "; " if row.note else ""
            ) + f"same file as the {seen_paths[art.path].profile} row"
        seen_paths[art.path] = row
        path = next(p for p in _PROFILE_PATHS if p.stem == pname)
        extra = load_profile(path).targets[0].engine_options()
        row.open_fn = _opener(bundle, art, extra, path)
        rows.append(row)
    for art in m.artifacts:
        if runtimes.backend_for_target(art.target) == "onnxruntime":
            size = art.size_bytes + sum(c.size_bytes for c in art.companions)
            row = Row("onnxruntime", str(art.precision), "native", art.name, art.path, size)
            row.open_fn = _opener(bundle, art, {}, None)
            rows.append(row)
    choices = [c.model_dump(mode="json") for c in m.targets]
    return rows, choices


_PROFILE_PATHS: list[Path] = []


def _opener(
    bundle: Bundle, art: Artifact, extra: dict[str, Any], profile: Path | None
) -> Callable[[int], Runtime]:
    def open_at(threads: int) -> Runtime:
        return _open(bundle, art, threads, extra, profile)

    return open_at


def _logits(out: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(out.values()))


def accuracy_of(subject: Subject, rows: list[Row], ref_out: np.ndarray) -> dict[str, Any]:
    """Fill each row's accuracy (Cora) or relative error (sensor) at 1 thread."""
    if subject.y is not None:
        y, mask = subject.y, subject.mask
        ref_acc = float((ref_out.argmax(-1)[mask] == y[mask]).mean())
    for row in rows:
        if row.open_fn is None:
            continue
        with row.open_fn(1) as rt:
            if subject.y is not None:
                logits = _logits(rt.infer(subject.request))[0]
                row.accuracy = float((logits.argmax(-1)[mask] == y[mask]).mean())
                row.delta_pp = 100 * (row.accuracy - ref_acc)
                row.rel_error = float(np.abs(logits - ref_out).max() / np.abs(ref_out).max())
            else:
                assert subject.windows is not None and subject.window_ref is not None
                outs = np.stack([_logits(rt.infer(w)) for w in subject.windows])
                ref = subject.window_ref
                row.rel_error = float(np.abs(outs - ref).max() / np.abs(ref).max())
    if subject.y is not None:
        return {"pytorch_test_acc": ref_acc}
    return {}


def time_rows(
    rows: list[Row],
    eager: Callable[[], Any],
    request: np.ndarray,
    calls: int,
    block: int,
    drop: int,
) -> dict[int, dict[str, float]]:
    """Blocked round-robin timing at each thread count; returns PyTorch's stats per count.

    Every row runs ``block`` calls in a row (the first ``drop`` not counted),
    then the next row, round after round until each row has ``calls`` timed
    calls. Rounds keep the rows under the same background load; blocks keep
    one engine's worker threads (which spin for a while after a call: OpenMP,
    TBB, ORT) from stealing the cores of the next engine's call, which
    per-call alternation at 2 threads on 2 cores measured instead of the engines.
    """
    torch_stats: dict[int, dict[str, float]] = {}
    per_block = block - drop
    rounds = -(-calls // per_block)
    for t in THREADS:
        torch.set_num_threads(t)
        fns: list[tuple[Row | None, Callable[[], Any]]] = []
        opened: list[Runtime] = []
        for row in rows:
            if row.open_fn is None:
                continue
            rt = row.open_fn(t)
            opened.append(rt)
            fns.append((row, functools.partial(rt.infer, request)))

        def eager_call() -> None:
            with torch.no_grad():
                eager()

        fns.append((None, eager_call))
        for _, fn in fns:  # first calls: lazy engine setup
            for _ in range(2):
                fn()
        times: list[list[float]] = [[] for _ in fns]
        t_start = time.perf_counter()
        for i in range(rounds):
            for k, (_, fn) in enumerate(fns):
                for j in range(block):
                    t0 = time.perf_counter()
                    fn()
                    if j >= drop:
                        times[k].append((time.perf_counter() - t0) * 1e3)
            if i and i % max(1, rounds // 4) == 0:
                say(f"  {t} thread(s): round {i}/{rounds} ({time.perf_counter() - t_start:.0f} s)")
        for (owner, _), ts in zip(fns, times, strict=True):
            ts = ts[:calls]
            stats = {
                "median_ms": statistics.median(ts),
                "p99_ms": float(np.percentile(ts, 99)),
                "calls": len(ts),
            }
            if owner is None:
                torch_stats[t] = stats
            else:
                owner.stats[t] = stats
        for rt in opened:
            rt.close()
        del opened, fns
        gc.collect()
    return torch_stats


# -- report ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="example: python benchmarks/targets.py --quick; "
        "python benchmarks/targets.py --models gcn --calls 50",
    )
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sensor model only, 100 calls; writes targets_quick.*",
    )
    ap.add_argument(
        "--calls",
        type=int,
        default=None,
        help="timed calls per row and thread count (default: sensor 1000, Cora 60)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only re-write the Markdown next to an existing result JSON",
    )
    args = ap.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(render_md(json.loads(args.render.read_text())))
        return 0
    models = ["sensor"] if args.quick else args.models
    args.out.mkdir(parents=True, exist_ok=True)
    t_total = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="edge-bench-targets-"))
    _PROFILE_PATHS[:] = write_profiles(work / "profiles")
    say(f"work dir {work}; models {models}")
    results = []
    for name in models:
        t_model = time.perf_counter()
        subject = sensor_subject(work) if name == "sensor" else cora_subject(name, work)
        calls = args.calls or (100 if args.quick else 1000 if name == "sensor" else 60)
        say(f"{name}: exporting (static, int8, {len(VARIANTS)} variant profiles)")
        bundle_dir, export_s = export(subject, work, _PROFILE_PATHS)
        rows, choices = rows_for(bundle_dir, subject)
        with torch.no_grad():
            ref_out = subject.eager().numpy()
        say(f"{name}: accuracy through the runtime")
        extra = accuracy_of(subject, rows, ref_out)
        say(
            f"{name}: timing {sum(r.open_fn is not None for r in rows) + 1} rows x {calls} calls "
            f"x threads {THREADS}"
        )
        block, drop = (50, 10) if name == "sensor" else (6, 1)
        torch_stats = time_rows(rows, subject.eager, subject.request, calls, block, drop)
        res = {
            "model": name,
            "title": {
                "sensor": "52-node sensor model (TEP size)",
                "gcn": "Cora GCN",
                "gat": "Cora GAT",
            }[name],
            "workload": subject.workload,
            "request_shape": list(subject.request.shape),
            "calls": calls,
            "export_s": export_s,
            "bundle_bytes": sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file()),
            "pytorch": {str(t): s for t, s in torch_stats.items()},
            "pytorch_param_bytes": sum(
                p.numel() * p.element_size() for p in subject.model.parameters()
            ),
            "rows": [r.as_dict() for r in rows],
            "choices": choices,
            "training": subject.extra,
            "seconds": time.perf_counter() - t_model,
            **extra,
        }
        results.append(res)
        partial = args.out / ("targets_quick" if args.quick else "targets")
        partial.with_suffix(".partial.json").write_text(json.dumps(results, indent=2) + "\n")
        say(f"{name}: done in {res['seconds']:.0f} s")
        del subject, rows
        gc.collect()
    meta = {
        **machine_meta(
            "edge-graph-sdk",
            "onnxruntime",
            "openvino",
            "nncf",
            "onnx2tf",
            "tensorflow-cpu",
            "ai-edge-litert",
            "torch",
            "numpy",
        ),
        "threads": list(THREADS),
        "total_s": time.perf_counter() - t_total,
        "quick": args.quick,
    }
    report = {"meta": meta, "models": results}
    stem = "targets_quick" if args.quick else "targets"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(render_md(report))
    (args.out / f"{stem}.partial.json").unlink(missing_ok=True)
    print(render_md(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
