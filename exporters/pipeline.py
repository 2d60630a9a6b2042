"""The export pipeline: prepare -> to ONNX -> verify parity -> write bundle."""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edge_sdk.bundle import file_digest, pack, save_npz, write_manifest
from edge_sdk.errors import ExportError
from edge_sdk.io_contract import Bucket, GraphForm, GraphSpec, OutputLevel, TensorSpec
from edge_sdk.manifest import (
    SCHEMA_VERSION,
    Canary,
    CompressionReport,
    Decision,
    FeatureScaling,
    Manifest,
    ModelInfo,
    Precision,
    Preprocessing,
    Topology,
    check_decision,
)
from edge_sdk.parity import VerifyParity
from edge_sdk.profiles import load_profile

from .calibration import calibration_feeds, induced_subgraph
from .compress import check_gate, prune_model, quantize_step, torch_metrics
from .intake import Sample, as_static, load_model, load_program, load_samples
from .prepare import Prepared, prepare
from .targets.base import TargetJob
from .targets.cases import parity_case, target_cases, write_verification
from .targets.compile import CompileTargets
from .to_onnx import OPSET, ToOnnx, onnx_artifact
from .wrappers import DYNAMIC_INPUTS

Progress = Callable[[str], None]


@dataclass
class ExportConfig:
    """Options of :func:`export_model` (the CLI builds the same object).

    Attributes:
        name: Model name in the manifest.
        version: Model version (semantic versioning recommended).
        form: ``auto`` | ``static`` | ``dynamic`` | ``learned``.
        task: Free-form task name, e.g. ``node_classification``.
        labels: Class names, index = class id.
        output_names: ONNX output names (default ``out`` / ``out0..``).
        profiles: Device profiles the bundle is built for (validated).
        dense_threshold: Static form: fold adjacency densely up to this N.
        atol: Parity absolute tolerance.
        rtol: Parity relative tolerance.
        max_metric_drop: Parity: allowed accuracy drop (fraction).
        max_nodes: Largest request the runtime accepts (dynamic form).
        max_edges: Largest edge count the runtime accepts (dynamic form).
        buckets: Padded sizes for static-shape backends (dynamic form).
        feature_scaling: ``(mean, std)`` applied by the runtime before the model.
        simplify: Simplify the ONNX graph (onnxslim).
        canary_nodes: Nodes in the canary subgraph (dynamic form).
        pack: Also write ``<out>.tar.gz``.
        prune: ``unstructured:0.5`` (``:layer`` for per-layer), ``structured:0.5`` or None.
        fine_tune_epochs: Recovery epochs after pruning (needs ``y`` and ``train_mask``).
        fine_tune_fn: Or a callable that trains the pruned model in place.
        int8: Add an INT8 (QDQ, symmetric, per-channel) artifact.
        calibration: Maximum calibration items drawn from the samples.
        calib_method: ``minmax`` | ``percentile`` | ``entropy``.
        max_accuracy_drop: Gate: allowed validation accuracy drop of a compressed
            model vs the original FP32 one (fraction; 0.01 = 1 pp).
        max_rel_error: Gate without labels: relative output error bound of INT8.
        allow_accuracy_drop: Keep a compressed model that fails the gate.
        decision: The model's alarm rule (anomaly-score output, threshold, run
            length), written into the manifest; ``edge-node`` raises alerts by it.
        topology: Where the graph came from (e.g. a learned adjacency folded
            into a static-topology model), written into the manifest.
    """

    name: str = "model"
    version: str = "1.0.0"
    form: str = "auto"
    task: str = "classification"
    labels: list[str] = field(default_factory=list)
    output_names: list[str] | None = None
    profiles: list[str] = field(default_factory=lambda: ["generic-x86"])
    dense_threshold: int = 2048
    atol: float = 1e-4
    rtol: float = 1e-3
    max_metric_drop: float = 0.001
    max_nodes: int = 1_000_000
    max_edges: int = 10_000_000
    buckets: list[Bucket] = field(default_factory=list)
    feature_scaling: tuple[Sequence[float], Sequence[float]] | None = None
    simplify: bool = True
    canary_nodes: int = 32
    pack: bool = False
    prune: str | None = None
    fine_tune_epochs: int = 0
    fine_tune_fn: Callable[[nn.Module], None] | None = None
    int8: bool = False
    calibration: int = 32
    calib_method: str = "minmax"
    max_accuracy_drop: float = 0.01
    max_rel_error: float = 0.05
    allow_accuracy_drop: bool = False
    decision: Decision | None = None
    topology: Topology | None = None

    def __post_init__(self) -> None:
        if self.form not in {"auto", *(f.value for f in GraphForm)}:
            raise ExportError(f"form {self.form!r}: expected auto, static, dynamic or learned")
        if self.atol < 0 or self.rtol < 0 or self.max_metric_drop < 0:
            raise ExportError("atol, rtol and max_metric_drop must be >= 0")
        if self.dense_threshold < 1:
            raise ExportError("dense_threshold must be >= 1")
        for p in self.profiles:
            load_profile(p)  # raises ProfileError naming the field
        if self.calib_method not in {"minmax", "percentile", "entropy"}:
            raise ExportError(
                f"calib_method {self.calib_method!r}: expected minmax, percentile or entropy"
            )
        if self.calibration < 1:
            raise ExportError("calibration must be >= 1 graph")
        if self.fine_tune_epochs < 0:
            raise ExportError("fine_tune_epochs must be >= 0")
        if (self.fine_tune_epochs or self.fine_tune_fn) and not self.prune:
            raise ExportError("fine-tuning recovers accuracy after pruning: add --prune")
        if self.max_accuracy_drop < 0 or self.max_rel_error < 0:
            raise ExportError("max_accuracy_drop and max_rel_error must be >= 0")
        if self.decision is not None and self.output_names is not None:
            # Checked here too (not only once the model is traced) so a typo fails at once.
            check_decision_names(self.decision, self.output_names)


