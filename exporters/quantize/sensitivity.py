"""Per-node sensitivity: the error each quantised node introduces on its own.

Each candidate node is quantised *alone* (every other node float) and the
model is run on the decision rows; its sensitivity is the accuracy it leaves
(with labels) and the relative error of the outputs against the FP32 ONNX
model. This measures what reaches the outputs, which is what the gate sees: a
local measure (SQNR of one tensor, as in ``onnxruntime.quantization.qdq_loss_debug``)
misses the typical GNN failure, where one outlier channel sets a per-tensor
activation scale that wipes out every small channel while the tensor's SQNR
stays high. The cost is one quantisation and one evaluation per candidate
(calibration is cached), small for GNNs with a handful of MatMul/Gemm nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import EvalCase
from .evaluate import Outputs, run_model, score
from .qdq import QdqModel


@dataclass
class Sensitivity:
    """What quantising one node alone does to the outputs."""

    node: str
    op: str
    decision_metric: float | None
    rel_error: float

    def describe(self) -> str:
        """``sensitivity: ...`` reason recorded for a node put back to float."""
        parts = [f"alone in INT8, output rel error {self.rel_error:.4g}"]
        if self.decision_metric is not None:
            parts.append(f"decision accuracy {100 * self.decision_metric:.2f}%")
        return "sensitivity: " + ", ".join(parts)


def rank(
    model: QdqModel,
    candidates: Sequence[str],
    cases: Sequence[EvalCase],
    output_names: Sequence[str],
    fp32_outputs: Outputs,
    workdir: Path,
) -> list[Sensitivity]:
    """Candidates ordered most sensitive first (lowest accuracy, then largest error)."""
    ops = dict(model.nodes)
    found = []
    for i, node in enumerate(candidates):
        path = workdir / f"alone{i}.onnx"
        model.quantize(path, only=[node])
        scores = score(run_model(path, cases, output_names), cases, output_names, fp32_outputs)
        found.append(Sensitivity(node, ops[node], scores.decision_metric, scores.worst_rel_error))
        path.unlink()
    return sorted(
        found,
        key=lambda s: (
            s.decision_metric if s.decision_metric is not None else 0.0,
            -s.rel_error,
        ),
    )
