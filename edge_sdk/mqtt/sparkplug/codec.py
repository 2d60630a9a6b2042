"""Sparkplug B payloads: metrics to protobuf bytes and back.

Built on ``sparkplug_b_pb2``, compiled from the published Sparkplug B schema
(``sparkplug_b.proto`` beside this file). Only what an edge node needs is
mapped to Python values; DataSet, Template and PropertySet metrics decode to
``None`` with their datatype kept, so a host's extra metrics never break us.

Value encoding follows the Sparkplug 3.0 specification:

* Int8/16/32 and UInt8/16/32 go in ``int_value`` (uint32), Int64, UInt64 and
  DateTime in ``long_value`` (uint64); signed values as two's complement;
* arrays go in ``bytes_value``, little-endian, tightly packed (strings
  null-terminated);
* a metric without a value is sent with ``is_null``;
* the datatype is sent in births and left out of DATA and CMD messages
  ("SHOULD NOT be included"): a decoder takes it from the birth
  (``decode(..., datatypes=...)``).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import ModuleType
from typing import Any

from ..._optional import require
from ...errors import InvalidInputError


@functools.cache
def _schema() -> ModuleType:
    """The compiled schema (imported on first use: protobuf comes with the [mqtt] extra)."""
    require("google.protobuf", "Sparkplug B payloads")
    from . import sparkplug_b_pb2

    return sparkplug_b_pb2


class DataType(IntEnum):
    """Sparkplug B metric datatypes (the ``DataType`` enum of the schema)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


_INT32 = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32}
_UINT32 = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32}
_INT64 = (DataType.INT64, DataType.UINT64, DataType.DATETIME)
_STRINGS = (DataType.STRING, DataType.TEXT, DataType.UUID)
_PACKED = {
    DataType.INT8_ARRAY: "b",
    DataType.INT16_ARRAY: "h",
    DataType.INT32_ARRAY: "i",
    DataType.INT64_ARRAY: "q",
    DataType.UINT8_ARRAY: "B",
    DataType.UINT16_ARRAY: "H",
    DataType.UINT32_ARRAY: "I",
    DataType.UINT64_ARRAY: "Q",
    DataType.FLOAT_ARRAY: "f",
    DataType.DOUBLE_ARRAY: "d",
    DataType.DATETIME_ARRAY: "q",
}


@dataclass(frozen=True)
class Metric:
    """One Sparkplug metric.

    Attributes:
        name: Metric name (``/`` separates folders, as hosts show them).
        value: Python value; ``None`` is sent as ``is_null``.
        datatype: Sparkplug datatype.
        timestamp: Milliseconds since the epoch (UTC) when the value was taken.
        is_historical: Replayed from a buffer, not a live value.
        alias: Numeric alias a host may use instead of the name.
    """

    name: str
    value: Any
    datatype: DataType
    timestamp: int | None = None
    is_historical: bool = False
    alias: int | None = None


