"""The node's MQTT connection: paho-mqtt 2.x, reconnects, and a flow-controlled outbox pump.

Delivery guarantees:

* Every message from the outbox is published at QoS 1 in ``seq`` order, at most
  ``inflight`` at a time; its row is marked delivered only when the broker's
  PUBACK arrives. A broker that is down, slow or unreachable just pauses the
  pump: rows wait on disk.
* paho re-sends its unacknowledged publishes itself after a reconnect, so the
  pump never publishes a row that is still in flight.
* A broker that crashes loses whatever it acknowledged but had not saved yet
  (mosquitto snapshots every ``autosave_interval``). So after any connection
  that ended without a clean DISCONNECT, the rows delivered in the last
  ``replay_s`` seconds are published again. Receivers drop the duplicates by
  message ``id``: delivery is at-least-once, never at-most-once.
* The node connects asynchronously and serves local inference while the broker
  is down; paho reconnects with exponential back-off.

Incoming messages (``on_delivery``): with a persistent session the link
acknowledges nothing itself (paho's ``manual_ack``). Each message comes with a
:class:`Delivery`, and the receiver calls :meth:`MqttLink.ack` once the message
is safe (the node: once its results and window state are committed to the
outbox). A message not acknowledged when the connection or the process dies is
redelivered by the broker from the node's session, with the DUP flag set.
An acknowledgement is sent only on the connection that received the message:
packet ids belong to a connection, so a late one after a reconnect could
acknowledge another message; the broker redelivers the old one instead. With
``clean_session`` (Sparkplug) the broker discards unacknowledged messages with
the connection, so paho acknowledges on receipt and :meth:`MqttLink.ack` does
nothing.

``protocol: auto`` connects with MQTT 5 and falls back to 3.1.1, for good, when
the broker refuses MQTT 5 in its CONNACK (3.1.1 return code 1, or MQTT 5's
0x84), or when it accepted the TCP connection but sent no CONNACK within
``_CONNACK_TIMEOUT_S``. The second case is real: a 3.1.1-only broker such as
amqtt parses an MQTT 5 CONNECT that carries properties (ours always carries
Session Expiry Interval) as a 3.1.1 one, reads the property bytes as a string
length and waits for bytes that never come. A live MQTT 5 broker answers a
CONNECT in milliseconds, so the timeout does not downgrade a slow v5 broker in
practice; if it ever did, 3.1.1 still works with it (minus MQTT 5 features).
Once an MQTT 5 CONNACK has arrived, the link never falls back.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._optional import require
from ..errors import InvalidInputError
from .config import BrokerConfig
from .rows import DefaultPump, PumpSettings, Row, RowStore
from .topics import check_topic

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage, MQTTMessageInfo

log = logging.getLogger(__name__)

#: MQTT 5 CONNACK "Unsupported Protocol Version"; MQTT 3.1.1 uses return code 1.
_UNSUPPORTED_PROTOCOL = (0x84, 1)
#: ``auto``: seconds without a CONNACK after the TCP (and TLS) connection is up
#: before deciding the broker does not understand our MQTT 5 CONNECT.
_CONNACK_TIMEOUT_S = 5.0
_PURGE_EVERY_S = 5.0


def _accept_bom_in_properties() -> None:
    """Let paho read U+FEFF in MQTT 5 string properties, as the spec requires.

    paho-mqtt (2.1/2.2) treats U+FEFF in a string property (a response topic,
    a user property) as a malformed packet and closes the connection. MQTT 5
    says the opposite ([MQTT-1.5.4-3]: it "MUST NOT be skipped over or stripped
    off by a packet receiver"), and mosquitto forwards it. So one message with
    such a response topic cut the node off for good: the broker redelivers the
    unacknowledged message from the persistent session on every reconnect.
    Installed once, and only where the installed paho refuses U+FEFF; NUL and
    surrogates stay malformed (mosquitto refuses them from the sender).
    """
    props = require("paho.mqtt.properties", "MQTT")
    original = props.readUTF
    if getattr(original, "accepts_bom", False):
        return
    try:
        original(b"\x00\x03\xef\xbb\xbf", 5)
        return  # this paho follows the spec already
    except Exception:  # the refusal this works around
        pass
    malformed = require("paho.mqtt.exception", "MQTT").MalformedPacket

    def read_utf(buffer: bytes, maxlen: int) -> tuple[str, int]:
        try:
            value: tuple[str, int] = original(buffer, maxlen)
        except malformed as exc:
            if "U+FEFF" not in str(exc):
                raise
            length = props.readInt16(buffer)
            text = bytes(buffer[2 : 2 + length]).decode("utf-8")  # its length was checked
            if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
                raise
            return text, length + 2
        return value

    read_utf.accepts_bom = True  # type: ignore[attr-defined]
    props.readUTF = read_utf  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Will:
    """Last-will message registered at connect."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Delivery:
    """One received message, to acknowledge with :meth:`MqttLink.ack` once it is safe.

    Attributes:
        mid: The MQTT packet id.
        qos: The QoS it arrived with (0 needs no acknowledgement).
        dup: The broker's DUP flag: it may have been delivered before.
        connection: Which connection of the link received it.
    """

    mid: int
    qos: int
    dup: bool
    connection: int


@dataclass
class LinkStats:
    """Counters of the link (read by telemetry)."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    replayed: int = 0
    rejected: int = 0
    inflight: int = 0
    protocol: str = ""
    refused_topics: int = 0  # outbox rows dropped: their topic is not publishable
    received: int = 0
    acks_sent: int = 0
    acks_stale: int = 0


class MqttLink:
    """One MQTT client for a node or a fleet tool.

    Args:
        broker: Where and how to connect.
        client_id: MQTT client identifier (stable: the broker keeps its session).
        on_message: Called from paho's network thread with ``(topic, payload,
            properties)``; must not block. Messages are acknowledged on receipt.
        on_delivery: Instead of ``on_message``: called with ``(topic, payload,
            properties, delivery)``; the receiver must call :meth:`ack` with
            every delivery once the message is safe (see the module notes).
        subscriptions: ``(topic filter, qos)`` subscribed on every connect.
        will: Last will, published by the broker if the link dies.
        on_connect: Called (network thread) after every successful connect and
            subscribe, with ``session_present``.
        outbox: Pumped to the broker when given.
        outbox_config: Flow-control and replay settings of the pump.
        clean_session: Start every connection with a clean session and no
            session expiry (Sparkplug requires it); default a persistent one.
        before_connect: Called before every CONNECT (paho's network thread);
            returns the will for that connection (Sparkplug's NDEATH, whose
            bdSeq changes per connect). Replaces ``will``.
        on_disconnect: Called (network thread) when a connection is lost or closed.
        sender: Publishes one outbox row for the pump and returns paho's
            handle, or None to hold the row back; later rows under the same
            first topic level are then held too, so each topic root keeps its
            order, until :meth:`rescan`. Default: the row as stored, at QoS 1.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        on_message: Callable[[str, bytes, Any], None] | None = None,
        subscriptions: list[tuple[str, int]] | None = None,
        will: Will | None = None,
        on_connect: Callable[[bool], None] | None = None,
        outbox: RowStore | None = None,
        outbox_config: PumpSettings | None = None,
        clean_session: bool = False,
        before_connect: Callable[[], Will] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        sender: Callable[[Row], MQTTMessageInfo | None] | None = None,
        on_delivery: Callable[[str, bytes, Any, Delivery], None] | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._on_message_cb = on_message
        self._on_delivery_cb = on_delivery
        # Acknowledging late only helps where the broker keeps the unacked message.
        self._manual_ack = on_delivery is not None and not clean_session
        self._connection = 0  # bumped on every CONNACK (network thread)
        self._subscriptions = list(subscriptions or [])
        self._will = will
        self._on_connect_cb = on_connect
        self._outbox = outbox
        self._ocfg: PumpSettings = outbox_config or DefaultPump()
        self._clean_session = clean_session
        self._before_connect = before_connect
        self._on_disconnect_cb = on_disconnect
        self._send_row = sender or self._publish_row
        self.stats = LinkStats()
        self._cond = threading.Condition()
        self._inflight: dict[int, MQTTMessageInfo] = {}  # outbox seq -> paho publish handle
        self._cursor = 0
        self._held: set[str] = set()  # topic roots with a row held back in this pass
        self._rescan = False  # start the next pass from the first pending row
        self._replay_needed = False
        self._clean_stop = False
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._pump_thread: threading.Thread | None = None
        self._protocol = broker.protocol
        self._v5_confirmed = False  # an MQTT 5 CONNACK arrived: auto never falls back then
        self._awaiting_connack: object | None = None  # token of the CONNECT waiting for CONNACK
        self._client_lock = threading.Lock()  # the fallback swaps the client; stop() must see it
        self._sub_mid: int | None = None
        self._session_present = False
        self._client: Client = self._make_client()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> MqttLink:
        """Connect in the background (returns at once, even with the broker down)."""
        self._connect_async()
        self._client.loop_start()
        if self._outbox is not None:
            self._pump_thread = threading.Thread(
                target=self._pump, name=f"{self.client_id}-outbox", daemon=True
            )
            self._pump_thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (and subscribed) or ``timeout`` passes."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, final: Will | Callable[[], Will] | None = None, flush_s: float = 2.0) -> None:
        """Disconnect cleanly (no last will), after in-flight rows and ``final`` are sent.

        Args:
            final: Published last, before disconnecting (e.g. an ``offline``
                status, or Sparkplug's NDEATH); a callable is called only when
                the link is still connected.
            flush_s: How long to wait for in-flight acknowledgements.
        """
        deadline = time.monotonic() + flush_s
        while self.connected and self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=5)
        if final is not None and self.connected:
            last = final() if callable(final) else final
            info = self._client.publish(last.topic, last.payload, qos=last.qos, retain=last.retain)
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: the will covers it
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
        self._flush_acks()
        with self._client_lock:
            self._clean_stop = True
            self._client.disconnect()
            self._client.loop_stop()

    # -- publishing outside the outbox -----------------------------------------------------
    def publish_now(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Any = None,
    ) -> bool:
        """Publish directly (not durable); False when not connected.

        For messages that are worthless later: chunk requests, replies to a
        requester that is itself online, births.
        """
        return self.publish_info(topic, payload, qos, retain, properties) is not None

    def publish_info(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Any = None,
    ) -> MQTTMessageInfo | None:
        """Like :meth:`publish_now`, returning paho's handle (None: not connected or refused).

        Raises:
            InvalidInputError: ``topic`` is not publishable (:func:`check_topic`);
                nothing is sent, so paho never holds it for re-sending.
        """
        check_topic(topic)
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return info if info.rc == 0 else None

    def publish_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> bool:
        """Publish directly and wait for the broker's acknowledgement (True when acked).

        Raises:
            InvalidInputError: ``topic`` is not publishable (:func:`check_topic`).
        """
        check_topic(topic)
        if not self.connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=timeout)
        return info.is_published()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Add a subscription (kept across reconnects)."""
        self._subscriptions.append((topic, qos))
        if self.connected:
            self._client.subscribe(topic, qos)  # its SUBACK is not waited for

    @property
    def is_v5(self) -> bool:
        return self._protocol != "3.1.1"

    def properties(self, **values: Any) -> Any:
        """MQTT 5 PUBLISH properties (None on 3.1.1)."""
        if not self.is_v5:
            return None
        props_mod = require("paho.mqtt.properties", "MQTT")
        packets = require("paho.mqtt.packettypes", "MQTT")
        props = props_mod.Properties(packets.PacketTypes.PUBLISH)
        for name, value in values.items():
            setattr(props, name, value)
        return props

    def wake(self) -> None:
        """Tell the pump that new rows are waiting."""
        with self._cond:
            self._cond.notify_all()

    def rescan(self) -> None:
        """Tell the pump to look at every pending row again (held rows may go now)."""
        with self._cond:
            self._rescan = True
            self._cond.notify_all()

    # -- paho --------------------------------------------------------------------------------
    def _make_client(self) -> Client:
        mqtt = require("paho.mqtt.client", "MQTT (install the [mqtt] extra)")
        _accept_bom_in_properties()
        v5 = self._protocol != "3.1.1"
        kwargs: dict[str, Any] = {
            "callback_api_version": mqtt.CallbackAPIVersion.VERSION2,
            "client_id": self.client_id,
            "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        }
        if not v5:
            kwargs["clean_session"] = self._clean_session
        client = mqtt.Client(**kwargs, manual_ack=self._manual_ack)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        if self._protocol == "auto":
            client.on_socket_open = self._on_socket_open
        if self._before_connect is not None:
            client.on_pre_connect = self._on_pre_connect
        client.max_inflight_messages_set(self._ocfg.inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(
            min_delay=max(1, int(self.broker.reconnect_min_s)),
            max_delay=max(1, int(self.broker.reconnect_max_s)),
        )
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.effective_password())
        if self.broker.tls:
            client.tls_set(
                ca_certs=str(self.broker.ca) if self.broker.ca else None,
                certfile=str(self.broker.cert) if self.broker.cert else None,
                keyfile=str(self.broker.key) if self.broker.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if self._will is not None:
            client.will_set(
                self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain
            )
        self.stats.protocol = "5" if v5 else "3.1.1"
        return client

    def _connect_async(self) -> None:
        kwargs: dict[str, Any] = {"keepalive": self.broker.keepalive_s}
        if self._protocol != "3.1.1":
            props_mod = require("paho.mqtt.properties", "MQTT")
            packets = require("paho.mqtt.packettypes", "MQTT")
            props = props_mod.Properties(packets.PacketTypes.CONNECT)
            if not self._clean_session:
                props.SessionExpiryInterval = self.broker.session_expiry_s
            kwargs["clean_start"] = self._clean_session
            kwargs["properties"] = props
        self._client.connect_async(self.broker.host, self.broker.port, **kwargs)

    def _on_pre_connect(self, client: Client, userdata: Any) -> None:
        assert self._before_connect is not None
        will = self._before_connect()
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _on_socket_open(self, client: Client, userdata: Any, sock: Any) -> None:
        """``auto`` only: time the CONNACK of the CONNECT about to be sent on ``sock``."""
        if self._protocol != "auto" or self._v5_confirmed:
            return
        token = object()
        self._awaiting_connack = token
        timer = threading.Timer(_CONNACK_TIMEOUT_S, self._connack_overdue, args=(token,))
        timer.daemon = True
        timer.start()

    def _connack_overdue(self, token: object) -> None:
        if token is not self._awaiting_connack or self._stopping.is_set():
            return  # answered, or a newer attempt owns the timer
        log.warning(
            "broker sent no CONNACK to an MQTT 5 CONNECT within %g s; falling back to MQTT 3.1.1",
            _CONNACK_TIMEOUT_S,
        )
        self._fall_back()

    def _on_connect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return  # a late CONNACK to the client that the fallback replaced
        self._awaiting_connack = None
        if reason.is_failure:
            if (
                self._protocol == "auto"
                and not self._v5_confirmed
                and reason.value in _UNSUPPORTED_PROTOCOL
            ):
                log.warning("broker refused MQTT 5; falling back to MQTT 3.1.1")
                threading.Thread(target=self._fall_back, daemon=True).start()
                return
            log.warning("broker refused the connection: %s", reason)
            return
        if self._protocol == "auto":
            self._v5_confirmed = True
        self._connection += 1
        self._session_present = bool(getattr(flags, "session_present", False))
        if self._subscriptions:
            # Ready only once the broker confirmed the subscriptions (_on_subscribe):
            # a message sent to the node right after "connected" must not be lost.
            _, self._sub_mid = client.subscribe(list(self._subscriptions))
        else:
            self._ready()

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        if mid != self._sub_mid:
            return
        for (topic, _), reason in zip(self._subscriptions, reasons, strict=False):
            if getattr(reason, "is_failure", False):
                log.error("broker refused the subscription to %s: %s", topic, reason)
        self._ready()

    def _ready(self) -> None:
        with self._cond:
            self.stats.connected = True
            self.stats.connects += 1
            if self._replay_needed and self._outbox is not None:
                n = self._outbox.requeue_recent(self._ocfg.replay_s)
                self.stats.replayed += n
                if n:
                    log.info("re-sending %d recently delivered messages after a lost link", n)
            self._replay_needed = False
            self._rescan = True  # requeued and never-sent rows; in-flight ones are skipped
            self._connected.set()
            self._cond.notify_all()
        if self._on_connect_cb is not None:
            self._on_connect_cb(self._session_present)

    def _fall_back(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one (never from paho's network thread)."""
        with self._client_lock:
            if self._protocol != "auto" or self._clean_stop or self._stopping.is_set():
                return  # already fallen back (refusal and timeout can both fire), or stopping
            old = self._client
            old.loop_stop()
            sock = old.socket()
            if sock is not None:
                # The hung CONNECT's socket: closing it lets the broker drop the half-read packet.
                with contextlib.suppress(OSError):
                    sock.close()
            self._protocol = "3.1.1"
            self._awaiting_connack = None
            shared = [t for t, _ in self._subscriptions if t.startswith("$share/")]
            if shared:
                log.warning(
                    "MQTT 3.1.1 has no shared subscriptions: %s are ordinary topics on this broker",
                    ", ".join(shared),
                )
            self._client = self._make_client()
            self._connect_async()
            self._client.loop_start()

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return  # the MQTT 5 client that the fallback replaced
        # Closed before any CONNACK: not the "no answer" of a 3.1.1-only broker.
        self._awaiting_connack = None
        with self._cond:
            was = self._connected.is_set()
            self._connected.clear()
            self.stats.connected = False
            if was:
                self.stats.disconnects += 1
            if not self._clean_stop:
                self._replay_needed = True
        if was and not self._clean_stop:
            log.warning("lost the broker (%s); results wait in the outbox", reason)
        if self._on_disconnect_cb is not None:
            self._on_disconnect_cb()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        self.stats.received += 1
        props = getattr(msg, "properties", None)
        if self._on_delivery_cb is not None:
            delivery = Delivery(msg.mid, msg.qos, bool(msg.dup), self._connection)
            try:
                self._on_delivery_cb(msg.topic, bytes(msg.payload), props, delivery)
            except Exception:  # a handler bug must not kill paho's network thread
                log.exception("message handler failed on %s", msg.topic)
                self.ack(delivery)  # never held for ever: it would block the broker's window
            return
        if self._on_message_cb is None:
            return
        try:
            self._on_message_cb(msg.topic, bytes(msg.payload), props)
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("message handler failed on %s", msg.topic)

    def ack(self, *deliveries: Delivery | None) -> None:
        """Acknowledge received messages (PUBACK) now that they are safe; any thread.

        QoS 0 deliveries and None are ignored. A delivery from an earlier
        connection is not acknowledged (its packet id may name another message
        now): the broker redelivers it with the DUP flag, and the receiver drops
        it as a duplicate. Without manual acknowledgement this does nothing.
        """
        if not self._manual_ack:
            return
        for d in deliveries:
            if d is None or d.qos == 0:
                continue
            if d.connection != self._connection:
                self.stats.acks_stale += 1
                continue
            self._client.ack(d.mid, d.qos)
            self.stats.acks_sent += 1

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        # Runs under paho's message lock: only wake the pump (which never calls
        # paho while holding ``_cond``, so this cannot deadlock).
        if reason is not None and getattr(reason, "is_failure", False):
            self.stats.rejected += 1
            log.error("broker refused publish %d: %s", mid, reason)
        with self._cond:
            self._cond.notify_all()

    # -- the pump ------------------------------------------------------------------------------
    def _flush_acks(self) -> None:
        """Mark rows whose PUBACK arrived as delivered (one outbox transaction)."""
        with self._cond:
            done = [seq for seq, info in self._inflight.items() if info.is_published()]
            for seq in done:
                del self._inflight[seq]
            self.stats.inflight = len(self._inflight)
        if done and self._outbox is not None:
            self._outbox.ack(done)
            self.stats.acked += len(done)

    def _pump(self) -> None:
        assert self._outbox is not None
        window = self._ocfg.inflight
        last_purge = time.monotonic()
        while not self._stopping.is_set():
            with self._cond:
                self._cond.wait(timeout=0.1)
            self._flush_acks()
            if time.monotonic() - last_purge > _PURGE_EVERY_S:
                self._outbox.purge()
                last_purge = time.monotonic()
            while self.connected and not self._stopping.is_set():
                with self._cond:
                    if self._rescan:  # applied between passes, never under a batch in progress
                        self._rescan = False
                        self._cursor = 0
                        self._held.clear()
                    busy = set(self._inflight)
                    cursor = self._cursor
                room = window - len(busy)
                if room <= 0:
                    break
                rows = self._outbox.pending(after=cursor, limit=room + len(busy))
                rows = [r for r in rows if r.seq not in busy][:room]
                if not rows:
                    break
                for row in rows:
                    if self._refused(row):
                        continue
                    root = row.topic.split("/", 1)[0]
                    # Never call paho while holding _cond (see _on_publish). A row after a
                    # held one of the same topic root waits too: each root keeps its order.
                    info = None if root in self._held else self._send_row(row)
                    with self._cond:
                        self._cursor = max(self._cursor, row.seq)
                        if info is None:
                            self._held.add(root)
                        else:
                            self._inflight[row.seq] = info
                    if info is not None:
                        self.stats.published += 1
                self._flush_acks()

    def _refused(self, row: Row) -> bool:
        """Drop a stored row whose topic the broker would refuse (True), counted and logged.

        Sent, it would cost the connection, and paho would send it again on every
        reconnect. It is marked done in the outbox so the pump never retries it
        (a replay after a lost link may offer it once more: refused again).
        """
        try:
            check_topic(row.topic)
        except InvalidInputError as exc:
            assert self._outbox is not None
            self._outbox.ack([row.seq])
            self.stats.refused_topics += 1
            log.error("dropped outbox row %d, never publishable: %s", row.seq, exc)
            return True
        return False

    def _publish_row(self, row: Row) -> MQTTMessageInfo:
        return self._client.publish(row.topic, row.payload, qos=max(1, row.qos), retain=row.retain)
