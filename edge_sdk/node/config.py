"""Configuration of an edge node: one object for the CLI, the config file and the API.

A config file is YAML (or JSON) with the same field names as :class:`NodeConfig`;
command-line flags override it. Example::

    node_id: line3-press
    group: plant-a
    bundle: /opt/models/tep.bundle
    broker:
      url: mqtts://broker.plant-a.local:8883
      ca: /etc/edge-node/ca.pem
      username: line3
    window: {size: 20, stride: 1, timeout_s: 2.0}
    telemetry_interval_s: 10
    trusted_keys: [/etc/edge-node/fleet.pub]

The password is never read from the file when ``EDGE_SDK_MQTT_PASSWORD`` is set.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..mqtt.config import BrokerConfig
from ..mqtt.topics import check_name
from .outbox import SyncPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowConfig(_Strict):
    """How sensor messages become model input windows.

    Attributes:
        sensors: Sensor names in graph-node order (default ``s0..s{N-1}``).
        size: Samples per window (default: the model's feature count).
        stride: Run the model every ``stride`` complete samples.
        timeout_s: How long a sample waits for missing sensors before it is
            reported and dropped.
        period_s: Expected time between samples, in the unit of ``t``. When
            set, consecutive samples further apart than ``period_s * (1 +
            gap_tolerance)`` are reported as a gap on ``errors`` (rows lost
            upstream). None: no gap detection.
        gap_tolerance: Jitter allowed on ``period_s``, as a fraction of it.
        on_gap: ``skip`` (default): no window spans a gap, the window starts
            again after it; ``flag``: windows spanning it are computed and their
            results say ``"gap": true``.
        max_future_s: Refuse rows whose ``t`` is more than this many seconds
            ahead of the node's clock (``time.time()``): one row from a broken
            clock must not push the window into the future. None: no bound.
        max_past_s: Refuse rows more than this many seconds behind the node's
            clock. None (default): no bound, for replays and relative timestamps.
    """

    sensors: list[str] | None = None
    size: int | None = Field(default=None, ge=1)
    stride: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=2.0, gt=0)
    period_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gap_tolerance: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    on_gap: Literal["skip", "flag"] = "skip"
    max_future_s: float | None = Field(default=300.0, gt=0, allow_inf_nan=False)
    max_past_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class AlertConfig(_Strict):
    """When a result raises an alert.

    A bundle whose manifest has a ``decision`` (the model's own alarm rule:
    anomaly score above a threshold for K windows in a row) is alerted by that
    rule; ``score_threshold`` and ``consecutive`` override its numbers on this
    node. Other bundles use the class rule (``normal_class``, ``threshold``).

    Attributes:
        normal_class: Class rule: class index meaning "no fault".
        threshold: Class rule: minimum softmax probability of a fault class to raise it.
        score_threshold: Decision rule: replaces the bundle's score threshold
            (None: the bundle's). Needs a bundle with a decision.
        consecutive: Decision rule: replaces the bundle's on-delay, the windows
            in a row that raise an alarm (None: the bundle's). Needs a bundle
            with a decision.
        clear_after: Decision rule: replaces the bundle's off-delay, the windows
            in a row that clear it (None: the bundle's, else ``consecutive``).
    """

    normal_class: int = Field(default=0, ge=0)
    threshold: float = Field(default=0.5, ge=0, le=1)
    score_threshold: float | None = Field(default=None, allow_inf_nan=False)
    consecutive: int | None = Field(default=None, ge=1)
    clear_after: int | None = Field(default=None, ge=1)


class OutboxConfig(_Strict):
    """Store-and-forward settings (see :mod:`edge_sdk.node.outbox`).

    Attributes:
        max_bytes: Disk bound of the outbox; beyond it the drop policy applies.
        sync: ``normal`` (survives a process kill) or ``full`` (fsync per commit,
            survives power loss).
        replay_s: Delivered messages kept this long and re-sent after a lost
            connection, because a broker that crashes loses what it had not
            yet saved; keep it above the broker's ``autosave_interval``.
        inflight: Most messages published and not yet acknowledged (the node's
            own flow control; brokers drop QoS 1 data beyond their queue limits).
    """

    max_bytes: int = Field(default=64 << 20, gt=0)
    sync: SyncPolicy = SyncPolicy.NORMAL
    replay_s: float = Field(default=30.0, ge=0)
    inflight: int = Field(default=64, ge=1, le=65535)


class SparkplugConfig(_Strict):
    """Sparkplug B 3.0 settings (used with ``scheme: sparkplug``).

    The Sparkplug group id is the node's ``group``, the edge node id its
    ``node_id``.

    Attributes:
        device: Device id of the served model (DBIRTH/DDATA/DDEATH).
        primary_host: Host application id whose ``spBv1.0/STATE/{id}`` gates
            births and data (None: publish whenever connected).
        sensor_sources: Sparkplug devices whose DDATA feed the model, as
            ``edge_node_id/device_id`` in the same group; metric names are
            matched to ``window.sensors``.
    """

    device: str = "model"
    primary_host: str | None = None
    sensor_sources: list[str] = Field(default_factory=list)

    @field_validator("device", "primary_host")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else check_name("Sparkplug id", value)

    @field_validator("sensor_sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for source in value:
            parts = source.split("/")
            if len(parts) != 2:
                raise ValueError(f"{source!r}: expected edge_node_id/device_id")
            for part in parts:
                check_name("Sparkplug id", part)
        return value


class NodeConfig(_Strict):
    """Everything ``edge-node run`` needs.

    Attributes:
        node_id: This node's name in topics (default: the host name).
        group: Fleet group the node belongs to.
        bundle: Bundle to serve when the state directory has none yet.
        state_dir: Model slots, outbox and downloads live here (default
            ``edge-node-state``, relative to the working directory).
        broker: MQTT broker; ``None`` runs local-only (Python API).
        scheme: ``json`` (``edge/{group}/{node}/...``, QoS 1, persistent
            session) or ``sparkplug`` (Sparkplug B 3.0 under ``spBv1.0/``;
            model updates, errors and OTA status stay on the JSON topics).
        sparkplug: Sparkplug B settings.
        profile: Device profile (``auto``, a shipped name, or a YAML path).
        backend: Force one inference backend.
        precision: Force one precision.
        threads: Inference threads.
        window: Sensor windowing.
        alert: Alert rule.
        outbox: Store-and-forward.
        telemetry_interval_s: Telemetry period (0 disables).
        max_payload_bytes: Largest accepted incoming JSON message.
        max_batch: Most windows (or events) run in one backend call.
        max_delay_ms: Longest the worker waits, after a message arrived, for
            others to join its batch (up to ``max_batch`` messages); 0: it takes
            whatever is queued at once (continuous batching). A few milliseconds
            turn a high rate of one-event messages into fuller batches: fewer
            backend calls, commits and results messages per event.
        queue_size: Inbound messages buffered before the node reports overload.
        explain_in: Where alerts get their *why* (occlusion: dozens of inferences
            per alert). ``process``: a child process at a lower CPU priority,
            started at the first alert, so explanations take the CPU the
            decisions leave and never hold the worker (or Python's GIL).
            ``worker``: a slice after each batch on the worker thread (no
            second process; a burst of alerts slows the decisions behind it).
        trusted_keys: Public keys (``.pub`` files or directories) accepted for
            model updates; without any, updates are refused. With keys, every
            bundle the node loads (the first ``bundle``, the active slot after
            a restart, a rollback) must be signed by one of them too.
        canary_latency_ms: Latency budget of an update's canary run (default:
            3x the running model's canary latency, at least 50 ms).
        allow_downgrade: Accept older model versions without ``force``.
    """

    node_id: str = Field(default_factory=lambda: _default_node_id())
    group: str = "default"
    bundle: Path | None = None
    state_dir: Path = Path("edge-node-state")
    broker: BrokerConfig | None = None
    scheme: Literal["json", "sparkplug"] = "json"
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)
    profile: str = "auto"
    backend: str | None = None
    precision: str | None = None
    threads: int | None = Field(default=None, ge=1)
    window: WindowConfig = Field(default_factory=WindowConfig)
    alert: AlertConfig = Field(default_factory=AlertConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    telemetry_interval_s: float = Field(default=10.0, ge=0)
    max_payload_bytes: int = Field(default=1 << 20, gt=0)
    max_batch: int = Field(default=32, ge=1)
    max_delay_ms: float = Field(default=0.0, ge=0, le=10_000)
    queue_size: int = Field(default=10_000, ge=1)
    explain_in: Literal["process", "worker"] = "process"
    trusted_keys: list[Path] = Field(default_factory=list)
    canary_latency_ms: float | None = Field(default=None, gt=0)
    allow_downgrade: bool = False

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        return check_name("node id", value)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        return check_name("group", value)

    @model_validator(mode="after")
    def _sparkplug_needs_its_scheme(self) -> NodeConfig:
        sp = self.sparkplug
        if self.scheme != "sparkplug" and (sp.primary_host or sp.sensor_sources):
            raise ValueError(
                "sparkplug.primary_host and sparkplug.sensor_sources need scheme: sparkplug"
            )
        return self


def _default_node_id() -> str:
    host = socket.gethostname().split(".")[0] or "node"
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in host)
    return cleaned.lstrip("_.-")[:64] or "node"


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> NodeConfig:
    """Read a config file (YAML/JSON) and apply overrides (None values ignored).

    Nested overrides use dotted keys: ``{"broker.url": "mqtt://h:1883"}``.

    Raises:
        ConfigError: Unreadable file, unknown or invalid fields (named).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            loaded = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid YAML/JSON: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping at the top level")
        data = loaded or {}
    for key, value in overrides.items():
        if value is None:
            continue
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            nested = target.get(parent)
            if not isinstance(nested, dict):
                nested = target[parent] = {}
            target = nested
        target[leaf] = value
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid node configuration: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
    )
