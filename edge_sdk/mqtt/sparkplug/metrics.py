"""What the node publishes as Sparkplug metrics, and under which names.

Node-level metrics (NBIRTH / NDATA of ``{node}``):

* ``bdSeq`` (Int64), ``Node Control/Rebirth``, ``Node Control/Rollback``
  (Boolean, writable by NCMD), ``Node Control/Telemetry Interval`` (Double,
  seconds, writable);
* ``Node Info/Model Name``, ``Model Version``, ``Backend``, ``Precision``;
* ``Telemetry/...``: latency and inference percentiles, queue depth, outbox
  depth and drops, counters, CPU and memory.

Device-level metrics (DBIRTH / DDATA of ``{node}/{device}``, one device per
served model):

* ``Model/Name``, ``Model/Version``;
* ``Result/...``: one DDATA per window with its id, window, latency, every
  model output as a DoubleArray (``Result/Outputs/{name}``) and, for a class
  vector, class, label and probability;
* ``Anomaly/Score``, ``Anomaly/Threshold``, ``Anomaly/Above`` (models with a
  decision rule);
* ``Alert/State`` (``raised`` / ``cleared``), ``Alert/Active``,
  ``Alert/Class``, ``Alert/Label``.

A birth declares every metric with its datatype (null when there is no value
yet), as the specification requires: a host learns the metric set from the
birth and nothing outside it ever appears in DATA messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codec import DataType

#: ``(name, datatype, value)`` as stored in the outbox before seq and timestamps are added.
Triple = tuple[str, int, Any]

BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
ROLLBACK = "Node Control/Rollback"
TELEMETRY_INTERVAL = "Node Control/Telemetry Interval"

_D, _I, _S, _B = DataType.DOUBLE, DataType.INT64, DataType.STRING, DataType.BOOLEAN

#: Node telemetry metric -> (datatype, path into the telemetry message body).
_TELEMETRY: dict[str, tuple[DataType, tuple[str, ...]]] = {
    "Telemetry/Latency p50 ms": (_D, ("latency_ms", "p50")),
    "Telemetry/Latency p90 ms": (_D, ("latency_ms", "p90")),
    "Telemetry/Latency p99 ms": (_D, ("latency_ms", "p99")),
    "Telemetry/Inference p50 ms": (_D, ("infer_ms", "p50")),
    "Telemetry/Inference p99 ms": (_D, ("infer_ms", "p99")),
    "Telemetry/Queue Depth": (_I, ("queue_depth",)),
    "Telemetry/Outbox Pending": (_I, ("outbox", "pending")),
    "Telemetry/Outbox Dropped": (_I, ("outbox", "dropped")),
    "Telemetry/Messages": (_I, ("counters", "messages")),
    "Telemetry/Windows": (_I, ("counters", "windows")),
    "Telemetry/Inferences": (_I, ("counters", "inferences")),
    "Telemetry/Errors": (_I, ("counters", "errors")),
    "Telemetry/Alerts": (_I, ("counters", "alerts")),
    "Telemetry/CPU Percent": (_D, ("cpu_percent",)),
    "Telemetry/RSS MB": (_D, ("rss_mb",)),
    "Telemetry/Uptime s": (_D, ("uptime_s",)),
}

_RESULT_FIXED: tuple[tuple[str, DataType], ...] = (
    ("Result/Id", DataType.UINT64),
    ("Result/Window Seq", _I),
    ("Result/Window Start", _D),
    ("Result/Window End", _D),
    ("Result/Latency ms", _D),
    ("Result/Class", DataType.INT32),
    ("Result/Label", _S),
    ("Result/Score", _D),
    ("Anomaly/Score", _D),
    ("Anomaly/Threshold", _D),
    ("Anomaly/Above", _B),
)
_ALERT: tuple[tuple[str, DataType], ...] = (
    ("Alert/State", _S),
    ("Alert/Active", _B),
    ("Alert/Class", DataType.INT32),
    ("Alert/Label", _S),
)


def node_birth(info: Mapping[str, Any], telemetry: Mapping[str, Any]) -> list[Triple]:
    """Node metrics for an NBIRTH (without bdSeq and the controls, which the session adds).

    Args:
        info: ``describe()`` of the node (model, backend, precision).
        telemetry: The latest telemetry body (may be empty: values are null then).
    """
    model = info.get("model") or {}
    out: list[Triple] = [
        ("Node Info/Model Name", _S, model.get("name")),
        ("Node Info/Model Version", _S, model.get("version")),
        ("Node Info/Backend", _S, info.get("backend")),
        ("Node Info/Precision", _S, info.get("precision")),
    ]
    return out + telemetry_metrics(telemetry, keep_null=True)


def telemetry_metrics(body: Mapping[str, Any], keep_null: bool = False) -> list[Triple]:
    """NDATA metrics of one telemetry message body (for a birth: ``keep_null``, every one).

    The telemetry period goes in NDATA as ``Node Control/Telemetry Interval``, so a
    host sees an NCMD that changed it take effect; a birth declares it with the
    other controls.
    """
    out: list[Triple] = []
    if not keep_null and body.get("telemetry_interval_s") is not None:
        out.append((TELEMETRY_INTERVAL, int(_D), float(body["telemetry_interval_s"])))
    for name, (dt, path) in _TELEMETRY.items():
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None or keep_null:
            out.append((name, dt, value))
    return out


def output_names(outputs: list[str]) -> list[str]:
    return [f"Result/Outputs/{name}" for name in outputs]


def device_birth(
    model: Mapping[str, Any], outputs: list[str], threshold: float | None
) -> list[Triple]:
    """Device metrics for a DBIRTH: every metric the model device will publish.

    ``Anomaly/*`` is declared only for a model with a decision rule (``threshold``
    given): without one no result carries an anomaly, and a host would otherwise
    show three metrics that stay null for ever.
    """
    out: list[Triple] = [
        ("Model/Name", _S, model.get("name")),
        ("Model/Version", _S, model.get("version")),
    ]
    out += [
        (name, int(dt), threshold if name == "Anomaly/Threshold" else None)
        for name, dt in _RESULT_FIXED
        if threshold is not None or not name.startswith("Anomaly/")
    ]
    out += [(name, int(DataType.DOUBLE_ARRAY), None) for name in output_names(outputs)]
    out += [(name, int(dt), False if name == "Alert/Active" else None) for name, dt in _ALERT]
    return out


def result_metrics(body: Mapping[str, Any], result_id: int) -> list[Triple]:
    """DDATA metrics of one result message body."""
    window = body.get("window") or {}
    anomaly = body.get("anomaly") or {}
    values = {
        "Result/Id": result_id,
        "Result/Window Seq": window.get("seq"),
        "Result/Window Start": window.get("t_start"),
        "Result/Window End": window.get("t_end"),
        "Result/Latency ms": body.get("latency_ms"),
        "Result/Class": body.get("class"),
        "Result/Label": body.get("label"),
        "Result/Score": body.get("score"),
        "Anomaly/Score": anomaly.get("score"),
        "Anomaly/Threshold": anomaly.get("threshold"),
        "Anomaly/Above": anomaly.get("above"),
    }
    out: list[Triple] = [
        (name, int(dt), values[name]) for name, dt in _RESULT_FIXED if values[name] is not None
    ]
    for name, value in (body.get("outputs") or {}).items():
        out.append((f"Result/Outputs/{name}", int(DataType.DOUBLE_ARRAY), _flat(value)))
    return out


def alert_metrics(body: Mapping[str, Any]) -> list[Triple]:
    """DDATA metrics of one alert (raised or cleared)."""
    state = body.get("state")
    values = {
        "Alert/State": state,
        "Alert/Active": state == "raised",
        "Alert/Class": body.get("class"),
        "Alert/Label": body.get("label"),
    }
    return [(name, int(dt), values[name]) for name, dt in _ALERT if values[name] is not None]


def _flat(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [float(value)]


def sensor_rows(metrics: list[Any], payload_ts: int | None) -> list[dict[str, Any]]:
    """Turn a source device's DDATA metrics into sensor rows for the window assembler.

    Metrics without a name (an alias the source's DBIRTH did not declare) or
    without a numeric value are ignored. Metrics with the same timestamp form
    one row; ``t`` is in seconds. The node keeps the names its model takes.

    Args:
        metrics: Decoded :class:`~edge_sdk.mqtt.sparkplug.codec.Metric` objects.
        payload_ts: The payload timestamp, for metrics without their own.
    """
    rows: dict[int, dict[str, Any]] = {}
    for m in metrics:
        value = m.value
        if not m.name or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        ts = m.timestamp if m.timestamp is not None else payload_ts
        if ts is None:
            continue
        rows.setdefault(ts, {})[m.name] = value
    return [{"t": ts / 1000.0, "values": values} for ts, values in sorted(rows.items())]
