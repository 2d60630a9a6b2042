"""LiteRT artifacts of a dynamic-form model that takes neighbour tables: one file per bucket.

A table-input model (``manifest.graph.tables``) has fixed shapes once a request
is padded to a bucket: ``x [max_nodes, F]`` and every table at the bucket's
class capacities. Each bucket is converted on its own (onnx2tf, all inputs kept
as they are, int64 tables staying int64), so a small request runs the small
file instead of being padded to the largest graph. The artifact's main file is
the largest bucket's; the others are companions, listed with their shapes in
``options["buckets"]``, and the runtime's base backend loads one interpreter
per file and sends each padded request to its own.

INT8 is quantised here, not by onnx2tf: onnx2tf's representative dataset casts
every input to float32 and slices all inputs along the first input's axis 0
(the node count), which is wrong for table inputs of other row counts. The
TensorFlow converter is run on onnx2tf's SavedModel with a dataset of real
requests (the job's calibration graphs padded to the bucket, tables built by
:func:`~edge_sdk.neighbour_tables.request_tables` at its capacities), int8
kernels where they exist and float kernels elsewhere (no Select TF ops), float
inputs and outputs.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.engines import LiteRtOptions
from edge_sdk.errors import ExportError
from edge_sdk.graph import DynamicGraph
from edge_sdk.manifest import Artifact, Precision, Target
from edge_sdk.parity import explain

from . import litert_files as lf
from . import litert_graph as lg
from .base import (
    Candidate,
    Feeds,
    TargetJob,
    TargetNotSupported,
    bucket_feeds,
    bucket_shapes,
    make_artifact,
    onnx_input_names,
)
from .litert_convert import bucket_label, convert_all, prepare

#: INT8 flavours tried in order until one passes the accuracy gate.
INT8_FLAVOURS = {
    "integer_quant": "int8 weights and activations where LiteRT has int8 kernels, float32 IO",
    "dynamic_range_quant": "int8 weights, float activations (dynamic range)",
}


def compile_bucketed(job: TargetJob, max_calibration: int = 200) -> list[Candidate]:
    """Convert a table-input model once per bucket; one artifact per precision.

    Raises:
        TargetNotSupported: No buckets, or onnx2tf refused the model.
        ExportError: A converted file does not run.
    """
    import onnx

    shapes = bucket_shapes(job)
    names = onnx_input_names(job.onnx_fp32)
    graphs = request_graphs(job)
    model = onnx.load(str(job.onnx_fp32))
    files: dict[Precision, list[Path]] = {p: [] for p in job.precisions}
    saved: list[tuple[Path, list[Feeds]]] = []  # per bucket: SavedModel, calibration feeds
    with tempfile.TemporaryDirectory(prefix="edge-litert-tables-") as tmp:
        runs: list[tuple[dict[str, list[int]], list[Feeds], list[Feeds], Path]] = []
        for b, fixed_shape in enumerate(shapes):
            feeds = calibration_feeds(job, graphs, b)[:max_calibration]
            work = Path(tmp) / f"b{b}"
            work.mkdir()
            check = bucket_feeds(job, coverage_graph(job, b), b)
            checks = feeds if check is None else [every_slot(job, check, b), check, *feeds]
            prepare(model, fixed_shape, names, checks, work)
            runs.append((fixed_shape, feeds, checks, work))
        convert_all(job, [work for *_, work in runs], names)
        for fixed_shape, feeds, checks, work in runs:
            out = _outputs(job, fixed_shape, checks, work)
            for p, f in out.items():
                files[p].append(f)
            saved.append((work / "tf", feeds))
        cands = []
        for p in job.precisions:
            if p is not Precision.INT8:
                art = _artifact(job, p, files[p], shapes, names, "")
                cands.append(Candidate(art, {"converter": lf.converter_versions()}))
            elif (cand := _int8(job, saved, shapes, names)) is not None:
                cands.append(cand)
        return cands


def request_graphs(job: TargetJob) -> list[DynamicGraph]:
    """The calibration graphs (then the parity cases' first graph) as requests."""
    out = []
    for feeds in [*job.calibration, *(c.feeds for c in job.cases)]:
        if "edge_index" not in feeds:
            continue
        out.append(
            DynamicGraph(
                x=np.asarray(feeds["x"], np.float32),
                edge_index=np.asarray(feeds["edge_index"], np.int64),
                edge_attr=feeds.get("edge_attr"),
                batch=feeds.get("batch"),
            )
        )
    if not out:
        raise ExportError("no calibration or parity graph (x, edge_index) to calibrate LiteRT with")
    return out


def calibration_feeds(job: TargetJob, graphs: Sequence[DynamicGraph], bucket: int) -> list[Feeds]:
    """Model feeds of the graphs that fit ``bucket`` (cropped ones when none does)."""
    feeds = [f for g in graphs if (f := bucket_feeds(job, g, bucket)) is not None]
    if feeds:
        return feeds
    b = job.graph.buckets[bucket]
    for g in graphs:
        f = bucket_feeds(job, crop(g, b.max_nodes - 1, b.max_edges), bucket)
        if f is not None:
            feeds.append(f)
    if not feeds:
        raise ExportError(f"no calibration graph can be cropped into bucket {bucket} ({b})")
    return feeds


def crop(g: DynamicGraph, nodes: int, edges: int) -> DynamicGraph:
    """The subgraph on the first ``nodes`` nodes, at most ``edges`` of its edges."""
    keep = np.nonzero((g.edge_index < nodes).all(axis=0))[0][:edges]
    batch = None if g.batch is None else g.batch[:nodes]
    attr = None if g.edge_attr is None else g.edge_attr[keep]
    return DynamicGraph(g.x[:nodes], g.edge_index[:, keep], attr, batch)


def _outputs(
    job: TargetJob, shapes: dict[str, list[int]], feeds: list[Feeds], work: Path
) -> dict[Precision, Path]:
    """The FP32/FP16 files of a converted bucket, each probed, FP32 checked against ONNX.

    Raises:
        ExportError: A file does not run.
        TargetNotSupported: FP32 differs from ONNX Runtime.
    """
    out: dict[Precision, Path] = {}
    for p, stem in ((Precision.FP32, "float32"), (Precision.FP16, "float16")):
        if p in job.precisions:
            out[p] = work / "tf" / f"model_{stem}.tflite"
            crash = lf.probe(out[p], feeds=feeds[0])
            if crash:
                raise ExportError(f"litert: {p} file of bucket {shapes} does not run: {crash}")
    if Precision.FP32 in out:
        _verify(work / "model.onnx", out[Precision.FP32], feeds[:3])
    return out


def _verify(onnx_path: Path, tflite: Path, feeds: Sequence[Feeds], atol: float = 1e-4) -> None:
    """The FP32 file against ONNX Runtime on the coverage request (every class holds rows)
    and a real one; a wrong conversion is refused, never shipped.

    Raises:
        TargetNotSupported: The outputs differ by more than ``atol`` (relative to the
            reference's magnitude).
    """
    import onnxruntime as ort

    interpreter = require("ai_edge_litert.interpreter", "checking converted .tflite files")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    it = interpreter.Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    by_name = {d["name"]: d for d in it.get_input_details()}
    for f in feeds:
        ref = session.run(None, f)
        for name, value in f.items():
            d = by_name[name]
            it.set_tensor(d["index"], value.reshape(d["shape"]).astype(d["dtype"]))
        it.invoke()
        got = [it.get_tensor(d["index"]) for d in it.get_output_details()]
        for r, g in zip(ref, got, strict=True):
            err = float(np.abs(g.reshape(r.shape) - r).max()) if r.size else 0.0
            if err > atol * max(1.0, float(np.abs(r).max(initial=0.0))):
                raise TargetNotSupported(
                    f"onnx2tf converted the model for input shapes "
                    f"{ {k: list(v.shape) for k, v in f.items()} } wrongly: max error {err:.3g} "
                    "against ONNX Runtime on a request with rows in every table class"
                )


def every_slot(job: TargetJob, feeds: Feeds, bucket: int, seed: int = 1) -> Feeds:
    """``feeds`` with every table slot live: random in-range ids, masks of 1.

    Not a request any graph makes, but the model computes the same function of it
    on every engine, and no slot, row or class is padding: an axis onnx2tf guesses
    wrong (slots K == features F) shows in the outputs whatever the graph.
    """
    rng = np.random.default_rng(seed)
    b = job.graph.buckets[bucket]
    out = dict(feeds)
    rows: dict[str, int] = {}
    for name, value in feeds.items():
        prefix, _, field = name.partition(".")
        if field.startswith("index"):
            rows[prefix] = rows.get(prefix, 0) + value.shape[0]
    for name, value in feeds.items():
        prefix, _, field = name.partition(".")
        if not field:
            continue
        if field.startswith(("mask", "order_mask")):
            out[name] = np.ones_like(value)
            continue
        high = {
            "index": b.max_nodes,
            "target": b.max_graphs if prefix == "pool" else b.max_nodes,
            "edge": b.max_edges,
            "order": rows.get(prefix, 1),
        }.get(field.rstrip("0123456789"))
        if high is not None:
            out[name] = rng.integers(0, high, value.shape).astype(value.dtype)
    return out


def coverage_graph(job: TargetJob, bucket: int, seed: int = 0) -> DynamicGraph:
    """A request for ``bucket`` with rows in every table class (seeded, random features).

    Nodes get in-degrees ``w - 1``, then ``w``, for every class width ``w`` (then one
    node spills over several rows where the layout allows), while the bucket's edge
    budget lasts; the rest of the budget is random edges. Graph ids (``batch``) of different
    sizes fill the readout table's classes.
    """
    spec = job.graph
    layout = spec.tables
    assert layout is not None
    b = spec.buckets[bucket]
    rng = np.random.default_rng(seed)
    n = b.max_nodes
    limit = layout.max_degree - 1  # room for the self loop a layer may add
    # w - 1 (+ a self loop: w) reaches every class of a ``loops`` table, w every class of
    # a ``raw`` one: one node per class first, while the edge budget lasts.
    wanted = [w - 1 for w in layout.widths] + list(layout.widths)
    if layout.max_splits > 1:
        wanted.append(layout.widths[-1] + 1)
    wanted = [d for d in wanted if 0 < d <= limit]
    degrees: list[int] = []
    for d in wanted:
        if len(degrees) < n - 1 and sum(degrees) + d <= b.max_edges:
            degrees.append(d)
    dst = np.repeat(np.arange(len(degrees)), degrees)
    extra = (b.max_edges - dst.size) // 2
    dst = np.concatenate([dst, rng.integers(len(degrees), n, extra)]).astype(np.int64)
    src = rng.integers(0, n, dst.size).astype(np.int64)
    batch = None
    if spec.has_batch:
        cuts = np.sort(rng.choice(np.arange(1, n), min(b.max_graphs, n) - 1, replace=False))
        batch = np.zeros(n, np.int64)
        batch[cuts] = 1
        batch = np.cumsum(batch)
    attr = None
    if spec.edge_dim is not None:
        attr = rng.standard_normal((dst.size, spec.edge_dim)).astype(np.float32)
    x = rng.standard_normal((n, spec.num_features)).astype(np.float32)
    return DynamicGraph(x, np.stack([src, dst]), attr, batch)


def _quantized(saved_model: Path, feeds: list[Feeds], flavour: str) -> Path:
    """One bucket's INT8 file of ``flavour``, run once on a real request."""
    path = quantize_saved_model(saved_model, feeds, flavour)
    crash = lf.probe(path, feeds=feeds[0])
    if crash:
        raise ExportError(f"{path.name} does not run: {crash}")
    return path


def quantize_saved_model(saved_model: Path, feeds: Sequence[Feeds], flavour: str) -> Path:
    """INT8 ``.tflite`` from onnx2tf's SavedModel, calibrated on ``feeds`` (exact dtypes)."""
    tf = require("tensorflow", "LiteRT INT8 quantisation")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if flavour == "integer_quant":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,  # float kernels where int8 has none, no flex ops
        ]

        def dataset() -> Any:
            for f in feeds:
                yield {k: tf.constant(v) for k, v in f.items()}

        converter.representative_dataset = dataset
    elif flavour != "dynamic_range_quant":
        raise ValueError(f"unknown INT8 flavour {flavour!r}; known: {list(INT8_FLAVOURS)}")
    with lg.quiet() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = converter.convert()
        except Exception as exc:
            raise ExportError(f"TFLite {flavour}: {exc}; log: {log.getvalue()[-800:]}") from exc
    path = saved_model / f"model_{flavour}.tflite"
    path.write_bytes(data)
    return path


