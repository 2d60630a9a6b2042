"""What the OTA tests of several folders share: a prepared bundle, one deploy, the serving version.

tests/node/test_ota.py and tests/fleet/test_bridge.py both use these; a test
module importing another folder's test module works only when pytest happened
to collect that folder first (``pytest tests/fleet`` alone failed).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.fleet.deploy import Deployer, NodeProgress, PreparedBundle, prepare_bundle
from edge_sdk.mqtt.config import BrokerConfig

#: One window of the sensor bundles' input (52 sensors x 20 steps).
X = np.random.default_rng(5).standard_normal((1, 52, 20)).astype(np.float32)
SMALL_CHUNKS = 4096  # the minimum: a ~40 KB bundle travels in ~10 chunks


def deploy_one(
    broker: Any, prepared: PreparedBundle, cls: type[Deployer] = Deployer, timeout: float = 60.0
) -> NodeProgress:
    """Deploy ``prepared`` to node ``n1`` of group ``plant``; its final progress."""
    deployer = cls(BrokerConfig(url=broker.url), "plant", prepared, node="n1")
    return deployer.run(timeout_s=timeout)["n1"]


def prepare(bundle: Path, tmp: Path, key: Path | None, **kw: Any) -> PreparedBundle:
    """A signed (with ``key``) archive of a copy of ``bundle``, in small chunks."""
    copy = Path(shutil.copytree(bundle, tmp / f"{bundle.name}-{time.monotonic_ns()}"))
    return prepare_bundle(copy, tmp / "packed", key=key, chunk_size=SMALL_CHUNKS, **kw)


def serving_version(node: Any) -> str:
    """The model version ``node`` serves, after checking that it still answers."""
    node.infer(X)
    return node.model.runtime.manifest.model.version
