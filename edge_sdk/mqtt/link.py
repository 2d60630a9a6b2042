"""One MQTT client for a node or a fleet tool: paho-mqtt 2.x, reconnects, an outbox pump.

Stored rows go out through :mod:`edge_sdk.mqtt.pump` (its delivery guarantees);
the link connects in the background and paho reconnects with back-off.

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
the broker refuses MQTT 5, never answers it, or closes the connection on it;
:mod:`edge_sdk.mqtt.handshake` decides (and keeps ``connect_error`` and
``refused_subscriptions``: why the broker said no, with its reason code).

The topic scheme (:mod:`edge_sdk.mqtt.scheme`) is a strategy the link calls: the
will before each CONNECT, how each stored row leaves (or waits), the births
after each SUBACK, what to say before an intentional DISCONNECT.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._optional import require
from .capabilities import BrokerCapabilities, BrokerProbe
from .config import BrokerConfig
from .delivery import Delivery, LinkStats
from .failover import Members
from .handshake import Handshake
from .paho_setup import accept_bom_in_properties, configure, properties
from .pump import Pump
from .rows import DefaultPump, PumpSettings, Row, RowStore
from .scheme import HOLD, Message, PlainScheme, Scheme, Will
from .topics import check_topic

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage, MQTTMessageInfo

__all__ = ["Delivery", "LinkStats", "MqttLink", "Will"]

log = logging.getLogger(__name__)


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
        on_connect: Called (network thread) after every successful connect and
            subscribe, before the scheme's births, with ``session_present``.
        outbox: Pumped to the broker when given.
        outbox_config: Flow-control and replay settings of the pump.
        scheme: The topic scheme the link calls (will, rows, births, goodbye);
            default :class:`~edge_sdk.mqtt.scheme.PlainScheme`.
        probe: Learn the broker's capabilities on the first connect, before
            the link is ready (:mod:`edge_sdk.mqtt.capabilities`).
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        on_message: Callable[[str, bytes, Any], None] | None = None,
        subscriptions: list[tuple[str, int]] | None = None,
        on_connect: Callable[[bool], None] | None = None,
        outbox: RowStore | None = None,
        outbox_config: PumpSettings | None = None,
        on_delivery: Callable[[str, bytes, Any, Delivery], None] | None = None,
        scheme: Scheme | None = None,
        probe: BrokerProbe | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._on_message_cb = on_message
        self._on_delivery_cb = on_delivery
        self._scheme: Scheme = scheme if scheme is not None else PlainScheme()
        self._clean_session = self._scheme.clean_session
        # Acknowledging late only helps where the broker keeps the unacked message.
        self._manual_ack = on_delivery is not None and not self._clean_session
        self._connection = 0  # bumped on every CONNACK (network thread)
        self._subscriptions = list(subscriptions or [])
        self._on_connect_cb = on_connect
        self.stats = LinkStats()
        self._cond = threading.Condition()
        # Every publish the scheme numbers happens under this lock (see edge_sdk.mqtt.scheme).
        self._wire = threading.RLock()
        settings = outbox_config or DefaultPump()
        self._inflight_window = settings.inflight
        self._pump = (
            Pump(outbox, settings, self.stats, lambda: self.connected, self._send_row, self._cond)
            if outbox is not None
            else None
        )
        self._clean_stop = False
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._handshake = Handshake(broker.protocol, self._fall_back, self._stopping)
        self._members = Members(broker, self.stats, self._connect_async, self._stopping)
        self._client_lock = threading.Lock()  # the fallback swaps the client; stop() must see it
        self._sub_mid: int | None = None
        self.probe = probe
        self._connack_props: Any = None
        self._session_present = False
        self._client: Client = self._make_client()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> MqttLink:
        """Connect in the background (returns at once, even with the broker down)."""
        self._connect_async()
        self._client.loop_start()
        if self._pump is not None:
            self._pump.start(f"{self.client_id}-outbox")
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (and subscribed) or ``timeout`` passes."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, flush_s: float = 2.0) -> None:
        """Disconnect cleanly (no last will), after in-flight rows and the scheme's goodbye.

        Args:
            flush_s: How long to wait for in-flight acknowledgements.
        """
        deadline = time.monotonic() + flush_s
        pump = self._pump
        while (
            pump is not None and self.connected and pump.awaiting() and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        self._stopping.set()
        if pump is not None:
            pump.stop()
        if self.connected:
            self._say_goodbye(deadline)
        if pump is not None:
            pump.flush_acks()
        with self._client_lock:
            self._clean_stop = True
            self._client.disconnect()
            self._client.loop_stop()

    def _say_goodbye(self, deadline: float) -> None:
        """Publish the scheme's goodbye in order, waiting for the last one's acknowledgement."""
        with self._wire:
            infos = [
                self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                for m in self._scheme.goodbye()
            ]
        if infos:
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: the will covers it
                infos[-1].wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))

    def birth(self) -> bool:
        """Publish the scheme's births now (after a connect, a rebirth, a model swap).

        Returns:
            True when every birth was handed to paho (False: not connected, or
            the scheme is not ready to be born, e.g. waiting for its host).
        """
        with self._wire:
            ok = True
            for msg in self._scheme.births():
                info = self.publish_info(msg.topic, msg.payload, msg.qos, msg.retain)
                if info is None:
                    ok = False
                    break
                self._scheme.sent(msg)
            go = self._scheme.births_done(ok)
        if go:
            self.rescan()  # the rows held back while not born go now, oldest first
        return ok

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
    def connect_error(self) -> str | None:
        """The last connect failure in words with the broker's code; None once connected."""
        return self._handshake.connect_error

    @property
    def refused_subscriptions(self) -> dict[str, str]:
        """Topic filter -> why the broker refused it (its SUBACK reason code)."""
        return dict(self._handshake.refused_subscriptions)

    @property
    def capabilities(self) -> BrokerCapabilities | None:
        """What the broker does (with ``probe``, once the first probe finished)."""
        return self.probe.capabilities if self.probe is not None else None

    @property
    def _protocol(self) -> str:
        return self._handshake.protocol

    @property
    def is_v5(self) -> bool:
        return self._protocol != "3.1.1"

    def properties(self, **values: Any) -> Any:
        """MQTT 5 PUBLISH properties (None on 3.1.1)."""
        return properties("PUBLISH", **values) if self.is_v5 else None

    def wake(self) -> None:
        """Tell the pump that new rows are waiting."""
        if self._pump is not None:  # only the pump waits on the condition
            self._pump.wake()  # remembered when the pump is busy: it queries once more

    def rescan(self) -> None:
        """Tell the pump to look at every pending row again (held rows may go now)."""
        if self._pump is not None:
            self._pump.rescan()

    # -- paho --------------------------------------------------------------------------------
    def _make_client(self) -> Client:
        mqtt = require("paho.mqtt.client", "MQTT (install the [mqtt] extra)")
        accept_bom_in_properties()
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
        client.on_socket_open = self._handshake.on_socket_open
        client.on_connect_fail = self._members.wrap_connect_fail(self._handshake.on_connect_fail)
        client.on_pre_connect = self._on_pre_connect
        client.max_inflight_messages_set(self._inflight_window)
        client.max_queued_messages_set(0)
        configure(client, self.broker)
        self.stats.protocol = "5" if v5 else "3.1.1"
        return client

    def _connect_async(self) -> None:
        kwargs: dict[str, Any] = {"keepalive": self.broker.keepalive_s}
        if self._protocol != "3.1.1":
            expiry = (
                {}
                if self._clean_session
                else {"SessionExpiryInterval": self.broker.session_expiry_s}
            )
            kwargs["clean_start"] = self._clean_session
            kwargs["properties"] = properties("CONNECT", **expiry)
        self._client.connect_async(*self._members.current, **kwargs)

    def _on_pre_connect(self, client: Client, userdata: Any) -> None:
        will = self._scheme.will()  # Sparkplug: a new bdSeq, durable before the CONNECT leaves
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _on_connect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return  # a late CONNACK to the client that the fallback replaced
        if not self._handshake.connack(reason):
            return  # refused: the handshake logged why, and falls back where it should
        self._connection += 1
        self._connack_props = properties
        self._session_present = bool(getattr(flags, "session_present", False))
        subs = self._handshake.subscribable(self._subscriptions, properties)
        if subs:
            # Ready only once the broker confirmed the subscriptions (_on_subscribe):
            # a message sent to the node right after "connected" must not be lost.
            _, self._sub_mid = client.subscribe(subs)
        else:
            self._subscribed(client)

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        if mid != self._sub_mid:
            if self.probe is not None:
                self.probe.suback(mid, reasons)
            return
        self._handshake.subacks(reasons)
        self._subscribed(client)

    def _subscribed(self, client: Client) -> None:
        """Ready now, or (``probe``) once the broker's capabilities are known and accepted."""
        if self.probe is None:
            self._ready()
            return
        conn, version = self._connection, self._handshake.version
        self.probe.start(client, version, self._connack_props, lambda no: self._probed(conn, no))

    def _probed(self, conn: int, refusal: str | None) -> None:
        client = self._client
        if conn != self._connection or not client.is_connected() or self._stopping.is_set():
            return  # that connection is gone; the next one checks the capabilities again
        if refusal is not None:
            self._handshake.refuse(refusal)
            self._clean_stop = True  # no reconnect: this broker lacks what the caller needs
            client.disconnect()
            return
        self._ready()

    def _ready(self) -> None:
        with self._cond:
            self.stats.connected = True
            self.stats.connects += 1
            if self._pump is not None:
                self._pump.reconnected()
            self._connected.set()
            self._cond.notify_all()
        if self._on_connect_cb is not None:
            self._on_connect_cb(self._session_present)
        self.birth()

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
            self._handshake.fell_back(self._subscriptions)
            self._client = self._make_client()
            self._connect_async()
            self._client.loop_start()

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return  # the MQTT 5 client that the fallback replaced
        self._handshake.closed(flags, reason)  # before a CONNACK: a broker that cannot parse v5?
        with self._cond:
            was = self._connected.is_set()
            self._connected.clear()
            self.stats.connected = False
            if was:
                self.stats.disconnects += 1
            if self._pump is not None:
                self._pump.lost(clean=self._clean_stop)
        if was and not self._clean_stop:
            log.warning("lost the broker (%s); results wait in the outbox", reason)
        self._scheme.lost()
        if not self._clean_stop:  # an intentional disconnect reconnects nowhere
            self._members.lost(reason)  # a cluster: paho reconnects to the next member

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        if self.probe is not None and self.probe.message(msg.topic, bytes(msg.payload)):
            return
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
        if self._pump is not None:
            self._pump.puback()

    # -- the pump ------------------------------------------------------------------------------
    def _send_row(self, row: Row) -> MQTTMessageInfo | None:
        """The pump's hook: publish one row as the scheme renders it (None: held back)."""
        with self._wire:
            msg = self._scheme.render(row)
            if msg is HOLD:
                return None
            assert isinstance(msg, Message)
            if msg.accepted_only:
                info = self.publish_info(msg.topic, msg.payload, msg.qos, msg.retain)
            else:
                info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info is not None:
                self._scheme.sent(msg)
            return info
