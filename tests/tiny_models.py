"""The suite's tiny hand-made models, shared by conftest.py and the engine tests.

Imported by name (``from tiny_models import tiny_gcn``): tests/ is on
``sys.path`` because its conftest.py lives there. torch is imported inside
the builders, never at import time, so torch-free tests can import this.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TINY_GCN_NODES, TINY_GCN_FEATURES, TINY_GCN_CLASSES = 20, 8, 3


def tiny_gcn() -> Any:
    """A seeded 2-layer PyG GCN (deterministic weights, global RNG untouched)."""
    import torch
    from torch_geometric.nn import GCNConv

    class TinyGCN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = GCNConv(TINY_GCN_FEATURES, 16)
            self.conv2 = GCNConv(16, TINY_GCN_CLASSES)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            return self.conv2(self.conv1(x, edge_index).relu(), edge_index)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TinyGCN().eval()


def gcn_gat_net(features: int, classes: int) -> Any:
    """GCN (``loops`` table) -> LayerNorm -> 2-head GAT -> linear head, node-level logits."""
    import torch
    from torch import nn
    from torch_geometric.nn import GATConv, GCNConv

    class GcnGatNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = GCNConv(features, 16)
            self.norm = nn.LayerNorm(16)
            self.c2 = GATConv(16, 4, heads=2)
            self.head = nn.Linear(8, classes)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            h = self.norm(self.c1(x, edge_index).relu())
            return self.head(self.c2(h, edge_index))

    return GcnGatNet()


def tiny_gcn_arrays(batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Sample arrays for :func:`tiny_gcn`: one graph ``x [N, F]``, or ``x [batch, N, F]``."""
    rng = np.random.default_rng(seed)
    shape = (
        (TINY_GCN_NODES, TINY_GCN_FEATURES)
        if batch is None
        else (
            batch,
            TINY_GCN_NODES,
            TINY_GCN_FEATURES,
        )
    )
    return {
        "x": rng.standard_normal(shape, dtype=np.float32),
        "edge_index": rng.integers(0, TINY_GCN_NODES, size=(2, 3 * TINY_GCN_NODES)),
    }


DETECTOR_SENSORS, DETECTOR_WINDOW = 4, 5
DETECTOR_LABELS = ["normal"] + [f"f{i}" for i in range(1, DETECTOR_SENSORS + 1)]


def tiny_detector() -> Any:
    """A fault detector whose outputs a test controls from its input.

    ``forward(x [B, N, F]) -> (logits [B, 1 + N], score [B])``: the anomaly
    score is the mean of the window; class 0 (normal) has logit 0 and class
    ``i + 1`` the mean of sensor ``i``, so the loudest sensor names the fault.
    """
    import torch

    class TinyDetector(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            per_sensor = x.mean(2)
            logits = torch.cat([torch.zeros_like(per_sensor[:, :1]), per_sensor], dim=1)
            return logits, x.mean((1, 2))

    return TinyDetector().eval()


def tiny_detector_arrays(batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Sample windows ``x [batch, N, F]`` for :func:`tiny_detector`."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, DETECTOR_SENSORS, DETECTOR_WINDOW), dtype=np.float32)}
