"""Structured pruning: remove the least important hidden channels, shrinking tensors.

Each hidden dimension (see ``flow``) keeps the ``1 - amount`` fraction of
its channels with the largest L2 norm over the producing layer's output rows
(summed over heads for attention layers, and over the layers of a tied
dimension). The producers' rows, the channel-wise layers in between and the
consumers' columns (at their offset in a concatenation) are sliced alike.

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
from .flow import HiddenDim, hidden_dims
from .layers import input_side, norm_side, output_side
from .trace import record_calls


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
    accepted: list[_Cut] = []
    pruned: nn.Module | None = None
    for dim in dims:
        plan = _plan(dim, amount)
        if isinstance(plan, str):
            skipped.append({"layer": dim.producer.path, "reason": plan})
            continue
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


def _plan(dim: HiddenDim, amount: float) -> _Cut | str:
    """The channels to keep, or why not (tied layers of different shapes)."""
    sides = [output_side(p.path, p.module) for p in dim.producers]
    for use in dim.consumers:
        input_side(use.call.path, use.call.module)  # refuse early, naming the layer
    shapes = {(s.units, s.layout) for s in sides}
    if len(shapes) > 1:
        tied = ", ".join(p.path for p in dim.producers)
        return f"the tied layers ({tied}) differ in channels x heads {sorted(shapes)}"
    units, layout = shapes.pop()
    n_keep = max(1, round(units * (1.0 - amount)))
    importance = torch.stack([s.importance() for s in sides]).sum(0)
    order = torch.argsort(importance, descending=True, stable=True)
    return _Cut(dim, units, layout, torch.sort(order[:n_keep]).values)


def _sides(model: nn.Module, plan: _Cut) -> tuple[list[Side], list[Side]]:
    """The producers' sides, and the sides seen at an offset: consumers and norms."""
    at = model.get_submodule  # by path: ``model`` is a copy of the traced one
    d, width = plan.dim, plan.units * plan.layout
    outs = [output_side(p.path, at(p.path)) for p in d.producers]
    seen = [input_side(u.call.path, at(u.call.path)).segment(u.offset, width)
            for u in d.consumers]  # fmt: skip
    for use in d.between:
        norm = norm_side(at(use.call.path))
        if norm is not None:
            seen.append(norm.segment(use.offset, width))
    return outs, seen


def _apply(model: nn.Module, plans: list[_Cut], how: Literal["slice", "mask"]) -> nn.Module:
    # Sides are collected first: slicing one dim must not change another's view.
    ops: list[tuple[Side, Tensor, Tensor]] = []  # side, channels kept, channels dropped
    for plan in plans:
        outs, seen = _sides(model, plan)
        ops += [(s, plan.keep, plan.drop()) for s in outs]
        ops += [(s, plan.flat(plan.keep), plan.flat(plan.drop())) for s in seen]
    # Segments of one axis are cut from the last: the earlier ones keep their offsets.
    for side, keep, drop in sorted(ops, key=lambda op: -op[0].offset):
        if how == "slice":
            side.slice(keep)
        else:  # zeroing the norms in between too is harmless: the consumers ignore them
            side.mask(drop)
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
        "consumers": [u.call.path for u in d.consumers],
        "channels_before": plan.units * plan.layout,
        "channels_after": len(plan.keep) * plan.layout,
    }
    if len(d.producers) > 1:
        entry["tied"] = [p.path for p in d.producers]
    heads = getattr(d.producer.module, "heads", None)
    if isinstance(heads, int):
        entry |= {
            "heads": heads,
            "per_head_before": plan.units,
            "per_head_after": len(plan.keep),
        }
    return entry
