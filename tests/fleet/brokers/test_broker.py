"""LocalBroker against a real mosquitto: round trips, crash/restart, persistence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edge_sdk.errors import ConfigError
from edge_sdk.fleet.brokers import LocalBroker
from edge_sdk.fleet.brokers import installed as broker_mod

if TYPE_CHECKING:
    from mqtt_helpers import Recorder

Factory = Callable[..., "Recorder"]


def _round_trip(pub: Recorder, sub: Recorder, topic: str, payload: bytes) -> None:
    before = len(sub.messages)
    pub.publish(topic, payload, qos=1)
    got = sub.wait_for(before + 1)
    assert got[-1].topic == topic
    assert got[-1].payload == payload
    assert got[-1].qos == 1


def test_qos1_round_trip(broker: LocalBroker, mqtt_client_factory: Factory) -> None:
    assert broker.running()
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    config = broker.config_path.read_text()
    assert "max_queued_messages 0" in config and "max_inflight_messages 0" in config
    sub = mqtt_client_factory(broker)
    sub.subscribe("plant/+/data", qos=1)
    pub = mqtt_client_factory(broker)
    _round_trip(pub, sub, "plant/line1/data", b"hello")
    assert not broker.dropped_messages_logged()


def test_kill_then_restart_same_port_clients_reconnect(
    broker: LocalBroker, mqtt_client_factory: Factory
) -> None:
    sub = mqtt_client_factory(broker)
    sub.subscribe("t/x", qos=1)
    pub = mqtt_client_factory(broker)
    _round_trip(pub, sub, "t/x", b"before")
    port = broker.port

    broker.kill()
    assert not broker.running()
    broker.restart()
    assert broker.running() and broker.port == port

    # paho reconnects on its own; the Recorder re-subscribes (no session to resume).
    sub.wait_ready(timeout=15, min_connects=2)
    pub.wait_ready(timeout=15, min_connects=2)
    _round_trip(pub, sub, "t/x", b"after")


def test_persistent_session_survives_broker_restart(
    broker: LocalBroker, mqtt_client_factory: Factory
) -> None:
    sub = mqtt_client_factory(broker, "node-7", clean_start=False, session_expiry_s=600)
    sub.subscribe("cmd/node-7/#", qos=1)
    sub.close()  # offline; the broker keeps the session and queues QoS 1 for it

    pub = mqtt_client_factory(broker)
    sent = [f"m{i}".encode() for i in range(20)]
    for payload in sent:
        pub.publish("cmd/node-7/update", payload, qos=1)
    pub.close()

    broker.stop()  # SIGTERM: mosquitto writes mosquitto.db
    assert (broker.workdir / "mosquitto.db").exists()
    broker.restart()

    back = mqtt_client_factory(broker, "node-7", clean_start=False, session_expiry_s=600)
    assert back.session_present is True
    got = back.wait_for(len(sent))
    assert [m.payload for m in got] == sent
    assert all(m.qos == 1 for m in got)


def test_missing_binary_is_a_config_error_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    with pytest.raises(ConfigError, match=r"mosquitto is not installed: `apt-get install -y"):
        LocalBroker(tmp_path).start()


def test_bad_config_exits_with_log_tail(mosquitto_path: str, tmp_path: Path) -> None:
    b = LocalBroker(tmp_path, extra_config="no_such_option 1")
    with pytest.raises(ConfigError, match="no_such_option"):
        b.start(timeout_s=5)
    assert not b.running()


def test_taken_port_is_an_error_not_the_other_broker(broker: LocalBroker, tmp_path: Path) -> None:
    # The probe would get a CONNACK from `broker`; start() must notice it is not its own process.
    second = LocalBroker(tmp_path / "second", port=broker.port)
    with pytest.raises(ConfigError, match=rf"port {broker.port} .* in use"):
        second.start(timeout_s=0.5)
    assert not second.running()
    assert broker.running()


def test_relative_workdir_is_resolved(
    mosquitto_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mosquitto runs with cwd=workdir, so a relative path (the demo's default
    # out/tep/...) would not name its config there: it failed to start once
    monkeypatch.chdir(tmp_path)
    b = LocalBroker(Path("out") / "broker")
    assert b.workdir == tmp_path / "out" / "broker"
    b.start()
    try:
        assert b.running() and b.config_path.is_file()
    finally:
        b.stop()
