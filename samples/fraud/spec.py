"""The fraud sample's event-graph spec: which transaction fields are entities and attributes.

The SDK's :class:`~edge_sdk.eventgraph.EventGraphSpec` is generic; this file
names the payment stream's fields (the wire form of ``generate.py``'s
``Transactions.events``). The exported bundle carries the spec
(``ExportConfig(event_graph=fraud_spec(threshold=...))``) so the node builds
the same subgraphs the models were trained on.
"""

from __future__ import annotations

from edge_sdk.eventgraph import EventGraphSpec

#: Transaction field -> entity type; the payer (``src``) first: it is the actor.
ROLES = {"src": "account", "dst": "account", "merchant": "merchant", "device": "device", "ip": "ip"}
#: Channel names, in the generator's code order.
CHANNELS = ("web", "app", "pos", "transfer")


def fraud_spec(fanout: int = 16, threshold: float | None = None) -> EventGraphSpec:
    """The spec of the SYNTHETIC payment stream (2 hops, ``fanout`` recent events per entity)."""
    return EventGraphSpec(
        roles=ROLES,
        numeric=["amount"],
        categorical={"channel": list(CHANNELS)},
        hops=2,
        fanout=fanout,
        horizon_s=7 * 86400.0,
        max_history=max(256, fanout),
        threshold=threshold,
    )
