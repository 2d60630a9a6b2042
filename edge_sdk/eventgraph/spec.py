"""How a stream of events becomes one graph per request: :class:`EventGraphSpec`.

The spec travels in the bundle (``Manifest.event_graph``) so that the node
builds exactly the subgraphs the model was trained on: the feature layout is
derived from the spec alone, never from data. Every feature is listed by
:meth:`EventGraphSpec.node_feature_names` and documented in docs/eventgraph.md.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

#: Node type of the events themselves (the entity types come from ``roles``).
EVENT_TYPE = "event"

#: Per-entity statistics, as of the scored event's time (one x column each).
ENTITY_STATS = (
    "seen",  # 1 when the entity has remembered events before t
    "log1p_age_s",  # since the entity was first seen
    "log1p_since_last_s",  # since its latest event before t
    "log1p_events_1h",
    "log1p_events_24h",
    "log1p_events_remembered",  # within horizon_s and max_history
    "log1p_distinct_actors_24h",
    "log1p_distinct_actors_remembered",
    "log1p_sum_first_numeric_24h",
)


class EventGraphSpec(BaseModel):
    """Which fields of an event are entities, attributes and time; how far a request reaches.

    An event is a flat JSON object, e.g. a payment
    ``{"id": "tx42", "t": 1234.5, "src": "a17", "dst": null, "merchant": "m3",
    "device": "d5", "ip": "i8", "amount": 12.5, "channel": "web"}``.

    Attributes:
        id_field: Field holding the event id (a string or an integer).
        time_field: Field holding the event time in seconds (hour of day is
            taken modulo 86,400 s, so seconds since a UTC midnight or the epoch).
        roles: Event field -> entity type, in order; the first role is the
            actor (e.g. the payer) and must be present in every event; the
            others may be null or absent. Two roles may share a type (payer and
            payee are both accounts): an entity is one node whatever its role.
        numeric: Non-negative numeric attributes, encoded ``log1p``; the first
            one is also summed per entity over 24 h.
        categorical: Attribute -> its allowed values (one-hot); any other value
            is refused.
        hops: 1: the event and its entities; 2: also up to ``fanout`` earlier
            events of each of those entities.
        fanout: Most recent earlier events kept per entity in a subgraph.
        horizon_s: Events older than this (relative to the scored event) are
            forgotten; an entity idle for longer is dropped with its history.
        max_history: Events remembered per entity (the oldest is dropped first).
        time_tolerance_s: An event may be this much older than the latest one
            ingested (it is then stored at the latest time); older is refused.
        max_id_length: Longest event or entity id accepted.
        threshold: The alert threshold on the model's score (fitted by the
            application on validation data), or None.
        center_stats: Node 0 (the scored event) also carries each role's entity
            statistics as of its time (the tabular row's per-role block), so a
            model sees the baseline's features plus the structure, not only the
            statistics of each role's node mixed by message passing. Adds
            ``len(roles) * len(ENTITY_STATS)`` columns to ``x``, zero on every
            other node (a frozen row never has them: they would depend on
            whether its event was scored or only ingested).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id_field: str = Field(default="id", min_length=1)
    time_field: str = Field(default="t", min_length=1)
    roles: dict[str, str] = Field(min_length=1)
    numeric: list[str] = Field(default_factory=list)
    categorical: dict[str, list[str]] = Field(default_factory=dict)
    hops: int = Field(default=2, ge=1, le=2)
    fanout: int = Field(default=16, ge=1, le=1024)
    horizon_s: float = Field(default=7 * 86400.0, gt=0)
    max_history: int = Field(default=256, ge=1, le=100_000)
    time_tolerance_s: float = Field(default=1.0, ge=0)
    max_id_length: int = Field(default=128, ge=1, le=4096)
    threshold: float | None = None
    center_stats: bool = False

    # The manifest is written with sorted keys (a canonical form for signing), which
    # would reorder a dict: roles and categorical fields travel as [name, value] pairs
    # so that the actor stays first and the one-hot columns keep their order.
    @field_serializer("roles", "categorical", when_used="json")
    def _as_pairs(self, value: dict[str, Any]) -> list[list[Any]]:
        return [[k, v] for k, v in value.items()]

    @field_validator("roles", "categorical", mode="before")
    @classmethod
    def _from_pairs(cls, value: Any) -> Any:
        if isinstance(value, list) and all(
            isinstance(p, list | tuple) and len(p) == 2 for p in value
        ):
            return {k: v for k, v in value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EventGraphSpec:
        fields = [self.id_field, self.time_field, *self.roles, *self.numeric, *self.categorical]
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise ValueError(f"event fields used twice: {', '.join(dup)}")
        for role, etype in self.roles.items():
            if not etype or etype == EVENT_TYPE or ":" in etype:
                raise ValueError(
                    f"role {role!r}: entity type {etype!r} must be non-empty, without ':' "
                    f"and not {EVENT_TYPE!r}"
                )
        for name, values in self.categorical.items():
            if not values or len(set(values)) != len(values):
                raise ValueError(f"categorical {name!r}: values must be non-empty and distinct")
        if self.max_history < self.fanout:
            raise ValueError(f"max_history ({self.max_history}) must be >= fanout ({self.fanout})")
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0
        ):
            raise ValueError(f"threshold {self.threshold} must be in [0, 1]")
        if not math.isfinite(self.horizon_s) or not math.isfinite(self.time_tolerance_s):
            raise ValueError("horizon_s and time_tolerance_s must be finite")
        return self

    # ----- derived layout (from the spec alone) -----

    @property
    def role_names(self) -> list[str]:
        """The role fields, actor first."""
        return list(self.roles)

    @property
    def node_types(self) -> list[str]:
        """``event`` then each entity type once, in role order (the one-hot's order)."""
        types = [EVENT_TYPE]
        for etype in self.roles.values():
            if etype not in types:
                types.append(etype)
        return types

    def event_feature_names(self) -> list[str]:
        """The event block of ``x`` (zeros on entity nodes)."""
        names = [f"log1p_{n}" for n in self.numeric]
        for name, values in self.categorical.items():
            names += [f"{name}={v}" for v in values]
        names += ["hour_sin", "hour_cos"]
        actor = self.role_names[0]
        names += [f"{actor}_seen", f"log1p_{actor}_age_s", f"log1p_{actor}_since_prev_s"]
        for role in self.role_names[1:]:
            names += [f"has_{role}", f"new_{role}_for_{actor}"]
        return names

    def node_feature_names(self) -> list[str]:
        """Every column of ``x``: node-type one-hot, event block, entity statistics.

        Then, with ``center_stats``, node 0's per-role statistics (``center_<role>_<stat>``).
        """
        names = (
            [f"type={t}" for t in self.node_types]
            + self.event_feature_names()
            + [f"entity_{s}" for s in ENTITY_STATS]
        )
        if self.center_stats:
            names += [f"center_{role}_{s}" for role in self.roles for s in ENTITY_STATS]
        return names

    def edge_feature_names(self) -> list[str]:
        """Every column of ``edge_attr``: role one-hot, then the event's age."""
        return [f"role={r}" for r in self.roles] + ["log1p_event_age_s"]

    def tabular_feature_names(self) -> list[str]:
        """The non-graph baseline's columns: the event block, then each role's statistics."""
        return self.event_feature_names() + [
            f"{role}_{s}" for role in self.roles for s in ENTITY_STATS
        ]

    @property
    def num_node_features(self) -> int:
        """Width of ``x`` (the same for every node type)."""
        width = len(self.node_types) + len(self.event_feature_names()) + len(ENTITY_STATS)
        return width + (len(self.roles) * len(ENTITY_STATS) if self.center_stats else 0)

    @property
    def num_edge_features(self) -> int:
        """Width of ``edge_attr``."""
        return len(self.roles) + 1

    @property
    def num_tabular_features(self) -> int:
        """Width of :meth:`EventGraphStore.tabular`'s row."""
        return len(self.event_feature_names()) + len(self.roles) * len(ENTITY_STATS)

    @property
    def max_nodes(self) -> int:
        """Largest subgraph: the event, its entities, ``fanout`` events each."""
        r = len(self.roles)
        return 1 + r + (r * self.fanout if self.hops >= 2 else 0)

    @property
    def max_edges(self) -> int:
        """Largest edge count (both directions of every event-entity link)."""
        r = len(self.roles)
        return 2 * (r + (r * self.fanout if self.hops >= 2 else 0))

    @property
    def max_in_degree(self) -> int:
        """Most incoming edges of one node (an entity: the event and ``fanout`` others)."""
        return max(len(self.roles), 1 + (self.fanout if self.hops >= 2 else 0))


__all__ = ["ENTITY_STATS", "EVENT_TYPE", "EventGraphSpec"]
