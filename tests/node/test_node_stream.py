"""The node against a real mosquitto: results, errors, telemetry, request/response, outages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mqtt_helpers import Received, feed_in_background, sensor_rows

from edge_sdk import Runtime
from edge_sdk.node.config import OutboxConfig

N_SENSORS, WINDOW = 52, 20


def _bodies(messages: list[Received], suffix: str) -> list[dict]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


def _unique_windows(messages: list[Received]) -> set[int]:
    return {b["window"]["seq"] for b in _bodies(messages, "/results")}


def test_results_match_the_runtime_and_carry_ids(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/results")
    make_node(broker, sensor_bundles["v1"])
    rows = sensor_rows(WINDOW + 4)
    for t, row in enumerate(rows):
        cloud.publish("edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}))
    msgs = cloud.wait_for(5, timeout=20)
    bodies = sorted(_bodies(msgs, "/results"), key=lambda b: b["window"]["seq"])
    assert [b["window"]["seq"] for b in bodies] == [0, 1, 2, 3, 4]
    with Runtime.load(sensor_bundles["v1"]) as rt:
        for b in bodies:
            k = b["window"]["seq"]
            expected = rt.infer(rows[k : k + WINDOW].T[None])["out"][0]
            np.testing.assert_allclose(b["outputs"]["out"], expected, atol=1e-5)
            assert b["class"] == int(np.argmax(expected))
    assert len({b["id"] for b in bodies}) == 5
    assert all(b["model"] == {"name": "tep-sensor-gcn", "version": "1.0.0"} for b in bodies)
    assert bodies[0]["window"]["t_start"] == 0 and bodies[0]["window"]["t_end"] == WINDOW - 1


def test_malformed_payloads_get_errors_and_the_node_keeps_serving(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/errors")
    cloud.subscribe("edge/plant/n1/results")
    make_node(broker, sensor_bundles["v1"], max_payload_bytes=8192)
    topic = "edge/plant/n1/sensors"
    bad = {
        "invalid JSON": b'{"t": 1, "values": [1, 2',
        "wrong count": json.dumps({"t": 0, "values": [0.0] * 51}),
        "NaN literal": '{"t": 0, "values": [NaN' + ", 0.0" * 51 + "]}",
        "overflow to inf": '{"t": 0, "values": [1e999' + ", 0.0" * 51 + "]}",
        "oversized": json.dumps({"t": 0, "values": [0.0] * 52, "pad": "x" * 10000}),
        "not an object": b"[1, 2, 3]",
        "missing t": json.dumps({"values": [0.0] * 52}),
        "unknown sensor": json.dumps({"t": 0, "values": {"s0": 1.0, "furnace": 2.0}}),
    }
    for payload in bad.values():
        cloud.publish(topic, payload)
    cloud.publish("edge/plant/n1/infer", json.dumps({"inputs": {"x": [[1.0, 2.0]]}}))
    msgs = cloud.wait_for(lambda m: len(_bodies(m, "/errors")) >= len(bad) + 1, timeout=20)
    errors = [b["error"] for b in _bodies(msgs, "/errors")]
    expected_words = [
        "not valid JSON",
        "expected 52 sensor values, got 51",
        "NaN is not allowed",
        "finite",
        "exceeds the limit of 8192 bytes",
        "expected a JSON object",
        '"t"',
        "furnace",
        "x",
    ]
    for words, error in zip(expected_words, errors, strict=True):
        assert words in error, (words, error)
    # Still serving: a clean stream after all that produces results.
    for t, row in enumerate(sensor_rows(WINDOW)):
        cloud.publish(topic, json.dumps({"t": 100 + t, "values": row.tolist()}))
    msgs = cloud.wait_for(lambda m: len(_bodies(m, "/results")) >= 1, timeout=20)
    assert _bodies(msgs, "/results")[0]["window"]["t_end"] == 100 + WINDOW - 1


def test_request_response_over_mqtt5(broker, make_node, mqtt_client_factory, sensor_bundles):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    cloud = mqtt_client_factory(broker)
    cloud.subscribe("cloud/replies/#")
    make_node(broker, sensor_bundles["v1"])
    x = sensor_rows(2 * N_SENSORS, seed=3).reshape(2, N_SENSORS, -1)[:, :, :WINDOW]
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "cloud/replies/7"
    props.CorrelationData = b"req-7"
    info = cloud.client.publish(
        "edge/plant/n1/infer",
        json.dumps({"id": "r7", "inputs": {"x": x.tolist()}}),
        qos=1,
        properties=props,
    )
    info.wait_for_publish(10)
    reply = cloud.wait_for(1, timeout=20)[0]
    assert reply.topic == "cloud/replies/7"
    assert reply.properties.CorrelationData == b"req-7"
    body = json.loads(reply.payload)
    assert body["request_id"] == "r7"
    with Runtime.load(sensor_bundles["v1"]) as rt:
        expected = rt.infer(x)["out"]
    np.testing.assert_allclose(body["outputs"]["out"], expected, atol=1e-6)


def test_commands_telemetry_and_retained_birth(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    cloud = mqtt_client_factory(broker)
    node = make_node(broker, sensor_bundles["v1"])
    cloud.subscribe("edge/plant/n1/status")
    birth = json.loads(cloud.wait_for(1, timeout=10)[0].payload)
    assert birth["state"] == "online"
    assert birth["model"]["version"] == "1.0.0" and birth["backend"] == "onnxruntime"
    cloud.subscribe("edge/plant/n1/telemetry")
    cloud.subscribe("edge/plant/n1/errors")
    for t, row in enumerate(sensor_rows(WINDOW + 2)):
        node.submit_sensors({"t": t, "values": row.tolist()})
    cloud.publish("edge/plant/_all/cmd", json.dumps({"cmd": "telemetry_interval", "value": 0.3}))
    cloud.publish("edge/plant/n1/cmd", json.dumps({"cmd": "self-destruct"}))
    msgs = cloud.wait_for(lambda m: len(_bodies(m, "/telemetry")) >= 3, timeout=20)
    tele = _bodies(msgs, "/telemetry")[-1]
    assert tele["counters"]["inferences"] == 3
    assert tele["infer_ms"]["n"] >= 1 and tele["infer_ms"]["p99"] >= tele["infer_ms"]["p50"] > 0
    assert tele["outbox"]["dropped"] == 0 and tele["link"]["protocol"] == "5"
    assert tele["model"]["version"] == "1.0.0" and tele["rss_mb"] > 10
    errors = _bodies(msgs, "/errors")
    assert any("unknown command 'self-destruct'" in e["error"] for e in errors)


def test_every_result_arrives_across_a_broker_sigkill(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    """1,000 windows inferred while the broker is SIGKILLed and restarted: none lost."""
    cloud = mqtt_client_factory(broker, "cloud", clean_start=False, session_expiry_s=600)
    cloud.subscribe("edge/plant/n1/results")
    time.sleep(1.5)  # let the broker's autosave persist the cloud's session
    node = make_node(broker, sensor_bundles["v1"], outbox=OutboxConfig(replay_s=30))
    rows = sensor_rows(1000 + WINDOW - 1)
    feeder = feed_in_background(node, rows)
    cloud.wait_for(lambda m: len(m) >= 150, timeout=30)
    before_kill = len(_unique_windows(cloud.messages))
    broker.kill()
    time.sleep(1.0)
    broker.restart()
    feeder.join()
    msgs = cloud.wait_for(lambda m: len(_unique_windows(m)) >= 1000, timeout=90)
    bodies = _bodies(msgs, "/results")
    assert before_kill < 1000, "the broker must die mid-stream for this test to mean anything"
    assert _unique_windows(msgs) == set(range(1000))
    by_id: dict[str, int] = {}
    for b in bodies:  # a duplicate is the same message again, removable by id
        assert by_id.setdefault(b["id"], b["window"]["seq"]) == b["window"]["seq"]
    assert len(by_id) == 1000
    assert node.stats.inferences == 1000
    assert node.link.stats.disconnects >= 1
    # The subscriber can hold the last result before the node has processed the
    # broker's PUBACK for it (a row leaves the outbox only then): wait for that.
    deadline = time.monotonic() + 15
    while node.outbox.stats().pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.outbox.stats().pending == 0


NODE_SCRIPT = """
import json, sys, time
import numpy as np
from edge_sdk.node import BrokerConfig, EdgeNode, NodeConfig
cfg = NodeConfig(node_id="n1", group="plant", bundle=sys.argv[1], state_dir=sys.argv[2],
                 broker=BrokerConfig(url=sys.argv[3]), telemetry_interval_s=0)
