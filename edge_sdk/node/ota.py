"""Model updates over MQTT, node side: offer → download → verify → stage → canary → swap.

Each step is published on ``edge/{group}/{node}/ota/status`` through the
outbox, so the fleet learns the outcome even if the link drops meanwhile:
``offered``, ``downloading`` (progress), ``downloaded``, ``verified``,
``staged``, ``canary_passed``, ``swapped``; or ``refused`` with the step and
the reason; or ``rolled_back``.

What is refused, before anything changes on the node:

* an offer that does not parse, or for a bundle over the size limit;
* a manifest signature that is malformed, bad, or by a key the node does not
  trust (checked on the offer, before downloading a byte);
* a manifest of an unknown schema version;
* a version that is not newer than the running one, unless ``force``;
* a chunk whose sha256 differs from the offer (fetched again up to 3 times),
  or a whole archive whose sha256 differs;
* an archive whose manifest is not byte-identical to the signed one, or whose
  files do not match the manifest;
* a bundle this node cannot load, or whose canary outputs or latency fail.

Crash safety: chunks are written to ``state/downloads/{deployment}`` and the
active-slot pointer flips atomically only after the canary passed (see
:mod:`edge_sdk.node.slots`), so a kill at any point leaves the previous model
serving after restart; a restarted download resumes with the chunks it lacks.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._fs import write_atomic
from ..bundle import Bundle
from ..errors import (
    ConfigError,
    EdgeSDKError,
    InvalidInputError,
    ManifestError,
    SignatureError,
    UpdateError,
)
from ..manifest import MANIFEST_NAME, parse_manifest
from ..mqtt.topics import Inbound, Outbound, decode_chunk, dumps
from ..mqtt.transfer import Download, Offer
from ..signing import load_public_keys, verify_manifest
from .health import run_canary
from .outbox import Priority

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..mqtt.link import MqttLink
    from ..mqtt.topics import JsonScheme
    from ..runtime import Runtime
    from .active_model import ActiveModel
    from .config import NodeConfig
    from .slots import ModelSlots

log = logging.getLogger(__name__)

#: Chunks requested at a time (the node's flow control of the transfer).
REQUEST_WINDOW = 8
#: Seconds without a chunk before the missing ones are requested again.
RETRY_AFTER_S = 3.0
#: Re-requests of an unanswered transfer before it is reported stalled.
MAX_RETRIES = 20
#: Bad copies of one chunk accepted before the update is refused as tampered.
MAX_BAD_CHUNKS = 3
#: Lowest canary latency budget when derived from the running model.
MIN_BUDGET_MS = 50.0


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions like ``1.2.10`` > ``1.2.9``; numeric parts before text ones.

    A pre-release suffix (``1.2.0-rc1``) sorts before the release ``1.2.0``.
    """
    core, _, pre = version.partition("-")
    parts: list[tuple[int, int | str]] = []
    for piece in core.replace("+", ".").split("."):
        parts.append((1, int(piece)) if piece.isdigit() else (0, piece))
    parts.append((0, pre) if pre else (2, ""))
    return tuple(parts)


