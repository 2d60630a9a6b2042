"""Alerts explained in the node's explainer process (``explain_in: process``, the default).

The process loads the node's model on the same engine, runs at a lower CPU
priority, is replaced when it dies, refuses another artifact than the node's,
and stops with the node.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_events import export_tiny_fraud, make_events

from edge_sdk import Runtime
from edge_sdk.eventgraph import EventGraphStore
from edge_sdk.node.explain_process import ExplainerError, ExplainerProcess, ModelKey
from edge_sdk.node.occlusion import explain, input_names, score_of


@pytest.fixture(scope="module")
def fraud_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_fraud(tmp_path_factory.mktemp("fraud") / "fraud.bundle", make_events(200))


def _alerted(bundle: Path, n: int = 200) -> tuple[Runtime, list[Any], list[float]]:
    """The subgraphs and scores of the events the tiny model alerts on."""
    rt = Runtime.load(bundle)
    store = EventGraphStore(rt.manifest.event_graph)
    graphs = [store.score_request(e) for e in make_events(n)]
    scores = [explain_score(rt, g) for g in graphs]
    thr = rt.manifest.event_graph.threshold
    kept = [(g, s) for g, s in zip(graphs, scores, strict=True) if s >= thr]
    assert len(kept) >= 4, "the tiny model alerts too rarely for this test"
    return rt, [g for g, _ in kept], [s for _, s in kept]


def explain_score(rt: Runtime, graph: Any) -> float:
    """The node's score of one subgraph (``softmax(logits[0])[1]``)."""
    return score_of(rt.infer(graph.inputs(input_names(rt.manifest))))


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_the_process_explains_exactly_as_the_node_would_at_a_lower_priority(fraud_bundle):
    rt, graphs, scores = _alerted(fraud_bundle)
    key = ModelKey.of(rt, fraud_bundle, "auto", [])
    process = ExplainerProcess(nice=5)
    try:
        got = process.explain(key, graphs, scores, top_k=3)
        pid = process.pid
        assert pid is not None and pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + 5
        )
        want = explain(rt, graphs, scores, top_k=3)
        assert [[w["event"] for w in why] for why in got] == [
            [w["event"] for w in why] for why in want
        ]
        for g, w in zip(got, want, strict=True):
            assert [x["drop"] for x in g] == pytest.approx([x["drop"] for x in w], abs=2e-6)
        assert all(got) and process.starts == 1
    finally:
        process.close()
    _wait(lambda: not _alive(pid), 5, "the child to exit after close()")


def test_a_child_that_dies_is_replaced_and_asked_again(fraud_bundle):
    """Killed during a request: a new child answers it; two in a row: the request fails
    naming the death; killed while idle: replaced at the next request."""
    rt, graphs, scores = _alerted(fraud_bundle)
    key = ModelKey.of(rt, fraud_bundle, "auto", [])
    process = ExplainerProcess()

    def kill_new_children(count: int) -> threading.Thread:
        """Kill the next ``count`` children as they start (importing: none can answer)."""

        def run() -> None:
            seen, left = process.starts, count
            deadline = time.monotonic() + 30
            while left and time.monotonic() < deadline:
                pid = process.pid
                if pid is not None and process.starts > seen:
                    seen, left = process.starts, left - 1
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.001)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    try:
        assert process.explain(key, graphs[:1], scores[:1], top_k=2)[0]
        idle = process.pid
        assert idle is not None
        os.kill(idle, signal.SIGKILL)
        _wait(lambda: process.pid is None, 5, "the idle child to be reaped")
        n = process.starts
        killer = kill_new_children(1)  # the request's child dies: a second one answers
        assert process.explain(key, graphs[:2], scores[:2], top_k=2)[1]
        killer.join()
        assert process.starts == n + 2 and process.pid is not None
        warm = process.pid
        os.kill(warm, signal.SIGKILL)
        _wait(lambda: process.pid is None, 5, "the warm child to be reaped")
        killer = kill_new_children(2)  # both children this request starts
        with pytest.raises(ExplainerError, match=r"died \(exit code -9\)"):
            process.explain(key, graphs[:1], scores[:1], top_k=2)
        killer.join()
        assert process.pid is None
    finally:
        process.close()


def test_another_artifact_than_the_nodes_is_refused_by_name(fraud_bundle):
    rt, graphs, scores = _alerted(fraud_bundle)
    key = ModelKey.of(rt, fraud_bundle, "auto", [])
    wrong = ModelKey(**{**key.__dict__, "sha256": "0" * 64})
    process = ExplainerProcess()
    try:
        with pytest.raises(ExplainerError, match=r"another .* artifact .*sha256 differs"):
            process.explain(wrong, graphs[:1], scores[:1], top_k=2)
        assert process.explain(key, graphs[:1], scores[:1], top_k=2)[0]  # same child
        assert process.starts == 1
    finally:
        process.close()


def test_the_node_explains_in_its_process_and_stops_it_with_itself(make_node, fraud_bundle):
    """Every alert of a node on the default ``explain_in`` carries a why from the child,
    also after the child was killed (a new one explains them); stop() ends the child."""
    events = make_events(200)
    node = make_node(None, fraud_bundle, node_id="explainer", max_batch=8)
    process = node.worker.explanations.process
    assert process is not None and process.pid is None  # started at the first alert only
    got: list[dict] = []
    node.on_result = lambda body: got.extend(body["decisions"])
    alerts: list[dict] = []
    message = node.message
    node.message = lambda kind, body, prio: (
        alerts.append(body) if kind.value == "alerts" else None,
        message(kind, body, prio),
    )[1]
    rt = Runtime.load(fraud_bundle)
    store = EventGraphStore(rt.manifest.event_graph)
    scores = [explain_score(rt, store.score_request(e)) for e in events]
    alerted_at = [i for i, s in enumerate(scores) if s >= rt.manifest.event_graph.threshold]
    assert len(alerted_at) >= 4, "the tiny model alerts too rarely for this test"
    split = alerted_at[1] + 1  # two alerts before the kill, the rest after it
    node.submit_events(events[:split])
    _wait(lambda: len(got) == split and len(alerts) == 2, 60, "the first two alerts")
    first, before = process.pid, len(alerts)
    assert first is not None and all(a["why"] for a in alerts)
    os.kill(first, signal.SIGKILL)
    node.submit_events(events[split:])
    _wait(lambda: len(got) == 200 and len(alerts) == node.stats.alerts, 60, "all alerts")
    assert [d["id"] for d in got] == [e["id"] for e in events]  # no decision lost
    assert sorted(a["id"] for a in alerts) == sorted(d["id"] for d in got if d["alert"])
    assert len(alerts) > before and all(a["why"] for a in alerts[before:])
    assert process.starts >= 2 and process.pid not in (None, first)
    last = process.pid
    node.stop()
    _wait(lambda: not _alive(last), 10, "the child to exit with the node")


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
