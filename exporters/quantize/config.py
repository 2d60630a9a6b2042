"""Options, evaluation cases and the report of INT8 quantisation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from edge_sdk.errors import ExportError


class CalibMethod(StrEnum):
    """How activation ranges are estimated from the calibration graphs."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


@dataclass
class QuantConfig:
    """Options of :func:`quantize_int8`.

    Attributes:
        method: Calibration method (a :class:`CalibMethod` or its name).
        calibration: Maximum number of calibration graphs (or batches) used.
        max_accuracy_drop: With labels: allowed accuracy drop on the decision
            rows vs the case's ``reference_metric``, as a fraction (0.01 = 1 pp).
        max_rel_error: Without labels: bound on ``||q - ref|| / ||ref||`` per
            output, summed over the decision rows of all cases (Frobenius norms).
        allow_accuracy_drop: Return the best attempt (``passed=False``) instead
            of raising when no configuration meets the gate.
        max_fallback_steps: How many times the most sensitive quantised nodes
            are put back to float before giving up.
        percentile: With ``percentile``: the share of each activation's
            calibrated values its range keeps (ONNX Runtime's default 99.999; a
            lower one clips rare outliers and keeps resolution for the rest).
    """

    method: CalibMethod = CalibMethod.MINMAX
    calibration: int = 32
    max_accuracy_drop: float = 0.01
    max_rel_error: float = 0.05
    allow_accuracy_drop: bool = False
    max_fallback_steps: int = 8
    percentile: float = 99.999

    def __post_init__(self) -> None:
        try:
            self.method = CalibMethod(self.method)
        except ValueError:
            known = ", ".join(m.value for m in CalibMethod)
            raise ExportError(f"calibration method {self.method!r}: expected {known}") from None
        if self.calibration < 1:
            raise ExportError(f"calibration must be >= 1 graph, got {self.calibration}")
        if not 0.0 < self.percentile <= 100.0:
            raise ExportError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.max_fallback_steps < 0:
            raise ExportError(f"max_fallback_steps must be >= 0, got {self.max_fallback_steps}")
        if not math.isfinite(self.max_accuracy_drop):
            raise ExportError(f"max_accuracy_drop must be finite, got {self.max_accuracy_drop}")
        if not self.max_rel_error >= 0:
            raise ExportError(f"max_rel_error must be >= 0, got {self.max_rel_error}")


@dataclass
class EvalCase:
    """One evaluation graph.

    Attributes:
        feeds: Model inputs by name.
        reference: Outputs of the reference (FP32 PyTorch, original) model by name.
        labels: Class per row of the first output, if known.
        decision_mask: Rows the gate and the fallback are measured on (validation).
        report_mask: Rows only reported (test); never used to decide anything.
        reference_metric: Accuracy of the original FP32 model on the decision
            rows (the gate's baseline); computed from ``reference`` when None.
    """

    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    decision_mask: np.ndarray | None = None
    report_mask: np.ndarray | None = None
    reference_metric: float | None = None


@dataclass
class QuantReport:
    """What was quantised, what stayed float and why, and what every attempt measured.

    Attributes:
        method: Calibration method used.
        calibration_items: Number of calibration graphs used.
        calibration_sizes: Node count of each calibration graph (rows of ``x``,
            times the batch for stacked inputs).
        quantized_ops: Names of the nodes running in INT8 in the written model.
        stayed_float: ``{"node", "op", "reason"}`` for every other node; the
            reason is ``"not quantisable op type"`` or ``"sensitivity: <metric>"``.
        tried: One entry per attempt: ``float_nodes`` (put back to float),
            ``decision_metric``, ``rel_error`` (per output) and ``passed``.
        decision_metric: Accuracy of the written model on the decision rows.
        report_metric: Accuracy of the written model on the report rows.
        rel_error: ``||q - ref|| / ||ref||`` per output on the decision rows.
        passed: Whether the written model meets the gate.
        seconds: Wall time of the whole quantisation.
    """

    method: str
    calibration_items: int
    calibration_sizes: list[int]
    quantized_ops: list[str] = field(default_factory=list)
    stayed_float: list[dict[str, str]] = field(default_factory=list)
    tried: list[dict[str, Any]] = field(default_factory=list)
    decision_metric: float | None = None
    report_metric: float | None = None
    rel_error: dict[str, float] = field(default_factory=dict)
    passed: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for the manifest's compression report)."""
        return asdict(self)
