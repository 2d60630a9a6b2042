"""The edge node: sensor windows in, results out, through a durable outbox.

Threads:

* paho's network thread receives messages and only queues them
  (:mod:`edge_sdk.node.ingress`); the worker acknowledges each one (MQTT
  PUBACK) once its batch's results and the window buffer are committed to the
  outbox (docs/node.md, "Delivery guarantees");
* the **worker** (:mod:`edge_sdk.node.worker`) drains the queue in batches:
  assembles sensor windows, runs up to ``max_batch`` windows in one backend
  call, decides alerts (:mod:`edge_sdk.node.alerts`), writes results, alerts
  and errors to the outbox in one transaction, and sends telemetry when due;
* the **outbox pump** (:mod:`edge_sdk.mqtt.pump`) publishes stored rows with a
  bounded in-flight window;
* the **update agent** (:mod:`edge_sdk.node.ota`) downloads, verifies and
  health-checks model updates, then hands the new runtime to
  :class:`~edge_sdk.node.active_model.ActiveModel`, which swaps it in between calls.

A bad message never stops the node: it is answered on the ``errors`` topic,
naming the field and what was expected, and the worker carries on.

The wire scheme (:mod:`edge_sdk.node.schemes`) maps the node's messages to
topics: with ``scheme: sparkplug`` results, alerts and telemetry leave as
Sparkplug B DDATA/NDATA (:mod:`edge_sdk.node.sparkplug`), NCMD metrics become
the same commands as the JSON ``cmd`` topic, and model updates, errors and OTA
status stay on the JSON topics at QoS 1.

The link probes the broker on its first connect (:mod:`edge_sdk.mqtt.capabilities`).
One that rewrites ``.`` in topics is refused for Sparkplug and for a ``.`` in the group
or node id: by :meth:`EdgeNode.start` if it answers within :data:`BROKER_CHECK_S`, else
on connect (the link stays off, says why; results wait in the outbox).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInputError
from ..io_contract import GraphForm
from ..manifest import Manifest
from ..mqtt.capabilities import BrokerCapabilities, BrokerProbe
from ..mqtt.config import BrokerConfig
from ..mqtt.link import Delivery, MqttLink
from ..mqtt.sparkplug import metrics as spm
from ..mqtt.topics import Inbound, JsonScheme, Outbound, dumps, finite, loads
from ..runtime import Runtime
from . import engine_race
from .active_model import ActiveModel
from .alarm import Alarm
from .alerts import Alerts
from .config import NodeConfig
from .health import run_canary
from .ingress import Ingress, Message, Reply
from .ota import UpdateAgent
from .outbox import Outbox, Outgoing, Priority
from .schemes import JsonNodeScheme, NodeScheme
from .slots import ModelSlots
from .sparkplug import SparkplugSession
from .telemetry import NodeStats
from .windows import WindowAssembler, WindowSpec
from .worker import Worker

log = logging.getLogger(__name__)

#: Seconds :meth:`EdgeNode.start` waits for the broker's verdict where the broker could
#: mangle this node's topics (Sparkplug, or ``.`` in the group or node id).
BROKER_CHECK_S = 5.0


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
        self.on_result = on_result
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self.state_dir = state
        self.slots = ModelSlots(state / "models")
        source = self._initial_bundle()
        self.model = ActiveModel(self.load_runtime(source), source)
        try:
            manifest = self.model.runtime.manifest
            assembler = self.assembler_for(manifest)
            self.alerts = Alerts(config.alert, manifest)
        except ConfigError:
            self.model.close()
            raise
        self.canary_ms = self._measure_canary()
        self.ingress = Ingress(self)
        self.worker = Worker(self, self.ingress.queue, assembler)
        self._stop = threading.Event()
        self._stopped = False
        self._telemetry_interval = config.telemetry_interval_s
        self._next_telemetry = time.monotonic() + (self._telemetry_interval or 0)
        self._last_telemetry: dict[str, Any] = {}
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.updates: UpdateAgent | None = None
        # The wire scheme: how the node's messages map to topics, and what the link calls.
        self.wire: NodeScheme = JsonNodeScheme(self.scheme, self._status_payload)
        if config.broker is not None:
            self._connect(config.broker)

    def _connect(self, broker: BrokerConfig) -> None:
        """The MQTT side: outbox, wire scheme, resumed windows, link, update agent."""
        cfg, oc = self.config, self.config.outbox
        self.outbox = Outbox(
            self.state_dir / "outbox.sqlite",
            max_bytes=oc.max_bytes,
            sync=oc.sync,
            replay_s=oc.replay_s,
        )
        if cfg.scheme == "sparkplug":
            self.wire = self._sparkplug_session()
        self.worker.restore_windows()
        self.link = MqttLink(
            broker,
            client_id=f"edge-node-{cfg.group}-{cfg.node_id}",
            on_delivery=self.ingress.on_message,
            subscriptions=self.wire.subscriptions(),
            on_connect=self._on_connect,
            outbox=self.outbox,
            outbox_config=oc,
            scheme=self.wire,
            probe=BrokerProbe(sparkplug=cfg.scheme == "sparkplug", check=self._broker_refusal),
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
        manifest, alarm = self.alerts.bound
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

    def load_runtime(self, bundle_dir: Path) -> Runtime:
        """Load a bundle the way this node loads its models (profile, backend...); an
        event-graph model on the engine that scores events fastest here (engine_race)."""
        return engine_race.load_runtime(self.config, bundle_dir)

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
        assembler = self.assembler_for(runtime.manifest, keep=self.worker.assembler)
        alarm = self.alerts.alarm_for(runtime.manifest)
        self.model.swap(runtime, source)
        self.worker.use(runtime.manifest, assembler)
        self.alerts.bind(runtime.manifest, alarm)
        self.worker.probation = 0
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
        return self.alerts.alarm_for(m)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> EdgeNode:
        """Start the worker and (with a broker) the MQTT link; returns at once."""
        self.worker.start()
        if self.updates is not None:
            self.updates.start()
        if self.link is not None:
            self.link.start()
            self._check_broker()
        return self

    def _broker_refusal(self, caps: BrokerCapabilities) -> str | None:
        """Why this node cannot run on a broker that does what ``caps`` say (None: it can)."""
        cfg = self.config
        if cfg.scheme == "sparkplug" and (why := caps.sparkplug_refusal()):
            return f"Sparkplug B (scheme: sparkplug) refused: {why}"
        return caps.name_refusal("group", cfg.group) or caps.name_refusal("node id", cfg.node_id)

    def _check_broker(self) -> None:
        """Refuse at start what the broker would mangle, if it answers within BROKER_CHECK_S."""
        cfg, link = self.config, self.link
        if link is None or link.probe is None:
            return
        if cfg.scheme == "sparkplug" or "." in cfg.group + cfg.node_id:
            link.probe.wait(BROKER_CHECK_S)  # else nothing to refuse: start at once
        if link.probe.refused is not None:
            self.stop()
            raise ConfigError(f"the broker at {link.broker.url}: {link.probe.refused}")

    def stop(self) -> None:
        """Stop cleanly: publish ``offline``, flush in-flight messages, close (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.worker.stop()
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
        self.ingress.enqueue(Inbound.SENSORS, raw, None)

    def submit_events(self, events: Any, reply: Reply | None = None) -> None:
        """Feed events (one, or a list) as if from MQTT (docs/node.md, "Scoring events");
        ``reply(i, decision or error)`` per event, from the worker thread, if given."""
        self.ingress.submit_events(events, self.worker.events is not None, reply)

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

    def window_sensors(self) -> tuple[str, ...] | None:
        """The sensors of the running model's windows (None: it takes whole graphs)."""
        asm = self.worker.assembler
        return asm.spec.sensors if asm is not None else None

    # -- MQTT ----------------------------------------------------------------------------
    def ack(self, *deliveries: Delivery | None) -> None:
        """Acknowledge received MQTT messages now that they are safe (no-op without a link)."""
        if self.link is not None:
            self.link.ack(*deliveries)

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

    # -- commands and messages -------------------------------------------------------------
    def command(self, msg: Message, out: list[Outgoing]) -> None:
        """Run one ``cmd`` message (worker thread); its answers go to ``out``."""
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
    def message(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        """One outgoing message, on the topic the wire scheme gives it."""
        return self.wire.row(kind, body, priority)

    def error_message(
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
        return self.message(Outbound.ERRORS, body, Priority.RESULT)

    def report_error(self, field_name: str, message: str, kind: Inbound | None = None) -> None:
        """Commit one ``errors`` message now (outside the worker's batches)."""
        self.commit([self.error_message(field_name, message, kind)])

    def publish(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> None:
        """Queue one message through the outbox (no-op for a local-only node)."""
        self.commit([self.message(kind, body, priority)])

    def commit(self, out: list[Outgoing], state: dict[str, bytes] | None = None) -> None:
        """Commit ``out`` (and the worker's ``state``) to the outbox in one transaction."""
        if (not out and not state) or self.outbox is None:
            return
        self.outbox.put_many(out, state=state)
        if out and self.link is not None:
            self.link.wake()

    def telemetry_due(self) -> Outgoing | None:
        """The telemetry message when its period has passed (worker thread), else None."""
        if time.monotonic() < self._next_telemetry or self._telemetry_interval <= 0:
            return None
        telemetry = self._telemetry()
        self._next_telemetry = time.monotonic() + self._telemetry_interval
        return telemetry

    def _telemetry(self) -> Outgoing:
        body: dict[str, Any] = {
            **self.describe(),
            **self.stats.snapshot(self.ingress.queue.qsize()),
        }
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
        return self.message(Outbound.TELEMETRY, body, Priority.TELEMETRY)
