"""What an export is asked to do: :class:`ExportConfig`, one group per pipeline concern.

The groups follow the pipeline's steps: what the model is (:class:`ModelOptions`), how its graph is
represented (:class:`GraphOptions`), how close the artifacts must stay to PyTorch
(:class:`ParityOptions`), pruning (:class:`PruneOptions`), INT8 and the accuracy gate every
compressed model passes (:class:`QuantOptions`), the devices it is built for
(:class:`TargetOptions`) and what is written (:class:`BundleOptions`). Each group checks its own
values, so API users and the CLI get the same errors.

A field that ``edge-export export`` offers carries its flag (:class:`~.config_flags.Flag`) in
its metadata: the CLI builds its options from these declarations, so an option is declared once.
This module is torch-free for that reason: the CLI imports it on devices without ``[export]``.

Flat keywords (``ExportConfig(form="static", int8=True)``) and flat attributes (``cfg.atol``) keep
working; each is routed to its group.
"""

# No ``from __future__ import annotations``: the CLI reads the fields' types as objects.

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config_flags import FIELD_DEFAULT, Flag, cli_flag
from .errors import ExportError
from .io_contract import Bucket, GraphForm, parse_buckets
from .manifest import Decision, EventGraphSpec, Topology
from .neighbour_tables import DEFAULT_MAX_DEGREE
from .profiles import load_profile

#: The static form's aggregation choices (``--aggregation``; see ``exporters/aggregation.py``).
AGGREGATIONS = ("auto", "dense", "tables", "scatter")


def check_decision_names(decision: Decision, names: Sequence[str]) -> None:
    """Check that the outputs a decision names are outputs of the model.

    Raises:
        ExportError: An unknown output (the model's outputs are listed).
    """
    for flag, name in (("output", decision.output), ("class_output", decision.class_output)):
        if name is not None and name not in names:
            raise ExportError(
                f"decision {flag} {name!r} is not an output of the model; its outputs are "
                f"{list(names)} (set output_names / --output-name to name them)"
            )


@dataclass
class ModelOptions:
    """What the manifest says about the model.

    Attributes:
        name: Model name in the manifest.
        version: Model version (semantic versioning recommended).
        task: Free-form task name, e.g. ``node_classification``.
        labels: Class names, index = class id.
        output_names: ONNX output names (default ``out`` / ``out0..``).
        feature_scaling: ``(mean, std)`` applied by the runtime before the model.
        decision: The model's alarm rule (anomaly-score output, threshold, run
            length), written into the manifest; ``edge-node`` raises alerts by it.
        topology: Where the graph came from (e.g. a learned adjacency folded
            into a static-topology model), written into the manifest.
        event_graph: How requests are built from events, written into the manifest.
    """

    name: str = field(default="model", metadata=cli_flag("Model name in the manifest."))
    version: str = field(default="1.0.0", metadata=cli_flag("Model version in the manifest."))
    task: str = field(
        default="classification", metadata=cli_flag("Task name, e.g. node_classification.")
    )
    labels: list[str] = field(
        default_factory=list,
        metadata=cli_flag(
            "Comma-separated class names (index = class id).",
            type=str | None,
            default=None,
            parse=lambda v: [s.strip() for s in v.split(",")] if v else [],
        ),
    )
    output_names: list[str] | None = field(
        default=None,
        metadata=cli_flag(
            "ONNX output name(s); default out / out0...",
            param="output_name",
            type=list[str] | None,
            parse=lambda v: v or None,
        ),
    )
    feature_scaling: tuple[Sequence[float], Sequence[float]] | None = None
    decision: Decision | None = None
    topology: Topology | None = None
    event_graph: EventGraphSpec | None = None

    def __post_init__(self) -> None:
        if self.decision is not None and self.output_names is not None:
            # Checked here too (not only once the model is traced) so a typo fails at once.
            check_decision_names(self.decision, self.output_names)


