"""Untrained Cora node classifiers: GCN, GAT and GraphSAGE.

Each factory returns a fresh ``torch.nn.Module`` whose ``forward(x, edge_index)``
maps node features ``[N, F]`` and edges ``[2, E]`` to class logits ``[N, C]``.
The defaults fit Cora (1,433 features, 7 classes), so the export CLI can build
them with no arguments::

    edge-export export --model samples/cora/models.py:gcn --weights gcn.pt ...
"""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

CORA_FEATURES = 1433
CORA_CLASSES = 7

__all__ = ["CORA_CLASSES", "CORA_FEATURES", "GAT", "GCN", "SAGE", "gat", "gcn", "sage"]


class TwoLayer(nn.Module):
    """``conv2(dropout(act(conv1(dropout(x)))))``: the shape of all three classics.

    Args:
        conv1: First graph layer.
        conv2: Output graph layer.
        act: Activation between them.
        dropout: Dropout before each layer (training only).
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, act: nn.Module, dropout: float) -> None:
        super().__init__()
        self.drop1 = nn.Dropout(dropout)
        self.conv1 = conv1
        self.act = act
        self.drop2 = nn.Dropout(dropout)
        self.conv2 = conv2

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Class logits ``[N, C]`` from node features ``[N, F]`` and edges ``[2, E]``."""
        h = self.act(self.conv1(self.drop1(x), edge_index))
        return self.conv2(self.drop2(h), edge_index)


class GCN(TwoLayer):
    """Two-layer graph convolutional network (Kipf & Welling, ICLR 2017)."""

    def __init__(
        self,
        in_channels: int = CORA_FEATURES,
        hidden: int = 64,
        out_channels: int = CORA_CLASSES,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(
            GCNConv(in_channels, hidden), GCNConv(hidden, out_channels), nn.ReLU(), dropout
        )


class GAT(TwoLayer):
    """Two-layer graph attention network (Veličković et al., ICLR 2018).

    The first layer concatenates ``heads`` attention heads of ``hidden`` units
    each, followed by ELU; the output layer has a single head. Dropout applies
    to the inputs of both layers and to the attention coefficients.
    """

    def __init__(
        self,
        in_channels: int = CORA_FEATURES,
        hidden: int = 8,
        heads: int = 8,
        out_channels: int = CORA_CLASSES,
        dropout: float = 0.6,
    ) -> None:
        super().__init__(
            GATConv(in_channels, hidden, heads=heads, dropout=dropout),
            GATConv(hidden * heads, out_channels, heads=1, concat=False, dropout=dropout),
            nn.ELU(),
            dropout,
        )


class SAGE(TwoLayer):
    """Two-layer GraphSAGE with mean aggregation (Hamilton et al., NeurIPS 2017)."""

    def __init__(
        self,
        in_channels: int = CORA_FEATURES,
        hidden: int = 64,
        out_channels: int = CORA_CLASSES,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(
            SAGEConv(in_channels, hidden, aggr="mean"),
            SAGEConv(hidden, out_channels, aggr="mean"),
            nn.ReLU(),
            dropout,
        )


def gcn() -> GCN:
    """Untrained Cora GCN: 2× GCNConv, 64 hidden units, dropout 0.5."""
    return GCN()


def gat() -> GAT:
    """Untrained Cora GAT: GATConv 8 heads × 8 units + ELU, then a 1-head GATConv; dropout 0.6."""
    return GAT()


def sage() -> SAGE:
    """Untrained Cora GraphSAGE: 2× SAGEConv (mean), 64 hidden units, dropout 0.5."""
    return SAGE()
