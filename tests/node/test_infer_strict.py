"""Bad input is refused, not guessed: a rank-2 ``x`` and booleans on MQTT ``infer`` and in Python.

The TEP-size sensor bundle publishes ``x [B, 52, 20]``. Over MQTT (a real
mosquitto) the node answers both cases with the field-named error and keeps
serving; the Python API keeps its documented ``[N, F]`` convenience unless
asked to be strict, and refuses booleans too.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edge_sdk import InvalidInputError, Runtime

pytestmark = pytest.mark.requires_backend("onnxruntime")

RANK = "x: expected rank 3 [B, N, F], received rank 2 [52, 20]"
BOOL = "x: expected a float dtype, received bool"


def _window(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((52, 20)).astype(np.float32)


def test_mqtt_infer_refuses_rank_2_and_booleans_and_keeps_serving(
    broker: Any, make_node: Any, mqtt_client_factory: Any, sensor_bundles: dict[str, Any]
) -> None:
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("cloud/replies/#")
    make_node(broker, sensor_bundles["v1"])
    x = _window(1)
    with_a_bool = x[None].tolist()
    with_a_bool[0][3][7] = True
    requests = {
        "rank2": x.tolist(),
        "bools": (x[None] > 0).tolist(),
        "one-bool": with_a_bool,
        "valid": x[None].tolist(),
    }
    for name, data in requests.items():
        body = {"id": name, "inputs": {"x": data}, "reply_to": f"cloud/replies/{name}"}
        cloud.publish("edge/plant/n1/infer", json.dumps(body))
    msgs = cloud.wait_for(len(requests), timeout=20)
    replies = {m.topic.rsplit("/", 1)[1]: json.loads(m.payload) for m in msgs}
    assert replies["rank2"]["field"] == "x" and replies["rank2"]["error"].startswith(RANK)
    for name in ("bools", "one-bool"):
        assert replies[name]["field"] == "x", replies[name]
        assert replies[name]["error"].startswith(BOOL), replies[name]
        assert "outputs" not in replies[name]
    with Runtime.load(sensor_bundles["v1"]) as rt:
        expected = rt.infer(x[None])["out"]
    np.testing.assert_allclose(replies["valid"]["outputs"]["out"], expected, atol=1e-6)


def test_python_api_promotes_rank_2_only_when_not_strict_and_refuses_booleans(
    make_node: Any, sensor_bundles: dict[str, Any]
) -> None:
    x = _window(2)
    with Runtime.load(sensor_bundles["v1"], threads=1) as rt:
        expected = rt.infer(x[None])["out"]
        # The documented convenience: one [N, F] graph is a batch of one.
        np.testing.assert_allclose(rt.infer(x)["out"], expected, atol=1e-6)
        with pytest.raises(InvalidInputError) as exc:
            rt.infer({"x": x}, strict=True)
        assert exc.value.field == "x" and str(exc.value).startswith(RANK)
        with pytest.raises(InvalidInputError) as exc:
            rt.infer_batch([x[None], x], strict=True)
        assert exc.value.field == "graphs[1].x"
        for bad in (x[None] > 0, {"x": (x[None] > 0).tolist()}):
            with pytest.raises(InvalidInputError, match=BOOL):
                rt.infer(bad)
    node = make_node(None, sensor_bundles["v1"])
    np.testing.assert_allclose(node.infer({"x": x})["out"], expected, atol=1e-6)
    with pytest.raises(InvalidInputError, match="expected rank 3"):
        node.infer({"x": x}, strict=True)
