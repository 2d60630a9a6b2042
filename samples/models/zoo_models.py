"""PyG's own model classes, as a user hands them over: one factory per model.

Each factory takes no arguments and returns a fresh, untrained
``torch.nn.Module`` (the export CLI rebuilds it from ``--weights``)::

    edge-export export --model samples/models/zoo_models.py:gcn --weights gcn.pt ...

Node classifiers map ``x [N, 16]`` and ``edge_index [2, E]`` to logits
``[N, 7]``; the graph classifier (``gin``) also takes ``batch [N]`` and maps
each graph of the batch to logits ``[G, 4]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GAT, GCN, GIN, MLP, PNA, EdgeCNN, GraphSAGE, global_add_pool

FEATURES = 16
HIDDEN = 64
NODE_CLASSES = 7
GRAPH_CLASSES = 4
EDGE_DIM = 4
#: PNA's in-degree histogram (its degree scalers' statistics): the zoo's graphs have in-degree
#: about 8 (Poisson-like); PNA takes it as a constructor argument, so it is fixed here.
PNA_DEGREE_HISTOGRAM = [0, 2, 8, 20, 40, 65, 85, 95, 95, 85, 70, 52, 36, 23, 14, 8, 5, 3, 2, 1]

__all__ = [
    "FEATURES",
    "GRAPH_CLASSES",
    "NODE_CLASSES",
    "GINGraphClassifier",
    "MyGCN",
    "edgecnn",
    "gat",
    "gatv2",
    "gcn",
    "gin",
    "my_gcn",
    "pna",
    "sage",
]


class MyGCN(GCN):
    """A user's subclass of PyG's ``GCN``: same layers, its own name and a helper."""

    def describe(self) -> str:
        """One line naming the layers (a method of the user's, never traced)."""
        return f"MyGCN: {self.num_layers} x GCNConv, {self.hidden_channels} hidden"


class GINGraphClassifier(nn.Module):
    """``GIN(jk='cat')`` node embeddings, ``global_add_pool`` per graph, an ``MLP`` head.

    Args:
        in_channels: Node features.
        hidden: GIN hidden channels (also the size of the JK projection).
        num_layers: GIN layers.
        classes: Graph classes.
    """

    def __init__(
        self,
        in_channels: int = FEATURES,
        hidden: int = HIDDEN,
        num_layers: int = 3,
        classes: int = GRAPH_CLASSES,
    ) -> None:
        super().__init__()
        self.gnn = GIN(in_channels, hidden, num_layers, jk="cat")
        self.head = MLP([hidden, hidden, classes], norm=None, dropout=0.0)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        """Graph logits ``[G, classes]`` from a batch of graphs."""
        return self.head(global_add_pool(self.gnn(x, edge_index), batch))


def gcn() -> GCN:
    """The issue's (and the seed document's) ``GCN(16, 64, 7, num_layers=3)``."""
    return GCN(
        in_channels=FEATURES, hidden_channels=HIDDEN, out_channels=NODE_CLASSES, num_layers=3
    )


def my_gcn() -> MyGCN:
    """The same GCN built from a user's subclass."""
    return MyGCN(
        in_channels=FEATURES, hidden_channels=HIDDEN, out_channels=NODE_CLASSES, num_layers=3
    )


def gat() -> GAT:
    """``GAT(16, 64, 2, 7, heads=8)``: 8 heads of 8 channels, concatenated."""
    return GAT(FEATURES, HIDDEN, 2, NODE_CLASSES, heads=8)


def gin() -> GINGraphClassifier:
    """``GIN(16, 64, 3, jk='cat')`` + ``global_add_pool`` over ``batch`` + an MLP head."""
    return GINGraphClassifier()


def sage() -> GraphSAGE:
    """``GraphSAGE(16, 64, 3, 7, jk='cat')``: mean aggregation, JK concatenation."""
    return GraphSAGE(FEATURES, HIDDEN, 3, NODE_CLASSES, jk="cat")


def gatv2() -> GAT:
    """``GAT(16, 64, 2, 7, v2=True, heads=4, edge_dim=4)``: GATv2Conv with edge features."""
    return GAT(FEATURES, HIDDEN, 2, NODE_CLASSES, v2=True, heads=4, edge_dim=EDGE_DIM)


def pna() -> PNA:
    """``PNA(16, 64, 2, 7)``: mean/min/max/std, identity/amplification/attenuation scalers."""
    return PNA(
        FEATURES,
        HIDDEN,
        2,
        NODE_CLASSES,
        aggregators=["mean", "min", "max", "std"],
        scalers=["identity", "amplification", "attenuation"],
        deg=torch.tensor(PNA_DEGREE_HISTOGRAM),
    )


def edgecnn() -> EdgeCNN:
    """``EdgeCNN(16, 64, 2, 7)``: EdgeConv (max) over the request's own edges (dynamic form)."""
    return EdgeCNN(FEATURES, HIDDEN, 2, NODE_CLASSES)
