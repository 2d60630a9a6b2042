"""The INT8 step: quantise, gate, fall back the most sensitive nodes to float."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import AccuracyError, ExportError

from .config import EvalCase, QuantConfig, QuantReport
from .evaluate import Scores, baseline, passes, run_model, score
from .qdq import QdqModel
from .reader import graph_size
from .sensitivity import Sensitivity, rank

UNSEEN = "never calibrated: a tensor it reads or writes was empty in every calibration graph"


@dataclass
class _Attempt:
    float_nodes: list[str]
    path: Path
    quantized: list[str]
    scores: Scores
    passed: bool

    def entry(self) -> dict[str, object]:
        return {
            "float_nodes": self.float_nodes,
            "decision_metric": self.scores.decision_metric,
            "rel_error": self.scores.rel_error,
            "nonfinite": self.scores.nonfinite,
            "passed": self.passed,
        }


class Quantize:
    """Pipeline step: FP32 ONNX -> INT8 QDQ ONNX behind the accuracy gate.

    Args:
        config: Calibration method, gate and fallback budget.
    """

    def __init__(self, config: QuantConfig | None = None) -> None:
        self.config = config or QuantConfig()

    def __call__(
        self,
        fp32_path: Path,
        out_path: Path,
        calib_feeds: Sequence[dict[str, np.ndarray]],
        cases: Sequence[EvalCase],
        output_names: Sequence[str],
    ) -> QuantReport:
        """See :func:`edge_sdk.exporters.quantize.quantize_int8`."""
        cfg, start = self.config, time.perf_counter()
        if not cases:
            raise ExportError("INT8 needs at least one evaluation graph to check accuracy")
        calib = list(calib_feeds)[: cfg.calibration]
        report = QuantReport(str(cfg.method), len(calib), [graph_size(f) for f in calib])
        with tempfile.TemporaryDirectory(prefix="edge-sdk-int8-") as tmp:
            model = QdqModel(Path(fp32_path), Path(tmp), cfg.method, calib, cfg.percentile)
            if not model.candidates:
                raise ExportError(
                    f"{fp32_path} has no MatMul/Gemm/Conv node to quantise; INT8 would not "
                    "shrink or speed it up: leave INT8 off for this model"
                )
            _check_names(model, cases, output_names)
            tried, ranking = self._search(model, Path(tmp), cases, list(output_names))
            chosen = next((a for a in tried if a.passed), None) or _best(tried)
            report.tried = [a.entry() for a in tried]
            if not chosen.passed and not cfg.allow_accuracy_drop:
                base = baseline(cases, output_names)
                raise AccuracyError(_explain(fp32_path, tried, base, cfg, len(model.candidates)))
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chosen.path, out_path)
        reasons = {s.node: s.describe() for s in ranking} | dict.fromkeys(model.unseen, UNSEEN)
        in_int8 = set(chosen.quantized)
        report.quantized_ops = chosen.quantized
        report.stayed_float = [
            {"node": name, "op": op, "reason": _reason(name, op, chosen, reasons)}
            for name, op in model.nodes
            if name not in in_int8
        ]
        report.decision_metric = chosen.scores.decision_metric
        report.report_metric = chosen.scores.report_metric
        report.rel_error = chosen.scores.rel_error
        report.passed = chosen.passed
        report.seconds = time.perf_counter() - start
        return report

    def _search(
        self, model: QdqModel, work: Path, cases: Sequence[EvalCase], names: list[str]
    ) -> tuple[list[_Attempt], list[Sensitivity]]:
        """All nodes INT8 first; then the most sensitive float, step by step, until it passes."""
        cfg = self.config
        base = baseline(cases, names)
        tried: list[_Attempt] = []

        def attempt(float_nodes: list[str]) -> bool:
            path = work / f"attempt{len(tried)}.onnx"
            quantized = model.quantize(path, exclude=float_nodes)
            scores = score(run_model(path, cases, names), cases, names)
            ok = passes(scores, base, cfg)
            tried.append(_Attempt(float_nodes, path, quantized, scores, ok))
            return ok

        if attempt([]) or not cfg.max_fallback_steps or len(model.candidates) < 2:
            return tried, []
        fp32_outputs = run_model(model.path, cases, names)
        ranking = rank(model, model.candidates, cases, names, fp32_outputs, work)
        for k in _fallback_sizes(len(ranking), cfg.max_fallback_steps):
            if attempt([s.node for s in ranking[:k]]):
                break
        return tried, ranking


def _check_names(model: QdqModel, cases: Sequence[EvalCase], output_names: Sequence[str]) -> None:
    unknown = sorted(set(output_names) - set(model.output_names))
    if unknown:
        raise ExportError(f"output(s) {unknown} are not in the model; it has {model.output_names}")
    for i, case in enumerate(cases):
        missing = sorted(set(model.input_names) - set(case.feeds))
        if missing:
            raise ExportError(f"evaluation case {i} lacks input(s) {missing}")
        absent = sorted(set(output_names) - set(case.reference))
        if absent:
            raise ExportError(f"evaluation case {i} has no reference for output(s) {absent}")


def _fallback_sizes(n: int, steps: int) -> list[int]:
    """How many of the ``n`` ranked nodes each step keeps float (at least one stays INT8)."""
    per_step = max(1, math.ceil((n - 1) / steps))
    return sorted({min(per_step * i, n - 1) for i in range(1, steps + 1)})


def _best(tried: list[_Attempt]) -> _Attempt:
    """Highest decision accuracy (else lowest error), then fewest float nodes."""

    def key(a: _Attempt) -> tuple[float, float, int]:
        metric = a.scores.decision_metric if a.scores.decision_metric is not None else 0.0
        return -metric, a.scores.worst_rel_error, len(a.float_nodes)

    return min(tried, key=key)


def _reason(name: str, op: str, chosen: _Attempt, reasons: dict[str, str]) -> str:
    if name in chosen.float_nodes or reasons.get(name) == UNSEEN:
        return reasons.get(name, "sensitivity")
    if op in ("MatMul", "Gemm", "Conv"):
        return "not quantised by ONNX Runtime (no float input it can quantise)"
    return "not quantisable op type"


def _explain(
    fp32_path: Path, tried: list[_Attempt], base: float | None, cfg: QuantConfig, n: int
) -> str:
    if base is not None and tried[0].scores.decision_metric is not None:
        gate = (
            f"decision accuracy >= {100 * base:.2f}% - {100 * cfg.max_accuracy_drop:.2f} pp "
            f"(max_accuracy_drop)"
        )
    else:
        gate = f"relative output error <= {cfg.max_rel_error:g} (max_rel_error)"
    lines = []
    for i, a in enumerate(tried, 1):
        what = f"float {a.float_nodes}" if a.float_nodes else f"all {n} MatMul/Gemm/Conv INT8"
        metric = a.scores.decision_metric
        acc = f"accuracy {100 * metric:.2f}%, " if metric is not None else ""
        errs = ", ".join(f"{k} {v:.4g}" for k, v in a.scores.rel_error.items())
        bad = f", {a.scores.nonfinite} NaN/inf output value(s)" if a.scores.nonfinite else ""
        lines.append(f"  attempt {i}: {what}: {acc}rel error {errs}{bad}")
    return (
        f"INT8 quantisation of {fp32_path} ({cfg.method}) does not meet the gate {gate} "
        f"in {len(tried)} attempt(s):\n" + "\n".join(lines) + "\nFix: raise the bound, "
        "raise max_fallback_steps, try another calibration method (percentile, entropy) or "
        "more calibration graphs, or accept the drop with allow_accuracy_drop "
        "(--allow-accuracy-drop). No INT8 model was written."
    )
