"""The node's worker: sensor windows, one backend call per batch, results and alerts out.

The worker drains the ingress queue in batches: assembles sensor windows,
runs up to ``max_batch`` windows in one backend call, answers ``infer``
requests and commands, and writes results, alerts and errors to the outbox in
one transaction with the window buffer, then acknowledges the batch's MQTT
messages (docs/node.md, "Delivery guarantees"); the alerts of scored events
are explained and committed after that, by the explainer process or a
slice after each batch (``explainer.py``). A bad message never stops it:
it is answered on the ``errors`` topic, naming the field and what was
expected, and the worker carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, EdgeSDKError, InvalidInputError
from ..manifest import Manifest
from ..mqtt.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from ..mqtt.topics import Inbound, Outbound, check_topic, dumps, finite, loads
from .events import EventScorer, Pending
from .explain_process import ExplainerProcess
from .explainer import Explanations
from .ingress import Message, take_batch
from .outbox import Outgoing, Priority
from .telemetry import result_body
from .windows import Gap, Incomplete, Window, WindowAssembler

if TYPE_CHECKING:
    from .worker_host import WorkerHost

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


class Worker:
    """The thread that turns queued messages into committed results.

    Args:
        node: The node it works for (model, config, stats, outbox and link).
        messages: The ingress queue it drains.
        assembler: The window assembler of the model served first (None: whole graphs).
    """

    def __init__(
        self, node: WorkerHost, messages: queue.Queue[Message], assembler: WindowAssembler | None
    ) -> None:
        self.node = node
        self.queue = messages
        self.assembler = assembler
        #: The event graph of the model served (None: it takes no events).
        self.events = EventScorer.for_manifest(node.model.runtime.manifest)
        #: Failed batches since the last update (None: not on probation).
        self.probation: int | None = None
        self._saved_windows: tuple[WindowAssembler | None, int] = (None, 0)
        #: Alerts whose decisions are committed, explained by the explainer process
        #: (``explain_in: process``) or a slice after each batch (``worker``).
        process = ExplainerProcess() if node.config.explain_in == "process" else None
        self.explanations = Explanations(node, lambda out: self._commit(out, None), process=process)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-node-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            cfg = self.node.config  # alerts waiting for their why: do not sit idle
            wait = 0.001 if self.explanations.on_worker and self.explanations else 0.05
            batch = take_batch(self.queue, cfg.max_batch, cfg.max_delay_ms, wait)
            try:
                self._process(batch)
            except Exception:  # never let one bad batch stop the node
                # _process isolates every message, so this is the commit itself failing
                # (the outbox's disk): nothing of the batch could be kept, not even errors.
                log.exception("worker failed on a batch of %d messages", len(batch))
                self.node.stats.errors += 1
                self.node.stats.dropped += len(batch)
            finally:
                # Every message exactly once, after _process committed its results and the
                # window state (or answered it on errors): see docs/node.md.
                self.node.ack(*(m.delivery for m in batch))
            self.explanations.step()
        self.explanations.close()  # stopping: the last alerts go out explained

    def _process(self, batch: list[Message]) -> None:
        """One batch: each message on its own, windows merged, one commit; alerts queued.

        A message's outcome is a result, a reply, or an ``errors`` message: a
        failure in one message (bad input, or a bug it triggers) is caught around
        that message alone; a failed merged inference is re-run window by window
        (:meth:`_run_windows`); a message body that cannot be encoded is replaced
        by an error at commit (:meth:`_commit`). So nothing in a batch is lost
        because of another message, and every message is acknowledged once.
        """
        out: list[Outgoing] = []
        windows: list[tuple[Window, float]] = []
        events: list[Pending] = []
        for msg in batch:
            self.node.stats.messages += 1
            try:
                if msg.kind is Inbound.SENSORS:
                    windows.extend((w, msg.received) for w in self._sensors(msg, out))
                elif msg.kind is Inbound.EVENTS:
                    events.extend(self._events(msg, out))
                elif msg.kind is Inbound.INFER:
                    self._infer_request(msg, out)
                elif msg.kind is Inbound.CMD:
                    self.node.command(msg, out)
            except InvalidInputError as exc:
                out.append(self.node.error_message(exc.field, str(exc), kind=msg.kind))
            except Exception as exc:  # unforeseen: still this message's failure alone
                log.exception("failed on one %s message", msg.kind.value)
                out.append(self.node.error_message("payload", _failure(exc), kind=msg.kind))
        if self.assembler is not None:
            # Giving up a timed-out sample can release complete ones queued behind it.
            now = time.monotonic()
            for item in self.assembler.poll():
                if isinstance(item, Window):
                    self.node.stats.windows += 1
                    windows.append((item, now))
                elif isinstance(item, Gap):
                    self._gap(item, out)
                else:
                    self._incomplete(item, out)
        for i in range(0, len(windows), self.node.config.max_batch):
            self._run_windows(windows[i : i + self.node.config.max_batch], out)
        alerts = self.events.run(self.node, events, out) if events and self.events else []
        telemetry = self.node.telemetry_due()
        if telemetry is not None:
            out.append(telemetry)
        self._commit(out, self._window_state())
        if alerts and self.events is not None:
            # Decisions are committed (on their way out); their alerts are explained a
            # slice after each batch (dozens of inferences each), not before the next one.
            self.explanations.add(self.events, alerts)

    def use(self, manifest: Manifest, assembler: WindowAssembler | None) -> None:
        """Serve ``manifest`` from the next batch on (its windows and event graph)."""
        self.assembler = assembler
        self.events = EventScorer.for_manifest(manifest, keep=self.events)

    def _events(self, msg: Message, out: list[Outgoing]) -> list[Pending]:
        if self.events is None:
            raise InvalidInputError(
                "events", "this model does not score events (its bundle has no event graph)"
            )
        return self.events.parse(msg, self.node.config.max_payload_bytes, out, self.node)

    def _commit(self, out: list[Outgoing], state: dict[str, bytes] | None) -> None:
        """:meth:`_emit`, replacing a message that cannot be encoded by an error.

        The outbox encodes a batch in one all-or-nothing transaction, so one
        body that JSON refuses (a NaN from a model, say) would cost them all.
        """
        try:
            self.node.commit(out, state)
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
                kept.append(
                    self.node.error_message("payload", f"reply could not be encoded: {exc}")
                )
        self.node.commit(kept, state)

    def _sensors(self, msg: Message, out: list[Outgoing]) -> list[Window]:
        if self.assembler is None:
            raise InvalidInputError(
                "sensors", "this model takes whole graphs, not sensor windows: use the infer topic"
            )
        body = loads(msg.payload, self.node.config.max_payload_bytes)
        rows = body.get("rows")
        if rows is None:
            rows = [body]
        elif not isinstance(rows, list):
            raise InvalidInputError("rows", f"expected a list of rows, got {type(rows).__name__}")
        windows: list[Window] = []
        asm = self.assembler
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
                out.append(self.node.error_message(f"{where}{exc.field}", str(exc), kind=msg.kind))
                continue
            except (OverflowError, TypeError) as exc:  # e.g. an integer beyond the float range
                out.append(self.node.error_message(f"{where}values", _failure(exc), kind=msg.kind))
                continue
            for item in produced:
                if isinstance(item, Window):
                    windows.append(item)
                elif isinstance(item, Gap):
                    self._gap(item, out)
                else:
                    self._incomplete(item, out)
        self.node.stats.duplicates += asm.duplicates - duplicates
        self.node.stats.windows += len(windows)
        return windows

    def _gap(self, gap: Gap, out: list[Outgoing]) -> None:
        self.node.stats.gaps += 1
        period = self.node.config.window.period_s
        what = "skipped" if gap.skipped else "flagged"
        out.append(
            self.node.error_message(
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

    def restore_windows(self) -> None:
        """Resume the window buffer committed with the outbox (after a stop or a crash)."""
        self._saved_windows = (None, 0)
        asm, outbox = self.assembler, self.node.outbox
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
        asm = self.assembler
        if asm is None or self.node.outbox is None:
            return None
        saved_asm, saved_changes = self._saved_windows
        if saved_asm is asm and saved_changes == asm.changes:
            return None
        self._saved_windows = (asm, asm.changes)
        return {WINDOW_STATE: asm.state()}

    def _incomplete(self, item: Incomplete, out: list[Outgoing]) -> None:
        self.node.stats.incomplete += 1
        out.append(
            self.node.error_message(
                "values",
                f"sample at t={item.t} gave up after {self.node.config.window.timeout_s}s: "
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
                self.node.stats.retried_batches += 1
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
            self.probation = None  # a good batch ends the post-update probation
        else:
            self._model_failed()
        for group, outputs, manifest in ran:
            self._results(group, outputs, manifest, out)

    def _infer_windows(
        self, items: list[tuple[Window, float]]
    ) -> tuple[dict[str, np.ndarray], Manifest]:
        x = np.stack([w.x for w, _ in items])
        t0 = time.perf_counter()
        with self.node.model.use() as rt:
            outputs = rt.infer(x)
            manifest = rt.manifest
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.node.stats.batches += 1
        self.node.stats.inferences += len(items)
        self.node.stats.infer_ms.append(infer_ms / len(items))
        return outputs, manifest

    def _window_error(self, w: Window, field_name: str, message: str) -> Outgoing:
        where = {"seq": w.seq, "t_start": w.t_start, "t_end": w.t_end}
        return self.node.error_message(field_name, message, Inbound.SENSORS, {"window": where})

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
        judge = self.node.alerts.judge(manifest)
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
                decision = judge(values, body)
                if decision.error is not None:
                    out.append(self.node.error_message("model", decision.error))
                self.node.stats.e2e_ms.append(body["latency_ms"])
                out.append(self.node.message(Outbound.RESULTS, body, Priority.RESULT))
                if decision.alert is not None:
                    self.node.stats.alerts += decision.raised
                    out.append(self.node.message(Outbound.ALERTS, decision.alert, Priority.CONTROL))
                if self.node.on_result is not None:
                    self.node.on_result(body)
            except Exception as exc:  # this window's result alone
                log.exception("building the result of window %d failed", w.seq)
                out.append(self._window_error(w, "model", _failure(exc)))

    def _model_failed(self) -> None:
        """A merged batch in which no window ran: towards the post-update rollback."""
        if self.probation is None:
            return
        self.probation += 1
        if self.probation >= ROLLBACK_AFTER_FAILURES and self.node.updates is not None:
            self.probation = None
            self.node.updates.rollback(f"{ROLLBACK_AFTER_FAILURES} failed batches after the update")

    def _infer_request(self, msg: Message, out: list[Outgoing]) -> None:
        body = loads(msg.payload, self.node.config.max_payload_bytes)
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
            result = self.node.infer(inputs, strict=True)
            self.node.stats.infer_ms.append((time.perf_counter() - t0) * 1e3)
            self.node.stats.inferences += 1
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
        if reply_to is not None and self.node.link is not None:
            self.node.stats.errors += "error" in reply
            payload = self.node.scheme.envelope(Outbound.RESULTS, reply)
            props_out = (
                self.node.link.properties(CorrelationData=correlation) if correlation else None
            )
            self.node.link.publish_now(reply_to, payload, properties=props_out)
        elif "error" in reply:
            out.append(self.node.error_message(reply["field"], reply["error"], kind=msg.kind))
        else:
            out.append(self.node.message(Outbound.RESULTS, reply, Priority.RESULT))

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
        parts = self.node.scheme.parse(topic)
        if (parts is not None and parts[2] in _NODE_KINDS) or topic.startswith(
            f"{SPARKPLUG_NAMESPACE}/"
        ):
            raise InvalidInputError(
                "reply_to", f"{topic!r} is a node's own topic; reply on a topic of your own"
            )
        return topic


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
