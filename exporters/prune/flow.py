"""Pair the layers that produce hidden channels with the layers that consume them.

The calls recorded by ``trace`` are walked in order. A weight layer's output,
after only channel-wise layers, reaches the next weight layer (its consumer),
or a ``JumpingKnowledge`` fan-in that gathers several layers' outputs for the
next weight layer (``BasicGNN``'s ``lin``):

* ``cat``: layer i's channels are the consumer's input columns from offset
  ``sum(widths of the inputs before i)``; each layer stays its own dimension,
  with one consumer more.
* ``max``: the inputs are compared channel by channel, so every layer must
  keep the same channels: their dimensions are tied into one.

A weight layer's output width must equal the consumer's input width (or the
fan-in's), else something unseen (concatenation, pooling, reshape) sits in
between and the dimension is left whole. The model's input features and its
outputs are never hidden dimensions. Operations the hooks cannot see
(functional calls, residual additions) are caught by the numeric self-check
in ``structured``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import Tensor

from edge_sdk.errors import UnsupportedModelError

from .cuts import unique_by
from .layers import WEIGHT_LAYERS, norm_side
from .trace import Call


@dataclass
class Use:
    """A layer that sees a dimension's channels from ``offset`` of its input axis."""

    call: Call
    offset: int = 0


@dataclass
class HiddenDim:
    """Output channels of one layer, or of several tied layers, and their consumers.

    Attributes:
        producers: Layers whose outputs carry the channels; tied layers (a
            ``max`` jumping knowledge) keep the same channels.
        consumers: Weight layers whose input columns see them.
        between: Channel-wise layers on the way (sliced when they hold
            per-channel tensors).
    """

    producers: list[Call]
    consumers: list[Use] = field(default_factory=list)
    between: list[Use] = field(default_factory=list)

    @property
    def producer(self) -> Call:
        """The first producer (names the dimension)."""
        return self.producers[0]


@dataclass
class _Source:
    """Channels on their way to the next weight layer: ``(producer, offset)`` parts."""

    parts: list[tuple[Call, int]]
    width: int | None
    name: str
    between: list[Use] = field(default_factory=list)
    blocked: str | None = None


class _Walk:
    """State of one pass over the calls."""

    def __init__(self) -> None:
        self.dims: dict[int, HiddenDim] = {}  # by id(producer call), in call order
        self.skipped: dict[int, tuple[Call, str]] = {}  # by id(producer call) or id(module)
        self.ties: list[list[Call]] = []
        self.carriers: list[tuple[Tensor, Call]] = []  # live tensors with a producer's channels

    def opaque(self, call: Call) -> None:
        """A layer structured pruning cannot cut, with no hidden channels before it."""
        why = f"{type(call.module).__name__} is not supported by structured pruning"
        self.skipped.setdefault(id(call.module), (call, why))

    def dim(self, producer: Call) -> HiddenDim:
        return self.dims.setdefault(id(producer), HiddenDim([producer]))

    def skip(self, source: _Source, why: str) -> None:
        for producer, _ in source.parts:
            self.skipped.setdefault(id(producer), (producer, why))

    def carries(self, call: Call, producer: Call) -> None:
        t = call.output() if call.output is not None else None
        if t is not None:  # else freed during the run: no fan-in took it
            self.carriers.append((t, producer))

    def carrier(self, t: Tensor) -> Call | None:
        # The latest match: a nested layer's output is also its last child's.
        return next((p for c, p in reversed(self.carriers) if c is t), None)

    def consume(self, source: _Source, call: Call) -> None:
        why = source.blocked
        if why is None and call.in_width != source.width:
            why = (
                f"{call.path} takes {call.in_width} features where {source.name} gives "
                f"{source.width} (concatenation, pooling or reshape in between)"
            )
        if why is not None:
            self.skip(source, why)
            return
        for producer, offset in source.parts:
            dim = self.dim(producer)
            dim.consumers.append(Use(call, offset))
            dim.between += [Use(u.call, u.offset + offset) for u in source.between]

    def fan_in(self, source: _Source | None, call: Call) -> _Source:
        """The channels a jumping knowledge hands on (``source``: the open chain)."""
        parts, offset, lost = [], 0, []
        tied = getattr(call.module, "mode", None) == "max"
        for i, t in enumerate(call.inputs):
            producer = self.carrier(t)
            if producer is None:
                lost.append(str(i))
            else:
                parts.append((producer, 0 if tied else offset))
            offset += int(t.shape[-1])
        if source is not None:  # the chain of the last layer before the fan-in ends here
            if source.blocked is not None:
                self.skip(source, source.blocked)
            for producer, _ in source.parts:
                if any(p is producer for p, _ in parts):
                    self.dim(producer).between += source.between
        out = _Source(parts, call.out_width, call.path)
        if tied:
            self.ties.append([p for p, _ in parts])
            if lost:
                out.blocked = f"{call.path} (max) also takes input(s) {', '.join(lost)}"
        return out


