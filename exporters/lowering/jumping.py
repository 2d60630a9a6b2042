"""Jumping knowledge (PyG's ``JumpingKnowledge``) in the form every engine quantises.

``mode='max'`` is PyG's ``torch.stack(xs, -1).max(-1)``: a ``[N, C, L]`` stack and a
``ReduceMax`` over its last axis. Exact, but OpenVINO's INT8 pipeline quantises it
badly (a tiny ``GraphSAGE(jk='max')`` on neighbour tables: max abs error 0.62, the
export's gate refuses the artifact); a chain of element-wise ``Max`` is the same
result with no stack, and passes. ``cat`` is a ``Concat`` already; ``lstm`` is
refused by the support check.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from torch_geometric.nn.models import JumpingKnowledge


class MaxJumpingKnowledge(nn.Module):
    """``JumpingKnowledge(mode='max')`` as element-wise maxima of the layer outputs."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        return functools.reduce(torch.maximum, xs)


def lower_jumping_knowledge(model: nn.Module) -> list[str]:
    """Swap, in place, every ``JumpingKnowledge(mode='max')`` of ``model`` (a lowered copy).

    Returns:
        The paths swapped.
    """
    paths = [
        path
        for path, m in model.named_modules()
        if path and isinstance(m, JumpingKnowledge) and m.mode == "max"
    ]
    for path in paths:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, MaxJumpingKnowledge())
    return paths
