"""``prune``: a pruned copy of a model, by :class:`PruneSpec`."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .spec import PruneReport, PruneSpec
from .structured import structured
from .unstructured import DENSE_NOTE, unstructured


def count_params(model: nn.Module) -> int:
    """Parameters of ``model`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def prune(
    model: nn.Module, spec: PruneSpec, example: dict[str, Tensor]
) -> tuple[nn.Module, PruneReport]:
    """Return a pruned deep copy of ``model`` (the input is never modified).

    Args:
        model: A PyTorch / PyG model.
        spec: What to prune and how much.
        example: Forward keyword arguments (``x``, ``edge_index``, [``batch``]):
            traced to find the layer order and to check the pruned model.

    Returns:
        The pruned model in eval mode and a report of what changed.

    Raises:
        UnsupportedModelError: Structured: a layer on a hidden dimension cannot
            be cut (named, with its class).
        ExportError: Nothing could be pruned (the reasons are listed).
    """
    pruned = copy.deepcopy(model).eval()
    with torch.no_grad():
        pruned(**example)  # initialise lazy layers before counting or cutting
    before = count_params(pruned)
    if spec.kind == "unstructured":
        layers, zeros, total = unstructured(pruned, spec.amount, spec.scope)
        report = PruneReport(
            spec.kind, spec.amount, before, before - zeros, layers, spec.scope, zeros / total,
            notes=[DENSE_NOTE],
        )  # fmt: skip
        return pruned, report
    pruned, layers, skipped = structured(pruned, spec.amount, example)
    notes = [f"{len(skipped)} hidden dimension(s) left whole: see skipped"] if skipped else []
    report = PruneReport(
        spec.kind, spec.amount, before, count_params(pruned), layers, skipped=skipped, notes=notes
    )
    return pruned.eval(), report
