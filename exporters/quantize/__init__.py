"""INT8 post-training quantisation of an exported ONNX model.

ONNX Runtime's ``quantize_static`` writes a QDQ model: symmetric INT8
activations and weights (zero point 0, as TensorRT's explicit INT8 requires),
per-channel weight scales, activation ranges calibrated on the user's sample
graphs with MinMax, Percentile or Entropy. Only MatMul / Gemm / Conv are
quantised (see :mod:`.qdq`); the model is evaluated with ONNX Runtime and,
while the accuracy gate fails, the most sensitive quantised nodes (measured one
by one, see :mod:`.sensitivity`) are put back to float and it is tried again.

Calibration set: activation ranges of message passing depend on graph size
(degree-normalised sums, attention over more neighbours), so calibrate on at
least one graph per size regime the model will serve (for one big graph: the
graph plus induced subgraphs of smaller sizes). MinMax works with a few items;
Percentile and Entropy estimate histograms and want 8 to 16 items or more.

Gate: with labels, accuracy on the decision (validation) rows must stay within
``max_accuracy_drop`` of the original model's; without labels, every output's
relative error ``||q - ref|| / ||ref||`` over the decision rows of all cases
must stay within ``max_rel_error`` (default 0.05). Report rows (test) are only
reported.

Example::

    report = quantize_int8(Path("model.onnx"), Path("model.int8.onnx"), calib, cases,
                           ["logits"], QuantConfig(method=CalibMethod.PERCENTILE))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_sdk._optional import require

require("onnxruntime", "edge_sdk.exporters.quantize")

from .config import CalibMethod, EvalCase, QuantConfig, QuantReport  # noqa: E402
from .int8 import Quantize  # noqa: E402


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calib_feeds: Sequence[dict[str, np.ndarray]],
    cases: Sequence[EvalCase],
    output_names: Sequence[str],
    config: QuantConfig | None = None,
) -> QuantReport:
    """Quantise ``fp32_path`` to INT8 behind the accuracy gate and write ``out_path``.

    Evaluates on ``cases`` with ONNX Runtime; while the gate fails, puts the
    most sensitive quantised nodes back to float (``nodes_to_exclude``) and
    retries, up to ``config.max_fallback_steps`` times.

    Args:
        fp32_path: The FP32 ONNX model.
        out_path: Where the INT8 model is written (passing, or best if allowed).
        calib_feeds: Calibration graphs as model feeds; the first
            ``config.calibration`` are used.
        cases: Evaluation graphs with reference outputs (and labels).
        output_names: The model's outputs; the first is the classifier's logits.
        config: Calibration method, gate and fallback budget.

    Returns:
        What was quantised, what stayed float and why, every attempt's metrics.

    Raises:
        AccuracyError: No configuration meets the gate and ``allow_accuracy_drop``
            is off; the message lists every attempt. Nothing is written.
        ExportError: Unreadable model, no calibration or evaluation data, or
            nothing quantisable in the model.
    """
    return Quantize(config)(fp32_path, out_path, calib_feeds, cases, output_names)


__all__ = ["CalibMethod", "EvalCase", "QuantConfig", "QuantReport", "Quantize", "quantize_int8"]
