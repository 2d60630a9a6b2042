"""OpenVINO IR artifacts: FP32, FP16 and INT8 (NNCF or QDQ, measured) from the exported ONNX.

- **FP32**: ``openvino.convert_model(model.onnx)`` saved uncompressed.
- **FP16**: the same IR with weights compressed to FP16 (``compress_to_fp16``).
- **INT8**: two routes, both built when they can be, then measured:

  a. **NNCF** post-training quantisation of the FP32 IR on the same
     calibration feeds the QDQ ONNX was calibrated on;
  b. the **QDQ ONNX** (onnxruntime ``quantize_static``) converted to IR.

  Each is checked for parity through the on-device runtime and timed; the
  one that passes the accuracy gate and is faster is kept, the other deleted,
  and the numbers and the reason go into ``Candidate.details``.

**Static shapes** (``static_shapes: true``, e.g. the NPU): the IR is reshaped
to ``[1, N, F]`` before saving and the artifact records ``input_shapes``; the
runtime pads smaller batches and slices larger ones. A dynamic-form model that
takes neighbour tables (``graph.tables``) gets one IR per padding bucket
(``model.<precision>.b<i>.xml``, every input at the bucket's fixed shape; the
largest is the main file, the others companions listed in
``options["buckets"]``, and the runtime runs the IR of the bucket a request was
padded to). Any other dynamic-form model is refused for such a target
(:class:`~.base.TargetNotSupported`): leaving the IR dynamic would just fail on
the device.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from edge_sdk._optional import require
from edge_sdk.engines import OpenVinoOptions
from edge_sdk.io_contract import GraphForm
from edge_sdk.manifest import Artifact, Precision, Target

from .base import (
    Candidate,
    Feeds,
    TargetJob,
    TargetNotSupported,
    bucket_shapes,
    fixed_shapes,
    make_artifact,
    model_feeds,
)

#: Fixed input shapes: one set, or one per padding bucket (table-input models); {}: dynamic.
Shapes = dict[str, list[int]] | list[dict[str, list[int]]]

#: OpenVINO op types of neighbour-table aggregation that NNCF leaves in float.
TABLE_FLOAT_OPS = ["Multiply", "ReduceSum", "ReduceMax", "Concat", "Gather", "Sqrt", "Unsqueeze",
                   "Divide", "Select", "Exp", "Subtract", "Maximum", "Minimum"]  # fmt: skip
#: INT8 routes closer than this in median latency are a tie (sub-ms timings are noisy).
SPEED_TIE = 0.05


class CompileOpenVINO:
    """Compiler step for OpenVINO targets.

    Args:
        int8_sources: INT8 routes to try, in order of preference on a tie
            (``"nncf"``, ``"qdq"``). Both are built and measured by default.
        fast_bias_correction: Try NNCF's fast bias correction first (it raised
            ``IndexError`` on a GCN with a constant adjacency MatMul: then the
            full ``BiasCorrection`` is used and the fallback recorded).
        latency_runs: Timed runs per INT8 candidate (1 thread).
    """

    def __init__(
        self,
        int8_sources: tuple[str, ...] = ("nncf", "qdq"),
        fast_bias_correction: bool = True,
        latency_runs: int = 30,
    ) -> None:
        unknown = set(int8_sources) - {"nncf", "qdq"}
        if unknown or not int8_sources:
            raise ValueError(f"int8_sources must be from ('nncf', 'qdq'), got {int8_sources}")
        self.int8_sources = int8_sources
        self.fast_bias_correction = fast_bias_correction
        self.latency_runs = latency_runs

    def __call__(self, job: TargetJob) -> list[Candidate]:
        """Build the target's precisions under ``job.out/openvino/``.

        Raises:
            TargetNotSupported: Static shapes asked for a dynamic-form model,
                or no precision the target wants can be built here.
        """
        ov = require("openvino", "compiling OpenVINO artifacts")
        options = job.target.options_as(OpenVinoOptions)
        shapes: Shapes = {}
        if job.target.static_shapes and job.graph.tables is not None and job.graph.buckets:
            shapes = bucket_shapes(job)
        elif job.target.static_shapes:
            if job.graph.tables is not None:  # a table-input model without buckets
                raise TargetNotSupported(
                    f"{job.target.key} needs static shapes and this dynamic-form model has no "
                    "padding buckets: give --bucket NODES:EDGES (one IR per bucket), or export "
                    "with --form static (fixed topology), or pick a target without "
                    "static_shapes (e.g. openvino-cpu)"
                )
            if job.prepared.form is GraphForm.DYNAMIC or job.graph.num_nodes is None:
                raise TargetNotSupported(
                    f"{job.target.key} needs static shapes and this is a dynamic-form model "
                    "(each request brings its own graph) that takes edge_index: export with "
                    "--aggregation tables and padding buckets (one IR per bucket), or --form "
                    "static (fixed topology), or pick a target without static_shapes "
                    "(e.g. openvino-cpu)"
                )
            shapes = fixed_shapes(job)
        # One folder per engine and device: an NPU and a CPU IR can share a bundle.
        folder = job.out / job.target.key
        folder.mkdir(parents=True, exist_ok=True)
        base_options = {
            "device": job.target.device,
            "performance_hint": options.performance_hint or "LATENCY",
            "num_requests": options.num_requests or 2,
            "openvino_version": ov.get_version(),
        }
        key = job.target.key
        out: list[Candidate] = []

        fp32_model = ov.convert_model(str(job.onnx_fp32))
        if isinstance(shapes, dict) and shapes:
            fp32_model.reshape(shapes)
        need_fp32 = Precision.FP32 in job.precisions
        if need_fp32:
            job.say(f"{key}: ONNX -> IR (fp32)")
            out.append(
                self._save(
                    ov, job, fp32_model, folder / "model.fp32.xml", f"{key}-fp32",
                    Precision.FP32, shapes,
                    {**base_options, "source": "model.onnx", "inference_precision": "f32"},
                    "OpenVINO IR converted from model.onnx; run with f32 inference precision",
                )
            )  # fmt: skip
        if Precision.FP16 in job.precisions:
            job.say(f"{key}: ONNX -> IR (fp16 weights)")
            out.append(
                self._save(
                    ov, job, fp32_model, folder / "model.fp16.xml", f"{key}-fp16",
                    Precision.FP16, shapes,
                    {**base_options, "source": "model.onnx"}, "FP32 IR with FP16-compressed "
                    "weights; inference precision left to the plugin (f16 on GPU/NPU, bf16 on "
                    "CPUs that have it)", compress=True,
                )
            )  # fmt: skip
        if Precision.INT8 in job.precisions:
            out.append(self._int8(ov, job, fp32_model, folder, shapes, base_options))
        if not out:
            raise TargetNotSupported(f"{key}: none of {job.precisions} can be built by OpenVINO")
        return out

    # -- INT8 -----------------------------------------------------------------------------------
    def _int8(
        self,
        ov: Any,
        job: TargetJob,
        fp32_model: Any,
        folder: Path,
        shapes: Shapes,
        base_options: dict[str, Any],
    ) -> Candidate:
        key = job.target.key
        built: dict[str, Artifact] = {}
        numbers: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        asked = job.target.options_as(OpenVinoOptions).int8_sources
        sources = tuple(s for s in self.int8_sources if asked is None or s in asked)
        for source in self.int8_sources:
            if source not in sources:
                failed[source] = "skipped: not in the target's int8_sources"
        for source in sources:
            job.say(f"{key}: INT8 from {source}")
            t0 = time.perf_counter()
            try:
                art, info = self._build_int8(ov, job, fp32_model, folder, shapes, source)
            except TargetNotSupported as exc:
                failed[source] = str(exc)
                continue
            except Exception as exc:
                failed[source] = f"{type(exc).__name__}: {exc}"
                continue
            art = art.model_copy(
                update={"options": {**base_options, **art.options, "inference_precision": "f32"}}
            )
            built[source] = art
            numbers[source] = {"build_s": round(time.perf_counter() - t0, 2), **info}
        if not built:
            raise TargetNotSupported(
                f"{key}: no INT8 IR could be built: "
                + "; ".join(f"{s}: {why}" for s, why in failed.items())
            )
        runnable = _device_present(ov, job.target.device)
        for source, art in built.items():
            if not runnable:
                continue
            report = job.check(art)
            numbers[source]["passed"] = report.passed
            numbers[source]["max_abs_err"] = max(
                (o.max_abs_err for o in report.outputs), default=None
            )
            if report.artifact_metric is not None:
                numbers[source]["accuracy"] = report.artifact_metric
                numbers[source]["reference_accuracy"] = report.reference_metric
            if report.note:
                numbers[source]["note"] = report.note
            if report.passed:
                numbers[source].update(job.latency(art, threads=1, runs=self.latency_runs))
        chosen, why = _choose(built, numbers, self.int8_sources, runnable, job.target.device)
        for source, art in built.items():
            if source != chosen:
                _remove(job.out, art)
        final = built[chosen]
        # One name per target whatever the route: the orchestrator and profiles refer to it.
        moved = []
        for src_xml in _xmls(job.out, final):
            dest = folder / src_xml.name.replace(f"model.int8-{chosen}", "model.int8")
            if src_xml != dest:
                shutil.move(src_xml, dest)
                shutil.move(src_xml.with_suffix(".bin"), dest.with_suffix(".bin"))
            moved.append(dest)
        options = {k: v for k, v in final.options.items() if k != "buckets"}
        final = _ir_artifact(
            job, moved, f"{key}-int8", Precision.INT8, shapes,
            {**options, "int8_source": chosen}, final.notes, final.ops,
        )  # fmt: skip
        details: dict[str, Any] = {"int8_source": chosen, "candidates": numbers, "why": why}
        if failed:
            details["failed"] = failed
        return Candidate(final, details)

    def _build_int8(
        self,
        ov: Any,
        job: TargetJob,
        fp32_model: Any,
        folder: Path,
        shapes: Shapes,
        source: str,
    ) -> tuple[Artifact, dict[str, Any]]:
        info: dict[str, Any] = {}
        if source == "qdq":
            if job.onnx_int8 is None:
                raise TargetNotSupported("no QDQ ONNX in the bundle (model.int8.onnx)")
            model = ov.convert_model(str(job.onnx_int8))
            if isinstance(shapes, dict) and shapes:
                model.reshape(shapes)
            notes = f"OpenVINO IR converted from the QDQ ONNX {job.onnx_int8.name}"
            src = job.onnx_int8.name
        else:
            model, info = self._nncf(job, fp32_model, shapes)
            notes = (
                f"NNCF post-training INT8 of the FP32 IR on {len(job.calibration)} calibration "
                "feeds (the QDQ model's set)"
            )
            src = "model.onnx + nncf"
        xml = folder / f"model.int8-{source}.xml"
        art = self._save(
            ov, job, model, xml, f"{job.target.key}-int8-{source}", Precision.INT8, shapes,
            {"source": src}, notes,
        )  # fmt: skip
        return art.artifact, info

    def _nncf(self, job: TargetJob, fp32_model: Any, shapes: Shapes) -> tuple[Any, dict[str, Any]]:
        nncf = require("nncf", "INT8 quantisation of OpenVINO IR")
        if not job.calibration:
            raise TargetNotSupported("no calibration feeds")
        model = fp32_model
        if shapes:
            # Calibrate on the dynamic model (calibration feeds have any batch size);
            # the quantised graph is reshaped afterwards, FakeQuantize is shape-agnostic.
            ov = require("openvino")
            model = ov.convert_model(str(job.onnx_fp32))
        feeds: list[Feeds] = model_feeds(job, job.calibration)
        dataset = nncf.Dataset(feeds, lambda f: dict(f))
        device = {
            "CPU": nncf.TargetDevice.CPU,
            "GPU": nncf.TargetDevice.GPU,
            "NPU": nncf.TargetDevice.NPU,
        }.get(job.target.device, nncf.TargetDevice.ANY)
        info: dict[str, Any] = {"calibration_size": len(feeds)}
        kwargs: dict[str, Any] = {"subset_size": len(feeds), "target_device": device}
        if job.graph.aggregation == "tables":
            # Quantise the layers' weights and inputs only: NNCF otherwise puts FakeQuantize
            # on the slot masks, degree sums and gathered rows too (measured on a table GCN:
            # max error 0.56-0.98 against 0.02-0.29 with these left in float).
            kwargs["ignored_scope"] = nncf.IgnoredScope(types=TABLE_FLOAT_OPS, validate=False)
            info["float_ops"] = f"table aggregation left in float: {', '.join(TABLE_FLOAT_OPS)}"
        try:
            q = nncf.quantize(
                model.clone(), dataset, fast_bias_correction=self.fast_bias_correction, **kwargs
            )
            info["bias_correction"] = "fast" if self.fast_bias_correction else "full"
        except Exception as exc:
            if not self.fast_bias_correction:
                raise
            job.say(f"NNCF fast bias correction failed ({type(exc).__name__}); using the full one")
            q = nncf.quantize(model.clone(), dataset, fast_bias_correction=False, **kwargs)
            info["bias_correction"] = f"full (fast failed: {type(exc).__name__}: {exc})"
        if isinstance(shapes, dict) and shapes:
            q.reshape(shapes)
        return q, info

    # -- writing -----------------------------------------------------------------------------------
    @staticmethod
    def _save(
        ov: Any,
        job: TargetJob,
        model: Any,
        xml: Path,
        name: str,
        precision: Precision,
        shapes: Shapes,
        options: dict[str, Any],
        notes: str,
        compress: bool = False,
    ) -> Candidate:
        ops = sorted({op.get_type_name() for op in model.get_ops()})
        if isinstance(shapes, dict):
            ov.save_model(model, str(xml), compress_to_fp16=compress)
            xmls = [xml]
        else:  # one IR per padding bucket
            xmls = []
            for b, bucket in enumerate(shapes):
                one = model.clone()
                one.reshape(bucket)
                xmls.append(xml.with_name(f"{xml.stem}.b{b}.xml"))
                ov.save_model(one, str(xmls[-1]), compress_to_fp16=compress)
        art = _ir_artifact(job, xmls, name, precision, shapes, options, notes, ops)
        return Candidate(art, {"source": options.get("source")})


def _ir_artifact(
    job: TargetJob,
    xmls: list[Path],
    name: str,
    precision: Precision,
    shapes: Shapes,
    options: dict[str, Any],
    notes: str,
    ops: list[str],
) -> Artifact:
    """One IR, or one IR per bucket (the largest the main file; see the module notes)."""
    companions = [xmls[-1].with_suffix(".bin")]
    input_shapes = shapes if isinstance(shapes, dict) else shapes[-1]
    if isinstance(shapes, list):
        companions += [f for x in xmls[:-1] for f in (x, x.with_suffix(".bin"))]
        options = {
            **options,
            "buckets": [
                {"file": x.name, "input_shapes": s} for x, s in zip(xmls, shapes, strict=True)
            ],
        }
        notes += (
            f"; one IR per padding bucket ({len(xmls)}): neighbour tables are inputs at each "
            "bucket's class capacities"
        )
    return make_artifact(
        job.out,
        xmls[-1],
        name=name,
        target=Target.OPENVINO,
        precision=precision,
        companions=companions,
        input_shapes=input_shapes or None,
        options=options,
        notes=notes,
        ops=ops,
    )


def _xmls(out: Path, art: Artifact) -> list[Path]:
    """The IR files of ``art``: one per bucket, or its main file."""
    buckets = art.options.get("buckets")
    if not buckets:
        return [out / art.path]
    return [(out / art.path).parent / b["file"] for b in buckets]


def _device_present(ov: Any, device: str) -> bool:
    """Whether this machine has the OpenVINO ``device`` (parity and timing need it)."""
    try:
        return any(d.split(".")[0] == device for d in ov.Core().available_devices)
    except Exception:
        return False


def _choose(
    built: dict[str, Artifact],
    numbers: dict[str, dict[str, Any]],
    order: tuple[str, ...],
    measured: bool,
    device: str,
) -> tuple[str, str]:
    """Pick the INT8 route: passes the gate, then faster; say why."""
    if not measured:
        first = next(s for s in order if s in built)
        return first, (
            f"not measured: device {device} is not present on the build machine; "
            f"kept {first} (first of {list(order)} that built)"
        )
    passing = [s for s in built if numbers[s].get("passed")]
    if not passing:
        first = next(s for s in order if s in built)
        return first, f"no INT8 route passed the accuracy gate; kept {first} (refused later)"
    if len(passing) == 1:
        losers = [s for s in built if s != passing[0]]
        tail = f" ({losers[0]} failed the accuracy gate)" if losers else " (the only one built)"
        return passing[0], f"{passing[0]} passes the accuracy gate{tail}"
    fast = min(passing, key=lambda s: (numbers[s]["median_ms"], order.index(s)))
    other = next(s for s in passing if s != fast)
    t_fast, t_other = numbers[fast]["median_ms"], numbers[other]["median_ms"]
    timing = f"{fast} {t_fast:.4f} ms vs {other} {t_other:.4f} ms at 1 thread"
    if t_other > t_fast * (1 + SPEED_TIE):
        return fast, f"both pass the accuracy gate; {fast} is faster: {timing}"
    # Within timing noise: speed does not separate them, accuracy does.
    best = min(passing, key=lambda s: (numbers[s].get("max_abs_err") or 0.0, order.index(s)))
    return best, (
        f"both pass the accuracy gate and are within {SPEED_TIE:.0%} in speed ({timing}); "
        f"{best} has the smaller output error "
        f"({numbers[best].get('max_abs_err', 0.0):.3g} vs "
        f"{numbers[other if best == fast else fast].get('max_abs_err', 0.0):.3g})"
    )


def _remove(out: Path, art: Artifact) -> None:
    for rel in [art.path, *(f.path for f in art.companions)]:
        (out / rel).unlink(missing_ok=True)
