"""Run a candidate model on the evaluation cases and score it against the gate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_sdk.parity import accuracy

from .config import EvalCase, QuantConfig

Outputs = list[dict[str, np.ndarray]]


@dataclass
class Scores:
    """Task metric and output error of one model on all cases.

    ``nonfinite`` counts output values (all rows, not only the decision rows)
    that are NaN or infinite where the reference is finite: any fails the gate.
    """

    decision_metric: float | None
    report_metric: float | None
    rel_error: dict[str, float]
    nonfinite: int = 0

    @property
    def worst_rel_error(self) -> float:
        return max(self.rel_error.values(), default=0.0)


def run_model(path: Path, cases: Sequence[EvalCase], output_names: Sequence[str]) -> Outputs:
    """Outputs of the ONNX model at ``path`` (ONNX Runtime, CPU) for every case."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    results = []
    for case in cases:
        got = session.run(list(output_names), {k: case.feeds[k] for k in names})
        results.append(dict(zip(output_names, (np.asarray(g) for g in got), strict=True)))
    return results


def score(
    outputs: Outputs,
    cases: Sequence[EvalCase],
    output_names: Sequence[str],
    against: Outputs | None = None,
) -> Scores:
    """Accuracy (first output, decision and report rows) and relative output error.

    The relative error of an output is ``sqrt(sum ||q - r||^2 / sum ||r||^2)``
    over the decision rows of every case, where ``r`` is the case's reference
    (or ``against``, e.g. the FP32 ONNX outputs when measuring sensitivity).
    """
    refs = against if against is not None else [c.reference for c in cases]
    first = output_names[0]
    err = dict.fromkeys(output_names, 0.0)
    norm = dict.fromkeys(output_names, 0.0)
    hits = {"decision": 0.0, "report": 0.0}
    rows = {"decision": 0, "report": 0}
    nonfinite = 0
    for got, ref, case in zip(outputs, refs, cases, strict=True):
        for name in output_names:
            nonfinite += int(np.sum(~np.isfinite(got[name]) & np.isfinite(ref[name])))
            q, r = _rows(got[name], case.decision_mask), _rows(ref[name], case.decision_mask)
            err[name] += float(np.sum((q.astype(np.float64) - r) ** 2))
            norm[name] += float(np.sum(r.astype(np.float64) ** 2))
        if case.labels is None:
            continue
        for kind, mask in (("decision", case.decision_mask), ("report", case.report_mask)):
            n = int(mask.sum()) if mask is not None else case.labels.size
            if n:
                hits[kind] += accuracy(got[first], case.labels, mask) * n
                rows[kind] += n
    rel = {k: _ratio(err[k], norm[k]) for k in output_names}
    return Scores(
        hits["decision"] / rows["decision"] if rows["decision"] else None,
        hits["report"] / rows["report"] if rows["report"] else None,
        rel,
        nonfinite,
    )


def baseline(cases: Sequence[EvalCase], output_names: Sequence[str]) -> float | None:
    """Reference accuracy on the decision rows: the cases' ``reference_metric`` when given."""
    hits = total = 0.0
    for case in cases:
        if case.labels is None:
            continue
        mask = case.decision_mask
        n = int(mask.sum()) if mask is not None else case.labels.size
        metric = case.reference_metric
        if metric is None:
            metric = accuracy(case.reference[output_names[0]], case.labels, mask)
        if n:
            hits, total = hits + metric * n, total + n
    return hits / total if total else None


def passes(scores: Scores, base: float | None, config: QuantConfig) -> bool:
    """The gate: accuracy within ``max_accuracy_drop`` with labels, else ``max_rel_error``.

    Either way every output value must be finite where the reference is.
    """
    if scores.nonfinite:
        return False
    if base is not None and scores.decision_metric is not None:
        return scores.decision_metric >= base - config.max_accuracy_drop - 1e-12
    return scores.worst_rel_error <= config.max_rel_error


def _rows(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is not None and a.shape[: mask.ndim] == mask.shape:
        return a[mask]
    return a


def _ratio(err: float, norm: float) -> float:
    if not math.isfinite(err):
        return math.inf
    if norm > 0:
        return math.sqrt(err / norm)
    return 0.0 if err == 0 else math.inf
