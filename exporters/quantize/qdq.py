"""ONNX Runtime static quantisation (QDQ, symmetric, per-channel) of one FP32 model.

Only MatMul / Gemm / Conv are handed to the quantiser: their weights are what
shrinks the file, and the INT8 kernels engines provide are for them. Gather /
scatter, softmax, exp, normalisation and the index arithmetic of message
passing stay float (they stay float in every INT8 path anyway, and their
inputs are indices or small per-edge tensors).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_sdk.errors import ExportError

from .config import CalibMethod
from .reader import ORT_METHODS, FeedsReader

QUANTISABLE_OPS = ("MatMul", "Gemm", "Conv")
#: Zero point 0 everywhere (TensorRT's explicit INT8 requires it); calibrated ranges symmetric too.
EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "CalibTensorRangeSymmetric": True,
    "CalibStridedMinMax": 1,  # one graph per collection pass: graph sizes differ (see reader)
}

_log = logging.getLogger(__name__)


class QdqModel:
    """An FP32 model ready to be quantised repeatedly with one calibration.

    Calibration runs once, on the first :meth:`quantize`; later calls (other
    nodes kept float) reuse the ranges from a cache file in ``workdir``.

    Args:
        fp32_path: The FP32 ONNX model.
        workdir: Scratch folder (pre-processed model, calibration cache).
        method: Calibration method.
        calib_feeds: Calibration graphs as model feeds.
        percentile: Share of values an activation range keeps (``percentile`` method).

    Raises:
        ExportError: Unreadable model, or no calibration data.
    """

    def __init__(
        self,
        fp32_path: Path,
        workdir: Path,
        method: CalibMethod,
        calib_feeds: Sequence[dict[str, np.ndarray]],
        percentile: float = 99.999,
    ) -> None:
        if not calib_feeds:
            raise ExportError("INT8 needs at least one calibration graph; none was given")
        try:
            model = onnx.load(str(fp32_path))
        except Exception as exc:  # missing file, truncated or not protobuf
            raise ExportError(f"cannot read the FP32 model {fp32_path}: {exc}") from None
        self.path = workdir / "fp32.pre.onnx"
        self._cache = workdir / "calibration.json"
        self._method = method
        self._extra: dict[str, float | bool] = dict(EXTRA_OPTIONS)
        if method is CalibMethod.PERCENTILE:
            self._extra["CalibPercentile"] = percentile
        self._feeds = list(calib_feeds)
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{i}"  # nodes_to_exclude needs names
        self.nodes = [(n.name, n.op_type) for n in model.graph.node]
        self.candidates = [name for name, op in self.nodes if op in QUANTISABLE_OPS]
        #: Candidates kept float because a tensor they read or write was never calibrated.
        self.unseen: list[str] = []
        self.input_names = [i.name for i in model.graph.input]
        self.output_names = [o.name for o in model.graph.output]
        _pre_process(model, self.path)

    def quantize(
        self, out: Path, exclude: Sequence[str] = (), only: Sequence[str] = ()
    ) -> list[str]:
        """Write a QDQ model to ``out``; return the names of the nodes now in INT8.

        Candidates that touch a tensor no calibration graph filled stay float too
        (see :func:`uncalibrated`; listed in :attr:`unseen`).

        Args:
            out: Where the quantised model goes.
            exclude: Candidate nodes kept float.
            only: Quantise only these nodes (empty: every candidate not excluded).

        Raises:
            ExportError: ONNX Runtime failed, or wrote a model the checker rejects.
        """
        for _ in range(4):  # excluding a node can leave its neighbour's tensor unquantised
            model = self._write(out, [*exclude, *self.unseen], only)
            unseen = [n for n in uncalibrated(model, self.candidates) if n not in self.unseen]
            if not unseen:
                break
            self.unseen += unseen
        onnx.save(model, str(out))
        return quantised_nodes(model, self.candidates)

    def _write(self, out: Path, exclude: Sequence[str], only: Sequence[str]) -> onnx.ModelProto:
        fresh = not self._cache.is_file()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print
                quantize_static(
                    self.path,
                    out,
                    FeedsReader(self._feeds, self.input_names) if fresh else None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTISABLE_OPS),
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=list(only),
                    nodes_to_exclude=list(exclude),
                    calibrate_method=ORT_METHODS[self._method],
                    extra_options=dict(self._extra),
                    calibration_cache_path=self._cache,
                )
            model = onnx.load(str(out))
            float_outputs(model)
            del model.graph.value_info[:]  # shape hints only: the runtime infers them again
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:  # ORT raises plain ValueError/RuntimeError/AssertionError
            raise ExportError(f"ONNX Runtime could not quantise the model to INT8: {exc}") from exc
        return model


def uncalibrated(model: onnx.ModelProto, candidates: Sequence[str]) -> list[str]:
    """Candidates of a QDQ ``model`` that read or write a tensor without a usable scale.

    A tensor that stayed empty in every calibration graph (a neighbour-table
    width none of them needed: high-degree nodes) has no range; ORT writes an
    infinite scale and its Quantize/Dequantize pair turns every value into NaN.
    """
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    bad: set[str] = set()
    for n in graph.node:
        scale = init.get(n.input[1]) if n.op_type == "DequantizeLinear" else None
        if scale is None:
            continue
        s = numpy_helper.to_array(scale)
        if np.all(np.isfinite(s)) and np.all(s > 0):
            continue
        bad.add(n.output[0])
        q = producer.get(n.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            bad.add(q.input[0])
    wanted = set(candidates)
    return [n.name for n in graph.node if n.name in wanted and bad & {*n.input, *n.output}]


def float_outputs(model: onnx.ModelProto) -> list[str]:
    """Drop the Quantize/Dequantize pair ORT puts on a graph output; return those outputs.

    ORT quantises a Gemm/MatMul's output when its consumers could read INT8,
    and a graph output is such a tensor: the caller then gets values rounded to
    the output's scale (a fault detector's logits of range ±100 come back in
    steps of ~0.8, so its anomaly score loses all resolution near the
    threshold). Nothing on the device consumes the INT8 form of an output, so
    the pair costs accuracy and buys nothing; ops that read the output inside
    the graph then read the float value too.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    kept: list[str] = []
    for out in graph.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(consumers[q.output[0]]) != 1:
            continue
        source = q.input[0]
        src_node = producer.get(source)
        if src_node is None:  # a graph input passed straight through: leave it alone
            continue
        # the float tensor takes the output's name; its other readers follow the rename
        for reader in consumers.get(source, []):
            if reader is not q:
                reader.input[:] = [out.name if i == source else i for i in reader.input]
        src_node.output[:] = [out.name if o == source else o for o in src_node.output]
        graph.node.remove(q)
        graph.node.remove(dq)
        kept.append(out.name)
    if kept:  # the pairs' scales and zero points are read by nothing now
        read = {i for n in graph.node for i in n.input}
        unused = [t for t in graph.initializer if t.name not in read]
        for t in unused:
            graph.initializer.remove(t)
    return kept