def check_decision_names(decision: Decision, names: Sequence[str]) -> None:
    """Check that the outputs a decision names are outputs of the model.

    Raises:
        ExportError: An unknown output (the model's outputs are listed).
    """
    for flag, name in (("output", decision.output), ("class_output", decision.class_output)):
        if name is not None and name not in names:
            raise ExportError(
                f"decision {flag} {name!r} is not an output of the model; its outputs are "
                f"{list(names)} (set output_names / --output-name to name them)"
            )


@dataclass
class ExportResult:
    """Where the bundle went and what it holds."""

    bundle_dir: Path
    manifest: Manifest
    archive: Path | None = None


def export_model(
    model: nn.Module | torch.export.ExportedProgram | str | Path,
    samples: Sample | Sequence[Sample] | str | Path | Sequence[str | Path],
    out_dir: str | Path,
    config: ExportConfig | None = None,
    weights: str | Path | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a trained graph model to a verified bundle.

    Args:
        model: A module, a ``torch.export`` program, a ``.pt2`` path, or a
            ``module:function`` string.
        samples: Sample graphs (objects or ``.npz`` paths); parity is measured
            on all of them, the first one is traced.
        out_dir: Bundle directory to create (must be empty or absent).
        config: Options; defaults are sane for a CPU x86 target.
        weights: Checkpoint loaded into a ``module:function`` model.
        progress: Called with a short message at each step.

    Returns:
        The bundle directory and its manifest.

    Raises:
        UnsupportedModelError: A layer/option that cannot be lowered.
        ParityError: The artifact does not reproduce the model.
        ExportError: Any other failure, with the reason.
    """
    cfg = config or ExportConfig()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"output directory {out} is not empty; choose a new path")
    existed = out.exists()
    try:
        return _export(model, samples, out, cfg, weights, progress or (lambda _msg: None))
    except BaseException:
        # A failed export leaves nothing behind: no half bundle to mistake for a good one.
        if out.exists() and not existed:
            shutil.rmtree(out)
        elif out.exists():
            for path in out.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise


def _export(
    model: nn.Module | torch.export.ExportedProgram | str | Path,
    samples: Sample | Sequence[Sample] | str | Path | Sequence[str | Path],
    out: Path,
    cfg: ExportConfig,
    weights: str | Path | None,
    say: Progress,
) -> ExportResult:
    timings: dict[str, float] = {}
    sample_list = _samples(samples)
    if cfg.form == GraphForm.STATIC:
        sample_list = [as_static(s) for s in sample_list]
    module = _model(model, weights)

    t = time.perf_counter()
    say("preparing model")
    original = prepare(module, sample_list, cfg.form, cfg.dense_threshold)
    names = _output_names(cfg, original)
    if cfg.decision is not None:
        check_decision_names(cfg.decision, names)  # before the slow steps
    if cfg.topology is not None and original.num_nodes not in (None, cfg.topology.num_nodes):
        raise ExportError(
            f"topology.num_nodes is {cfg.topology.num_nodes} but the model's graph has "
            f"{original.num_nodes} nodes"
        )
    base_metrics = torch_metrics(original, sample_list, names)
    metrics: dict[str, dict[str, float | None]] = {"fp32": base_metrics.to_dict()}
    sizes: dict[str, int] = {}
    compression = CompressionReport()
    prepared = original
    if cfg.prune:
        pruned, prune_info = prune_model(
            module, original, sample_list, cfg.prune, cfg.fine_tune_epochs, cfg.fine_tune_fn, say
        )
        prepared = prepare(pruned, sample_list, cfg.form, cfg.dense_threshold)
        pruned_metrics = torch_metrics(prepared, sample_list, names)
        metrics["pruned"] = pruned_metrics.to_dict()
        check_gate(
            "pruned model",
            pruned_metrics,
            base_metrics,
            cfg.max_accuracy_drop,
            cfg.allow_accuracy_drop,
        )
        compression = CompressionReport(pruning=prune_info)
        with tempfile.TemporaryDirectory() as tmp:  # the unpruned size, for the report
            sizes["fp32"] = _export_onnx(original, sample_list[0], names, cfg, Path(tmp))[0].size
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"exporting ONNX ({prepared.form} form, opset {OPSET})")
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    result, inputs, outputs = _export_onnx(prepared, sample_list[0], names, cfg, out)
    if cfg.decision is not None:
        try:  # shapes are known now: one score per window, logits [B, classes]
            check_decision(cfg.decision, outputs)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    sizes["pruned" if cfg.prune else "fp32"] = result.size
    timings["onnx_s"] = time.perf_counter() - t

    artifact = onnx_artifact(onnx_path, "onnx-fp32", Precision.FP32, prepared.form)

    t = time.perf_counter()
    say(f"verifying parity on {len(sample_list)} sample(s)")
    cases = [parity_case(prepared, s, names) for s in sample_list]
    report = VerifyParity(cfg.atol, cfg.rtol, cfg.max_metric_drop)(
        onnx_path, artifact, inputs, outputs, cases
    )
    timings["parity_s"] = time.perf_counter() - t
    artifacts, reports = [artifact], [report]

    if cfg.int8:
        t = time.perf_counter()
        int8 = quantize_step(
            out, onnx_path, original, prepared, sample_list, names, inputs, outputs, cfg, say
        )
        artifacts.append(int8.artifact)
        reports.append(int8.parity)
        sizes["int8"] = int8.artifact.size_bytes
        metrics["int8"] = int8.metrics.to_dict()
        compression = CompressionReport(
            pruning=compression.pruning,
            quantization=int8.report,
            stayed_float=int8.stayed_float,
        )
        timings["int8_s"] = time.perf_counter() - t
    if cfg.prune or cfg.int8:
        compression = CompressionReport(
            pruning=compression.pruning,
            quantization=compression.quantization,
            stayed_float=compression.stayed_float,
            sizes=sizes,
            metrics=metrics,
        )

    graph = _graph_spec(prepared, cfg)
    profiles = [load_profile(p) for p in cfg.profiles]
    t = time.perf_counter()
    # Computed once: every target is checked on the same cases (and verify.npz holds them).
    cases = target_cases(prepared, sample_list, names, base=cases)
    calibration = calibration_feeds(prepared, sample_list, cfg.calibration)
    compiled = CompileTargets(
        lambda target: TargetJob(
            out=out,
            onnx_fp32=onnx_path,
            onnx_int8=out / "model.int8.onnx" if cfg.int8 else None,
            prepared=prepared,
            graph=graph,
            inputs=inputs,
            outputs=outputs,
            calibration=calibration,
            cases=cases,
            target=target,
            int8=cfg.int8,
            atol=cfg.atol,
            rtol=cfg.rtol,
            max_accuracy_drop=cfg.max_accuracy_drop,
            max_rel_error=cfg.max_rel_error,
            say=say,
        ),
        artifacts,
        reports,
        say,
    )(profiles)
    artifacts += compiled.artifacts
    reports += compiled.parity
    timings["targets_s"] = time.perf_counter() - t

    say("writing bundle")
    canary = _write_canary(out, prepared, sample_list[0], names, cfg)
    verification = write_verification(out, cases, len(sample_list), cfg)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelInfo(name=cfg.name, version=cfg.version, task=cfg.task, labels=cfg.labels),
        graph=graph,
        inputs=inputs,
        outputs=outputs,
        decision=cfg.decision,
        topology=cfg.topology,
        preprocessing=Preprocessing(
            feature_scaling=FeatureScaling(
                mean=list(cfg.feature_scaling[0]), std=list(cfg.feature_scaling[1])
            )
            if cfg.feature_scaling
            else None
        ),
        artifacts=artifacts,
        parity=reports,
        compression=compression,
        profiles=[p.name for p in profiles],
        targets=compiled.choices,
        canary=canary,
        verification=verification,
        toolchain=_toolchain(),
        export={
            "graph_layers": sorted(set(prepared.graph_layers)),
            "rewrites": prepared.rewrites,
            "trace_mode": result.mode,
            "simplifier": result.simplifier,
            "nodes_before_simplify": result.nodes[0],
            "nodes_after_simplify": result.nodes[1],
            "timings": {k: round(v, 3) for k, v in timings.items()},
        },
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_manifest(out, manifest)
    archive = pack(out, out.with_name(out.name + ".tar.gz")) if cfg.pack else None
    return ExportResult(out, manifest, archive)


def _graph_spec(prepared: Prepared, cfg: ExportConfig) -> GraphSpec:
    return GraphSpec(
        form=prepared.form,
        num_features=prepared.num_features,
        num_nodes=prepared.num_nodes,
        edge_dim=prepared.edge_dim,
        has_batch="batch" in prepared.input_names,
        max_nodes=cfg.max_nodes,
        max_edges=cfg.max_edges,
        buckets=cfg.buckets,
        aggregation=prepared.aggregation,
    )


def _output_names(cfg: ExportConfig, prepared: Prepared) -> list[str]:
    count = len(prepared.output_levels)
    names = cfg.output_names or (["out"] if count == 1 else [f"out{i}" for i in range(count)])
    if len(names) != count:
        raise ExportError(f"{len(names)} output names given, the model has {count} outputs")
    return names


@dataclass
class _Exported:
    model: onnx.ModelProto
    size: int
    mode: str
    simplifier: str
    nodes: tuple[int, int]


def _export_onnx(
    prepared: Prepared, sample: Sample, names: list[str], cfg: ExportConfig, out: Path
) -> tuple[_Exported, list[TensorSpec], list[TensorSpec]]:
    """Trace ``prepared`` to ``out/model.onnx``; return it and its tensor specs."""
    example = {
        k: torch.from_numpy(_traceable(k, v, prepared)) for k, v in prepared.feeds(sample).items()
    }
    level_dim = {
        OutputLevel.GRAPH: "num_graphs",
        OutputLevel.NODE: "num_nodes",
        OutputLevel.BATCH: "batch_size",
    }
    graph_dims = {
        n: {0: level_dim[lvl]} for n, lvl in zip(names, prepared.output_levels, strict=True)
    }
    path = out / "model.onnx"
    result = ToOnnx(prepared.input_names, names, prepared.dynamic_axes, graph_dims, cfg.simplify)(
        prepared.export_module, example, path
    )
    inputs = [_spec(v) for v in result.model.graph.input]
    outputs = [
        _spec(v, level)
        for v, level in zip(result.model.graph.output, prepared.output_levels, strict=True)
    ]
    exported = _Exported(
        result.model,
        path.stat().st_size,
        result.export_mode,
        result.simplifier,
        (result.nodes_before_simplify, result.nodes_after_simplify),
    )
    return exported, inputs, outputs


def _samples(
    samples: Sample | Sequence[Sample] | str | Path | Sequence[str | Path],
) -> list[Sample]:
    items = [samples] if isinstance(samples, Sample | str | Path) else list(samples)
    if not items:
        raise ExportError("no sample data: give at least one sample graph (--sample-data)")
    return [s if isinstance(s, Sample) else load_samples(s) for s in items]


def _model(
    model: nn.Module | torch.export.ExportedProgram | str | Path, weights: str | Path | None
) -> nn.Module:
    if isinstance(model, str | Path) and str(model).endswith(".pt2"):
        model = load_program(model)
    elif isinstance(model, str | Path):
        return load_model(str(model), weights)
    if isinstance(model, torch.export.ExportedProgram):
        if weights is not None:
            raise ExportError(
                "--weights cannot be applied to a .pt2 program (its weights are inside)"
            )
        return _ProgramModule(model)
    if weights is not None:
        from .intake import load_weights

        load_weights(model, weights)
    return model


class _ProgramModule(nn.Module):
    """A ``torch.export`` program seen as a module (its signature is x, edge_index...)."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        self.program_inputs = [
            s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"
        ]
        unknown = sorted(set(self.program_inputs) - set(DYNAMIC_INPUTS))
        if unknown:
            raise ExportError(
                f"the .pt2 program takes {unknown}; supported inputs are {list(DYNAMIC_INPUTS)}"
            )

    def train(self, mode: bool = True) -> _ProgramModule:
        # A program's train/eval behaviour was fixed when it was exported.
        return self

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_attr: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
    ) -> object:
        given = {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "batch": batch}
        return self.program(*[given[n] for n in self.program_inputs])


