"""A link's connect attempts: the MQTT version it speaks, why a connect or subscribe failed.

:class:`Handshake` watches every CONNECT the link's paho client sends (paho's
``on_socket_open``, ``on_connect_fail``, ``on_connect``, ``on_disconnect``) and
keeps, in words with the broker's code:

* ``connect_error``: the last connect failure ("not authorised (CONNACK 0x87)",
  "connection refused by host:port", "the broker closed the connection during
  the MQTT 5 CONNECT"); None once connected;
* ``refused_subscriptions``: topic filter -> the SUBACK's reason
  ("shared subscriptions not supported (SUBACK 0x9E)").

Each is logged once when it changes, not on every retry.

``protocol: auto`` connects with MQTT 5 and falls back to 3.1.1, for good, on
one of three signals, only while no MQTT 5 CONNACK has ever arrived (once one
has, the link never falls back):

* the broker refuses MQTT 5 in its CONNACK (3.1.1 return code 1, or MQTT 5's
  0x84);
* it accepted the TCP connection but sent no CONNACK within
  :data:`CONNACK_TIMEOUT_S`. A 3.1.1-only broker such as amqtt parses an MQTT 5
  CONNECT that carries properties (ours always carries Session Expiry Interval)
  as a 3.1.1 one, reads the property bytes as a string length and waits for
  bytes that never come. A live MQTT 5 broker answers a CONNECT in
  milliseconds; if the timeout ever downgraded one, 3.1.1 still works with it;
* it closed the connection after the TCP connect and before any CONNACK, on
  :data:`CLOSES_BEFORE_FALLBACK` consecutive MQTT 5 attempts (RabbitMQ 3.10:
  "MQTT cannot parse a frame ... unparseable payload"). One close is not
  enough: a broker that is starting or stopping, or a load balancer whose
  backend is down, also accepts a TCP connection and drops it unanswered. Two
  in a row, a reconnect delay apart (at least a second) with no CONNACK in
  between, is what a broker that cannot parse MQTT 5 does every time, and
  costs that one delay. Any CONNACK resets the count.

Each MQTT 5 attempt while the version is undecided is logged (INFO), and so is
the decision (WARNING).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from .paho_setup import no_delay

__all__ = [
    "CLOSES_BEFORE_FALLBACK",
    "CONNACK_TIMEOUT_S",
    "Handshake",
    "describe_reason",
]

log = logging.getLogger("edge_sdk.mqtt.link")

#: MQTT 5 CONNACK "Unsupported Protocol Version"; MQTT 3.1.1 uses return code 1.
_UNSUPPORTED_PROTOCOL = (0x84, 1)
#: ``auto``: seconds without a CONNACK after the TCP (and TLS) connection is up
#: before deciding the broker does not understand our MQTT 5 CONNECT.
CONNACK_TIMEOUT_S = 5.0
#: ``auto``: consecutive MQTT 5 CONNECTs closed unanswered before falling back.
CLOSES_BEFORE_FALLBACK = 2

#: MQTT 5 reason codes (CONNACK, SUBACK, PUBACK, DISCONNECT) in words.
_REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorised",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def describe_reason(reason: Any, packet: str) -> str:
    """A reason code in words with its value: ``"not authorised (CONNACK 0x87)"``.

    Args:
        reason: paho's ``ReasonCode`` (or a bare int).
        packet: The packet that carried it (``"CONNACK"``, ``"SUBACK"``).
    """
    value = int(getattr(reason, "value", reason))
    words = _REASONS.get(value) or str(reason).lower()
    return f"{words} ({packet} 0x{value:02X})"


class Handshake:
    """What a link knows of its connect attempts (paho's callbacks feed it).

    Args:
        protocol: ``"5"``, ``"3.1.1"`` or ``"auto"`` (see the module notes).
        fall_back: Replaces the MQTT 5 client by a 3.1.1 one; called on its
            own thread, never paho's.
        stopping: Set when the link stops: no fallback then.
    """

    def __init__(
        self, protocol: str, fall_back: Callable[[], None], stopping: threading.Event
    ) -> None:
        self.protocol = protocol
        self.v5_confirmed = False  # an MQTT 5 CONNACK arrived: auto never falls back then
        self.connect_error: str | None = None
        self.refused_subscriptions: dict[str, str] = {}
        self._fall_back = fall_back
        self._stopping = stopping
        self._attempt: object | None = None  # token of the CONNECT waiting for its CONNACK
        self._where = ""
        self._closes = 0  # consecutive MQTT 5 CONNECTs closed before any CONNACK
        self._sent: list[tuple[str, int]] = []  # the subscriptions of the last SUBSCRIBE

    @property
    def undecided(self) -> bool:
        """``auto`` and no MQTT 5 CONNACK yet: the version may still fall back."""
        return self.protocol == "auto" and not self.v5_confirmed

    @property
    def version(self) -> str:
        """The version of the CONNECTs sent now: ``"5"`` or ``"3.1.1"``."""
        return "3.1.1" if self.protocol == "3.1.1" else "5"

    def socket_open(self, host: str, port: int) -> None:
        """A TCP (and TLS) connection is up; the CONNECT leaves next (paho's thread)."""
        self._where = f"{host}:{port}"
        token = object()
        self._attempt = token
        if not self.undecided:
            log.debug("MQTT %s CONNECT to %s", self.version, self._where)
            return
        log.info(
            "MQTT 5 CONNECT to %s (protocol auto: MQTT 3.1.1 if the broker refuses it)",
            self._where,
        )
        timer = threading.Timer(CONNACK_TIMEOUT_S, self._connack_overdue, args=(token,))
        timer.daemon = True
        timer.start()

    def connect_failed(self, host: str, port: int, exc: BaseException | None) -> None:
        """The TCP or TLS connection failed (paho's ``on_connect_fail``)."""
        if isinstance(exc, ConnectionRefusedError):
            self._set_error(f"connection refused by {host}:{port}")
        elif exc is not None:
            self._set_error(f"cannot connect to {host}:{port}: {exc}")
        else:
            self._set_error(f"cannot connect to {host}:{port}")

    def connack(self, reason: Any) -> bool:
        """A CONNACK arrived; True when it accepts the connection.

        A refusal of MQTT 5 while undecided starts the fallback.
        """
        self._attempt = None
        self._closes = 0
        if reason.is_failure:
            if self.undecided and reason.value in _UNSUPPORTED_PROTOCOL:
                log.warning(
                    "broker at %s refused MQTT 5 (%s); falling back to MQTT 3.1.1",
                    self._where,
                    describe_reason(reason, "CONNACK"),
                )
                self._start_fallback()
            self._set_error(describe_reason(reason, "CONNACK"))
            return False
        if self.protocol == "auto":
            self.v5_confirmed = True
        self._set_error(None)
        return True

    def closed(self, flags: Any = None, reason: Any = None) -> None:
        """The connection closed (paho's ``on_disconnect``); counts it when before any CONNACK."""
        if self._attempt is None:
            if getattr(flags, "is_disconnect_packet_from_server", False) and getattr(
                reason, "is_failure", False
            ):
                self._set_error(f"the broker disconnected: {describe_reason(reason, 'DISCONNECT')}")
            return  # connected before, or refused by CONNACK: not an unanswered CONNECT
        self._attempt = None
        # While auto is still deciding this is expected of a 3.1.1-only broker: the
        # fallback's own warning below says what happened.
        self._set_error(
            f"the broker closed the connection during the MQTT {self.version} CONNECT",
            level=logging.INFO if self.undecided else logging.WARNING,
        )
        if not self.undecided or self._stopping.is_set():
            return
        self._closes += 1
        if self._closes < CLOSES_BEFORE_FALLBACK:
            log.info(
                "broker at %s closed the connection before CONNACK to an MQTT 5 CONNECT; "
                "trying MQTT 5 once more (a restarting broker does this too)",
                self._where,
            )
            return
        log.warning(
            "broker at %s closed the connection before CONNACK to an MQTT 5 CONNECT "
            "%d times in a row; falling back to MQTT 3.1.1",
            self._where,
            self._closes,
        )
        self._start_fallback()

    def fell_back(self, subscriptions: list[tuple[str, int]]) -> None:
        """The link now speaks 3.1.1 for good (called by the link's fallback)."""
        self.protocol = "3.1.1"
        self._attempt = None
        self._closes = 0
        shared = [t for t, _ in subscriptions if t.startswith("$share/")]
        if shared:
            log.warning(
                "MQTT 3.1.1 has no shared subscriptions: %s are ordinary topics on this broker",
                ", ".join(shared),
            )

    def on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """paho's ``on_socket_open``: see :meth:`socket_open`; packets leave unbatched."""
        no_delay(sock)
        self.socket_open(client.host, client.port)

    def on_connect_fail(self, client: Any, userdata: Any) -> None:
        """paho's ``on_connect_fail``, which paho calls inside its ``except OSError``."""
        self.connect_failed(client.host, client.port, sys.exc_info()[1])

    def subscribable(
        self, subscriptions: list[tuple[str, int]], props: Any
    ) -> list[tuple[str, int]]:
        """What to SUBSCRIBE to after this CONNACK: no ``$share/...`` where it says none.

        A broker whose CONNACK says Shared Subscription Available = 0 may
        answer one with a DISCONNECT (ejabberd: 0x9E), so it is not sent; it
        counts as refused.
        """
        self._sent = list(subscriptions)
        if getattr(props, "SharedSubscriptionAvailable", 1):
            return list(self._sent)
        for topic, _ in subscriptions:
            if topic.startswith("$share/"):
                self._refused(
                    topic,
                    "shared subscriptions not supported (CONNACK: Shared Subscription Available 0)",
                )
        self._sent = [(t, q) for t, q in subscriptions if not t.startswith("$share/")]
        return list(self._sent)

    def subacks(self, reasons: Any) -> None:
        """The SUBACK of the last SUBSCRIBE: remember (and log once) each refused filter."""
        for (topic, _), reason in zip(self._sent, reasons, strict=False):
            if getattr(reason, "is_failure", False):
                self._refused(topic, describe_reason(reason, "SUBACK"))
            elif self.refused_subscriptions.pop(topic, None) is not None:
                log.info("broker granted the subscription to %s", topic)

    def _refused(self, topic: str, words: str) -> None:
        if self.refused_subscriptions.get(topic) != words:
            log.error("broker refused the subscription to %s: %s", topic, words)
        self.refused_subscriptions[topic] = words

    def _set_error(self, error: str | None, level: int = logging.WARNING) -> None:
        if error == self.connect_error:
            return
        if error is not None:
            log.log(level, "cannot connect to the broker: %s", error)
        elif self.connect_error is not None:
            log.info("connected to the broker at %s (MQTT %s)", self._where, self.version)
        self.connect_error = error

    def _connack_overdue(self, token: object) -> None:
        if token is not self._attempt or self._stopping.is_set() or not self.undecided:
            return  # answered, or a newer attempt owns the timer
        log.warning(
            "broker at %s sent no CONNACK to an MQTT 5 CONNECT within %g s; "
            "falling back to MQTT 3.1.1",
            self._where,
            CONNACK_TIMEOUT_S,
        )
        self._set_error(f"no CONNACK to the MQTT 5 CONNECT within {CONNACK_TIMEOUT_S:g} s")
        self._fall_back()

    def _start_fallback(self) -> None:
        threading.Thread(target=self._fall_back, daemon=True, name="mqtt-fallback").start()

    def refuse(self, reason: str) -> None:
        """The link gives up on this broker: a feature its user needs is missing."""
        log.error("cannot use the broker at %s: %s", self._where, reason)
        self.connect_error = reason
