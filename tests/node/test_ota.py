"""Model updates over a real broker: signed bundles in, each bad one refused, old model serving."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ota_helpers import SMALL_CHUNKS, X, deploy_one, prepare, serving_version

from edge_sdk import Runtime
from edge_sdk.bundle import file_digest, save_npz
from edge_sdk.fleet.deploy import Deployer, PreparedBundle, prepare_bundle
from edge_sdk.manifest import MANIFEST_NAME
from edge_sdk.mqtt.transfer import Offer, iter_chunks
from edge_sdk.signing import SIGNATURE_NAME, load_private_key, sign_bundle, sign_manifest


def _rewrite_manifest(bundle: Path, edit) -> None:
    doc = json.loads((bundle / MANIFEST_NAME).read_text())
    edit(doc)
    (bundle / MANIFEST_NAME).write_text(json.dumps(doc, indent=2))


def test_signed_update_swaps_without_failing_a_single_inference(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path, mqtt_client_factory
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/ota/status")
    node = make_node(broker, sensor_bundles["v1"])
    failures, calls, stop = [], [0], threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                node.infer(X)
                calls[0] += 1
            except Exception as exc:  # any failure during the swap is a bug
                failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        outcome = deploy_one(broker, prepare(sensor_bundles["v2"], tmp_path, fleet_keys["key"]))
        time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert outcome.step == "swapped", outcome
    assert failures == [] and calls[0] > 50
    assert serving_version(node) == "1.1.0"
    with Runtime.load(sensor_bundles["v2"]) as v2, Runtime.load(sensor_bundles["v1"]) as v1:
        np.testing.assert_allclose(node.infer(X)["out"], v2.infer(X)["out"], atol=1e-6)
        assert not np.allclose(v1.infer(X)["out"], v2.infer(X)["out"], atol=1e-3)
    steps = [json.loads(m.payload)["step"] for m in cloud.wait_for(7, timeout=10)]
    assert steps[0] == "offered" and steps[-1] == "swapped"
    for step in ("downloaded", "verified", "canary_passed"):
        assert step in steps
    # The pointer survives a restart: a new node process serves the new model.
    node.stop()
    assert serving_version(make_node(broker, None, state_dir=node.state_dir)) == "1.1.0"


def test_rollback_command_returns_to_the_previous_model(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path, mqtt_client_factory
):
    node = make_node(broker, sensor_bundles["v1"])
    assert deploy_one(broker, prepare(sensor_bundles["v2"], tmp_path, fleet_keys["key"])).done
    assert serving_version(node) == "1.1.0"
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/ota/status")
    cloud.publish("edge/plant/n1/cmd", json.dumps({"cmd": "rollback"}))
    msg = cloud.wait_for(1, timeout=15)[0]
    body = json.loads(msg.payload)
    assert body["step"] == "rolled_back" and body["version"] == "1.0.0"
    assert serving_version(node) == "1.0.0"


def _tampered_manifest(bundle: Path) -> None:
    _rewrite_manifest(bundle, lambda d: d["model"].update(description="edited after signing"))


@pytest.mark.parametrize(
    ("case", "at", "words"),
    [
        ("untrusted key", "verify", "not among the trusted keys"),
        ("manifest edited after signing", "verify", "signature does not match"),
        ("older version", "offer", "older than the running 1.0.0"),
        ("same version", "offer", "the running 1.0.0"),
        ("canary mismatch", "canary", "differs from the canary"),
        ("unknown schema", "verify", "schema"),
    ],
)
def test_bad_updates_are_refused_and_the_old_model_keeps_serving(
    case, at, words, broker, make_node, sensor_bundles, fleet_keys, tmp_path
):
    node = make_node(broker, sensor_bundles["v1"])
    key = fleet_keys["key"]
    if case == "untrusted key":
        prepared = prepare(sensor_bundles["v2"], tmp_path, fleet_keys["rogue_key"])
    elif case == "manifest edited after signing":
        prepared = _signed_then(sensor_bundles["v2"], tmp_path, key, _tampered_manifest)
    elif case == "older version":
        prepared = prepare(sensor_bundles["old"], tmp_path, key)
    elif case == "same version":
        prepared = prepare(sensor_bundles["v1"], tmp_path, key)
    elif case == "canary mismatch":
        prepared = prepare(_wrong_canary(sensor_bundles["v2"], tmp_path), tmp_path, key)
    else:
        prepared = _future_schema(sensor_bundles["v2"], tmp_path, key)
    outcome = deploy_one(broker, prepared)
    assert outcome.step == "refused", outcome
    assert words in outcome.reason, outcome.reason
    assert f"at {at}" in outcome.reason
    assert serving_version(node) == "1.0.0"
    assert node.slots.active().name == "a"  # nothing was activated


def test_forced_downgrade_is_installed(broker, make_node, sensor_bundles, fleet_keys, tmp_path):
    node = make_node(broker, sensor_bundles["v1"])
    prepared = prepare(sensor_bundles["old"], tmp_path, fleet_keys["key"], force=True)
    assert deploy_one(broker, prepared).step == "swapped"
    assert serving_version(node) == "0.9.0"


def test_update_with_another_sensor_layout_is_refused_before_the_swap(
    broker, make_node, fleet_keys, tmp_path, sensor_bundles, sensor_model
):
    from edge_sdk.node.config import WindowConfig

    sensors = WindowConfig(sensors=[f"xmeas_{i}" for i in range(1, 53)])
    node = make_node(broker, sensor_bundles["v1"], window=sensors)
    other = sensor_model.export_sensor_bundle(tmp_path / "b", "2.0.0", num_sensors=40)
    outcome = deploy_one(broker, prepare(other.bundle_dir, tmp_path, fleet_keys["key"]))
    assert outcome.step == "refused" and "at stage" in outcome.reason
    assert "it takes [40 sensors, 20 samples]" in outcome.reason, outcome.reason
    assert serving_version(node) == "1.0.0" and node.slots.active().name == "a"


class _TamperingDeployer(Deployer):
    """Serves chunk 1 with one byte flipped, every time."""

    def _chunk_data(self, index: int) -> bytes:
        data = super()._chunk_data(index)
        return data if index != 1 else bytes([data[0] ^ 0xFF]) + data[1:]


class _StallingDeployer(Deployer):
    """Serves only the first half of the chunks (the link to the fleet dies mid-transfer)."""

    def _chunk_data(self, index: int) -> bytes:
        if index >= self.prepared.offer.total_chunks // 2:
            from edge_sdk.errors import UpdateError

            raise UpdateError("download", "the deployer went away")
        return super()._chunk_data(index)


def test_tampered_chunk_is_refused(broker, make_node, sensor_bundles, fleet_keys, tmp_path):
    node = make_node(broker, sensor_bundles["v1"])
    prepared = prepare(sensor_bundles["v2"], tmp_path, fleet_keys["key"])
    outcome = deploy_one(broker, prepared, _TamperingDeployer)
    assert outcome.step == "refused"
    assert "chunk 1" in outcome.reason and "at download" in outcome.reason
    assert serving_version(node) == "1.0.0"


def test_truncated_transfer_keeps_the_old_model_across_a_restart_and_resumes(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path, mqtt_client_factory
):
    node = make_node(broker, sensor_bundles["v1"])
    prepared = prepare(sensor_bundles["v2"], tmp_path, fleet_keys["key"])
    total = prepared.offer.total_chunks
    assert total >= 6
    outcome = deploy_one(broker, prepared, _StallingDeployer, timeout=4)
    assert outcome.step not in ("swapped", "refused")
    assert serving_version(node) == "1.0.0"
    node.stop()  # the node restarts mid-download
    node = make_node(broker, None, state_dir=node.state_dir)
    assert serving_version(node) == "1.0.0"
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant/n1/ota/status")
    assert deploy_one(broker, prepared).step == "swapped"
    offered = next(json.loads(m.payload) for m in cloud.messages if b'"offered"' in m.payload)
    assert 0 < offered["resumed_chunks"] < total  # only the missing chunks travelled again
    assert serving_version(node) == "1.1.0"


# -- bundle surgery ------------------------------------------------------------------------


def _signed_then(bundle: Path, tmp: Path, key: Path, edit) -> PreparedBundle:
    """Sign a copy, then change it (so the signature no longer matches)."""
    copy = Path(shutil.copytree(bundle, tmp / "edited.bundle"))
    sign_bundle(copy, key)
    edit(copy)
    return prepare_bundle(copy, tmp / "packed", chunk_size=SMALL_CHUNKS)


def _wrong_canary(bundle: Path, tmp: Path) -> Path:
    """A valid, verifiable bundle whose canary expects other outputs."""
    copy = Path(shutil.copytree(bundle, tmp / "canary.bundle"))
    with np.load(copy / "canary.npz") as npz:
        arrays = {k: npz[k] + (1.0 if k.startswith("out/") else 0.0) for k in npz.files}
    save_npz(copy / "canary.npz", arrays)
    size, sha = file_digest(copy / "canary.npz")
    _rewrite_manifest(copy, lambda d: d["canary"].update(sha256=sha, size_bytes=size))
    return copy


def _future_schema(bundle: Path, tmp: Path, key: Path) -> PreparedBundle:
    """A correctly signed bundle whose manifest declares schema 2.0."""
    copy = Path(shutil.copytree(bundle, tmp / "future.bundle"))
    _rewrite_manifest(copy, lambda d: d.update(schema_version="2.0"))
    text = (copy / MANIFEST_NAME).read_text()
    signature = sign_manifest(text.encode(), load_private_key(key))
    (copy / SIGNATURE_NAME).write_text(json.dumps(signature))
    archive = tmp / "future.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(copy.iterdir()):
            tar.add(f, arcname=f.name)
    chunks = list(iter_chunks(archive, SMALL_CHUNKS))
    offer = Offer.model_validate(
        {
            "deployment": "future-schema",
            "name": "tep-sensor-gcn",
            "version": "1.1.0",
            "size": archive.stat().st_size,
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
            "chunk_size": SMALL_CHUNKS,
            "chunks": [hashlib.sha256(c).hexdigest() for c in chunks],
            "manifest": text,
            "signature": signature,
            "created": time.time(),
        }
    )
    return PreparedBundle(archive, offer)
