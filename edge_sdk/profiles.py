"""Device profiles: which backends, in which order, with which settings.

Profiles are YAML files in ``edge_sdk.device_profiles`` (the package's data)
or a user's own file given by path. Every field is validated; an unknown or
invalid field is reported by name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ProfileError
from .manifest import Precision

_PACKAGE = "edge_sdk.device_profiles"

#: Backend preference when no profile is given ("auto"): fastest engines first.
AUTO_ORDER = ["tensorrt", "openvino", "litert", "onnxruntime"]


class DeviceProfile(BaseModel):
    """What a device can run and how to run it.

    Attributes:
        name: Profile id (file stem for shipped profiles).
        description: One line for humans.
        backends: Backend names in order of preference.
        precisions: Precisions in order of preference.
        threads: Intra-op threads; None lets the engine decide.
        static_shapes: The device needs fixed shapes (padding to buckets).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    backends: list[str] = Field(min_length=1)
    precisions: list[Precision] = Field(default_factory=lambda: [Precision.FP32])
    threads: int | None = Field(default=None, gt=0)
    static_shapes: bool = False


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship with the SDK."""
    root = resources.files(_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name, or a user's profile by path.

    Raises:
        ProfileError: Unknown name (lists the shipped ones), unreadable YAML,
            or an invalid field (named).
    """
    text: str
    source: str
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ProfileError(f"profile file not found: {candidate}")
        text, source = candidate.read_text(encoding="utf-8"), str(candidate)
    else:
        res = resources.files(_PACKAGE) / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ProfileError(
                f"unknown profile {str(name_or_path)!r}; shipped profiles: "
                f"{', '.join(shipped_profiles())} (or give a path to a .yaml file)"
            )
        text, source = res.read_text(encoding="utf-8"), f"{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: expected a mapping at the top level")
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ProfileError(f"{source}: field {field}: {err['msg']}") from None
