"""Hostile MQTT input against a real node on a real mosquitto: each bad message costs itself.

Every class of message that used to cut the node off or cost a whole batch
(issue #15 item 3) is sent many times, interleaved with a valid sensor stream
and valid ``infer`` requests: every hostile message must be answered on
``errors`` naming the field, no valid input may be lost, and the node's one
connection must never drop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from mqtt_helpers import Received
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_sdk import Runtime
from edge_sdk.mqtt.topics import MAX_JSON_DEPTH, check_topic, loads

N_SENSORS, WINDOW = 52, 20
ROOT = "edge/plant/n1"
BOM = "\ufeff"
#: How many times each hostile message is sent (x 24 kinds: > 1,000 hostile messages).
ROUNDS = 45


def _bodies(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


def _window_x(seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, N_SENSORS, WINDOW)).astype(np.float32).tolist()


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _hostile(i: int) -> list[tuple[str, bytes | str, Properties | None, str, str]]:
    """One round of hostile messages: ``(topic, payload, properties, input, field)``.

    ``input`` and ``field`` are what the node's error must name.
    """
    x = _window_x(1000 + i)
    huge_int = "9" * 5000  # beyond CPython's 4,300-digit int parsing limit
    big_int = "9" * 400  # parses, but no float holds it
    deep = _deep(5000)  # RecursionError in the decoder
    shallow_deep = _deep(MAX_JSON_DEPTH + 5)  # parses, refused by the depth cap
    infer, sensors, cmd = f"{ROOT}/infer", f"{ROOT}/sensors", f"{ROOT}/cmd"
    x[0][0][0] = 12345.5
    overflow = json.dumps({"inputs": {"x": x}}).replace("12345.5", "1e400")  # inf in x
    x[0][0][0] = 0.0
    # Finite float32 readings the model turns into NaN: a result JSON cannot carry.
    nan_out = json.dumps({"inputs": {"x": (np.asarray(x) * 0 + 1e38).tolist()}})

    def response_topic(topic: str) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = topic
        return props

    def req(reply_to: Any) -> str:
        return json.dumps({"id": f"h{i}", "inputs": {"x": x}, "reply_to": reply_to})

    return [
        # reply topics the broker would refuse, or that a node may not publish to
        (infer, req(f"cloud/replies/\u0000{i}"), None, "infer", "reply_to"),
        (infer, req(f"cloud/\u0001{i}"), None, "infer", "reply_to"),
        (infer, req("a/#"), None, "infer", "reply_to"),
        (infer, req("a/+/b"), None, "infer", "reply_to"),
        (infer, req("r" * 70_000), None, "infer", "reply_to"),
        (infer, req("$SYS/broker/x"), None, "infer", "reply_to"),
        (infer, req(f"{ROOT}/cmd"), None, "infer", "reply_to"),
        (infer, req("edge/plant/n2/alerts"), None, "infer", "reply_to"),
        (infer, req("spBv1.0/plant/NCMD/n1"), None, "infer", "reply_to"),
        (infer, req(7), None, "infer", "reply_to"),
        (infer, json.dumps({"inputs": {"x": x}}), response_topic("a/#"), "infer", "reply_to"),
        (infer, json.dumps({"inputs": {"x": x}}), response_topic("$SYS/x"), "infer", "reply_to"),
        # numbers no decoder or float can hold, nesting, bytes that are not JSON
        (infer, '{"inputs": {"x": [[' + huge_int + "]]}}", None, "infer", "payload"),
        (infer, '{"inputs": {"x": [[[' + big_int + "]]]}}", None, "infer", "x"),
        (infer, overflow, None, "infer", "x"),
        (infer, nan_out, None, "infer", "inputs"),
        (infer, '{"id": 1e400, "inputs": {"x": 1}}', None, "infer", "id"),
        (infer, '{"inputs": ' + deep + "}", None, "infer", "payload"),
        (infer, '{"inputs": {"x": ' + shallow_deep + "}}", None, "infer", "payload"),
        (infer, json.dumps({"inputs": "x"}), None, "infer", "inputs"),
        (sensors, '{"t": ' + huge_int + ', "values": []}', None, "sensors", "payload"),
        (sensors, '{"t": ' + big_int + ', "values": []}', None, "sensors", "t"),
        (sensors, '{"t": 1e400, "values": [1]}', None, "sensors", "t"),
        (sensors, '{"rows": ' + deep + "}", None, "sensors", "payload"),
        (sensors, b'\xff\xfe{"t": 1}', None, "sensors", "payload"),
        (sensors, json.dumps([{"t": 1, "values": [0.0] * N_SENSORS}]), None, "sensors", "payload"),
        (sensors, json.dumps({"t": "noon", "values": [0.0] * N_SENSORS}), None, "sensors", "t"),
        (sensors, json.dumps({"rows": 5}), None, "sensors", "rows"),
        (cmd, '{"cmd": "telemetry_interval", "value": ' + big_int + "}", None, "cmd", "value"),
    ]


def test_hostile_messages_cost_only_themselves(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    cloud = mqtt_client_factory(broker)
    for suffix in ("results", "errors"):
        cloud.subscribe(f"{ROOT}/{suffix}")
    cloud.subscribe("cloud/replies/#")
    cloud.subscribe("edge/plant/cloud/replies/#")
    node = make_node(broker, sensor_bundles["v1"])

    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.max_inflight_messages_set(100)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    pending: list[mqtt.MQTTMessageInfo] = []

    def send(topic: str, payload: bytes | str, props: Properties | None = None) -> None:
        pending.append(sender.publish(topic, payload, qos=1, properties=props))

    n_rows = ROUNDS * len(_hostile(0))  # one valid row after each hostile message
    rows = np.random.default_rng(0).standard_normal((n_rows, N_SENSORS)).astype(np.float32)
    expected: Counter[tuple[str, str]] = Counter()
    valid_requests: dict[str, list[Any]] = {}
    t = 0
    try:
        for i in range(ROUNDS):
            for topic, payload, props, kind, field in _hostile(i):
                send(topic, payload, props)
                expected[(kind, field)] += 1
                # Valid input interleaved: sensor rows (whole windows) and infer requests.
                send(f"{ROOT}/sensors", json.dumps({"t": t, "values": rows[t].tolist()}))
                t += 1
            for k in range(3):
                rid = f"v{i}-{k}"
                valid_requests[rid] = _window_x(i * 3 + k)
                body = {"id": rid, "inputs": {"x": valid_requests[rid]}}
                if k == 0:  # behind the default bridge, replies travel under edge/
                    body["reply_to"] = f"edge/plant/cloud/replies/{rid}"
                    send(f"{ROOT}/infer", json.dumps(body))
                else:  # the MQTT 5 way: response topic and correlation data
                    props = Properties(PacketTypes.PUBLISH)
                    # U+FEFF is valid in MQTT 5 strings; paho used to drop the link on it
                    props.ResponseTopic = "cloud/replies/" + BOM * (k == 2) + rid
                    props.CorrelationData = rid.encode()
                    send(f"{ROOT}/infer", json.dumps(body), props)
        deadline = time.monotonic() + 20
        for info in pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        assert all(info.is_published() for info in pending), "the broker did not take them all"
    finally:
        sender.disconnect()
        sender.loop_stop()

    hostile = sum(expected.values())
    assert hostile >= 1000
    n_windows = t - WINDOW + 1

    def done(msgs: list[Received]) -> bool:
        errors = [m for m in msgs if m.topic.endswith("/errors")]
        results = [m for m in msgs if m.topic.endswith("/results")]
        replies = [m for m in msgs if "cloud/replies/" in m.topic]
        return (
            len(errors) >= hostile
            and len(results) >= n_windows
            and len(replies) >= len(valid_requests)
        )

    msgs = cloud.wait_for(done, timeout=30)

    # Every hostile message answered on errors, naming the field it got wrong.
    errors = _bodies(msgs, "/errors")
    assert Counter((e["input"], e["field"]) for e in errors) == expected

    # No valid input lost: every window of the stream, every infer reply.
    results = _bodies(msgs, "/results")
    assert sorted(r["window"]["seq"] for r in results) == list(range(n_windows))
    replies = {json.loads(m.payload)["request_id"]: m for m in msgs if "cloud/replies/" in m.topic}
    assert set(replies) == set(valid_requests)
    assert replies["v0-2"].topic == "cloud/replies/\ufeffv0-2"
    with Runtime.load(sensor_bundles["v1"]) as rt:
        for rid in list(valid_requests)[:6]:
            body = json.loads(replies[rid].payload)
            assert body["request_id"] == rid
            expected_out = rt.infer(np.asarray(valid_requests[rid], np.float32))["out"]
            np.testing.assert_allclose(body["outputs"]["out"], expected_out, atol=1e-5)
        first = rows[:WINDOW].T[None]
        seq0 = next(r for r in results if r["window"]["seq"] == 0)
        np.testing.assert_allclose(seq0["outputs"]["out"], rt.infer(first)["out"][0], atol=1e-5)
    assert replies["v0-1"].properties.CorrelationData == b"v0-1"
    assert replies["v3-2"].properties.CorrelationData == b"v3-2"

    # The node's one connection never dropped, and nothing was dropped uncounted.
    assert node.link.stats.connects == 1 and node.link.stats.disconnects == 0
    assert node.stats.dropped == 0 and node.stats.overloaded == 0
    assert node.stats.messages == hostile + t + len(valid_requests)
    log = broker.log_tail(400)
    node_lines = [line for line in log.splitlines() if node.link.client_id in line]
    assert len(node_lines) == 1 and "New client connected" in node_lines[0], node_lines


def test_a_response_topic_with_nul_never_reaches_the_node(
    broker, make_node, mqtt_client_factory, sensor_bundles
):
    """mosquitto refuses the PUBLISH itself (the sender is disconnected): the node sees nothing."""
    cloud = mqtt_client_factory(broker)
    cloud.subscribe(f"{ROOT}/errors")
    node = make_node(broker, sensor_bundles["v1"])
    gone: list[Any] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_disconnect = lambda *args: gone.append(args[3])
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "cloud/\u0000replies"
        client.publish(f"{ROOT}/infer", b"{}", qos=0, properties=props)
        deadline = time.monotonic() + 10
        while not gone and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.loop_stop()
    assert gone, "the broker took a response topic holding NUL"
    # The node still answers (no reply topic: the error goes on errors).
    cloud.publish(f"{ROOT}/infer", json.dumps({"inputs": 5}))
    msgs = cloud.wait_for(1, timeout=10)
    assert node.link.stats.disconnects == 0
    assert json.loads(msgs[-1].payload)["field"] == "inputs"


@pytest.mark.parametrize(
    ("topic", "words"),
    [
        ("a/\u0000b", "U+0000"),
        ("a/\u0085b", "U+0085"),
        ("a/\ud800", "U+D800"),
        ("a/\U0010ffff", "U+10FFFF"),
        ("a/#", "wildcard"),
        ("a/+", "wildcard"),
        ("$SYS/x", "'$'"),
        ("", "non-empty"),
        ("t" * 65_536, "65536 bytes"),
        (b"a/b", "expected a topic string"),
    ],
)
def test_check_topic_refuses_what_mosquitto_disconnects_for(topic: Any, words: str) -> None:
    from edge_sdk.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="reply_to") as info:
        check_topic(topic, "reply_to")
    assert words in str(info.value)


def test_check_topic_accepts_what_mosquitto_publishes() -> None:
    for topic in ("a/b", "cloud/replies/7", "t" * 65_535, "é/\ufeff/ü", "a b/c"):
        assert check_topic(topic) == topic


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b'{"t": ' + b"9" * 5000 + b"}", "4300 digits"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64"),
        (b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}", "nested deeper than 64"),
        (b'\xff{"a": 1}', "not UTF-8"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'{"a": 1', "not valid JSON"),
        # an unterminated string of escaped quotes with brackets after it: the depth count
        # must stay linear (a regex over strings took minutes on 200 kB of this)
        (b'{"a": "' + b'\\"' * 100_000 + b"[" * 70, "not valid JSON"),
    ],
)
def test_loads_maps_every_decoding_failure_to_the_payload_field(payload: bytes, words: str) -> None:
    from edge_sdk.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"^payload: ") as info:
        loads(payload, 1 << 20)
    assert words in str(info.value)


def test_loads_keeps_brackets_in_strings_and_depth_at_the_limit() -> None:
    at_limit = loads(b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}", 1 << 20)["a"]
    depth = 1  # the object itself
    while isinstance(at_limit, list):
        at_limit, depth = (at_limit[0] if at_limit else None), depth + 1
    assert depth == MAX_JSON_DEPTH
    text = '{"s": "' + "[" * 500 + '\\"' + "{" * 100 + '"}'
    assert loads(text.encode(), 1 << 20)["s"] == "[" * 500 + '"' + "{" * 100


def test_a_failed_merged_batch_is_retried_window_by_window(
    broker, make_node, mqtt_client_factory, sensor_bundles, monkeypatch
):
    """A backend call that fails for one input fails the merged batch; the others still run."""
    cloud = mqtt_client_factory(broker)
    for suffix in ("results", "errors"):
        cloud.subscribe(f"{ROOT}/{suffix}")
    node = make_node(broker, sensor_bundles["v1"])
    rt = node.model.runtime
    real_infer = rt.infer

    def infer(x: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        # Fault injection around the real backend: it chokes on one reading (row 25).
        if (np.asarray(x) == 777.0).any():
            raise RuntimeError("onnxruntime failed on this input (injected)")
        return real_infer(x, **kwargs)

    monkeypatch.setattr(rt, "infer", infer)
    rows = np.random.default_rng(5).standard_normal((40, N_SENSORS))
    rows[25, 7] = 777.0
    # One message: its 21 windows run as one merged backend call.
    body = {"rows": [{"t": t, "values": row.tolist()} for t, row in enumerate(rows)]}
    cloud.publish(f"{ROOT}/sensors", json.dumps(body))
    msgs = cloud.wait_for(lambda m: len(m) >= 21, timeout=20)
    good = sorted(b["window"]["seq"] for b in _bodies(msgs, "/results"))
    bad = sorted(e["window"]["seq"] for e in _bodies(msgs, "/errors"))
    assert good == list(range(6))  # windows 0-5 end before row 25
    assert bad == list(range(6, 21))  # every window holding row 25, each named
    assert all("injected" in e["error"] for e in _bodies(msgs, "/errors"))
    assert node.stats.retried_batches == 1
    with Runtime.load(sensor_bundles["v1"]) as ref:
        first = ref.infer(rows[:WINDOW].T[None].astype(np.float32))["out"][0]
    seq0 = next(b for b in _bodies(msgs, "/results") if b["window"]["seq"] == 0)
    np.testing.assert_allclose(seq0["outputs"]["out"], first, atol=1e-5)


def test_a_stored_row_with_a_bad_topic_is_dropped_not_retried(
    broker, tmp_path, mqtt_client_factory
):
    """An outbox row whose topic the broker would refuse (written by an older node) is
    dropped and counted; the rows after it are delivered and the link never drops."""
    import sqlite3

    from edge_sdk.mqtt.config import BrokerConfig
    from edge_sdk.mqtt.link import MqttLink
    from edge_sdk.node.outbox import Outbox, Outgoing

    cloud = mqtt_client_factory(broker)
    cloud.subscribe("plant/#")
    db = tmp_path / "outbox.sqlite"
    with Outbox(db) as ob:
        ob.put_many([Outgoing(f"plant/{k}", f"row {k}".encode()) for k in range(3)])
    with sqlite3.connect(db) as con:  # what an older node could have stored
        con.execute("UPDATE outbox SET topic = ? WHERE seq = 2", ("plant/\u0001bad",))
    outbox = Outbox(db)
    link = MqttLink(BrokerConfig(url=broker.url), client_id="old-node", outbox=outbox)
    try:
        link.start()
        assert link.wait_connected(10)
        msgs = cloud.wait_for(2, timeout=10)
        deadline = time.monotonic() + 5
        while outbox.stats().pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(m.payload for m in msgs) == [b"row 0", b"row 2"]
        assert link.stats.refused_topics == 1
        assert outbox.stats().pending == 0
        assert link.stats.connects == 1 and link.stats.disconnects == 0
    finally:
        link.stop()
        outbox.close()


def test_deep_nesting_is_refused_even_where_a_library_raised_the_recursion_limit() -> None:
    # torch and TensorFlow raise sys.setrecursionlimit; CPython's C JSON decoder then
    # overflows the C stack on 100,000 nested arrays (SIGSEGV) before any RecursionError.
    code = (
        "import sys; sys.setrecursionlimit(10**6)\n"
        "from edge_sdk.errors import InvalidInputError\n"
        "from edge_sdk.mqtt.topics import loads\n"
        "try:\n"
        "    loads(b'{\"a\": ' + b'[' * 100_000 + b']' * 100_000 + b'}', 1 << 20)\n"
        "except InvalidInputError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("payload: nested deeper than 64")