def hidden_dims(calls: list[Call]) -> tuple[list[HiddenDim], list[dict[str, str]]]:
    """The hidden dimensions of the recorded calls, and the ones left whole (why).

    Raises:
        UnsupportedModelError: A layer structured pruning cannot cut sits on a
            hidden dimension (named with its class).
    """
    walk = _Walk()
    source: _Source | None = None
    for call in calls:
        if call.role == "fanin":
            source = walk.fan_in(source, call)
        elif call.role == "weight":
            if source is not None:
                walk.consume(source, call)
            source = _Source([(call, 0)], call.out_width, call.path)
            walk.carries(call, call)
        elif source is None:
            if call.role == "opaque":
                walk.opaque(call)
            continue
        elif call.role == "channelwise":
            if call.in_width == source.width:  # else it works on another tensor
                source.between.append(Use(call))
                if len(source.parts) == 1 and source.blocked is None and not call.nested:
                    walk.carries(call, source.parts[0][0])
        elif call.role == "blocker":
            name = type(call.module).__name__
            source.blocked = source.blocked or f"{call.path} ({name}) sits in between"
        else:  # opaque
            if source.blocked is None:
                raise _opaque(call, source)
            walk.skip(source, source.blocked)
            source = None
    return _groups(walk, calls)


def _opaque(call: Call, source: _Source) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"structured pruning: layer {call.path} ({type(call.module).__name__}) follows "
        f"{source.name} and is not supported; supported layers: "
        f"{', '.join(sorted({c.__name__ for c in WEIGHT_LAYERS}))}; "
        "use unstructured pruning"
    )


def _groups(walk: _Walk, calls: list[Call]) -> tuple[list[HiddenDim], list[dict[str, str]]]:
    """Merge tied dimensions; leave whole those with a skipped or reused member."""
    owner = {key: key for key in walk.dims}

    def find(key: int) -> int:
        while owner[key] != key:
            key = owner[key]
        return key

    for tie in walk.ties:
        keys = [find(id(p)) for p in tie if id(p) in owner]
        for key in keys[1:]:
            owner[key] = keys[0]
    counts = Counter(id(c.module) for c in calls)
    dims, skipped = [], []
    for key in walk.dims:
        if find(key) != key:
            continue
        members = [d for k, d in walk.dims.items() if find(k) == key]
        merged = HiddenDim(
            [d.producer for d in members],
            _unique([u for d in members for u in d.consumers]),
            _unique([u for d in members for u in d.between]),
        )
        why = _problem(merged, walk, counts)
        if why is None:
            dims.append(merged)
        else:
            skipped.append({"layer": merged.producer.path, "reason": why})
    for producer, why in walk.skipped.values():
        if id(producer) not in walk.dims:
            skipped.append({"layer": producer.path, "reason": why})
    return dims, skipped


def _problem(dim: HiddenDim, walk: _Walk, counts: Counter[int]) -> str | None:
    for producer in dim.producers:
        if id(producer) in walk.skipped:
            return walk.skipped[id(producer)][1]
        if not walk.dims[id(producer)].consumers:
            return f"{producer.path} also gives an output the pruner cannot follow"
    weights = [*dim.producers, *(u.call for u in dim.consumers)]
    # A layer called twice (shared weights) would be cut twice; channel-wise layers
    # without per-channel tensors (one activation module for all layers) may be shared.
    tensors = [u.call for u in dim.between if norm_side(u.call.module) is not None]
    reused = [c.path for c in (*weights, *tensors) if counts[id(c.module)] > 1]
    if reused:
        return f"{reused[0]} is called more than once (shared weights)"
    return None


def _unique(uses: list[Use]) -> list[Use]:
    return unique_by(uses, lambda use: (id(use.call), use.offset))
