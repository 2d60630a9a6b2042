"""Channel surgery on tensors: slice (shrink) or mask (zero) along one dimension.

A :class:`Side` lists every tensor of a layer that holds one side of a hidden
dimension (output rows, input columns, per-channel norms) and the attributes
that state its width. Structured pruning slices them; its self-check masks
the same entries in a second copy and compares the two (see ``structured``).
A side may cover one segment of a wider axis (a layer's channels inside a
jumping-knowledge concatenation): the entries outside it are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")


@dataclass(frozen=True)
class Cut:
    """One tensor with channels along ``dim``.

    Attributes:
        owner: Module holding the tensor.
        name: Parameter or buffer name on ``owner``.
        dim: Axis of the channels.
        heads: The axis holds ``heads`` consecutive blocks of channels (GAT
            ``[H*C, F]`` rows); the same channels are cut in every block.
        score: Counts towards the channels' importance (weight matrices).
    """

    owner: nn.Module
    name: str
    dim: int
    heads: int = 1
    score: bool = False

    def positions(self, index: Tensor, units: int) -> Tensor:
        """Flat positions along ``dim`` of channels ``index`` (of ``units`` per block)."""
        if self.heads == 1:
            return index
        blocks = torch.arange(self.heads).unsqueeze(1) * units
        return (blocks + index.unsqueeze(0)).reshape(-1)

    def tensor(self) -> Tensor:
        """The current tensor."""
        value = getattr(self.owner, self.name)
        assert isinstance(value, Tensor)
        return value


@dataclass
class Side:
    """One side of a hidden dimension in one layer.

    Attributes:
        units: Channels that can be removed (per head for attention layers).
        layout: Blocks of ``units`` in the flat width the next layer sees
            (``heads`` for a concatenating attention layer, else 1).
        cuts: Tensors to cut.
        attrs: ``(module, attribute, multiplier)``: reduced by ``multiplier``
            per removed unit (``in_channels``, ``out_channels``, ``num_features``).
        offset: First position of the side's channels along each cut axis
            (non-zero for a segment of a concatenation); the rest is kept.
    """

    units: int
    layout: int = 1
    cuts: list[Cut] = field(default_factory=list)
    attrs: list[tuple[nn.Module, str, int]] = field(default_factory=list)
    offset: int = 0

    def segment(self, offset: int, units: int) -> Side:
        """Restrict the side to ``units`` positions from ``offset`` (a part of its axis)."""
        self.offset, self.units = offset, units
        return self

    def importance(self) -> Tensor:
        """Squared L2 norm per channel over all scoring tensors (and heads)."""
        total = torch.zeros(self.units)
        for cut in self.cuts:
            if cut.score:
                t = cut.tensor().detach().cpu().float().movedim(cut.dim, 0)
                total += t.reshape(cut.heads, self.units, -1).pow(2).sum(dim=(0, 2))
        return total

    def slice(self, keep: Tensor) -> None:
        """Keep only channels ``keep`` in every tensor and update the width attributes."""
        for cut in _unique(self.cuts):
            old = cut.tensor()
            end, size = self.offset + cut.heads * self.units, old.shape[cut.dim]
            inner = cut.positions(keep, self.units) + self.offset
            where = torch.cat([torch.arange(self.offset), inner, torch.arange(end, size)])
            new = old.detach().index_select(cut.dim, where.to(old.device)).clone()
            if isinstance(old, nn.Parameter):
                setattr(cut.owner, cut.name, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                setattr(cut.owner, cut.name, new)
        for module, attr, mult in self.attrs:
            _shrink_width(module, attr, mult * (self.units - len(keep)))

    def mask(self, drop: Tensor) -> None:
        """Zero channels ``drop`` in every tensor (shapes unchanged)."""
        with torch.no_grad():
            for cut in _unique(self.cuts):
                t = cut.tensor()
                where = cut.positions(drop, self.units) + self.offset
                t.index_fill_(cut.dim, where.to(t.device), 0.0)


def unique_by(items: list[T], key: Callable[[T], Hashable]) -> list[T]:
    """``items`` without later repeats of the same ``key``, in order."""
    seen: set[Hashable] = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def _unique(cuts: list[Cut]) -> list[Cut]:
    # GATv2 with shared weights lists the same tensor twice: cut it once.
    return unique_by(cuts, lambda cut: (id(cut.owner), cut.name))


def _shrink_width(module: nn.Module, attr: str, by: int) -> None:
    old = getattr(module, attr, None)
    if isinstance(old, tuple):  # bipartite (src, dst) widths
        setattr(module, attr, tuple(w - by if w > 0 else w for w in old))
    elif isinstance(old, int) and old > 0:  # -1: a lazy layer's unknown width stays unknown
        setattr(module, attr, old - by)
