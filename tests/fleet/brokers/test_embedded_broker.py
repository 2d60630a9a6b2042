"""The embedded amqtt broker (MQTT 3.1.1 only) and ``protocol: auto`` against it.

mosquitto speaks MQTT 5, so the node's and the watcher's fallback from MQTT 5
to 3.1.1 is only exercised here: a real amqtt in a child process, a real
node, a real 3.1.1 subscriber. Skipped when amqtt (the ``[broker]`` extra) is
not installed.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import Runtime
from edge_sdk.errors import BackendUnavailableError, ConfigError
from edge_sdk.fleet.brokers import (
    EmbeddedBroker,
    LocalBroker,
    embedded_broker_available,
    find_mosquitto,
    start_local_broker,
)
from edge_sdk.fleet.brokers import installed as broker_mod
from edge_sdk.fleet.brokers.process import probe

needs_amqtt = pytest.mark.skipif(
    not embedded_broker_available(),
    reason='amqtt is not installed (pip install "edge-graph-sdk[broker]"): '
    "no embedded broker to test against",
)
N_SENSORS, WINDOW = 52, 20


@pytest.fixture
def embedded(tmp_path: Path) -> Any:
    """A fresh amqtt broker per test on a free port, stopped afterwards."""
    pytest.importorskip("paho.mqtt", reason="the MQTT clients need paho-mqtt ([mqtt] extra)")
    b = EmbeddedBroker(tmp_path / "amqtt").start()
    try:
        yield b
    finally:
        b.stop(timeout_s=5)


def _subscriber(broker: EmbeddedBroker, *topics: str) -> Any:
    """A connected MQTT 3.1.1 recorder subscribed to ``topics`` at QoS 1."""
    from mqtt_helpers import Recorder
    from paho.mqtt.enums import MQTTProtocolVersion

    rec = Recorder(broker.host, broker.port, protocol=MQTTProtocolVersion.MQTTv311)
    rec.wait_ready()
    for topic in topics:
        rec.subscribe(topic, qos=1)
    return rec


@needs_amqtt
def test_embedded_broker_starts_answers_and_stops(embedded: EmbeddedBroker, tmp_path: Path):
    assert embedded.running() and embedded.protocol == "3.1.1"
    assert embedded.url == f"mqtt://127.0.0.1:{embedded.port}"
    assert f"bind: 127.0.0.1:{embedded.port}" in embedded.config_path.read_text()
    assert probe(embedded.host, embedded.port, "edge-sdk-test-probe")
    assert embedded.version.startswith("0.12.")

    rec = _subscriber(embedded, "plant/+/data")
    try:
        rec.publish("plant/line1/data", b"over amqtt", qos=1)
        got = rec.wait_for(1, timeout=5)[0]
        assert (got.topic, got.payload, got.qos) == ("plant/line1/data", b"over amqtt", 1)
    finally:
        rec.close()

    # A second broker on the same port is refused with the reason, not left running.
    clash = EmbeddedBroker(tmp_path / "clash", port=embedded.port)
    with pytest.raises(ConfigError, match="in use by another process"):
        clash.start(timeout_s=1)
    assert not clash.running()

    embedded.stop()
    assert not embedded.running()
    assert not probe(embedded.host, embedded.port, "edge-sdk-test-probe")
    assert "Broker closed" in embedded.log_tail()  # SIGINT took amqtt's clean shutdown path


@needs_amqtt
def test_node_and_watcher_on_auto_fall_back_to_311_and_deliver(
    embedded: EmbeddedBroker, make_node: Any, sensor_bundle: Path
):
    from edge_sdk.fleet.watch import FleetWatcher
    from edge_sdk.node import BrokerConfig

    cloud = _subscriber(embedded, "edge/plant/n1/results", "edge/plant/n1/status")
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(kind: str, body: dict[str, Any]) -> None:
        with lock:
            seen.append({"kind": kind, **body})

    watcher = FleetWatcher(
        BrokerConfig(url=embedded.url, protocol="auto", keepalive_s=5),
        group="plant",
        on_message=on_message,
    )
    try:
        # Both give up on MQTT 5 after the CONNACK timeout: wait for them side by side.
        with ThreadPoolExecutor(1) as pool:
            watching = pool.submit(watcher.start, 20.0)
            node = make_node(embedded, sensor_bundle, broker_opts={"protocol": "auto"})
            watching.result()
        assert node.link.stats.protocol == "3.1.1"
        assert watcher.link.stats.protocol == "3.1.1"

        rows = np.random.default_rng(7).standard_normal((WINDOW + 4, N_SENSORS))
        for t, row in enumerate(rows.astype(np.float32)):
            cloud.publish("edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}))
        msgs = cloud.wait_for(
            lambda m: sum(x.topic.endswith("/results") for x in m) >= 5, timeout=20
        )
        results = [m for m in msgs if m.topic.endswith("/results")]
        assert all(m.qos == 1 for m in results)  # the node published at QoS 1
        bodies = sorted((json.loads(m.payload) for m in results), key=lambda b: b["window"]["seq"])
        assert [b["window"]["seq"] for b in bodies] == [0, 1, 2, 3, 4]
        assert len({b["id"] for b in bodies}) == 5
        with Runtime.load(sensor_bundle) as rt:
            for b in bodies:
                k = b["window"]["seq"]
                x = rows[k : k + WINDOW].T[None].astype(np.float32)
                expected = rt.infer(x)["out"][0]
                np.testing.assert_allclose(b["outputs"]["out"], expected, atol=1e-5)
                assert b["class"] == int(np.argmax(expected))
        status = [json.loads(m.payload) for m in msgs if m.topic.endswith("/status")]
        assert status and status[-1]["state"] == "online"  # retained birth, through amqtt

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if sum(s["kind"] == "results" for s in seen) >= 5:
                    break
            time.sleep(0.05)
        with lock:
            watched = [s for s in seen if s["kind"] == "results"]
        assert sorted(s["id"] for s in watched) == sorted(b["id"] for b in bodies)
        (view,) = watcher.snapshot()
        assert (view.node, view.state, view.results) == ("n1", "online", 5)
        # PUBACKs from amqtt release the outbox rows (the pump counts them a moment later).
        deadline = time.monotonic() + 5
        while node.link.stats.acked < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert node.link.stats.acked == 5, node.link.stats
    finally:
        watcher.stop()
        cloud.close()


# -- start_local_broker: which broker, and the error without either ---------------------------


def test_start_local_broker_picks_mosquitto_when_installed(tmp_path: Path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed: nothing to prefer over amqtt")
    lines: list[str] = []
    broker = start_local_broker(tmp_path / "b", say=lines.append)
    try:
        assert isinstance(broker, LocalBroker) and broker.protocol == "5"
        assert probe(broker.host, broker.port, "edge-sdk-test-probe")
        assert lines == [f"broker: mosquitto ({find_mosquitto()}) on {broker.url}"]
    finally:
        broker.stop()


@needs_amqtt
def test_start_local_broker_falls_back_to_amqtt_without_mosquitto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)  # hide the binary
    lines: list[str] = []
    broker = start_local_broker(tmp_path / "b", say=lines.append)
    try:
        assert isinstance(broker, EmbeddedBroker) and broker.protocol == "3.1.1"
        assert probe(broker.host, broker.port, "edge-sdk-test-probe")
        assert lines == [
            f"broker: amqtt {broker.version} (embedded; mosquitto not found) on "
            f"{broker.url}, MQTT 3.1.1 only"
        ]
    finally:
        broker.stop()
    assert not broker.running()


def test_no_broker_at_all_names_both_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    monkeypatch.setattr(broker_mod, "embedded_broker_available", lambda: False)
    with pytest.raises(BackendUnavailableError) as err:
        start_local_broker(tmp_path / "b")
    assert "apt-get install -y mosquitto" in str(err.value)
    assert 'pip install "edge-graph-sdk[broker]"' in str(err.value)
    with pytest.raises(BackendUnavailableError, match=r"edge-graph-sdk\[broker\]"):
        EmbeddedBroker(tmp_path / "e").start()
    assert not (tmp_path / "b").exists()  # nothing was started or written
