"""The bundle manifest: the only contract between exporter and runtime.

Versioned with ``schema_version`` ("MAJOR.MINOR"): a reader accepts any minor
of its major (unknown optional fields of a newer minor are kept, not fatal)
and refuses another major with a clear error.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ManifestError
from .signature import GraphSpec, OutputLevel, TensorSpec

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 2  # 1.1: compression sizes and metrics; 1.2: per-target artifacts and choices
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
MANIFEST_NAME = "manifest.json"


class Target(StrEnum):
    """Inference engine an artifact is built for."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    LITERT = "litert"
    TENSORRT = "tensorrt"


class Precision(StrEnum):
    """Numeric precision of an artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class _Model(BaseModel):
    # "ignore" so that a newer minor version's extra fields do not break us.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelInfo(_Model):
    """Who the model is."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: str = Field(default="node_classification")
    description: str = ""
    labels: list[str] = Field(default_factory=list)


class FeatureScaling(_Model):
    """Per-feature standardisation applied by the runtime: ``(x - mean) / std``."""

    mean: list[float]
    std: list[float]

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("std values must be > 0")
        return v


class Preprocessing(_Model):
    """Input transformation the model expects."""

    feature_scaling: FeatureScaling | None = None


class FileRef(_Model):
    """A file of the bundle besides an artifact's main file (e.g. OpenVINO's ``.bin``)."""

    path: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Artifact(_Model):
    """One compiled model file in the bundle (plus companion files it needs)."""

    name: str
    path: str
    target: Target
    precision: Precision
    layout: str = Field(default="native", description="tensor layout, e.g. NF, BNF, NHWC")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int | None = None
    ops: list[str] = Field(default_factory=list)
    notes: str = ""
    input_shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="fixed input shapes the artifact was compiled for (static-shape engines); "
        "empty: the manifest's symbolic shapes",
    )
    companions: list[FileRef] = Field(
        default_factory=list, description="other files this artifact loads, checksummed too"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="engine settings baked in at export (device, input names, build plan...)",
    )


class OutputParity(_Model):
    """Per-output error of an artifact against the reference."""

    output: str
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool


class ParityReport(_Model):
    """Artifact vs reference, measured at export time."""

    artifact: str
    reference: str = "pytorch"
    backend: str
    samples: int
    outputs: list[OutputParity]
    metric: str | None = None
    reference_metric: float | None = None
    artifact_metric: float | None = None
    passed: bool
    note: str = Field(default="", description="why a run failed, when it did")


class Measurement(_Model):
    """One candidate artifact measured on the build machine."""

    artifact: str
    precision: Precision
    layout: str = "native"
    threads: int = 1
    median_ms: float | None = None
    p99_ms: float | None = None
    accuracy: float | None = None
    passed: bool = True
    note: str = ""


class TargetChoice(_Model):
    """Which artifact a device profile runs on one of its engines, and why."""

    profile: str
    backend: str
    device: str = "CPU"
    artifact: str | None = Field(description="chosen artifact; None when none could be built")
    precision: Precision | None = None
    layout: str = "native"
    reason: str
    measured: list[Measurement] = Field(default_factory=list)
    build: dict[str, Any] = Field(
        default_factory=dict,
        description="what the compiler decided for the chosen artifact (INT8 source or "
        "flavour, layout timings and why)",
    )


class Verification(_Model):
    """Inputs and reference outputs kept for ``edge-export verify`` on any machine."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    cases: int = Field(ge=0)
    atol: float = Field(ge=0, description="FP32 tolerance, absolute")
    rtol: float = Field(ge=0, description="FP32 tolerance, relative")
    max_accuracy_drop: float = Field(ge=0, description="FP16/INT8 gate, fraction")
    max_rel_error: float = Field(ge=0, description="FP16/INT8 gate without labels")
    description: str = ""


class CompressionReport(_Model):
    """What compression was applied (filled by the compression pipeline)."""

    pruning: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    stayed_float: list[dict[str, str]] = Field(
        default_factory=list, description="ops kept in float and why: {node, op, reason}"
    )
    sizes: dict[str, int] = Field(
        default_factory=dict, description="model file bytes: fp32, pruned, int8"
    )
    metrics: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="task metric per stage on val and test rows"
    )


class Canary(_Model):
    """Inputs with expected outputs, rerun after an update as a health check."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    atol: float
    rtol: float


class Manifest(_Model):
    """Everything a device needs to know about a bundle."""

    schema_version: str
    model: ModelInfo
    graph: GraphSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    artifacts: list[Artifact] = Field(min_length=1)
    compression: CompressionReport = Field(default_factory=CompressionReport)
    parity: list[ParityReport] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    targets: list[TargetChoice] = Field(
        default_factory=list, description="per profile and engine: chosen artifact and why"
    )
    canary: Canary | None = None
    verification: Verification | None = None
    toolchain: dict[str, str] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict, description="options and timings")
    created_at: str = ""

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, v: str) -> str:
        major = v.split(".", 1)[0]
        if not major.isdigit():
            raise ValueError(f"schema_version {v!r} is not MAJOR.MINOR")
        if int(major) != SCHEMA_MAJOR:
            raise ValueError(
                f"unsupported schema version {v!r} (major {major}; this edge-graph-sdk "
                f"reads {SCHEMA_MAJOR}.x); upgrade edge-graph-sdk or re-export the bundle"
            )
        return v

    @property
    def output_levels(self) -> dict[str, OutputLevel]:
        """Level of each output name (node / graph / batch)."""
        return {o.name: o.level or OutputLevel.NODE for o in self.outputs}

    def artifact(self, name: str) -> Artifact:
        """Return the artifact called ``name``.

        Raises:
            ManifestError: No such artifact (lists the known ones).
        """
        for a in self.artifacts:
            if a.name == name:
                return a
        raise ManifestError(f"no artifact {name!r}; bundle has {[a.name for a in self.artifacts]}")

    def to_json(self) -> str:
        """Serialise with stable key order (what is hashed and signed)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def parse_manifest(text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Parse and validate manifest JSON.

    Raises:
        ManifestError: Not JSON, a field invalid or missing (the field is named),
            or an unknown schema major version.
    """
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not valid JSON ({exc})", source) from None
    if not isinstance(raw, dict):
        raise ManifestError("expected a JSON object at the top level", source)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ManifestError(f"field {where}: {first['msg']}{more}", source) from None
