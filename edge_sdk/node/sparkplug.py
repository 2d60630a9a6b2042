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
  subscribed at QoS 1; the link calls :meth:`birth` only after the SUBACK.
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import write_atomic
from ..errors import ConfigError, InvalidInputError
from ..mqtt.link import MqttLink, Will
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
from ..mqtt.topics import Outbound
from .outbox import Outgoing, Priority, Stored

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessageInfo

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
    """Sparkplug state of one edge node (thread-safe).

    Args:
        group: Sparkplug group id.
        node: Edge node id.
        device: Device id of the served model.
        state_dir: Where bdSeq is persisted.
        node_metrics: Returns the node metrics of a birth (without bdSeq and
            controls).
        device_metrics: Returns the model device's metrics of a birth.
        telemetry_interval: Returns the current telemetry period (seconds).
        errors_topic: Where a row that cannot be encoded is reported instead (JSON, QoS 1).
        primary_host: Host id whose STATE gates births (None: no gating).
        sensor_sources: ``node/device`` ids (same group) whose DDATA carry sensor readings.
    """

    def __init__(
        self,
        group: str,
        node: str,
        device: str,
        state_dir: Path,
        node_metrics: Callable[[], list[Triple]],
        device_metrics: Callable[[], list[Triple]],
        telemetry_interval: Callable[[], float],
        errors_topic: str,
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
        self._lock = threading.RLock()
        self._seq = 0
        self._born = False
        self._birth_ms = 0
        self._host_online = primary_host is None
        self._host_ts = -1
        self._link: MqttLink | None = None
        self._sources = [tuple(s.split("/", 1)) for s in sensor_sources or []]
        # per source device, from its DBIRTH: alias -> name, name -> datatype
        self._aliases: dict[tuple[str, str], dict[int, str]] = {}
        self._types: dict[tuple[str, str], dict[str, DataType]] = {}
        self._errors_topic = errors_topic
        self.births = 0

    # -- wiring --------------------------------------------------------------------------
    def attach(self, link: MqttLink) -> None:
        self._link = link

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [
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

    # -- connect / disconnect ------------------------------------------------------------
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

    def on_disconnect(self) -> None:
        with self._lock:
            self._born = False
            # After a reconnect the host's (retained) STATE must say online again.
            self._host_online = self.primary_host is None

    def goodbye(self) -> Will:
        """Before an intentional disconnect: DDEATH now; returns the NDEATH to send last."""
        with self._lock:
            if self._born and self._link is not None:
                payload = encode([], now_ms(), self._next_seq())
                self._link.publish_info(self.topic(MessageType.DDEATH, device=True), payload, qos=0)
            self._born = False
            return self._death()

    # -- births --------------------------------------------------------------------------
    def birth(self) -> bool:
        """Publish NBIRTH and DBIRTH (seq from 0, same bdSeq); False when not possible now."""
        link = self._link
        with self._lock:
            if link is None or not link.connected or not self._host_online:
                self._born = False
                return False
            self._born = False  # data waits on this lock meanwhile
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
            sent = link.publish_info(
                self.topic(MessageType.NBIRTH), encode(nbirth, ts, self._next_seq()), qos=0
            ) and link.publish_info(
                self.topic(MessageType.DBIRTH, device=True),
                encode(dbirth, ts, self._next_seq()),
                qos=0,
            )
            if not sent:
                return False  # the link dropped meanwhile: the next connect births again
            self._birth_ms = ts
            self._born = True
            self.births += 1
        log.info("Sparkplug births sent (bdSeq %s)", self.bd_seq.value)
        link.rescan()  # the rows held back while not born go now, oldest first
        return True

    # -- data ------------------------------------------------------------------------------
    def data_row(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        """The outbox row of a result or alert (DDATA) or telemetry (NDATA).

        The row holds the metrics as JSON with the time they were produced; seq
        and ``is_historical`` are decided when it is sent (:meth:`send`).
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
        raise ValueError(f"{kind.value} messages are not Sparkplug data")

    def send(self, row: Stored) -> MQTTMessageInfo | None:
        """The link's pump hook: publish one outbox row (None: hold it, and the rows after it).

        Sparkplug rows get their seq now and ``is_historical`` when produced
        before the current births; other rows (OTA status, errors) go out as
        stored, at QoS 1.
        """
        link = self._link
        if link is None:
            return None
        if not row.topic.startswith(NAMESPACE + "/"):
            return link.publish_info(row.topic, row.payload, qos=max(1, row.qos), retain=row.retain)
        with self._lock:
            if not self._born:
                return None
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
                return link.publish_info(self._errors_topic, json.dumps(body).encode(), qos=1)
            info = link.publish_info(row.topic, payload, qos=0)
            if info is not None:
                self._next_seq()  # a seq is used only by a message that left
            return info

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    # -- inbound -------------------------------------------------------------------------
    def on_state(self, host: str, payload: bytes) -> None:
        """A primary host STATE message (JSON ``{"online": bool, "timestamp": ms}``)."""
        if host != self.primary_host:
            return
        try:
            body = json.loads(payload)
            online, ts = body["online"], int(body["timestamp"])
            if not isinstance(online, bool):
                raise TypeError("online is not a boolean")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed STATE message from %s: %s", host, exc)
            return
        with self._lock:
            if ts < self._host_ts:
                log.info("ignoring a STATE message of %s older than the last one", host)
                return
            self._host_ts = ts
            was = self._host_online
            self._host_online = online
            if not online:
                if self._born:
                    log.warning("primary host %s is offline: data waits in the outbox", host)
                self._born = False
                return
            if was and self._born:
                return
        self.birth()

    def receive(self, name: str, payload: bytes) -> tuple[str, list[dict[str, Any]]]:
        """Sort one incoming Sparkplug message (paho's network thread).

        Returns:
            ``("commands", [...])`` for an NCMD, ``("sensors", rows)`` for a
            source device's DDATA (every numeric metric by timestamp; the node
            keeps its sensors), ``("", [])`` for anything handled here (STATE,
            a source's DBIRTH, whose aliases are kept) or not for this node.

        Raises:
            InvalidInputError: A malformed NCMD/DDATA, or a DCMD (this node's
                devices take no commands).
        """
        parsed = parse_topic(name)
        if parsed is None:
            return "", []
        if parsed.kind is MessageType.STATE:
            self.on_state(parsed.host, payload)
            return "", []
        if parsed.group != self.group:
            return "", []
        if parsed.kind is MessageType.NCMD and parsed.node == self.node:
            return "commands", self.commands(payload)
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
            return "sensors", sensor_rows(msg.metrics, msg.timestamp)
        return "", []

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


def _metrics(triples: list[Any], ts: int, historical: bool) -> list[Metric]:
    return [
        Metric(str(name), value, DataType(int(dt)), timestamp=ts, is_historical=historical)
        for name, dt, value in triples
    ]


def stored_payload(triples: list[Triple], ts: int | None = None) -> bytes:
    """How a Sparkplug DATA row is kept in the outbox until it is sent."""
    return json.dumps({"ts": now_ms() if ts is None else ts, "m": triples}).encode()
