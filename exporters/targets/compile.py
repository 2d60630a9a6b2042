"""Compile one bundle for several device profiles and choose what each ships.

For every distinct profile target the compiler of its engine builds candidate
artifacts (precisions, layouts); each candidate is checked against the FP32
PyTorch reference through the on-device runtime (tolerances by precision, see
:func:`edge_sdk.parity.judge`); then, per profile, the precision is chosen:

- **measured** when the build machine is of the profile's class (``--profile
  host``, or a profile with ``measure: true``): the fastest candidate that
  passes the gate;
- otherwise **declared**: the first of the target's precisions that passes.

Candidates no profile chose are deleted. The ONNX artifacts (``model.onnx``,
``model.int8.onnx``) always stay: they are the ONNX Runtime fallback and the
source the device-side TensorRT build starts from.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.engines import ENGINES
from edge_sdk.errors import BackendUnavailableError, ExportError, ParityError
from edge_sdk.manifest import (
    Artifact,
    Measurement,
    ParityReport,
    Precision,
    TargetChoice,
)
from edge_sdk.parity import explain
from edge_sdk.profiles import DeviceProfile, TargetSpec
from edge_sdk.runtimes import runtime_class, unavailable_reason

from .base import Candidate, TargetJob, TargetNotSupported, artifact_bytes, openvino_has

Progress = Callable[[str], None]

#: Compiler class of each engine, as ``module:Class`` (imported on use): the registry's rows.
COMPILERS: dict[str, str] = {e.name: e.compiler for e in ENGINES.values() if e.compiler}


@dataclass
class Compiled:
    """What :class:`CompileTargets` adds to the bundle."""

    artifacts: list[Artifact] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)
    choices: list[TargetChoice] = field(default_factory=list)


@dataclass
class _Built:
    """A candidate with its parity report and, when measured, its latency."""

    candidate: Candidate
    report: ParityReport | None  # None: the engine is not installed here
    timing: dict[str, float] | None = None


class CompileTargets:
    """Pipeline step: compile, check and choose per profile.

    Args:
        make_job: Builds the :class:`TargetJob` for a target (the pipeline's context).
        onnx_artifacts: The bundle's ONNX artifacts (already checked by the pipeline).
        onnx_reports: Their parity reports.
        say: Progress callback.
    """

    def __init__(
        self,
        make_job: Callable[[TargetSpec], TargetJob],
        onnx_artifacts: Sequence[Artifact],
        onnx_reports: Sequence[ParityReport],
        say: Progress,
    ) -> None:
        self.make_job = make_job
        self.onnx = list(onnx_artifacts)
        #: Artifact names built so far (a second build of one engine must not reuse one).
        self.names: set[str] = {a.name for a in onnx_artifacts}
        self.onnx_reports = {r.artifact: r for r in onnx_reports}
        self.say = say

    def __call__(self, profiles: Sequence[DeviceProfile]) -> Compiled:
        """Compile every profile's targets.

        Raises:
            ParityError: An FP32 artifact does not reproduce the model (a
                converter bug: refused, never shipped).
            ExportError: A profile ends with no artifact at all.
        """
        built: dict[str, tuple[TargetJob, list[_Built]] | str] = {}
        folders: dict[str, int] = {}  # target.key -> builds so far (distinct settings)
        measured: set[tuple[str, int]] = set()
        result = Compiled()
        for profile in profiles:
            chosen_any = False
            for target in profile.targets:
                if target.backend not in COMPILERS:  # ONNX Runtime: the export's own ONNX
                    choice = self._choose_onnx(profile, target)
                else:
                    key = _build_key(target)
                    if key not in built:
                        # Two profiles may set the same engine and device differently
                        # (e.g. TensorRT workspace 512 vs 4096 MB): the later build goes
                        # to its own folder so that it cannot overwrite the earlier one.
                        n = folders.get(target.key, 0)
                        folders[target.key] = n + 1
                        built[key] = self._build(target, n + 1 if n else 0)
                    entry = built[key]
                    if isinstance(entry, str):
                        choice = _choice(profile, target, None, entry)
                    else:
                        job, cands = entry
                        threads = profile.threads_for(target) or 1
                        if profile.measure and (key, threads) not in measured:
                            self._measure(job, cands, threads)
                            measured.add((key, threads))
                        choice = _pick(profile, target, cands)
                result.choices.append(choice)
                chosen_any |= choice.artifact is not None
            if not chosen_any:
                raise ExportError(
                    f"profile {profile.name}: no target could be built: "
                    + "; ".join(c.reason for c in result.choices if c.profile == profile.name)
                )
        keep = {c.artifact for c in result.choices if c.artifact}
        for entry in built.values():
            if isinstance(entry, str):
                continue
            job, cands = entry
            for b in cands:
                art = b.candidate.artifact
                if art.name in keep:
                    result.artifacts.append(art)
                    if b.report is not None:
                        result.parity.append(b.report)
                else:
                    _delete(job.out, art)
        return result

    # -- building -----------------------------------------------------------------------------
    def _build(self, target: TargetSpec, copy: int = 0) -> tuple[TargetJob, list[_Built]] | str:
        """Compile and check one target; a string says why nothing was built.

        ``copy`` > 0: another build of an already built ``target.key`` (different
        settings); its files and artifact names get the suffix ``-<copy>``.
        """
        module, cls = COMPILERS[target.backend].split(":")
        try:
            compiler = getattr(importlib.import_module(module), cls)()
        except BackendUnavailableError as exc:
            # The build tools for this engine are missing: the user asked for
            # the profile, so this is an error, not a silent omission.
            raise ExportError(f"cannot build {target.key} artifacts here: {exc}") from exc
        job = self.make_job(target)
        if not job.precisions:
            return f"{target.key}: no buildable precision in {target.precisions} (add --int8)"
        self.say(f"compiling for {target.key} ({', '.join(job.precisions)})")
        final_out = job.out
        if copy:
            job = dataclasses.replace(job, out=final_out / f".build-{target.key}-{copy}")
        try:
            candidates: list[Candidate] = compiler(job)
        except TargetNotSupported as exc:
            if copy:
                shutil.rmtree(job.out, ignore_errors=True)
            self.say(f"{target.key}: not built: {exc}")
            return f"{target.key}: not built: {exc}"
        if copy:
            candidates = _relocate(candidates, job.out, final_out, f"-{copy}", self.names)
            job = dataclasses.replace(job, out=final_out)
        self.names |= {c.artifact.name for c in candidates}
        runnable = _runnable_here(target)
        out: list[_Built] = []
        for cand in candidates:
            art = cand.artifact
            if not runnable:
                out.append(_Built(cand, None))
                continue
            self.say(f"checking parity of {art.name}")
            report = job.check(art)
            if target.backend == "openvino" and not openvino_has(target.device):
                report = report.model_copy(
                    update={"note": f"checked on the CPU plugin: no {target.device} here"}
                )
            if report.passed:
                out.append(_Built(cand, report))
                continue
            why = report.note or explain(report)
            _delete(job.out, art)
            out.append(_Built(cand, report))
            if art.precision is Precision.FP32:
                raise ParityError(
                    f"artifact {art.name} does not reproduce the PyTorch model on "
                    f"{target.backend}: {why}. It was refused and not written to the bundle."
                )
            self.say(f"{art.name} refused by parity: {why}")
            cand.details["refused"] = why
        return job, out

    def _measure(self, job: TargetJob, cands: list[_Built], threads: int) -> None:
        for b in cands:
            # A refused candidate's files are already deleted: nothing to time.
            if b.report is not None and b.report.passed:
                self.say(f"timing {b.candidate.artifact.name} ({threads} thread(s))")
                b.timing = job.latency(b.candidate.artifact, threads=threads)
                b.timing["threads"] = threads

    def _choose_onnx(self, profile: DeviceProfile, target: TargetSpec) -> TargetChoice:
        by_precision = {a.precision: a for a in self.onnx}
        for precision in target.precisions:
            art = by_precision.get(precision)
            if art is not None and self.onnx_reports.get(art.name, _PASS).passed:
                return _choice(
                    profile,
                    target,
                    art,
                    f"declared order {' > '.join(target.precisions)}: first built and passing",
                )
        return _choice(profile, target, None, f"no ONNX artifact at {target.precisions}")


def _build_key(target: TargetSpec) -> str:
    """Targets with equal keys share one build (they differ only in run-time settings).

    The precisions are a set here: their order only says which one a profile ships
    (``_pick``), so two profiles that order the same precisions differently share a build.
    """
    settings = target.build_settings()
    settings["precisions"] = sorted(settings["precisions"])
    return json.dumps(settings, sort_keys=True)


def _relocate(
    cands: list[Candidate], stage: Path, out: Path, suffix: str, taken: set[str]
) -> list[Candidate]:
    """Move a staged build into ``out``.

    Files and artifact names that collide with nothing built so far (e.g. an
    INT8-only build beside an FP32-only one) keep their names; otherwise the
    build's folders become ``<folder><suffix>`` and its artifacts ``<name><suffix>``.
    """
    files = [p.relative_to(stage) for p in stage.rglob("*") if p.is_file()]
    if not any((out / f).exists() for f in files) and not {c.artifact.name for c in cands} & taken:
        for f in files:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stage / f), out / f)
        shutil.rmtree(stage, ignore_errors=True)
        return cands
    moved: dict[str, str] = {}
    for folder in stage.iterdir():
        dest = out / f"{folder.name}{suffix}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(folder), dest)
        moved[folder.name] = dest.name

    def rel(path: str) -> str:
        head, _, tail = path.partition("/")
        return f"{moved.get(head, head)}/{tail}" if tail else path

    shutil.rmtree(stage, ignore_errors=True)
    out_cands = []
    for c in cands:
        a = c.artifact
        art = a.model_copy(
            update={
                "name": a.name + suffix,
                "path": rel(a.path),
                "companions": [f.model_copy(update={"path": rel(f.path)}) for f in a.companions],
            }
        )
        out_cands.append(Candidate(art, c.details))
    return out_cands


def _runnable_here(target: TargetSpec) -> bool:
    """Whether this machine can run ``target`` artifacts (and so check their parity)."""
    if unavailable_reason(target.backend) is not None:
        return False
    return runtime_class(target.backend).runs_here()[0]  # e.g. TensorRT: a CUDA GPU


def _pick(profile: DeviceProfile, target: TargetSpec, cands: list[_Built]) -> TargetChoice:
    usable = [b for b in cands if b.report is None or b.report.passed]
    measured = [_measurement(b) for b in cands]
    if not usable:
        return _choice(profile, target, None, f"{target.key}: no candidate passed parity", measured)
    timed = [b for b in usable if b.timing]
    if profile.measure and timed:
        best = min(timed, key=lambda b: b.timing["median_ms"] if b.timing else np.inf)
        others = ", ".join(
            f"{b.candidate.artifact.name} {b.timing['median_ms']:.3f} ms"
            for b in timed
            if b.timing and b is not best
        )
        assert best.timing is not None
        reason = (
            f"measured here (build machine of the profile's class): fastest passing, "
            f"{best.timing['median_ms']:.3f} ms" + (f" vs {others}" if others else "")
        )
        return _choice(
            profile, target, best.candidate.artifact, reason, measured, best.candidate.details
        )
    order = {p: i for i, p in enumerate(target.precisions)}
    best = min(usable, key=lambda b: order.get(b.candidate.artifact.precision, 99))
    reason = f"declared order {' > '.join(target.precisions)}: first passing" + (
        " (parity not run here: no engine; checked on the device)" if best.report is None else ""
    )
    return _choice(
        profile, target, best.candidate.artifact, reason, measured, best.candidate.details
    )


def _measurement(b: _Built) -> Measurement:
    art = b.candidate.artifact
    report = b.report
    return Measurement(
        artifact=art.name,
        precision=art.precision,
        layout=art.layout,
        threads=int(b.timing["threads"]) if b.timing else 1,
        median_ms=round(b.timing["median_ms"], 4) if b.timing else None,
        p99_ms=round(b.timing["p99_ms"], 4) if b.timing else None,
        accuracy=report.artifact_metric if report else None,
        passed=report.passed if report else True,
        note=b.candidate.details.get("refused", "")
        or ("parity not run: engine not installed here" if report is None else ""),
    )


def _choice(
    profile: DeviceProfile,
    target: TargetSpec,
    art: Artifact | None,
    reason: str,
    measured: list[Measurement] | None = None,
    build: dict[str, Any] | None = None,
) -> TargetChoice:
    return TargetChoice(
        profile=profile.name,
        backend=target.backend,
        device=target.device,
        artifact=art.name if art else None,
        precision=art.precision if art else None,
        layout=art.layout if art else "native",
        reason=reason,
        measured=measured or [],
        # JSON-safe copy: compilers record numbers, strings and flags, maybe a Path.
        build=json.loads(json.dumps(build or {}, default=str)),
    )


def _delete(out: Path, art: Artifact) -> None:
    for rel in [art.path, *(f.path for f in art.companions)]:
        (out / rel).unlink(missing_ok=True)


class _Pass:
    passed = True


_PASS: Any = _Pass()


__all__ = ["COMPILERS", "CompileTargets", "Compiled", "artifact_bytes"]
