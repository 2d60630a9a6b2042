"""Setting up a paho client: the broker's reconnect, credentials and TLS; a paho fix."""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import TYPE_CHECKING, Any

from .._optional import require

if TYPE_CHECKING:
    from paho.mqtt.client import Client

    from .config import BrokerConfig


def properties(packet: str, **values: Any) -> Any:
    """MQTT 5 properties of a ``packet`` type (``"CONNECT"``, ``"PUBLISH"``)."""
    props_mod = require("paho.mqtt.properties", "MQTT")
    packets = require("paho.mqtt.packettypes", "MQTT")
    props = props_mod.Properties(getattr(packets.PacketTypes, packet))
    for name, value in values.items():
        setattr(props, name, value)
    return props


def configure(client: Client, broker: BrokerConfig) -> None:
    """Apply the broker config's reconnect delays, credentials and TLS to ``client``."""
    client.reconnect_delay_set(
        min_delay=max(1, int(broker.reconnect_min_s)),
        max_delay=max(1, int(broker.reconnect_max_s)),
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.effective_password())
    if broker.tls:
        client.tls_set(
            ca_certs=str(broker.ca) if broker.ca else None,
            certfile=str(broker.cert) if broker.cert else None,
            keyfile=str(broker.key) if broker.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )


def no_delay(sock: Any) -> None:
    """Send each MQTT packet at once (``TCP_NODELAY``); paho leaves Nagle's algorithm on.

    With Nagle on, a small packet written while an earlier one is unacknowledged
    waits for the peer's delayed ACK (40 ms on Linux): a node that sends its
    PUBACKs and then a ``results`` PUBLISH paid ~40-50 ms per batch on loopback
    (benchmarks/fraud_node.py). Sockets that are not TCP (a websocket wrapper)
    are left as they are.
    """
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    with contextlib.suppress(OSError):  # not a TCP socket (a Unix socket): nothing to turn off
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def accept_bom_in_properties() -> None:
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
