"""Which artifact of a bundle to load on this device, in what order.

:class:`~edge_sdk.Runtime` tries the plans in order and takes the first whose
engine is installed and loads; this module only decides the order and the
engine settings that go with each artifact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .manifest import Artifact, Manifest, Precision
from .profiles import AUTO_ORDER, DeviceProfile, TargetSpec
from .runtimes import backend_for_target


@dataclass(frozen=True)
class Plan:
    """One artifact to try, with the engine settings the profile gives it."""

    backend: str
    artifact: Artifact
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


_SMALLEST_FIRST = [Precision.INT8, Precision.FP16, Precision.FP32]


def artifact_plans(
    manifest: Manifest,
    prof: DeviceProfile | None,
    backend: str | None,
    forced: list[Precision] | None,
) -> Iterator[Plan]:
    """Artifacts to try, best first.

    - ``backend`` forced: that engine's artifacts, by ``forced`` or the
      profile's (else smallest-first) precision order.
    - a profile: what the export chose for it (``manifest.targets``); for a
      profile the bundle was not built for, its targets' declared order.
    - ``auto``: the export's choices in the bundle's profile order, then every
      engine fastest-first (TensorRT, OpenVINO, LiteRT, ONNX Runtime).
    """
    if backend:
        target = prof.target_for(backend) if prof else None
        order = forced or (target.precisions if target else _SMALLEST_FIRST)
        yield from _by_precision(manifest, backend, order, None, prof, target)
        return
    if prof is not None:
        recorded = [c for c in manifest.targets if c.profile == prof.name and c.artifact]
        if not forced:
            for c in recorded:
                target = next(
                    (t for t in prof.targets if t.backend == c.backend and t.device == c.device),
                    None,
                )
                yield _plan(manifest.artifact(str(c.artifact)), c.backend, prof, target, c.reason)
        built_for = prof.name in manifest.profiles
        for target in prof.targets:
            order = forced or target.precisions
            reason = (
                f"precision forced to {forced[0]}"
                if forced
                else f"declared order of profile {prof.name} for {target.key}: "
                f"{[str(p) for p in order]}"
                + ("" if built_for else " (the bundle was not built for this profile)")
            )
            yield from _by_precision(
                manifest, target.backend, order, target.device, prof, target, reason
            )
        return
    if not forced:
        for name in manifest.profiles:
            for c in manifest.targets:
                if c.profile == name and c.artifact:
                    artifact = manifest.artifact(c.artifact)
                    yield Plan(
                        c.backend,
                        artifact,
                        extra={"device": c.device},
                        reason=f"chosen at export for profile {name}",
                    )
    for name in AUTO_ORDER:
        yield from _by_precision(manifest, name, forced or _SMALLEST_FIRST, None, None, None)


def _by_precision(
    manifest: Manifest,
    backend: str,
    precisions: Sequence[Precision],
    device: str | None,
    prof: DeviceProfile | None,
    target: TargetSpec | None,
    reason: str = "",
) -> Iterator[Plan]:
    for precision in precisions:
        for a in manifest.artifacts:
            if backend_for_target(a.target) != backend or a.precision != precision:
                continue
            if device is not None and a.options.get("device", device) != device:
                continue
            yield _plan(a, backend, prof, target, reason)


def _plan(
    artifact: Artifact,
    backend: str,
    prof: DeviceProfile | None,
    target: TargetSpec | None,
    reason: str,
) -> Plan:
    threads = (prof.threads_for(target) if target else prof.threads) if prof else None
    # The profile's engine settings apply to artifacts built for its device (an NPU
    # profile's hints must not move its CPU fallback artifact onto the NPU).
    same_device = (
        target is not None and artifact.options.get("device", target.device) == target.device
    )
    extra = target.engine_options() if target and same_device else {}
    return Plan(backend, artifact, threads, extra, reason)
