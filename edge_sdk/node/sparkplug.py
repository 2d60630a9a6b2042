"""The Sparkplug B 3.0 edge-node session: births, deaths, sequence numbers, host state.

What the specification asks of an edge node, and where it is done here:

* **Clean sessions.** The link connects with a clean session (MQTT 5
  ``clean_start`` and no session expiry; 3.1.1 ``clean_session``).
* **bdSeq.** Every CONNECT carries a will, NDEATH at QoS 1, not retained, whose
  only metric is ``bdSeq``. :meth:`SparkplugSession.will` runs just before each
  CONNECT (paho's ``on_pre_connect``), advances bdSeq (0-255, wrapping) and
  writes it to ``state_dir`` with fsync *before* the CONNECT leaves, so a node
  that restarts continues the sequence and a host can tell a stale NDEATH.
* **Subscribe, then birth.** NCMD, DCMD and the primary host's STATE are
  subscribed at QoS 1; the link calls :meth:`births` only after the SUBACK.
* **Births.** NBIRTH (seq 0, the connect's bdSeq, ``Node Control/Rebirth`` =
  false, every node metric) then one DBIRTH per device, at QoS 0, not retained.
* **seq.** One counter 0-255 (wrapping) across NBIRTH, DBIRTH, NDATA, DDATA
  and DDEATH; NDEATH has none. Numbers are taken and the message handed to
  paho under one lock, so the wire order is the seq order.
* **Rebirth.** An NCMD ``Node Control/Rebirth`` = true stops data (the pump
  waits on the same lock), resends NBIRTH and DBIRTHs with seq reset and the
  *same* bdSeq, without reconnecting.
* **Intentional stop.** DDEATH, then NDEATH, then DISCONNECT.
* **Primary host.** With ``primary_host`` set, no birth is sent until
  ``spBv1.0/STATE/{host}`` says ``online``; STATE messages with a timestamp
  older than the newest seen are ignored. When the host goes ``offline`` the
  node stops sending data (it keeps producing it into the outbox) and births
  again when the host is back. The 3.0 specification has the node disconnect
  instead; pausing keeps the node's commands and OTA path up, and the host
  sees the same thing: fresh births, then the buffered data.

Reliability: Sparkplug data goes at QoS 0 over a clean session, so it is never
queued by the broker. Every DATA message is first committed to the node's
outbox (:mod:`edge_sdk.node.outbox`) and sent only while the node is born.
What was produced while the link was down, or before the current births, is
sent with ``is_historical`` = true on every metric, oldest first, keeping the
time the value was produced. After an unclean disconnect the rows written in
the last ``replay_s`` seconds are sent again (as historical): bytes in a dead
socket's buffer are lost without notice at QoS 0. Results carry
``Result/Id``, the outbox sequence number, so a consumer can drop the copies.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from .._fs import write_atomic
from ..errors import ConfigError, InvalidInputError
from ..mqtt.rows import Row
from ..mqtt.scheme import HOLD, Hold, Message, Will
from ..mqtt.sparkplug.codec import DataType, Metric, Payload, decode, encode
from ..mqtt.sparkplug.metrics import (
    BD_SEQ,
    REBIRTH,
    ROLLBACK,
    TELEMETRY_INTERVAL,
    Triple,
    alert_metrics,
    result_metrics,
    sensor_rows,
    telemetry_metrics,
)
from ..mqtt.sparkplug.topics import NAMESPACE, MessageType, now_ms, parse_topic, state_topic, topic
from ..mqtt.topics import Inbound, Outbound, dumps
from .outbox import Outgoing, Priority
from .schemes import JsonNodeScheme, Received

log = logging.getLogger(__name__)


class BdSeq:
    """The birth/death sequence number, persisted so it survives restarts.

    The file holds the bdSeq of the last CONNECT. :meth:`advance` is called
    before every CONNECT and returns the next value (0 on the very first).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value: int | None = self._read()

    def _read(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read the Sparkplug bdSeq file {self.path}: {exc}") from None
        try:
            value = int(text)
        except ValueError:
            log.warning("bdSeq file %s holds %r; starting again at 0", self.path, text)
            return None
        return value if 0 <= value <= 255 else None

    def advance(self) -> int:
        """Take the next bdSeq and make it durable (write, fsync, rename)."""
        value = 0 if self.value is None else (self.value + 1) % 256
        write_atomic(self.path, f"{value}\n".encode("ascii"), mode=0o644)
        self.value = value
        return value


class SparkplugSession:
    """Sparkplug state of one edge node, as the scheme its link calls (thread-safe).

    The link calls :meth:`will` before each CONNECT, :meth:`render` for each
    stored row, :meth:`births` after each SUBACK (and on a rebirth), :meth:`lost`
    on a disconnect and :meth:`goodbye` before an intentional one; the node
    calls :meth:`row` for what it produces and :meth:`receive` for what arrives.

    Args:
        group: Sparkplug group id.
        node: Edge node id.
        device: Device id of the served model.
        state_dir: Where bdSeq is persisted.
        node_metrics: Returns the node metrics of a birth (without bdSeq and
            controls).
        device_metrics: Returns the model device's metrics of a birth.
        telemetry_interval: Returns the current telemetry period (seconds).
        json: The node's JSON topics: errors, OTA and status stay there.
        primary_host: Host id whose STATE gates births (None: no gating).
        sensor_sources: ``node/device`` ids (same group) whose DDATA carry sensor readings.
    """

    clean_session = True

    def __init__(
        self,
        group: str,
        node: str,
        device: str,
        state_dir: Path,
        node_metrics: Callable[[], list[Triple]],
        device_metrics: Callable[[], list[Triple]],
        telemetry_interval: Callable[[], float],
        json: JsonNodeScheme,
        primary_host: str | None = None,
        sensor_sources: list[str] | None = None,
    ) -> None:
        self.group = group
        self.node = node
        self.device = device
        self.primary_host = primary_host
        self.bd_seq = BdSeq(state_dir / "sparkplug-bdseq")
        self._node_metrics = node_metrics
        self._device_metrics = device_metrics
        self._telemetry_interval = telemetry_interval
        self._json = json
        self._lock = threading.RLock()
        self._seq = 0
        self._born = False
        self._birthing: int | None = None  # the timestamp of births handed to the link
        self._birth_ms = 0
        self._host_online = primary_host is None
        self._host_ts = -1
        self._sources = [tuple(s.split("/", 1)) for s in sensor_sources or []]
        # per source device, from its DBIRTH: alias -> name, name -> datatype
        self._aliases: dict[tuple[str, str], dict[int, str]] = {}
        self._types: dict[tuple[str, str], dict[str, DataType]] = {}
        self._errors_topic = json.topic(Outbound.ERRORS)
        self.births_sent = 0

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [
            *self._json.subscriptions(),
            (topic(self.group, MessageType.NCMD, self.node), 1),
            (topic(self.group, MessageType.DCMD, self.node, "+"), 1),
        ]
        if self.primary_host:
            subs.append((state_topic(self.primary_host), 1))
        for node, device in self._sources:
            subs.append((topic(self.group, MessageType.DBIRTH, node, device), 0))
            subs.append((topic(self.group, MessageType.DDATA, node, device), 0))
        return subs

    def topic(self, kind: MessageType, device: bool = False) -> str:
        return topic(self.group, kind, self.node, self.device if device else None)

    @property
    def born(self) -> bool:
        return self._born

    # -- the link's calls ----------------------------------------------------------------
    def will(self) -> Will:
        """The NDEATH will of the CONNECT about to be sent (advances bdSeq first)."""
        with self._lock:
            self._born = False
            self.bd_seq.advance()
            return self._death()

    def _death(self) -> Will:
        bd = self.bd_seq.value or 0
        payload = encode([Metric(BD_SEQ, bd, DataType.INT64)], now_ms(), seq=None)
        return Will(self.topic(MessageType.NDEATH), payload, qos=1, retain=False)

    def lost(self) -> None:
        with self._lock:
            self._born = False
            self._birthing = None
            # After a reconnect the host's (retained) STATE must say online again.
            self._host_online = self.primary_host is None

    def goodbye(self) -> list[Message]:
        """Before an intentional disconnect: ``offline`` status, DDEATH, then NDEATH."""
        out = self._json.goodbye()
        with self._lock:
            if self._born:
                payload = encode([], now_ms(), self._next_seq())
                out.append(Message(self.topic(MessageType.DDEATH, device=True), payload, qos=0))
            self._born = False
            death = self._death()
        return [*out, Message(death.topic, death.payload, death.qos, death.retain)]

    def births(self) -> list[Message]:
        """NBIRTH and DBIRTH (seq from 0, same bdSeq); none while the primary host is away."""
        with self._lock:
            self._born = False  # data waits meanwhile (the link holds its publishing lock)
            self._birthing = None
            if not self._host_online:
                return []
            self._seq = 0
            ts = now_ms()
            controls: list[Triple] = [
                (BD_SEQ, int(DataType.INT64), self.bd_seq.value or 0),
                (REBIRTH, int(DataType.BOOLEAN), False),
                (ROLLBACK, int(DataType.BOOLEAN), False),
                (TELEMETRY_INTERVAL, int(DataType.DOUBLE), float(self._telemetry_interval())),
            ]
            nbirth = _metrics(controls + self._node_metrics(), ts, historical=False)
            dbirth = _metrics(self._device_metrics(), ts, historical=False)
            self._birthing = ts
            return [
                Message(self.topic(MessageType.NBIRTH), encode(nbirth, ts, 0), 0, numbered=True),
                Message(
                    self.topic(MessageType.DBIRTH, device=True),
                    encode(dbirth, ts, 1),
                    0,
                    numbered=True,
                ),
            ]

    def births_done(self, sent: bool) -> bool:
        """The link handed the births to paho (``sent``), or the connection dropped meanwhile."""
        with self._lock:
            ts, self._birthing = self._birthing, None
            if not sent or ts is None:
                return False  # the next connect (or the host's return) births again
            self._birth_ms = ts
            self._born = True
            self.births_sent += 1
        log.info("Sparkplug births sent (bdSeq %s)", self.bd_seq.value)
        return True  # the rows held back while not born go now, oldest first

    def sent(self, message: Message) -> None:
        if message.numbered:
            with self._lock:
                self._next_seq()  # a seq is used only by a message that left

    # -- data ------------------------------------------------------------------------------
    def row(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        """The outbox row of a result or alert (DDATA) or telemetry (NDATA); others as JSON.

        The row holds the metrics as JSON with the time they were produced; seq
        and ``is_historical`` are decided when it is sent (:meth:`render`).
        """
        ts = now_ms()
        device = self.topic(MessageType.DDATA, device=True)
        if kind is Outbound.RESULTS:

            def payload(seq: int) -> bytes:  # Result/Id is the row's own outbox seq
                return stored_payload(result_metrics(body, seq), ts)

            return Outgoing(device, payload, qos=0, priority=priority)
        if kind is Outbound.ALERTS:
            return Outgoing(
                device, stored_payload(alert_metrics(body), ts), qos=0, priority=priority
            )
        if kind is Outbound.TELEMETRY:
            triples = telemetry_metrics(body)
            return Outgoing(
                self.topic(MessageType.NDATA), stored_payload(triples, ts), qos=0, priority=priority
            )
        return self._json.row(kind, body, priority)

    def render(self, row: Row) -> Message | Hold:
        """How one outbox row leaves: :data:`HOLD` while not born.

        Sparkplug rows get their seq now and ``is_historical`` when produced
        before the current births; other rows (OTA status, errors) go out as
        stored, at QoS 1.
        """
        if not row.topic.startswith(NAMESPACE + "/"):
            return Message(row.topic, row.payload, max(1, row.qos), row.retain, accepted_only=True)
        with self._lock:
            if not self._born:
                return HOLD
            try:
                data = json.loads(row.payload)
                ts = int(data["ts"])
                metrics = _metrics(data["m"], ts, historical=ts < self._birth_ms)
                payload = encode(metrics, now_ms(), self._seq, with_datatypes=False)
            except (ValueError, KeyError, TypeError) as exc:  # InvalidInputError is a ValueError
                # Never let one row stop the pump: report it where errors go, at QoS 1,
                # and the row counts as delivered once that report is acknowledged.
                log.error("outbox row %d is not a valid Sparkplug message: %s", row.seq, exc)
                body = {"field": "sparkplug", "error": f"row {row.seq} not sent: {exc}"}
                report = json.dumps(body).encode()
                return Message(self._errors_topic, report, qos=1, accepted_only=True)
            return Message(row.topic, payload, qos=0, numbered=True, accepted_only=True)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # -- inbound -------------------------------------------------------------------------
    def on_state(self, host: str, payload: bytes) -> bool:
        """A primary host STATE message (JSON ``{"online": bool, "timestamp": ms}``).

        Returns:
            True when births are due now (the host is back).
        """
        if host != self.primary_host:
            return False
        try:
            body = json.loads(payload)
            online, ts = body["online"], int(body["timestamp"])
            if not isinstance(online, bool):
                raise TypeError("online is not a boolean")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed STATE message from %s: %s", host, exc)
            return False
        with self._lock:
            if ts < self._host_ts:
                log.info("ignoring a STATE message of %s older than the last one", host)
                return False
            self._host_ts = ts
            was = self._host_online
            self._host_online = online
            if not online:
                if self._born:
                    log.warning("primary host %s is offline: data waits in the outbox", host)
                self._born = False
                self._birthing = None
                return False
            return not (was and self._born)

    def receive(
        self, name: str, payload: bytes, sensors: Collection[str] | None
    ) -> Received | None:
        """Sort one incoming message (paho's network thread); None: not a Sparkplug topic.

        Returns:
            An NCMD's commands, a source device's DDATA as sensor rows (its
            metrics named in ``sensors``, by timestamp), births due (STATE), or
            nothing for anything else (a source's DBIRTH, whose aliases are
            kept, or a message not for this node).

        Raises:
            InvalidInputError: A malformed NCMD/DDATA, or a DCMD (this node's
                devices take no commands).
        """
        if not name.startswith(NAMESPACE):
            return None
        parsed = parse_topic(name)
        if parsed is None:
            return Received()
        if parsed.kind is MessageType.STATE:
            return Received(birth=self.on_state(parsed.host, payload))
        if parsed.group != self.group:
            return Received()
        if parsed.kind is MessageType.NCMD and parsed.node == self.node:
            return Received([(Inbound.CMD, dumps(cmd)) for cmd in self.commands(payload)])
        if parsed.kind is MessageType.DCMD and parsed.node == self.node:
            raise InvalidInputError(
                "DCMD", f"device {parsed.device!r} takes no commands; send NCMD to the node"
            )
        source = (parsed.node, parsed.device or "")
        if parsed.kind is MessageType.DBIRTH and source in self._sources:
            # Births declare names and aliases; readings come in DDATA (a birth's values
            # repeat the last ones, and feeding them again would shift the windows).
            msg = decode(payload)
            self._aliases[source] = {
                m.alias: m.name for m in msg.metrics if m.alias is not None and m.name
            }
            self._types[source] = {m.name: m.datatype for m in msg.metrics if m.name}
        elif parsed.kind is MessageType.DDATA and source in self._sources:
            msg = decode(payload, self._types.get(source), self._aliases.get(source))
            return _sensor_rows(sensor_rows(msg.metrics, msg.timestamp), sensors)
        return Received()

    def commands(self, payload: bytes) -> list[dict[str, Any]]:
        """Translate an NCMD payload into the node's commands.

        Raises:
            InvalidInputError: Not a Sparkplug payload, an unknown metric, or a
                value of the wrong type (the metric is named).
        """
        msg: Payload = decode(payload)
        out: list[dict[str, Any]] = []
        for m in msg.metrics:
            if m.name in (REBIRTH, ROLLBACK):
                if not isinstance(m.value, bool):
                    raise InvalidInputError(m.name, f"expected a Boolean, got {m.value!r}")
                if m.value:
                    out.append({"cmd": "rebirth" if m.name == REBIRTH else "rollback"})
            elif m.name == TELEMETRY_INTERVAL:
                if isinstance(m.value, bool) or not isinstance(m.value, int | float):
                    raise InvalidInputError(
                        m.name, f"expected seconds as a number, got {m.value!r}"
                    )
                out.append({"cmd": "telemetry_interval", "value": float(m.value)})
            else:
                raise InvalidInputError(
                    m.name or f"alias {m.alias}",
                    f"not a writable metric of this node; expected {REBIRTH}, {ROLLBACK} "
                    f"or {TELEMETRY_INTERVAL}",
                )
        return out


def _sensor_rows(rows: list[dict[str, Any]], sensors: Collection[str] | None) -> Received:
    """A source's readings as one ``sensors`` message: only the model's sensors, if any."""
    if sensors is None:
        return Received()  # this model takes no sensor windows
    known = set(sensors)
    kept = [
        {"t": r["t"], "values": {k: v for k, v in r["values"].items() if k in known}} for r in rows
    ]
    kept = [r for r in kept if r["values"]]
    return Received([(Inbound.SENSORS, dumps({"rows": kept}))] if kept else [])


def _metrics(triples: list[Any], ts: int, historical: bool) -> list[Metric]:
    return [
        Metric(str(name), value, DataType(int(dt)), timestamp=ts, is_historical=historical)
        for name, dt, value in triples
    ]


def stored_payload(triples: list[Triple], ts: int | None = None) -> bytes:
    """How a Sparkplug DATA row is kept in the outbox until it is sent."""
    return json.dumps({"ts": now_ms() if ts is None else ts, "m": triples}).encode()
