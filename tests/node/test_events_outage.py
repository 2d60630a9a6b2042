"""The uplink broker is cut for 30 s mid-stream: the node keeps deciding, delivers after.

Events are fed locally (``EdgeNode.submit_events``) at a steady rate; the real
mosquitto is stopped for 30 s and restarted on the same port; a persistent
subscriber collects the ``results``. Every decision arrives exactly once after
de-duplication by event id, and per account in event order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_events import decisions, export_tiny_fraud, make_events

pytestmark = [pytest.mark.requires_backend("onnxruntime"), pytest.mark.timeout(150)]

RATE = 40.0  # events per second, fed locally
CUT_S = 30.0


@pytest.fixture(scope="module")
def fraud_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_fraud(tmp_path_factory.mktemp("fraud") / "fraud.bundle", make_events(200))


def test_decisions_made_during_a_30s_broker_cut_arrive_after_in_order(
    broker, make_node, mqtt_client_factory, fraud_bundle
):
    cloud = mqtt_client_factory(broker, "cloud", clean_start=False, session_expiry_s=600)
    cloud.subscribe("edge/plant/n1/results")
    node = make_node(broker, fraud_bundle, max_batch=16, broker_opts={"reconnect_max_s": 1})
    events = make_events(int(RATE * (CUT_S + 8)), seed=7, accounts=20)

    def feed() -> None:
        start = time.monotonic()
        for i, e in enumerate(events):
            time.sleep(max(0.0, start + i / RATE - time.monotonic()))
            node.submit_events(e)

    feeder = threading.Thread(target=feed, name="feed-events", daemon=True)
    feeder.start()
    cloud.wait_for(lambda m: len(decisions(m)) >= 100, timeout=20)
    broker.stop()  # clean stop: the subscriber's session and subscription persist
    made_before = node.stats.inferences
    time.sleep(CUT_S)
    made_during = node.stats.inferences - made_before
    pending = node.outbox.stats().pending
    broker.restart()
    feeder.join()
    ids = [e["id"] for e in events]
    msgs = cloud.wait_for(lambda m: {d["id"] for d in decisions(m)} >= set(ids), timeout=60)

    assert made_during >= RATE * CUT_S * 0.8  # decided while the uplink was down...
    assert pending >= 1  # ...and held in the outbox meanwhile
    first: dict[str, dict] = {}
    for d in decisions(msgs):
        first.setdefault(d["id"], d)  # de-duplicate by event id (QoS 1: at least once)
    assert sorted(first, key=ids.index) == ids  # none lost, none extra
    order = {eid: i for i, eid in enumerate(ids)}
    by_account: dict[str, list[int]] = {}
    for eid in first:  # arrival order of first copies
        by_account.setdefault(first[eid]["src"], []).append(order[eid])
    assert len(by_account) >= 10
    for account, seen in by_account.items():
        assert seen == sorted(seen), f"decisions of {account} arrived out of event order"
    assert node.link.stats.disconnects >= 1
