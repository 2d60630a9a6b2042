"""LiteRT (TFLite) artifacts through onnx2tf: FP32, FP16, INT8, native or NHWC layout.

Only fixed-shape, scatter-free graphs convert: onnx2tf 1.28 refuses
``ScatterElements`` with a reduction. A dynamic-form model that takes
neighbour tables as inputs (``graph.tables``) is converted once per padding
bucket by :mod:`.litert_tables`. The FP32 ONNX is given its fixed input
shape and simplified, constant-index scatter-adds (mean pooling over a fixed
batch vector) become a one-hot ``MatMul`` (:mod:`.litert_graph`); anything
still scattering is refused with the fix.

Layouts: ``native`` converts the graph as exported (x ``[1, N, F]``); ``nhwc``
rewrites every node-wise linear layer as a 1x1 convolution over a 4-D view so
the model takes x ``[1, 1, N, F]`` (a pure reshape of the manifest's ``x``,
recorded in ``artifact.options``) and XNNPACK runs ``CONV_2D``; ``auto``
builds both, checks parity of both through the runtime, times both and keeps
the faster one that passes, per precision.

INT8 is onnx2tf's full-integer quantisation (weights and activations int8,
calibrated on the job's calibration feeds) with **float32 input and output**
(``*_integer_quant.tflite``): measured as fast as the int8-IO flavour
(``*_full_integer_quant.tflite``) on the sensor model, and it keeps scale
handling out of the device's hot path.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.engines import LiteRtOptions
from edge_sdk.errors import ExportError
from edge_sdk.manifest import Artifact, Precision, Target
from edge_sdk.parity import explain

from . import litert_files as lf
from . import litert_graph as lg
from .base import (
    Candidate,
    TargetJob,
    TargetNotSupported,
    fixed_shapes,
    make_artifact,
    table_layout,
)
from .litert_tables import compile_bucketed


def layer_refusal(job: TargetJob, scatters: list[str]) -> str | None:
    """Why LiteRT is refused when a layer kept scatter because nothing lowers it, or None.

    The user's own ``MessagePassing`` layer (or an option without a lowering) keeps
    PyG's scatter in every form: the usual advice (neighbour tables, the static or
    dense form) cannot help, so the refusal names the layer and why instead.
    """
    why = job.graph.aggregation_reason
    if job.graph.aggregation != "scatter" or "Cannot lower layer" not in why:
        return None
    return (
        f"onnx2tf cannot convert {', '.join(scatters)}: the model keeps scatter "
        f"aggregation because a layer has no scatter-free lowering: {why}"
    )


#: onnx2tf output file suffix per precision.
_SUFFIX = {
    Precision.FP32: "float32",
    Precision.FP16: "float16",
    Precision.INT8: "integer_quant",  # float IO; "full_integer_quant" has int8 IO
}
#: INT8 files onnx2tf writes in one conversion, tried in this order until one passes
#: the accuracy gate: full integer first (fastest on XNNPACK), then 16-bit activations
#: (attention weights and other small probabilities survive), then weights only.
INT8_FLAVOURS = {
    "integer_quant": "int8 weights and activations, float32 IO",
    "integer_quant_with_int16_act": "int8 weights, int16 activations (16x8), float32 IO",
    "dynamic_range_quant": "int8 weights, float activations (dynamic range)",
}
#: Artifact layout label per layout.
_LAYOUT = {"native": "BNF", "nhwc": "NHWC"}


@dataclass
class _Variant:
    """One converted layout: the .tflite per precision in the temp dir, and how to feed it."""

    layout: str
    files: dict[Precision, Path]
    options: dict[str, Any]
    rewrites: list[str]
    #: INT8 files that run, by flavour, in :data:`INT8_FLAVOURS` order.
    int8: dict[str, Path] = field(default_factory=dict)


class CompileLiteRT:
    """Compiler: ONNX -> onnx2tf -> ``litert/model[.nhwc].<precision>.tflite``.

    Args:
        max_calibration: At most this many graphs (rows of ``x``) calibrate INT8.
    """

    def __init__(self, max_calibration: int = 200) -> None:
        self.max_calibration = max_calibration

    def __call__(self, job: TargetJob) -> list[Candidate]:
        """Convert, and for ``layout: auto`` choose the layout per precision.

        Raises:
            TargetNotSupported: Dynamic form, or scatters with a reduction left.
            ExportError: onnx2tf failed on the native layout.
        """
        import onnx

        require("onnx2tf", "LiteRT conversion")
        asked = job.target.options_as(LiteRtOptions).layout
        if job.graph.num_nodes is None and table_layout(job) is not None:
            if asked != "native":
                job.say(f"litert: layout {asked} asked; table-input models convert natively")
            return compile_bucketed(job, self.max_calibration)
        model = onnx.load(str(job.onnx_fp32))
        scatters = lg.reducing_scatters(model)
        if scatters and job.graph.num_nodes is None:
            raise TargetNotSupported(
                layer_refusal(job, scatters)
                or f"onnx2tf cannot convert {', '.join(scatters)} (dynamic-form aggregation): "
                "export with --aggregation tables (neighbour tables as inputs, one file per "
                "bucket), or --form static to fold the topology into the model"
            )
        shapes = fixed_shapes(job)
        try:
            fixed = lg.fix_shapes(model, shapes)
        except Exception as exc:
            raise ExportError(f"LiteRT: fixing input shapes {shapes} failed: {exc}") from exc
        rewrites = [f"{n}: scatter-add as one-hot MatMul" for n in lg.scatter_to_matmul(fixed)]
        if narrowed := lg.int32_gather_indices(fixed):
            rewrites.append(f"{narrowed} constant Gather indices as int32")
        left = lg.reducing_scatters(fixed)
        if left:
            n = job.graph.num_nodes
            raise TargetNotSupported(
                layer_refusal(job, left)
                or f"onnx2tf cannot convert {', '.join(left)} (scatter aggregation of a large "
                f"static graph): export with --form static; raise --dense-threshold above {n} "
                "so the adjacency is folded densely"
            )
        layouts = {"native": ["native"], "nhwc": ["nhwc"], "auto": ["native", "nhwc"]}[asked]
        with tempfile.TemporaryDirectory(prefix="edge-litert-") as tmp:
            variants: dict[str, _Variant] = {}
            failures: dict[str, str] = {}
            for layout in layouts:
                job.say(f"litert: converting ({layout} layout) with onnx2tf")
                try:
                    variants[layout] = self._convert(job, fixed, layout, Path(tmp), rewrites)
                except Exception as exc:
                    failures[layout] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if "native" not in variants and "native" not in failures and failures:
                # nhwc asked and it failed: fall back to the native layout, with the reason.
                job.say(f"litert: NHWC conversion failed ({failures['nhwc']}); trying native")
                try:
                    variants["native"] = self._convert(job, fixed, "native", Path(tmp), rewrites)
                except Exception as exc:
                    failures["native"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if not variants:
                # Recorded as "not built" for this target; the profile's other engines ship.
                raise TargetNotSupported(f"onnx2tf could not convert this model: {failures}")
            built = [p for p in job.precisions if any(p in v.files for v in variants.values())]
            if not built:
                raise ExportError(
                    f"no converted file runs: {[v.rewrites for v in variants.values()]}"
                )
            return [self._choose(job, variants, failures, p) for p in built]

    # -- conversion --------------------------------------------------------------------------
    def _convert(
        self, job: TargetJob, fixed: Any, layout: str, tmp: Path, rewrites: list[str]
    ) -> _Variant:
        import onnx

        onnx2tf = require("onnx2tf", "LiteRT conversion")
        model = onnx.ModelProto()
        model.CopyFrom(fixed)
        x_shape = fixed_shapes(job)["x"]
        notes = list(rewrites)
        if layout == "nhwc":
            count = lg.to_nhwc(model)
            if count == 0:
                raise TargetNotSupported("no node-wise MatMul with a constant weight to rewrite")
            lg.nhwc_input(model, "x", x_shape)
            model = lg.fix_shapes(model, {"x": lg.nchw_shape(x_shape)})
            notes.append(f"{count} node-wise MatMul(s) as 1x1 Conv")
            tf_shape = [x_shape[0], 1, x_shape[1], x_shape[2]]
        else:
            tf_shape = list(x_shape)
        work = tmp / layout
        work.mkdir()
        src = work / "model.onnx"
        onnx.save(model, str(src))
        # Real rows always go to onnx2tf, INT8 or not: it runs them through ONNX Runtime to
        # check ambiguous axes (Softmax over a square [.., N, N] attention matrix), and with
        # its default all-ones input every node looks alike and a wrong axis can pass.
        cal = self._calibration(job, tf_shape, work)
        kwargs: dict[str, Any] = {
            "input_onnx_file_path": str(src),
            "output_folder_path": str(work / "tf"),
            "output_signaturedefs": True,
            "copy_onnx_input_output_names_to_tflite": True,
            "non_verbose": True,
            # x [1, N, F] is not a sequence: keep its axes as they are. "Absolutely" and not
            # keep_ncw_or_nchw_or_ncdhw_input_names: that one still transposes the rows above
            # to [K, F, N] before its ONNX Runtime check, which then fails and is skipped
            # silently, leaving Softmax axes to a guess (a dense GAT converted wrong).
            "keep_shape_absolutely_input_names": ["x"] if layout == "native" else None,
            "custom_input_op_name_np_data_path": [["x", str(cal), 0.0, 1.0]],
        }
        if Precision.INT8 in job.precisions:
            kwargs |= {"output_integer_quantized_tflite": True, "quant_type": "per-channel"}
        with lg.quiet() as log, warnings.catch_warnings(), lf.tools_on_path():
            # onnx2tf's own checks use the deprecated tf.lite.Interpreter: not ours to fix.
            warnings.simplefilter("ignore")
            try:
                onnx2tf.convert(**kwargs)
            except BaseException as exc:  # onnx2tf calls sys.exit on some errors
                raise ExportError(f"onnx2tf: {exc}; log tail: {log.getvalue()[-800:]}") from exc
        files: dict[Precision, Path] = {}
        int8: dict[str, Path] = {}
        for p in job.precisions:
            flavours = list(INT8_FLAVOURS) if p is Precision.INT8 else [_SUFFIX[p]]
            for flavour in flavours:
                f = work / "tf" / f"model_{flavour}.tflite"
                if not f.exists():
                    raise ExportError(f"onnx2tf wrote no {f.name} (log: {log.getvalue()[-800:]})")
                crash = lf.probe(f)
                if crash:
                    # Left out, not raised: the other files of this layout are still good.
                    job.say(f"litert: {layout} {flavour} file does not run ({crash}); left out")
                    notes.append(f"{p} {flavour}: {crash}")
                    continue
                if p is Precision.INT8:
                    int8[flavour] = f
                files.setdefault(p, f)
        options = {
            "layout": layout,
            # The runtime reshapes x [B, N, F] into this (same memory order: no transpose).
            "input_transform": {"x": {"reshape": tf_shape}} if layout == "nhwc" else {},
        }
        return _Variant(layout, files, options, notes, int8)

    def _calibration(self, job: TargetJob, tf_shape: list[int], work: Path) -> Path:
        """Calibration rows in the TF input layout, one graph per row (onnx2tf needs batch 1)."""
        rows = [
            np.asarray(f["x"], np.float32).reshape(-1, *tf_shape[1:]) for f in job.calibration
        ] or [np.asarray(c.feeds["x"], np.float32).reshape(-1, *tf_shape[1:]) for c in job.cases]
        data = np.concatenate(rows)[: self.max_calibration]
        path = work / "calibration_x.npy"
        np.save(path, data)
        return path

    # -- choosing ----------------------------------------------------------------------------
    def _choose(
        self,
        job: TargetJob,
        variants: dict[str, _Variant],
        failures: dict[str, str],
        precision: Precision,
    ) -> Candidate:
        asked = job.target.options_as(LiteRtOptions).layout
        litert_dir = job.out / "litert"
        litert_dir.mkdir(parents=True, exist_ok=True)
        failures = dict(failures)  # per-precision entries below stay in this decision
        arts: dict[str, Artifact] = {}
        flavours: dict[str, dict[str, str]] = {}  # layout -> flavour -> outcome
        for layout, v in variants.items():
            if precision not in v.files:
                failures[f"{layout}_{precision}"] = next(
                    (n for n in v.rewrites if n.startswith(f"{precision}: ")), "did not run"
                )
                continue
            stem = "model" if layout == "native" else f"model.{layout}"
            dest = litert_dir / f"{stem}.{precision}.tflite"
            flavour = _SUFFIX[precision]
            if precision is Precision.INT8:
                flavour = self._int8_flavour(job, v, dest, flavours)
            shutil.copyfile(v.int8.get(flavour, v.files[precision]), dest)
            # Each file has its own tensor names (full-INT8 renames x to serving_default_x:0).
            io_map, ops = lf.io_map(
                dest, [i.name for i in job.inputs], [o.name for o in job.outputs]
            )
            arts[layout] = make_artifact(
                job.out,
                dest,
                name=f"{job.target.key}-{precision}" + ("" if len(variants) == 1 else f"-{layout}"),
                target=Target.LITERT,
                precision=precision,
                layout=_LAYOUT[layout],
                input_shapes=fixed_shapes(job),
                options=v.options
                | io_map
                | (
                    {"int8_flavour": flavour, "int8_io": "float32"}
                    if precision is Precision.INT8
                    else {}
                ),
                notes="; ".join(v.rewrites),
                ops=ops,
            )
        decision: dict[str, Any] = {
            "asked": asked,
            **{f"{k}_failed": w for k, w in failures.items()},
        }
        if len(arts) == 1:
            chosen = next(iter(arts))
            decision["why"] = f"only {chosen} built" if failures else f"layout {asked} asked"
        else:
            chosen = self._measure(job, arts, decision)
            for layout, art in arts.items():
                if layout != chosen:
                    (job.out / art.path).unlink(missing_ok=True)
        decision["chosen"] = chosen
        art = arts[chosen].model_copy(update={"name": f"{job.target.key}-{precision}"})
        return Candidate(
            art,
            {
                "converter": lf.converter_versions(),
                "layout": decision,
                "int8_flavour": (
                    {
                        "chosen": f"{art.options['int8_flavour']} "
                        f"({INT8_FLAVOURS[art.options['int8_flavour']]})",
                        "tried": flavours.get(chosen, {}),
                    }
                    if precision is Precision.INT8
                    else None
                ),
            },
        )

    def _int8_flavour(
        self, job: TargetJob, v: _Variant, dest: Path, flavours: dict[str, dict[str, str]]
    ) -> str:
        """The first INT8 flavour of ``v`` that passes parity (else the first; it is refused).

        Full-integer attention (GAT) can lose far more than the gate allows: a
        probability of 1/degree in an 8-bit activation rounds to 0 for most
        neighbours (Cora GAT: 62.9 % against 81.5 %).
        """
        tried = flavours.setdefault(v.layout, {})
        asked = job.target.options_as(LiteRtOptions).int8_flavours
        order = [f for f in (asked or v.int8) if f in v.int8] or list(v.int8)
        for flavour in v.int8:
            if flavour not in order:
                tried[flavour] = "skipped: not in the target's int8_flavours"
        for flavour in order:
            path = v.int8[flavour]
            shutil.copyfile(path, dest)
            io_map, ops = lf.io_map(
                dest, [i.name for i in job.inputs], [o.name for o in job.outputs]
            )
            probe = make_artifact(
                job.out,
                dest,
                name=f"{job.target.key}-int8-{flavour}",
                target=Target.LITERT,
                precision=Precision.INT8,
                layout=_LAYOUT[v.layout],
                input_shapes=fixed_shapes(job),
                options=v.options | io_map,
                ops=ops,
            )
            report = job.check(probe)
            if report.passed:
                tried[flavour] = "passed"
                return flavour
            tried[flavour] = report.note or explain(report)
            job.say(f"litert: {v.layout} INT8 {flavour} fails the gate ({tried[flavour]})")
        return order[0]

    def _measure(self, job: TargetJob, arts: dict[str, Artifact], decision: dict[str, Any]) -> str:
        """Check and time every layout; the fastest that passes wins (native on a tie)."""
        threads = [job.target.threads] if job.target.threads else [1, 2]
        score: dict[str, float] = {}
        for layout, art in arts.items():
            report = job.check(art)
            decision[f"{layout}_parity"] = bool(report.passed)
            if not report.passed:
                decision[f"{layout}_refused"] = report.note or "outputs beyond tolerance"
                continue
            ms = {t: job.latency(art, threads=t)["median_ms"] for t in threads}
            decision[f"{layout}_ms"] = {str(t): round(v, 4) for t, v in ms.items()}
            score[layout] = sum(ms.values())
        if not score:
            # Neither passes: return native and let the orchestrator refuse it with the report.
            decision["why"] = "no layout passed parity"
            return "native" if "native" in arts else next(iter(arts))
        best = min(score, key=lambda k: (score[k], k != "native"))
        others = [k for k in arts if k != best]
        if len(score) == 1:
            decision["why"] = f"{best} is the only layout that passes parity"
        else:
            other = others[0]
            decision["why"] = (
                f"{best} faster: {score[best]:.4f} vs {score[other]:.4f} ms "
                f"(sum of medians at {threads} thread(s))"
            )
        return best
