"""Events over the Open Inference Protocol: a node scoring transactions posted over HTTP.

A model whose bundle carries an event graph (``manifest.event_graph``) is
served by an ``edge-node`` that keeps the event store: a client posts the
events themselves, not subgraphs, and each is scored on its subgraph as of
its time by the node's worker, like an event arriving over MQTT (its decision
also goes out on ``results``). The request has one input, ``events``, of
datatype ``BYTES``: one JSON object per event, in time order::

    {"inputs": [{"name": "events", "shape": [2], "datatype": "BYTES",
                 "data": ["{\\"id\\": \\"tx1\\", \\"t\\": 5.0, ...}", "{...}"]}]}

The answer has four outputs of shape ``[n]``, in request order: ``id``
(BYTES), ``score`` (FP64, -1 for an event that failed), ``alert`` (BOOL) and
``error`` (BYTES: ``"<field>: <message>"``, empty when scored). A server
whose predictor cannot score events (``edge-node serve``: no store) answers
400, naming what to use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..manifest import Manifest
from .kserve import ProtocolError, predict, response_head

#: The input carrying events.
EVENTS_INPUT = "events"
#: Most events in one request.
MAX_EVENTS = 4096
#: The outputs of an events request: name -> datatype.
EVENT_OUTPUTS = {"id": "BYTES", "score": "FP64", "alert": "BOOL", "error": "BYTES"}


@runtime_checkable
class EventPredictor(Protocol):
    """A predictor that scores events in its own store (the node's HTTP adapter)."""

    def score_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each event's decision, or ``{"id", "error": {"field", "message"}}``, in order."""
        ...


def is_events_request(request: Mapping[str, Any]) -> bool:
    """Whether the request's inputs include ``events`` (then it is answered here)."""
    items = request.get("inputs")
    return isinstance(items, list) and any(
        isinstance(i, dict) and i.get("name") == EVENTS_INPUT for i in items
    )


def decode_events(request: Mapping[str, Any], manifest: Manifest) -> list[dict[str, Any]]:
    """The events of a request (ProtocolError 400 naming what is wrong)."""
    if manifest.event_graph is None:
        names = [t.name for t in manifest.request_inputs]
        raise ProtocolError(
            400, f"this model scores no events (its bundle has no event graph); it takes {names}"
        )
    items = request["inputs"]
    if len(items) != 1:
        raise ProtocolError(400, f"an events request has one input, {EVENTS_INPUT!r}, alone")
    item = items[0]
    if item.get("datatype") != "BYTES":
        raise ProtocolError(
            400, f"input {EVENTS_INPUT!r}: datatype {item.get('datatype')!r}; expected BYTES"
        )
    data, shape = item.get("data"), item.get("shape")
    if not isinstance(data, list) or shape != [len(data)]:
        raise ProtocolError(
            400, f"input {EVENTS_INPUT!r}: 'data' must be a list of strings of shape [n]"
        )
    if not 1 <= len(data) <= MAX_EVENTS:
        raise ProtocolError(
            400, f"input {EVENTS_INPUT!r}: 1 to {MAX_EVENTS} events, got {len(data)}"
        )
    events: list[dict[str, Any]] = []
    for i, text in enumerate(data):
        try:
            event = json.loads(text) if isinstance(text, str) else None
        except ValueError as exc:
            raise ProtocolError(400, f"{EVENTS_INPUT}[{i}] is not valid JSON: {exc}") from None
        if not isinstance(event, dict):
            raise ProtocolError(400, f"{EVENTS_INPUT}[{i}] must be a JSON object (as a string)")
        events.append(event)
    return events


def encode_outcomes(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The four outputs of :data:`EVENT_OUTPUTS` for the events' outcomes, in order."""
    n = len(outcomes)

    def column(name: str, values: list[Any]) -> dict[str, Any]:
        return {"name": name, "datatype": EVENT_OUTPUTS[name], "shape": [n], "data": values}

    errors = [o.get("error") for o in outcomes]
    return [
        column("id", ["" if o.get("id") is None else str(o["id"]) for o in outcomes]),
        column(
            "score",
            [-1.0 if e else float(o["score"]) for o, e in zip(outcomes, errors, strict=True)],
        ),
        column("alert", [bool(o.get("alert")) for o in outcomes]),
        column("error", [f"{e['field']}: {e['message']}" if e else "" for e in errors]),
    ]


def answer_events(
    predictor: object, request: Mapping[str, Any], manifest: Manifest
) -> dict[str, Any]:
    """The response body of an events request (ProtocolError when it cannot be scored)."""
    events = decode_events(request, manifest)
    if not isinstance(predictor, EventPredictor):
        raise ProtocolError(
            400,
            "this server has no event store to score events in: run the model with "
            "`edge-node run --http PORT`, or post subgraph tensors "
            f"{[t.name for t in manifest.request_inputs]}",
        )
    outcomes = predict(lambda: predictor.score_events(events))
    return {**response_head(request, manifest), "outputs": encode_outcomes(outcomes)}


def event_tensors(manifest: Manifest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Model metadata's extra inputs and outputs for an event-graph model (else none)."""
    if manifest.event_graph is None:
        return [], []
    inputs = [{"name": EVENTS_INPUT, "datatype": "BYTES", "shape": [-1]}]
    outputs = [{"name": k, "datatype": v, "shape": [-1]} for k, v in EVENT_OUTPUTS.items()]
    return inputs, outputs


__all__ = [
    "EVENTS_INPUT",
    "EVENT_OUTPUTS",
    "MAX_EVENTS",
    "EventPredictor",
    "answer_events",
    "decode_events",
    "encode_outcomes",
    "event_tensors",
    "is_events_request",
]
