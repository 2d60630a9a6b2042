"""Device profiles: which engines a device has, in which order, with which settings.

A profile is a YAML file in ``edge_sdk.device_profiles`` (the package's data)
or a user's own file given by path. Its ``targets`` list the device's engines
in order of preference; each target either spells out its fields or starts
from a named *capability set* (``use: openvino-cpu``, defined once in
``capabilities.yaml``) and overrides some of them. Every field is validated;
an unknown or invalid field is reported by name.

``host`` is a profile built at run time that describes this machine: the
engines installed here, measured rather than declared (see :func:`host_profile`).
"""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ProfileError
from .manifest import Precision

_PACKAGE = "edge_sdk.device_profiles"
_CAPABILITIES = "capabilities.yaml"
_M = TypeVar("_M", bound=BaseModel)

#: Backend preference when no profile is given ("auto"): fastest engines first.
AUTO_ORDER = ["tensorrt", "openvino", "litert", "onnxruntime"]

BackendName = Literal["onnxruntime", "openvino", "litert", "tensorrt"]


class TargetSpec(BaseModel):
    """One inference engine on one kind of silicon of a device.

    Attributes:
        backend: Engine: ``onnxruntime``, ``openvino``, ``litert`` or ``tensorrt``.
        device: Engine device: ``CPU``; OpenVINO ``GPU`` / ``NPU``; TensorRT ``GPU`` / ``DLA``.
        precisions: Precisions the device runs, in order of declared preference.
        static_shapes: The engine needs fixed input shapes (static form: fixed
            batch; dynamic form: the padding buckets).
        layout: ``native``; ``nhwc`` (node-wise linear layers as 1x1
            convolutions over ``[B, 1, N, F]``); ``auto`` (build both, measure,
            keep the faster one that passes parity).
        threads: Intra-op threads for this engine (overrides the profile's).
        performance_hint: OpenVINO ``LATENCY`` or ``THROUGHPUT``.
        num_requests: OpenVINO infer requests in the async queue.
        dla_core: TensorRT DLA core (``device: DLA``).
        workspace_mb: TensorRT builder workspace limit.
        fp16_fallback: TensorRT: let layers without INT8 kernels run in FP16.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName
    device: Literal["CPU", "GPU", "NPU", "DLA"] = "CPU"
    precisions: list[Precision] = Field(default_factory=lambda: [Precision.FP32], min_length=1)
    static_shapes: bool = False
    layout: Literal["native", "nhwc", "auto"] = "native"
    threads: int | None = Field(default=None, gt=0)
    performance_hint: Literal["LATENCY", "THROUGHPUT"] | None = None
    num_requests: int | None = Field(default=None, gt=0)
    dla_core: int | None = Field(default=None, ge=0)
    workspace_mb: int | None = Field(default=None, gt=0)
    fp16_fallback: bool = True

    @model_validator(mode="after")
    def _check(self) -> TargetSpec:
        devices = {
            "onnxruntime": {"CPU"},
            "openvino": {"CPU", "GPU", "NPU"},
            "litert": {"CPU"},
            "tensorrt": {"GPU", "DLA"},
        }[self.backend]
        if self.device not in devices:
            raise ValueError(
                f"device {self.device} is not a {self.backend} device (one of {sorted(devices)})"
            )
        if self.device == "DLA" and self.dla_core is None:
            raise ValueError("device DLA needs dla_core")
        if self.layout != "native" and self.backend != "litert":
            raise ValueError(f"layout {self.layout} is a LiteRT option, not {self.backend}")
        return self

    @property
    def key(self) -> str:
        """``backend`` or ``backend:DEVICE`` for non-default devices (artifact naming)."""
        default = "GPU" if self.backend == "tensorrt" else "CPU"
        return self.backend if self.device == default else f"{self.backend}-{self.device.lower()}"

    def engine_options(self) -> dict[str, Any]:
        """The settings a runtime backend reads from ``BackendOptions.extra``."""
        keys = ("device", "performance_hint", "num_requests", "dla_core", "workspace_mb")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class DeviceProfile(BaseModel):
    """What a device can run and how to run it.

    Attributes:
        name: Profile id (file stem for shipped profiles).
        description: One line for humans.
        arch: CPU architecture (``x86_64`` or ``aarch64``).
        device_class: Kind of device. Precisions are *measured* on the build
            machine only when it is of this class (``measure``); otherwise the
            targets' declared preference decides.
        threads: Intra-op threads; None lets the engine decide.
        measure: The build machine is of this device's class: measure latency
            per precision and ship the fastest that passes the accuracy gate.
        targets: Engines in order of preference (``use:`` a capability set).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    arch: Literal["x86_64", "aarch64"] = "x86_64"
    device_class: str = "generic"
    threads: int | None = Field(default=None, gt=0)
    measure: bool = False
    targets: list[TargetSpec] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[TargetSpec]) -> list[TargetSpec]:
        # A field validator, so that the error names ``targets``.
        keys = [t.key for t in targets]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"targets repeat {dupes}: one entry per engine and device")
        return targets

    @property
    def backends(self) -> list[str]:
        """Backend names in order of preference (each once)."""
        return list(dict.fromkeys(t.backend for t in self.targets))

    @property
    def precisions(self) -> list[Precision]:
        """Every precision the targets declare, in first-seen order."""
        return list(dict.fromkeys(p for t in self.targets for p in t.precisions))

    def target_for(self, backend: str) -> TargetSpec | None:
        """The first target on ``backend``, if any."""
        return next((t for t in self.targets if t.backend == backend), None)

    def threads_for(self, target: TargetSpec) -> int | None:
        """Threads ``target`` runs with (its own, else the profile's)."""
        return target.threads if target.threads is not None else self.threads


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship with the SDK."""
    root = resources.files(_PACKAGE)
    return sorted(
        p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml") and p.name != _CAPABILITIES
    )


@cache
def capability_sets() -> dict[str, dict[str, Any]]:
    """The named capability sets (``use:`` values), validated."""
    res = resources.files(_PACKAGE) / _CAPABILITIES
    raw = _parse_yaml(res.read_text(encoding="utf-8"), _CAPABILITIES)
    for name, fields in raw.items():
        if not isinstance(fields, dict):
            raise ProfileError(f"{_CAPABILITIES}: {name}: expected a mapping of target fields")
        _validate(TargetSpec, fields, f"{_CAPABILITIES}: {name}")
    return raw


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name, ``host``, or a user's profile by path.

    Raises:
        ProfileError: Unknown name (lists the shipped ones), unreadable YAML,
            an unknown capability set, or an invalid field (named).
    """
    if str(name_or_path) == "host":
        return host_profile()
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        text, source = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        res = resources.files(_PACKAGE) / f"{name_or_path}.yaml"
        if not res.is_file() or str(name_or_path) == _CAPABILITIES[:-5]:
            raise ProfileError(
                f"unknown profile {str(name_or_path)!r}; shipped profiles: "
                f"{', '.join(shipped_profiles())}, host (or give a path to a .yaml file)"
            )
        text, source = res.read_text(encoding="utf-8"), f"{name_or_path}.yaml"
    return profile_from_dict(_parse_yaml(text, source), source)


