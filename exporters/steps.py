"""The export steps and the context they pass along.

:func:`~.pipeline.export_model` runs the steps in order on one
:class:`ExportContext`: each reads the config and what earlier steps left in
the context, and adds what it produced. A step is a plain function of the
context, small enough to read at once; the work itself lives in the modules
it calls (:mod:`.prepare`, :mod:`.compress`, :mod:`.trace`,
:mod:`.targets.compile`, :mod:`.write_bundle`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from edge_sdk.errors import ExportError
from edge_sdk.export_config import ExportConfig, check_decision_names
from edge_sdk.io_contract import GraphSpec, TensorSpec
from edge_sdk.manifest import Artifact, CompressionReport, ParityReport, Precision, check_decision
from edge_sdk.parity import ParityCase, VerifyParity
from edge_sdk.profiles import DeviceProfile, TargetSpec, load_profile

from .buckets import default_buckets, needs_buckets
from .calibration import calibration_feeds
from .compress import Metrics, check_gate, prune_model, quantize_step, torch_metrics
from .intake import ModelSource, Sample, SampleSource, module_of, samples_of
from .prepare import Prepared, prepare
from .targets.base import TargetJob
from .targets.cases import parity_case, target_cases
from .targets.compile import Compiled, CompileTargets
from .to_onnx import OPSET, onnx_artifact
from .trace import Traced, trace_to_onnx

Progress = Callable[[str], None]


@dataclass
class ExportContext:
    """What one export knows so far; each step fills its part.

    Attributes:
        cfg: The export's options.
        out: The bundle directory.
        samples: The sample graphs (static when ``form='static'``).
        module: The user's model, loaded.
        say: Progress callback.
        timings: Seconds per timed stage (recorded in the manifest).
        original: The prepared FP32 model (:func:`prepare_model`).
        prepared: The model that is exported: ``original`` or its pruned copy (:func:`prune`).
        names: The model's output names.
        metrics: Task metric per model variant (``fp32``, ``pruned``, ``int8``).
        sizes: ONNX size per model variant, bytes.
        compression: What compression was applied.
        traced: The written ``model.onnx`` (:func:`to_onnx`).
        inputs: The manifest's input specs.
        outputs: The manifest's output specs.
        artifacts: The bundle's artifacts so far.
        reports: Their parity reports.
        cases: Parity cases: the samples' (:func:`verify_onnx`), then the targets'
            (:func:`target_inputs`, also written to ``verify.npz``).
        graph: The manifest's graph contract (:func:`target_inputs`).
        profiles: The device profiles.
        calibration: INT8 calibration feeds for the target compilers.
        compiled: What the target compilers added (:func:`compile_targets`).
    """

    cfg: ExportConfig
    out: Path
    samples: list[Sample]
    module: nn.Module
    say: Progress
    timings: dict[str, float] = field(default_factory=dict)
    original: Prepared = field(init=False)
    prepared: Prepared = field(init=False)
    names: list[str] = field(init=False)
    base_metrics: Metrics = field(init=False)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    compression: CompressionReport = field(default_factory=CompressionReport)
    traced: Traced = field(init=False)
    inputs: list[TensorSpec] = field(init=False)
    outputs: list[TensorSpec] = field(init=False)
    artifacts: list[Artifact] = field(default_factory=list)
    reports: list[ParityReport] = field(default_factory=list)
    cases: list[ParityCase] = field(default_factory=list)
    graph: GraphSpec = field(init=False)
    profiles: list[DeviceProfile] = field(init=False)
    calibration: list[dict[str, np.ndarray]] = field(init=False)
    compiled: Compiled = field(init=False)

    @classmethod
    def start(
        cls,
        model: ModelSource,
        samples: SampleSource,
        out: Path,
        cfg: ExportConfig,
        weights: str | Path | None = None,
        say: Progress | None = None,
    ) -> ExportContext:
        """Load the samples and the model.

        Raises:
            ExportError: No or unreadable samples, or an unloadable model.
        """
        sample_list = samples_of(samples, cfg.graph.form)
        return cls(cfg, out, sample_list, module_of(model, weights), say or (lambda _msg: None))

    @property
    def onnx_path(self) -> Path:
        """The FP32 ONNX model, ``out/model.onnx``."""
        return self.out / "model.onnx"

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the seconds the block takes as ``timings[stage]``."""
        t = time.perf_counter()
        yield
        self.timings[stage] = time.perf_counter() - t

    def target_job(self, target: TargetSpec) -> TargetJob:
        """What the compiler of ``target`` gets (after :func:`target_inputs`)."""
        quant, parity = self.cfg.quant, self.cfg.parity
        return TargetJob(
            out=self.out,
            onnx_fp32=self.onnx_path,
            onnx_int8=self.out / "model.int8.onnx" if quant.enabled else None,
            prepared=self.prepared,
            graph=self.graph,
            inputs=self.inputs,
            outputs=self.outputs,
            calibration=self.calibration,
            cases=self.cases,
            target=target,
            int8=quant.enabled,
            atol=parity.atol,
            rtol=parity.rtol,
            max_accuracy_drop=quant.max_accuracy_drop,
            max_rel_error=quant.max_rel_error,
            say=self.say,
            jobs=self.cfg.targets.jobs,
        )


