"""The JSON topic scheme: every topic and payload the node and the fleet exchange.

All topics live under ``edge/{group}/{node}/``:

In (subscribed at QoS 1):

* ``sensors``: sensor rows, ``{"t": 12.5, "values": [..N..]}`` (or values by
  sensor name), or ``{"rows": [...]}`` for several;
* ``events``: events (transactions) for a bundle with an event graph, one
  ``{"id": ..., "t": ..., ...}`` or ``{"events": [...]}`` (:mod:`edge_sdk.node.events`);
* ``infer``: request/response, ``{"inputs": {"x": [[...]]}}``; the reply goes
  to the MQTT 5 response topic with its correlation data (3.1.1: the
  ``reply_to`` / ``correlation`` fields);
* ``cmd``: ``{"cmd": "telemetry_interval", "value": 5}``, ``telemetry``,
  ``rollback``, ``rebirth``;
* ``ota/offer`` (retained): an update offer (:class:`edge_sdk.mqtt.transfer.Offer`);
* ``ota/chunk``: one chunk, ``EDGC`` + 4-byte header length + JSON header + bytes.

Out (QoS 1, through the outbox unless noted):

* ``results``: one result per window; ``alerts``: ``raised`` / ``cleared`` by
  the model's decision rule (anomaly score above its threshold for K windows in
  a row, see :mod:`edge_sdk.node.alarm`), or, for a bundle without one, when
  the predicted class leaves / returns to normal; ``errors``: a rejected input,
  naming the field and what was expected;
* ``telemetry``: every N seconds, latency percentiles, queue depth, outbox,
  CPU and memory; ``ota/status``: each step of a model update, with the reason
  of a refusal;
* ``ota/get`` (direct): chunk requests ``{"deployment": id, "chunks": [3, 4]}``;
* ``status`` (direct, retained): birth ``online`` on connect, last will
  ``lost``, ``offline`` on a clean stop.

Group-wide messages (commands and offers for every node) use the node name
``_all``: ``edge/{group}/_all/cmd``. Node and group names therefore may not
start with ``_`` and may not contain MQTT wildcards or ``/``.

Every JSON message the node sends carries ``schema`` (``edge-sdk/1``), ``type``,
``node``, ``group``, ``ts`` and, for messages that go through the outbox, a
unique ``id`` (``{node}:{seq}``) and ``seq`` so the cloud side can put them in
order and drop duplicates (QoS 1 is at-least-once).

This module is the only place that knows the JSON topic strings. A node with
``scheme: sparkplug`` sends results, alerts and telemetry as Sparkplug B under
``spBv1.0/`` instead (:mod:`edge_sdk.node.sparkplug`) and keeps these topics for
everything else.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInputError

SCHEMA = "edge-sdk/1"
ROOT = "edge"
GROUP_WIDE = "_all"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK_MAGIC = b"EDGC"
#: Deepest nesting of arrays/objects accepted in an incoming JSON message (the
#: deepest real one, ``{"rows": [{"values": [...]}]}`` or ``{"inputs": {"x":
#: [B, N, F]}}``, is 5; numpy refuses more than 64 dimensions anyway).
MAX_JSON_DEPTH = 64
_STEP = np.zeros(256, dtype=np.int32)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
#: The MQTT limit on a topic, in bytes of UTF-8.
MAX_TOPIC_BYTES = 65535
# Code points a topic may not hold: NUL and C0/C1 controls, surrogates, non-characters.
_BAD_TOPIC_CHAR = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane | 0xFFFE) + chr(plane | 0xFFFF) for plane in range(0, 0x110000, 0x10000))
    + "]"
)


class Inbound(StrEnum):
    """What an incoming message is."""

    SENSORS = "sensors"
    EVENTS = "events"
    INFER = "infer"
    CMD = "cmd"
    OTA_OFFER = "ota/offer"
    OTA_CHUNK = "ota/chunk"


class Outbound(StrEnum):
    """What an outgoing message is."""

    RESULTS = "results"
    ALERTS = "alerts"
    ERRORS = "errors"
    TELEMETRY = "telemetry"
    OTA_STATUS = "ota/status"
    OTA_GET = "ota/get"
    STATUS = "status"


def check_name(kind: str, value: str) -> str:
    """Validate a group or node name for use in a topic.

    Raises:
        ConfigError: Empty, too long, leading ``_``, or characters outside
            ``[A-Za-z0-9_.-]``.
    """
    if not _NAME.match(value):
        raise ConfigError(
            f"{kind} {value!r} is not a valid name: use 1-64 characters from "
            "[A-Za-z0-9_.-], starting with a letter or digit (no '/', '+', '#')"
        )
    return value


@dataclass(frozen=True)
class JsonScheme:
    """Topics and payloads of one node (or, with ``node="+"``, of a fleet view)."""

    group: str
    node: str
    name: str = "json"

    def __post_init__(self) -> None:
        check_name("group", self.group)
        if self.node != "+":
            check_name("node id", self.node)

    # -- topics --------------------------------------------------------------------------
    def topic(self, kind: Outbound | Inbound, node: str | None = None) -> str:
        """Full topic of ``kind`` for this node (or ``node``)."""
        return f"{ROOT}/{self.group}/{node or self.node}/{kind.value}"

    def subscriptions(self) -> list[tuple[str, int]]:
        """What a node subscribes to (its own and the group-wide inbound topics)."""
        subs = []
        for node in (self.node, GROUP_WIDE):
            for kind in Inbound:
                if node == GROUP_WIDE and kind in (
                    Inbound.SENSORS,
                    Inbound.EVENTS,
                    Inbound.OTA_CHUNK,
                ):
                    continue  # sensors, events and chunks are always addressed to one node
                subs.append((self.topic(kind, node), 1))
        return subs

    def classify(self, topic: str) -> Inbound | None:
        """Return what an incoming topic is, or None when it is not for this node."""
        prefix_own = f"{ROOT}/{self.group}/{self.node}/"
        prefix_all = f"{ROOT}/{self.group}/{GROUP_WIDE}/"
        for prefix in (prefix_own, prefix_all):
            if topic.startswith(prefix):
                try:
                    return Inbound(topic[len(prefix) :])
                except ValueError:
                    return None
        return None

    @staticmethod
    def parse(topic: str) -> tuple[str, str, str] | None:
        """Split ``edge/{group}/{node}/{kind}`` into ``(group, node, kind)``."""
        parts = topic.split("/", 3)
        if len(parts) != 4 or parts[0] != ROOT:
            return None
        return parts[1], parts[2], parts[3]

    # -- payloads ------------------------------------------------------------------------
    def envelope(self, kind: Outbound, body: dict[str, Any], seq: int | None = None) -> bytes:
        """Encode an outgoing JSON message; ``seq`` adds the de-duplication ``id``."""
        msg: dict[str, Any] = {
            "schema": SCHEMA,
            "type": kind.value,
            "node": self.node,
            "group": self.group,
            "ts": round(time.time(), 6),
        }
        if seq is not None:
            msg["id"] = f"{self.node}:{seq}"
            msg["seq"] = seq
        msg.update(body)
        return dumps(msg)


def dumps(msg: dict[str, Any]) -> bytes:
    """Compact JSON; NaN/inf are not valid JSON, so they are refused here too."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()


