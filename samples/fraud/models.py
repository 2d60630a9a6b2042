"""The fraud GNNs: GraphSAGE and GATv2 over a transaction's 2-hop event graph.

A request is one subgraph (``edge_sdk.eventgraph``): node 0 is the scored
transaction, hop 1 its entities (accounts, device, IP, merchant), hop 2 their
most recent earlier transactions; edges run event <-> entity both ways. Two
message-passing layers are exactly enough for node 0 to hear hop 2: layer 1
summarises each entity's recent history, layer 2 brings those summaries to the
transaction. That is the point of the graph: a shared device is harmless or a
ring depending on *whose* transactions sit behind it, which per-entity counts
(the baseline's features) cannot tell.

Both models map every node to ``logits [N, 2]`` (class 1 = fraud); a
transaction's score is ``softmax(logits[0])[1]``. Only node 0 is trained; the
other rows are there so one forward serves a disjoint union of many requests
(the node's merged batches) with no readout over ``batch``.

Layers are the ones the SDK's dynamic export lowers to neighbour tables (no
scatter, INT8 and LiteRT): ``SAGEConv`` (``aggr`` mean/max/sum or a list),
``GATv2Conv(edge_dim=A)`` with self loops filled by the ``'mean'`` of the
incoming edge features, ``GINEConv(edge_dim=A)``, plain ``Linear``/``ReLU``
around them. Features are
standardised inside the model by constant buffers (:meth:`FraudGNN.fit_scaler`,
fitted on training subgraphs), so the exported graph takes the store's raw
encoded features and INT8 calibration sees unit-scale activations.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GINEConv, SAGEConv

__all__ = [
    "KINDS",
    "FraudGATv2",
    "FraudGATv2GINE",
    "FraudGNN",
    "FraudSAGE",
    "Packed",
    "QuantileBins",
    "build",
    "center_logits",
    "class_weights",
    "fraud_probability",
    "score_gnn",
]


class FraudGNN(nn.Module):
    """Shared parts: the in-model scaler, the input encoder and the head.

    ``logits = head(cat(h0, h1, h2))`` (jumping knowledge by concatenation:
    the transaction's own features stay one linear map from the output, the
    graph layers add what its neighbourhood says).

    Args:
        in_channels: Node features ``F`` (``spec.num_node_features``).
        hidden: Width of every hidden representation.
        dropout: Dropout on hidden representations (training only).
    """

    def __init__(self, in_channels: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be >= 1, got {in_channels}, {hidden}")
        self.in_channels, self.hidden = in_channels, hidden
        self.register_buffer("shift", torch.zeros(in_channels))
        self.register_buffer("scale", torch.ones(in_channels))
        self.encode = nn.Linear(in_channels, hidden)
        self.drop = nn.Dropout(dropout)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    @torch.no_grad()
    def fit_scaler(self, x: np.ndarray | Tensor) -> None:
        """Standardise features by the mean and std of ``x [n, F]`` (training nodes).

        Constant features (std below 1e-6) keep scale 1.
        """
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if xt.dim() != 2 or xt.shape[1] != self.in_channels:
            raise ValueError(f"expected x [n, {self.in_channels}], got {tuple(xt.shape)}")
        std = xt.std(dim=0, unbiased=False)
        self.shift.copy_(xt.mean(dim=0))
        self.scale.copy_(torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.ones_like(std)))

    def _embed(self, x: Tensor) -> Tensor:
        return self.act(self.encode((x - self.shift) * self.scale))

    def _logits(self, h0: Tensor, h1: Tensor, h2: Tensor) -> Tensor:
        return self.head(self.drop(torch.cat([h0, h1, h2], dim=-1)))


class FraudSAGE(FraudGNN):
    """``forward(x [N, F], edge_index [2, E]) -> logits [N, 2]``: two ``SAGEConv``.

    Args:
        in_channels: Node features.
        hidden: Hidden width.
        aggr: ``SAGEConv`` aggregation; a list concatenates several (mean and max:
            the typical neighbour and the most extreme one).
        dropout: Dropout (training only).
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 48,
        aggr: str | list[str] = "mean",
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, hidden, dropout)
        agg = list(aggr) if isinstance(aggr, (list, tuple)) else aggr
        self.conv1 = SAGEConv(hidden, hidden, aggr=agg)
        self.conv2 = SAGEConv(hidden, hidden, aggr=agg)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Per-node logits; node 0 of each request is its transaction."""
        h0 = self._embed(x)
        h1 = self.act(self.conv1(self.drop(h0), edge_index))
        h2 = self.act(self.conv2(self.drop(h1), edge_index))
        return self._logits(h0, h1, h2)


class FraudGATv2(FraudGNN):
    """``forward(x [N, F], edge_index [2, E], edge_attr [E, A]) -> logits [N, 2]``.

    Two ``GATv2Conv(edge_dim=A)``: the edge features (role one-hot, log age of
    the neighbour event relative to the scored one) enter every attention score,
    so the model can weigh a device's transactions of the last minutes above
    last month's, and a payee edge above a merchant one.

    Args:
        in_channels: Node features ``F``.
        edge_dim: Edge features ``A`` (``spec.num_edge_features``).
        hidden: Hidden width (``heads`` x ``hidden // heads`` channels, concatenated).
        heads: Attention heads.
        dropout: Dropout (training only; attention dropout is not used).
    """

    def __init__(
        self,
        in_channels: int,
        edge_dim: int,
        hidden: int = 48,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, hidden, dropout)
        width = hidden // self.branches  # of each branch
        if edge_dim < 1 or heads < 1 or hidden % self.branches or width % heads:
            raise ValueError(
                f"need edge_dim >= 1 and hidden divisible by {self.branches} x heads, got "
                f"{edge_dim}, {hidden}, {heads}"
            )
        self.edge_dim, self.heads = edge_dim, heads
        self._layers(width)

    #: Convolutions side by side per layer, each ``hidden // branches`` wide.
    branches = 1

    def _gat(self, width: int) -> GATv2Conv:
        return GATv2Conv(
            self.hidden,
            width // self.heads,
            heads=self.heads,
            edge_dim=self.edge_dim,
            fill_value="mean",
        )

    def _layers(self, width: int) -> None:
        self.conv1, self.conv2 = self._gat(width), self._gat(width)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Per-node logits; node 0 of each request is its transaction."""
        h0 = self._embed(x)
        h1 = self.act(self.conv1(self.drop(h0), edge_index, edge_attr))
        h2 = self.act(self.conv2(self.drop(h1), edge_index, edge_attr))
        return self._logits(h0, h1, h2)


class FraudGATv2GINE(FraudGATv2):
    """``forward(x, edge_index, edge_attr) -> logits [N, 2]``: GATv2 and GINE side by side.

    Each layer concatenates a ``GATv2Conv(edge_dim=A)`` and a ``GINEConv(edge_dim=A)``
    of half the width. The two see a neighbourhood differently. GATv2's message is
    the neighbour's features alone, averaged with attention weights: it weighs,
    but a payer's and a payee's statistics arrive mixed, and 3 neighbours look like
    30. GINE's message is ``relu(x_j + lin(edge_attr))``, summed: the edge's role
    shifts what each neighbour contributes, and the sum keeps how many there are.
    Test-period PR-AUC (``benchmarks/results/fraud_seeds.md``, the demo's settings):
    seed 0 GATv2+GINE 0.762, GATv2 0.601, HGB 0.590; seed 1 0.716, 0.723, 0.656;
    seed 2 0.669, 0.661, 0.622. GINE alone (seed 0, 1 thread): 0.611, the best of
    the three on rings and mules and the worst on bursts.

    Args:
        in_channels: Node features ``F``.
        edge_dim: Edge features ``A``.
        hidden: Hidden width, half to each branch (``heads`` x ``hidden // 2 // heads``
            GATv2 channels, concatenated).
        heads: GATv2 attention heads.
        dropout: Dropout (training only).
    """

    branches = 2

    def _layers(self, width: int) -> None:
        def gine() -> GINEConv:
            mlp = nn.Sequential(nn.Linear(self.hidden, width), nn.ReLU(), nn.Linear(width, width))
            return GINEConv(mlp, train_eps=True, edge_dim=self.edge_dim)

        self.gat1, self.gat2 = self._gat(width), self._gat(width)
        self.gine1, self.gine2 = gine(), gine()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Per-node logits; node 0 of each request is its transaction."""
        h0 = self._embed(x)
        d0 = self.drop(h0)
        a1, g1 = self.gat1(d0, edge_index, edge_attr), self.gine1(d0, edge_index, edge_attr)
        h1 = self.act(torch.cat([a1, g1], dim=-1))
        d1 = self.drop(h1)
        a2, g2 = self.gat2(d1, edge_index, edge_attr), self.gine2(d1, edge_index, edge_attr)
        h2 = self.act(torch.cat([a2, g2], dim=-1))
        return self._logits(h0, h1, h2)


#: ``build``'s kinds: GraphSAGE, GATv2, and GATv2 beside GINE (the demo's exported model).
KINDS = {"sage": FraudSAGE, "gatv2": FraudGATv2, "gatv2_gine": FraudGATv2GINE}


def build(kind: str, num_node_features: int, num_edge_features: int, **kw: object) -> FraudGNN:
    """A model of :data:`KINDS` sized for a spec (GraphSAGE takes no edge features)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown model kind {kind!r}: expected one of {', '.join(KINDS)}")
    if cls is FraudSAGE:
        return FraudSAGE(num_node_features, **kw)  # type: ignore[arg-type]
    return cls(num_node_features, num_edge_features, **kw)


def class_weights(y: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights for classes 0/1 (mean 1 over the two)."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"training data needs both classes, got counts {counts.tolist()}")
    return torch.tensor(counts.sum() / (2 * counts), dtype=torch.float32)


def fraud_probability(logits: Tensor | np.ndarray) -> np.ndarray:
    """``softmax(logits)[:, 1]`` in float64 (``sigmoid(l1 - l0)``: no saturation at 1.0 in fp32)."""
    lg = np.asarray(logits.detach().numpy() if isinstance(logits, Tensor) else logits)
    d = lg[..., 1].astype(np.float64) - lg[..., 0].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-d))


