"""What every per-target compiler receives and returns.

A compiler (``openvino.py``, ``litert.py``, ``tensorrt.py``) turns the
exported ONNX models into engine artifacts for one profile target. It gets a
:class:`TargetJob` (the ONNX files, the prepared PyTorch model, calibration
feeds, parity cases and the target's settings) and returns
:class:`Candidate` artifacts it wrote under ``job.out``. It may use
``job.check`` (parity through the on-device runtime) and ``job.latency`` to
choose between internal variants (NNCF vs QDQ, NHWC vs native layout); the
orchestrator (:mod:`.compile`) checks every returned candidate again, measures
precisions and picks what the profile ships.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk import runtimes
from edge_sdk.bundle import Bundle, file_digest
from edge_sdk.errors import EdgeSDKError, ExportError, InvalidInputError
from edge_sdk.graph import DynamicGraph
from edge_sdk.io_contract import GraphSpec, TensorSpec
from edge_sdk.manifest import (
    SCHEMA_VERSION,
    Artifact,
    FileRef,
    Manifest,
    ModelInfo,
    OutputParity,
    ParityReport,
    Precision,
    Target,
)
from edge_sdk.neighbour_tables import TableLayout, request_tables
from edge_sdk.parity import ParityCase, judge
from edge_sdk.profiles import TargetSpec
from edge_sdk.runtime import Runtime
from edge_sdk.runtimes import BackendOptions

from ..prepare import Prepared

Progress = Callable[[str], None]
Feeds = dict[str, np.ndarray]


class TargetNotSupported(ExportError):
    """This model (graph form, ops) cannot be compiled for the target; the message says why."""


@dataclass
class Candidate:
    """One artifact a compiler wrote, not yet accepted into the bundle.

    Attributes:
        artifact: Manifest entry (paths relative to the bundle directory).
        details: What the compiler decided and measured (recorded in the manifest).
    """

    artifact: Artifact
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetJob:
    """Everything a compiler needs for one profile target.

    Attributes:
        out: Bundle directory; write artifacts under ``out/<backend>/``.
        onnx_fp32: The FP32 ONNX model (``out/model.onnx``).
        onnx_int8: The QDQ INT8 ONNX model, when ``--int8`` was asked.
        prepared: The prepared PyTorch model (for re-exports, e.g. NHWC).
        graph: The manifest's graph contract.
        inputs: The manifest's input specs (symbolic dims).
        outputs: The manifest's output specs.
        calibration: Model feeds for INT8 calibration (the QDQ model's set).
        cases: Parity cases: feeds, FP32 PyTorch reference, labels.
        target: The profile's settings for this engine.
        int8: Whether INT8 artifacts may be built (``--int8``).
        atol: FP32 parity tolerance, absolute.
        rtol: FP32 parity tolerance, relative.
        max_accuracy_drop: Accuracy gate for FP16/INT8 (fraction).
        max_rel_error: Gate without labels: max |err| / max |reference|.
        say: Progress callback.
        jobs: Conversions the compiler may run side by side, each in a process.
    """

    out: Path
    onnx_fp32: Path
    onnx_int8: Path | None
    prepared: Prepared
    graph: GraphSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    calibration: list[Feeds]
    cases: list[ParityCase]
    target: TargetSpec
    int8: bool = False
    atol: float = 1e-4
    rtol: float = 1e-3
    max_accuracy_drop: float = 0.01
    max_rel_error: float = 0.05
    say: Progress = field(default=lambda _msg: None)
    jobs: int = 1

    @property
    def precisions(self) -> list[Precision]:
        """Precisions to build: the target's, less INT8 when ``--int8`` is off."""
        return [p for p in self.target.precisions if p is not Precision.INT8 or self.int8]

    def run(self, artifact: Artifact, feeds: Sequence[Feeds], threads: int = 1) -> list[Feeds]:
        """Run ``artifact`` through the on-device :class:`~edge_sdk.Runtime` path.

        Exactly what a device does (validation, padding to buckets or to the
        artifact's fixed batch, the engine, unpadding), minus feature scaling:
        parity feeds are already in model space.
        """
        rt = self.open(artifact, threads)
        try:
            return [rt.infer(dict(f)) for f in feeds]
        finally:
            rt.close()

    def open(self, artifact: Artifact, threads: int = 1) -> Runtime:
        """A :class:`~edge_sdk.Runtime` on ``artifact`` (caller closes it)."""
        name = runtimes.backend_for_target(artifact.target)
        if name is None:
            raise ExportError(f"no runtime backend runs {artifact.target} artifacts")
        extra = self.target.engine_options()
        if self.target.backend == "openvino" and not openvino_has(self.target.device):
            # Parity of an NPU/GPU artifact on a build machine without that device: the
            # same IR on the CPU plugin (recorded as such by the orchestrator).
            extra["device"] = "CPU"
        options = BackendOptions(threads=threads, extra=extra)
        backend = runtimes.create_backend(name, options)
        backend.load(self.out / artifact.path, artifact, self.inputs, self.outputs)
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            model=ModelInfo(name="candidate", version="0"),
            graph=self.graph,
            inputs=self.inputs,
            outputs=self.outputs,
            artifacts=[artifact],
        )
        return Runtime(Bundle(self.out, manifest, self.out), backend, artifact, [])

    def check(self, artifact: Artifact) -> ParityReport:
        """Parity of ``artifact`` against the FP32 PyTorch reference (no raising).

        Tolerances by precision: FP32 must match within ``atol``/``rtol`` and
        lose at most 0.1 pp of accuracy; FP16 and INT8 are judged by the
        accuracy gate (or, without labels, ``max_rel_error``), their output
        errors reported.
        """
        return check_candidate(self, artifact)

    def latency(
        self, artifact: Artifact, threads: int = 1, runs: int = 30, warmup: int = 3
    ) -> dict[str, float]:
        """Median and p99 latency (ms) of ``artifact`` on the first parity case."""
        rt = self.open(artifact, threads)
        try:
            feeds = dict(self.cases[0].feeds)
            for _ in range(warmup):
                rt.infer(feeds)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                rt.infer(feeds)
                times.append((time.perf_counter() - t0) * 1e3)
        finally:
            rt.close()
        return {"median_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99))}


def make_artifact(
    out: Path,
    path: Path,
    *,
    name: str,
    target: Target,
    precision: Precision,
    layout: str = "native",
    companions: Sequence[Path] = (),
    input_shapes: dict[str, list[int]] | None = None,
    options: dict[str, Any] | None = None,
    notes: str = "",
    ops: Sequence[str] = (),
) -> Artifact:
    """Manifest entry for a file written under ``out`` (sizes and sha256 computed)."""
    size, sha = file_digest(path)
    refs = []
    for c in companions:
        c_size, c_sha = file_digest(c)
        refs.append(FileRef(path=c.relative_to(out).as_posix(), size_bytes=c_size, sha256=c_sha))
    return Artifact(
        name=name,
        path=path.relative_to(out).as_posix(),
        target=target,
        precision=precision,
        layout=layout,
        size_bytes=size,
        sha256=sha,
        companions=refs,
        input_shapes=input_shapes or {},
        options=options or {},
        notes=notes,
        ops=sorted(set(ops)),
    )


def artifact_bytes(artifact: Artifact) -> int:
    """Main file plus companions."""
    return artifact.size_bytes + sum(f.size_bytes for f in artifact.companions)


def fixed_shapes(job: TargetJob, batch: int = 1) -> dict[str, list[int]]:
    """Fixed input shapes for static-shape engines.

    Static and learned forms: ``x [batch, N, F]``. A dynamic-form model with
    neighbour-table inputs: the largest bucket's shapes (every input; see
    :func:`bucket_shapes` for all buckets). Any other dynamic-form model has no
    fixed shape: raises :class:`TargetNotSupported`.
    """
    if job.graph.num_nodes is None:
        if job.graph.tables is not None and job.graph.buckets:
            return bucket_shapes(job)[-1]
        raise TargetNotSupported(
            f"{job.target.backend} needs fixed shapes; this dynamic-form model has none "
            "(export with --form static, or give padding buckets)"
        )
    return {"x": [batch, job.graph.num_nodes, job.graph.num_features]}


def table_layout(job: TargetJob) -> TableLayout | None:
    """The model's neighbour-table layout (``manifest.graph.tables``), if it takes tables."""
    return job.graph.tables


def bucket_shapes(job: TargetJob) -> list[dict[str, list[int]]]:
    """Per padding bucket, the fixed shape of every input of a table-input model
    (:meth:`~edge_sdk.io_contract.GraphSpec.fixed_shapes`).

    Raises:
        TargetNotSupported: Not a table-input model, or it has no buckets.
    """
    if job.graph.tables is None or not job.graph.buckets:
        raise TargetNotSupported(
            f"{job.target.backend} needs fixed shapes: give the dynamic-form model padding "
            "buckets (--bucket NODES:EDGES) and neighbour-table aggregation"
        )
    names = onnx_input_names(job.onnx_fp32)  # the tables the model reads, not every one
    out = []
    for b in range(len(job.graph.buckets)):
        fixed = job.graph.fixed_shapes(b)
        out.append({k: fixed[k] for k in names})
    return out


def bucket_feeds(job: TargetJob, graph: DynamicGraph, bucket: int) -> Feeds | None:
    """A request's model feeds padded to ``bucket``, tables built at its capacities.

    For calibration and converter checks (the runtime builds the same feeds per
    request). ``None`` when the graph does not fit the bucket.
    """
    spec = job.graph
    layout = spec.tables
    assert layout is not None
    b = spec.buckets[bucket]
    n, e = graph.num_nodes, graph.num_edges
    if n > b.max_nodes or e > b.max_edges or graph.num_graphs > b.max_graphs:
        return None
    x = np.zeros((b.max_nodes, spec.num_features), np.float32)
    x[:n] = graph.x
    feeds: Feeds = {"x": x}
    if spec.edge_dim is not None:
        attr = np.zeros((b.max_edges, spec.edge_dim), np.float32)
        if graph.edge_attr is not None:
            attr[:e] = graph.edge_attr
        feeds["edge_attr"] = attr
    try:
        feeds |= request_tables(
            graph.edge_index,
            b.max_nodes,
            layout,
            # Without one, the real nodes are graph 0 (padding: none; graph-level norms).
            batch=graph.batch if graph.batch is not None else np.zeros(n, np.int64),
            num_graphs=b.max_graphs,
            bucket=bucket,
            num_edges=b.max_edges,
        )
    except InvalidInputError:  # over the degree or a class capacity of this bucket
        return None
    return {k: feeds[k] for k in onnx_input_names(job.onnx_fp32)}


def model_feeds(job: TargetJob, feeds: Sequence[Feeds]) -> list[Feeds]:
    """Requests as the model's own feeds (calibration of a table-input model).

    A request (``x``, ``edge_index``...) of a table-input model becomes ``x`` and
    its tables: padded to the smallest bucket it fits when the model has buckets
    (an NNCF/converter calibration then sees the shapes the device runs), else at
    its own size. Feeds that are already the model's pass through.
    """
    spec = job.graph
    if spec.tables is None:
        return list(feeds)
    out = []
    for f in feeds:
        if "edge_index" not in f:
            out.append(f)
            continue
        g = DynamicGraph(
            x=np.asarray(f["x"], np.float32),
            edge_index=np.asarray(f["edge_index"], np.int64),
            edge_attr=f.get("edge_attr"),
            batch=f.get("batch"),
        )
        fed = next(
            (m for b in range(len(spec.buckets)) if (m := bucket_feeds(job, g, b)) is not None),
            None,
        )
        if fed is None and not spec.buckets:
            fed = {"x": g.x} | request_tables(
                g.edge_index, g.num_nodes, spec.tables, batch=g.batch, num_graphs=g.num_graphs
            )
            if spec.edge_dim is not None and g.edge_attr is not None:
                fed["edge_attr"] = g.edge_attr
            fed = {k: fed[k] for k in onnx_input_names(job.onnx_fp32)}
        if fed is not None:
            out.append(fed)
    return out


def onnx_input_names(path: Path) -> list[str]:
    """Input names of an ONNX model, in order (initializers left out)."""
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _INPUT_NAMES:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        consts = {i.name for i in model.graph.initializer}
        _INPUT_NAMES[key] = [i.name for i in model.graph.input if i.name not in consts]
    return _INPUT_NAMES[key]


_INPUT_NAMES: dict[tuple[str, int], list[str]] = {}


def openvino_has(device: str) -> bool:
    if device == "CPU":
        return True
    from edge_sdk._optional import require

    ov = require("openvino", "OpenVINO parity checks")
    return any(d.split(".")[0] == device for d in ov.Core().available_devices)


def check_candidate(job: TargetJob, artifact: Artifact) -> ParityReport:
    """Run ``artifact`` on ``job.cases`` through the runtime and judge it (no raising).

    A run that fails (the engine refuses the file, or an input) is a failed
    report whose note says why, not an exception: the caller decides.
    """
    names = [o.name for o in job.outputs]
    try:
        got = job.run(artifact, [c.feeds for c in job.cases])
    except EdgeSDKError as exc:
        return _failed(artifact, job, names, f"{type(exc).__name__}: {exc}")
    return judge(
        artifact,
        got,
        job.cases,
        names,
        atol=job.atol,
        rtol=job.rtol,
        max_accuracy_drop=job.max_accuracy_drop,
        max_rel_error=job.max_rel_error,
    )


def _failed(artifact: Artifact, job: TargetJob, names: list[str], why: str) -> ParityReport:
    return ParityReport(
        artifact=artifact.name,
        backend=job.target.backend,
        samples=len(job.cases),
        outputs=[
            OutputParity(
                output=n,
                max_abs_err=math.inf,
                max_rel_err=math.inf,
                atol=job.atol,
                rtol=job.rtol,
                passed=False,
            )
            for n in names
        ],
        metric=None,
        passed=False,
        note=why,
    )
