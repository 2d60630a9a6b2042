"""Canary health check of a staged bundle.

Every exported bundle carries canary inputs with the outputs the reference
model produced for them. Before a node switches to a new bundle it loads it,
runs the canary, compares with the manifest's tolerances and times it; a
bundle that fails is not activated.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle
from ..runtime import Runtime

NO_CANARY = "bundle has no canary inputs; the node refuses updates it cannot health-check"


@dataclass(frozen=True)
class CanaryResult:
    """Outcome of :func:`run_canary`.

    Attributes:
        passed: Outputs within tolerance and latency within budget.
        max_abs_err: Largest absolute difference over all outputs (``inf`` when
            an output is missing or misshapen, ``nan`` when nothing ran).
        latency_ms: Median of the timed runs, after one warm-up (``nan`` when
            nothing ran).
        reason: ``""`` when passed, otherwise what failed, naming the output
            and the numbers.
    """

    passed: bool
    max_abs_err: float
    latency_ms: float
    reason: str


def _failed(
    reason: str, max_abs_err: float = math.nan, latency_ms: float = math.nan
) -> CanaryResult:
    return CanaryResult(False, max_abs_err, latency_ms, reason)


def _compare(
    outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float, rtol: float
) -> tuple[float, list[str]]:
    """Return ``(max_abs_err, problems)`` of outputs against the canary."""
    worst = 0.0
    problems: list[str] = []
    for name, want in sorted(expected.items()):
        if name not in outputs:
            problems.append(f"output {name!r} missing (runtime returned {sorted(outputs)})")
            worst = math.inf
            continue
        got = np.asarray(outputs[name])
        if got.shape != want.shape:
            problems.append(
                f"output {name!r} has shape {list(got.shape)}, canary expects {list(want.shape)}"
            )
            worst = math.inf
            continue
        g, w = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(g - w)
        err = float(np.max(diff)) if diff.size else 0.0
        if not np.isfinite(err):
            err = math.inf
        worst = max(worst, err)
        if not np.allclose(g, w, atol=atol, rtol=rtol):
            bad = int(np.count_nonzero(~np.isclose(g, w, atol=atol, rtol=rtol)))
            problems.append(
                f"output {name!r} differs from the canary: max abs err {err:.3g} "
                f"(atol {atol:g}, rtol {rtol:g}); {bad} of {w.size} values out of tolerance"
            )
    return worst, problems


def _atol(runtime: Runtime, bundle: Bundle) -> float:
    """The canary's atol, widened for a compressed artifact to 2x its export-time error.

    The canary holds the float reference outputs; an INT8 or FP16 artifact was
    accepted at export with a larger, measured error (its parity report), so
    holding it to the FP32 tolerance would refuse every compressed update.
    """
    assert bundle.manifest.canary is not None
    atol = bundle.manifest.canary.atol
    for report in bundle.manifest.parity:
        if report.artifact == runtime.artifact.name and report.outputs:
            atol = max(atol, 2 * max(o.max_abs_err for o in report.outputs))
    return atol


def run_canary(
    runtime: Runtime,
    bundle: Bundle,
    latency_budget_ms: float | None = None,
    repeats: int = 5,
) -> CanaryResult:
    """Run a bundle's canary through a loaded runtime.

    One warm-up run's outputs are compared with the expected ones
    (``np.allclose`` with the manifest's canary ``atol``/``rtol``); then
    ``repeats`` timed runs give the median latency.

    Args:
        runtime: The runtime loaded from ``bundle``.
        bundle: The (staged) bundle whose canary to run.
        latency_budget_ms: Fail when the median latency exceeds this.
        repeats: Timed runs after the warm-up (>= 1).

    Returns:
        The result; failures are reported in it, never raised (a bundle
        without canary, an inference error, outputs out of tolerance, too slow).

    Raises:
        ValueError: ``repeats`` < 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    canary = bundle.manifest.canary
    if canary is None:
        return _failed(NO_CANARY)
    try:
        inputs, expected = bundle.load_canary()
    except Exception as exc:
        return _failed(f"cannot read the canary: {type(exc).__name__}: {exc}")
    if not expected:
        return _failed("the canary has no expected outputs to compare with")

    times: list[float] = []
    try:
        outputs = runtime.infer(inputs)  # warm-up; its outputs are the ones checked
        for _ in range(repeats):
            t0 = time.perf_counter()
            runtime.infer(inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as exc:
        return _failed(f"canary inference failed: {type(exc).__name__}: {exc}")
    latency = statistics.median(times)

    max_err, problems = _compare(outputs, expected, _atol(runtime, bundle), canary.rtol)
    if latency_budget_ms is not None and latency > latency_budget_ms:
        problems.append(
            f"median latency {latency:.3f} ms over the budget of {latency_budget_ms:g} ms "
            f"({repeats} runs)"
        )
    return CanaryResult(not problems, max_err, latency, "; ".join(problems))


__all__ = ["NO_CANARY", "CanaryResult", "run_canary"]
