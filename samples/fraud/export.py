"""Export the fraud GNN as INT8 bundles for three devices, and check every engine (SYNTHETIC).

A transaction is scored on its 2-hop subgraph, so every request is a different
graph: the bundle is the dynamic form over neighbour tables (``x``,
``edge_attr`` and tables the runtime builds from ``edge_index``), INT8, for

- ``intel-core-cpu``: OpenVINO (takes any shape, no buckets);
- ``raspberry-pi-5``: LiteRT, one INT8 ``.tflite`` per padding bucket: one sized
  for a single subgraph (the streaming path), one for a merged batch of
  :data:`BATCH` subgraphs (the node's batcher sends a disjoint union);
- ``jetson-orin-nano``: TensorRT. No GPU and no ``tensorrt`` here: the export
  writes a *build plan* (the INT8 Q/DQ ONNX plus the settings) that is built
  into a ``.plan`` and parity-checked on the device; nothing is run here.

Calibration and verification use real training subgraphs (and merged batches of
them, so the batched bucket is calibrated on what it will see), never random
graphs. The buckets and the in-degree limit are measured from the data.

LiteRT is the export's cost: one onnx2tf conversion per bucket, side by side (``jobs``).
An attention GNN's INT8 routes that fail its gate are not built (``int8_routes.py``: LiteRT
full integer, OpenVINO NNCF; the profiles with that option go to ``<bundle>.profiles/``).
Everything here is about the SYNTHETIC transaction stream of ``generate.py``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_NOTE = "SYNTHETIC data: no real transactions"
PROFILES = ("intel-core-cpu", "raspberry-pi-5", "jetson-orin-nano")
#: Most subgraphs the node merges into one inference (the batched bucket's size).
BATCH = 32
#: Subgraphs per ``infer_batch`` call scoring the test period (one disjoint union on ONNX
#: Runtime / OpenVINO: 25 % less CPU than at 32; LiteRT splits it into bucket-sized groups).
SCORE_BATCH = 512
#: Calibration/verification sample: single subgraphs and merged batches of them.
SINGLES = 48
MERGED = 6
#: (name, Runtime.load backend, precision) of every engine :func:`evaluate_engines` runs.
ENGINES = (
    ("onnxruntime-fp32", "onnxruntime", "fp32"),
    ("onnxruntime-int8", "onnxruntime", "int8"),
    ("openvino-int8", "openvino", "int8"),
    ("litert-int8", "litert", "int8"),
)
INPUTS = ("x", "edge_index", "edge_attr")

Say = Callable[[str], None]


def _int8_routes() -> Any:
    """``samples/fraud/int8_routes.py`` (samples are no package: loaded by path)."""
    key, path = "_edge_sdk_sample_fraud_int8_routes", Path(__file__).with_name("int8_routes.py")
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def as_arrays(sub: Any, names: Sequence[str] = INPUTS) -> dict[str, np.ndarray]:
    """The request arrays of a store ``Subgraph`` (or a mapping), restricted to ``names``."""
    if isinstance(sub, dict):
        got = {k: sub[k] for k in names if k in sub and sub[k] is not None}
    else:
        got = {k: getattr(sub, k) for k in names if getattr(sub, k, None) is not None}
    if "x" not in got or "edge_index" not in got:
        raise ValueError("a subgraph needs x and edge_index")
    return got


def merge(subs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The disjoint union of subgraphs (node ids offset), as the node's batcher sends it."""
    offsets = np.cumsum([0] + [s["x"].shape[0] for s in subs])
    out = {
        "x": np.concatenate([s["x"] for s in subs]),
        "edge_index": np.concatenate(
            [s["edge_index"] + o for s, o in zip(subs, offsets[:-1], strict=True)], axis=1
        ),
    }
    if "edge_attr" in subs[0]:
        out["edge_attr"] = np.concatenate([s["edge_attr"] for s in subs])
    return out


def model_inputs(model: Any) -> list[str]:
    """The request fields the model's ``forward`` takes (SAGE: no ``edge_attr``)."""
    params = inspect.signature(model.forward).parameters
    return [n for n in INPUTS if n in params]


def training_subgraphs(data: Any) -> tuple[list[Any], np.ndarray | None]:
    """Training subgraphs and labels of H3's ``Requests`` (or a plain list of subgraphs)."""
    subs = getattr(data, "subgraphs", data)
    labels = getattr(data, "labels", getattr(data, "y", None))
    train = getattr(data, "train", None)
    if train is None and hasattr(data, "masks"):
        train = data.masks[0] if isinstance(data.masks, tuple) else data.masks.get("train")
    idx = np.arange(len(subs)) if train is None else np.flatnonzero(np.asarray(train))
    y = None if labels is None else np.asarray(labels)[idx]
    return [subs[i] for i in idx], y


