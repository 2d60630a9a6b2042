"""The broker capability probe and what the node and fleet do with it, on three real brokers.

mosquitto 2 does everything; RabbitMQ 3.10 speaks 3.1.1 only, sends retained
messages only to exact-topic subscriptions, rewrites ``.`` in topics and has
no shared subscriptions; ejabberd 23.01 has no shared subscriptions (its
CONNACK says so). Brokers are module-scoped (never restarted here); node ids
differ per test because retained statuses stay on a shared broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_helpers import Recorder

from edge_sdk.errors import ConfigError, EdgeSDKError
from edge_sdk.fleet.brokers import EjabberdBroker, LocalBroker, RabbitBroker
from edge_sdk.fleet.watch import FleetWatcher
from edge_sdk.mqtt.capabilities import PROBE_ROOT, BrokerCapabilities, BrokerProbe
from edge_sdk.mqtt.config import BrokerConfig
from edge_sdk.mqtt.link import MqttLink

N_SENSORS, WINDOW = 52, 20


@pytest.fixture(scope="module")
def mosquitto(
    mosquitto_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield b
    finally:
        b.stop(timeout_s=5)


def _probe(url: str, **opts: Any) -> tuple[MqttLink, BrokerCapabilities]:
    """A connected link that probed (Sparkplug too); the caller stops it."""
    link = MqttLink(
        BrokerConfig(url=url, reconnect_max_s=1, **opts),
        f"caps-{uuid.uuid4().hex[:8]}",
        subscriptions=[("edge/plant/+/status", 1)],
        probe=BrokerProbe(sparkplug=True),
    ).start()
    assert link.wait_connected(15), link.connect_error
    assert link.capabilities is not None
    return link, link.capabilities


def _rabbit(broker: RabbitBroker) -> BrokerConfig:
    return BrokerConfig(url=broker.url, protocol="3.1.1", reconnect_max_s=1)


# -- what the probe finds ------------------------------------------------------------------


def test_mosquitto_does_everything_and_the_probe_leaves_no_retained_message(
    mosquitto: LocalBroker,
) -> None:
    link, caps = _probe(mosquitto.url)
    link.stop(flush_s=0)
    assert (caps.protocol, caps.probed, caps.retain_available) == ("5", True, True)
    assert caps.retain_on_wildcards and caps.shared_subscriptions and caps.wildcard_subscriptions
    assert caps.topic_dots_preserved and caps.sparkplug_namespace_preserved
    assert caps.sparkplug_refusal() is None and caps.shared_refusal() is None
    assert caps.name_refusal("group", "plant.a") is None
    # Retained messages come on subscribe, before a later live one: none came, none is left.
    cloud = Recorder(mosquitto.host, mosquitto.port)
    try:
        cloud.subscribe(f"{PROBE_ROOT}/#", qos=0)
        cloud.publish(f"{PROBE_ROOT}/marker", b"marker")
        got = cloud.wait_for(1, timeout=5)
    finally:
        cloud.close()
    assert [(m.topic, m.retain) for m in got] == [(f"{PROBE_ROOT}/marker", False)]


def test_rabbitmq_311_no_retained_on_wildcards_dots_rewritten_no_shared(
    rabbit_broker: RabbitBroker,
) -> None:
    link, caps = _probe(rabbit_broker.url, protocol="3.1.1")
    link.stop(flush_s=0)
    assert caps == BrokerCapabilities(
        protocol="3.1.1",
        probed=True,
        retain_on_wildcards=False,
        wildcard_subscriptions=True,
        shared_subscriptions=False,
        topic_dots_preserved=False,
        sparkplug_namespace_preserved=False,
    )
    assert "mqtt.sparkplug = true" in (caps.sparkplug_refusal() or "")
    assert "'plant/a'" in (caps.name_refusal("group", "plant.a") or "")


def test_ejabberd_has_no_shared_subscriptions_and_the_link_does_not_send_them(
    ejabberd_broker: EjabberdBroker,
) -> None:
    """Its CONNACK says so; a $share SUBSCRIBE would get a DISCONNECT (0x9E), so none is sent."""
    link = MqttLink(
        BrokerConfig(url=ejabberd_broker.url, **ejabberd_broker.client_options()),
        f"caps-{uuid.uuid4().hex[:8]}",
        subscriptions=[("$share/g/edge/plant/+/results", 1), ("edge/plant/+/status", 1)],
        probe=BrokerProbe(),
    ).start()
    try:
        assert link.wait_connected(15), link.connect_error
        caps = link.capabilities
        assert link.refused_subscriptions == {
            "$share/g/edge/plant/+/results": (
                "shared subscriptions not supported (CONNACK: Shared Subscription Available 0)"
            )
        }
        time.sleep(0.3)  # a DISCONNECT would come within milliseconds
        assert link.connected and link.connect_error is None and link.stats.disconnects == 0
    finally:
        link.stop(flush_s=0)
    assert caps is not None
    assert (caps.protocol, caps.probed, caps.shared_subscriptions) == ("5", True, False)
    assert caps.retain_on_wildcards and caps.topic_dots_preserved
    assert "shared subscriptions" in (caps.shared_refusal() or "")


def test_the_probe_gives_up_within_its_bound_where_its_topics_are_denied(
    mosquitto_path: str, tmp_path: Path
) -> None:
    """An ACL that denies the probe's topics: unknown (None), and the link works.

    mosquitto 2.0 drops a client that publishes where its ACL denies: the
    probe's connection dies, and the next one is not probed again.
    """
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edge/plant/#\n")
    broker = LocalBroker(tmp_path / "broker", extra_config=f"acl_file {acl}\n").start()
    try:
        started = time.monotonic()
        link, caps = _probe(broker.url)
        took = time.monotonic() - started
        link.stop(flush_s=0)
    finally:
        broker.stop(timeout_s=5)
    assert took < 6
    assert (caps.probed, caps.retain_on_wildcards, caps.topic_dots_preserved) == (False, None, None)
    assert caps.sparkplug_refusal() is None  # nothing is refused on an unknown


# -- adaptations ---------------------------------------------------------------------------


def test_status_on_rabbitmq_shows_a_node_born_before_it(
    rabbit_broker: RabbitBroker, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """``edge-fleet status`` (no streams): learns the node from its results, reads its status."""
    node = make_node(
        rabbit_broker,
        sensor_bundles["v1"],
        node_id="caps-status",
        broker_opts={"protocol": "3.1.1", "reconnect_max_s": 1},
    )
    assert node.link.capabilities is not None
    assert node.link.capabilities.retain_on_wildcards is False
    with FleetWatcher(_rabbit(rabbit_broker), "plant", streams=()) as watcher:
        assert watcher.capabilities is not None
        assert watcher.capabilities.retain_on_wildcards is False
        rows = np.random.default_rng(0).standard_normal((400, N_SENSORS)).astype(np.float32)
        deadline = time.monotonic() + 10
        views: list[Any] = []
        for t, row in enumerate(rows):  # a node at work, publishing results
            node.submit_sensors({"t": t, "values": row.tolist()})
            views = [v for v in watcher.snapshot() if v.node == "caps-status"]
            if (views and views[0].state == "online") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [(v.state, v.version, v.backend) for v in views] == [("online", "1.0.0", "onnxruntime")]
    assert "results" not in watcher.counts  # heard only to learn the node


def test_status_on_rabbitmq_lists_a_quiet_node_by_asking_the_group(
    rabbit_broker: RabbitBroker, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """A node that publishes nothing while ``status`` looks is asked for telemetry, then listed."""
    make_node(
        rabbit_broker,
        sensor_bundles["v1"],
        node_id="caps-quiet",
        group="quiet",
        broker_opts={"protocol": "3.1.1", "reconnect_max_s": 1},
    )
    time.sleep(0.5)  # its birth-time status and telemetry are over before the watcher starts
    with FleetWatcher(_rabbit(rabbit_broker), "quiet", streams=()) as watcher:
        deadline = time.monotonic() + 10
        views: list[Any] = []
        while time.monotonic() < deadline:
            views = watcher.snapshot()
            if views and views[0].state == "online":
                break
            time.sleep(0.05)
    assert [(v.node, v.state, v.version) for v in views] == [("caps-quiet", "online", "1.0.0")]
    assert "telemetry" not in watcher.counts  # heard only to learn the node


def test_sparkplug_and_dotted_names_are_refused_on_rabbitmq_with_the_reason(
    rabbit_broker: RabbitBroker, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    opts = {"protocol": "3.1.1", "reconnect_max_s": 1}
    with pytest.raises(ConfigError, match=r"Sparkplug B .*rewrites '\.'.*mqtt\.sparkplug = true"):
        make_node(
            rabbit_broker,
            sensor_bundles["v1"],
            node_id="caps-sp",
            scheme="sparkplug",
            broker_opts=opts,
        )
    with pytest.raises(ConfigError, match=r"group 'plant\.a' contains '\.'.*'plant-a'"):
        make_node(
            rabbit_broker,
            sensor_bundles["v1"],
            node_id="caps-dot",
            group="plant.a",
            broker_opts=opts,
        )
    with pytest.raises(EdgeSDKError, match=r"spBv1/0.*mqtt\.sparkplug = true"):
        FleetWatcher(_rabbit(rabbit_broker), "plant", sparkplug=True).start()
    with pytest.raises(EdgeSDKError, match=r"group 'plant\.a' contains '\.'"):
        FleetWatcher(_rabbit(rabbit_broker), "plant.a", sparkplug=False).start()