def loads(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode an incoming JSON object; every way a payload can be bad is one error.

    Raises:
        InvalidInputError: (field ``payload``) Oversized, not UTF-8, not JSON,
            not an object, nested deeper than :data:`MAX_JSON_DEPTH`, holding
            NaN/Infinity literals or an integer of more than 4,300 digits
            (CPython's limit). Nothing else escapes: a hostile payload costs
            only itself.
    """
    if len(payload) > max_bytes:
        raise InvalidInputError(
            "payload", f"{len(payload)} bytes exceeds the limit of {max_bytes} bytes"
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("payload", f"not valid JSON: not UTF-8 ({exc})") from None
    # Depth first, before the decoder sees it: CPython's C decoder recurses once per
    # level and relies on the interpreter's recursion limit, which libraries raise (torch
    # and TensorFlow do); with a raised limit 100,000 nested "[" overflow the C stack and
    # the process dies with SIGSEGV (measured in the test suite) instead of RecursionError.
    if _depth_exceeds(text, MAX_JSON_DEPTH):
        raise InvalidInputError(
            "payload", f"nested deeper than {MAX_JSON_DEPTH} levels of arrays/objects"
        )
    try:
        msg = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # a nesting the count above missed cannot crash either
        raise InvalidInputError(
            "payload", f"nested deeper than {MAX_JSON_DEPTH} levels of arrays/objects"
        ) from None
    except InvalidInputError:
        raise  # from the hooks: already names what is wrong
    except ValueError as exc:
        # JSONDecodeError, or int()'s refusal of more than 4,300 digits (whose advice to
        # call sys.set_int_max_str_digits is for the node's code, not for the sender).
        reason = str(exc).split("; use sys.set_int_max_str_digits")[0]
        raise InvalidInputError("payload", f"not valid JSON: {reason}") from None
    if not isinstance(msg, dict):
        raise InvalidInputError("payload", f"expected a JSON object, got {type(msg).__name__}")
    return msg


def _refuse_constant(name: str) -> float:
    raise InvalidInputError("payload", f"{name} is not allowed (readings must be finite)")


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when JSON ``text`` nests arrays/objects more than ``limit`` deep.

    Linear in the payload whatever it holds (a regex over strings went quadratic
    on ``"\\"\\"\\"...`` with no closing quote: 24 s for 80 kB). Brackets inside
    strings do not count: a quote opens or closes a string unless an odd run of
    backslashes precedes it. Exact for valid JSON; on invalid JSON it only decides
    which error the payload gets.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    b = np.frombuffer(text.encode(), dtype=np.uint8)
    pos = np.arange(b.size)
    # Index of the last byte that is not a backslash, at or before each position.
    last_plain = np.maximum.accumulate(np.where(b != ord("\\"), pos, -1))
    run_before = np.empty_like(pos)  # backslashes right before each position
    run_before[0] = 0
    run_before[1:] = pos[1:] - 1 - last_plain[:-1]
    quote = (b == ord('"')) & (run_before % 2 == 0)
    outside = np.cumsum(quote) % 2 == 0  # an even number of quotes so far: not in a string
    steps = _STEP[b] * outside
    return bool(np.cumsum(steps).max() > limit)


def finite(value: Any, field: str) -> float:
    """A finite float, or InvalidInputError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field, f"expected a number, got {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond the float range
        raise InvalidInputError(
            field, "expected a finite number, got an out-of-range integer"
        ) from None
    if not math.isfinite(out):
        raise InvalidInputError(field, f"expected a finite number, got {out}")
    return out


def check_topic(topic: Any, field: str = "topic") -> str:
    """A topic the node may publish to, or InvalidInputError naming ``field``.

    Every publish path calls this before handing a topic to paho: a topic the
    broker refuses as malformed makes it drop the connection, and paho re-sends
    an unacknowledged QoS 1 publish on every reconnect, so one bad topic would
    cut the node off for good. Refused, matching what mosquitto 2 disconnects
    for or what a published topic may not be: not a string, empty, more than
    :data:`MAX_TOPIC_BYTES` bytes in UTF-8, lone surrogates (not UTF-8), U+0000
    and other control characters (U+0001-U+001F, U+007F-U+009F), Unicode
    non-characters, the wildcards ``+`` and ``#``, and ``$`` system topics
    (``$SYS/...``: the broker's, not a client's).

    Raises:
        InvalidInputError: The topic is not publishable, naming ``field``.
    """
    if not isinstance(topic, str):
        raise InvalidInputError(field, f"expected a topic string, got {type(topic).__name__}")
    if not topic:
        raise InvalidInputError(field, "expected a non-empty topic string, got ''")
    bad = _BAD_TOPIC_CHAR.search(topic)
    if bad is not None:
        raise InvalidInputError(
            field,
            f"topic contains U+{ord(bad.group()):04X} at position {bad.start()}: "
            "control characters, NUL, surrogates and non-characters are not valid in a topic",
        )
    if "+" in topic or "#" in topic:
        raise InvalidInputError(
            field, "topic contains a wildcard ('+' or '#'), which a published topic may not"
        )
    if topic.startswith("$"):
        raise InvalidInputError(field, "topics starting with '$' belong to the broker")
    size = len(topic.encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        raise InvalidInputError(
            field, f"topic is {size} bytes in UTF-8; MQTT allows at most {MAX_TOPIC_BYTES}"
        )
    return topic


def encode_chunk(deployment: str, index: int, data: bytes) -> bytes:
    """One OTA chunk: magic, header length, JSON header, raw bytes."""
    header = dumps({"deployment": deployment, "index": index, "size": len(data)})
    return _CHUNK_MAGIC + struct.pack(">I", len(header)) + header + data


def decode_chunk(payload: bytes) -> tuple[str, int, bytes]:
    """Inverse of :func:`encode_chunk`.

    Raises:
        InvalidInputError: Not a chunk message, or a header that does not
            match the data length.
    """
    if len(payload) < 8 or payload[:4] != _CHUNK_MAGIC:
        raise InvalidInputError("chunk", "not an OTA chunk (missing EDGC header)")
    (hlen,) = struct.unpack(">I", payload[4:8])
    if 8 + hlen > len(payload):
        raise InvalidInputError("chunk", "header length runs past the end of the message")
    header = loads(payload[8 : 8 + hlen], max_bytes=4096)
    data = payload[8 + hlen :]
    try:
        deployment, index, size = header["deployment"], header["index"], header["size"]
    except KeyError as exc:
        raise InvalidInputError("chunk", f"header lacks {exc}") from None
    if not isinstance(index, int) or not isinstance(size, int) or size != len(data):
        raise InvalidInputError(
            "chunk", f"header says {size!r} bytes at index {index!r}, message has {len(data)}"
        )
    return str(deployment), index, data