def _traceable(name: str, value: np.ndarray, prepared: Prepared) -> np.ndarray:
    # torch.export specialises dims it sees as 0 or 1; trace static forms with B >= 2.
    if prepared.form is not GraphForm.DYNAMIC and name == "x" and value.shape[0] < 2:
        return np.concatenate([value, value])
    return value


def _spec(value: onnx.ValueInfoProto, level: OutputLevel | None = None) -> TensorSpec:
    tt = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    shape: list[int | str] = [d.dim_param or d.dim_value for d in tt.shape.dim]
    return TensorSpec(name=value.name, dtype=dtype, shape=shape, level=level)


def _write_canary(
    out: Path, prepared: Prepared, sample: Sample, names: list[str], cfg: ExportConfig
) -> Canary:
    feeds = prepared.feeds(sample)
    if prepared.form is GraphForm.DYNAMIC:
        feeds = induced_subgraph(feeds, np.arange(min(cfg.canary_nodes, feeds["x"].shape[0])))
    else:
        feeds = {"x": feeds["x"][:1]}
    expected = dict(zip(names, prepared.run_reference(feeds), strict=True))
    arrays = {f"in/{k}": v for k, v in feeds.items()} | {f"out/{k}": v for k, v in expected.items()}
    save_npz(out / "canary.npz", arrays)
    size, sha = file_digest(out / "canary.npz")
    return Canary(path="canary.npz", sha256=sha, size_bytes=size, atol=cfg.atol, rtol=cfg.rtol)


def _toolchain() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in (
        "edge-graph-sdk",
        "torch",
        "torch-geometric",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "onnxslim",
        "numpy",
    ):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions
