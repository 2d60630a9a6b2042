"""Parity of an artifact against the reference outputs recorded at export.

Measured at export time on the user's sample graphs, through the same
runtime backend a device uses, and recorded in the manifest; repeated on a
device by ``edge-export verify`` from the bundle's ``verify.npz``. A failure
is an error, never a warning.

Tolerances depend on precision (:func:`judge`). FP32 must reproduce the
reference within ``atol``/``rtol`` and lose at most 0.1 pp of the task
metric. FP16 and INT8 move outputs by design: their per-output errors are
reported and the gate is the task metric (within ``max_accuracy_drop``) or,
without labels, the relative output error ``sqrt(sum |a - r|^2 / sum |r|^2)``
within ``max_rel_error``. A converter that silently breaks a model (onnx2tf
once turned a GAT into a 24 %-accurate one) fails both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .errors import BackendUnavailableError, InvalidInputError, ManifestError, ParityError
from .io_contract import TensorSpec
from .manifest import MANIFEST_NAME, Artifact, OutputParity, ParityReport, Precision
from .runtimes import (
    BackendOptions,
    backend_for_target,
    create_backend,
    known_backends,
    unavailable_reason,
)


@dataclass
class ParityCase:
    """One sample: feeds, reference outputs, optional labels for the metric."""

    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None


def accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None) -> float:
    """Classification accuracy of ``argmax(logits, -1)`` over masked rows.

    Raises:
        InvalidInputError: ``y`` holds another number of labels than there are
            prediction rows (e.g. node labels for a graph-level output), or
            ``mask`` another shape than ``y``.
    """
    pred = logits.argmax(-1)
    if pred.size != labels.size:
        raise InvalidInputError(
            "y",
            f"{labels.size} labels for {pred.size} predictions (the model's first output is "
            f"{list(logits.shape)}): give one label per prediction row (one per graph for a "
            "graph-level output, one per node for a node-level one)",
        )
    if mask is not None and np.shape(mask) != np.shape(labels):
        raise InvalidInputError(
            "mask",
            f"shape {list(np.shape(mask))} does not match y {list(np.shape(labels))} "
            "(one flag per label)",
        )
    pred = pred.reshape(labels.shape)
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
            backend=backend_for_target(artifact.target) or str(artifact.target),
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
    name = backend_for_target(artifact.target)
    assert name is not None
    backend = create_backend(name, BackendOptions(threads=1))
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


#: FP32 artifacts may lose at most this much of the task metric (0.1 pp).
FP32_METRIC_DROP = 0.001


def judge(
    artifact: Artifact,
    got: Sequence[dict[str, np.ndarray]],
    cases: Sequence[ParityCase],
    names: list[str],
    *,
    atol: float,
    rtol: float,
    max_accuracy_drop: float,
    max_rel_error: float,
) -> ParityReport:
    """Compare outputs ``got`` with the cases' references, with tolerances by precision."""
    exact = artifact.precision is Precision.FP32
    drop = FP32_METRIC_DROP if exact else max_accuracy_drop
    report = VerifyParity(atol, rtol, drop, outputs_gate=exact).report(artifact, got, cases, names)
    if exact or report.metric is not None:
        return report
    rel = relative_error(got, cases, names)
    return report.model_copy(update={"passed": report.passed and rel <= max_rel_error})


def relative_error(
    got: Sequence[dict[str, np.ndarray]], cases: Sequence[ParityCase], names: list[str]
) -> float:
    """Worst output's ``sqrt(sum |a - r|^2 / sum |r|^2)`` over all cases."""
    worst = 0.0
    for name in names:
        err = norm = 0.0
        for out, case in zip(got, cases, strict=True):
            a = np.asarray(out[name], np.float64)
            r = np.asarray(case.expected[name], np.float64)
            if a.shape != r.shape or not np.isfinite(a).all():
                return math.inf
            err += float(np.sum((a - r) ** 2))
            norm += float(np.sum(r**2))
        worst = max(worst, math.sqrt(err / norm) if norm > 0 else (0.0 if err == 0 else math.inf))
    return worst


