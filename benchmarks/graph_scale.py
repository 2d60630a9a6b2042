"""Graph scale: neighbour-table artifacts against PyG eager, 10k to 100k nodes and Cora.

Three measurements, all at ``--threads`` (1 by default) and in one run:

1. **Scale.** Seeded synthetic power-law graphs (``synthetic_graphs.py``:
   preferential attachment, ~10 directed edges per node, 128 features, 16
   classes) of 10k, 50k and 100k nodes. A 2-layer GCN (and SAGE and GAT at
   the smallest size) is exported with ``export_model`` in the static form
   with neighbour tables (``aggregation="tables"``), one bundle per model with
   every engine and precision asked for. PyG eager and each artifact, through
   ``Runtime.load(bundle, backend=..., precision=...)``, then run in their
   **own process** (``graph_scale_child.py``), timed in turn in blocks: median
   / p99 latency, max abs error against PyG eager, and the peak RSS of the
   process (``VmHWM``; also its RSS once imports and the input were loaded, so
   the engine's own share shows). Also: export time, and artifact size against
   the model's weights plus 8 bytes per edge.
2. **Cora** (2,708 nodes, 10,556 edges, 1,433 features; copied to a temp
   dir): GCN, GAT and SAGE, trained like ``samples/cora`` (seeded), exported
   with dense, neighbour-table and scatter aggregation (``--cora-engines``,
   FP32), the tables bundle also for INT8 and LiteRT (``--cora-table-engines``);
   all timed through ``Runtime`` against PyG eager in one process, round-robin
   in blocks so every row sees the same background load, with each row's test
   accuracy against PyG's. Per model the best CPU artifact (fastest row) and
   its ratio to PyG eager against issue #17's bar; and the GCN's matrix
   products alone (its two linear layers, no aggregation, exported and run the
   same way on every tables engine and precision) so whole-model time /
   matmul-only time shows what aggregation costs on each.
3. **Host tables.** ``edge_sdk.neighbour_tables.request_tables`` on the Cora
   graph (median of many runs) and on the largest synthetic graph.

Synthetic-graph weights are random and seeded: latency, size and parity do not
depend on them. A row an engine cannot build (the export records why) shows as
not built. ``--only`` runs some sections; ``--merge`` puts them into an existing
result, each section keeping the stamp (date, commit, load) of its own run.

Examples:
    python benchmarks/graph_scale.py --quick      # 2k nodes, Cora GCN, few calls (~5 min)
    python benchmarks/graph_scale.py              # everything (20-30 min on 2 shared cores)
    python benchmarks/graph_scale.py --only cora --merge benchmarks/results/graph_scale.json
    python benchmarks/graph_scale.py --sizes 10000 --engines ort-fp32 ov-fp32 --cora-models none
    python benchmarks/graph_scale.py --threads 2 --out /tmp/scale2

Writes benchmarks/results/graph_scale.{json,md} (``--quick``: graph_scale_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_meta
from graph_scale_child import Child, ChildFailed, enough, interleave, make_model
from synthetic_graphs import power_law_graph

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORA_DIR = REPO / "samples" / "cora"

#: Engine rows: name -> (Runtime backend, precision, device-profile target or None).
#: ONNX Runtime artifacts are always in the bundle; the others are built by one
#: profile each, so the export keeps every variant.
ENGINES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "ort-fp32": ("onnxruntime", "fp32", None),
    "ort-int8": ("onnxruntime", "int8", None),
    "ov-fp32": ("openvino", "fp32", {"use": "openvino-cpu", "precisions": ["fp32"]}),
    "ov-int8": ("openvino", "int8", {"use": "openvino-cpu", "precisions": ["int8"]}),
    "litert-fp32": (
        "litert",
        "fp32",
        {"use": "litert-xnnpack", "precisions": ["fp32"], "layout": "native"},
    ),
    "litert-int8": (
        "litert",
        "int8",
        {"use": "litert-xnnpack", "precisions": ["int8"], "layout": "native"},
    ),
}
AGGREGATIONS = ("dense", "tables", "scatter")
SIZES = (10_000, 50_000, 100_000)
FEATURES, HIDDEN, CLASSES, EDGES_PER_NODE = 128, 64, 16, 10


def git_state() -> dict[str, Any]:
    """The commit measured and how many tracked files differed from it (shared checkouts)."""
    import subprocess

    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout

    status = git("status", "--porcelain", "-uno").splitlines()
    changed = [line.split(maxsplit=1)[1] for line in status if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_files": changed}


def git_stamp(start: dict[str, Any]) -> dict[str, Any]:
    """Code state at the start and the end, and the commits that landed in between.

    The parent imports the exporter at its first export; each child imports the
    runtime when it starts, so a commit landing mid-run may reach later rows.
    """
    import subprocess

    end = git_state()
    landed = subprocess.run(
        ["git", "log", "--format=%h %s", f"{start['commit']}..{end['commit']}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return {"start": start, "end": end, "commits_during_run": [c[:160] for c in landed]}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stats_ms(samples: list[float]) -> dict[str, float]:
    """Median, p99 and count of latencies in ms."""
    return {
        "median_ms": statistics.median(samples),
        "p99_ms": float(np.percentile(samples, 99)),
        "calls": len(samples),
    }


# -- models ----------------------------------------------------------------------------------


def weight_bytes(model: Any) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def matmul_only(gcn: Any) -> Any:
    """The GCN's two linear layers alone, no aggregation: ``relu(x W1 + b1) W2 + b2``."""
    import torch

    class MatmulOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = gcn.conv1.lin, gcn.conv2.lin
            self.b1, self.b2 = gcn.conv1.bias, gcn.conv2.bias

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l2((self.l1(x) + self.b1).relu()) + self.b2

    return MatmulOnly().eval()


