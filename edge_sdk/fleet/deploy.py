"""Deploy a signed bundle to nodes over MQTT (the fleet side of :mod:`edge_sdk.node.ota`).

The fleet publishes a retained **offer** (manifest, signature, size, sha256 of
the archive and of every chunk) on ``edge/{group}/{node|_all}/ota/offer``, then
serves the chunks each node asks for on ``ota/get``. Nodes pull at their own
pace (a bounded request window), verify every chunk, and resume after a
restart with the chunks they lack, so the broker never has to queue a whole
bundle. The deploy ends when every awaited node has swapped or refused (or on
timeout); the retained offer is then cleared, so a node that joins later does
not wait for a deployer that has gone.
"""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import Bundle, pack, unpack
from ..errors import ConfigError, EdgeSDKError, UpdateError
from ..manifest import MANIFEST_NAME
from ..mqtt.config import BrokerConfig
from ..mqtt.link import MqttLink
from ..mqtt.topics import (
    GROUP_WIDE,
    ROOT,
    Inbound,
    JsonScheme,
    Outbound,
    check_name,
    encode_chunk,
    loads,
)
from ..mqtt.transfer import DEFAULT_CHUNK_SIZE, Offer, read_chunk
from ..signing import SIGNATURE_NAME, sign_bundle
from .connect import connect

log = logging.getLogger(__name__)

#: Update steps after which a node is done with a deployment.
TERMINAL = frozenset({"swapped", "refused"})


@dataclass
class NodeProgress:
    """What one node reported about the deployment."""

    node: str
    step: str = "waiting"
    received: int = 0
    chunks: int = 0
    reason: str = ""
    version: str = ""
    updated: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.step in TERMINAL


@dataclass(frozen=True)
class PreparedBundle:
    """A packed, signed bundle and its offer."""

    archive: Path
    offer: Offer


