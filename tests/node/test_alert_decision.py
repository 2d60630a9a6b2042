"""Alerts by the model's own decision rule (score > threshold, K windows in a row), real broker.

The tiny detector's anomaly score is the mean of its window and its loudest
sensor names the fault, so the tests choose every window's score exactly.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_helpers import Received
from tiny_models import (
    DETECTOR_LABELS,
    DETECTOR_SENSORS,
    DETECTOR_WINDOW,
    tiny_detector,
    tiny_detector_arrays,
)

from edge_sdk import Decision
from edge_sdk.errors import ConfigError
from edge_sdk.node.config import AlertConfig, WindowConfig

pytest.importorskip("torch", reason="exporting a test bundle needs the [export] extra")

#: Disjoint windows: window k is exactly the k-th block of DETECTOR_WINDOW rows.
DISJOINT = WindowConfig(stride=DETECTOR_WINDOW)
#: An anomalous window: score (mean) 1.25; sensor 2 is the loudest, so fault class 3 ("f3").
HIGH = [1.0, 1.0, 2.0, 1.0]
#: A normal window: score 0.
LOW = [0.0] * DETECTOR_SENSORS
#: Score 2.0.
HIGHER = [2.0] * DETECTOR_SENSORS


def _export(out: Path, version: str, decision: Decision | None) -> Path:
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    cfg = ExportConfig(
        name="detector",
        version=version,
        form="static",
        labels=DETECTOR_LABELS,
        output_names=["logits", "score"],
        decision=decision,
    )
    sample = sample_from_arrays(tiny_detector_arrays())
    return export_model(tiny_detector(), sample, out, cfg).bundle_dir


@pytest.fixture(scope="module")
def detectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``k3``: 1.0.0, score > 0.5 for 3 windows; ``k2``: 1.1.0, score > 1.0 for 2 windows
    (a retrained model with its own rule); ``plain``: 1.2.0 without a decision."""
    root = tmp_path_factory.mktemp("detectors")
    rules = {
        "k3": (
            "1.0.0",
            Decision(output="score", threshold=0.5, consecutive=3, class_output="logits"),
        ),
        "k2": (
            "1.1.0",
            Decision(output="score", threshold=1.0, consecutive=2, class_output="logits"),
        ),
        "plain": ("1.2.0", None),
    }
    return {k: _export(root / f"{k}.bundle", v, d) for k, (v, d) in rules.items()}


class Plant:
    """Publishes whole windows of constant rows to the node's sensors topic."""

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.t = 0

    def send(self, *windows: list[float]) -> None:
        for values in windows:
            rows = [{"t": self.t + i, "values": values} for i in range(DETECTOR_WINDOW)]
            self.t += DETECTOR_WINDOW
            self.cloud.publish("edge/plant/n1/sensors", json.dumps({"rows": rows}))


