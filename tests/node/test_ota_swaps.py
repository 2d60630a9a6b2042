"""OTA swaps between OpenVINO-backed bundles under inference load: none hangs, none fails.

Each swap closes the OpenVINO model it replaces (``ActiveModel.swap``) while
other threads infer: the teardown that once deadlocked with an
``AsyncInferQueue`` callback (issue #15). The updates travel the real way:
signed archives, offered and chunked over a real mosquitto, verified, staged,
canary-checked and swapped in by the node.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import Runtime
from edge_sdk.fleet.deploy import Deployer, PreparedBundle, prepare_bundle
from edge_sdk.mqtt.config import BrokerConfig

pytestmark = pytest.mark.requires_backend("openvino")

SWAPS = 50
HAMMERS = 2
X = np.random.default_rng(11).standard_normal((1, 52, 20)).astype(np.float32)


@pytest.fixture(scope="module")
def ov_sensor_bundles(
    sensor_model: Any, fleet_keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, PreparedBundle]]:
    """TEP-size bundles 1.0.0 and 1.1.0 with OpenVINO FP32 artifacts: directory, signed archive."""
    root = tmp_path_factory.mktemp("ov_sensor_bundles")
    made = {}
    for version, seed in (("1.0.0", 0), ("1.1.0", 1)):
        bundle = sensor_model.export_sensor_bundle(
            root / f"{version}.bundle", version=version, seed=seed, profiles=["intel-core-cpu"]
        ).bundle_dir
        packed = prepare_bundle(bundle, root / f"packed-{version}", key=fleet_keys["key"])
        made[version] = (Path(bundle), packed)
    return made


@pytest.mark.timeout(240)
def test_fifty_ota_swaps_under_load_fail_no_inference(
    broker: Any, make_node: Any, ov_sensor_bundles: dict[str, tuple[Path, PreparedBundle]]
) -> None:
    versions = ["1.0.0", "1.1.0"]
    want = {}
    for v in versions:
        with Runtime.load(ov_sensor_bundles[v][0], backend="openvino") as rt:
            assert rt.backend.name == "openvino"
            want[v] = rt.infer(X)["out"]
    assert not np.allclose(want["1.0.0"], want["1.1.0"], atol=1e-3)
    node = make_node(broker, ov_sensor_bundles["1.0.0"][0], backend="openvino")
    assert node.model.runtime.backend.name == "openvino"

    served = dict.fromkeys(versions, 0)
    failures: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                out = node.infer(X)["out"]
            except Exception as exc:  # any failure during a swap is a bug
                failures.append(exc)
                continue
            version = next((v for v in versions if np.allclose(out, want[v], atol=1e-5)), None)
            if version is None:
                failures.append(AssertionError(f"output of no version: {out}"))
            else:
                served[version] += 1

    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(HAMMERS)]
    for w in workers:
        w.start()
    steps = []
    try:
        for i in range(SWAPS):
            to = versions[(i + 1) % 2]  # 1.1.0, 1.0.0, 1.1.0, ... (older ones forced)
            packed = ov_sensor_bundles[to][1]
            offer = packed.offer.model_copy(update={"deployment": f"swap-{i}", "force": True})
            update = PreparedBundle(packed.archive, offer)
            deployer = Deployer(BrokerConfig(url=broker.url), "plant", update, node="n1")
            outcome = deployer.run(timeout_s=60)["n1"]
            steps.append(outcome.step)
            assert outcome.step == "swapped", (i, outcome)
            assert node.model.runtime.manifest.model.version == to
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert not any(w.is_alive() for w in workers), "an inference thread hung"
    assert steps == ["swapped"] * SWAPS
    assert failures == [], failures[:3]
    assert served["1.0.0"] > SWAPS and served["1.1.0"] > SWAPS, served  # load on both models
    assert node.model.runtime.backend.name == "openvino"
    assert node.model.runtime.manifest.model.version == "1.0.0"  # the 50th swap's
