"""A node configured with several broker URLs fails over when its member dies.

Two plain mosquitto brokers first (fast: the URL rotation itself), then a real
two-member ejabberd cluster (the issue's "Must show": 1,000 results streamed
while the member the node uses is SIGKILLed and restarted; 0 lost, the node on
the other member within 10 s, a watcher on the surviving member saw them all).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Received, feed_in_background, sensor_rows

from edge_sdk.fleet.brokers import LocalBroker
from edge_sdk.fleet.brokers.cluster import EjabberdCluster
from edge_sdk.fleet.watch import FleetWatcher
from edge_sdk.mqtt.config import BrokerConfig

N_SENSORS, WINDOW = 52, 20


def _results(messages: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith("/results")]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _on_member(node: Any, url: str) -> Callable[[], bool]:
    return lambda: node.link.connected and node.link.stats.member == url


@pytest.fixture
def second_broker(mosquitto_path: str, tmp_path: Path) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path / "broker-b").start()
    try:
        yield b
    finally:
        b.stop(timeout_s=5)


def test_node_moves_to_the_next_url_when_its_broker_dies_and_keeps_cycling(
    broker, second_broker, make_node, mqtt_client_factory, sensor_bundles
):
    """Two unrelated mosquittos as 'members': A dies, the node goes to B; B dies, back to A."""
    a, b = broker, second_broker
    on_b = mqtt_client_factory(b, "cloud-b", clean_start=False, session_expiry_s=600)
    on_b.subscribe("edge/plant/n1/results")
    node = make_node(a, sensor_bundles["v1"], broker_opts={"failover_urls": [b.url]})
    assert node.link.stats.member == a.url
    rows = sensor_rows(WINDOW + 29)
    for t in range(WINDOW + 9):  # 10 results through A
        node.submit_sensors({"t": t, "values": rows[t].tolist()})
    assert _wait(lambda: node.outbox.stats().pending == 0, 15)

    a.kill()
    t_kill = time.monotonic()
    assert _wait(_on_member(node, b.url), 15), node.link.connect_error
    assert time.monotonic() - t_kill < 10
    assert node.link.stats.failovers >= 1
    for t in range(WINDOW + 9, WINDOW + 19):  # 10 more, now through B
        node.submit_sensors({"t": t, "values": rows[t].tolist()})
    on_b.wait_for(lambda m: {r["window"]["seq"] for r in _results(m)} >= set(range(10, 20)), 20)

    a.restart()  # the node stays on B (it does not go back by itself) ...
    b.kill()  # ... until B dies: round the list, back to A
    assert _wait(_on_member(node, a.url), 15), node.link.connect_error
    on_a = mqtt_client_factory(a, "cloud-a")
    on_a.subscribe("edge/plant/n1/results")
    for t in range(WINDOW + 19, WINDOW + 29):
        node.submit_sensors({"t": t, "values": rows[t].tolist()})
    on_a.wait_for(lambda m: {r["window"]["seq"] for r in _results(m)} >= set(range(20, 30)), 20)
    assert _wait(lambda: node.outbox.stats().pending == 0, 15)
    assert node.stats.inferences == 30


@pytest.fixture
def cluster(ejabberd_path: str, tmp_path: Path) -> Iterator[EjabberdCluster]:
    c = EjabberdCluster(tmp_path / "cluster", size=2).start()
    try:
        yield c
    finally:
        c.stop()


def test_1000_results_survive_a_sigkilled_cluster_member(cluster, make_node, sensor_bundles):
    """The issue's Must show: the node's member dies mid-stream; 0 lost, on member 2 in < 10 s."""
    first, second = cluster.members
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(kind: str, body: dict[str, Any]) -> None:
        if kind == "results":
            with lock:
                results.append(body)

    watcher = FleetWatcher(
        BrokerConfig(url=second.url, keepalive_s=5, **cluster.client_options()),
        group="plant",
        on_message=on_message,
        client_id="watch-on-member-2",
    ).start(timeout_s=30)
    try:
        node = make_node(
            first,
            sensor_bundles["v1"],
            broker_opts={"failover_urls": [second.url], **cluster.client_options()},
        )
        assert node.link.stats.member == first.url
        rows = sensor_rows(1000 + WINDOW - 1)
        feeder = feed_in_background(node, rows)
        assert _wait(lambda: len(results) >= 150, 30), "results do not reach member 2's watcher"
        cluster.kill(0)  # SIGKILL the member the node is connected to, mid-stream
        t_kill = time.monotonic()
        before_kill = len(results)
        assert _wait(_on_member(node, second.url), 30), node.link.connect_error
        reconnect_s = time.monotonic() - t_kill
        first.start()  # back: it rejoins the cluster by itself
        feeder.join()
        assert _wait(lambda: len(results) >= 1000, 60), f"{len(results)} of 1000 results arrived"
        assert _wait(lambda: node.outbox.stats().pending == 0, 15)
    finally:
        watcher.stop()
    assert before_kill < 1000, "the member must die mid-stream for this test to mean anything"
    assert reconnect_s < 10, f"the node took {reconnect_s:.1f} s to reach member 2"
    assert node.link.stats.failovers >= 1
    seqs = [r["window"]["seq"] for r in results]  # de-duplicated by id by the watcher
    assert sorted(seqs) == list(range(1000)), "a result was lost, or a duplicate has a new id"
    assert node.stats.inferences == 1000
    print(
        f"\ncluster failover: node on member 2 {reconnect_s:.2f} s after the SIGKILL; "
        f"{watcher.dedup.duplicates} duplicates dropped by id; "
        f"{node.link.stats.replayed} rows replayed; cluster start {cluster.last_start_s:.1f} s"
    )


def test_broker_urls_forms_and_refusals(tmp_path: Path) -> None:
    """A cluster's URLs: failover_urls, url as a YAML list, or comma-separated (the CLI's form)."""
    from edge_sdk.errors import ConfigError
    from edge_sdk.node import load_config

    a, b = "mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1884"
    assert BrokerConfig(url=a, failover_urls=[b]).urls == (a, b)
    assert BrokerConfig(url=f"{a}, {b}").members == [("10.0.0.1", 1883), ("10.0.0.2", 1884)]
    assert BrokerConfig(url=[a, b]).failover_urls == (b,)
    assert BrokerConfig(url=a).urls == (a,)  # one broker: as before
    path = tmp_path / "node.yaml"
    path.write_text(f"node_id: n1\nbroker:\n  url: [{a}, {b}]\n  username: line3\n")
    cfg = load_config(path)
    assert cfg.broker is not None and cfg.broker.urls == (a, b)
    with pytest.raises(ConfigError, match="scheme"):
        BrokerConfig(url=a, failover_urls=["mqtts://10.0.0.2:8883"])  # one TLS setting for all
    with pytest.raises(ConfigError, match="twice"):
        BrokerConfig(url=[a, a])
    with pytest.raises(ConfigError, match="expected mqtt://"):
        BrokerConfig(url=a, failover_urls=["10.0.0.2:1883"])
