"""The node scores events (transactions) on their subgraphs: MQTT, local, HTTP, explanations.

One tiny seeded GATv2 (``edge_attr``, ``logits`` [N, 2]) exported for ONNX
Runtime with an event-graph spec, shared by the module; a small synthetic
stream of payments over a few accounts, devices, IPs and merchants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import Runtime
from edge_sdk.eventgraph import EventGraphSpec, EventGraphStore

pytestmark = [pytest.mark.requires_backend("onnxruntime"), pytest.mark.timeout(120)]

CHANNELS = ["web", "app", "pos", "transfer"]
#: Module-level names the outage test and the benchmark reuse.
SPEC_FIELDS: dict[str, Any] = {
    "roles": {
        "src": "account",
        "dst": "account",
        "merchant": "merchant",
        "device": "device",
        "ip": "ip",
    },
    "numeric": ["amount"],
    "categorical": {"channel": CHANNELS},
    "fanout": 4,
}


def make_events(n: int, seed: int = 0, accounts: int = 12, start: int = 0) -> list[dict[str, Any]]:
    """``n`` SYNTHETIC payments in time order; ids ``tx{start}...``; shared devices and IPs."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(start, start + n):
        src = int(rng.integers(accounts))
        transfer = rng.random() < 0.3
        events.append(
            {
                "id": f"tx{i}",
                "t": round(i * 0.25, 3),
                "src": f"a{src}",
                "dst": f"a{int(rng.integers(accounts))}" if transfer else None,
                "merchant": None if transfer else f"m{int(rng.integers(5))}",
                "device": f"d{(src + int(rng.integers(2))) % (accounts // 2)}",
                "ip": f"i{int(rng.integers(4))}",
                "amount": round(float(rng.lognormal(3, 1)), 2),
                "channel": "transfer" if transfer else CHANNELS[int(rng.integers(3))],
            }
        )
    return events


def tiny_fraud_model(spec: EventGraphSpec) -> Any:
    """A seeded 2-layer GATv2 over ``x, edge_index, edge_attr`` with ``logits`` [N, 2]."""
    import torch
    from torch_geometric.nn import GATv2Conv

    class TinyFraud(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            f, a = spec.num_node_features, spec.num_edge_features
            self.c1 = GATv2Conv(f, 8, heads=2, edge_dim=a)
            self.c2 = GATv2Conv(16, 2, heads=1, edge_dim=a)

        def forward(self, x: Any, edge_index: Any, edge_attr: Any) -> Any:
            h = self.c1(x, edge_index, edge_attr).relu()
            return self.c2(h, edge_index, edge_attr)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return TinyFraud().eval()


def export_tiny_fraud(out: Path, events: list[dict[str, Any]], alert_rate: float = 0.1) -> Path:
    """Export the tiny model with its spec; the threshold alerts ``alert_rate`` of ``events``."""
    import torch

    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    spec = EventGraphSpec(**SPEC_FIELDS)
    model = tiny_fraud_model(spec)
    store = EventGraphStore(spec)
    graphs = [store.score_request(e) for e in events]
    offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
    union = [
        np.concatenate([g.x for g in graphs]),
        np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets, strict=False)], 1),
        np.concatenate([g.edge_attr for g in graphs]),
    ]
    with torch.no_grad():  # one call on the disjoint union; node 0 of each graph is its event
        logits = model(*(torch.from_numpy(a) for a in union))[offsets[:-1]]
    scores = torch.softmax(logits, 1)[:, 1].numpy()
    threshold = float(np.quantile(scores, 1 - alert_rate))
    spec = spec.model_copy(update={"threshold": threshold})
    sample = sample_from_arrays(max(graphs, key=lambda g: g.num_nodes).inputs())
    cfg = ExportConfig(
        name="tiny-fraud",
        form="dynamic",
        aggregation="scatter",
        output_names=["logits"],
        event_graph=spec,
    )
    export_model(model, sample, out, cfg)
    return out


