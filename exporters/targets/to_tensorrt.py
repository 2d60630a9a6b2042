"""TensorRT: the ONNX to build from plus a build plan; the engine itself when a GPU is here.

A TensorRT engine binds to one GPU model and one TensorRT version, so the
portable artifact is the ONNX model (the QDQ one for INT8: explicit
quantisation) with a *build plan* (``tensorrt/plan.<precision>.json``, also
stored as the artifact's ``options``): builder flags, optimisation profiles
from the padding buckets (dynamic form) or the fixed batch (static form),
workspace limit, DLA core, timing-cache name, the TensorRT versions it was
checked against. The device builds the engine at first load and caches it
(:mod:`edge_sdk.runtimes.trt`). When ``tensorrt`` and a CUDA GPU are present
at export, the same builder runs now and the engine ships as a companion,
used by devices with the same GPU and TensorRT version.

Before any of that, :func:`.trt_support.check_tensorrt_support` checks the
ONNX against TensorRT's ONNX-parser support: a model it would refuse fails
here, naming the ops (:class:`TargetNotSupported`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from edge_sdk.engines import TensorRtOptions
from edge_sdk.io_contract import GraphForm
from edge_sdk.manifest import Precision, Target
from edge_sdk.runtimes.trt import (
    PLAN_FORMAT,
    TIMING_CACHE,
    build_serialized_engine,
    gpu_available,
)

from .base import Candidate, TargetJob, TargetNotSupported, bucket_shapes, make_artifact
from .trt_support import (
    OPSET_MAX,
    OPSET_MIN,
    TRT_CHECKED_BELOW,
    TRT_CHECKED_MIN,
    SupportReport,
    check_tensorrt_support,
)


class CompileTensorRT:
    """Compiler step: TensorRT artifacts (ONNX + build plan, engine when a GPU is here).

    Args:
        batch: Static form: the batch the engine is built for (the runtime pads
            smaller batches to it and slices larger ones); the profile spans 1..batch.
        build_engine: ``None`` builds now when tensorrt and a GPU are present;
            ``False`` always writes a plan only; ``True`` requires a GPU here.
        allow_plugins: Accept scatter reductions (the TensorRT plugin route) as
            a warning, for devices known to import them (see :mod:`.trt_support`).
        builder_optimization_level: TensorRT builder optimisation level (0-5; 3 is its default).
    """

    def __init__(
        self,
        batch: int = 1,
        build_engine: bool | None = None,
        allow_plugins: bool = False,
        builder_optimization_level: int = 3,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.batch = batch
        self.build_engine = build_engine
        self.allow_plugins = allow_plugins
        self.builder_optimization_level = builder_optimization_level

    def __call__(self, job: TargetJob) -> list[Candidate]:
        """Check, then write one artifact per buildable precision.

        Raises:
            TargetNotSupported: The parser would refuse the model at every
                precision (ops named), or no shapes can be fixed (dynamic form
                without buckets), or a DLA target has only FP32 to build.
        """
        target = job.target
        key = target.key
        out_dir = job.out / key
        refused: dict[str, str] = {}
        plans: list[tuple[Precision, Path, SupportReport, dict[str, Any]]] = []
        for precision in job.precisions:
            source = job.onnx_int8 if precision is Precision.INT8 else job.onnx_fp32
            if source is None:
                refused[precision] = "no QDQ model (export with --int8)"
                continue
            if target.device == "DLA" and precision not in TensorRtOptions.DLA_PRECISIONS:
                refused[precision] = "DLA runs FP16 and INT8 only"
                continue
            report = check_tensorrt_support(source, precision, allow_plugins=self.allow_plugins)
            if not report.ok:
                refused[precision] = _explain(report, job)
                continue
            plans.append((precision, source, report, self._plan(job, source, precision)))
        if not plans:
            reasons = "; ".join(f"{p}: {why}" for p, why in refused.items())
            raise TargetNotSupported(f"{key}: {reasons or 'no precision to build'}")

        build, why_not = self._should_build()
        job.say(f"{key}: {'building engines here: ' + why_not if build else 'writing build plans'}")
        out_dir.mkdir(parents=True, exist_ok=True)
        candidates = []
        for precision, source, report, plan in plans:
            onnx_copy = out_dir / f"model.{precision}.onnx"
            shutil.copyfile(source, onnx_copy)
            companions = []
            if build:
                engine = out_dir / f"model.{precision}.engine"
                plan["engine"] = self._build_now(onnx_copy, plan, engine)
                companions.append(engine)
            plan_file = out_dir / f"plan.{precision}.json"
            plan_file.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
            companions.append(plan_file)
            artifact = make_artifact(
                job.out,
                onnx_copy,
                name=f"{key}-{precision}",
                target=Target.TENSORRT,
                precision=precision,
                companions=companions,
                input_shapes=plan["input_shapes"] or None,
                options=plan,
                notes=(
                    "engine built at export for " + plan["engine"]["gpu"]
                    if build
                    else "build plan: the engine is built on the device at first load"
                ),
                ops=report.ops,
            )
            details: dict[str, Any] = {
                "engine": (
                    "engine built at export"
                    if build
                    else "build plan: engine is built on the device at first load"
                ),
                "why": why_not,
                "support": report.to_dict(),
            }
            if refused:
                details["not_built"] = refused
            candidates.append(Candidate(artifact, details))
        return candidates

    # -- the plan ------------------------------------------------------------------------
    def _plan(self, job: TargetJob, source: Path, precision: Precision) -> dict[str, Any]:
        """The build settings for one precision (JSON-ready)."""
        target = job.target
        options = target.options_as(TensorRtOptions)
        flags: list[str] = []
        cleared: list[str] = []
        if precision is Precision.INT8:
            # Explicit quantisation: the Q/DQ nodes fix the INT8 layers; TensorRT 10's
            # weakly typed networks still need the INT8 flag to use INT8 kernels.
            flags.append("INT8")
            if options.fp16_fallback:
                flags.append("FP16")  # layers without INT8 kernels (scatter, softmax) run in FP16
        elif precision is Precision.FP16:
            flags.append("FP16")
        else:
            cleared.append("TF32")
        if target.device == "DLA":
            flags.append("GPU_FALLBACK")  # layers DLA cannot run go to the GPU, not an error
        profiles, shapes = self._profiles(job, source)
        return {
            "format": PLAN_FORMAT,
            "onnx": f"model.{precision}.onnx",
            "precision": str(precision),
            "explicit_quantization": precision is Precision.INT8,
            "builder_flags": flags,
            "cleared_flags": cleared,
            "profiles": profiles,
            "input_shapes": shapes,
            "workspace_mb": options.workspace,
            "device": target.device,
            "dla_core": options.dla_core if target.device == "DLA" else None,
            "builder_optimization_level": self.builder_optimization_level,
            "timing_cache": TIMING_CACHE,
            "tensorrt": {
                "checked": f">={TRT_CHECKED_MIN},<{TRT_CHECKED_BELOW}",
                "opsets": [OPSET_MIN, OPSET_MAX],
            },
            "engine": None,
        }

    def _profiles(
        self, job: TargetJob, source: Path
    ) -> tuple[list[dict[str, dict[str, list[int]]]], dict[str, list[int]]]:
        """Optimisation profiles, and the fixed input shapes the runtime pads to.

        Static/learned form: one profile, batch 1..``batch`` (or the ONNX's fixed
        batch), N and F fixed; the runtime pads to ``[batch, N, F]``.
        Dynamic form: one exact profile per padding bucket (the runtime pads
        every request to a bucket, so each gets kernels tuned for its size); a
        table-input model's profiles fix ``x`` and every table input at the
        bucket's class capacities.
        """
        graph = job.graph
        if graph.form is not GraphForm.DYNAMIC:
            assert graph.num_nodes is not None
            n, f = graph.num_nodes, graph.num_features
            fixed = _onnx_batch(source)
            hi = fixed or self.batch
            lo = fixed or 1
            profile = {"x": {"min": [lo, n, f], "opt": [hi, n, f], "max": [hi, n, f]}}
            return [profile], {"x": [hi, n, f]}
        if not graph.buckets:
            raise TargetNotSupported(
                f"{job.target.key}: TensorRT engines need fixed shapes; this dynamic-form model "
                "has no padding buckets (give --bucket NODES:EDGES, or export with --form static)"
            )
        if graph.tables is not None:
            # Tables are inputs: every one fixed per bucket (one exact profile each).
            exact = [{k: {"min": v, "opt": v, "max": v} for k, v in s.items()} for s in
                     bucket_shapes(job)]  # fmt: skip
            return exact, {}
        profiles = []
        for b in graph.buckets:
            shapes = {"x": [b.max_nodes, graph.num_features], "edge_index": [2, b.max_edges]}
            if graph.edge_dim is not None:
                shapes["edge_attr"] = [b.max_edges, graph.edge_dim]
            if graph.has_batch:
                shapes["batch"] = [b.max_nodes]
            profiles.append({k: {"min": v, "opt": v, "max": v} for k, v in shapes.items()})
        return profiles, {}

    # -- building now --------------------------------------------------------------------
    def _should_build(self) -> tuple[bool, str]:
        if self.build_engine is False:
            return False, "plan only (build_engine=False)"
        ok, why = gpu_available()
        if self.build_engine and not ok:
            raise TargetNotSupported(f"tensorrt: building the engine at export needs a GPU: {why}")
        return ok, why

    def _build_now(self, onnx_path: Path, plan: dict[str, Any], engine: Path) -> dict[str, str]:
        """Build with the runtime's builder; record which GPU and version it binds to."""
        import tensorrt as trt  # present: gpu_available() said so

        from edge_sdk.runtimes.trt import cache_folder, gpu_identity, import_cudart

        gpu, cc = gpu_identity(import_cudart())
        cache = cache_folder(gpu, cc, str(trt.__version__)) / TIMING_CACHE
        try:
            engine.write_bytes(build_serialized_engine(onnx_path, plan, cache))
        except RuntimeError as exc:
            raise TargetNotSupported(f"tensorrt: {exc}") from exc
        return {
            "path": engine.name,
            "gpu": gpu,
            "compute_capability": cc,
            "tensorrt": str(trt.__version__),
        }


def _onnx_batch(path: Path) -> int | None:
    """The ONNX's fixed batch dim of ``x``, or None when it is symbolic."""
    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name == "x":
            dims = inp.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value"):
                return int(dims[0].dim_value)
    return None


def _explain(report: SupportReport, job: TargetJob) -> str:
    """The report's message, with the fix that fits this graph form."""
    msg = report.message()
    if job.graph.form is not GraphForm.DYNAMIC and any(
        i.op.startswith("ScatterElements") for i in report.errors
    ):
        # Already the static form: the scatter is not the adjacency but a readout
        # (e.g. global_mean_pool over the stacked batch), which --form static keeps.
        msg = msg.replace(
            "export with --form static (dense)",
            "the static form still scatters (a readout such as global_mean_pool): lower it "
            "densely (reshape to [B, N, H] and reduce over N)",
        )
    return msg