def pick_samples(
    subs: Sequence[Any],
    labels: np.ndarray | None,
    names: Sequence[str],
    singles: int = SINGLES,
    merged: int = MERGED,
    batch: int = BATCH,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Calibration/verification graphs: ``singles`` subgraphs (a quarter of them fraud
    where labels say which, so the fraud activations are in range, and the largest one,
    so the single bucket's largest size is), then ``merged`` disjoint unions of ``batch``."""
    rng = np.random.default_rng(seed)
    n = len(subs)
    order = rng.permutation(n)
    if labels is not None and labels.any():
        fraud = order[labels[order] == 1][: singles // 4]
        order = np.concatenate([fraud, order[~np.isin(order, fraud)]])
    largest = int(np.argmax([as_arrays(subs[i], ("x", "edge_index"))["x"].shape[0] for i in order]))
    chosen = [int(order[largest]), *[int(i) for i in order if i != order[largest]][: singles - 1]]
    out = [as_arrays(subs[i], names) for i in chosen]
    for _ in range(merged):
        pick = rng.choice(n, size=min(batch, n), replace=False)
        out.append(merge([as_arrays(subs[i], names) for i in pick]))
    return out


def _round_up(v: int, step: int) -> int:
    return max(step, math.ceil(v / step) * step)


def size_buckets(
    subs: Sequence[Any], batch: int = BATCH, draws: int = 200, seed: int = 0
) -> list[Any]:
    """Two padding buckets measured from the data: the largest single subgraph (p100 of
    nodes and of edges), and the largest disjoint union of ``batch`` of them over ``draws``
    random batches (rounded up; a bigger batch is split into groups by the runtime)."""
    from edge_sdk.io_contract import Bucket

    nodes = np.array([as_arrays(s, ("x", "edge_index"))["x"].shape[0] for s in subs])
    edges = np.array([as_arrays(s, ("x", "edge_index"))["edge_index"].shape[1] for s in subs])
    rng = np.random.default_rng(seed)
    k = min(batch, len(subs))
    picks = [rng.choice(len(subs), size=k, replace=False) for _ in range(draws)]
    bn, be = (max(int(a[p].sum()) for p in picks) for a in (nodes, edges))
    sn, se = _round_up(int(nodes.max()), 8), _round_up(int(edges.max()), 8)
    single = Bucket(max_nodes=sn, max_edges=se)
    big = Bucket(max_nodes=_round_up(bn, 64), max_edges=_round_up(be, 64), max_graphs=k)
    return [single, big] if big.max_nodes > single.max_nodes else [single]


def in_degree(edge_index: np.ndarray) -> int:
    """Largest in-degree of a graph (0 without edges)."""
    return int(np.bincount(edge_index[1]).max()) if edge_index.size else 0


def with_duplicates(g: dict[str, np.ndarray]) -> np.ndarray:
    """``edge_index`` of the export's duplicate-edge check graph built from ``g`` (its
    first 16 edges repeated: ``exporters/targets/cases.py``), which must fit the limit too."""
    ei = g["edge_index"]
    return np.concatenate([ei, ei[:, : max(1, min(16, ei.shape[1]))]], axis=1)


def degree_limit(subs: Sequence[Any], spec: Any = None) -> int:
    """In-degree limit of the tables: the spec's bound (``max_in_degree``: an entity hears
    the scored event and ``fanout`` earlier ones) or the data's, plus the self loop GATv2
    adds, as a power of two (table classes are powers of two)."""
    seen = max(in_degree(as_arrays(s, ("x", "edge_index"))["edge_index"]) for s in subs)
    bound = getattr(spec, "max_in_degree", None)
    if bound is not None:
        seen = max(seen, int(bound))
    return 1 << math.ceil(math.log2(seen + 1))


def first_within(
    graphs: list[dict[str, np.ndarray]], limit: int
) -> tuple[list[dict[str, np.ndarray]], int]:
    """``graphs`` with the one whose duplicate-edge check graph (the export derives it from
    the first sample) has the smallest in-degree moved first, and ``limit`` doubled until
    that graph fits it, self loop included."""
    degrees = [in_degree(with_duplicates(g)) + 1 for g in graphs]
    i = int(np.argmin(degrees))
    while degrees[i] > limit:
        limit *= 2
    return [graphs[i], *graphs[:i], *graphs[i + 1 :]], limit


def export_bundle(
    model: Any,
    requests_or_subgraphs: Any,
    out: str | Path,
    *,
    spec: Any = None,
    profiles: Sequence[str] = PROFILES,
    int8: bool = True,
    buckets: Sequence[Any] | None = None,
    threshold: float | None = None,
    singles: int = SINGLES,
    merged: int = MERGED,
    batch: int = BATCH,
    int8_routes: dict[str, dict[str, Any]] | str = "auto",
    say: Say | None = None,
    jobs: int = 2,
) -> Path:
    """Export ``model`` (logits [N, 2]) as one INT8 bundle for ``profiles``.

    Args:
        model: The trained fraud GNN (eval mode is set here).
        requests_or_subgraphs: ``train.Requests`` (its training split is used) or a list
            of training subgraphs (store ``Subgraph`` objects or mappings of arrays).
        out: Bundle directory (must not exist or be empty).
        spec: The ``EventGraphSpec`` for the manifest (the node builds requests with it).
        profiles: Device profiles.
        int8: Build INT8 artifacts (each must pass the export's accuracy gate).
        buckets: Padding buckets for LiteRT/TensorRT (default: :func:`size_buckets`).
        threshold: The alert threshold fitted on validation (recorded in the spec).
        singles, merged, batch: The calibration/verification sample (:func:`pick_samples`).
        int8_routes: Per engine, INT8 route options for the profiles' targets; ``"auto"``:
            ``int8_routes.routes_for(model)`` ({} for a model without attention).
        say: Progress lines (with seconds since the start).
        jobs: LiteRT conversions side by side (one process per bucket, ~25 s each).

    Returns:
        The bundle directory. ``<out>.export.json`` beside it holds the buckets, the
        sample, and the seconds each step and each engine took.
    """
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    out = Path(out)
    model = model.eval()
    names = model_inputs(model)
    subs, labels = training_subgraphs(requests_or_subgraphs)
    if not subs:
        raise ValueError("no training subgraphs to calibrate and verify with")
    limit = degree_limit(subs, spec)
    graphs, limit = first_within(pick_samples(subs, labels, names, singles, merged, batch), limit)
    chosen = list(buckets) if buckets is not None else size_buckets(subs, batch)
    routes = _int8_routes().routes_for(model) if int8_routes == "auto" else dict(int8_routes)
    names_or_files = _int8_routes().with_target_options(profiles, routes, Path(f"{out}.profiles"))
    if spec is not None and threshold is not None:
        spec = spec.model_copy(update={"threshold": float(threshold)})
    extra: dict[str, Any] = {} if spec is None else {"event_graph": spec}
    cfg = ExportConfig(
        name="fraud-gnn",
        task="fraud_scoring (SYNTHETIC)",
        labels=["legit", "fraud"],
        output_names=["logits"],
        form="dynamic",
        aggregation="tables",
        max_degree=limit,
        buckets=chosen,
        int8=int8,
        calibration=len(graphs),
        profiles=names_or_files,
        jobs=jobs,
        **extra,
    )
    start = time.perf_counter()
    marks: list[tuple[float, str]] = []

    def progress(msg: str) -> None:
        marks.append((time.perf_counter() - start, msg))
        if say is not None:
            say(f"[{marks[-1][0]:6.1f} s] {msg}")

    samples = [sample_from_arrays(g, name=f"train{i}") for i, g in enumerate(graphs)]
    result = export_model(model, samples, out, cfg, progress=progress)
    total = time.perf_counter() - start
    manifest = result.manifest
    log = {
        "note": SYNTHETIC_NOTE,
        "seconds": round(total, 1),
        "steps_s": manifest.export.get("timings", {}) if isinstance(manifest.export, dict) else {},
        "engines_s": engine_seconds(marks, total),
        "buckets": [b.model_dump() for b in chosen],
        "max_degree": limit,
        "int8_routes": routes or "all",
        "samples": {"singles": len(graphs) - merged, "merged": merged, "batch": batch}
        | {"nodes": sorted({int(g["x"].shape[0]) for g in graphs})},
        "profiles": profile_choices(manifest),
        "progress": [[round(t, 1), m] for t, m in marks],
    }
    sidecar(out).write_text(json.dumps(log, indent=1) + "\n")
    return out


def sidecar(bundle: str | Path) -> Path:
    """``<bundle>.export.json``: what :func:`export_bundle` measured."""
    return Path(f"{bundle}.export.json")


def engine_seconds(marks: Sequence[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds per engine, from the export's "compiling for <engine>" progress lines."""
    starts = [(t, m.split()[2]) for t, m in marks if m.startswith("compiling for ")]
    if not starts:  # no progress lines came (a quiet export): nothing to attribute
        return {}
    ends = [t for t, m in marks if m.startswith("writing bundle")] or [total]
    stops = [t for t, _ in starts[1:]] + ends[:1]
    return {e: round(stop - t, 1) for (t, e), stop in zip(starts, stops, strict=True)}


def profile_choices(manifest: Any) -> dict[str, list[dict[str, str]]]:
    """Per profile: the backend and artifact the export chose for each of its targets."""
    out: dict[str, list[dict[str, str]]] = {}
    for c in manifest.targets:
        row = {"backend": str(c.backend), "artifact": c.artifact or "", "reason": c.reason}
        out.setdefault(c.profile, []).append(row | {"precision": str(c.precision or "")})
    return out


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of a [N, 2] logits array: the fraud probability per node."""
    d = logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-d))  # softmax(logits)[:, 1], no saturation in float32


def torch_scores(model: Any, subgraphs: Sequence[Any], batch: int = BATCH) -> np.ndarray:
    """FP32 PyTorch fraud probability of each subgraph's node 0 (merged batches)."""
    import torch

    names = model_inputs(model)
    model = model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(subgraphs), batch):
            part = [as_arrays(s, names) for s in subgraphs[i : i + batch]]
            firsts = np.cumsum([0] + [p["x"].shape[0] for p in part])[:-1]
            logits = model(**{k: torch.from_numpy(v) for k, v in merge(part).items()}).numpy()
            out.append(probabilities(logits[firsts]))
    return np.concatenate(out) if out else np.zeros(0)


class EngineScores(dict):  # type: ignore[type-arg]
    """engine -> fraud probabilities; ``described`` says what each engine ran
    (``Runtime.describe()``), ``seconds`` how long it took, ``skipped`` why one did not."""

    def __init__(self) -> None:
        super().__init__()
        self.described: dict[str, dict[str, Any]] = {}
        self.seconds: dict[str, float] = {}
        self.skipped: dict[str, str] = {}


def runtime_scores(rt: Any, subgraphs: Sequence[Any], batch: int = BATCH) -> np.ndarray:
    """Fraud probability of node 0 of each subgraph through ``rt.infer_batch``."""
    names = [i.name for i in rt.manifest.inputs] + ["edge_index"]
    out = np.empty(len(subgraphs))
    for i in range(0, len(subgraphs), batch):
        part = [as_arrays(s, [n for n in INPUTS if n in names]) for s in subgraphs[i : i + batch]]
        for j, res in enumerate(rt.infer_batch(part)):
            out[i + j] = probabilities(res["logits"][:1])[0]
    return out


def evaluate_engines(
    bundle: str | Path, subgraphs: Sequence[Any], batch: int = SCORE_BATCH
) -> EngineScores:
    """Fraud probability per transaction through ``edge_sdk.Runtime``, each backend forced
    (:data:`ENGINES`, one thread each), ``batch`` requests per ``infer_batch`` call; LiteRT
    (the slowest) in a second thread beside the others, as engines release the GIL (``seconds``
    side by side). An engine not built or whose runtime is missing is left out (``skipped``)."""
    import edge_sdk

    scores = EngineScores()

    def score(name: str, backend: str, precision: str) -> None:
        try:
            rt = edge_sdk.Runtime.load(bundle, backend=backend, precision=precision, threads=1)
        except edge_sdk.EdgeSDKError as err:
            scores.skipped[name] = str(err)
            return
        with rt:
            d, art, t = rt.describe(), rt.artifact, time.perf_counter()
            scores.described[name] = {"backend": d.get("backend"), "path": d.get("artifact_path")}
            scores.described[name].update(artifact=art.name, precision=str(art.precision))
            scores[name] = runtime_scores(rt, subgraphs, batch)
            scores.seconds[name] = round(time.perf_counter() - t, 3)

    with ThreadPoolExecutor(max_workers=1) as pool:
        side = [pool.submit(score, *e) for e in ENGINES if e[1] == "litert"]
        for e in (e for e in ENGINES if e[1] != "litert"):
            score(*e)
        for done in side:
            done.result()
    for name, *_ in ENGINES:  # the engines' order, whichever finished first
        if name in scores:
            scores[name] = scores.pop(name)
    return scores


def litert_parity(
    bundle: str | Path,
    subgraphs: Sequence[Any],
    *,
    model: Any = None,
    threshold: float = 0.5,
    profile: str = "raspberry-pi-5",
    batches: Sequence[int] = (3, 11, BATCH),
) -> dict[str, Any]:
    """LiteRT INT8 (as ``profile`` loads it) against FP32 on subgraphs of varying size.

    Each subgraph runs alone (the single bucket), then merged batches of ``batches``
    subgraphs (the batched bucket, or groups of it): sizes from one subgraph to a full
    batch, most of them never seen by the export. The reference is the FP32 PyTorch
    ``model``, else the bundle's FP32 ONNX on ONNX Runtime (equal to PyTorch within the
    export's 1e-4 parity check). Every backend call is counted: ``backend_calls`` is the
    proof that nothing ran on another engine (the LiteRT backend has no fallback of its
    own; ``Runtime.load`` picks one engine).

    Returns:
        ``backend``/``artifact``/``precision`` run, ``sizes`` (node counts, per group),
        ``buckets_hit``, ``max_abs_err`` of the probabilities, ``agreement`` of the
        decisions at ``threshold``, per group too.
    """
    import edge_sdk

    with edge_sdk.Runtime.load(bundle, profile=profile) as rt:
        d = rt.describe()
        names = [i.name for i in rt.manifest.inputs]
        subs = [
            as_arrays(s, [n for n in INPUTS if n in names or n == "edge_index"]) for s in subgraphs
        ]
        fixed = [
            rt.manifest.graph.fixed_shapes(b)["x"][0] for b in range(len(rt.manifest.graph.buckets))
        ]
        calls: list[int] = []
        infer = rt.backend.infer

        def counted(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            calls.append(int(feeds["x"].shape[0]))
            return infer(feeds)

        rt.backend.infer = counted  # type: ignore[method-assign]
        groups: dict[str, Any] = {}
        got_single = np.array([probabilities(rt.infer(s)["logits"][:1])[0] for s in subs])
        groups["single"] = (list(range(len(subs))), got_single, [s["x"].shape[0] for s in subs])
        for k in batches:
            idx = list(range((len(subs) // k) * k if len(subs) >= k else len(subs)))
            got = np.empty(len(idx))
            sizes = []
            for i in range(0, len(idx), k):
                part = [subs[j] for j in idx[i : i + k]]
                sizes.append(sum(p["x"].shape[0] for p in part))
                for j, res in enumerate(rt.infer_batch(part)):
                    got[i + j] = probabilities(res["logits"][:1])[0]
            groups[f"batch{k}"] = (idx, got, sizes)
        backend_name, artifact = rt.backend.name, rt.artifact.name
        precision = str(rt.artifact.precision)
    ref = reference_scores(bundle, subs, model)
    report: dict[str, Any] = {
        "profile": profile,
        "backend": backend_name,
        "described_backend": d.get("backend"),
        "artifact": artifact,
        "precision": precision,
        "reference": "pytorch-fp32" if model is not None else "onnx-fp32 (onnxruntime)",
        "threshold": threshold,
        "bucket_nodes": fixed,
        "backend_calls": len(calls),
        "buckets_hit": sorted({fixed.index(n) for n in calls if n in fixed}),
        "groups": {},
    }
    for gname, (idx, got, sizes) in groups.items():
        err, same = np.abs(got - ref[idx]), (got >= threshold) == (ref[idx] >= threshold)
        report["groups"][gname] = {
            "requests": len(idx),
            "nodes": sorted(set(int(s) for s in sizes)),
            "max_abs_err": float(err.max()) if err.size else 0.0,
            "agreement": float(same.mean()) if same.size else 1.0,
        }
    idx = np.concatenate([g[0] for g in groups.values()]).astype(int)
    got = np.concatenate([g[1] for g in groups.values()])
    err, same = np.abs(got - ref[idx]), (got >= threshold) == (ref[idx] >= threshold)
    report |= {"max_abs_err": float(err.max()), "mean_abs_err": float(err.mean())}
    return report | {"agreement": float(same.mean())}


def reference_scores(bundle: str | Path, subs: Sequence[Any], model: Any) -> np.ndarray:
    """FP32 fraud probabilities: PyTorch when ``model`` is given, else the FP32 ONNX."""
    if model is not None:
        return torch_scores(model, subs)
    import edge_sdk

    with edge_sdk.Runtime.load(bundle, backend="onnxruntime", precision="fp32") as rt:
        return runtime_scores(rt, subs, 1)