def _int8(
    job: TargetJob,
    saved: list[tuple[Path, list[Feeds]]],
    shapes: list[dict[str, list[int]]],
    names: list[str],
) -> Candidate | None:
    """The first INT8 flavour that runs in every bucket and passes the gate (else the
    first that runs; the orchestrator refuses it). Built one flavour at a time, in the
    target's ``int8_flavours`` order when it lists them (the others are not built)."""
    tried: dict[str, str] = {}
    built: dict[str, list[Path]] = {}
    art: Artifact | None = None
    asked = job.target.options_as(LiteRtOptions).int8_flavours
    order = [f for f in asked if f in INT8_FLAVOURS] if asked else list(INT8_FLAVOURS)
    if not order:
        job.say(
            f"litert: int8_flavours {list(asked or ())} has none a table-input model is built "
            f"with ({', '.join(INT8_FLAVOURS)}); INT8 not built"
        )
        return None
    for flavour in INT8_FLAVOURS:
        if flavour not in order:
            tried[flavour] = "skipped: not in the target's int8_flavours"
            job.say(f"litert: INT8 {flavour} skipped (the target's int8_flavours: {order})")
    for flavour in order:
        try:
            built[flavour] = [_quantized(tf_dir, feeds, flavour) for tf_dir, feeds in saved]
        except ExportError as exc:  # left out: the next flavour may run
            tried[flavour] = str(exc)[:300]
            job.say(f"litert: INT8 {flavour} left out: {tried[flavour]}")
            continue
        art = _artifact(job, Precision.INT8, built[flavour], shapes, names, flavour)
        report = job.check(art)
        if report.passed:
            tried[flavour] = "passed"
            break
        tried[flavour] = report.note or explain(report)
        job.say(f"litert: INT8 {flavour} fails the gate ({tried[flavour]})")
    else:
        if not built:
            job.say(f"litert: no INT8 file runs in every bucket; INT8 not built: {tried}")
            return None
        first = next(iter(built))
        art = _artifact(job, Precision.INT8, built[first], shapes, names, first)
    assert art is not None
    chosen = art.options["int8_flavour"]
    details = {
        "converter": lf.converter_versions(),
        "int8_flavour": {"chosen": f"{chosen} ({INT8_FLAVOURS[chosen]})", "tried": tried},
    }
    return Candidate(art, details)


