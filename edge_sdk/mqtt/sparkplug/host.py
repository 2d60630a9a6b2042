"""The host side of Sparkplug B, as far as ``edge-fleet`` needs it.

:class:`HostView` follows the births and deaths of a group's edge nodes the way
a Sparkplug host application must: it remembers each node's bdSeq from its
NBIRTH and ignores an NDEATH whose bdSeq does not match (the late will of a
connection the node has already replaced). Each message becomes a JSON-able
dict for the fleet tools; :func:`command` builds NCMD payloads.
"""

from __future__ import annotations

import threading
from typing import Any

from ...errors import InvalidInputError
from .codec import DataType, Metric, decode, encode
from .metrics import BD_SEQ, REBIRTH, ROLLBACK, TELEMETRY_INTERVAL
from .topics import MessageType, now_ms, parse_topic

#: ``edge-fleet command`` names -> the NCMD metric that carries them.
COMMANDS = {"rebirth": REBIRTH, "rollback": ROLLBACK, "telemetry_interval": TELEMETRY_INTERVAL}


def command(cmd: str, value: float | None = None) -> bytes:
    """The NCMD payload of a node command.

    Raises:
        InvalidInputError: Unknown command, or ``telemetry_interval`` without a value.
    """
    if cmd not in COMMANDS:
        raise InvalidInputError(
            "cmd", f"Sparkplug nodes take {', '.join(COMMANDS)} by NCMD, not {cmd!r}"
        )
    if cmd == "telemetry_interval":
        if value is None or value < 0:
            raise InvalidInputError("value", "telemetry_interval needs --value seconds >= 0")
        metric = Metric(TELEMETRY_INTERVAL, float(value), DataType.DOUBLE)
    else:
        metric = Metric(COMMANDS[cmd], True, DataType.BOOLEAN)
    return encode([metric], now_ms(), seq=None)


class HostView:
    """Decodes a group's Sparkplug traffic and tracks which births are current (thread-safe)."""

    def __init__(self) -> None:
        self._bd_seq: dict[tuple[str, str], int] = {}
        # datatypes declared by the births, per (group, node, device): DATA omits them
        self._types: dict[tuple[str, str, str | None], dict[str, DataType]] = {}
        self._lock = threading.Lock()

    def message(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """One message as ``{"type", "group", "node", "device", "seq", "metrics", ...}``.

        Returns None for what is not edge-node output (commands, STATE) and for
        a stale NDEATH. Undecodable payloads come back with ``"error"``.
        """
        parsed = parse_topic(topic)
        if parsed is None or parsed.kind in (
            MessageType.STATE,
            MessageType.NCMD,
            MessageType.DCMD,
        ):
            return None
        body: dict[str, Any] = {
            "schema": "sparkplug-b/3.0",
            "type": parsed.kind.value,
            "group": parsed.group,
            "node": parsed.node,
            "device": parsed.device,
        }
        where = (parsed.group, parsed.node, parsed.device)
        try:
            with self._lock:
                known = dict(self._types.get(where, {}))
            msg = decode(payload, known)
        except InvalidInputError as exc:
            body["error"] = str(exc)
            return body
        if parsed.kind in (MessageType.NBIRTH, MessageType.DBIRTH):
            with self._lock:
                self._types[where] = {m.name: m.datatype for m in msg.metrics if m.name}
        body.update(
            seq=msg.seq,
            ts=msg.timestamp,
            metrics={m.name: m.value for m in msg.metrics if m.name},
            historical=bool(msg.metrics) and all(m.is_historical for m in msg.metrics),
        )
        key = (parsed.group, parsed.node)
        bd = body["metrics"].get(BD_SEQ)
        with self._lock:
            if parsed.kind is MessageType.NBIRTH and isinstance(bd, int):
                self._bd_seq[key] = bd
            elif parsed.kind is MessageType.NDEATH:
                if bd != self._bd_seq.get(key, bd):
                    return None  # a will from an older connection: the node is alive
                self._bd_seq.pop(key, None)
        result_id = body["metrics"].get("Result/Id")
        if result_id is not None:
            body["id"] = f"{parsed.node}:{result_id}"
        return body
