"""The edge node: sensor windows in, results out, through a durable outbox.

Threads:

* paho's network thread receives messages and only queues them; the worker
  acknowledges each one (MQTT PUBACK) once its batch's results and the window
  buffer are committed to the outbox (docs/node.md, "Delivery guarantees");
* the **worker** drains the queue in batches: assembles sensor windows, runs
  up to ``max_batch`` windows in one backend call, writes results, alerts and
  errors to the outbox in one transaction, and sends telemetry when due;
* the **outbox pump** (:mod:`edge_sdk.mqtt.link`) publishes stored rows with a
  bounded in-flight window;
* the **update agent** (:mod:`edge_sdk.node.ota`) downloads, verifies and
  health-checks model updates, then hands the new runtime to
  :class:`~edge_sdk.node.active_model.ActiveModel`, which swaps it in between calls.

A bad message never stops the node: it is answered on the ``errors`` topic,
naming the field and what was expected, and the worker carries on.

With ``scheme: sparkplug`` results, alerts and telemetry leave as Sparkplug B
DDATA/NDATA (:mod:`edge_sdk.node.sparkplug`), NCMD metrics become the same
commands as the JSON ``cmd`` topic, and model updates, errors and OTA status
stay on the JSON topics at QoS 1.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EdgeSDKError, InvalidInputError
from ..io_contract import GraphForm
from ..manifest import Manifest
from ..mqtt.link import Delivery, MqttLink
from ..mqtt.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from ..mqtt.sparkplug import metrics as spm
from ..mqtt.topics import Inbound, JsonScheme, Outbound, check_topic, dumps, finite, loads
from ..runtime import Runtime
from .active_model import ActiveModel
from .alarm import RAISED, Alarm, AlarmRule
from .config import NodeConfig
from .health import run_canary
from .ota import UpdateAgent
from .outbox import Outbox, Outgoing, Priority
from .schemes import JsonNodeScheme, NodeScheme
from .slots import ModelSlots
from .sparkplug import SparkplugSession
from .telemetry import NodeStats, result_body
from .windows import Gap, Incomplete, Window, WindowAssembler, WindowSpec

log = logging.getLogger(__name__)

#: Consecutive failed batches right after an update that trigger a rollback.
ROLLBACK_AFTER_FAILURES = 3
#: The last topic levels of a node's topics (``edge/{group}/{node}/{kind}``).
_NODE_KINDS = frozenset(k.value for k in (*Inbound, *Outbound))
#: Longest error text taken from an unforeseen exception (its message may quote the input).
_MAX_FAILURE_CHARS = 300
#: Largest ``id`` / ``correlation`` echoed back in a reply, in bytes of JSON.
_MAX_ECHO_BYTES = 1024
#: Outbox state key of the sensor-window buffer (committed with each batch's results).
WINDOW_STATE = "windows"


@dataclass(frozen=True)
class _Msg:
    kind: Inbound
    payload: bytes
    properties: Any
    received: float
    #: MQTT input: acknowledged by the worker once the batch is committed.
    delivery: Delivery | None = None


class EdgeNode:
    """A factory node: serves its model locally and, with a broker, over MQTT.

    Example:
        >>> cfg = load_config("node.yaml", bundle="tep.bundle")   # doctest: +SKIP
        >>> with EdgeNode(cfg) as node:                           # doctest: +SKIP
        ...     node.infer({"x": window})

    Args:
        config: The node configuration.
        on_result: Optional local listener, called (worker thread) with each
            result message body.
    """

    def __init__(
        self, config: NodeConfig, on_result: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.config = config
        self.scheme = JsonScheme(config.group, config.node_id)
        self.stats = NodeStats()
        self._on_result = on_result
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.state_dir = state
        self.slots = ModelSlots(state / "models")
        source = self._initial_bundle()
        self.model = ActiveModel(self._load_runtime(source), source)
        try:
            manifest = self.model.runtime.manifest
            self._assembler = self.assembler_for(manifest)
            # The model the alarm belongs to, set together with it: a batch run on another
            # model (during a swap) is not alerted by the wrong rule.
            self._alerting: tuple[Manifest, Alarm | None] = (manifest, self.alarm_for(manifest))
        except ConfigError:
            self.model.close()
            raise
        self._failures_since_swap: int | None = None
        self.canary_ms = self._measure_canary()
        self._alert_class: int | None = None
        self._queue: queue.Queue[_Msg] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._stopped = False
        self._worker: threading.Thread | None = None
        self._telemetry_interval = config.telemetry_interval_s
        self._next_telemetry = time.monotonic() + (self._telemetry_interval or 0)
        self._last_telemetry: dict[str, Any] = {}
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.updates: UpdateAgent | None = None
        # The wire scheme: how the node's messages map to topics, and what the link calls.
        self.wire: NodeScheme = JsonNodeScheme(self.scheme, self._status_payload)
        if config.broker is not None:
            oc = config.outbox
            self.outbox = Outbox(
                state / "outbox.sqlite", max_bytes=oc.max_bytes, sync=oc.sync, replay_s=oc.replay_s
            )
            if config.scheme == "sparkplug":
                self.wire = self._sparkplug_session()
            self._restore_windows()
            self.link = MqttLink(
                config.broker,
                client_id=f"edge-node-{config.group}-{config.node_id}",
                on_delivery=self._on_message,
                subscriptions=self.wire.subscriptions(),
                on_connect=self._on_connect,
                outbox=self.outbox,
                outbox_config=oc,
                scheme=self.wire,
            )
            self.updates = UpdateAgent(self)

    @property
    def sparkplug(self) -> SparkplugSession | None:
        """The Sparkplug session (``scheme: sparkplug`` with a broker), else None."""
        return self.wire if isinstance(self.wire, SparkplugSession) else None

    def _sparkplug_session(self) -> SparkplugSession:
        cfg = self.config
        assert isinstance(self.wire, JsonNodeScheme)
        return SparkplugSession(
            cfg.group,
            cfg.node_id,
            cfg.sparkplug.device,
            self.state_dir,
            node_metrics=lambda: spm.node_birth(self.describe(), self._last_telemetry),
            device_metrics=self._device_birth,
            telemetry_interval=lambda: self._telemetry_interval,
            json=self.wire,
            primary_host=cfg.sparkplug.primary_host,
            sensor_sources=cfg.sparkplug.sensor_sources,
        )

    def _device_birth(self) -> list[spm.Triple]:
        manifest, alarm = self._alerting
        meta = {"name": manifest.model.name, "version": manifest.model.version}
        outputs = [o.name for o in manifest.outputs]
        return spm.device_birth(meta, outputs, alarm.rule.threshold if alarm else None)

    # -- model ---------------------------------------------------------------------------
    def _initial_bundle(self) -> Path:
        active = self.slots.active()
        if active is not None:
            return active
        if self.config.bundle is None:
            raise ConfigError(
                f"no model: {self.state_dir / 'models'} holds none yet; pass --bundle "
                "(or `bundle:` in the config file) for the first start"
            )
        log.info("installing %s as the first model", self.config.bundle)
        # Trusted keys guard every model this node loads, the first one too.
        return self.slots.install(self.config.bundle, self.config.trusted_keys or None)

    def _load_runtime(self, bundle_dir: Path) -> Runtime:
        cfg = self.config
        return Runtime.load(
            bundle_dir,
            profile=cfg.profile,
            backend=cfg.backend,
            threads=cfg.threads,
            precision=cfg.precision,
            trusted_keys=cfg.trusted_keys or None,
        )

    def load_runtime(self, bundle_dir: Path) -> Runtime:
        """Load a bundle the way this node loads its models (profile, backend...)."""
        return self._load_runtime(bundle_dir)

    def _measure_canary(self) -> float | None:
        rt = self.model.runtime
        if rt.manifest.canary is None:
            log.warning("the running bundle has no canary: updates are still health-checked")
            return None
        result = run_canary(rt, rt.bundle)
        if not result.passed:
            log.error("the running model fails its own canary: %s", result.reason)
        return result.latency_ms

    def swap(self, runtime: Runtime, source: Path) -> None:
        """Serve ``runtime`` from the next call on (in-flight calls finish on the old one).

        The new model's alarm rule applies from then on, its run counter from zero.

        Raises:
            ConfigError: The new model's input layout does not fit the window
                config, or the alert config overrides a decision rule the new
                model lacks (checked before anything changes).
        """
        assembler = self.assembler_for(runtime.manifest, keep=self._assembler)
        alarm = self.alarm_for(runtime.manifest)
        self.model.swap(runtime, source)
        self._assembler = assembler
        self._alerting = (runtime.manifest, alarm)
        self._failures_since_swap = 0
        self.canary_ms = self._measure_canary()
        self.publish_birth()

    def assembler_for(
        self, m: Manifest, keep: WindowAssembler | None = None
    ) -> WindowAssembler | None:
        """The window assembler a model needs (None for whole-graph models).

        Raises:
            ConfigError: The window config does not fit the model's input.
        """
        if m.graph.form is GraphForm.DYNAMIC or len(m.inputs[0].shape) != 3:
            return None
        n, f = m.inputs[0].shape[1], m.inputs[0].shape[2]
        if not isinstance(n, int) or not isinstance(f, int):
            return None
        wc = self.config.window
        sensors = tuple(wc.sensors) if wc.sensors else tuple(f"s{i}" for i in range(n))
        size = wc.size or f
        if len(sensors) != n or size != f:
            raise ConfigError(
                f"window config does not fit the model: it takes [{n} sensors, {f} samples], "
                f"the config gives [{len(sensors)} sensors, {size} samples]"
            )
        spec = WindowSpec(
            sensors,
            size,
            wc.stride,
            wc.timeout_s,
            period_s=wc.period_s,
            gap_tolerance=wc.gap_tolerance,
            on_gap=wc.on_gap,
            max_future_s=wc.max_future_s,
            max_past_s=wc.max_past_s,
        )
        if keep is not None and keep.spec == spec:
            return keep  # same input layout: keep the buffered samples across a swap
        return WindowAssembler(spec)

    def alarm_for(self, m: Manifest) -> Alarm | None:
        """A fresh alarm for the model's decision rule (None: the class rule applies).

        Raises:
            ConfigError: ``alert.score_threshold`` or ``alert.consecutive`` is set
                but the model has no decision rule to override.
        """
        rule = AlarmRule.for_model(m, self.config.alert)
        return Alarm(rule, m) if rule is not None else None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> EdgeNode:
        """Start the worker and (with a broker) the MQTT link; returns at once."""
        self._worker = threading.Thread(target=self._work, name="edge-node-worker", daemon=True)
        self._worker.start()
        if self.updates is not None:
            self.updates.start()
        if self.link is not None:
            self.link.start()
        return self

    def stop(self) -> None:
        """Stop cleanly: publish ``offline``, flush in-flight messages, close (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
        if self.updates is not None:
            self.updates.stop()
        if self.link is not None:
            self.link.stop()  # the scheme's goodbye: offline status (Sparkplug: DDEATH, NDEATH)
        if self.outbox is not None:
            self.outbox.close()
        self.model.close()

    def __enter__(self) -> EdgeNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Block until interrupted (SIGINT/SIGTERM handled by the CLI)."""
        while not self._stop.is_set():
            self._stop.wait(0.5)

    # -- local API ---------------------------------------------------------------------------
    def infer(self, inputs: Any, *, strict: bool = False) -> dict[str, np.ndarray]:
        """Run one request on the current model (thread-safe, swap-safe).

        ``strict`` as in :meth:`~edge_sdk.Runtime.infer` (the MQTT ``infer`` topic is strict).
        """
        with self.model.use() as rt:
            return rt.infer(inputs, strict=strict)

    def submit_sensors(self, payload: dict[str, Any] | bytes) -> None:
        """Feed one sensor message as if it came from MQTT (local-only nodes).

        Raises:
            InvalidInputError: ``payload`` holds NaN or infinite readings (the
                rest is checked by the worker, which answers on ``errors``).
        """
        try:
            raw = payload if isinstance(payload, bytes) else dumps(payload)
        except ValueError as exc:
            raise InvalidInputError("values", f"readings must be finite numbers ({exc})") from None
        self._enqueue(Inbound.SENSORS, raw, None)

    def describe(self) -> dict[str, Any]:
        """Model, backend and state of this node."""
        rt = self.model.runtime
        d = rt.describe()
        return {
            "node": self.config.node_id,
            "group": self.config.group,
            "model": {"name": d["model"], "version": d["version"]},
            "backend": d.get("backend"),
            "precision": str(rt.artifact.precision),
            "connected": bool(self.link and self.link.connected),
        }

    # -- MQTT in -----------------------------------------------------------------------------
    def _on_message(
        self, topic: str, payload: bytes, properties: Any, delivery: Delivery | None = None
    ) -> None:
        """paho's network thread. Sensors, infer and cmd are acknowledged by the worker
        once their batch is committed; everything else at once (see docs/node.md)."""
        kind = None
        if not self._own_topic(topic, payload):
            kind = self.scheme.classify(topic)
        if kind in (Inbound.OTA_OFFER, Inbound.OTA_CHUNK):
            if self.updates is not None:
                self.updates.submit(kind, payload)
        elif kind is not None:
            self._enqueue(kind, payload, properties, delivery)
            return
        self._ack(delivery)

    def _ack(self, *deliveries: Delivery | None) -> None:
        if self.link is not None:
            self.link.ack(*deliveries)

    def _enqueue(
        self, kind: Inbound, payload: bytes, properties: Any, delivery: Delivery | None = None
    ) -> None:
        try:
            self._queue.put(
                _Msg(kind, payload, properties, time.monotonic(), delivery), timeout=1.0
            )
        except queue.Full:
            self.stats.overloaded += 1
            self._error(
                "queue",
                f"node overloaded: {self.config.queue_size} messages waiting; message dropped",
                kind=kind,
            )
            self._ack(delivery)  # refused with an error, like any bad message

    def _own_topic(self, topic: str, payload: bytes) -> bool:
        """A message on the wire scheme's own topics (Sparkplug), handled here (True)."""
        asm = self._assembler
        try:
            got = self.wire.receive(topic, payload, asm.spec.sensors if asm else None)
        except InvalidInputError as exc:
            self._error(exc.field, str(exc))
            return True
        if got is None:
            return False
        for kind, body in got.items:
            self._enqueue(kind, body, None)
        if got.birth and self.link is not None:
            self.link.birth()
        return True

    def _on_connect(self, session_present: bool) -> None:
        self._publish_status("online")  # then the link sends the scheme's births

    def publish_birth(self) -> None:
        """Publish the retained ``online`` status (model, backend, version).

        With Sparkplug, also NBIRTH and DBIRTH (a rebirth: seq from 0, same bdSeq).
        """
        if self.link is not None:
            self._publish_status("online")
            self.link.birth()

    def _publish_status(self, state: str) -> None:
        if self.link is not None:
            topic = self.scheme.topic(Outbound.STATUS)
            self.link.publish_now(topic, self._status_payload(state), retain=True)

    def _status_payload(self, state: str) -> bytes:
        body: dict[str, Any] = {"state": state}
        if state != "lost" and hasattr(self, "model"):
            body.update(self.describe())
            body.pop("connected", None)
        return self.scheme.envelope(Outbound.STATUS, body)

    # -- worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            batch: list[_Msg] = []
            try:
                batch.append(self._queue.get(timeout=0.05))
                while len(batch) < self.config.max_batch * 4:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                self._process(batch)
            except Exception:  # never let one bad batch stop the node
                # _process isolates every message, so this is the commit itself failing
                # (the outbox's disk): nothing of the batch could be kept, not even errors.
                log.exception("worker failed on a batch of %d messages", len(batch))
                self.stats.errors += 1
                self.stats.dropped += len(batch)
            finally:
                # Every message exactly once, after _process committed its results and the
                # window state (or answered it on errors): see docs/node.md.
                self._ack(*(m.delivery for m in batch))

    def _process(self, batch: list[_Msg]) -> None:
        """One batch: each message on its own, windows merged, one commit.

        A message's outcome is a result, a reply, or an ``errors`` message: a
        failure in one message (bad input, or a bug it triggers) is caught around
        that message alone; a failed merged inference is re-run window by window
        (:meth:`_run_windows`); a message body that cannot be encoded is replaced
        by an error at commit (:meth:`_commit`). So nothing in a batch is lost
        because of another message, and every message is acknowledged once.
        """
        out: list[Outgoing] = []
        windows: list[tuple[Window, float]] = []
        for msg in batch:
            self.stats.messages += 1
            try:
                if msg.kind is Inbound.SENSORS:
                    windows.extend((w, msg.received) for w in self._sensors(msg, out))
                elif msg.kind is Inbound.INFER:
                    self._infer_request(msg, out)
                elif msg.kind is Inbound.CMD:
                    self._command(msg, out)
            except InvalidInputError as exc:
                out.append(self._error_msg(exc.field, str(exc), kind=msg.kind))
            except Exception as exc:  # unforeseen: still this message's failure alone
                log.exception("failed on one %s message", msg.kind.value)
                out.append(self._error_msg("payload", _failure(exc), kind=msg.kind))
        if self._assembler is not None:
            # Giving up a timed-out sample can release complete ones queued behind it.
            now = time.monotonic()
            for item in self._assembler.poll():
                if isinstance(item, Window):
                    self.stats.windows += 1
                    windows.append((item, now))
                elif isinstance(item, Gap):
                    self._gap(item, out)
                else:
                    self._incomplete(item, out)
        for i in range(0, len(windows), self.config.max_batch):
            self._run_windows(windows[i : i + self.config.max_batch], out)
        if time.monotonic() >= self._next_telemetry and self._telemetry_interval > 0:
            out.append(self._telemetry())
            self._next_telemetry = time.monotonic() + self._telemetry_interval
        self._commit(out, self._window_state())

    def _commit(self, out: list[Outgoing], state: dict[str, bytes] | None) -> None:
        """:meth:`_emit`, replacing a message that cannot be encoded by an error.

        The outbox encodes a batch in one all-or-nothing transaction, so one
        body that JSON refuses (a NaN from a model, say) would cost them all.
        """
        try:
            self._emit(out, state)
            return
        except (ValueError, TypeError) as exc:  # from a payload; disk errors propagate
            log.error("a message of the batch cannot be encoded (%s); isolating it", exc)
        kept: list[Outgoing] = []
        for item in out:
            try:
                if callable(item.payload):
                    item.payload(0)
                kept.append(item)
            except (ValueError, TypeError) as exc:
                kept.append(self._error_msg("payload", f"reply could not be encoded: {exc}"))
        self._emit(kept, state)

    def _sensors(self, msg: _Msg, out: list[Outgoing]) -> list[Window]:
        if self._assembler is None:
            raise InvalidInputError(
                "sensors", "this model takes whole graphs, not sensor windows: use the infer topic"
            )
        body = loads(msg.payload, self.config.max_payload_bytes)
        rows = body.get("rows")
        if rows is None:
            rows = [body]
        elif not isinstance(rows, list):
            raise InvalidInputError("rows", f"expected a list of rows, got {type(rows).__name__}")
        windows: list[Window] = []
        asm = self._assembler
        redelivered = msg.delivery is not None and msg.delivery.dup
        duplicates = asm.duplicates
        for i, row in enumerate(rows):
            where = "" if "rows" not in body else f"rows[{i}]."
            try:  # a bad row costs itself: the rows before it already made windows
                if not isinstance(row, dict) or "values" not in row or "t" not in row:
                    raise InvalidInputError(
                        "row", 'expected {"t": <seconds>, "values": [...] or {...}}'
                    )
                t = finite(row["t"], "t")
                produced = asm.add(t, row["values"], redelivered=redelivered)
            except InvalidInputError as exc:
                out.append(self._error_msg(f"{where}{exc.field}", str(exc), kind=msg.kind))
                continue
            except (OverflowError, TypeError) as exc:  # e.g. an integer beyond the float range
                out.append(self._error_msg(f"{where}values", _failure(exc), kind=msg.kind))
                continue
            for item in produced:
                if isinstance(item, Window):
                    windows.append(item)
                elif isinstance(item, Gap):
                    self._gap(item, out)
                else:
                    self._incomplete(item, out)
        self.stats.duplicates += asm.duplicates - duplicates
        self.stats.windows += len(windows)
        return windows

    def _gap(self, gap: Gap, out: list[Outgoing]) -> None:
        self.stats.gaps += 1
        period = self.config.window.period_s
        what = "skipped" if gap.skipped else "flagged"
        out.append(
            self._error_msg(
                "t",
                f"gap in the sensor stream: t={gap.t_from} -> t={gap.t_to} with "
                f"window.period_s={period}, about {gap.missing} row(s) missing; windows "
                f"spanning it are {what}",
                kind=Inbound.SENSORS,
                extra={
                    "kind": "gap",
                    "from": gap.t_from,
                    "to": gap.t_to,
                    "missing": gap.missing,
                    "windows": what,
                },
            )
        )

    def _restore_windows(self) -> None:
        """Resume the window buffer committed with the outbox (after a stop or a crash)."""
        self._saved_windows: tuple[WindowAssembler | None, int] = (None, 0)
        asm, outbox = self._assembler, self.outbox
        if asm is None or outbox is None:
            return
        data = outbox.state(WINDOW_STATE)
        if data is None:
            return
        try:
            asm.restore(data)
        except ConfigError as exc:
            log.warning("starting with empty sensor windows: %s", exc)
            return
        self._saved_windows = (asm, asm.changes)
        log.info("resumed the sensor windows (%d sample(s) pending)", asm.pending)

    def _window_state(self) -> dict[str, bytes] | None:
        """The window buffer to commit with this batch, when it changed since the last one."""
        asm = self._assembler
        if asm is None or self.outbox is None:
            return None
        saved_asm, saved_changes = self._saved_windows
        if saved_asm is asm and saved_changes == asm.changes:
            return None
        self._saved_windows = (asm, asm.changes)
        return {WINDOW_STATE: asm.state()}

    def _incomplete(self, item: Incomplete, out: list[Outgoing]) -> None:
        self.stats.incomplete += 1
        out.append(
            self._error_msg(
                "values",
                f"sample at t={item.t} gave up after {self.config.window.timeout_s}s: "
                f"missing sensors {list(item.missing)}",
                kind=Inbound.SENSORS,
                extra={"t": item.t, "missing": list(item.missing)},
            )
        )

    def _run_windows(self, items: list[tuple[Window, float]], out: list[Outgoing]) -> None:
        """Run windows in one backend call; if it fails, each window alone.

        As the serving batcher does: only a window that also fails alone gets an
        error (naming it), the others their results. A merged batch in which no
        window ran counts once towards the post-update rollback.
        """
        if not items:
            return
        ran: list[tuple[list[tuple[Window, float]], dict[str, np.ndarray], Manifest]] = []
        failed: list[tuple[Window, Exception]] = []
        try:
            ran.append((items, *self._infer_windows(items)))
        except Exception as exc:
            if len(items) == 1:
                failed.append((items[0][0], exc))
            else:
                self.stats.retried_batches += 1
                for item in items:
                    try:
                        ran.append(([item], *self._infer_windows([item])))
                    except Exception as alone:
                        failed.append((item[0], alone))
        for w, why in failed:
            if not isinstance(why, EdgeSDKError):
                log.error("inference of window %d failed: %s", w.seq, _failure(why))
            out.append(self._window_error(w, "model", f"inference failed: {_failure(why)}"))
        if ran:
            self._failures_since_swap = None  # a good batch ends the post-update probation
        else:
            self._model_failed()
        for group, outputs, manifest in ran:
            self._results(group, outputs, manifest, out)

    def _infer_windows(
        self, items: list[tuple[Window, float]]
    ) -> tuple[dict[str, np.ndarray], Manifest]:
        x = np.stack([w.x for w, _ in items])
        t0 = time.perf_counter()
        with self.model.use() as rt:
            outputs = rt.infer(x)
            manifest = rt.manifest
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.stats.batches += 1
        self.stats.inferences += len(items)
        self.stats.infer_ms.append(infer_ms / len(items))
        return outputs, manifest

    def _window_error(self, w: Window, field_name: str, message: str) -> Outgoing:
        where = {"seq": w.seq, "t_start": w.t_start, "t_end": w.t_end}
        return self._error_msg(field_name, message, Inbound.SENSORS, {"window": where})

    def _results(
        self,
        items: list[tuple[Window, float]],
        outputs: dict[str, np.ndarray],
        manifest: Manifest,
        out: list[Outgoing],
    ) -> None:
        """Result (and alert) messages of windows that ran, each window on its own."""
        meta = {"name": manifest.model.name, "version": manifest.model.version}
        labels = manifest.model.labels
        now = time.monotonic()
        names = list(outputs)
        bound, alarm = self._alerting
        # Outputs of a model swapped out (or in) mid-batch: no rule of the other model applies.
        alerting = bound is manifest
        for i, (w, received) in enumerate(items):
            values = {k: outputs[k][i] for k in names}
            if not all(np.isfinite(v).all() for v in values.values()):
                out.append(
                    self._window_error(
                        w,
                        "values",
                        "the model's output for this window is not finite (NaN/inf): "
                        "readings far outside the range it was trained on?",
                    )
                )
                continue
            try:
                body = result_body(values, labels)
                body.update(
                    model=meta,
                    window={"seq": w.seq, "t_start": w.t_start, "t_end": w.t_end}
                    | ({"gap": True} if w.gap else {}),
                    latency_ms=round((now - received) * 1e3, 3),
                )
                alert = None
                if alerting and alarm is not None:
                    try:
                        alert = alarm.step(values, body)
                    except ValueError as exc:
                        out.append(self._error_msg("model", str(exc)))
                self.stats.e2e_ms.append(body["latency_ms"])
                out.append(self._out(Outbound.RESULTS, body, Priority.RESULT))
                if alert is not None:
                    if alert["state"] == RAISED:
                        self.stats.alerts += 1
                    out.append(self._out(Outbound.ALERTS, alert, Priority.CONTROL))
                elif alerting and alarm is None:
                    self._alert(body, out)
                if self._on_result is not None:
                    self._on_result(body)
            except Exception as exc:  # this window's result alone
                log.exception("building the result of window %d failed", w.seq)
                out.append(self._window_error(w, "model", _failure(exc)))

    def _alert(self, body: dict[str, Any], out: list[Outgoing]) -> None:
        cls = body.get("class")
        if cls is None:
            return
        rule = self.config.alert
        fault = cls != rule.normal_class and body["score"] >= rule.threshold
        if fault and cls != self._alert_class:
            self._alert_class = cls
            self.stats.alerts += 1
            out.append(self._out(Outbound.ALERTS, {"state": "raised", **body}, Priority.CONTROL))
        elif not fault and cls == rule.normal_class and self._alert_class is not None:
            self._alert_class = None
            out.append(self._out(Outbound.ALERTS, {"state": "cleared", **body}, Priority.CONTROL))

    def _model_failed(self) -> None:
        """A merged batch in which no window ran: towards the post-update rollback."""
        if self._failures_since_swap is None:
            return
        self._failures_since_swap += 1
        if self._failures_since_swap >= ROLLBACK_AFTER_FAILURES and self.updates is not None:
            self._failures_since_swap = None
            self.updates.rollback(f"{ROLLBACK_AFTER_FAILURES} failed batches after the update")

    def _infer_request(self, msg: _Msg, out: list[Outgoing]) -> None:
        body = loads(msg.payload, self.config.max_payload_bytes)
        props = msg.properties
        # Checked before anything runs: a reply to a topic the broker refuses would
        # cost the node its connection (paho re-sends it on every reconnect).
        reply_to = self._reply_topic(getattr(props, "ResponseTopic", None), body.get("reply_to"))
        correlation = getattr(props, "CorrelationData", None)
        echo = {"request_id": _echo(body.get("id"), "id")}
        if "correlation" in body:
            echo["correlation"] = _echo(body["correlation"], "correlation")
        try:
            inputs = body.get("inputs")
            if not isinstance(inputs, dict):
                raise InvalidInputError("inputs", 'expected {"inputs": {"x": [...]}}')
            t0 = time.perf_counter()
            # Strict: as the published metadata says (no [N, F] shorthand); the decoded
            # JSON goes in as is, so booleans among the numbers are refused, not coerced.
            result = self.infer(inputs, strict=True)
            self.stats.infer_ms.append((time.perf_counter() - t0) * 1e3)
            self.stats.inferences += 1
            if not all(np.isfinite(v).all() for v in result.values() if v.dtype.kind == "f"):
                raise InvalidInputError(
                    "inputs", "the model's output is not finite (NaN/inf) for these inputs"
                )
            reply: dict[str, Any] = {"outputs": {k: v.tolist() for k, v in result.items()}}
        except Exception as exc:  # any failure of this request is its reply, not the batch's
            if isinstance(exc, InvalidInputError):
                reply = {"error": str(exc), "field": exc.field}
            else:
                reply = {"error": _failure(exc), "field": "inputs"}
        reply.update(echo)
        if reply_to is not None and self.link is not None:
            self.stats.errors += "error" in reply
            payload = self.scheme.envelope(Outbound.RESULTS, reply)
            props_out = self.link.properties(CorrelationData=correlation) if correlation else None
            self.link.publish_now(reply_to, payload, properties=props_out)
        elif "error" in reply:
            out.append(self._error_msg(reply["field"], reply["error"], kind=msg.kind))
        else:
            out.append(self._out(Outbound.RESULTS, reply, Priority.RESULT))

    def _reply_topic(self, response_topic: Any, reply_to: Any) -> str | None:
        """The topic to answer an ``infer`` request on, or None (answer on ``results``).

        Raises:
            InvalidInputError: (``reply_to``) not a topic the broker accepts
                (:func:`~edge_sdk.mqtt.topics.check_topic`), or a topic of a
                node (``edge/{group}/{node}/{kind}`` for any of the kinds in
                :class:`Inbound` / :class:`Outbound`) or of Sparkplug: a reply
                is never fed to a node as input, nor passed off as a node's
                results, alerts or status.
        """
        raw = response_topic if response_topic is not None else reply_to
        if raw is None:
            return None
        topic = check_topic(raw, "reply_to")
        parts = self.scheme.parse(topic)
        if (parts is not None and parts[2] in _NODE_KINDS) or topic.startswith(
            f"{SPARKPLUG_NAMESPACE}/"
        ):
            raise InvalidInputError(
                "reply_to", f"{topic!r} is a node's own topic; reply on a topic of your own"
            )
        return topic

    def _command(self, msg: _Msg, out: list[Outgoing]) -> None:
        body = loads(msg.payload, self.config.max_payload_bytes)
        cmd = body.get("cmd")
        if cmd == "telemetry_interval":
            value = finite(body.get("value"), "value")
            if value < 0:
                raise InvalidInputError("value", f"expected seconds >= 0, got {value}")
            self._telemetry_interval = value
            self._next_telemetry = time.monotonic() + value
            out.append(self._telemetry())
        elif cmd == "rollback":
            if self.updates is None:
                raise InvalidInputError("cmd", "rollback needs the MQTT link")
            self.updates.rollback("requested by command")
        elif cmd == "rebirth":
            self.publish_birth()
        elif cmd == "telemetry":
            out.append(self._telemetry())
        else:
            raise InvalidInputError(
                "cmd",
                f"unknown command {cmd!r}; expected telemetry_interval, telemetry, rollback "
                "or rebirth",
            )

    # -- out ---------------------------------------------------------------------------------
    def _out(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        return self.wire.row(kind, body, priority)

    def _error_msg(
        self,
        field_name: str,
        message: str,
        kind: Inbound | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outgoing:
        self.stats.errors += 1
        body: dict[str, Any] = {"field": field_name, "error": message}
        if kind is not None:
            body["input"] = kind.value
        body.update(extra or {})
        return self._out(Outbound.ERRORS, body, Priority.RESULT)

    def _error(self, field_name: str, message: str, kind: Inbound | None = None) -> None:
        self._emit([self._error_msg(field_name, message, kind)])

    def publish(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> None:
        """Queue one message through the outbox (no-op for a local-only node)."""
        self._emit([self._out(kind, body, priority)])

    def _emit(self, out: list[Outgoing], state: dict[str, bytes] | None = None) -> None:
        """Commit ``out`` (and the worker's ``state``) to the outbox in one transaction."""
        if (not out and not state) or self.outbox is None:
            return
        self.outbox.put_many(out, state=state)
        if out and self.link is not None:
            self.link.wake()

    def _telemetry(self) -> Outgoing:
        body: dict[str, Any] = {**self.describe(), **self.stats.snapshot(self._queue.qsize())}
        body["telemetry_interval_s"] = self._telemetry_interval
        if self.outbox is not None:
            st = self.outbox.stats()
            body["outbox"] = {
                "pending": st.pending,
                "bytes": st.total_bytes,
                "dropped": st.dropped,
                "max_bytes": st.max_bytes,
            }
        if self.link is not None:
            body["link"] = {
                "connects": self.link.stats.connects,
                "inflight": self.link.stats.inflight,
                "replayed": self.link.stats.replayed,
                "refused_topics": self.link.stats.refused_topics,
                "protocol": self.link.stats.protocol,
            }
        self._last_telemetry = body
        return self._out(Outbound.TELEMETRY, body, Priority.TELEMETRY)


def _failure(exc: BaseException) -> str:
    """An error text for an exception the input triggered: its type and a bounded message."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_FAILURE_CHARS else text[:_MAX_FAILURE_CHARS] + "..."


def _echo(value: Any, field_name: str) -> Any:
    """A requester's ``id`` / ``correlation``, checked before it is copied into a reply.

    Raises:
        InvalidInputError: It does not encode as JSON (an overflowed ``1e400``
            is infinite) or is larger than ``_MAX_ECHO_BYTES``.
    """
    try:
        size = len(dumps({"v": value}))
    except ValueError:
        raise InvalidInputError(field_name, "must be finite JSON (no NaN/Infinity)") from None
    if size > _MAX_ECHO_BYTES:
        raise InvalidInputError(
            field_name, f"{size} bytes of JSON; at most {_MAX_ECHO_BYTES} are echoed back"
        )
    return value