# -- export ----------------------------------------------------------------------------------


def write_profiles(folder: Path, engines: list[str]) -> dict[str, Path]:
    """One device profile per non-ORT engine row: ``engine -> YAML path``."""
    import yaml

    from edge_sdk.profiles import load_profile

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for e in engines:
        target = ENGINES[e][2]
        if target is None:
            continue
        path = folder / f"bench-{e}.yaml"
        path.write_text(yaml.safe_dump({"name": f"bench-{e}", "targets": [target]}))
        load_profile(path)
        out[e] = path
    return out


def export_bundle(
    model: Any,
    arrays: dict[str, np.ndarray],
    out: Path,
    aggregation: str | None,
    engines: list[str],
    profiles: dict[str, Path],
) -> dict[str, Any]:
    """Export one bundle; return its path, export seconds, progress times and artifacts."""
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    stamps: list[tuple[float, str]] = []
    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        stamps.append((round(time.perf_counter() - t0, 2), msg))

    options: dict[str, Any] = {
        "name": out.name,
        "form": "static",
        "int8": any(ENGINES[e][1] == "int8" for e in engines),
        "allow_accuracy_drop": True,  # report the error; do not refuse the artifact
        "profiles": [str(profiles[e]) for e in engines if e in profiles] or ["generic-x86"],
    }
    if aggregation is not None:
        options["aggregation"] = aggregation
    result = export_model(
        model, sample_from_arrays(arrays), out, ExportConfig(**options), progress=progress
    )
    seconds = time.perf_counter() - t0
    m = result.manifest
    choices = {c.profile: c for c in m.targets}
    artifacts: dict[str, dict[str, Any]] = {}
    for e in engines:
        backend, precision, _ = ENGINES[e]
        if e in profiles:
            c = choices.get(f"bench-{e}")
            if c is None or c.artifact is None:
                artifacts[e] = {"built": False, "reason": c.reason if c else "no choice recorded"}
                continue
            arts = [a for a in m.artifacts if a.name == c.artifact]
        else:
            arts = [
                a
                for a in m.artifacts
                if a.target.value == "onnxruntime" and str(a.precision) == precision
            ]
        if not arts:
            artifacts[e] = {"built": False, "reason": f"no {backend} {precision} artifact"}
            continue
        a = arts[0]
        artifacts[e] = {
            "built": True,
            "artifact": a.name,
            "precision": str(a.precision),
            "size_bytes": a.size_bytes + sum(c.size_bytes for c in a.companions),
            "int8_flavour": a.options.get("int8_flavour"),
        }
    return {
        "bundle": str(out),
        "export_s": seconds,
        "aggregation": getattr(m.graph, "aggregation", None) or aggregation,
        "progress": stamps,
        "artifacts": artifacts,
    }