@pytest.fixture(scope="module")
def fraud_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_fraud(tmp_path_factory.mktemp("fraud") / "fraud.bundle", make_events(200))


def _bodies(messages: list[Any], suffix: str) -> list[dict]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


def decisions(messages: list[Any]) -> list[dict]:
    """Every decision of the ``results`` messages, in arrival order (duplicates kept)."""
    return [d for b in _bodies(messages, "/results") for d in b.get("decisions", [])]


def reference_scores(bundle: Path, events: list[dict[str, Any]]) -> dict[str, float]:
    """Each event's score by ``Runtime.infer`` on its own subgraph, from a fresh store."""
    rt = Runtime.load(bundle)
    store = EventGraphStore(rt.manifest.event_graph)
    out = {}
    for e in events:
        logits = rt.infer(store.score_request(e).inputs())["logits"][0].astype(np.float64)
        z = np.exp(logits - logits.max())
        out[e["id"]] = float(z[1] / z.sum())
    return out


def test_mqtt_scores_equal_runtime_and_alerts_explain(
    broker, make_node, mqtt_client_factory, fraud_bundle
):
    events = make_events(200)
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/#")
    node = make_node(broker, fraud_bundle, max_batch=16)
    # 60 single-event messages, then the rest as lists: both wire forms.
    for e in events[:60]:
        cloud.client.publish("edge/plant/n1/events", json.dumps(e), qos=1)
    for i in range(60, 200, 35):
        cloud.publish("edge/plant/n1/events", json.dumps({"events": events[i : i + 35]}))
    msgs = cloud.wait_for(lambda m: len(decisions(m)) >= 200, timeout=30)
    got = decisions(msgs)
    assert [d["id"] for d in got] == [e["id"] for e in events]  # arrival order, each once
    ref = reference_scores(fraud_bundle, events)
    np.testing.assert_allclose([d["score"] for d in got], [ref[d["id"]] for d in got], atol=2e-6)
    assert [d["src"] for d in got] == [e["src"] for e in events]
    threshold = node.worker.events.spec.threshold
    flagged = {d["id"] for d in got if d["alert"]}
    assert flagged == {k for k, s in ref.items() if s >= threshold} and flagged
    # Alerts follow their decisions (explained by the node's explainer process).
    explained = cloud.wait_for(lambda m: len(_bodies(m, "/alerts")) >= len(flagged), timeout=30)
    alerts = {a["id"]: a for a in _bodies(explained, "/alerts")}
    assert set(alerts) == flagged
    # The top entry of `why` really lowers the score most: recompute every occlusion.
    rt = Runtime.load(fraud_bundle)
    store = EventGraphStore(rt.manifest.event_graph)
    graphs = {e["id"]: store.score_request(e) for e in events}
    checked = 0
    for eid, alert in alerts.items():
        sg = graphs[eid]
        drops = {}
        for nb in sg.neighbour_events():
            lg = rt.infer(sg.without_event(nb).inputs())["logits"][0].astype(np.float64)
            drops[nb] = ref[eid] - float(np.exp(lg[1]) / np.exp(lg).sum())
        why = alert["why"]
        assert len(why) == min(3, len(drops))
        if not why:
            continue
        checked += 1
        assert why[0]["event"] == max(drops, key=drops.get)
        for w in why:
            assert w["drop"] == pytest.approx(drops[w["event"]], abs=2e-6)
            assert w["entity"].split(":")[0] in {"account", "merchant", "device", "ip"}
            assert w["role"] in SPEC_FIELDS["roles"]
        assert [w["drop"] for w in why] == sorted((w["drop"] for w in why), reverse=True)
    assert checked >= 5


