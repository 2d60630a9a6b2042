"""Event graphs: requests that are built from a stream of events, one subgraph each.

A payment, a login, a sensor reading from a mobile unit: each event touches a
few entities (account, device, IP...). :class:`EventGraphStore` remembers a
bounded recent history per entity and turns every incoming event into a small
heterogeneous graph (the event, its entities, their most recent earlier
events) with fixed-width features, as of the event's time. The layout comes
from :class:`EventGraphSpec`, which travels in the bundle's manifest so that
the node builds exactly what the model was trained on. See docs/eventgraph.md.
"""

from .spec import ENTITY_STATS, EVENT_TYPE, EventGraphSpec
from .store import EventGraphStore
from .subgraph import TENSORS, Subgraph

__all__ = ["ENTITY_STATS", "EVENT_TYPE", "TENSORS", "EventGraphSpec", "EventGraphStore", "Subgraph"]
