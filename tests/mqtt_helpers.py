"""A small paho-mqtt 2.x test client that records what it receives.

Imported by ``tests/mqtt_fixtures.py`` (the ``mqtt_client_factory`` fixture)
and by test files that want the :class:`Recorder` type.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: Sensors of the TEP-size test bundles (``sensor_bundles``).
N_SENSORS = 52


def sensor_rows(count: int, seed: int = 0, sensors: int = N_SENSORS) -> np.ndarray:
    """``count`` rows of standard-normal sensor values (float32), the same for a seed."""
    return np.random.default_rng(seed).standard_normal((count, sensors)).astype(np.float32)


def feed_in_background(node: Any, rows: np.ndarray, pause_s: float = 0.004) -> threading.Thread:
    """Submit ``rows`` to ``node`` one by one (``t`` = row index) from a started thread.

    The caller joins the thread; a stream that outlives a broker kill or restart.
    """

    def feed() -> None:
        for t, row in enumerate(rows):
            node.submit_sensors({"t": t, "values": row.tolist()})
            time.sleep(pause_s)

    feeder = threading.Thread(target=feed, name="feed-sensors", daemon=True)
    feeder.start()
    return feeder


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any = None


class Recorder:
    """A connected paho client (network loop in a thread) recording received messages.

    Subscriptions made through :meth:`subscribe` are renewed on every reconnect
    that does not resume a session, as a real node must do.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str | None = None,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        clean_start: bool = True,
        session_expiry_s: int | None = None,
    ) -> None:
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:10]}"
        self.protocol = protocol
        self._cond = threading.Condition()
        self.messages: list[Received] = []
        self.connects = 0  # successful CONNACKs so far
        self.session_present: bool | None = None
        self._connected = False
        self._subs: dict[str, int] = {}
        self._acked: set[str] = set()
        self._mids: dict[int, list[str]] = {}

        if protocol == MQTTProtocolVersion.MQTTv5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=protocol,
                clean_session=clean_start,
            )
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

        kwargs: dict[str, Any] = {}
        if protocol == MQTTProtocolVersion.MQTTv5:
            kwargs["clean_start"] = clean_start
            if session_expiry_s is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry_s
                kwargs["properties"] = props
        self.client.connect(host, port, keepalive=10, **kwargs)
        self.client.loop_start()

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        with self._cond:
            self._connected = True
            self.connects += 1
            self.session_present = bool(flags.session_present)
            self._acked = set(self._subs) if self.session_present else set()
            pending = {t: q for t, q in self._subs.items() if t not in self._acked}
            self._cond.notify_all()
        for topic, qos in pending.items():
            self._send_subscribe(topic, qos)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), msg.qos, msg.retain, msg.properties)
            )
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self._cond:
            for topic in self._mids.pop(mid, []):
                self._acked.add(topic)
            self._cond.notify_all()

    def _send_subscribe(self, topic: str, qos: int) -> None:
        with self._cond:  # hold the lock so SUBACK cannot be handled before the mid is known
            _rc, mid = self.client.subscribe(topic, qos)
            if mid is not None:
                self._mids[mid] = [topic]

    # -- test API ------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.client_id}: timed out after {timeout:g} s waiting for {what} "
                        f"(connected={self._connected}, connects={self.connects}, "
                        f"{len(self.messages)} messages received)"
                    )
                self._cond.wait(left)

    def wait_ready(self, timeout: float = 10.0, min_connects: int = 1) -> None:
        """Wait until connected (at least ``min_connects`` times) with all subscriptions acked."""
        self._wait(
            lambda: (
                self._connected and self.connects >= min_connects and self._acked >= set(self._subs)
            ),
            timeout,
            f"connect #{min_connects} and SUBACKs for {sorted(self._subs)}",
        )

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK."""
        with self._cond:
            self._subs[topic] = qos
            self._acked.discard(topic)
        self._send_subscribe(topic, qos)
        self.wait_ready(timeout)

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = 10.0
    ) -> None:
        """Publish and wait until it is acknowledged (QoS >= 1) or written (QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"{self.client_id}: publish to {topic!r} not acknowledged")

    def wait_for(
        self, predicate_or_count: int | Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``count`` messages arrived or ``predicate(messages)`` holds; return a copy."""
        if isinstance(predicate_or_count, int):
            count = predicate_or_count

            def ready() -> bool:
                return len(self.messages) >= count

            what = f"{count} messages"
        else:
            predicate = predicate_or_count

            def ready() -> bool:
                return predicate(self.messages)

            what = "the expected messages"
        self._wait(ready, timeout, what)
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread (idempotent)."""
        self.client.disconnect()
        self.client.loop_stop()


def tls_material(root: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with cryptography.

    Returns ``{"ca", "cert", "key"}``: PEM files in ``root`` (mosquitto's ``cafile``,
    ``certfile``, ``keyfile``; clients verify the server with ``ca``).
    """
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("edge test CA"))
        .issuer_name(name("edge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