def _artifact(
    job: TargetJob,
    precision: Precision,
    paths: list[Path],
    shapes: list[dict[str, list[int]]],
    names: list[str],
    flavour: str,
) -> Artifact:
    """Copy the per-bucket files into ``litert/`` and describe them as one artifact."""
    folder = job.out / "litert"
    folder.mkdir(parents=True, exist_ok=True)
    outputs = [o.name for o in job.outputs]
    buckets: list[dict[str, Any]] = []
    dests = []
    for b, (src, shape) in enumerate(zip(paths, shapes, strict=True)):
        dest = folder / f"model.b{b}.{precision}.tflite"
        shutil.copyfile(src, dest)
        io, ops = lf.io_map(dest, names, outputs)
        buckets.append({"file": dest.name, "input_shapes": shape, "options": io})
        dests.append(dest)
    sizes = "; ".join(bucket_label(job, b) for b in range(len(paths)))
    options: dict[str, Any] = {"layout": "native", "buckets": buckets, **buckets[-1]["options"]}
    if precision is Precision.INT8:
        options |= {"int8_flavour": flavour, "int8_io": "float32"}
    return make_artifact(
        job.out,
        dests[-1],
        name=f"{job.target.key}-{precision}",
        target=Target.LITERT,
        precision=precision,
        layout="NF",
        companions=dests[:-1],
        input_shapes=shapes[-1],
        options=options,
        notes=(
            f"one .tflite per padding bucket ({sizes}): neighbour tables are inputs at each "
            "bucket's class capacities; the runtime runs the file of the bucket a request was "
            "padded to (the largest is the main file)"
        ),
        ops=ops,
    )