def profile_from_dict(raw: dict[str, Any], source: str = "profile") -> DeviceProfile:
    """Validate a profile mapping, expanding ``use:`` capability sets.

    Raises:
        ProfileError: Naming the field at fault.
    """
    raw = dict(raw)
    targets = raw.get("targets")
    if isinstance(targets, list):
        sets = capability_sets()
        expanded = []
        for i, entry in enumerate(targets):
            if isinstance(entry, str):  # a bare capability set name
                entry = {"use": entry}
            if isinstance(entry, dict) and "use" in entry:
                entry = dict(entry)
                use = entry.pop("use")
                if use not in sets:
                    raise ProfileError(
                        f"{source}: field targets.{i}.use: unknown capability set {use!r}; "
                        f"known: {', '.join(sets)}"
                    )
                entry = {**sets[use], **entry}
            expanded.append(entry)
        raw["targets"] = expanded
    return _validate(DeviceProfile, raw, source)


def host_profile() -> DeviceProfile:
    """A profile of this machine: every usable engine, precisions measured.

    The engines are ordered like ``auto`` (TensorRT, OpenVINO, LiteRT, ONNX
    Runtime); each offers every precision it can build so that the export
    measures them here and ships the fastest that passes the gate.
    """
    arch = platform.machine().lower()
    arch = "aarch64" if arch in {"aarch64", "arm64"} else "x86_64"
    flags = cpu_flags()
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    sets = capability_sets()
    chosen = {
        "tensorrt": "tensorrt-gpu",
        "openvino": "openvino-cpu",
        "litert": "litert-xnnpack",
        "onnxruntime": "ort-cpu",
    }
    from .runtimes import unavailable_reason

    targets: list[dict[str, Any]] = []
    for backend in AUTO_ORDER:
        # Installed and not disabled (EDGE_SDK_DISABLE_BACKENDS): the export runs and
        # times every host target, which it cannot do with a disabled engine.
        if unavailable_reason(backend) is not None:
            continue
        entry = dict(sets[chosen[backend]])
        if backend == "litert":
            entry["precisions"] = ["int8", "fp32"]
        elif backend == "tensorrt":
            entry["precisions"] = ["int8", "fp16", "fp32"]
        else:
            entry["precisions"] = ["int8", "fp32"] if vnni else ["fp32", "int8"]
        targets.append(entry)
    if not targets:
        raise ProfileError("host: no inference engine is installed here (pip install onnxruntime)")
    cpu = _cpu_model() or platform.processor() or arch
    return _validate(
        DeviceProfile,
        {
            "name": "host",
            "description": f"this machine: {cpu}, {os.cpu_count()} CPUs"
            + (", VNNI" if vnni else ", no VNNI"),
            "arch": arch,
            "device_class": "host",
            "measure": True,
            "targets": targets,
        },
        "host",
    )


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: expected a mapping at the top level")
    return raw


def _validate(model: type[_M], raw: dict[str, Any], source: str) -> _M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ProfileError(f"{source}: field {field}: {err['msg']}") from None