def prepare_bundle(
    bundle: str | Path,
    workdir: str | Path,
    key: str | Path | None = None,
    deployment: str | None = None,
    force: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PreparedBundle:
    """Sign (when ``key`` is given) and pack a bundle, and describe it as an offer.

    Args:
        bundle: Bundle directory, or a packed ``.tar.gz`` that holds ``manifest.sig``.
        workdir: Where the packed archive is written.
        key: ed25519 private key; signs a directory bundle first.
        deployment: Deployment id (default: ``{name}-{version}-{random}``).
        force: Ask nodes to install even when not newer.
        chunk_size: Bytes per chunk.

    Raises:
        SignatureError: The bundle is not signed and no key was given.
        ManifestError: The bundle does not verify.
    """
    src = Path(bundle)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        if key is not None:
            sign_bundle(src, key)
        if not (src / SIGNATURE_NAME).is_file():
            raise ConfigError(
                f"{src} is not signed: pass --key (or run `edge-fleet sign {src} --key K`)"
            )
        root = src
        archive = pack(src, work / f"{src.name.removesuffix('.bundle')}.tar.gz")
    else:
        if key is not None:
            raise ConfigError("--key signs bundle directories; this archive must be signed already")
        root = work / "unpacked"
        unpack(src, root)
        Bundle.open(root)
        if not (root / SIGNATURE_NAME).is_file():
            raise ConfigError(f"{src} holds no {SIGNATURE_NAME}: sign the directory, then pack it")
        archive = src
    manifest_text = (root / MANIFEST_NAME).read_text(encoding="utf-8")
    signature = json.loads((root / SIGNATURE_NAME).read_text(encoding="utf-8"))
    manifest = Bundle.open(root).manifest
    dep = deployment or f"{manifest.model.name}-{manifest.model.version}-{uuid.uuid4().hex[:8]}"
    offer = Offer.build(archive, dep, signature, manifest_text, chunk_size, force)
    return PreparedBundle(archive, offer)


class Deployer:
    """Offer a bundle to a group (or one node) and serve its chunks until done.

    Args:
        broker: The fleet's broker connection.
        group: Target group.
        prepared: The packed bundle and offer (:func:`prepare_bundle`).
        node: One node only; default every node of the group.
        client_id: MQTT client id of the deployer.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        group: str,
        prepared: PreparedBundle,
        node: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.group = check_name("group", group)
        self.node = check_name("node id", node) if node else None
        self.prepared = prepared
        self.progress: dict[str, NodeProgress] = {}
        self._events: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
        base = f"{ROOT}/{group}/+/"
        self.link = MqttLink(
            broker,
            client_id=client_id or f"edge-fleet-deploy-{uuid.uuid4().hex[:8]}",
            on_message=self._on_message,
            subscriptions=[
                (base + Outbound.OTA_GET.value, 1),
                (base + Outbound.OTA_STATUS.value, 1),
                (base + Outbound.STATUS.value, 1),
            ],
        )
        self._lock = threading.Lock()
        self.chunks_sent = 0

    @property
    def offer_topic(self) -> str:
        """``edge/{group}/{node}/ota/offer``, or the group-wide ``edge/{group}/_all/ota/offer``.

        ``_all`` is an address, not a node id (node ids may not start with ``_``),
        so it is put into the topic as it is, never through the node-id check.
        """
        return f"{ROOT}/{self.group}/{self.node or GROUP_WIDE}/{Inbound.OTA_OFFER.value}"

    def _on_message(self, topic: str, payload: bytes, properties: Any) -> None:
        parsed = JsonScheme.parse(topic)
        if parsed is not None:
            self._events.put((parsed[1], parsed[2], payload))

    def run(
        self,
        timeout_s: float = 300.0,
        wait_for: set[str] | None = None,
        discover_s: float = 2.0,
        on_progress: Callable[[NodeProgress], None] | None = None,
    ) -> dict[str, NodeProgress]:
        """Publish the offer, serve chunks, and return each node's outcome.

        Args:
            timeout_s: Give up waiting after this long (nodes keep what they have
                and resume at the next deploy of the same bundle).
            wait_for: Nodes to wait for; default the target node, or every node
                of the group whose retained status is ``online`` (seen within
                ``discover_s``) plus any node that asks for chunks.
            discover_s: How long to collect online nodes before deciding.
            on_progress: Called on each status change.

        Raises:
            ConfigError: The broker cannot be reached or refused the client
                (naming its reason, :func:`edge_sdk.fleet.connect.connect`).
        """
        connect(self.link, min(30.0, timeout_s))
        online: set[str] = set()
        offer = self.prepared.offer
        try:
            if not self.link.publish_wait(
                self.offer_topic, offer.to_json().encode(), qos=1, retain=True
            ):
                raise ConfigError("the broker did not acknowledge the offer")
            start = time.monotonic()
            deadline = start + timeout_s
            awaited = set(wait_for or ({self.node} if self.node else set()))
            while time.monotonic() < deadline:
                try:
                    node, kind, payload = self._events.get(timeout=0.2)
                except queue.Empty:
                    node = ""
                else:
                    self._handle(node, kind, payload, online, on_progress)
                discovering = not wait_for and not self.node
                if discovering and time.monotonic() - start < discover_s:
                    continue
                targets = awaited | (online if discovering else set())
                targets |= {n for n, p in self.progress.items() if p.step != "waiting"}
                if targets and all(self.progress.get(n, NodeProgress(n)).done for n in targets):
                    break
                if not targets and discovering:
                    break  # nobody online in the group
            for n in awaited | online:
                self.progress.setdefault(n, NodeProgress(n, step="no answer"))
            return dict(self.progress)
        finally:
            self.link.publish_wait(self.offer_topic, b"", qos=1, retain=True, timeout=5)
            self.link.stop()

    def _handle(
        self,
        node: str,
        kind: str,
        payload: bytes,
        online: set[str],
        on_progress: Callable[[NodeProgress], None] | None,
    ) -> None:
        if self.node and node != self.node:
            return
        try:
            body = loads(payload, max_bytes=1 << 20) if payload else {}
        except EdgeSDKError:
            return
        if kind == Outbound.STATUS.value:
            if body.get("state") == "online":
                online.add(node)
            else:
                online.discard(node)
            return
        offer = self.prepared.offer
        if body.get("deployment") != offer.deployment:
            return
        if kind == Outbound.OTA_GET.value:
            self._serve(node, body.get("chunks", []))
            return
        if kind == Outbound.OTA_STATUS.value:
            p = self.progress.setdefault(node, NodeProgress(node))
            p.step = str(body.get("step", p.step))
            p.received = int(body.get("received", p.received) or 0)
            p.chunks = int(body.get("chunks", p.chunks or offer.total_chunks) or 0)
            p.reason = str(body.get("reason", ""))
            p.version = str(body.get("version", p.version))
            p.updated = time.time()
            if on_progress is not None:
                on_progress(p)

    def _chunk_data(self, index: int) -> bytes:
        """Bytes of chunk ``index`` (raises UpdateError when out of range)."""
        return read_chunk(self.prepared.archive, index, self.prepared.offer.chunk_size)

    def _serve(self, node: str, chunks: Any) -> None:
        offer = self.prepared.offer
        if not isinstance(chunks, list):
            return
        p = self.progress.setdefault(node, NodeProgress(node, step="downloading"))
        topic = f"{ROOT}/{self.group}/{node}/{Inbound.OTA_CHUNK.value}"
        for index in chunks[:64]:
            try:
                data = self._chunk_data(index)
            except UpdateError as exc:
                log.warning("node %s asked for %s: %s", node, index, exc)
                continue
            self.link.publish_now(topic, encode_chunk(offer.deployment, index, data))
            self.chunks_sent += 1
            p.received = max(p.received, index + 1)


def deploy(
    broker: BrokerConfig,
    group: str,
    bundle: str | Path,
    key: str | Path | None = None,
    node: str | None = None,
    force: bool = False,
    timeout_s: float = 300.0,
    wait_for: set[str] | None = None,
    on_progress: Callable[[NodeProgress], None] | None = None,
) -> dict[str, NodeProgress]:
    """Sign, pack, offer and serve a bundle; return each node's outcome (one call)."""
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as tmp:
        prepared = prepare_bundle(bundle, tmp, key=key, force=force)
        deployer = Deployer(broker, group, prepared, node=node)
        return deployer.run(timeout_s=timeout_s, wait_for=wait_for, on_progress=on_progress)