@dataclass
class GraphOptions:
    """How the graph is represented in the exported model.

    Attributes:
        form: ``auto`` | ``static`` | ``dynamic`` | ``learned``.
        aggregation: ``auto`` | ``tables`` | ``scatter`` | ``dense`` (static form
            only); ``auto`` takes neighbour tables where every layer has a lowering,
            in the static form dense where the graph is small and dense measures
            faster (see ``exporters/aggregation.py``).
        dense_threshold: Static form, ``auto``: largest N for which dense folding
            is timed against neighbour tables.
        max_degree: Dynamic form over neighbour tables: in-degree limit of a request
            (recorded as ``graph.tables.max_degree``).
        max_nodes: Largest request the runtime accepts (dynamic form).
        max_edges: Largest edge count the runtime accepts (dynamic form).
        buckets: Padded sizes for static-shape backends (dynamic form).
        simplify: Simplify the ONNX graph (onnxslim).
    """

    form: str = field(
        default="auto", metadata=cli_flag("Graph form: auto, static, dynamic or learned.")
    )
    aggregation: str = field(
        default="auto",
        metadata=cli_flag(
            "How neighbours are aggregated: auto, tables, scatter, or dense (static form). "
            "auto takes neighbour tables where every layer has a lowering; in the static "
            "form dense [N, N] constants instead when N <= --dense-threshold and dense "
            "measures faster here."
        ),
    )
    dense_threshold: int = field(
        default=256,
        metadata=cli_flag(
            "Static form, --aggregation auto: time dense folding against neighbour tables "
            "up to this many nodes."
        ),
    )
    max_degree: int = field(
        default=DEFAULT_MAX_DEGREE,
        metadata=cli_flag(
            "Dynamic form over neighbour tables: the most incoming edges a node of a request "
            "may have (self loops included where the model adds them); larger raises the "
            "limit at the cost of wider tables on static-shape engines.",
            min=1,
        ),
    )
    max_nodes: int = 1_000_000
    max_edges: int = 10_000_000
    buckets: list[Bucket] = field(
        default_factory=list,
        metadata=cli_flag(
            "Dynamic form: a padded size NODES:EDGES[:GRAPHS] for static-shape engines, one "
            "artifact each; repeatable. Default: derived from the samples where needed.",
            decls=("--bucket",),
            param="bucket",
            type=list[str] | None,
            default=None,
            parse=parse_buckets,
        ),
    )
    simplify: bool = True

    def __post_init__(self) -> None:
        if self.form not in {"auto", *(f.value for f in GraphForm)}:
            raise ExportError(f"form {self.form!r}: expected auto, static, dynamic or learned")
        if self.dense_threshold < 1:
            raise ExportError("dense_threshold must be >= 1")
        if self.max_degree < 1:
            raise ExportError("max_degree must be >= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ExportError(
                f"aggregation {self.aggregation!r}: expected one of {', '.join(AGGREGATIONS)}"
            )


@dataclass
class ParityOptions:
    """How close every FP32 artifact must stay to the PyTorch model.

    Attributes:
        atol: Parity absolute tolerance.
        rtol: Parity relative tolerance.
        max_metric_drop: Parity: allowed accuracy drop (fraction).
    """

    atol: float = field(default=1e-4, metadata=cli_flag("Parity: absolute tolerance."))
    rtol: float = field(default=1e-3, metadata=cli_flag("Parity: relative tolerance."))
    max_metric_drop: float = field(
        default=0.001, metadata=cli_flag("Parity: allowed accuracy drop (0.001 = 0.1 pp).")
    )

    def __post_init__(self) -> None:
        if self.atol < 0 or self.rtol < 0 or self.max_metric_drop < 0:
            raise ExportError("atol, rtol and max_metric_drop must be >= 0")


@dataclass
class PruneOptions:
    """Pruning and the fine-tuning that recovers accuracy after it.

    Attributes:
        spec: ``unstructured:0.5`` (``:layer`` for per-layer), ``structured:0.5`` or
            None (flat keyword ``prune``).
        fine_tune_epochs: Recovery epochs after pruning (needs ``y`` and ``train_mask``).
        fine_tune_fn: Or a callable that trains the pruned model in place.
    """

    spec: str | None = field(
        default=None,
        metadata=cli_flag(
            "unstructured:0.5 (magnitude; add :layer for per-layer) or structured:0.5 "
            "(removes hidden channels / heads).",
            param="prune",
        ),
    )
    fine_tune_epochs: int = field(
        default=0, metadata=cli_flag("Recovery epochs after pruning (needs y, train_mask).")
    )
    fine_tune_fn: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if self.fine_tune_epochs < 0:
            raise ExportError("fine_tune_epochs must be >= 0")
        if (self.fine_tune_epochs or self.fine_tune_fn) and not self.spec:
            raise ExportError("fine-tuning recovers accuracy after pruning: add --prune")