node = EdgeNode(cfg).start()
rows = np.random.default_rng(0).standard_normal((400, 52))
for t, row in enumerate(rows):
    node.submit_sensors({"t": t, "values": row.tolist()})
    if t == 200:
        while node.outbox.stats().pending < 150:
            time.sleep(0.01)
        print("QUEUED", flush=True)
    time.sleep(0.002)
time.sleep(60)
"""


def test_results_queued_on_disk_survive_a_node_sigkill(
    broker, mqtt_client_factory, sensor_bundles, tmp_path: Path
):
    import signal
    import subprocess
    import sys

    state = tmp_path / "state"
    broker.stop()  # the node runs with its broker unreachable: results queue on disk
    child = subprocess.Popen(
        [sys.executable, "-c", NODE_SCRIPT, str(sensor_bundles["v1"]), str(state), broker.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "QUEUED"
        child.send_signal(signal.SIGKILL)  # mid-stream: still feeding and inferring
        child.wait(timeout=10)
    finally:
        child.kill()
    broker.restart()
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/results")
    restarted = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_sdk.cli.node_cli",
            "run",
            "--state-dir",
            str(state),
            "--broker",
            broker.url,
            "--node-id",
            "n1",
            "--group",
            "plant",
            "--telemetry-interval",
            "0",
            "--duration",
            "30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        msgs = cloud.wait_for(lambda m: len(_unique_windows(m)) >= 150, timeout=40)
        time.sleep(1.0)  # anything still queued arrives too
        windows = _unique_windows(cloud.messages)
        assert windows == set(range(max(windows) + 1)), "a gap: a queued result was lost"
        assert len({b["id"] for b in _bodies(msgs, "/results")}) >= 150
    finally:
        restarted.terminate()
        _, err = restarted.communicate(timeout=20)
    assert restarted.returncode == 0, err


def test_node_speaks_mqtt_311_with_payload_reply_to(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    from paho.mqtt.enums import MQTTProtocolVersion

    node = make_node(broker, sensor_bundles["v1"], broker_opts={"protocol": "3.1.1"})
    assert node.link.stats.protocol == "3.1.1"
    cloud = mqtt_client_factory(broker, protocol=MQTTProtocolVersion.MQTTv311)
    cloud.subscribe("edge/plant/n1/results")
    cloud.subscribe("cloud/replies")
    x = sensor_rows(N_SENSORS, seed=4)[:, :WINDOW][None]
    request = {"inputs": {"x": x.tolist()}, "reply_to": "cloud/replies", "correlation": "c-9"}
    cloud.publish("edge/plant/n1/infer", json.dumps(request))
    for t, row in enumerate(sensor_rows(WINDOW)):
        cloud.publish("edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}))
    msgs = cloud.wait_for(2, timeout=20)
    reply = next(json.loads(m.payload) for m in msgs if m.topic == "cloud/replies")
    assert reply["correlation"] == "c-9" and np.asarray(reply["outputs"]["out"]).shape == (1, 22)
    assert any(m.topic.endswith("/results") for m in msgs)
