"""Fixtures for the node, fleet and CLI tests that talk to a real local mosquitto broker.

A pytest plugin (``pytest_plugins`` in tests/conftest.py), not a conftest, so that
tests/node/, tests/fleet/ and tests/cli/ share one copy.

Real-broker tests are part of the Definition of Done: when mosquitto or
paho-mqtt is missing they *fail* with the install command (``make test``
installs both); ``mosquitto_path`` (tests/conftest.py) decides. Set
``EDGE_SDK_SKIP_MQTT=1`` to skip them deliberately.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edge_sdk.fleet.brokers import BrokerProcess, EjabberdBroker, LocalBroker, RabbitBroker

if TYPE_CHECKING:
    from mqtt_helpers import Recorder


@pytest.fixture
def broker(mosquitto_path: str, tmp_path: Path) -> Iterator[LocalBroker]:
    """A fresh broker per test (own port, own persistence dir), stopped afterwards."""
    b = LocalBroker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop(timeout_s=5)  # SIGKILLs if SIGTERM hangs


@pytest.fixture
def mqtt_client_factory(mosquitto_path: str) -> Iterator[Callable[..., Recorder]]:
    """Return ``make(broker, client_id=None, **opts) -> Recorder`` (connected, loop running).

    ``opts``: ``clean_start`` (default True), ``session_expiry_s``, ``protocol``
    (MQTT v5 by default). Every client is closed at teardown.
    """
    from mqtt_helpers import Recorder

    made: list[Recorder] = []

    def make(broker: LocalBroker, client_id: str | None = None, **opts: Any) -> Recorder:
        rec = Recorder(broker.host, broker.port, client_id, **opts)
        made.append(rec)
        rec.wait_ready()
        return rec

    yield make
    for rec in made:
        rec.close()


# -- bundles and keys ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def sensor_bundles(
    sensor_model: Any, sensor_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """TEP-size static bundles (52 sensors x 20 samples, 22 classes). Read-only by contract.

    ``v1`` is version 1.0.0 (seed 0; the suite-wide ``sensor_bundle``), ``v2``
    1.1.0 (seed 1, different outputs), ``old`` 0.9.0 (seed 2).
    """
    root = tmp_path_factory.mktemp("sensor_bundles")
    versions = {"v2": ("1.1.0", 1), "old": ("0.9.0", 2)}
    return {"v1": sensor_bundle} | {
        key: sensor_model.export_sensor_bundle(
            root / f"{key}.bundle", version=v, seed=seed
        ).bundle_dir
        for key, (v, seed) in versions.items()
    }


@pytest.fixture(scope="session")
def fleet_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trusted key pair (``key``/``pub``) and an untrusted one (``rogue_key``/``rogue_pub``)."""
    from edge_sdk.signing import generate_keypair

    root = tmp_path_factory.mktemp("keys")
    key, pub = generate_keypair(root, "fleet")
    rogue_key, rogue_pub = generate_keypair(root, "rogue")
    return {"key": key, "pub": pub, "rogue_key": rogue_key, "rogue_pub": rogue_pub}


@pytest.fixture(scope="session")
def fleet_signed(
    fleet_keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Path], Path]:
    """Return ``signed(bundle_dir)``: a copy signed with the fleet key (one per bundle).

    A node that trusts keys loads only signed bundles, its first one included.
    A bundle that is signed already is returned as it is.
    """
    import shutil

    from edge_sdk.signing import sign_bundle

    root = tmp_path_factory.mktemp("fleet_signed")
    copies: dict[Path, Path] = {}

    def signed(bundle: Path) -> Path:
        bundle = Path(bundle)
        if (bundle / "manifest.sig").is_file():
            return bundle
        if bundle not in copies:
            out = Path(shutil.copytree(bundle, root / f"{len(copies)}-{bundle.name}"))
            sign_bundle(out, fleet_keys["key"])
            copies[bundle] = out
        return copies[bundle]

    return signed


# -- nodes ---------------------------------------------------------------------------------


