"""Channel surgery on tensors: slice (shrink) or mask (zero) along one dimension.

A :class:`Side` lists every tensor of a layer that holds one side of a hidden
dimension (output rows, input columns, per-channel norms) and the attributes
that state its width. Structured pruning slices them; its self-check masks
the same entries in a second copy and compares the two (see ``structured``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


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
        attrs: ``(module, attribute, multiplier)``: set to ``multiplier * units``
            after cutting (``in_channels``, ``out_channels``, ``num_features``).
    """

    units: int
    layout: int = 1
    cuts: list[Cut] = field(default_factory=list)
    attrs: list[tuple[nn.Module, str, int]] = field(default_factory=list)

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
            where = cut.positions(keep, self.units).to(old.device)
            new = old.detach().index_select(cut.dim, where).clone()
            if isinstance(old, nn.Parameter):
                setattr(cut.owner, cut.name, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                setattr(cut.owner, cut.name, new)
        for module, attr, mult in self.attrs:
            _set_width(module, attr, mult * len(keep))

    def mask(self, drop: Tensor) -> None:
        """Zero channels ``drop`` in every tensor (shapes unchanged)."""
        with torch.no_grad():
            for cut in _unique(self.cuts):
                t = cut.tensor()
                t.index_fill_(cut.dim, cut.positions(drop, self.units).to(t.device), 0.0)


def _unique(cuts: list[Cut]) -> list[Cut]:
    # GATv2 with shared weights lists the same tensor twice: cut it once.
    seen: set[tuple[int, str]] = set()
    out = []
    for cut in cuts:
        key = (id(cut.owner), cut.name)
        if key not in seen:
            seen.add(key)
            out.append(cut)
    return out


def _set_width(module: nn.Module, attr: str, value: int) -> None:
    old = getattr(module, attr, None)
    if isinstance(old, tuple):
        setattr(module, attr, tuple(value for _ in old))  # bipartite (src, dst) widths
    elif old is not None:
        setattr(module, attr, value)
