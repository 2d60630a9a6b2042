"""The bundle manifest: the only contract between exporter and runtime.

Versioned with ``schema_version`` ("MAJOR.MINOR"): a reader accepts any minor
of its major (unknown optional fields of a newer minor are kept, not fatal)
and refuses another major with a clear error.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .engines import Target  # the engine registry names the targets
from .errors import ManifestError
from .eventgraph.spec import EventGraphSpec
from .io_contract import GraphSpec, OutputLevel, TensorSpec

SCHEMA_MAJOR = 1
# 1.1: compression sizes and metrics; 1.2: per-target artifacts and choices;
# 1.3: the model's alarm rule (decision) and where its topology came from (topology);
#      optional event_graph (how requests are built from events; ignored by older readers)
SCHEMA_MINOR = 3
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
MANIFEST_NAME = "manifest.json"


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


class Decision(_Model):
    """The model's alarm rule, fitted at training time: it travels with the model.

    An alarm is raised after ``consecutive`` windows in a row whose anomaly
    score (output ``output``, one value per window) is above ``threshold``
    (an on-delay), and cleared after ``clear_after`` windows in a row at or
    below it (an off-delay; by default as many as raise it). A retrained model
    brings its own threshold, so the rule lives in the bundle, not in the node's
    configuration (which may still override it, see ``edge_sdk.node.AlertConfig``).

    Attributes:
        output: Name of the anomaly-score output (one value per window).
        threshold: Score above which a window counts as anomalous.
        consecutive: Windows in a row above the threshold that raise the alarm.
        clear_after: Windows in a row at or below the threshold that clear it
            (None: ``consecutive``).
        class_output: Output holding class logits, used to name the fault of an
            alarm (argmax over the classes other than ``normal_class``).
        normal_class: Class index meaning "no fault" in ``class_output``.
        fitted_on: What data chose the threshold (free text, for people).
    """

    output: str = Field(min_length=1)
    threshold: float
    consecutive: int = Field(default=1, ge=1)
    clear_after: int | None = Field(default=None, ge=1)
    class_output: str | None = None
    normal_class: int = Field(default=0, ge=0)
    fitted_on: str = ""

    @property
    def clear_count(self) -> int:
        """Windows in a row at or below the threshold that clear the alarm."""
        return self.consecutive if self.clear_after is None else self.clear_after

    @field_validator("threshold")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"threshold must be a finite number, got {v}")
        return v


class Topology(_Model):
    """Where the model's graph came from, e.g. a learned adjacency folded into a static model.

    Attributes:
        source: ``given`` (a known sensor graph) or ``learned`` (computed by the
            model from node embeddings during training).
        folded: The adjacency is a constant inside the exported model (the
            bundle then has the static form even if the graph was learned).
        num_nodes: Nodes of the graph.
        num_edges: Edges kept (e.g. after top-k sparsification); None: dense or unknown.
        note: Free text (how it was learned or sparsified).
    """

    source: Literal["given", "learned"]
    folded: bool
    num_nodes: int = Field(gt=0)
    num_edges: int | None = Field(default=None, ge=0)
    note: str = ""


class Manifest(_Model):
    """Everything a device needs to know about a bundle."""

    schema_version: str
    model: ModelInfo
    graph: GraphSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    decision: Decision | None = Field(
        default=None, description="the model's alarm rule (anomaly score, threshold, run length)"
    )
    topology: Topology | None = Field(
        default=None, description="where the graph came from (given or learned, folded or not)"
    )
    event_graph: EventGraphSpec | None = Field(
        default=None, description="how each request is built from an event stream (eventgraph)"
    )
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

    @field_validator("decision")
    @classmethod
    def _decision_outputs(cls, v: Decision | None, info: ValidationInfo) -> Decision | None:
        outputs = info.data.get("outputs")
        if v is None or outputs is None:  # outputs invalid: that error is reported instead
            return v
        check_decision(v, outputs)
        return v

    @field_validator("topology")
    @classmethod
    def _topology_nodes(cls, v: Topology | None, info: ValidationInfo) -> Topology | None:
        graph = info.data.get("graph")
        if v is not None and graph is not None and graph.num_nodes not in (None, v.num_nodes):
            raise ValueError(
                f"topology has {v.num_nodes} nodes but the graph input has {graph.num_nodes}"
            )
        return v

    @property
    def request_inputs(self) -> list[TensorSpec]:
        """The inputs a caller sends (KServe metadata and decoding, the node's wire format).

        The model's own :attr:`inputs`, except for a model taking neighbour tables
        (``graph.tables``): its caller sends ``x``, ``edge_index`` (``edge_attr``,
        ``batch``) and the runtime builds the tables from them.
        """
        g = self.graph
        if g.tables is None:
            return self.inputs
        specs = {
            "x": TensorSpec(name="x", dtype="float32", shape=["num_nodes", g.num_features]),
            "edge_index": TensorSpec(name="edge_index", dtype="int64", shape=[2, "num_edges"]),
            "edge_attr": TensorSpec(
                name="edge_attr", dtype="float32", shape=["num_edges", g.edge_dim or 1]
            ),
            "batch": TensorSpec(name="batch", dtype="int64", shape=["num_nodes"]),
        }
        return [specs[name] for name in g.input_names]

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


def check_decision(decision: Decision, outputs: list[TensorSpec]) -> None:
    """Check that a decision's outputs exist and have the shapes the rule needs.

    Args:
        decision: The alarm rule.
        outputs: The model's outputs.

    Raises:
        ValueError: An output is unknown (the known ones are listed), the score
            output gives more than one value per window, or ``normal_class`` is
            not a class of ``class_output``.
    """
    by_name = {o.name: o for o in outputs}
    known = ", ".join(by_name) or "none"
    for field, name in (("output", decision.output), ("class_output", decision.class_output)):
        if name is not None and name not in by_name:
            raise ValueError(
                f"decision.{field} {name!r} is not an output of the model (outputs: {known})"
            )
    per_window = by_name[decision.output].shape[1:]
    # Symbolic or unknown (0) dims pass here; the node checks the values it gets.
    if any(isinstance(d, int) and d > 1 for d in per_window):
        raise ValueError(
            f"decision.output {decision.output!r} must give one score per window "
            f"(shape [B] or [B, 1]); it has shape {by_name[decision.output].shape}"
        )
    if decision.class_output is not None:
        shape = by_name[decision.class_output].shape
        classes = shape[-1] if len(shape) == 2 else None
        if len(shape) != 2 or (isinstance(classes, int) and classes < 2):
            raise ValueError(
                f"decision.class_output {decision.class_output!r} must hold class logits "
                f"[B, classes >= 2]; it has shape {shape}"
            )
        if isinstance(classes, int) and decision.normal_class >= classes:
            raise ValueError(
                f"decision.normal_class {decision.normal_class} is not a class of "
                f"{decision.class_output!r} ({classes} classes)"
            )


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