# -- 1. scale --------------------------------------------------------------------------------


def scale_rows(args: argparse.Namespace, work: Path, profiles: dict[str, Path]) -> list[dict]:
    """Synthetic graphs: export with tables, then PyG eager and every engine as children."""
    rows = []
    for n in args.sizes:
        t = time.perf_counter()
        g = power_law_graph(n, EDGES_PER_NODE, FEATURES, CLASSES, seed=args.seed)
        graph = {
            "nodes": n,
            "edges": g.num_edges,
            "features": FEATURES,
            "classes": CLASSES,
            "in_degree": g.degree_stats(),
            "generate_s": time.perf_counter() - t,
        }
        folder = work / f"n{n}"
        folder.mkdir()
        np.save(folder / "x.npy", g.x)
        np.save(folder / "edge_index.npy", g.edge_index)
        for kind in args.models if n == min(args.sizes) else ["gcn"]:
            say(f"{n:,} nodes, {g.num_edges:,} edges: {kind}")
            rows.append(scale_row(args, g, graph, kind, folder, profiles))
    return rows


def scale_row(
    args: argparse.Namespace,
    g: Any,
    graph: dict[str, Any],
    kind: str,
    folder: Path,
    profiles: dict[str, Path],
) -> dict[str, Any]:
    """One model on one graph: export, then eager + engines timed in turn, one process each."""
    import torch

    model = make_model(kind, FEATURES, CLASSES, HIDDEN, args.seed)
    torch.save(model.state_dict(), folder / f"{kind}.pt")
    row: dict[str, Any] = {"graph": graph, "model": kind, "weights_bytes": weight_bytes(model)}
    row["budget_bytes"] = row["weights_bytes"] + 8 * g.num_edges
    try:
        exp = export_bundle(
            model,
            {"x": g.x[None], "edge_index": g.edge_index},
            folder / f"{kind}.bundle",
            "tables",
            args.engines,
            profiles,
        )
    except Exception as exc:  # a failed export is a result: record it, go on
        exp = {"error": f"{type(exc).__name__}: {exc}"[:800], "artifacts": {}}
        say(f"  export failed: {exp['error']}")
    else:
        say(f"  export {exp['export_s']:.1f} s ({exp['aggregation']})")
    row["export"] = exp
    common = {
        "threads": args.threads,
        "x": str(folder / "x.npy"),
        "ref": str(folder / f"{kind}.ref.npy"),
        "warmup": 2,
    }
    specs = {
        "pyg-eager": {
            **common,
            "kind": "eager",
            "model": kind,
            "features": FEATURES,
            "classes": CLASSES,
            "hidden": HIDDEN,
            "state": str(folder / f"{kind}.pt"),
            "edge_index": str(folder / "edge_index.npy"),
        }
    }
    results: dict[str, dict[str, Any]] = {}
    for e in args.engines:
        art = exp["artifacts"].get(e, {"built": False, "reason": "export failed"})
        results[e] = dict(art)
        if art["built"]:
            backend, precision, _ = ENGINES[e]
            specs[e] = {
                **common,
                "kind": "runtime",
                "bundle": exp["bundle"],
                "backend": backend,
                "precision": precision,
            }
    children: dict[str, Child] = {}
    try:
        for name, spec in specs.items():
            try:
                children[name] = Child(spec, folder, f"{kind}-{name}")
            except ChildFailed as exc:
                results[name] = {**results.get(name, {}), "error": str(exc)[:800]}
                say(f"  {name}: {exc}")
                if name == "pyg-eager":
                    break  # no reference: nothing to compare to
        if "pyg-eager" in children:
            block = 3 if n_calls_heavy(graph) else 5
            timed = interleave(children, args.repeats, block)
            for name, child in list(children.items()):
                results[name] = {**results.get(name, {}), **child.ready, **stats_ms(timed[name])}
                results[name]["peak_rss_mb"] = child.stop()
                del children[name]
    finally:
        for child in children.values():
            child.kill()
    eager = results.pop("pyg-eager", {"error": "not run"})
    for e, r in results.items():
        if "median_ms" in r and "median_ms" in eager:
            r["speedup_vs_pyg"] = eager["median_ms"] / r["median_ms"]
            r["rss_vs_pyg"] = r["peak_rss_mb"] / eager["peak_rss_mb"]
        if "size_bytes" in r:
            r["size_vs_budget"] = r["size_bytes"] / row["budget_bytes"]
        say(f"  {e}: {_brief(r)}")
    say(f"  pyg-eager: {_brief(eager)}")
    row["pyg_eager"], row["engines"] = eager, results
    shutil.rmtree(folder / f"{kind}.bundle", ignore_errors=True)
    return row


