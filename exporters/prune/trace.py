"""Find the hidden dimensions of a model by running it once with forward hooks.

The layers are seen in the order they are called. Each weight layer's output
width should be the next weight layer's input width, with only channel-wise
layers (activations, dropout, BatchNorm, GIN's aggregation) in between: that
pair is one hidden dimension. The model's input features and its outputs are
never hidden dimensions. Operations the hooks cannot see (functional calls,
residual additions, concatenations) are caught later by the numeric
self-check in ``structured``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch_geometric.nn as pyg_nn
from torch import Tensor, nn
from torch_geometric.nn.aggr import Aggregation, MultiAggregation

from edge_sdk.errors import UnsupportedModelError

from ..support import CONTAINERS
from .layers import WEIGHT_LAYERS

Role = Literal["weight", "channelwise", "blocker", "opaque", "container"]

_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.PReLU, nn.Identity,
    nn.Dropout, nn.AlphaDropout,
)  # fmt: skip
_CHANNELWISE = (*_ELEMENTWISE, nn.BatchNorm1d, pyg_nn.BatchNorm, pyg_nn.GINConv)
#: Mix all channels of a row: removing channels changes the others.
_BLOCKERS = (nn.LayerNorm, pyg_nn.LayerNorm, nn.Softmax, nn.LogSoftmax, nn.Flatten)


@dataclass
class Call:
    """One call of a hooked layer."""

    path: str
    module: nn.Module
    role: Role
    in_width: int | None = None
    out_width: int | None = None


@dataclass
class HiddenDim:
    """A producer's output channels, consumed by the next weight layer."""

    producer: Call
    consumer: Call
    between: list[Call] = field(default_factory=list)


def role(module: nn.Module) -> Role:
    """How a layer relates to the channels flowing through it."""
    if isinstance(module, WEIGHT_LAYERS):
        return "weight"
    if isinstance(module, _CHANNELWISE):
        return "channelwise"
    if isinstance(module, _BLOCKERS):
        return "blocker"
    if isinstance(module, Aggregation):  # pooling: per channel unless parametric or multi
        plain = not isinstance(module, MultiAggregation) and not _has_params(module, True)
        return "channelwise" if plain else "opaque"
    if isinstance(module, CONTAINERS) or not type(module).__module__.startswith("torch"):
        return "container"  # the user's own classes: look at their children
    if isinstance(module, pyg_nn.MessagePassing) or _has_params(module, False):
        return "opaque"
    return "container" if next(module.children(), None) is not None else "blocker"


def _has_params(module: nn.Module, recurse: bool) -> bool:
    return next(module.parameters(recurse=recurse), None) is not None


def record_calls(model: nn.Module, example: dict[str, Tensor]) -> list[Call]:
    """Run ``model(**example)`` (no grad) and list the hooked layers in call order."""
    calls: list[Call] = []
    handles: list[Any] = []

    def visit(prefix: str, module: nn.Module) -> None:
        r = role(module)
        if r != "container":
            pre = _pre(prefix, r, calls)
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(_post(calls, module)))
        if r == "container" or isinstance(module, pyg_nn.GINConv):
            for name, child in module.named_children():
                visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    try:
        with torch.no_grad():
            model(**example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
    for value in (*args, kwargs.get("x"), *kwargs.values()):
        if isinstance(value, tuple | list) and value:
            value = value[0]  # bipartite (x_src, x_dst) or (out, attention)
        if isinstance(value, Tensor):
            return value
    return None


def _width(t: Tensor | None) -> int | None:
    return int(t.shape[-1]) if t is not None and t.dim() > 0 else None


def _pre(path: str, r: Role, calls: list[Call]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append(Call(path, module, r, _width(_first_tensor(args, kwargs))))

    return hook


def _post(calls: list[Call], module: nn.Module) -> Any:
    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        for call in reversed(calls):  # the latest unfinished call of this module
            if call.module is module and call.out_width is None:
                call.out_width = _width(_first_tensor((out,), {}))
                return

    return hook


def hidden_dims(calls: list[Call]) -> tuple[list[HiddenDim], list[dict[str, str]]]:
    """Pair each weight layer with the next one; return the dims and the skipped ones.

    Raises:
        UnsupportedModelError: A layer structured pruning cannot cut sits on a
            hidden dimension (named with its class).
    """
    dims: list[HiddenDim] = []
    skipped: list[dict[str, str]] = []
    pending: Call | None = None
    between: list[Call] = []
    blocked: str | None = None
    for call in calls:
        if pending is None:
            pending = call if call.role == "weight" else None
            continue
        if call.role == "channelwise":
            if call.in_width == pending.out_width:  # else it works on another tensor
                between.append(call)
            continue
        if call.role == "blocker":
            blocked = blocked or f"{call.path} ({type(call.module).__name__}) sits in between"
            continue
        if call.role == "opaque" and blocked is None:
            raise UnsupportedModelError(
                f"structured pruning: layer {call.path} ({type(call.module).__name__}) follows "
                f"{pending.path} and is not supported; supported layers: "
                f"{', '.join(sorted({c.__name__ for c in WEIGHT_LAYERS}))}; "
                "use unstructured pruning"
            )
        if call.role == "opaque":
            skipped.append({"layer": pending.path, "reason": blocked or ""})
        elif call.role == "weight":
            if blocked is None and call.in_width != pending.out_width:
                blocked = (
                    f"{call.path} takes {call.in_width} features where {pending.path} gives "
                    f"{pending.out_width} (concatenation, pooling or reshape in between)"
                )
            if blocked is None:
                dims.append(HiddenDim(pending, call, between))
            else:
                skipped.append({"layer": pending.path, "reason": blocked})
        pending = call if call.role == "weight" else None
        between, blocked = [], None
    return _drop_reused(dims, skipped)


def _drop_reused(
    dims: list[HiddenDim], skipped: list[dict[str, str]]
) -> tuple[list[HiddenDim], list[dict[str, str]]]:
    # A layer called twice (shared weights) would be cut twice: leave its dims whole.
    uses = Counter(
        (id(c.module), side)
        for d in dims
        for side, group in (("out", [d.producer]), ("in", [d.consumer]), ("mid", d.between))
        for c in group
    )
    kept = []
    for d in dims:
        members = [("out", d.producer), ("in", d.consumer), *(("mid", c) for c in d.between)]
        reused = [c.path for side, c in members if uses[(id(c.module), side)] > 1]
        if d.producer.module is d.consumer.module or reused:
            why = f"{(reused or [d.producer.path])[0]} is called more than once (shared weights)"
            skipped.append({"layer": d.producer.path, "reason": why})
        else:
            kept.append(d)
    return kept, skipped
