"""``protocol: auto`` and the link's reason codes: real sockets, a real RabbitMQ 3.10, real nodes.

RabbitMQ 3.10 speaks MQTT 3.1.1 only and closes the socket on an MQTT 5
CONNECT ("MQTT cannot parse a frame ... unparseable payload"). ``auto`` must
fall back there (after two such closes in a row: one could be a restarting
broker), but never once an MQTT 5 CONNACK has been seen. The two socket tests
use a tiny TCP server that reads each CONNECT's protocol level and closes
(or answers once), so what the link sends is asserted, not inferred.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_helpers import Recorder
from paho.mqtt.enums import MQTTProtocolVersion

from edge_sdk.fleet.brokers import RabbitBroker, free_port
from edge_sdk.mqtt.config import BrokerConfig
from edge_sdk.mqtt.handshake import CLOSES_BEFORE_FALLBACK
from edge_sdk.mqtt.link import MqttLink

N_SENSORS, WINDOW = 52, 20
LINK_LOG = "edge_sdk.mqtt.link"


class ConnectRecorder:
    """A TCP server that records each CONNECT's protocol level (5 or 4 = 3.1.1) and closes.

    With ``accept_first``, the first CONNECT gets a successful MQTT 5 CONNACK
    before the close, as a broker that then restarts would.
    """

    def __init__(self, accept_first: bool = False) -> None:
        self.levels: list[int] = []
        self._accept_first = accept_first
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    data = conn.recv(256)
                    at = data.find(b"\x00\x04MQTT")
                    if at >= 0 and len(data) > at + 6:
                        self.levels.append(data[at + 6])
                        if self._accept_first and len(self.levels) == 1:
                            conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: accepted, no props
                            time.sleep(0.2)

    def wait_levels(self, n: int, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while len(self.levels) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.levels)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()


@pytest.fixture
def closing_server() -> Iterator[Callable[..., ConnectRecorder]]:
    made: list[ConnectRecorder] = []

    def make(accept_first: bool = False) -> ConnectRecorder:
        made.append(ConnectRecorder(accept_first))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _link(port: int, **opts: Any) -> MqttLink:
    cfg = BrokerConfig(url=f"mqtt://127.0.0.1:{port}", reconnect_min_s=1, reconnect_max_s=1, **opts)
    return MqttLink(cfg, "fallback-test")


def test_a_broker_that_closes_two_mqtt5_connects_in_a_row_gets_mqtt311(
    closing_server: Callable[..., ConnectRecorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    server = closing_server()
    link = _link(server.port).start()
    try:
        levels = server.wait_levels(CLOSES_BEFORE_FALLBACK + 1, timeout_s=10)
        assert levels[: CLOSES_BEFORE_FALLBACK + 1] == [5] * CLOSES_BEFORE_FALLBACK + [4]
        assert not link.is_v5
        assert (
            link.connect_error == "the broker closed the connection during the MQTT 3.1.1 CONNECT"
        )
    finally:
        link.stop(flush_s=0)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LINK_LOG]
    where = f"127.0.0.1:{server.port}"
    attempts = [
        m for lvl, m in messages if lvl == "INFO" and m.startswith(f"MQTT 5 CONNECT to {where}")
    ]
    assert len(attempts) == CLOSES_BEFORE_FALLBACK  # each MQTT 5 attempt is logged
    decisions = [m for lvl, m in messages if lvl == "WARNING" and "falling back to MQTT 3.1.1" in m]
    assert decisions == [
        f"broker at {where} closed the connection before CONNACK to an MQTT 5 CONNECT "
        f"{CLOSES_BEFORE_FALLBACK} times in a row; falling back to MQTT 3.1.1"
    ]
    # The closes that lead to the decision are expected of a 3.1.1 broker: INFO, not warnings.
    assert [m for lvl, m in messages if lvl == "WARNING" and "MQTT 5" in m] == decisions


def test_after_an_mqtt5_connack_closed_connections_never_make_it_fall_back(
    closing_server: Callable[..., ConnectRecorder],
) -> None:
    """A v5 broker that restarts (closes unanswered a few times) keeps its MQTT 5 clients."""
    server = closing_server(accept_first=True)
    link = _link(server.port).start()
    try:
        levels = server.wait_levels(CLOSES_BEFORE_FALLBACK + 2, timeout_s=10)
        assert len(levels) >= CLOSES_BEFORE_FALLBACK + 2
        assert set(levels) == {5} and link.is_v5
        assert link.connect_error == "the broker closed the connection during the MQTT 5 CONNECT"
    finally:
        link.stop(flush_s=0)


def test_a_refused_tcp_connection_is_named_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    port = free_port()
    link = _link(port).start()
    try:
        deadline = time.monotonic() + 5
        while link.connect_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(2.5)  # two more refused attempts (reconnect delay 1 s)
        assert link.connect_error == f"connection refused by 127.0.0.1:{port}"
    finally:
        link.stop(flush_s=0)
    warnings = [r for r in caplog.records if r.name == LINK_LOG and r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        f"cannot connect to the broker: connection refused by 127.0.0.1:{port}"
    ]


# -- RabbitMQ 3.10 -------------------------------------------------------------------------


def test_a_node_with_protocol_auto_on_rabbitmq_falls_back_and_delivers(
    rabbit_broker: RabbitBroker,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LINK_LOG)
    cloud = Recorder(rabbit_broker.host, rabbit_broker.port, protocol=MQTTProtocolVersion.MQTTv311)
    try:
        cloud.wait_ready()
        cloud.subscribe("edge/plant/auto-rmq/results")
        started = time.monotonic()
        node = make_node(
            rabbit_broker,
            sensor_bundles["v1"],
            node_id="auto-rmq",
            broker_opts={"protocol": "auto", "reconnect_max_s": 1},
        )
        assert time.monotonic() - started < 10
        assert node.link.stats.protocol == "3.1.1" and node.link.connect_error is None
        rows = np.random.default_rng(0).standard_normal((WINDOW + 2, N_SENSORS))
        for t, row in enumerate(rows.astype(np.float32)):
            node.submit_sensors({"t": t, "values": row.tolist()})
        got = cloud.wait_for(3, timeout=15)
    finally:
        cloud.close()
    assert sorted(json.loads(m.payload)["window"]["seq"] for m in got) == [0, 1, 2]
    where = f"{rabbit_broker.host}:{rabbit_broker.port}"
    logged = [r.getMessage() for r in caplog.records if r.name == LINK_LOG]
    assert any(m.startswith(f"MQTT 5 CONNECT to {where}") for m in logged)
    assert any(
        m.startswith(f"broker at {where} closed the connection before CONNACK")
        and m.endswith("falling back to MQTT 3.1.1")
        for m in logged
    )