def prepare_model(ctx: ExportContext) -> None:
    """Wrap the model for its graph form; name its outputs; score the FP32 reference."""
    ctx.say("preparing model")
    cfg = ctx.cfg
    ctx.original = ctx.prepared = prepare(
        ctx.module,
        ctx.samples,
        cfg.graph.form,
        cfg.graph.dense_threshold,
        cfg.graph.aggregation,
        cfg.graph.max_degree,
    )
    if ctx.original.aggregation_reason:
        ctx.say(f"aggregation: {ctx.original.aggregation} ({ctx.original.aggregation_reason})")
    ctx.names = output_names(cfg.model.output_names, ctx.original)
    if cfg.model.decision is not None:
        check_decision_names(cfg.model.decision, ctx.names)  # before the slow steps
    topology = cfg.model.topology
    if topology is not None and ctx.original.num_nodes not in (None, topology.num_nodes):
        raise ExportError(
            f"topology.num_nodes is {topology.num_nodes} but the model's graph has "
            f"{ctx.original.num_nodes} nodes"
        )
    ctx.base_metrics = torch_metrics(ctx.original, ctx.samples, ctx.names)
    ctx.metrics["fp32"] = ctx.base_metrics.to_dict()


def prune(ctx: ExportContext) -> None:
    """Prune (and fine-tune) a copy of the model behind the accuracy gate."""
    cfg = ctx.cfg
    pruned, info = prune_model(
        ctx.module,
        ctx.original,
        ctx.samples,
        str(cfg.pruning.spec),
        cfg.pruning.fine_tune_epochs,
        cfg.pruning.fine_tune_fn,
        ctx.say,
    )
    # The pruned model aggregates as the original chose (no second measurement).
    chosen = ctx.original.aggregation if ctx.original.aggregation_reason else "auto"
    ctx.prepared = prepare(
        pruned, ctx.samples, cfg.graph.form, cfg.graph.dense_threshold, chosen, cfg.graph.max_degree
    )
    ctx.prepared.aggregation_reason = ctx.original.aggregation_reason
    pruned_metrics = torch_metrics(ctx.prepared, ctx.samples, ctx.names)
    ctx.metrics["pruned"] = pruned_metrics.to_dict()
    gate = cfg.quant
    check_gate(
        "pruned model",
        pruned_metrics,
        ctx.base_metrics,
        gate.max_accuracy_drop,
        gate.allow_accuracy_drop,
    )
    ctx.compression = CompressionReport(pruning=info)
    with tempfile.TemporaryDirectory() as tmp:  # the unpruned size, for the report
        args = (ctx.original, ctx.samples[0], ctx.names, cfg.graph.simplify, Path(tmp))
        ctx.sizes["fp32"] = trace_to_onnx(*args).size


def to_onnx(ctx: ExportContext) -> None:
    """Trace the model to ``model.onnx``; check the alarm rule against its outputs."""
    ctx.say(f"exporting ONNX ({ctx.prepared.form} form, opset {OPSET})")
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.traced = trace_to_onnx(
        ctx.prepared, ctx.samples[0], ctx.names, ctx.cfg.graph.simplify, ctx.out
    )
    ctx.inputs, ctx.outputs = ctx.traced.inputs, ctx.traced.outputs
    decision = ctx.cfg.model.decision
    if decision is not None:
        try:  # shapes are known now: one score per window, logits [B, classes]
            check_decision(decision, ctx.outputs)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    ctx.sizes["pruned" if ctx.cfg.pruning.spec else "fp32"] = ctx.traced.size
    form = ctx.prepared.form
    ctx.artifacts = [onnx_artifact(ctx.onnx_path, "onnx-fp32", Precision.FP32, form)]


def verify_onnx(ctx: ExportContext) -> None:
    """Check ``model.onnx`` against PyTorch on every sample (a failure stops the export)."""
    ctx.say(f"verifying parity on {len(ctx.samples)} sample(s)")
    ctx.cases = [parity_case(ctx.prepared, s, ctx.names) for s in ctx.samples]
    p = ctx.cfg.parity
    report = VerifyParity(p.atol, p.rtol, p.max_metric_drop)(
        ctx.onnx_path, ctx.artifacts[0], ctx.inputs, ctx.outputs, engine_cases(ctx)
    )
    ctx.reports = [report]