def _bodies(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


def _wait(cloud: Any, results: int, alerts: int = 0) -> tuple[list[dict], list[dict]]:
    """Wait for that many results and alerts; results sorted by window."""
    msgs = cloud.wait_for(
        lambda m: len(_bodies(m, "/results")) >= results and len(_bodies(m, "/alerts")) >= alerts,
        timeout=20,
    )
    got = sorted(_bodies(msgs, "/results"), key=lambda b: b["window"]["seq"])
    return got, _bodies(msgs, "/alerts")


@pytest.fixture
def cloud(broker, mqtt_client_factory):
    client = mqtt_client_factory(broker)
    client.subscribe("edge/plant/n1/results")
    client.subscribe("edge/plant/n1/alerts")
    return client


def test_raised_after_k_windows_above_and_cleared_after_k_at_or_below(
    broker, make_node, cloud, detectors
):
    node = make_node(broker, detectors["k3"], window=DISJOINT)
    # Two above (one short), broken; three above -> raised at seq 6; one more above (no
    # repeat); two below, broken by one above; three below -> cleared at seq 13.
    pattern = [LOW, HIGH, HIGH, LOW, HIGH, HIGH, HIGH, HIGH, LOW, LOW, HIGH, LOW, LOW, LOW, LOW]
    Plant(cloud).send(*pattern)
    results, alerts = _wait(cloud, len(pattern), alerts=2)

    expected_scores = [float(np.mean(w)) for w in pattern]
    assert [r["anomaly"]["score"] for r in results] == pytest.approx(expected_scores, abs=1e-6)
    assert [r["anomaly"]["above"] for r in results] == [s > 0.5 for s in expected_scores]
    assert {r["anomaly"]["threshold"] for r in results} == {0.5}

    assert [(a["state"], a["window"]["seq"]) for a in alerts] == [("raised", 6), ("cleared", 13)]
    raised, cleared = alerts
    assert raised["score"] == pytest.approx(1.25) and cleared["score"] == 0.0
    for a in alerts:
        assert (a["threshold"], a["consecutive"]) == (0.5, 3)
        assert (a["class"], a["label"]) == (3, "f3")  # the fault a clear ends is named too
        assert a["model"] == {"name": "detector", "version": "1.0.0"}
        assert a["window"]["t_end"] == (a["window"]["seq"] + 1) * DETECTOR_WINDOW - 1
        assert a["id"].startswith("n1:")
    assert raised["anomaly"] == {"score": 1.25, "threshold": 0.5, "above": True}
    assert node.stats.alerts == 1


def test_node_config_overrides_the_bundle_threshold_and_run_length(
    broker, make_node, cloud, detectors
):
    node = make_node(
        broker,
        detectors["k3"],
        window=DISJOINT,
        alert=AlertConfig(score_threshold=1.5, consecutive=1),
    )
    # 1.25 is above the bundle's 0.5 but not the node's 1.5; one window is enough to raise.
    Plant(cloud).send(HIGH, HIGHER, LOW)
    results, alerts = _wait(cloud, 3, alerts=2)
    assert [r["anomaly"]["above"] for r in results] == [False, True, False]
    assert {r["anomaly"]["threshold"] for r in results} == {1.5}
    assert [(a["state"], a["window"]["seq"], a["consecutive"]) for a in alerts] == [
        ("raised", 1, 1),
        ("cleared", 2, 1),
    ]
    assert alerts[0]["score"] == 2.0 and alerts[0]["threshold"] == 1.5
    assert node.stats.alerts == 1


def test_off_delay_clears_after_its_own_count(broker, make_node, cloud, detectors):
    # the bundle raises after 3 windows above; the node clears after 1 at or below
    node = make_node(broker, detectors["k3"], window=DISJOINT, alert=AlertConfig(clear_after=1))
    Plant(cloud).send(HIGH, HIGH, HIGH, LOW, HIGH, HIGH, LOW, HIGH, HIGH, HIGH)
    _, alerts = _wait(cloud, 10, alerts=3)
    assert [(a["state"], a["window"]["seq"]) for a in alerts] == [
        ("raised", 2),
        ("cleared", 3),
        ("raised", 9),  # two above after the clear are not enough: the on-delay stays 3
    ]
    assert {(a["consecutive"], a["clear_after"]) for a in alerts} == {(3, 1)}
    assert node.stats.alerts == 2


def test_override_without_a_bundle_decision_is_a_config_error(make_node, detectors):
    with pytest.raises(ConfigError) as err:
        make_node(None, detectors["plain"], alert=AlertConfig(consecutive=2))
    msg = str(err.value)
    assert "alert.consecutive override the model's alarm rule" in msg
    assert "bundle detector 1.2.0 has none (no decision in its manifest)" in msg


def test_bundle_without_decision_keeps_the_class_rule(broker, make_node, cloud, detectors):
    make_node(
        broker,
        detectors["plain"],
        window=DISJOINT,
        alert=AlertConfig(normal_class=0, threshold=0.0),
    )
    # Class rule on the first output: LOW ties at class 0 (normal), HIGH's argmax is class 3.
    Plant(cloud).send(LOW, HIGH, LOW)
    results, alerts = _wait(cloud, 3, alerts=2)
    assert all("anomaly" not in r for r in results)
    assert [(a["state"], a["class"], a["window"]["seq"]) for a in alerts] == [
        ("raised", 3, 1),
        ("cleared", 0, 2),
    ]
    assert "threshold" not in alerts[0] and "consecutive" not in alerts[0]


# -- model updates -------------------------------------------------------------------------


def _deploy(broker, bundle: Path, tmp: Path, key: Path) -> Any:
    from edge_sdk.fleet.deploy import Deployer, prepare_bundle
    from edge_sdk.mqtt.config import BrokerConfig

    copy = Path(shutil.copytree(bundle, tmp / f"{bundle.name}-{time.monotonic_ns()}"))
    prepared = prepare_bundle(copy, tmp / "packed", key=key, chunk_size=4096)
    return Deployer(BrokerConfig(url=broker.url), "plant", prepared, node="n1").run(timeout_s=60)[
        "n1"
    ]


def test_after_an_update_the_new_rule_applies_from_a_fresh_count(
    broker, make_node, cloud, detectors, fleet_keys, tmp_path
):
    node = make_node(broker, detectors["k3"], window=DISJOINT)
    plant = Plant(cloud)
    plant.send(HIGH, HIGH)  # two of the three windows 1.0.0 needs
    _wait(cloud, 2)
    assert _deploy(broker, detectors["k2"], tmp_path, fleet_keys["key"]).step == "swapped"
    # 1.1.0 raises after two windows above 1.0: a count carried over (3) would raise at once.
    plant.send(HIGH)
    results, alerts = _wait(cloud, 3)
    assert results[2]["model"]["version"] == "1.1.0"
    assert results[2]["anomaly"] == {"score": 1.25, "threshold": 1.0, "above": True}
    plant.send(HIGH)
    results, alerts = _wait(cloud, 4, alerts=1)
    assert [(a["state"], a["window"]["seq"]) for a in alerts] == [("raised", 3)]
    assert (alerts[0]["threshold"], alerts[0]["consecutive"]) == (1.0, 2)
    assert alerts[0]["model"]["version"] == "1.1.0"
    assert node.stats.alerts == 1


def test_update_without_the_overridden_decision_is_refused(
    broker, make_node, detectors, fleet_keys, tmp_path
):
    node = make_node(broker, detectors["k3"], alert=AlertConfig(score_threshold=0.8))
    outcome = _deploy(broker, detectors["plain"], tmp_path, fleet_keys["key"])
    assert outcome.step == "refused" and "at stage" in outcome.reason, outcome
    assert "alert.score_threshold override the model's alarm rule" in outcome.reason
    assert node.model.runtime.manifest.model.version == "1.0.0"
