"""Record how a model's layers are called, by running it once with forward hooks.

The layers are seen in the order they are called, each with a role: weight
layers (cut), channel-wise layers (activations, dropout, per-channel norms,
GIN's aggregation), blockers that mix channels, opaque layers, and
``JumpingKnowledge`` (cat/max), which gathers several layers' outputs. Each
call keeps its input and output tensors so that ``flow`` can tell which
layer's channels reach a jumping-knowledge fan-in.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch_geometric.nn as pyg_nn
from torch import Tensor, nn
from torch_geometric.nn.aggr import Aggregation, MultiAggregation
from torch_geometric.nn.models import JumpingKnowledge

from ..support import CONTAINERS
from .layers import WEIGHT_LAYERS

Role = Literal["weight", "channelwise", "blocker", "opaque", "container", "fanin"]

_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.PReLU, nn.Identity,
    nn.Dropout, nn.AlphaDropout,
)  # fmt: skip
#: Per channel: a channel's output depends on that channel only (over nodes or graphs).
_CHANNELWISE = (
    *_ELEMENTWISE, nn.BatchNorm1d, pyg_nn.BatchNorm, pyg_nn.GraphNorm, pyg_nn.InstanceNorm,
    pyg_nn.GINConv,
)  # fmt: skip
#: Mix all channels of a row: removing channels changes the others.
_BLOCKERS = (nn.LayerNorm, pyg_nn.LayerNorm, nn.Softmax, nn.LogSoftmax, nn.Flatten)


@dataclass
class Call:
    """One call of a hooked layer.

    Attributes:
        path: Module path.
        module: The layer.
        role: See :func:`role`.
        in_width: Width of its (first) input.
        out_width: Width of its output.
        inputs: A fan-in's input tensors (kept alive; other calls keep none).
        output: Its (first) output tensor, weakly: the tensors that are still
            alive after the run are those a fan-in's inputs hold.
        nested: Its children are hooked too (GIN): its output is theirs.
    """

    path: str
    module: nn.Module
    role: Role
    in_width: int | None = None
    out_width: int | None = None
    inputs: list[Tensor] = field(default_factory=list)
    output: weakref.ref[Tensor] | None = None
    nested: bool = False


def role(module: nn.Module) -> Role:
    """How a layer relates to the channels flowing through it."""
    if isinstance(module, JumpingKnowledge):  # lstm mixes channels with weights
        return "fanin" if module.mode in ("cat", "max") else "opaque"
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
    hooked: set[int] = set()

    def visit(prefix: str, module: nn.Module) -> None:
        r = role(module)
        if r != "container" and id(module) not in hooked:  # shared (GIN's act): hook once
            hooked.add(id(module))
            pre = _pre(prefix, r, calls, nested=isinstance(module, pyg_nn.GINConv))
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


def _pre(path: str, r: Role, calls: list[Call], nested: bool) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = []
        if r == "fanin" and args and isinstance(args[0], list | tuple):
            inputs = [t for t in args[0] if isinstance(t, Tensor)]
        width = _width(_first_tensor(args, kwargs))
        calls.append(Call(path, module, r, width, inputs=inputs, nested=nested))

    return hook


def _post(calls: list[Call], module: nn.Module) -> Any:
    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        for call in reversed(calls):  # the latest unfinished call of this module
            if call.module is module and call.out_width is None:
                tensor = _first_tensor((out,), {})
                call.output = weakref.ref(tensor) if tensor is not None else None
                call.out_width = _width(tensor)
                return

    return hook