def n_calls_heavy(graph: dict[str, Any]) -> bool:
    """Graphs whose calls take long enough that blocks of 3 (2 timed) suffice."""
    return int(graph["edges"]) >= 300_000


def _brief(r: dict[str, Any]) -> str:
    if "error" in r:
        return str(r["error"])
    if "median_ms" not in r:
        return f"not built: {r.get('reason')}"
    parts = [f"{r['median_ms']:.1f} ms", f"peak RSS {r['peak_rss_mb']:.0f} MB"]
    if "max_abs_err" in r:
        parts.append(f"err {r['max_abs_err']:.1e}")
    return ", ".join(parts)


# -- 2. Cora: dense vs tables vs scatter ------------------------------------------------------


def load_cora_copy(root: Path, work: Path) -> Any:
    """Cora from a temp copy of ``root`` (``shared/`` is never written to)."""
    sys.path.insert(0, str(CORA_DIR))
    import cora  # samples/cora/cora.py

    raw = cora.find_raw(root)
    shutil.copytree(raw, work / "planetoid" / "Cora" / "raw")
    return cora.load_cora(work / "planetoid")


def timed_round_robin(
    fns: dict[str, Callable[[], Any]], calls: int, block: int = 5
) -> dict[str, dict[str, float]]:
    """Blocks of ``block`` calls per row (the first not counted), rows in turn, until
    every row has ``calls`` timed calls or spent its time budget (see :func:`enough`):
    all rows see the same background load."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    while not all(enough(v, calls) for v in times.values()):
        for k, fn in fns.items():
            if enough(times[k], calls):
                continue
            for j in range(block):
                t = time.perf_counter()
                fn()
                if j:
                    times[k].append((time.perf_counter() - t) * 1e3)
    return {k: stats_ms(v[:calls]) for k, v in times.items()}


#: Issue #17's bar per Cora model: best CPU artifact at least this much faster than PyG eager.
CORA_BARS = {"gcn": 2.0, "gat": 1.5, "sage": 3.0}


def train_cora(
    kind: str, data: Any, f: int, c: int, args: argparse.Namespace
) -> tuple[Any, dict[str, Any]]:
    """A Cora model trained like ``samples/cora`` (Adam, best-validation weights), seeded;
    and how it trained."""
    import cora  # samples/cora/cora.py (on sys.path since load_cora_copy)

    model = make_model(kind, f, c, HIDDEN, args.seed)
    t = time.perf_counter()
    best_epoch, best_val = cora.train(model, data, cora.LEARNING_RATES[kind], args.cora_epochs)
    return model, {
        "epochs": args.cora_epochs,
        "lr": cora.LEARNING_RATES[kind],
        "best_epoch": best_epoch,
        "best_val_acc": best_val,
        "train_s": round(time.perf_counter() - t, 1),
    }


def cora_engines_for(agg: str, args: argparse.Namespace) -> list[str]:
    """Engine rows of one Cora bundle: ``--cora-engines`` for dense and scatter, plus
    ``--cora-table-engines`` for tables and the matmul-only twin (same artifacts)."""
    engines = set(args.cora_engines)
    if agg in ("tables", "matmul-only"):
        engines |= set(args.cora_table_engines)
    return [e for e in ENGINES if e in engines]


def best_artifact(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest whole-model row of one Cora model (matmul-only rows excluded)."""
    timed = {
        k: r
        for k, r in entry["rows"].items()
        if "median_ms" in r and not k.startswith("matmul-only/")
    }
    if not timed:
        return None
    key = min(timed, key=lambda k: timed[k]["median_ms"])
    r = timed[key]
    best = {"row": key, "bar": CORA_BARS.get(entry["model"])}
    for k in ("median_ms", "speedup_vs_pyg", "test_acc", "acc_delta_pp", "over_matmul_only"):
        best[k] = r.get(k)
    if best["bar"] is not None:
        best["meets_bar"] = r["speedup_vs_pyg"] >= best["bar"]
    return best


