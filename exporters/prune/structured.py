"""Structured pruning: remove the least important hidden channels, shrinking tensors.

Each hidden dimension (see ``trace``) keeps the ``1 - amount`` fraction of
its channels with the largest L2 norm over the producing layer's output rows
(summed over heads for attention layers). The producer's rows, the
channel-wise layers in between and the consumer's columns are sliced alike.

Self-check: slicing must equal zeroing. For every dimension, a copy whose
removed channels are zeroed (producer rows and consumer columns) must give
the same outputs on ``example`` as the sliced copy. A dimension that fails
(an unseen residual, concatenation or functional norm mixes its channels) is
left whole and reported as skipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from edge_sdk.errors import ExportError

from ..wrappers import as_tuple
from .cuts import Side
from .layers import input_side, norm_side, output_side
from .trace import HiddenDim, hidden_dims, record_calls


@dataclass
class _Cut:
    """A hidden dimension and the channels it keeps."""

    dim: HiddenDim
    units: int
    layout: int
    keep: Tensor  # channel indices (per head), sorted

    def flat(self, index: Tensor) -> Tensor:
        """Positions of channels ``index`` in the flat width the consumer sees."""
        blocks = torch.arange(self.layout).unsqueeze(1) * self.units
        return (blocks + index.unsqueeze(0)).reshape(-1)

    def drop(self) -> Tensor:
        """Removed channel indices (per head)."""
        mask = torch.ones(self.units, dtype=torch.bool)
        mask[self.keep] = False
        return mask.nonzero().flatten()


def structured(
    model: nn.Module, amount: float, example: dict[str, Tensor]
) -> tuple[nn.Module, list[dict[str, Any]], list[dict[str, Any]]]:
    """Prune ``amount`` of every hidden dimension of ``model`` (modified in place).

    Args:
        model: The model to prune (eval mode; the caller passes a copy).
        amount: Fraction of channels to remove per hidden dimension.
        example: Forward keyword arguments used to trace and self-check.

    Returns:
        The pruned model, one entry per pruned dimension, the skipped ones.

    Raises:
        UnsupportedModelError: A layer on a hidden dimension cannot be cut.
        ExportError: No hidden dimension could be pruned (reasons listed).
    """
    dims, skipped = hidden_dims(record_calls(model, example))
    plans = [_plan(model, d, amount) for d in dims]
    accepted: list[_Cut] = []
    pruned: nn.Module | None = None
    for plan in plans:
        candidate, problem = _self_check(model, [*accepted, plan], example)
        if problem is None:
            accepted.append(plan)
            pruned = candidate
        else:
            skipped.append({"layer": plan.dim.producer.path, "reason": problem})
    if pruned is None:
        why = "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped) or "none found"
        raise ExportError(
            f"structured pruning found no hidden dimension it can shrink ({why}); "
            "use unstructured pruning"
        )
    return pruned, [_describe(p) for p in accepted], skipped


def _plan(model: nn.Module, dim: HiddenDim, amount: float) -> _Cut:
    side = output_side(dim.producer.path, dim.producer.module)
    input_side(dim.consumer.path, dim.consumer.module)  # refuse early, naming the layer
    n_keep = max(1, round(side.units * (1.0 - amount)))
    order = torch.argsort(side.importance(), descending=True, stable=True)
    keep = torch.sort(order[:n_keep]).values
    return _Cut(dim, side.units, side.layout, keep)


def _sides(model: nn.Module, plan: _Cut) -> tuple[Side, Side, list[Side]]:
    modules = dict(model.named_modules())
    d = plan.dim
    out = output_side(d.producer.path, modules[d.producer.path])
    into = input_side(d.consumer.path, modules[d.consumer.path])
    mids = [norm_side(modules[c.path]) for c in d.between]
    return out, into, [m for m in mids if m is not None]


def _apply(model: nn.Module, plans: list[_Cut], how: Literal["slice", "mask"]) -> nn.Module:
    # Sides are collected first: slicing one dim must not change another's view.
    sides = [(_sides(model, p), p) for p in plans]
    for (out, into, mids), plan in sides:
        if how == "slice":
            out.slice(plan.keep)
            for side in (into, *mids):
                side.slice(plan.flat(plan.keep))
        else:  # the in-between layers need no mask: the consumer ignores those channels
            out.mask(plan.drop())
            into.mask(plan.flat(plan.drop()))
    return model


def _self_check(
    model: nn.Module, plans: list[_Cut], example: dict[str, Tensor]
) -> tuple[nn.Module, str | None]:
    pruned = _apply(copy.deepcopy(model), plans, "slice")
    masked = _apply(copy.deepcopy(model), plans, "mask")
    try:
        with torch.no_grad():
            got = as_tuple(pruned(**example))
    except Exception as exc:  # any failure means the cut is inconsistent
        return pruned, f"the sliced model fails ({type(exc).__name__}: {exc})"
    with torch.no_grad():
        want = as_tuple(masked(**example))
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return pruned, f"an output changes shape ({list(w.shape)} -> {list(g.shape)})"
        scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
        err = float((g - w).abs().max()) if w.numel() else 0.0
        if err > 1e-4 * scale:
            return pruned, (
                f"slicing differs from zeroing by {err:.3g}: something the pruner cannot see "
                "(residual, concatenation, functional norm) mixes these channels"
            )
    return pruned, None


def _describe(plan: _Cut) -> dict[str, Any]:
    d = plan.dim
    entry: dict[str, Any] = {
        "layer": d.producer.path,
        "class": type(d.producer.module).__name__,
        "consumers": [d.consumer.path],
        "channels_before": plan.units * plan.layout,
        "channels_after": len(plan.keep) * plan.layout,
    }
    heads = getattr(d.producer.module, "heads", None)
    if isinstance(heads, int):
        entry |= {
            "heads": heads,
            "per_head_before": plan.units,
            "per_head_after": len(plan.keep),
        }
    return entry
