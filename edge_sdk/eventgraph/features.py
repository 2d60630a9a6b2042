"""Event validation and the per-event / per-entity feature rows of the store.

Hot path of every request: rows are built as Python floats and packed to
float32 bytes once (``struct``), never through per-feature numpy calls on tiny
arrays; an event's row is frozen at ingest and reused by every later request.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .spec import ENTITY_STATS, EventGraphSpec

_TWO_PI_PER_DAY = 2.0 * math.pi / 86400.0
_log1p = math.log1p


def _short(value: Any) -> str:
    """A value's repr, cut short: error messages must not echo a huge payload."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(event: Mapping[str, Any], name: str) -> float:
    """The finite number in ``event[name]`` (int or float; bool is refused)."""
    if name not in event:
        raise InvalidInputError(name, "missing")
    v = event[name]
    if (type(v) is not float and type(v) is not int) and (
        isinstance(v, bool) or not isinstance(v, Real)
    ):
        raise InvalidInputError(name, f"expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise InvalidInputError(name, f"must be finite, got {f}")
    return f


class ParsedEvent:
    """One validated event: id, time, the entity key per role, the static attributes."""

    __slots__ = ("attrs", "first_numeric", "id", "keys", "t")

    def __init__(
        self, eid: str, t: float, keys: tuple[str | None, ...], attrs: list[float], first: float
    ) -> None:
        self.id, self.t, self.keys, self.attrs, self.first_numeric = eid, t, keys, attrs, first


class Encoder:
    """Validates events and lays out rows for one :class:`EventGraphSpec`."""

    def __init__(self, spec: EventGraphSpec) -> None:
        self.spec = spec
        self.roles = spec.role_names
        types = spec.node_types
        self.prefix = [f"{etype}:" for etype in spec.roles.values()]
        self.cat_index = {n: {v: i for i, v in enumerate(vs)} for n, vs in spec.categorical.items()}
        self.num_types = len(types)
        self.event_width = len(spec.event_feature_names())
        self.stats_width = len(ENTITY_STATS)
        self.width = spec.num_node_features
        self.pack_row = struct.Struct(f"<{self.width}f").pack
        self.pack_stats = struct.Struct(f"<{self.stats_width}f").pack
        self.pack_event = struct.Struct(f"<{self.event_width}f").pack
        self.pack_one = struct.Struct("<f").pack
        # Constant parts of a row, as float lists to prepend/append.
        self.event_head = [1.0] + [0.0] * (self.num_types - 1)
        self.stats_zeros = [0.0] * self.stats_width
        # node 0's per-role statistics (spec.center_stats): zeros on every other row
        self.center_width = len(self.roles) * self.stats_width if spec.center_stats else 0
        self.center_zeros = [0.0] * self.center_width
        self.event_zeros = [0.0] * self.event_width
        self.entity_head = {
            etype: [1.0 if t == etype else 0.0 for t in types] + self.event_zeros
            for etype in types[1:]
        }
        self.role_type = list(spec.roles.values())
        r = len(self.roles)
        self.role_table = np.eye(r, r + 1, dtype=np.float32)  # edge_attr rows by role

    def parse(self, event: Any) -> ParsedEvent:
        """Validate ``event`` (InvalidInputError naming the field) and encode its attributes."""
        spec = self.spec
        if not isinstance(event, Mapping):
            raise InvalidInputError("event", f"expected a JSON object, got {type(event).__name__}")
        limit = spec.max_id_length
        name = spec.id_field
        if name not in event or event[name] is None:
            raise InvalidInputError(name, "missing")
        raw = event[name]
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise InvalidInputError(name, f"expected a string or integer, got {type(raw).__name__}")
        eid = raw if isinstance(raw, str) else str(raw)
        if not eid or len(eid) > limit:
            raise InvalidInputError(name, f"must be 1 to {limit} characters long")
        t = _number(event, spec.time_field)
        keys: list[str | None] = []
        for i, role in enumerate(self.roles):
            v = event.get(role)
            if v is None:
                if i == 0:
                    raise InvalidInputError(role, "missing (the first role is the actor: required)")
                keys.append(None)
                continue
            if not isinstance(v, str):
                raise InvalidInputError(role, f"expected an entity id string, got {_short(v)}")
            if not v or len(v) > limit:
                raise InvalidInputError(role, f"entity id must be 1 to {limit} characters long")
            keys.append(self.prefix[i] + v)
        attrs: list[float] = []
        first = 0.0
        for j, name in enumerate(spec.numeric):
            f = _number(event, name)
            if f < 0.0:
                raise InvalidInputError(name, f"must be >= 0, got {f}")
            if j == 0:
                first = f
            attrs.append(_log1p(f))
        for name, index in self.cat_index.items():
            if name not in event:
                raise InvalidInputError(name, "missing")
            v = event[name]
            k = index.get(v) if isinstance(v, str) else None
            if k is None:
                raise InvalidInputError(
                    name, f"unknown value {_short(v)}; expected one of {', '.join(index)}"
                )
            onehot = [0.0] * len(index)
            onehot[k] = 1.0
            attrs += onehot
        angle = (t % 86400.0) * _TWO_PI_PER_DAY
        attrs.append(math.sin(angle))
        attrs.append(math.cos(angle))
        return ParsedEvent(eid, t, tuple(keys), attrs, first)


class Entity:
    """What the store remembers of one entity: its recent events and running sums.

    Parallel arrays, oldest first, sorted by (stored) time. Compact typed
    arrays, not deques of Python objects: a request touches a dozen entities
    spread over a large store, so cache misses, not instructions, set its cost.
    ``cum`` holds the running sum of the first numeric before each event so
    that a window's sum is one subtraction; a window's bounds are bisections.
    """

    __slots__ = (
        "actors",
        "cum",
        "events",
        "first_seen",
        "last_t",
        "partners",
        "roles",
        "running",
        "times",
        "uid",
    )

    def __init__(self, t: float, uid: int) -> None:
        self.uid = uid  # a small int standing for the entity in other entities' actor lists
        self.first_seen = t
        self.last_t = t
        self.times = array("d")
        self.events: list[tuple[str, float, bytes, tuple[str | None, ...]]] = []
        self.roles = array("b")
        self.actors = array("q")
        self.cum = array("d")
        self.running = 0.0  # sum of the first numeric over every event ever appended
        # As an actor: (role, partner key) -> [count in history, first, last time together].
        self.partners: dict[tuple[int, str], tuple[int, float, float]] = {}

    def window(self, t: float, horizon_s: float) -> tuple[int, int]:
        """Indices [lo, hi) of the remembered events in [t - horizon, t)."""
        times = self.times
        hi = bisect_left(times, t)
        return bisect_left(times, t - horizon_s, 0, hi), hi

    def sum_between(self, i: int, hi: int) -> float:
        """Sum of the first numeric over events [i, hi)."""
        if i >= hi:
            return 0.0
        end = self.cum[hi] if hi < len(self.cum) else self.running
        return end - self.cum[i]

    def drop_oldest(self, k: int) -> None:
        """Forget the ``k`` oldest events."""
        del self.times[:k], self.events[:k], self.roles[:k], self.actors[:k], self.cum[:k]


def entity_stats(
    ent: Entity | None, t: float, horizon_s: float, bounds: tuple[int, int] | None = None
) -> list[float]:
    """The :data:`~edge_sdk.eventgraph.spec.ENTITY_STATS` of ``ent`` as of ``t``."""
    if ent is None:
        return [0.0] * len(ENTITY_STATS)
    lo, hi = bounds or ent.window(t, horizon_s)
    if hi <= lo:
        return [0.0] * len(ENTITY_STATS)
    times = ent.times
    i1 = bisect_left(times, t - 3600.0, lo, hi)
    i24 = bisect_left(times, t - 86400.0, lo, i1)
    actors = ent.actors
    recent = set(actors[i24:hi])
    distinct_24h = len(recent)
    recent.update(actors[lo:i24])
    age = t - ent.first_seen
    return [
        1.0,
        _log1p(age) if age > 0.0 else 0.0,
        _log1p(t - times[hi - 1]),
        _log1p(hi - i1),
        _log1p(hi - i24),
        _log1p(hi - lo),
        _log1p(distinct_24h),
        _log1p(len(recent)),
        _log1p(max(ent.sum_between(i24, hi), 0.0)),
    ]


__all__ = ["Encoder", "Entity", "ParsedEvent", "entity_stats"]