@dataclass
class QuantOptions:
    """INT8, and the accuracy gate every compressed (pruned or INT8) model passes.

    Attributes:
        enabled: Add an INT8 (QDQ, symmetric, per-channel) artifact (flat keyword ``int8``).
        calibration: Maximum calibration items drawn from the samples.
        calib_method: ``minmax`` | ``percentile`` | ``entropy``.
        calib_percentile: Share of values a ``percentile`` range keeps (99.999).
        max_accuracy_drop: Gate: allowed accuracy drop vs FP32 (fraction; 0.01 = 1 pp).
        max_rel_error: Gate without labels: relative output error bound of INT8.
        allow_accuracy_drop: Keep a compressed model that fails the gate.
    """

    enabled: bool = field(
        default=False,
        metadata=cli_flag(
            "Add an INT8 artifact (QDQ, symmetric, per-channel).", decls=("--int8",), param="int8"
        ),
    )
    calibration: int = field(
        default=32, metadata=cli_flag("Maximum calibration graphs drawn from the samples.")
    )
    calib_method: str = field(
        default="minmax", metadata=cli_flag("INT8 calibration: minmax, percentile or entropy.")
    )
    calib_percentile: float = field(
        default=99.999, metadata=cli_flag("Share of values a percentile range keeps, %.")
    )
    max_accuracy_drop: float = field(
        default=0.01,
        metadata=cli_flag(
            "Gate: allowed validation accuracy drop vs FP32, percentage points.",
            default=1.0,
            parse=lambda pp: pp / 100,
        ),
    )
    max_rel_error: float = field(
        default=0.05, metadata=cli_flag("Gate without labels: relative output error bound of INT8.")
    )
    allow_accuracy_drop: bool = field(
        default=False, metadata=cli_flag("Keep a compressed model that fails the gate (reported).")
    )

    def __post_init__(self) -> None:
        if self.calib_method not in {"minmax", "percentile", "entropy"}:
            raise ExportError(
                f"calib_method {self.calib_method!r}: expected minmax, percentile or entropy"
            )
        if self.calibration < 1 or not 0.0 < self.calib_percentile <= 100.0:
            raise ExportError("calibration must be >= 1 graph, calib_percentile in (0, 100]")
        if self.max_accuracy_drop < 0 or self.max_rel_error < 0:
            raise ExportError("max_accuracy_drop and max_rel_error must be >= 0")


@dataclass
class TargetOptions:
    """The devices the bundle is built for.

    Attributes:
        profiles: Device profiles (shipped names, ``host`` or YAML paths; validated).
        jobs: Conversions run side by side, each in a process of its own (LiteRT
            converts a table-input model once per padding bucket: tens of seconds
            each for a large model); 1: one after another in this process.
    """

    profiles: list[str] = field(
        default_factory=lambda: ["generic-x86"],
        metadata=cli_flag(
            "Device profile: a shipped name (edge-export profiles), host (this machine, "
            "precision measured), or a YAML path; repeatable: one bundle for several devices.",
            decls=("--profile", "-p"),
            param="profile",
            type=list[str] | None,
            default=None,
            parse=lambda v: v or ["generic-x86"],
        ),
    )

    jobs: int = field(
        default=1,
        metadata=cli_flag(
            "Conversions run side by side, each in a process of its own (LiteRT converts "
            "one file per padding bucket); 1: one after another. Each takes a core and a "
            "few GiB of memory.",
            min=1,
        ),
    )

    def __post_init__(self) -> None:
        for p in self.profiles:
            load_profile(p)  # raises ProfileError naming the field
        if self.jobs < 1:
            raise ExportError("jobs must be >= 1")


@dataclass
class BundleOptions:
    """What is written besides the artifacts.

    Attributes:
        canary_nodes: Nodes in the canary subgraph (dynamic form).
        pack: Also write ``<out>.tar.gz``.
    """

    canary_nodes: int = 32
    pack: bool = field(default=False, metadata=cli_flag("Also write OUTPUT.tar.gz."))


