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
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import engines
from .engines import AUTO_ORDER, Device, EngineOptions, OrtOptions
from .errors import ProfileError
from .manifest import Precision

_PACKAGE = "edge_sdk.device_profiles"
_CAPABILITIES = "capabilities.yaml"
_M = TypeVar("_M", bound=BaseModel)
_O = TypeVar("_O", bound=EngineOptions)


class TargetSpec(BaseModel):
    """One inference engine on one kind of silicon of a device.

    The engine's own settings are typed per engine (``options``, see
    :mod:`edge_sdk.engines`) and written flat beside the common fields, in
    YAML as in ``model_dump``: ``{backend: tensorrt, device: DLA, dla_core: 0}``.
    Another engine's option is refused by name unless left at its default.

    Attributes:
        backend: Engine: ``onnxruntime``, ``openvino``, ``litert`` or ``tensorrt``.
        device: Engine device: ``CPU``; OpenVINO ``GPU`` / ``NPU``; TensorRT ``GPU`` / ``DLA``
            (default: the engine's first, ``CPU``, TensorRT ``GPU``).
        precisions: Precisions the device runs, in order of declared preference.
        static_shapes: The engine needs fixed input shapes (static form: fixed
            batch; dynamic form: the padding buckets).
        threads: Intra-op threads for this engine (overrides the profile's).
        options: The engine's settings, typed per engine (``OpenVinoOptions``,
            ``LiteRtOptions``, ``TensorRtOptions``... in :mod:`edge_sdk.engines`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    device: Device = "CPU"
    precisions: list[Precision] = Field(default_factory=lambda: [Precision.FP32], min_length=1)
    static_shapes: bool = False
    threads: int | None = Field(default=None, gt=0)
    options: SerializeAsAny[EngineOptions] = Field(default_factory=OrtOptions)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        """Default the device to the engine's; move the flat engine fields into ``options``."""
        if not isinstance(data, dict):
            return data
        row = engines.find(data.get("backend"))
        data = dict(data)
        if row is not None and "device" not in data:
            data["device"] = row.default_device  # TensorRT's is the GPU
        given = data.pop("options", None)
        picked: dict[str, Any] = (
            given.model_dump(exclude_unset=True)
            if isinstance(given, EngineOptions)
            else dict(given or {})
        )
        for key in list(data):
            owner = engines.option_owner(key)
            if owner is None:
                continue  # a common field, or an unknown one (refused by name)
            value = data.pop(key)
            if row is None or owner is row:
                picked[key] = value
            elif value != owner.options.model_fields[key].default:
                raise ValueError(f"{key} {value} is a {owner.label} option, not {row.name}")
        data["options"] = picked
        return data

    @field_validator("backend", mode="before")
    @classmethod
    def _known_engine(cls, value: Any) -> str:
        row = engines.find(value)
        if row is None:
            names = [repr(n) for n in engines.ENGINES]
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": f"{', '.join(names[:-1])} or {names[-1]}"},
            )
        return row.name

    @field_validator("options", mode="before")
    @classmethod
    def _typed_options(cls, value: Any, info: ValidationInfo) -> Any:
        row = engines.find(info.data.get("backend"))
        if row is None or isinstance(value, row.options):
            return value
        return row.options.model_validate(value)

    @model_validator(mode="after")
    def _check(self) -> TargetSpec:
        row = engines.ENGINES[self.backend]
        if self.device not in row.devices:
            devices = sorted(row.devices)
            raise ValueError(
                f"device {self.device} is not a {self.backend} device (one of {devices})"
            )
        self.options.check(self.device)
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Dump flat, every engine's option field present (defaults for other engines').

        The shape profiles were written in before options were typed: YAML,
        ``edge-export profiles --json`` and a re-validation all read it.
        """
        data = handler(self)
        if not isinstance(data, dict):
            return data
        options = data.pop("options", {})
        for row in engines.ENGINES.values():
            for key, field in row.options.model_fields.items():
                data[key] = options.get(key, field.default)
        return data

    @property
    def engine(self) -> engines.Engine:
        """The registry row of this target's engine."""
        return engines.ENGINES[self.backend]

    @property
    def key(self) -> str:
        """``backend`` or ``backend-device`` for non-default devices (artifact naming)."""
        default = self.engine.default_device
        return self.backend if self.device == default else f"{self.backend}-{self.device.lower()}"

    @property
    def layout(self) -> str:
        """The LiteRT layout option; ``native`` on every other engine."""
        return str(getattr(self.options, "layout", "native"))

    def options_as(self, kind: type[_O]) -> _O:
        """``options`` typed as the engine's own (a compiler reads its engine's settings).

        Raises:
            TypeError: The target is another engine's.
        """
        if not isinstance(self.options, kind):
            raise TypeError(f"{self.key} has {type(self.options).__name__}, not {kind.__name__}")
        return self.options

    def engine_options(self) -> dict[str, Any]:
        """The settings a runtime backend reads from ``BackendOptions.extra``."""
        return {"device": self.device, **self.options.runtime_extra()}

    def build_settings(self) -> dict[str, Any]:
        """What shapes this target's artifacts: targets with equal settings share one build.

        Leaves out what the runtime applies at load (threads, OpenVINO's hint
        and queue depth).
        """
        return {
            "backend": str(self.backend),
            "device": self.device,
            "precisions": [str(p) for p in self.precisions],
            "static_shapes": self.static_shapes,
            **self.options.build_settings(),
        }


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
    from .runtimes import unavailable_reason

    targets: list[dict[str, Any]] = []
    for backend in AUTO_ORDER:
        # Installed and not disabled (EDGE_SDK_DISABLE_BACKENDS): the export runs and
        # times every host target, which it cannot do with a disabled engine.
        if unavailable_reason(backend) is not None:
            continue
        row = engines.ENGINES[backend]
        entry = dict(sets[row.host_set])
        if row.host_precisions is not None:
            entry["precisions"] = list(row.host_precisions)
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
        # Engine options are written flat: name the field as the file has it.
        field = ".".join(str(p) for p in err["loc"] if p != "options") or "(root)"
        raise ProfileError(f"{source}: field {field}: {err['msg']}") from None