def explain(report: ParityReport) -> str:
    """One line: why a report failed (or its numbers when it passed)."""
    parts = [
        f"{o.output}: max abs err {o.max_abs_err:.3g} (atol {o.atol:g})"
        for o in report.outputs
        if not o.passed
    ]
    if report.reference_metric is not None and report.artifact_metric is not None:
        parts.append(
            f"accuracy {100 * report.artifact_metric:.2f} % vs reference "
            f"{100 * report.reference_metric:.2f} %"
        )
    return "; ".join(parts) or "outputs beyond tolerance"


@dataclass
class ArtifactCheck:
    """One artifact of a bundle re-checked on this machine."""

    artifact: Artifact
    backend: str
    report: ParityReport | None = None
    skipped: str = ""


def load_verification(bundle: Bundle) -> list[ParityCase]:
    """The bundle's ``verify.npz`` as parity cases.

    Raises:
        ManifestError: The bundle has no verification set (exported before 1.2).
    """
    v = bundle.manifest.verification
    if v is None:
        raise ManifestError(
            "bundle has no verification set (exported by an older edge-graph-sdk); re-export it",
            MANIFEST_NAME,
        )
    with np.load(bundle.path_of(v.path), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    cases = []
    for i in range(v.cases):
        feeds = {k.split("/", 2)[2]: a for k, a in arrays.items() if k.startswith(f"{i}/in/")}
        expected = {k.split("/", 2)[2]: a for k, a in arrays.items() if k.startswith(f"{i}/out/")}
        cases.append(
            ParityCase(feeds, expected, arrays.get(f"{i}/labels"), arrays.get(f"{i}/mask"))
        )
    return cases


def verify_bundle(
    bundle: Bundle,
    backends: Sequence[str] | None = None,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[ArtifactCheck]:
    """Re-run the export-time parity check for every artifact this machine can run.

    Each artifact runs through :class:`~edge_sdk.Runtime` (validation, padding,
    the engine) on the bundle's verification inputs and is judged with the
    tolerances recorded at export. Artifacts whose engine is absent here (or
    that fail to load, e.g. an NPU artifact without the NPU) are skipped with
    the reason.

    Args:
        bundle: An opened (checksum-verified) bundle.
        backends: Only these backends (default: all).
        threads: Intra-op threads for each engine.
        progress: Called with a short message per artifact.
    """
    from .manifest import Preprocessing
    from .runtime import Runtime

    v = bundle.manifest.verification
    cases = load_verification(bundle)
    assert v is not None
    names = [o.name for o in bundle.manifest.outputs]
    # The cases are in model space: the runtime must not scale them again.
    raw = Bundle(
        bundle.root,
        bundle.manifest.model_copy(update={"preprocessing": Preprocessing()}),
        bundle.source,
    )
    checks = []
    for art in bundle.manifest.artifacts:
        name = backend_for_target(art.target) or str(art.target)
        if backends and name not in backends:
            continue
        reason = (
            unavailable_reason(name)
            if name in known_backends()
            else ("not supported by this runtime version")
        )
        if reason:
            checks.append(ArtifactCheck(art, name, skipped=reason))
            continue
        if progress:
            progress(f"checking {art.name} on {name}")
        extra = {"device": art.options["device"]} if "device" in art.options else None
        backend = create_backend(name, BackendOptions(threads=threads, extra=extra))
        try:
            backend.load(bundle.path_of(art.path), art, raw.manifest.inputs, raw.manifest.outputs)
        except BackendUnavailableError as exc:
            checks.append(ArtifactCheck(art, name, skipped=str(exc)))
            continue
        with Runtime(raw, backend, art, []) as rt:
            got = [rt.infer(dict(c.feeds)) for c in cases]
        report = judge(
            art,
            got,
            cases,
            names,
            atol=v.atol,
            rtol=v.rtol,
            max_accuracy_drop=v.max_accuracy_drop,
            max_rel_error=v.max_rel_error,
        )
        checks.append(ArtifactCheck(art, name, report))
    return checks
