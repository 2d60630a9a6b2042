"""Static check of an ONNX model against TensorRT's ONNX parser, without TensorRT.

The build machine usually has no GPU and no ``tensorrt``; a model that the
device's parser will refuse must still fail at export, naming the ops. The
table below is onnx-tensorrt's ``docs/operators.md`` for TensorRT 10 (10.0
parses opsets 9-20, 10.15 up to 24), plus the restrictions that matter for GNN
exports:

- ``ScatterElements`` with a ``reduction`` (how PyG's aggregation exports: add;
  GAT also max/min) is not a core layer: the parser hands it to the
  ``ScatterElements`` plugin, which takes only int64 indices and has no INT8 or
  BF16 kernels (plugin README, "Known issues"). The parser also asserted
  ``indicesDims.d[i] <= dataDims.d[i]``, which a GNN breaks by design (edges
  outnumber nodes): NVIDIA/TensorRT#2396, #2735, #3650, #3750,
  onnx/onnx-tensorrt#953, #957, #963. A dense static-topology export has none.
- ``ScatterND`` with a reduction is rejected by the parser.
- ``QuantizeLinear``/``DequantizeLinear`` need zero point 0 (symmetric): TensorRT
  quantises symmetrically, and UINT8 is only a network I/O type.
- ``Reduce*`` need constant ``axes``; ``TopK`` needs ``K`` < 3840.

Nothing here imports tensorrt: the check is pure ONNX.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from edge_sdk.manifest import Precision
from edge_sdk.runtimes.trt import SUPPORTED_MAJORS

#: TensorRT releases this table was taken from and the plan was written for: the
#: runtime's supported majors (TensorRT 11 removes the FP16/INT8 builder flags it uses).
TRT_CHECKED_MIN = f"{min(SUPPORTED_MAJORS)}.0"
TRT_CHECKED_BELOW = str(max(SUPPORTED_MAJORS) + 1)
#: Default-domain opsets TensorRT 10.0 parses (10.15 reaches 24; 10.0 is the floor we promise).
OPSET_MIN, OPSET_MAX = 9, 20

#: What to do instead when the graph form is the problem.
DENSE_HINT = "export with --form static (dense)"

#: Operators the TensorRT 10 ONNX parser imports (onnx-tensorrt docs/operators.md, "Y").
SUPPORTED_OPS: frozenset[str] = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Attention",
        "AveragePool",
        "BatchNormalization",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RMSNormalization",
        "RNN",
        "RoiAlign",
        "RotaryEmbedding",
        "Round",
        "STFT",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)

#: Operators the table lists as not supported ("N"): named so the message can say so.
UNSUPPORTED_OPS: frozenset[str] = frozenset(
    [
        "AffineGrid",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "Col2Im",
        "CenterCropPad",
        "Compress",
        "ConcatFromSequence",
        "ConvInteger",
        "DFT",
        "Det",
        "DynamicQuantizeLinear",
        "ImageDecoder",
        "MatMulInteger",
        "MaxRoiPool",
        "MaxUnpool",
        "MelWeightMatrix",
        "Multinomial",
        "NegativeLogLikelihoodLoss",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "QLinearConv",
        "QLinearMatMul",
        "RegexFullMatch",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SoftmaxCrossEntropyLoss",
        "SplitToSequence",
        "StringConcat",
        "StringNormalizer",
        "StringSplit",
        "TfIdfVectorizer",
        "Unique",
    ]
)

_REDUCE_OPS = frozenset(op for op in SUPPORTED_OPS if op.startswith("Reduce"))
_TOPK_MAX = 3840
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class SupportIssue:
    """One node TensorRT's parser will refuse (error) or handle with a caveat (warning).

    Attributes:
        node: ONNX node name (or ``<model>`` for model-wide problems).
        op: Operator, with the attribute that matters, e.g. ``ScatterElements(reduction=add)``.
        reason: Why, in TensorRT's terms, with the public issue where there is one.
        severity: ``error`` blocks the target; ``warning`` is recorded only.
        avoid: What avoids it (a different graph form or quantisation), if anything.
    """

    node: str
    op: str
    reason: str
    severity: Severity = "error"
    avoid: str | None = None


@dataclass
class SupportReport:
    """What :func:`check_tensorrt_support` found.

    Attributes:
        precision: Precision checked for.
        opset: The model's default-domain opset.
        ops: Operator types in the model.
        issues: Problems found, errors first.
        checked_against: TensorRT versions the table describes.
        scatter_ops: Scatter nodes (``ScatterElements``/``ScatterND``/``Scatter``, any
            reduction): 0 for dense and neighbour-table aggregation.
    """

    precision: Precision
    opset: int
    ops: list[str]
    issues: list[SupportIssue] = field(default_factory=list)
    scatter_ops: int = 0
    checked_against: str = f">={TRT_CHECKED_MIN},<{TRT_CHECKED_BELOW}"

    @property
    def ok(self) -> bool:
        """No blocking issue."""
        return not self.errors

    @property
    def errors(self) -> list[SupportIssue]:
        """The blocking issues."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[SupportIssue]:
        """The non-blocking issues."""
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def blocking_ops(self) -> list[str]:
        """Distinct ops with a blocking issue, in first-seen order."""
        return list(dict.fromkeys(i.op for i in self.errors))

    @property
    def alternatives(self) -> list[str]:
        """Distinct ways to avoid the blocking issues (empty: no known way)."""
        return list(dict.fromkeys(i.avoid for i in self.errors if i.avoid))

    def message(self) -> str:
        """One paragraph for an error message: ops, counts, first reasons, the fix."""
        if self.ok:
            return f"TensorRT {self.checked_against} parses this model at {self.precision}"
        parts = []
        for op in self.blocking_ops:
            hits = [i for i in self.errors if i.op == op]
            names = ", ".join(i.node for i in hits[:3]) + (" ..." if len(hits) > 3 else "")
            parts.append(f"{op} x{len(hits)} ({names}): {hits[0].reason}")
        fix = f"; to avoid: {' or '.join(self.alternatives)}" if self.alternatives else ""
        return (
            f"TensorRT {self.checked_against} cannot take this model at {self.precision} "
            f"(opset {self.opset}): " + "; ".join(parts) + fix
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the manifest's candidate details)."""
        return {
            "ok": self.ok,
            "precision": str(self.precision),
            "opset": self.opset,
            "checked_against": self.checked_against,
            "scatter_ops": self.scatter_ops,
            "issues": [i.__dict__ for i in self.issues],
        }


def check_tensorrt_support(
    model_or_path: onnx.ModelProto | str | Path,
    precision: Precision | str = Precision.FP32,
    *,
    allow_plugins: bool = False,
) -> SupportReport:
    """Check an ONNX model against TensorRT 10's ONNX-parser operator support.

    Args:
        model_or_path: The model, or a path to it.
        precision: The precision the engine will be built at. ``int8`` expects an
            explicitly quantised (Q/DQ) model and checks its zero points.
        allow_plugins: Accept ``ScatterElements`` with a reduction (the plugin
            route) as a warning instead of an error: only for a device whose
            TensorRT is known to import it for this model's shapes.

    Returns:
        The report; ``report.ok`` is False when the parser would refuse the model.
    """
    model = (
        onnx.load(str(model_or_path))
        if not isinstance(model_or_path, onnx.ModelProto)
        else model_or_path
    )
    precision = Precision(precision)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    consts = _constants(model)
    producers = {out: n for n in model.graph.node for out in n.output}
    issues: list[SupportIssue] = []

    if not OPSET_MIN <= opset <= OPSET_MAX:
        issues.append(
            SupportIssue(
                "<model>",
                f"opset {opset}",
                f"TensorRT {TRT_CHECKED_MIN} parses opsets {OPSET_MIN}-{OPSET_MAX}",
                avoid=f"export at an opset in {OPSET_MIN}-{OPSET_MAX}",
            )
        )
    for node in _all_nodes(model.graph.node):
        issues.extend(_check_node(node, precision, consts, producers, allow_plugins))

    has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if precision is Precision.INT8 and not has_qdq:
        issues.append(
            SupportIssue(
                "<model>",
                "no Q/DQ",
                "INT8 in TensorRT 10 is explicit quantisation: the model must carry "
                "QuantizeLinear/DequantizeLinear (implicit calibration is deprecated since 10.1)",
                avoid="build INT8 from the QDQ model (model.int8.onnx)",
            )
        )
    issues.sort(key=lambda i: i.severity != "error")
    nodes = list(_all_nodes(model.graph.node))
    ops = sorted({n.op_type for n in nodes})
    scatters = sum(n.op_type in ("ScatterElements", "ScatterND", "Scatter") for n in nodes)
    return SupportReport(
        precision=precision, opset=opset, ops=ops, issues=issues, scatter_ops=scatters
    )


def _all_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterable[onnx.NodeProto]:
    """Nodes, including those inside If/Loop/Scan bodies (the parser imports them too)."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g.node)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name (for zero points, axes, K)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_node(
    node: onnx.NodeProto,
    precision: Precision,
    consts: dict[str, np.ndarray],
    producers: dict[str, onnx.NodeProto],
    allow_plugins: bool,
) -> list[SupportIssue]:
    op, name = node.op_type, node.name or f"<{node.op_type} -> {node.output[0]}>"
    if node.domain not in ("", "ai.onnx"):
        return [
            SupportIssue(
                name,
                f"{node.domain}.{op}",
                f"custom-domain op {node.domain!r}: TensorRT's parser knows only ai.onnx ops "
                "(and registered plugins)",
            )
        ]
    if op in UNSUPPORTED_OPS:
        return [SupportIssue(name, op, "listed as unsupported by the TensorRT 10 ONNX parser")]
    if op not in SUPPORTED_OPS:
        return [SupportIssue(name, op, "not in the TensorRT 10 ONNX parser's operator table")]

    if op in ("ScatterElements", "Scatter"):
        reduction = _attr(node, "reduction", "none")
        if reduction == "none":
            return []
        label = f"{op}(reduction={reduction})"
        fed_by_dq = any(
            producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
            for i in (node.input[0], node.input[2])
        )
        if precision is Precision.INT8 and fed_by_dq:
            return [
                SupportIssue(
                    name,
                    label,
                    "goes to the ScatterElements plugin, which has no INT8 kernels, and its "
                    "inputs are dequantised INT8 tensors",
                    avoid=DENSE_HINT,
                )
            ]
        reason = (
            "not a core TensorRT layer: the parser sends it to the ScatterElements plugin "
            "(int64 indices only, no INT8/BF16), and asserts 'Indices dimensions must be less "
            "than data dimensions', which GNN aggregation breaks (edges outnumber nodes): "
            "NVIDIA/TensorRT#2396, #3650, #3750, onnx/onnx-tensorrt#953, #957"
        )
        severity: Severity = "warning" if allow_plugins else "error"
        return [SupportIssue(name, label, reason, severity, DENSE_HINT)]

    if op == "ScatterND":
        reduction = _attr(node, "reduction", "none")
        if reduction != "none":
            return [
                SupportIssue(
                    name,
                    f"ScatterND(reduction={reduction})",
                    "the TensorRT parser rejects ScatterND with a reduction other than none",
                    avoid=DENSE_HINT,
                )
            ]
        return []

    if op in ("QuantizeLinear", "DequantizeLinear"):
        return _check_qdq(node, name, consts)

    if op in _REDUCE_OPS and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in consts:
            return [
                SupportIssue(
                    name,
                    op,
                    "`axes` must be an initializer (a build-time constant) for TensorRT",
                    avoid="constant-fold the model (onnxslim) so axes become initializers",
                )
            ]
        return []

    if op == "TopK" and len(node.input) > 1:
        k = consts.get(node.input[1])
        if k is None or int(np.asarray(k).reshape(-1)[0]) >= _TOPK_MAX:
            return [SupportIssue(name, op, f"K must be a constant below {_TOPK_MAX} for TensorRT")]
        return []

    if op == "NonZero":
        # Supported since TensorRT 8.5, but its output size is data-dependent.
        return [
            SupportIssue(
                name,
                op,
                "supported (TensorRT >= 8.5) but data-dependent: the output shape is known only "
                "at run time, which costs a device-to-host sync per call",
                severity="warning",
                avoid=DENSE_HINT,
            )
        ]
    return []


def _check_qdq(
    node: onnx.NodeProto, name: str, consts: dict[str, np.ndarray]
) -> list[SupportIssue]:
    """Zero point 0 and a signed 8-bit type: what TensorRT's explicit quantisation takes."""
    if len(node.input) < 3 or not node.input[2]:
        return []  # no zero point: 0, which is what TensorRT needs
    zp = consts.get(node.input[2])
    if zp is None:
        return [
            SupportIssue(
                name,
                node.op_type,
                "zero point is not a constant; TensorRT needs it to be 0 at build time",
                avoid="quantise symmetrically (activation and weight zero point 0)",
            )
        ]
    issues = []
    if np.any(np.asarray(zp) != 0):
        issues.append(
            SupportIssue(
                name,
                node.op_type,
                f"asymmetric quantisation (zero point {np.asarray(zp).reshape(-1)[:4].tolist()}): "
                "TensorRT's explicit quantisation needs zero point 0",
                avoid="quantise symmetrically (ActivationSymmetric / WeightSymmetric, QInt8)",
            )
        )
    if np.asarray(zp).dtype == np.uint8:
        issues.append(
            SupportIssue(
                name,
                node.op_type,
                "UINT8 Q/DQ: TensorRT quantises to signed INT8 (UINT8 only as network I/O)",
                avoid="quantise with activation_type=QInt8, weight_type=QInt8",
            )
        )
    return issues