def test_merged_batches_equal_one_by_one(tmp_path, make_node, fraud_bundle):
    """The same stream through max_batch 32 (merged unions) and max_batch 1."""
    events = make_events(150, seed=1)
    scores = {}
    for mb in (1, 32):
        got: list[dict] = []
        node = make_node(None, fraud_bundle, node_id=f"mb{mb}", max_batch=mb)
        node.on_result = lambda body, got=got: got.extend(body["decisions"])
        node.submit_events(events)
        deadline = time.monotonic() + 20
        while len(got) < len(events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [d["id"] for d in got] == [e["id"] for e in events]
        scores[mb] = np.array([d["score"] for d in got])
        if mb == 32:
            assert node.stats.batches < len(events) / 4  # merged, not one call per event
    np.testing.assert_allclose(scores[32], scores[1], atol=1e-5)


def test_bad_events_are_answered_and_the_rest_scored(
    broker, make_node, mqtt_client_factory, fraud_bundle
):
    events = make_events(12, seed=2)
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/#")
    node = make_node(broker, fraud_bundle)
    missing = {k: v for k, v in events[3].items() if k != "src"}
    late = {**events[5], "id": "late", "t": events[5]["t"] - 100}
    batch = [*events[:3], missing, events[4], events[5], late, "not an event", *events[6:]]
    cloud.publish("edge/plant/n1/events", json.dumps({"events": batch}))
    cloud.publish("edge/plant/n1/events", b"{not json")
    node.submit_events([{**events[6], "id": "nan", "amount": float("nan")}])
    msgs = cloud.wait_for(lambda m: len(_bodies(m, "/errors")) >= 5, timeout=20)
    got = [d["id"] for d in decisions(cloud.wait_for(lambda m: len(decisions(m)) >= 11, 20))]
    assert got == [e["id"] for e in events if e is not events[3]]
    errors = {(e["field"], e.get("event")) for e in _bodies(msgs, "/errors")}
    assert errors == {
        ("events[3].src", "tx3"),
        ("events[6].t", "late"),
        ("events[7]", None),
        ("payload", None),
        ("events[0].amount", None),
    }
    assert all(e["input"] == "events" for e in _bodies(msgs, "/errors"))


def test_http_subgraph_request_scores_like_mqtt(make_node, fraud_bundle):
    """KServe v2 over the node's HTTP adapter (edge-node run --http) on one event's subgraph."""
    import urllib.request

    from edge_sdk.cli.node_cli import _NodeModel
    from edge_sdk.serving.http import InferenceServer

    events = make_events(40, seed=4)
    got: list[dict] = []
    node = make_node(None, fraud_bundle, node_id="http")
    node.on_result = lambda body: got.extend(body["decisions"])
    node.submit_events(events)
    deadline = time.monotonic() + 20
    while len(got) < len(events) and time.monotonic() < deadline:
        time.sleep(0.02)
    store = EventGraphStore(node.worker.events.spec)
    sg = [store.score_request(e) for e in events][-1]
    adapter = _NodeModel(node)
    server = InferenceServer(adapter, host="127.0.0.1", port=0, predictor=adapter).start()
    try:
        inputs = [
            {
                "name": k,
                "shape": list(v.shape),
                "datatype": "FP32" if v.dtype.kind == "f" else "INT64",
                "data": v.ravel().tolist(),
            }
            for k, v in sg.inputs().items()
        ]
        req = urllib.request.Request(
            f"{server.url}/v2/models/tiny-fraud/infer",
            data=json.dumps({"inputs": inputs}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
    finally:
        server.stop()
    out = next(o for o in body["outputs"] if o["name"] == "logits")
    logits = np.array(out["data"], dtype=np.float64).reshape(out["shape"])[0]
    score = float(np.exp(logits[1]) / np.exp(logits).sum())
    assert got[-1]["id"] == events[-1]["id"]
    assert score == pytest.approx(got[-1]["score"], abs=2e-6)


def test_alerts_past_the_occlusion_budget_go_out_without_why(make_node, fraud_bundle, monkeypatch):
    import edge_sdk.node.occlusion as occlusion

    monkeypatch.setattr(occlusion, "MAX_OCCLUSIONS", 0)
    events = make_events(200)
    got: list[dict] = []
    node = make_node(None, fraud_bundle, node_id="budget", explain_in="worker")
    node.on_result = lambda body: got.extend(body["decisions"])
    alerts: list[dict] = []
    message = node.message  # the real one, also recording the alert bodies it is given
    node.message = lambda kind, body, prio: (
        alerts.append(body) if kind.value == "alerts" else None,
        message(kind, body, prio),
    )[1]
    node.submit_events(events)
    deadline = time.monotonic() + 20
    while (len(got) < len(events) or len(alerts) < node.stats.alerts) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert len(got) == len(events) and any(d["alert"] for d in got)
    assert node.stats.alerts == sum(d["alert"] for d in got)  # every alert still raised
    assert len(alerts) == node.stats.alerts and all(a["why"] == [] for a in alerts)


def test_alerts_are_explained_in_slices_after_their_decisions_and_never_before_later_ones(
    make_node, fraud_bundle, monkeypatch
):
    """Explanations (dozens of inferences per alert) never hold back a later batch.

    Each slice explains one alert here. The first explanation waits until the
    second batch has been sent: that batch's decisions must then be committed
    before the first batch's remaining alerts are explained (explained before
    the next batch, they would all come first). Every alert is committed after
    its decision; a bug in one explanation costs only its ``why``.
    """
    import threading

    import edge_sdk.node.occlusion as occlusion

    events = make_events(200)
    node = make_node(None, fraud_bundle, node_id="order", max_batch=8, explain_in="worker")
    node.worker.explanations.copies_per_slice = 1  # one alert per slice
    bodies: dict[int, tuple[str, dict]] = {}  # id(outgoing) -> (kind, body)
    message = node.message

    def recording_message(kind: Any, body: dict, prio: Any) -> Any:
        out = message(kind, body, prio)
        bodies[id(out)] = (kind.value, body)
        return out

    node.message = recording_message
    committed: list[tuple[str, dict]] = []  # in commit order
    commit = node.commit

    def recording_commit(out: list, state: Any = None) -> None:
        commit(out, state)
        committed.extend(bodies[id(o)] for o in out if id(o) in bodies)

    node.commit = recording_commit
    second_sent = threading.Event()
    calls = {"n": 0}
    occlusions = occlusion.occlusions

    def waiting_then_failing(sg: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the first explanation: only once the second batch is queued
            assert second_sent.wait(timeout=30)
        if calls["n"] == 2:  # the second hits a bug; later ones do not
            raise RuntimeError("synthetic failure while building occluded copies")
        return occlusions(sg)

    monkeypatch.setattr(occlusion, "occlusions", waiting_then_failing)
    got: list[dict] = []
    node.on_result = lambda body: got.extend(body["decisions"])
    # Split after the third alerted event: the first batch has several alerts to explain.
    threshold = Runtime.load(fraud_bundle).manifest.event_graph.threshold
    scores = reference_scores(fraud_bundle, events)
    alerted_at = [i for i, e in enumerate(events) if scores[e["id"]] >= threshold]
    assert len(alerted_at) >= 4, "the tiny model alerts too rarely for this test"
    first, second = events[: alerted_at[2] + 1], events[alerted_at[2] + 1 :]
    node.submit_events(first)  # one message: one batch
    deadline = time.monotonic() + 30
    while len(got) < len(first):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert node.stats.alerts == 3
    node.submit_events(second)
    second_sent.set()
    deadline = time.monotonic() + 60
    while len(got) < len(events) or node.stats.alerts > sum(k == "alerts" for k, _ in committed):
        assert time.monotonic() < deadline, (len(got), node.stats.alerts)
        time.sleep(0.02)
    assert [d["id"] for d in got] == [e["id"] for e in events]  # none lost
    alerts = [(i, b) for i, (k, b) in enumerate(committed) if k == "alerts"]
    alerted = [d["id"] for d in got if d["alert"]]
    assert sorted(b["id"] for _, b in alerts) == sorted(alerted)
    decided_at = {}
    for i, (kind, body) in enumerate(committed):
        if kind == "results":
            decided_at.update((d["id"], i) for d in body["decisions"])
    assert all(decided_at[b["id"]] < i for i, b in alerts)  # each after its decision
    assert len(alerts) == len({i for i, _ in alerts})  # one alert per commit (per slice)
    first_ids = {e["id"] for e in first}
    second_results = min(decided_at[e["id"]] for e in second)
    last_first_alert = max(i for i, b in alerts if b["id"] in first_ids)
    assert second_results < last_first_alert  # a later batch did not wait for them
    assert alerts[1][1]["why"] == []  # the failed explanation's alert still went out
    assert alerts[0][1]["why"] and all(b["why"] for _, b in alerts[2:])


def test_node_sends_mqtt_packets_without_nagle_delay(broker, make_node, fraud_bundle):
    """TCP_NODELAY on the node's socket: a PUBLISH after a PUBACK does not wait ~40 ms."""
    import socket

    node = make_node(broker, fraud_bundle, node_id="nodelay")
    sock = node.link._client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_max_delay_ms_waits_for_a_fuller_batch_up_to_max_batch(make_node, fraud_bundle):
    """One-event messages arriving within ``max_delay_ms`` share one batch and results
    message; the ``max_batch``-th message closes the batch long before the delay is over."""
    events = make_events(8, seed=3)
    bodies: list[dict] = []
    node = make_node(None, fraud_bundle, node_id="delay", max_batch=8, max_delay_ms=10_000)
    node.on_result = bodies.append
    for ev in events[:5]:  # five messages, well inside the delay
        node.submit_events([ev])
        time.sleep(0.01)
    time.sleep(0.5)
    assert bodies == []  # still waiting: 5 < max_batch, and the delay is 10 s
    start = time.monotonic()
    for ev in events[5:]:
        node.submit_events([ev])
    while not bodies:
        assert time.monotonic() - start < 5, "the batch waited for the delay, not max_batch"
        time.sleep(0.01)
    assert len(bodies) == 1 and [d["id"] for d in bodies[0]["decisions"]] == [
        e["id"] for e in events
    ]


@pytest.mark.parametrize("explain_in", ["worker", "process"])
def test_waiting_alerts_are_bounded_and_a_failed_alerts_commit_costs_only_those_alerts(
    make_node, fraud_bundle, explain_in
):
    """Past ``max_waiting`` the worker explains (or waits for the explainer process) before
    its next batch (backpressure, not memory); an ``alerts`` commit that fails (the disk)
    loses those alerts, not the worker."""
    events = make_events(200)
    node = make_node(None, fraud_bundle, node_id="bound", max_batch=8, explain_in=explain_in)
    waiting = node.worker.explanations
    waiting.max_waiting, waiting.copies_per_slice = 1, 1
    left: list[int] = []
    add = waiting.add
    waiting.add = lambda scorer, alerts: (add(scorer, alerts), left.append(len(waiting)))[0]
    committed: list[str] = []
    commit = node.commit
    failed: list[bool] = []

    def disk_fails_once(out: list, state: Any = None) -> None:
        kinds = [o.topic.rsplit("/", 1)[1] for o in out]
        if "alerts" in kinds and not failed:
            failed.append(True)
            raise OSError("synthetic: disk full")
        commit(out, state)
        committed.extend(kinds)

    node.commit = disk_fails_once
    got: list[dict] = []
    node.on_result = lambda body: got.extend(body["decisions"])
    for i in range(0, len(events), 20):  # ten messages: several batches
        node.submit_events(events[i : i + 20])
    deadline = time.monotonic() + 30
    while len(got) < len(events) or committed.count("alerts") < node.stats.alerts - 1:
        assert time.monotonic() < deadline, (len(got), committed.count("alerts"))
        time.sleep(0.02)
    assert [d["id"] for d in got] == [e["id"] for e in events]
    assert left and max(left) <= 1
    assert failed and node.stats.errors >= 1
    assert committed.count("alerts") == sum(d["alert"] for d in got) - 1  # only the one lost