def quantised_nodes(model: onnx.ModelProto, candidates: Sequence[str]) -> list[str]:
    """Candidates of ``model`` that read an input through DequantizeLinear."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    wanted = set(candidates)
    return [
        n.name
        for n in model.graph.node
        if n.name in wanted and any(i in dq_outputs for i in n.input)
    ]


def _remove_debris(before: set[str]) -> None:
    """Delete what ORT's failed symbolic inference dumps into the working directory.

    It saves ``sym_shape_infer_temp.onnx`` plus a ``<uuid>.data`` weights file
    in the current directory (a debugging aid) and leaves them there.
    """
    for name in set(os.listdir(".")) - before:
        if name == "sym_shape_infer_temp.onnx" or name.endswith(".data"):
            with contextlib.suppress(OSError):
                os.remove(name)


def _pre_process(model: onnx.ModelProto, out: Path) -> None:
    """ORT's shape inference before quantising (graph optimisation off: names stay)."""
    before = set(os.listdir("."))
    try:
        quant_pre_process(model, out, skip_optimization=True)
        return
    except Exception as exc:  # symbolic inference fails on some ops; plain ONNX inference next
        _log.info("symbolic shape inference failed (%s); using ONNX shape inference", exc)
        _remove_debris(before)
    try:
        quant_pre_process(model, out, skip_optimization=True, skip_symbolic_shape=True)
    except Exception as exc:
        _log.info("shape inference failed (%s); quantising the model as exported", exc)
        onnx.save(model, str(out))
