"""Events over the node's KServe v2 HTTP endpoint (``edge-node run --http``).

A client posts the transactions themselves (an ``events`` BYTES input); the
node scores each in its store as of its time, exactly as over MQTT.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_events import export_tiny_fraud, make_events, reference_scores

from edge_sdk import Runtime
from edge_sdk.mqtt.topics import Inbound


@pytest.fixture(scope="module")
def fraud_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_fraud(tmp_path_factory.mktemp("fraud") / "fraud.bundle", make_events(200))


@contextlib.contextmanager
def http_for(node: Any) -> Iterator[str]:
    """The HTTP server ``edge-node run --http`` starts in front of ``node``; yields its URL."""
    from edge_sdk.cli.node_cli import _NodeModel
    from edge_sdk.serving.http import InferenceServer

    adapter = _NodeModel(node)
    server = InferenceServer(adapter, host="127.0.0.1", port=0, predictor=adapter).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def served(make_node: Any, fraud_bundle: Path) -> Iterator[tuple[Any, str]]:
    """A local node (no broker) behind the HTTP server ``edge-node run --http`` starts."""
    node = make_node(None, fraud_bundle, node_id="http-events", max_batch=8)
    with http_for(node) as url:
        yield node, url


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"{url}/v2/models/tiny-fraud/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def events_input(events: list[Any]) -> dict[str, Any]:
    data = [e if isinstance(e, str) else json.dumps(e) for e in events]
    return {"inputs": [{"name": "events", "shape": [len(data)], "datatype": "BYTES", "data": data}]}


def test_posted_events_are_scored_in_the_store_like_mqtt_ones(served, fraud_bundle):
    """Scores equal a fresh store's one by one; a bad event costs itself, named in ``error``;
    the decisions also go out on ``results``, and the metadata lists the events tensors."""
    node, url = served
    events = make_events(60, seed=5)
    expected = reference_scores(fraud_bundle, events)
    got: list[dict] = []
    node.on_result = lambda body: got.extend(body["decisions"])
    bad = {**events[30], "id": "bad-channel", "channel": "carrier-pigeon"}
    status, body = post(url, events_input([*events[:30], bad]))
    assert status == 200, body
    status2, body2 = post(url, events_input(events[30:]))  # the store remembers the first 30
    assert status2 == 200, body2
    out = {o["name"]: o for o in body["outputs"]}
    out2 = {o["name"]: o for o in body2["outputs"]}
    assert out["id"]["data"] == [e["id"] for e in events[:30]] + ["bad-channel"]
    assert out["id"]["shape"] == [31] and out["score"]["datatype"] == "FP64"
    ids = out["id"]["data"][:30] + out2["id"]["data"]
    scores = out["score"]["data"][:30] + out2["score"]["data"]
    assert ids == [e["id"] for e in events]
    assert scores == pytest.approx([expected[i] for i in ids], abs=2e-6)
    threshold = Runtime.load(fraud_bundle).manifest.event_graph.threshold
    alerts = out["alert"]["data"][:30] + out2["alert"]["data"]
    assert alerts == [expected[i] >= threshold for i in ids]
    assert out["error"]["data"][:30] == [""] * 30
    assert out["score"]["data"][30] == -1.0 and out["error"]["data"][30].startswith("channel:")
    assert "carrier-pigeon" in out["error"]["data"][30]
    deadline = time.monotonic() + 10
    while len(got) < len(events) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [d["id"] for d in got] == ids  # and on results, as over MQTT

    with urllib.request.urlopen(f"{url}/v2/models/tiny-fraud", timeout=10) as resp:
        meta = json.loads(resp.read())
    assert {"name": "events", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert {o["name"] for o in meta["outputs"]} >= {"logits", "id", "score", "alert", "error"}


def test_events_refused_by_a_full_queue_are_answered_at_once_not_after_the_timeout(
    make_node, fraud_bundle
):
    """A node whose queue stays full answers the posted events with a ``queue`` error per
    event within about a second (the queue's wait), not a 503 after EVENTS_TIMEOUT_S."""
    from edge_sdk.cli.node_cli import EVENTS_TIMEOUT_S
    from edge_sdk.node.ingress import Message

    node = make_node(None, fraud_bundle, node_id="http-full", queue_size=1)
    node.worker.stop()  # nothing drains the queue from here on
    node.ingress.queue.put_nowait(Message(Inbound.EVENTS, b"{}", None, time.monotonic()))
    events = make_events(3, seed=9)
    with http_for(node) as url:
        t0 = time.monotonic()
        status, body = post(url, events_input(events))
        waited = time.monotonic() - t0
    assert status == 200, body
    assert waited < min(10.0, EVENTS_TIMEOUT_S)
    out = {o["name"]: o for o in body["outputs"]}
    assert out["id"]["data"] == [e["id"] for e in events]
    assert out["score"]["data"] == [-1.0] * 3
    assert all(e.startswith("queue: node overloaded") for e in out["error"]["data"])
    assert node.stats.overloaded == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (events_input(["{not json"]), "events[0] is not valid JSON"),
        (events_input(["[1, 2]"]), "events[0] must be a JSON object"),
        (
            {"inputs": [{"name": "events", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            "expected BYTES",
        ),
        (
            {"inputs": [{"name": "events", "shape": [2], "datatype": "BYTES", "data": ["{}"]}]},
            "shape [n]",
        ),
        (
            {
                "inputs": [
                    {"name": "events", "shape": [1], "datatype": "BYTES", "data": ["{}"]},
                    {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]},
                ]
            },
            "one input",
        ),
        (events_input([]), "1 to 4096 events"),
    ],
)
def test_malformed_events_requests_are_refused_with_400_naming_the_problem(served, body, words):
    node, url = served
    got: list[dict] = []
    node.on_result = lambda b: got.extend(b["decisions"])
    status, answer = post(url, body)
    assert status == 400 and words in answer["error"], answer
    assert node.stats.messages == 0 and got == []  # nothing reached the store


def test_events_posted_to_a_server_without_an_event_store_are_refused(fraud_bundle):
    """``edge-node serve`` (a plain runtime, no store) says to use ``edge-node run --http``."""
    from edge_sdk.serving.http import InferenceServer

    rt = Runtime.load(fraud_bundle)
    server = InferenceServer(rt, host="127.0.0.1", port=0).start()
    try:
        status, answer = post(server.url, events_input(make_events(2, seed=6)))
    finally:
        server.stop()
    assert status == 400 and "edge-node run --http" in answer["error"], answer