# -- batching: disjoint unions ---------------------------------------------------------------------


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + l)`` for each pair, vectorised."""
    total = int(lengths.sum())
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total)


class Packed:
    """Many subgraphs in flat arrays, cut into disjoint-union batches without Python loops.

    ``batch(ids)`` returns ``(x, edge_index, edge_attr, centers)``: the union of the
    chosen graphs (node ids offset per graph, the way PyG's ``Batch`` does it) and the
    index of each graph's node 0 in it.
    """

    def __init__(self, subgraphs: Sequence[Any]) -> None:
        if not subgraphs:
            raise ValueError("no subgraphs to pack")
        self.n = np.array([g.x.shape[0] for g in subgraphs], np.int64)
        self.e = np.array([g.edge_index.shape[1] for g in subgraphs], np.int64)
        self.node_ptr = np.cumsum(self.n) - self.n
        self.edge_ptr = np.cumsum(self.e) - self.e
        self.x = np.concatenate([g.x for g in subgraphs]).astype(np.float32, copy=False)
        self.edge_index = np.concatenate([g.edge_index for g in subgraphs], axis=1).astype(np.int64)
        self.edge_attr = np.concatenate([g.edge_attr for g in subgraphs]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.n)

    def batch(self, ids: np.ndarray) -> tuple[torch.Tensor, ...]:
        ids = np.asarray(ids, np.int64)
        n, e = self.n[ids], self.e[ids]
        offsets = np.cumsum(n) - n
        x = self.x[_ranges(self.node_ptr[ids], n)]
        edges = _ranges(self.edge_ptr[ids], e)
        ei = self.edge_index[:, edges] + np.repeat(offsets, e)
        ea = self.edge_attr[edges]
        return tuple(torch.from_numpy(a) for a in (x, ei, ea, offsets))


def _takes_edge_attr(model: nn.Module) -> bool:
    return "edge_attr" in inspect.signature(model.forward).parameters


def center_logits(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Logits of each graph's node 0 in a :meth:`Packed.batch` union (``[G, 2]``)."""
    x, ei, ea, centers = batch
    logits = model(x, ei, ea) if _takes_edge_attr(model) else model(x, ei)
    return logits[centers]


@torch.no_grad()
def score_gnn(
    model: nn.Module, subgraphs: Sequence[Any] | Packed, batch_size: int = 1024
) -> np.ndarray:
    """Fraud probability of node 0 of each subgraph (float64 ``[n]``), in batches.

    ``softmax(logits[0])[1]``, computed as ``sigmoid(l1 - l0)`` in float64 so scores
    near 1 keep their order (what the alert threshold is compared with).
    """
    packed = subgraphs if isinstance(subgraphs, Packed) else Packed(subgraphs)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(packed), batch_size):
        ids = np.arange(i, min(i + batch_size, len(packed)))
        out.append(fraud_probability(center_logits(model, packed.batch(ids))))
    model.train(was_training)
    return np.concatenate(out)