def quantize(ctx: ExportContext) -> None:
    """Add ``model.int8.onnx`` behind the accuracy gate."""
    # Unpruned, the reference is the model verify_onnx already ran on every sample: its
    # outputs and metric are reused (two more PyTorch passes over the samples otherwise).
    same = ctx.prepared is ctx.original and len(ctx.cases) == len(ctx.samples)
    int8 = quantize_step(
        ctx.out,
        ctx.onnx_path,
        ctx.original,
        ctx.prepared,
        ctx.samples,
        ctx.names,
        ctx.inputs,
        ctx.outputs,
        ctx.cfg.quant,
        ctx.cfg.parity,
        ctx.say,
        base=ctx.base_metrics if same else None,
        references=[c.expected for c in ctx.cases] if same else None,
    )
    ctx.artifacts.append(int8.artifact)
    ctx.reports.append(int8.parity)
    ctx.sizes["int8"] = int8.artifact.size_bytes
    ctx.metrics["int8"] = int8.metrics.to_dict()
    ctx.compression = CompressionReport(
        pruning=ctx.compression.pruning,
        quantization=int8.report,
        stayed_float=int8.stayed_float,
    )


def target_inputs(ctx: ExportContext) -> None:
    """The graph contract, profiles, parity cases and calibration every target shares."""
    cfg, prepared = ctx.cfg, ctx.prepared
    ctx.profiles = [load_profile(p) for p in cfg.targets.profiles]
    has_batch = "batch" in prepared.input_names
    buckets = cfg.graph.buckets
    fixed = needs_buckets(ctx.profiles)
    if not buckets and prepared.tables is not None and fixed:
        # A table-input model runs on a static-shape engine only at a bucket's shapes.
        buckets = default_buckets(ctx.samples, has_batch, cfg.graph.max_nodes, cfg.graph.max_edges)
        sizes = ", ".join(f"{b.max_nodes}:{b.max_edges}:{b.max_graphs}" for b in buckets)
        ctx.say(
            f"padding buckets for {', '.join(fixed)} (fixed shapes): {sizes} "
            "(NODES:EDGES:GRAPHS, derived from the samples; give --bucket to choose)"
        )
    ctx.graph = GraphSpec(
        form=prepared.form,
        num_features=prepared.num_features,
        num_nodes=prepared.num_nodes,
        edge_dim=prepared.edge_dim,
        has_batch=has_batch,
        whole_request_stats=bool(prepared.whole_request_stats),
        max_nodes=cfg.graph.max_nodes,
        max_edges=cfg.graph.max_edges,
        buckets=buckets,
        aggregation=prepared.aggregation,
        aggregation_reason=prepared.aggregation_reason,
        tables=prepared.tables.with_buckets(buckets) if prepared.tables else None,
    )
    # Computed once: every target is checked on the same cases (and verify.npz holds them).
    ctx.cases = target_cases(prepared, ctx.samples, ctx.names, base=ctx.cases or None)
    ctx.calibration = calibration_feeds(prepared, ctx.samples, cfg.quant.calibration)


def compile_targets(ctx: ExportContext) -> None:
    """Compile, check and choose per profile (see :mod:`.targets.compile`)."""
    ctx.compiled = CompileTargets(ctx.target_job, ctx.artifacts, ctx.reports, ctx.say)(ctx.profiles)
    ctx.artifacts += ctx.compiled.artifacts
    ctx.reports += ctx.compiled.parity


def engine_cases(ctx: ExportContext) -> list[ParityCase]:
    """``ctx.cases`` as the ONNX model takes them: a model over neighbour tables gets
    the tables the runtime would build (only those it reads) instead of edge_index."""
    if ctx.prepared.tables is None:
        return ctx.cases
    names = {s.name for s in ctx.inputs}
    return [
        ParityCase(
            {k: v for k, v in ctx.prepared.model_feeds(c.feeds).items() if k in names},
            c.expected,
            c.labels,
            c.mask,
        )
        for c in ctx.cases
    ]


def output_names(given: list[str] | None, prepared: Prepared) -> list[str]:
    """``given``, or ``out`` / ``out0..``; one per output of the model.

    Raises:
        ExportError: As many names given as the model has outputs.
    """
    count = len(prepared.output_levels)
    names = given or (["out"] if count == 1 else [f"out{i}" for i in range(count)])
    if len(names) != count:
        raise ExportError(f"{len(names)} output names given, the model has {count} outputs")
    return names