@pytest.fixture
def make_node(
    tmp_path: Path, fleet_keys: dict[str, Path], fleet_signed: Callable[[Path], Path]
) -> Iterator[Callable[..., Any]]:
    """Return ``make(broker, bundle, node_id="n1", broker_opts=None, **config) -> EdgeNode``.

    The node is in group ``plant`` unless ``group`` is given.

    With a broker it waits until the node is connected. Nodes stop at teardown.
    Unless ``trusted_keys`` is given, the node trusts the fleet key and an
    unsigned bundle directory is replaced by its fleet-signed copy.
    """
    from edge_sdk.node import BrokerConfig, EdgeNode, NodeConfig

    made: list[Any] = []

    def make(
        broker: LocalBroker | None,
        bundle: Path | None,
        node_id: str = "n1",
        broker_opts: dict[str, Any] | None = None,
        **cfg: Any,
    ) -> Any:
        cfg.setdefault("state_dir", tmp_path / f"state-{node_id}")
        if "trusted_keys" not in cfg and bundle is not None and Path(bundle).is_dir():
            bundle = fleet_signed(bundle)
        cfg.setdefault("trusted_keys", [fleet_keys["pub"]])
        cfg.setdefault("telemetry_interval_s", 0)
        cfg.setdefault("group", "plant")
        config = NodeConfig(
            node_id=node_id,
            bundle=bundle,
            broker=BrokerConfig(
                **{"url": broker.url, "keepalive_s": 5, "reconnect_min_s": 1, **(broker_opts or {})}
            )
            if broker
            else None,
            **cfg,
        )
        node = EdgeNode(config).start()
        made.append(node)
        if broker is not None:
            assert node.link.wait_connected(15), (
                f"node did not connect to the test broker {broker!r}; its log tail:\n"
                + broker.log_tail(40)
            )
        return node

    yield make
    for node in made:
        node.stop()


# -- the other brokers: ejabberd and RabbitMQ (compatibility suite) --------------------------


def _require_broker(find: Callable[[], str | None], hint: str) -> str:
    """Like ``mosquitto_path``: fail with the install command, skip on EDGE_SDK_SKIP_MQTT=1."""
    import os

    if os.environ.get("EDGE_SDK_SKIP_MQTT") == "1":
        pytest.skip("EDGE_SDK_SKIP_MQTT=1: real-broker MQTT tests skipped on request")
    found = find()
    if found is None:
        pytest.fail(f"{hint} (or set EDGE_SDK_SKIP_MQTT=1 to skip MQTT tests)")
    return found


@pytest.fixture(scope="session")
def ejabberd_path(mosquitto_path: str) -> str:
    """ejabberd's Erlang library directory; fails with the install command when missing."""
    from edge_sdk.fleet.brokers import installed

    return _require_broker(installed.find_ejabberd, installed.EJABBERD_HINT)


@pytest.fixture(scope="session")
def rabbitmq_path(mosquitto_path: str) -> str:
    """RabbitMQ's ``rabbitmq-server``; fails with the install command when missing."""
    from edge_sdk.fleet.brokers import installed

    return _require_broker(installed.find_rabbitmq, installed.RABBITMQ_HINT)


@pytest.fixture(scope="module")
def ejabberd_broker(
    ejabberd_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EjabberdBroker]:
    """One ejabberd (mod_mqtt, MQTT 5) per test module; clients log in with ``client_options()``."""
    b = EjabberdBroker(tmp_path_factory.mktemp("ejabberd")).start()
    try:
        yield b
    finally:
        b.stop(timeout_s=10)


@pytest.fixture(scope="module")
def rabbit_broker(
    rabbitmq_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RabbitBroker]:
    """One RabbitMQ (rabbitmq_mqtt, MQTT 3.1.1 only) per test module."""
    b = RabbitBroker(tmp_path_factory.mktemp("rabbitmq")).start()
    try:
        yield b
    finally:
        b.stop(timeout_s=10)


COMPAT_BROKERS = ("mosquitto", "ejabberd", "rabbitmq")


@pytest.fixture(scope="module", params=COMPAT_BROKERS)
def compat_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """Each broker of the compatibility matrix in turn, one process per module and kind.

    The kind (``mosquitto``, ``ejabberd``, ``rabbitmq``) is the test id's
    parameter; tests that tell brokers apart use ``isinstance``.
    """
    kind = request.param
    request.getfixturevalue({"mosquitto": "mosquitto_path"}.get(kind, f"{kind}_path"))
    workdir = tmp_path_factory.mktemp(kind)
    b: BrokerProcess = {
        "mosquitto": LocalBroker,
        "ejabberd": EjabberdBroker,
        "rabbitmq": RabbitBroker,
    }[kind](workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop(timeout_s=10)
