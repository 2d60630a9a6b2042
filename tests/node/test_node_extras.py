"""Alerts, shared subscriptions for scaled-out consumers, and TLS (mqtts://) to mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mqtt_helpers import tls_material

from edge_sdk import Runtime
from edge_sdk.fleet.brokers import LocalBroker, free_port
from edge_sdk.fleet.watch import FleetWatcher
from edge_sdk.mqtt.config import BrokerConfig
from edge_sdk.node.config import AlertConfig, WindowConfig

WINDOW = 20


def _two_classes(bundle: Path) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Two [52, 20] windows the model puts in different classes."""
    with Runtime.load(bundle) as rt:
        found: dict[int, np.ndarray] = {}
        for seed in range(200):
            x = np.random.default_rng(seed).standard_normal((52, WINDOW)).astype(np.float32) * 3
            found.setdefault(int(rt.infer(x)["out"][0].argmax()), x)
            if len(found) == 2:
                (ca, xa), (cb, xb) = found.items()
                return xa, ca, xb, cb
    raise AssertionError("the model predicts one class for every input")


def test_alert_raised_on_fault_and_cleared_on_return_to_normal(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    xa, normal, xb, fault = _two_classes(sensor_bundles["v1"])
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/alerts")
    node = make_node(
        broker,
        sensor_bundles["v1"],
        window=WindowConfig(stride=WINDOW),  # disjoint windows: exactly xa, xb, xa, xb
        alert=AlertConfig(normal_class=normal, threshold=0.0),
    )
    t = 0
    for x in (xa, xb, xa, xb):
        for column in x.T:
            node.submit_sensors({"t": t, "values": column.tolist()})
            t += 1
    alerts = [json.loads(m.payload) for m in cloud.wait_for(3, timeout=20)]
    assert [(a["state"], a["class"]) for a in alerts] == [
        ("raised", fault),
        ("cleared", normal),
        ("raised", fault),
    ]
    assert [a["window"]["seq"] for a in alerts] == [1, 2, 3]
    assert node.stats.alerts == 2


def test_shared_subscription_splits_results_between_consumers(broker, make_node, sensor_bundles):
    make_node_ = make_node(broker, sensor_bundles["v1"])
    got: dict[str, list[str]] = {"a": [], "b": []}
    watchers = [
        FleetWatcher(
            BrokerConfig(url=broker.url),
            "plant",
            share="consumers",
            on_message=lambda kind, body, who=who: got[who].append(body["id"]),
        ).start()
        for who in ("a", "b")
    ]
    try:
        rows = np.random.default_rng(0).standard_normal((WINDOW + 199, 52))
        for t, row in enumerate(rows):
            make_node_.submit_sensors({"t": t, "values": row.tolist()})
        deadline = time.monotonic() + 30
        while len(got["a"]) + len(got["b"]) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for w in watchers:
            w.stop()
    assert len(got["a"]) + len(got["b"]) == 200
    assert not set(got["a"]) & set(got["b"])  # each result went to exactly one consumer
    assert got["a"] and got["b"]  # and both took a share


def test_node_over_tls_verifies_the_broker_certificate(
    mosquitto_path, make_node, mqtt_client_factory, sensor_bundles, tmp_path
):
    tls = tls_material(tmp_path)
    tls_port = free_port()
    extra = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
    )
    with LocalBroker(tmp_path / "broker", extra_config=extra).start() as broker:
        cloud = mqtt_client_factory(broker)  # plain listener, same broker
        cloud.subscribe("edge/plant/n1/results")
        url = f"mqtts://127.0.0.1:{tls_port}"
        node = make_node(broker, sensor_bundles["v1"], broker_opts={"url": url, "ca": tls["ca"]})
        assert node.link.broker.tls
        for t, row in enumerate(np.random.default_rng(1).standard_normal((WINDOW, 52))):
            node.submit_sensors({"t": t, "values": row.tolist()})
        assert json.loads(cloud.wait_for(1, timeout=20)[0].payload)["window"]["seq"] == 0
        # Without the CA the node must refuse the broker's certificate (never connects).
        from edge_sdk.node import EdgeNode, NodeConfig

        rogue = EdgeNode(
            NodeConfig(
                node_id="n2",
                group="plant",
                bundle=sensor_bundles["v1"],
                state_dir=tmp_path / "n2",
                broker=BrokerConfig(url=url),
            )
        ).start()
        try:
            assert not rogue.link.wait_connected(3)
        finally:
            rogue.stop()
