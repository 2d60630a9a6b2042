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


def fraud_spec(
    fanout: int = 16, threshold: float | None = None, center_stats: bool = False
) -> EventGraphSpec:
    """The spec of the SYNTHETIC payment stream (2 hops, ``fanout`` recent events per entity).

    ``center_stats`` (off): the scored transaction's node would also carry the
    baseline's per-role statistics. Tried for #19: no gain on seed 0 (GATv2 test
    PR-AUC 0.600-0.610 with it, 0.601 without), and node 0's ~7x larger
    standardised values cost INT8 accuracy (ONNX Runtime INT8 off by 0.06 in
    probability in test_fraud_export). ``fanout`` 16: 8 made epochs ~1.6x
    cheaper but GATv2's seed-0 test PR-AUC fell to 0.43-0.52 (seed 1 0.74-0.77).
    """
    return EventGraphSpec(
        roles=ROLES,
        numeric=["amount"],
        categorical={"channel": list(CHANNELS)},
        hops=2,
        fanout=fanout,
        horizon_s=7 * 86400.0,
        max_history=max(256, fanout),
        threshold=threshold,
        center_stats=center_stats,
    )