# -- the baseline's input: quantile codes --------------------------------------------------------


class QuantileBins:
    """Replace each tabular column by its quantile-bin code (at most ``bins`` + 1 values).

    ``HistGradientBoostingClassifier`` bins its input itself, but with sample or
    class weights scikit-learn (1.9) computes *weighted* percentiles per column,
    25x slower than the fit (17 s for 2,600 x 63 rows on this machine). Handing it
    at most ``max_bins`` distinct values per column makes it take them as they
    are: the same unweighted quantile bins it would use unweighted, and the
    class-weighted boosting at its usual speed. A scikit-learn transformer, so
    ``Pipeline([("bins", QuantileBins()), ("hgb", clf)])`` is the deployed model.

    Args:
        bins: Most bins per column (HGB's ``max_bins`` is 255).
    """

    def __init__(self, bins: int = 254) -> None:
        self.bins = bins

    def fit(self, x: np.ndarray, y: Any = None) -> QuantileBins:
        """Bin edges: midpoints between the distinct quantiles of each training column."""
        x = np.asarray(x, dtype=np.float64)
        q = np.linspace(0.0, 1.0, self.bins + 1)
        self.edges_ = []
        for col in x.T:
            v = np.unique(np.quantile(col, q) if np.unique(col).size > self.bins else col)
            self.edges_.append((v[:-1] + v[1:]) / 2.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``[n, T]`` float32 codes (``searchsorted`` of each column in its edges)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.edges_):
            raise ValueError(f"expected [n, {len(self.edges_)}] rows, got {x.shape}")
        cols = [np.searchsorted(e, c, side="right") for e, c in zip(self.edges_, x.T, strict=True)]
        return np.stack(cols, axis=1).astype(np.float32)

    def fit_transform(self, x: np.ndarray, y: Any = None) -> np.ndarray:
        return self.fit(x).transform(x)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"bins": self.bins}

    def set_params(self, **params: Any) -> QuantileBins:
        for k, v in params.items():
            setattr(self, k, v)
        return self