class UpdateHost(Protocol):
    """What the update agent needs from the node it updates (the node implements it)."""

    config: NodeConfig
    state_dir: Path
    model: ActiveModel
    slots: ModelSlots
    scheme: JsonScheme
    link: MqttLink | None
    canary_ms: float | None

    def load_runtime(self, bundle_dir: Path) -> Runtime: ...

    def assembler_for(self, m: Manifest) -> object: ...

    def alarm_for(self, m: Manifest) -> object: ...

    def swap(self, runtime: Runtime, source: Path) -> None: ...

    def publish(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> None: ...


class UpdateAgent:
    """Runs model updates for one node on its own thread.

    Args:
        node: The node to update.
    """

    def __init__(self, node: UpdateHost) -> None:
        self.node = node
        cfg = node.config
        self._trusted = load_public_keys(cfg.trusted_keys) if cfg.trusted_keys else {}
        self._dir = node.state_dir / "downloads"
        self._history_path = node.state_dir / "updates.json"
        self._history: dict[str, str] = self._load_history()
        self._queue: queue.Queue[tuple[Inbound | str, Any]] = queue.Queue(maxsize=1024)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._download: Download | None = None
        self._bad: dict[int, int] = {}
        self._last_chunk = 0.0
        self._retries = 0
        self._requested: set[int] = set()
        self._offer_now: Offer | None = None  # the offer being handled (named in every status)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-node-ota", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, kind: Inbound, payload: bytes) -> None:
        """Queue an offer or chunk (called from the network thread; never blocks)."""
        try:
            self._queue.put_nowait((kind, payload))
        except queue.Full:
            log.warning("update queue full; dropping a %s message (it will be re-requested)", kind)

    def rollback(self, reason: str) -> None:
        """Ask the agent thread to return to the previous model."""
        self._queue.put(("rollback", reason))

    # -- loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                kind, payload = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._maybe_retry()
                continue
            try:
                if kind is Inbound.OTA_OFFER:
                    self._offer(payload)
                elif kind is Inbound.OTA_CHUNK:
                    self._chunk(payload)
                elif kind == "rollback":
                    self._rollback(str(payload))
            except UpdateError as exc:
                self._refuse(exc)
            except Exception as exc:  # an update must never take the node down
                log.exception("update step failed")
                self._refuse(UpdateError("internal", f"{type(exc).__name__}: {exc}"))
            self._maybe_retry()

    # -- steps ----------------------------------------------------------------------------------
    def _status(self, step: str, **body: Any) -> None:
        offer = self._offer_now
        if offer is not None:
            body.setdefault("deployment", offer.deployment)
            body.setdefault("version", offer.version)
        self.node.publish(Outbound.OTA_STATUS, {"step": step, **body}, Priority.CONTROL)
        log.info("update %s: %s", step, body.get("reason") or body.get("deployment", ""))

    def _refuse(self, exc: UpdateError, deployment: str | None = None) -> None:
        offer = self._offer_now
        dep = deployment or (offer.deployment if offer else None)
        running = self.node.model.runtime.manifest.model.version
        self._status(
            "refused",
            at=exc.step,
            reason=str(exc),
            deployment=dep,
            running_version=running,
        )
        if dep:
            self._remember(dep, f"refused at {exc.step}")
        if self._download is not None:
            self._download.discard()
            self._download = None
        self._offer_now = None

    def _offer(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained offer
        offer = Offer.parse(payload)
        if offer.deployment in self._history:
            return  # retained offers come back on every reconnect
        if self._download is not None and self._download.offer.deployment == offer.deployment:
            return
        self._offer_now = offer
        running = self.node.model.runtime.manifest
        try:
            if not self._trusted:
                raise SignatureError("this node trusts no signing keys (config trusted_keys)")
            key = verify_manifest(offer.manifest.encode(), offer.signature, self._trusted)
        except SignatureError as exc:
            raise UpdateError("verify", str(exc)) from None
        try:
            manifest = parse_manifest(offer.manifest)
        except ManifestError as exc:
            raise UpdateError("verify", f"manifest refused: {exc}") from None
        if (manifest.model.name, manifest.model.version) != (offer.name, offer.version):
            raise UpdateError("offer", "offer name/version differ from its signed manifest")
        newer = version_key(offer.version) > version_key(running.model.version)
        if not newer and not (offer.force or self.node.config.allow_downgrade):
            same = offer.version == running.model.version
            raise UpdateError(
                "offer",
                f"version {offer.version} is {'the running' if same else 'older than the running'}"
                f" {running.model.version}; deploy with --force to install it anyway",
            )
        if self._download is not None:
            self._download.discard()
        self._download = Download(self._dir / offer.deployment, offer)
        self._bad.clear()
        self._retries = 0
        self._requested.clear()
        got, total = self._download.progress()
        self._status(
            "offered",
            key_id=key,
            size=offer.size,
            chunks=total,
            resumed_chunks=got,
            from_version=running.model.version,
        )
        self._request_more()

    def _chunk(self, payload: bytes) -> None:
        try:
            deployment, index, data = decode_chunk(payload)
        except InvalidInputError as exc:
            log.warning("ignoring a malformed chunk message: %s", exc)
            return
        dl = self._download
        if dl is None or deployment != dl.offer.deployment:
            return  # a late chunk of a finished or refused transfer
        self._last_chunk = time.monotonic()
        self._requested.discard(index)
        try:
            dl.write_chunk(index, data)
        except UpdateError as exc:
            self._bad[index] = self._bad.get(index, 0) + 1
            if self._bad[index] >= MAX_BAD_CHUNKS:
                raise UpdateError(
                    "download", f"chunk {index} failed verification {MAX_BAD_CHUNKS} times: {exc}"
                ) from None
            log.warning("%s; requesting it again", exc)
        got, total = dl.progress()
        if got == total:
            self._install(dl)
            return
        if got % max(1, total // 10) == 0:
            self._status("downloading", received=got, chunks=total)
        self._request_more()

    def _request_more(self, again: bool = False) -> None:
        dl = self._download
        if dl is None or self.node.link is None:
            return
        if again:
            self._requested.clear()
        room = REQUEST_WINDOW - len(self._requested)
        if room <= 0:
            return
        wanted = [i for i in dl.missing() if i not in self._requested][:room]
        if not wanted:
            return
        body = {"deployment": dl.offer.deployment, "chunks": wanted}
        sent = self.node.link.publish_now(
            self.node.scheme.topic(Outbound.OTA_GET),
            self.node.scheme.envelope(Outbound.OTA_GET, body),
        )
        if sent:
            self._requested.update(wanted)
            self._last_chunk = self._last_chunk or time.monotonic()

    def _maybe_retry(self) -> None:
        if self._download is None or time.monotonic() - self._last_chunk < RETRY_AFTER_S:
            return
        self._retries += 1
        self._last_chunk = time.monotonic()
        if self._retries == MAX_RETRIES:
            got, total = self._download.progress()
            self._status("stalled", received=got, chunks=total, reason="no chunks arriving")
        self._request_more(again=True)

    def _install(self, dl: Download) -> None:
        offer = dl.offer
        archive = dl.finalize()
        self._status("downloaded", size=offer.size)
        try:
            staged = self.node.slots.stage(archive)
        except ManifestError as exc:
            raise UpdateError("verify", f"bundle refused: {exc}") from None
        if (staged / MANIFEST_NAME).read_bytes() != offer.manifest.encode():
            raise UpdateError("verify", "the bundle's manifest.json is not the one that was signed")
        self._status("verified")
        runtime = self._load(staged)
        budget = self.node.config.canary_latency_ms or (
            max(MIN_BUDGET_MS, 3 * self.node.canary_ms) if self.node.canary_ms else None
        )
        result = run_canary(runtime, Bundle.open(staged), latency_budget_ms=budget)
        if not result.passed:
            runtime.close()
            raise UpdateError("canary", result.reason)
        self._status(
            "canary_passed",
            max_abs_err=result.max_abs_err,
            latency_ms=round(result.latency_ms, 3),
            budget_ms=budget,
        )
        try:
            self.node.assembler_for(runtime.manifest)
            self.node.alarm_for(runtime.manifest)
        except ConfigError as exc:
            runtime.close()
            raise UpdateError("stage", str(exc)) from None
        self.node.slots.activate(staged)
        old = self.node.model.runtime.manifest.model.version
        self.node.swap(runtime, staged)
        self._remember(offer.deployment, "swapped")
        self._status("swapped", from_version=old, backend=runtime.describe().get("backend"))
        dl.discard()
        self._download = None
        self._offer_now = None
        shutil.rmtree(self._dir / offer.deployment, ignore_errors=True)

    def _load(self, staged: Path) -> Runtime:
        try:
            return self.node.load_runtime(staged)
        except EdgeSDKError as exc:
            raise UpdateError("stage", f"this node cannot load the bundle: {exc}") from None

    def _rollback(self, reason: str) -> None:
        try:
            back = self.node.slots.rollback()
        except UpdateError as exc:
            self._status("rollback_refused", reason=str(exc))
            return
        runtime = self._load(back)
        current = self.node.model.runtime.manifest.model.version
        self.node.swap(runtime, back)
        self._status(
            "rolled_back",
            reason=reason,
            from_version=current,
            version=runtime.manifest.model.version,
        )

    # -- history -----------------------------------------------------------------------------
    def _load_history(self) -> dict[str, str]:
        try:
            data = json.loads(self._history_path.read_text(encoding="utf-8"))
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _remember(self, deployment: str, outcome: str) -> None:
        self._history[deployment] = outcome
        write_atomic(self._history_path, dumps(self._history))