#: ExportConfig attribute -> its group class, in the order the pipeline uses them.
GROUPS: dict[str, type] = {
    "model": ModelOptions,
    "graph": GraphOptions,
    "parity": ParityOptions,
    "pruning": PruneOptions,
    "quant": QuantOptions,
    "targets": TargetOptions,
    "bundle": BundleOptions,
}
#: (group, field) -> its flat keyword, where the two names differ.
_FLAT_NAME = {("pruning", "spec"): "prune", ("quant", "enabled"): "int8"}
#: Flat keyword -> (group, field), for every field of every group.
FLAT: dict[str, tuple[str, str]] = {
    _FLAT_NAME.get((g, f.name), f.name): (g, f.name)
    for g, cls in GROUPS.items()
    for f in dataclasses.fields(cls)
}


@dataclass(init=False)
class ExportConfig:
    """Options of :func:`~edge_sdk.exporters.export_model` (the CLI builds the same object).

    Build it from groups (``ExportConfig(quant=QuantOptions(enabled=True))``) or
    from flat keywords (``ExportConfig(int8=True)``), or both (flat keywords
    override the groups' values). Every flat keyword is also an attribute.

    Attributes:
        model: Name, version, labels, outputs, alarm rule (:class:`ModelOptions`).
        graph: Graph form and shape limits (:class:`GraphOptions`).
        parity: FP32 tolerances (:class:`ParityOptions`).
        pruning: Pruning and fine-tuning (:class:`PruneOptions`).
        quant: INT8 and the accuracy gate (:class:`QuantOptions`).
        targets: Device profiles and conversion jobs (:class:`TargetOptions`).
        bundle: Canary and archive (:class:`BundleOptions`).

    Raises:
        TypeError: An unknown keyword.
        ExportError: A value a group refuses.
        ProfileError: An unknown or invalid device profile.
    """

    model: ModelOptions
    graph: GraphOptions
    parity: ParityOptions
    pruning: PruneOptions
    quant: QuantOptions
    targets: TargetOptions
    bundle: BundleOptions

    def __init__(self, **options: Any) -> None:
        flat: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for key, value in options.items():
            if key in GROUPS:
                continue
            if key not in FLAT:
                raise TypeError(f"ExportConfig got an unexpected keyword argument {key!r}")
            group, name = FLAT[key]
            flat[group][name] = value
        for group, cls in GROUPS.items():
            given = options.get(group)
            if given is None:
                value = cls(**flat[group])
            elif flat[group]:
                value = dataclasses.replace(given, **flat[group])
            else:
                value = given
            object.__setattr__(self, group, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the flat names of older callers.
        if name in FLAT:
            group, field_name = FLAT[name]
            return getattr(getattr(self, group), field_name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FLAT:
            group, field_name = FLAT[name]
            setattr(getattr(self, group), field_name, value)
        else:
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class FlagField:
    """One ``edge-export export`` option, derived from a config field.

    Attributes:
        flat: The flat :class:`ExportConfig` keyword it sets.
        param: The CLI parameter name.
        flag: The field's declaration.
        type: The CLI value type.
        default: The CLI default.
    """

    flat: str
    param: str
    flag: Flag
    type: Any
    default: Any

    def to_config(self, value: Any) -> Any:
        """The field's value for the CLI's ``value``."""
        return self.flag.parse(value) if self.flag.parse else value


def cli_fields() -> Iterator[FlagField]:
    """The config fields ``edge-export export`` offers, in group order."""
    for g, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            flag: Flag | None = f.metadata.get("flag")
            if flag is None:
                continue
            flat = _FLAT_NAME.get((g, f.name), f.name)
            default = f.default if flag.default is FIELD_DEFAULT else flag.default
            yield FlagField(flat, flag.param or flat, flag, flag.type or f.type, default)


def config_from_flags(values: Mapping[str, Any], **extra: Any) -> ExportConfig:
    """The :class:`ExportConfig` of ``edge-export export``'s option values.

    Args:
        values: CLI parameter name -> value, for every :func:`cli_fields` entry.
        extra: Further flat keywords (e.g. ``decision`` built from ``--alert-*``).
    """
    flags = {f.flat: f.to_config(values[f.param]) for f in cli_fields()}
    return ExportConfig(**flags, **extra)


__all__ = [
    "BundleOptions",
    "ExportConfig",
    "Flag",
    "GraphOptions",
    "ModelOptions",
    "ParityOptions",
    "PruneOptions",
    "QuantOptions",
    "TargetOptions",
    "check_decision_names",
    "cli_fields",
    "config_from_flags",
]
