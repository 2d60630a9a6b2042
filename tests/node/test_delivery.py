"""Input delivery guarantees against a real mosquitto and real node processes.

* A node SIGKILLed while it is behind loses no sensor row and no window: MQTT
  input is acknowledged only once its results and the window buffer are
  committed to the outbox, so the broker redelivers the rest to the restarted
  node, which drops what it already had as duplicates.
* Rows lost upstream show as a gap event on ``errors``; no window is computed
  across the hole (``on_gap: skip``) or each one that is says so (``flag``).
* One row with a timestamp from a broken clock is refused and does not poison
  the window for the real rows after it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Received, sensor_rows

N_SENSORS, WINDOW = 52, 20


def _bodies(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


class _ResultEnds:
    """A ``wait_for`` predicate: the window ends seen on ``/results``, parsed once each.

    ``wait_for`` calls its predicate on every message while holding the subscriber's
    lock (which paho's network thread needs to deliver the next one): re-parsing
    every result each time is quadratic, minutes of CPU for 4,000 results.
    """

    def __init__(self) -> None:
        self.ends: set[float] = set()
        self._parsed = 0

    def update(self, messages: list[Received]) -> set[float]:
        for m in messages[self._parsed :]:
            if m.topic.endswith("/results"):
                self.ends.add(json.loads(m.payload)["window"]["t_end"])
        self._parsed = len(messages)
        return self.ends


def _start_node(bundle: Path, state: Path, broker_url: str, **extra: Any) -> subprocess.Popen:
    """``edge-node run`` in its own process (the JSON scheme: a persistent MQTT session)."""
    config = {
        **extra,
        "node_id": "n1",
        "group": "plant",
        "bundle": str(bundle),
        "state_dir": str(state),
        "broker": {"url": broker_url, "reconnect_min_s": 0.5},
        "telemetry_interval_s": 0,
    }
    path = state.parent / f"{state.name}.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "edge_sdk.cli.node_cli", "run", "-c", str(path)]
    cmd += ["--duration", "120"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_online(cloud: Any, since: int) -> None:
    """Wait for a retained/live ``online`` status published after message ``since``."""

    def online(msgs: list[Received]) -> bool:
        return any(
            m.topic.endswith("/status") and json.loads(m.payload)["state"] == "online"
            for m in msgs[since:]
        )

    cloud.wait_for(online, timeout=60)


def test_node_sigkill_while_behind_loses_no_row_and_no_window(
    broker, mqtt_client_factory, sensor_bundles, tmp_path: Path
):
    rows = sensor_rows(4000)
    expected_ends = set(range(WINDOW - 1, len(rows)))  # stride 1: one window per row from t=19
    cloud = mqtt_client_factory(broker, "cloud", clean_start=False, session_expiry_s=600)
    cloud.subscribe("edge/plant/n1/results")
    cloud.subscribe("edge/plant/n1/errors")
    cloud.subscribe("edge/plant/n1/status")
    state = tmp_path / "state"
    # One window per inference call and a commit every few messages: the node is slower
    # than the plant's burst on any machine, so it falls behind.
    slow = {"max_batch": 1}
    node = _start_node(sensor_bundles["v1"], state, broker.url, **slow)
    try:
        _wait_online(cloud, 0)
        plant = mqtt_client_factory(broker, "plant")
        infos = [  # queued at once; paho's network thread sends them as fast as it can
            plant.client.publish(
                "edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}), qos=1
            )
            for t, row in enumerate(rows)
        ]
        seen = _ResultEnds()

        def behind(messages: list) -> bool:
            # Killed once it is behind, not at a fixed count: on a loaded machine the plant's
            # paho thread had PUBACKs for only 659 rows when 500 results were out.
            done = len(seen.update(messages))
            return done >= 300 and sum(i.is_published() for i in infos) - done >= 250

        cloud.wait_for(behind, timeout=60)
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        published = sum(info.is_published() for info in infos)  # PUBACKed by the broker
        before = {b["window"]["t_end"] for b in _bodies(cloud.messages, "/results")}
        assert published - len(before) >= 200, (
            f"the node must die while behind: {published} rows published, {len(before)} results out"
        )
        for info in infos:
            info.wait_for_publish(30)

        restart_at = len(cloud.messages)
        node = _start_node(sensor_bundles["v1"], state, broker.url, **slow)
        _wait_online(cloud, restart_at)
        msgs = cloud.wait_for(lambda m: seen.update(m) >= expected_ends, timeout=90)
    finally:
        node.kill()
        node.wait(timeout=10)

    results = _bodies(msgs, "/results")
    ids_by_end: dict[float, set[str]] = {}
    for b in results:
        ids_by_end.setdefault(b["window"]["t_end"], set()).add(b["id"])
    # 0 lost: every row's window arrived; duplicates (outbox replay) share their id.
    assert set(ids_by_end) == expected_ends
    assert all(len(ids) == 1 for ids in ids_by_end.values())
    unique = {b["id"]: b for b in results}
    assert len(unique) == len(expected_ends)
    # The window numbering carried on across the crash: seq k ends at row k + 19.
    assert sorted(b["window"]["seq"] for b in unique.values()) == list(range(len(expected_ends)))
    assert all(b["window"]["t_end"] == b["window"]["seq"] + WINDOW - 1 for b in unique.values())
    # Redelivered rows were dropped as duplicates, never refused as out of order.
    assert not [e for e in _bodies(msgs, "/errors") if e.get("input") == "sensors"]


@pytest.mark.parametrize("on_gap", ["skip", "flag"])
def test_rows_lost_upstream_are_published_as_a_gap_and_no_window_spans_it_silently(
    broker, mqtt_client_factory, make_node, sensor_bundles, on_gap: str
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/results")
    cloud.subscribe("edge/plant/n1/errors")
    window = {"period_s": 1.0, "on_gap": on_gap}
    make_node(broker, sensor_bundles["v1"], trusted_keys=[], window=window)
    lost = set(range(30, 34))  # acknowledged to the plant, never delivered (a broker crash)
    rows = sensor_rows(60)
    for t, row in enumerate(rows):
        if t not in lost:
            cloud.publish("edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}))
    if on_gap == "skip":  # windows end at 19..29, then restart after the hole: 34 + 19 = 53
        want = set(range(19, 30)) | set(range(53, 60))
    else:  # every window is computed; those holding rows from both sides are flagged
        want = set(range(19, 30)) | set(range(34, 60))
    msgs = cloud.wait_for(
        lambda m: {b["window"]["t_end"] for b in _bodies(m, "/results")} >= want, timeout=30
    )
    time.sleep(0.5)  # nothing else may follow
    msgs = cloud.messages
    results = _bodies(msgs, "/results")
    assert {b["window"]["t_end"] for b in results} == want
    spanning = {b["window"]["t_end"] for b in results if b["window"]["t_start"] < 34}
    spanning &= set(range(34, 60))
    flagged = {b["window"]["t_end"] for b in results if b["window"].get("gap")}
    assert spanning == flagged == (set() if on_gap == "skip" else set(range(34, 53)))
    (gap,) = _bodies(msgs, "/errors")
    assert (gap["kind"], gap["field"], gap["input"]) == ("gap", "t", "sensors")
    what = "skipped" if on_gap == "skip" else "flagged"
    assert (gap["from"], gap["to"], gap["missing"], gap["windows"]) == (29, 34, 4, what)


def test_a_row_from_a_broken_clock_is_refused_and_the_stream_goes_on(
    broker, mqtt_client_factory, make_node, sensor_bundles
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/results")
    cloud.subscribe("edge/plant/n1/errors")
    make_node(broker, sensor_bundles["v1"], trusted_keys=[])
    rows = sensor_rows(WINDOW + 2)
    cloud.publish("edge/plant/n1/sensors", json.dumps({"t": 1e300, "values": rows[0].tolist()}))
    ahead = time.time() + 3600  # an hour ahead: beyond the default 300 s
    cloud.publish("edge/plant/n1/sensors", json.dumps({"t": ahead, "values": rows[0].tolist()}))
    for t, row in enumerate(rows):
        cloud.publish("edge/plant/n1/sensors", json.dumps({"t": t, "values": row.tolist()}))
    msgs = cloud.wait_for(lambda m: len(_bodies(m, "/results")) >= 3, timeout=30)
    assert [b["window"]["t_end"] for b in _bodies(msgs, "/results")] == [19, 20, 21]
    errors = _bodies(msgs, "/errors")
    assert [(e["field"], e["input"]) for e in errors] == [("t", "sensors"), ("t", "sensors")]
    assert "ahead of the node's clock" in errors[0]["error"]
    assert "max_future_s=300" in errors[1]["error"]