def cora_rows(args: argparse.Namespace, work: Path, profiles: dict[str, Path]) -> dict[str, Any]:
    import torch

    from edge_sdk import Runtime

    torch.set_num_threads(args.threads)
    data = load_cora_copy(args.root, work)
    x, ei = data.x, data.edge_index
    request = x.numpy()[None]
    arrays = {"x": request, "edge_index": ei.numpy()}
    y, test = data.y.numpy(), data.test_mask.numpy()
    f, c = int(x.shape[1]), int(data.y.max()) + 1

    def test_acc(logits: np.ndarray) -> float:
        return float((logits.argmax(-1)[test] == y[test]).mean())

    out: dict[str, Any] = {
        "graph": {
            "nodes": int(x.shape[0]),
            "edges": int(ei.shape[1]),
            "features": f,
            "test_nodes": int(test.sum()),
        },
        "models": [],
    }
    for kind in args.cora_models:
        say(f"Cora {kind}: training {args.cora_epochs} epochs")
        model, training = train_cora(kind, data, f, c, args)
        with torch.no_grad():
            ref = model(x, ei).numpy()
        entry: dict[str, Any] = {
            "model": kind,
            "weights_bytes": weight_bytes(model),
            "training": training,
            "pyg_test_acc": test_acc(ref),
            "rows": {},
            "exports": {},
        }
        say(f"  trained: {entry['training']}, PyG test acc {entry['pyg_test_acc']:.3f}")
        subjects: list[tuple[str, Any, str | None, dict[str, np.ndarray]]] = [
            (agg, model, agg, arrays) for agg in args.cora_aggregations
        ]
        if kind == "gcn":
            subjects.append(("matmul-only", matmul_only(model), None, {"x": request}))
        opened: list[Any] = []
        fns: dict[str, Callable[[], Any]] = {}

        def eager(m: Any = model) -> None:
            with torch.no_grad():
                m(x, ei)

        fns["pyg-eager"] = eager
        for agg, module, aggregation, arr in subjects:
            engines = cora_engines_for(agg, args)
            try:
                exp = export_bundle(
                    module, arr, work / f"cora-{kind}-{agg}", aggregation, engines, profiles
                )
            except Exception as exc:
                for e in engines:
                    entry["rows"][f"{agg}/{e}"] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
                say(f"  {agg}: export failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            say(f"  {agg}: export {exp['export_s']:.1f} s ({exp['aggregation']})")
            entry["exports"][agg] = {k: exp[k] for k in ("export_s", "aggregation", "progress")}
            for e in engines:
                art = exp["artifacts"][e]
                key = f"{agg}/{e}"
                if not art["built"]:
                    entry["rows"][key] = art
                    continue
                backend, precision, _ = ENGINES[e]
                try:
                    rt = Runtime.load(
                        exp["bundle"], backend=backend, precision=precision, threads=args.threads
                    )
                    got = next(iter(rt.infer(request).values()))[0]
                except Exception as exc:  # a row that does not load is a result too
                    entry["rows"][key] = {**art, "error": f"{type(exc).__name__}: {exc}"[:800]}
                    say(f"  {key}: {entry['rows'][key]['error'][:200]}")
                    continue
                opened.append(rt)
                row = {**art, "export_s": exp["export_s"], "aggregation": exp["aggregation"]}
                if agg != "matmul-only":
                    row["max_abs_err"] = float(np.abs(got - ref).max())
                    row["test_acc"] = test_acc(got)
                    row["acc_delta_pp"] = 100 * (row["test_acc"] - entry["pyg_test_acc"])
                entry["rows"][key] = row
                fns[key] = lambda rt=rt: rt.infer(request)
        say(f"  timing {len(fns)} rows, {args.cora_repeats} calls each")
        timed = timed_round_robin(fns, args.cora_repeats)
        entry["pyg_eager"] = timed.pop("pyg-eager")
        for key, st in timed.items():
            entry["rows"][key].update(st)
            entry["rows"][key]["speedup_vs_pyg"] = entry["pyg_eager"]["median_ms"] / st["median_ms"]
        for key, row in entry["rows"].items():
            agg, e = key.split("/")
            mm = entry["rows"].get(f"matmul-only/{e}", {}).get("median_ms")
            if agg != "matmul-only" and mm and "median_ms" in row:
                row["over_matmul_only"] = row["median_ms"] / mm
        entry["best"] = best_artifact(entry)
        if entry["best"]:
            b = entry["best"]
            say(f"  best: {b['row']} {b['median_ms']:.2f} ms, {b['speedup_vs_pyg']:.2f}x PyG")
        for rt in opened:
            rt.close()
        out["models"].append(entry)
    return out


# -- 3. host table building -------------------------------------------------------------------


def host_tables(edge_index: np.ndarray, num_nodes: int, runs: int, label: str) -> dict[str, Any]:
    """Median time of ``request_tables`` for one graph (GCN's ``loops`` variant)."""
    from edge_sdk.neighbour_tables import (
        LOOPS,
        TableLayout,
        next_pow2,
        request_tables,
        widths_up_to,
    )

    deg = np.bincount(edge_index[1], minlength=num_nodes).max() + 1  # + its self loop
    layout = TableLayout(
        widths=widths_up_to(min(next_pow2(int(deg)), 1024)),
        variants=[LOOPS],
        max_splits=max(1, -(-int(deg) // 1024)),
    )
    request_tables(edge_index, num_nodes, layout)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        feeds = request_tables(edge_index, num_nodes, layout)
        times.append((time.perf_counter() - t) * 1e3)
    return {
        "graph": label,
        "nodes": num_nodes,
        "edges": int(edge_index.shape[1]),
        "widths": layout.widths,
        "arrays": len(feeds),
        "table_bytes": int(sum(a.nbytes for a in feeds.values())),
        **stats_ms(times),
    }


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog="Examples:" + doc.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small run: 2,000 nodes, Cora GCN")
    p.add_argument(
        "--sizes", type=int, nargs="*", default=list(SIZES), help="graph sizes (none: skip)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["gcn", "sage", "gat"],
        choices=["gcn", "sage", "gat"],
        help="models at the smallest size (larger sizes: gcn)",
    )
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument(
        "--cora-models",
        nargs="+",
        default=["gcn", "gat", "sage"],
        choices=["gcn", "gat", "sage", "none"],
        help="'none' skips Cora",
    )
    p.add_argument(
        "--cora-aggregations", nargs="+", default=list(AGGREGATIONS), choices=list(AGGREGATIONS)
    )
    p.add_argument(
        "--cora-engines",
        nargs="+",
        default=["ort-fp32", "ov-fp32"],
        choices=list(ENGINES),
        help="Cora engine rows of every aggregation",
    )
    p.add_argument(
        "--cora-table-engines",
        nargs="*",
        default=["ort-int8", "ov-int8", "litert-fp32", "litert-int8"],
        choices=list(ENGINES),
        help="extra Cora engine rows for neighbour tables (and GCN's matmul-only twin)",
    )
    p.add_argument("--cora-epochs", type=int, default=200, help="training epochs per Cora model")
    p.add_argument(
        "--root",
        type=Path,
        default=REPO.parent / "shared" / "datasets" / "planetoid",
        help="planetoid folder holding Cora/raw (read only)",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, every engine")
    p.add_argument(
        "--repeats", type=int, default=12, help="timed calls per synthetic-graph row (eager too)"
    )
    p.add_argument("--cora-repeats", type=int, default=30, help="timed calls per Cora row")
    p.add_argument("--host-runs", type=int, default=200, help="request_tables runs (Cora)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--only",
        action="append",
        choices=["synthetic", "cora", "host"],
        help="run only this section (repeatable; default: all three)",
    )
    p.add_argument(
        "--merge",
        type=Path,
        metavar="JSON",
        help="merge the sections run into this result JSON (the others keep their own run's "
        "stamp) and write it back, with its .md; --out and --name are then not used",
    )
    p.add_argument(
        "--render", type=Path, help="only rewrite the .md of an existing result JSON, then exit"
    )
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    p.add_argument("--name", default=None, help="results file stem (default graph_scale)")
    args = p.parse_args(argv)
    if args.quick:
        defaults = {"sizes": list(SIZES), "models": ["gcn", "sage", "gat"]}
        if args.sizes == defaults["sizes"]:
            args.sizes = [2000]
        if args.models == defaults["models"]:
            args.models = ["gcn"]
        if args.cora_models == ["gcn", "gat", "sage"]:
            args.cora_models = ["gcn"]
        args.repeats = min(args.repeats, 6)
        args.cora_repeats, args.host_runs = min(args.cora_repeats, 10), min(args.host_runs, 20)
        args.cora_epochs = min(args.cora_epochs, 50)
    if "none" in args.cora_models:
        args.cora_models = []
    args.name = args.name or ("graph_scale_quick" if args.quick else "graph_scale")
    return args


def host_rows(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """``request_tables`` on Cora (or a synthetic stand-in) and on the largest graph size."""
    try:
        data = load_cora_copy(args.root, work / "host")
        cora_graph: tuple[np.ndarray, int] | None = (data.edge_index.numpy(), data.num_nodes)
    except FileNotFoundError:
        cora_graph = None
    say("host table building")
    host = []
    if cora_graph is not None:
        host.append(host_tables(*cora_graph, args.host_runs, "Cora"))
    else:
        g = power_law_graph(2708, 4, 8, 2, seed=args.seed)
        host.append(host_tables(g.edge_index, 2708, args.host_runs, "synthetic 2,708 nodes"))
    if args.sizes:
        big = max(args.sizes)
        g = power_law_graph(big, EDGES_PER_NODE, FEATURES, CLASSES, seed=args.seed)
        host.append(host_tables(g.edge_index, big, 5, f"synthetic {big:,} nodes"))
    return host


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from graph_scale_report import SECTIONS, merge_docs, render_md, upgrade

    if args.render:
        doc = upgrade(json.loads(args.render.read_text()))
        args.render.with_suffix(".md").write_text(render_md(doc))
        return 0
    base = upgrade(json.loads(args.merge.read_text())) if args.merge else None
    only = [o for o in SECTIONS if o in (args.only or SECTIONS)]
    command = "python benchmarks/graph_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        **machine_meta(
            "edge-graph-sdk",
            "torch",
            "torch-geometric",
            "onnxruntime",
            "openvino",
            "ai-edge-litert",
            "onnx2tf",
        ),
        "threads": args.threads,
        "seed": args.seed,
        "command": command,
    }
    repeats = {
        "scale": {"scale_engine": args.repeats},
        "cora": {"cora": args.cora_repeats, "cora_epochs": args.cora_epochs},
        "host_tables": {"host_tables": args.host_runs},
    }
    workload = {
        "scale": (
            f"synthetic power-law graphs ({EDGES_PER_NODE} directed edges/node, {FEATURES} "
            f"features, {CLASSES} classes), hidden {HIDDEN}, random seeded weights"
        ),
        "cora": (
            f"Cora full graph, models trained {args.cora_epochs} epochs like samples/cora "
            "(accuracy on its 1,000 test nodes)"
        ),
        "host_tables": "Cora and the largest synthetic graph",
    }
    runners: dict[str, Callable[[Path, dict[str, Path]], Any]] = {
        "scale": lambda w, p: scale_rows(args, w, p),
        "cora": lambda w, p: cora_rows(args, w, p),
        "host_tables": lambda w, p: host_rows(args, w),
    }
    results: dict[str, Any] = {}
    stamps: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="graph-scale-"))
    try:
        profiles = write_profiles(
            work / "profiles",
            sorted(set(args.engines) | set(args.cora_engines) | set(args.cora_table_engines)),
        )
        for name in only:
            key = SECTIONS[name]
            if key == "cora" and not args.cora_models:
                continue
            t0, load0, git0 = time.perf_counter(), os.getloadavg()[0], git_state()
            date = datetime.now(UTC).isoformat(timespec="seconds")
            results[key] = runners[key](work, profiles)
            stamps[key] = {
                "date": date,
                "run": meta["date"],
                "command": command,
                "threads": args.threads,
                "seed": args.seed,
                "versions": meta["versions"],
                "git": git_stamp(git0),
                "loadavg_1min": {"start": load0, "end": os.getloadavg()[0]},
                "wall_s": round(time.perf_counter() - t0, 1),
                "repeats": repeats[key],
                "workload": workload[key],
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = merge_docs(base, meta, results, stamps)
    if args.merge:
        json_path = args.merge
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md = render_md(doc)
    json_path.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
