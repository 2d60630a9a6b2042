"""Parity of an exported artifact against the PyTorch reference.

Measured at export time on the user's sample graphs, through the same
runtime backend a device uses, and recorded in the manifest. A failure is an
error, never a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk import runtimes
from edge_sdk.errors import ParityError
from edge_sdk.manifest import Artifact, OutputParity, ParityReport
from edge_sdk.runtimes import BackendOptions
from edge_sdk.signature import TensorSpec


@dataclass
class ParityCase:
    """One sample: feeds, reference outputs, optional labels for the metric."""

    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None


def accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None) -> float:
    """Classification accuracy of ``argmax(logits, -1)`` over masked rows."""
    pred = logits.argmax(-1).reshape(labels.shape)
    if mask is not None:
        pred, labels = pred[mask], labels[mask]
    return float((pred == labels).mean()) if labels.size else float("nan")


class VerifyParity:
    """Pipeline step: run an artifact on its backend and compare.

    Args:
        atol: Absolute tolerance per element.
        rtol: Relative tolerance per element (``|a-r| <= atol + rtol*|r|``).
        max_metric_drop: Allowed drop of the task metric (fraction, 0.001 = 0.1 pp).
        outputs_gate: Whether per-output tolerances decide pass/fail. INT8
            artifacts move logits by design: their gate is the task metric (or
            the quantiser's relative-error bound) and the errors are only reported.
    """

    def __init__(
        self,
        atol: float = 1e-4,
        rtol: float = 1e-3,
        max_metric_drop: float = 0.001,
        outputs_gate: bool = True,
    ) -> None:
        self.atol, self.rtol, self.max_metric_drop = atol, rtol, max_metric_drop
        self.outputs_gate = outputs_gate

    def __call__(
        self,
        path: Path,
        artifact: Artifact,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        cases: Sequence[ParityCase],
    ) -> ParityReport:
        """Measure parity; raise when it fails.

        Raises:
            ParityError: Any output beyond tolerance, or the metric dropped,
                naming the output, the error and the tolerance.
        """
        got = run_artifact(path, artifact, inputs, outputs, [c.feeds for c in cases])
        report = self.report(artifact, got, cases, [o.name for o in outputs])
        if not report.passed:
            raise ParityError(_explain(report, self.max_metric_drop))
        return report

    def report(
        self,
        artifact: Artifact,
        got: Sequence[dict[str, np.ndarray]],
        cases: Sequence[ParityCase],
        output_names: list[str],
    ) -> ParityReport:
        """Compare artifact outputs ``got`` with the cases' references (no raising)."""
        worst: dict[str, tuple[float, float, bool]] = {}
        ref_hits = art_hits = total = 0.0
        first = output_names[0]
        for out, case in zip(got, cases, strict=True):
            for name in output_names:
                worst[name] = _merge(
                    worst.get(name),
                    _compare(out[name], case.expected[name], self.atol, self.rtol),
                )
            if case.labels is not None:
                n = int(case.mask.sum()) if case.mask is not None else case.labels.size
                ref_hits += accuracy(case.expected[first], case.labels, case.mask) * n
                art_hits += accuracy(out[first], case.labels, case.mask) * n
                total += n
        per_output = [
            OutputParity(
                output=k, max_abs_err=a, max_rel_err=r, atol=self.atol, rtol=self.rtol, passed=ok
            )
            for k, (a, r, ok) in worst.items()
        ]
        ref_metric = ref_hits / total if total else None
        art_metric = art_hits / total if total else None
        metric_ok = (
            ref_metric is None
            or art_metric is None
            or art_metric >= ref_metric - self.max_metric_drop - 1e-12
        )
        return ParityReport(
            artifact=artifact.name,
            backend=runtimes.backend_for_target(artifact.target) or str(artifact.target),
            samples=len(cases),
            outputs=per_output,
            metric="accuracy" if total else None,
            reference_metric=ref_metric,
            artifact_metric=art_metric,
            passed=(all(o.passed for o in per_output) or not self.outputs_gate) and metric_ok,
        )


def run_artifact(
    path: Path,
    artifact: Artifact,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    feeds: Sequence[dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    """Run ``artifact`` on its device backend (1 thread) for each feed dict."""
    name = runtimes.backend_for_target(artifact.target)
    assert name is not None
    backend = runtimes.create_backend(name, BackendOptions(threads=1))
    backend.load(path, artifact, inputs, outputs)
    try:
        return [backend.infer(f) for f in feeds]
    finally:
        backend.close()


def _compare(
    got: np.ndarray, ref: np.ndarray, atol: float, rtol: float
) -> tuple[float, float, bool]:
    if got.shape != ref.shape:
        return float("inf"), float("inf"), False
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    if not np.isfinite(got).all():
        return float("inf"), float("inf"), False
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    ok = bool((diff <= atol + rtol * np.abs(ref)).all())
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), ok


def _merge(
    a: tuple[float, float, bool] | None, b: tuple[float, float, bool]
) -> tuple[float, float, bool]:
    if a is None:
        return b
    return max(a[0], b[0]), max(a[1], b[1]), a[2] and b[2]


def _explain(report: ParityReport, max_drop: float) -> str:
    parts = [
        f"output {o.output!r}: max abs err {o.max_abs_err:.3g} (atol {o.atol:g}, rtol {o.rtol:g})"
        for o in report.outputs
        if not o.passed
    ]
    if report.reference_metric is not None and report.artifact_metric is not None:
        drop = report.reference_metric - report.artifact_metric
        if drop > max_drop:
            parts.append(
                f"accuracy {report.artifact_metric:.4f} vs reference {report.reference_metric:.4f} "
                f"(drop {100 * drop:.2f} pp > {100 * max_drop:.2f} pp)"
            )
    return (
        f"artifact {report.artifact} does not reproduce the PyTorch model on {report.backend}: "
        + "; ".join(parts)
        + ". The artifact was not written to a bundle."
    )
