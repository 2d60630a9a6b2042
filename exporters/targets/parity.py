"""Cross-backend parity of candidate artifacts (tolerances: :func:`edge_sdk.parity.judge`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edge_sdk.errors import EdgeSDKError
from edge_sdk.manifest import Artifact, OutputParity, ParityReport
from edge_sdk.parity import explain, judge

if TYPE_CHECKING:
    from .base import TargetJob

__all__ = ["check_candidate", "explain"]


def check_candidate(job: TargetJob, artifact: Artifact) -> ParityReport:
    """Run ``artifact`` on ``job.cases`` through the runtime and judge it (no raising).

    A run that fails (the engine refuses the file, or an input) is a failed
    report whose note says why, not an exception: the caller decides.
    """
    names = [o.name for o in job.outputs]
    try:
        got = job.run(artifact, [c.feeds for c in job.cases])
    except EdgeSDKError as exc:
        return _failed(artifact, job, names, f"{type(exc).__name__}: {exc}")
    return judge(
        artifact,
        got,
        job.cases,
        names,
        atol=job.atol,
        rtol=job.rtol,
        max_accuracy_drop=job.max_accuracy_drop,
        max_rel_error=job.max_rel_error,
    )


def _failed(artifact: Artifact, job: TargetJob, names: list[str], why: str) -> ParityReport:
    return ParityReport(
        artifact=artifact.name,
        backend=job.target.backend,
        samples=len(job.cases),
        outputs=[
            OutputParity(
                output=n,
                max_abs_err=math.inf,
                max_rel_err=math.inf,
                atol=job.atol,
                rtol=job.rtol,
                passed=False,
            )
            for n in names
        ],
        metric=None,
        passed=False,
        note=why,
    )