@dataclass(frozen=True)
class Payload:
    """A decoded Sparkplug B payload."""

    timestamp: int | None
    seq: int | None
    metrics: list[Metric] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first metric called ``name``."""
        for m in self.metrics:
            if m.name == name:
                return m.value
        return default

    def by_name(self) -> dict[str, Metric]:
        """Metrics by name (the last one wins for repeated names)."""
        return {m.name: m for m in self.metrics}


def encode(
    metrics: Iterable[Metric], timestamp: int, seq: int | None, with_datatypes: bool = True
) -> bytes:
    """Serialise metrics into one payload.

    Args:
        metrics: The metrics, in order.
        timestamp: Payload timestamp, ms since the epoch.
        seq: Sequence number 0-255; ``None`` for NDEATH, which has none.
        with_datatypes: Send each metric's datatype (births, NDEATH); False for
            DATA messages, whose datatypes the host knows from the birth.

    Raises:
        InvalidInputError: A value that does not fit its datatype (naming the metric).
    """
    msg = _schema().Payload()
    msg.timestamp = timestamp
    if seq is not None:
        if not 0 <= seq <= 255:
            raise InvalidInputError("seq", f"Sparkplug seq runs 0-255, got {seq}")
        msg.seq = seq
    for m in metrics:
        out = msg.metrics.add()
        out.name = m.name
        if with_datatypes:
            out.datatype = int(m.datatype)
        if m.alias is not None:
            out.alias = m.alias
        if m.timestamp is not None:
            out.timestamp = m.timestamp
        if m.is_historical:
            out.is_historical = True
        if m.value is None:
            out.is_null = True
            continue
        try:
            _set_value(out, m.datatype, m.value)
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            raise InvalidInputError(
                m.name, f"{m.value!r} does not fit Sparkplug {m.datatype.name}: {exc}"
            ) from None
    return msg.SerializeToString()


def decode(
    data: bytes,
    datatypes: Mapping[str, DataType] | None = None,
    aliases: Mapping[int, str] | None = None,
) -> Payload:
    """Parse a payload.

    Args:
        data: The MQTT payload.
        datatypes: Datatype by metric name, from the birth, for metrics sent
            without one (DATA messages); others decode as ``UNKNOWN``.
        aliases: Metric name by alias, from the birth, for metrics sent by
            alias only (their ``name`` is filled in).

    Raises:
        InvalidInputError: Not a Sparkplug B protobuf payload.
    """
    msg = _schema().Payload()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
        raise InvalidInputError("payload", f"not a Sparkplug B payload: {exc}") from None
    known = datatypes or {}
    names = aliases or {}
    metrics = []
    for m in msg.metrics:
        alias = m.alias if m.HasField("alias") else None
        name = m.name or (names.get(alias, "") if alias is not None else "")
        declared = m.HasField("datatype")
        dt = _datatype(m.datatype) if declared else known.get(name, DataType.UNKNOWN)
        metrics.append(
            Metric(
                name=name,
                value=None if m.is_null else _get_value(m, dt),
                datatype=dt,
                timestamp=m.timestamp if m.HasField("timestamp") else None,
                is_historical=m.is_historical,
                alias=alias,
            )
        )
    return Payload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        metrics=metrics,
    )


def _datatype(code: int) -> DataType:
    try:
        return DataType(code)
    except ValueError:
        return DataType.UNKNOWN


def _set_value(out: Any, dt: DataType, value: Any) -> None:
    if dt in _INT32:
        v = _whole(value)
        bits = _INT32[dt]
        if not -(1 << (bits - 1)) <= v < 1 << (bits - 1):
            raise ValueError(f"outside the {bits}-bit signed range")
        out.int_value = v & 0xFFFFFFFF
    elif dt in _UINT32:
        v = _whole(value)
        if not 0 <= v < 1 << _UINT32[dt]:
            raise ValueError(f"outside the {_UINT32[dt]}-bit unsigned range")
        out.int_value = v
    elif dt in _INT64:
        v = _whole(value)
        if dt is DataType.UINT64 and v < 0:
            raise ValueError("negative")
        out.long_value = v & 0xFFFFFFFFFFFFFFFF
    elif dt is DataType.FLOAT:
        out.float_value = float(value)
    elif dt is DataType.DOUBLE:
        out.double_value = float(value)
    elif dt is DataType.BOOLEAN:
        out.boolean_value = bool(value)
    elif dt in _STRINGS:
        out.string_value = str(value)
    elif dt in (DataType.BYTES, DataType.FILE):
        out.bytes_value = bytes(value)
    elif dt in _PACKED:
        code = _PACKED[dt]
        items = list(value)
        if code in "bhiqBHIQ":
            items = [_whole(v) for v in items]
        out.bytes_value = struct.pack(f"<{len(items)}{code}", *items)
    elif dt is DataType.BOOLEAN_ARRAY:
        flags = [bool(v) for v in value]
        packed = bytearray((len(flags) + 7) // 8)
        for i, f in enumerate(flags):
            if f:
                packed[i // 8] |= 0x80 >> (i % 8)
        out.bytes_value = struct.pack("<I", len(flags)) + bytes(packed)
    elif dt is DataType.STRING_ARRAY:
        out.bytes_value = b"".join(str(v).encode() + b"\0" for v in value)
    else:
        raise ValueError(f"datatype {dt.name} is not supported by this encoder")


def _get_value(m: Any, dt: DataType) -> Any:
    kind = m.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(m, kind)
    if dt in _INT32:
        bits = 32
        return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
    if dt in (DataType.INT64, DataType.DATETIME):
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if dt in _PACKED and kind == "bytes_value":
        code = _PACKED[dt]
        n = len(raw) // struct.calcsize(code)
        return list(struct.unpack(f"<{n}{code}", raw[: n * struct.calcsize(code)]))
    if dt is DataType.BOOLEAN_ARRAY and kind == "bytes_value" and len(raw) >= 4:
        (n,) = struct.unpack("<I", raw[:4])
        bits = raw[4:]
        return [bool(bits[i // 8] & (0x80 >> (i % 8))) for i in range(min(n, 8 * len(bits)))]
    if dt is DataType.STRING_ARRAY and kind == "bytes_value":
        return [s.decode(errors="replace") for s in raw.split(b"\0")[:-1]]
    if kind in ("dataset_value", "template_value", "extension_value"):
        return None
    return raw


def _whole(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError("not a whole number")
        return int(value)
    return int(value)
