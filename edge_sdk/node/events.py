"""Scoring events on the node: one subgraph per event, merged batches, decisions and *why*.

A bundle whose manifest carries an event graph (``manifest.event_graph``, an
:class:`~edge_sdk.eventgraph.EventGraphSpec`) scores events (transactions), not
sensor windows. The node keeps an :class:`~edge_sdk.eventgraph.EventGraphStore`
in memory; the worker builds each event's subgraph as of the event's time, in
arrival order (``score_request``: the event sees every event that arrived before
it, none after), then runs the batch's subgraphs through one
:meth:`~edge_sdk.Runtime.infer_batch` per ``max_batch`` chunk (a disjoint union:
one backend call instead of one per event). A merged call that fails is re-run
event by event, as the window path does, so only an event that fails alone gets
an error.

A decision is ``{"id", "src", "t", "score", "alert", "latency_ms"}`` with
``score = softmax(logits[0])[1]`` (node 0 is the scored event). The decisions
of a worker batch leave as one ``results`` message, ``{"decisions": [...],
"model": ...}``: one outbox row and one publish per batch, not per event (the
per-message cost of the outbox and of MQTT is what bounds a node's rate, see
benchmarks/fraud_node.py), and the event's own ``id`` never shadows the
message's de-duplication ``id``. An event whose score reaches the threshold
also gets an ``alerts`` message whose ``why`` lists the neighbour events that
raised the score most, by occlusion: the score drop when that event's node and
edges are removed from the subgraph (every occluded copy of up to ``max_batch``
alerts runs in one merged call). Explanations cost dozens of inferences per
alert, so they are deferred: :meth:`EventScorer.run` returns the alerts once
the batch's decisions are ready, and the worker commits those; then
:meth:`EventScorer.explain` adds their ``why`` a slice at a time, in the
node's explainer process or between batches (``explainer.py``, ``occlusion.py``):
an alert never delays the decisions of the events around it.

Decisions go through the outbox in arrival order, so they are made while the
uplink is down and delivered after it is back, in order per account.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..eventgraph import EventGraphSpec, EventGraphStore, Subgraph
from ..manifest import Manifest
from ..mqtt.topics import Inbound, Outbound, loads
from .occlusion import explain as occlusion_why
from .occlusion import input_names, score_of
from .outbox import Outgoing, Priority

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .ingress import Message, Reply
    from .worker_host import WorkerHost

log = logging.getLogger(__name__)

#: Makes the ``why`` of alerts: ``(runtime, subgraphs, scores, top_k) -> why per alert``.
WhyOf = Callable[["Runtime", list[Subgraph], list[float | None], int], list[list[dict[str, Any]]]]

#: Neighbour events named in an alert's ``why``.
TOP_K = 3
#: Longest event id echoed back in an error (longer ones are cut).
_MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Pending:
    """One received event waiting to be scored.

    Attributes:
        event: The event as decoded.
        received: When its message arrived (monotonic seconds).
        where: Prefix of the error field (``events[3].`` in a list message).
        index: Its position in its message (3 there).
        reply: The message's :attr:`~edge_sdk.node.ingress.Message.reply`.
    """

    event: dict[str, Any]
    received: float
    where: str = ""
    #: Its position in its message's events, and who waits for its outcome (HTTP).
    index: int = 0
    reply: Reply | None = None


@dataclass(frozen=True)
class Alert:
    """An alert whose decision is made, waiting for its explanation.

    Attributes:
        body: The alert message without ``why``.
        graph: The subgraph the event was scored on.
        score: Its score.
        manifest: The model that scored it (the explanation must be that model's).
    """

    body: dict[str, Any]
    graph: Subgraph
    score: float
    manifest: Manifest


class EventScorer:
    """The event graph of the model a node serves: its store, threshold and explanations.

    Args:
        spec: The bundle's event-graph spec.
        top_k: Neighbour events named in an alert's ``why``.
    """

    def __init__(self, spec: EventGraphSpec, top_k: int = TOP_K) -> None:
        self.spec = spec
        self.store = EventGraphStore(spec)
        self.top_k = top_k
        #: The actor's field (the first role, e.g. the payer ``src``): decisions name it.
        self.actor = spec.role_names[0]

    @classmethod
    def for_manifest(cls, m: Manifest, keep: EventScorer | None = None) -> EventScorer | None:
        """The scorer a model needs (None: it takes no events).

        A model with the same spec as ``keep`` keeps its store (the history it
        has ingested); a new spec starts an empty one.
        """
        spec = getattr(m, "event_graph", None)
        if spec is None:
            return None
        if keep is not None and keep.spec == spec:
            return keep
        return cls(spec)

    def threshold(self, m: Manifest, default: float) -> float:
        """The alert threshold: the spec's, else the model's decision rule's, else ``default``."""
        if self.spec.threshold is not None:
            return float(self.spec.threshold)
        if m.decision is not None:
            return float(m.decision.threshold)
        return default

    # -- input -------------------------------------------------------------------------
    def parse(
        self, msg: Message, max_bytes: int, out: list[Outgoing], host: WorkerHost
    ) -> list[Pending]:
        """The events of one ``events`` message (one event, or ``{"events": [...]}``).

        A malformed event in a list costs itself: its error names
        ``events[i].<field>`` and the others are kept.

        Raises:
            InvalidInputError: The payload itself is refused (``payload``), or
                ``events`` is not a list.
        """
        body = loads(msg.payload, max_bytes)
        if "events" not in body:
            return [Pending(body, msg.received, reply=msg.reply)]
        events = body["events"]
        if not isinstance(events, list):
            raise InvalidInputError(
                "events", f"expected a list of events, got {type(events).__name__}"
            )
        kept: list[Pending] = []
        for i, ev in enumerate(events):
            if isinstance(ev, dict):
                kept.append(Pending(ev, msg.received, f"events[{i}].", i, msg.reply))
                continue
            why = f"expected an event object, got {type(ev).__name__}"
            out.append(host.error_message(f"events[{i}]", why, Inbound.EVENTS))
            if msg.reply is not None:
                msg.reply(i, {"id": None, "error": {"field": "event", "message": why}})
        return kept

    # -- scoring -----------------------------------------------------------------------
    def run(self, host: WorkerHost, pending: Sequence[Pending], out: list[Outgoing]) -> list[Alert]:
        """Score ``pending`` in arrival order; commit-ready messages go to ``out``.

        Returns:
            The alerts raised, still without their ``why``: the caller commits
            ``out`` (the decisions) first and then :meth:`explain` s them, so an
            explanation (dozens of occluded copies per alert) never delays the
            decisions of the batch.
        """
        requests: list[tuple[Pending, Subgraph]] = []
        for p in pending:
            try:
                requests.append((p, self.store.score_request(p.event)))
            except InvalidInputError as exc:
                out.append(self._error(host, p, p.where + exc.field, str(exc)))
            except Exception as exc:  # a bug this event triggers: its failure alone
                log.exception("building the subgraph of an event failed")
                out.append(self._error(host, p, p.where + "event", _failure(exc)))
        size = max(1, host.config.max_batch)
        decisions: list[dict[str, Any]] = []
        alerts: list[Alert] = []
        meta: dict[str, Any] | None = None
        for i in range(0, len(requests), size):
            chunk = requests[i : i + size]
            with host.model.use() as rt:
                scores = self._scores(host, rt, chunk, out)
                manifest = rt.manifest
            threshold = self.threshold(manifest, host.config.alert.threshold)
            meta = {"name": manifest.model.name, "version": manifest.model.version}
            now = time.monotonic()
            for (p, sg), score in zip(chunk, scores, strict=True):
                if score is None:
                    continue
                d = self._decision(p, score, score >= threshold, now)
                host.stats.e2e_ms.append(d["latency_ms"])
                decisions.append(d)
                if p.reply is not None:
                    p.reply(p.index, d)
                if d["alert"]:
                    host.stats.alerts += 1
                    body = {**d, "threshold": threshold, "model": meta}
                    alerts.append(Alert(body, sg, score, manifest))
        if decisions:
            body = {"decisions": decisions, "model": meta}
            out.append(host.message(Outbound.RESULTS, body, Priority.RESULT))
            if host.on_result is not None:
                host.on_result(body)
        return alerts

    def explain(
        self,
        host: WorkerHost,
        alerts: Sequence[Alert],
        out: list[Outgoing],
        why_of: WhyOf | None = None,
    ) -> None:
        """The ``alerts`` messages of :meth:`run`'s alerts, each with its ``why``.

        Occluded copies run in one merged call per ``max_batch`` alerts; a model
        swapped in since the scores were made leaves ``why`` empty (it would
        explain another model's score). ``why_of`` makes the explanations
        (default :func:`~edge_sdk.node.occlusion.explain` on the node's runtime;
        the explainer process's, see :mod:`.explainer`); one that fails costs
        its alerts their ``why``, not their message.
        """
        why_of = why_of or occlusion_why
        size = max(1, host.config.max_batch)
        for i in range(0, len(alerts), size):
            chunk = alerts[i : i + size]
            with host.model.use() as rt:
                same = [a for a in chunk if a.manifest is rt.manifest]
                try:
                    why = why_of(rt, [a.graph for a in same], [a.score for a in same], self.top_k)
                except Exception:  # a bug in building the copies: the alerts still go out
                    log.exception("explaining %d alert(s) failed", len(same))
                    why = [[] for _ in same]
            reasons = {id(a): w for a, w in zip(same, why, strict=True)}
            for a in chunk:
                body = {**a.body, "why": reasons.get(id(a), [])}
                out.append(host.message(Outbound.ALERTS, body, Priority.CONTROL))

    def _decision(self, p: Pending, score: float, alert: bool, now: float) -> dict[str, Any]:
        ev, spec = p.event, self.spec
        return {
            "id": ev.get(spec.id_field),
            self.actor: ev.get(self.actor),
            "t": ev.get(spec.time_field),
            "score": round(score, 6),
            "alert": alert,
            "latency_ms": round((now - p.received) * 1e3, 3),
        }

    def _error(self, host: WorkerHost, p: Pending, field_name: str, message: str) -> Outgoing:
        extra: dict[str, Any] = {}
        eid = p.event.get(self.spec.id_field)
        if isinstance(eid, str | int) and not isinstance(eid, bool):
            extra["event"] = str(eid)[:_MAX_ID_CHARS]
        if p.reply is not None:
            field_in_event = field_name.removeprefix(p.where)
            failure = {"field": field_in_event, "message": message}
            p.reply(p.index, {"id": extra.get("event"), "error": failure})
        return host.error_message(field_name, message, Inbound.EVENTS, extra)

    def _scores(
        self,
        host: WorkerHost,
        rt: Runtime,
        chunk: list[tuple[Pending, Subgraph]],
        out: list[Outgoing],
    ) -> list[float | None]:
        """Scores of a chunk in one merged call; if it fails, each event alone (None: failed)."""
        names = input_names(rt.manifest)
        t0 = time.perf_counter()
        try:
            outputs = rt.infer_batch([sg.inputs(names) for _, sg in chunk])
            host.stats.batches += 1
            scores: list[float | None] = [score_of(o) for o in outputs]
        except Exception as merged:
            if len(chunk) > 1:
                host.stats.retried_batches += 1
            scores = []
            for p, sg in chunk:
                try:
                    scores.append(score_of(rt.infer(sg.inputs(names))))
                except Exception as exc:
                    why = exc if len(chunk) > 1 else merged
                    out.append(self._error(host, p, "model", f"inference failed: {_failure(why)}"))
                    scores.append(None)
        ms = (time.perf_counter() - t0) * 1e3
        host.stats.inferences += len(chunk)
        host.stats.infer_ms.append(ms / len(chunk))
        for (p, _), s in zip(chunk, scores, strict=True):
            if s is not None and not math.isfinite(s):
                out.append(
                    self._error(host, p, "model", "the model's score is not finite (NaN/inf)")
                )
        return [s if s is not None and math.isfinite(s) else None for s in scores]


def _failure(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:300] + "..."
