"""A Tennessee-Eastman-size sensor graph model: 52 sensors, a window of 20 samples each.

The plant's 52 measured and manipulated variables are the graph's nodes; each
node's features are its last ``window`` readings. Two graph layers of hidden 64
and a mean-pooled 22-class head (normal + 21 faults) make about 1.3 MFLOP per
window: the size the node, serving and benchmark code is measured on.

The fixed sensor graph here is a stand-in (a ring of neighbouring sensors plus
deterministic chords); the TEP sample's adaptive-graph model learns its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_mean_pool

from edge_sdk.exporters import ExportConfig, ExportResult, export_model, sample_from_arrays

NUM_SENSORS, WINDOW, HIDDEN, NUM_CLASSES = 52, 20, 64, 22


class SensorGCN(nn.Module):
    """Windows of every sensor in, one fault class per window out."""

    def __init__(self, window: int = WINDOW, hidden: int = HIDDEN, classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = GCNConv(window, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        h = self.conv1(x, edge_index).relu()
        h = self.conv2(h, edge_index).relu()
        return self.head(global_mean_pool(h, batch))


def sensor_graph(num_sensors: int = NUM_SENSORS, chords: int = 26, seed: int = 0) -> np.ndarray:
    """Undirected ``edge_index`` [2, E]: a ring of sensors plus ``chords`` fixed random links."""
    rng = np.random.default_rng(seed)
    ring = np.arange(num_sensors)
    src = np.concatenate([ring, rng.integers(0, num_sensors, chords)])
    dst = np.concatenate([(ring + 1) % num_sensors, rng.integers(0, num_sensors, chords)])
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)


def export_sensor_bundle(
    out: str | Path,
    version: str = "1.0.0",
    seed: int = 0,
    int8: bool = False,
    name: str = "tep-sensor-gcn",
    num_sensors: int = NUM_SENSORS,
    profiles: list[str] | None = None,
) -> ExportResult:
    """Export an (untrained, seeded) sensor model to a static-topology bundle.

    Args:
        out: Bundle directory to write.
        version: Model version recorded in the manifest.
        seed: Weight and sample seed; different seeds give different outputs.
        int8: Also write an INT8 artifact.
        name: Model name in the manifest.
        num_sensors: Graph nodes (sensors) of the model.
        profiles: Device profiles to compile for (default: the exporter's,
            ``generic-x86``: an ONNX Runtime bundle).

    Returns:
        The export result (bundle path, manifest).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SensorGCN().eval()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, num_sensors, WINDOW), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_graph(num_sensors)})
    cfg = ExportConfig(
        name=name,
        version=version,
        form="static",
        labels=["normal"] + [f"fault_{i}" for i in range(1, NUM_CLASSES)],
        int8=int8,
    )
    if profiles is not None:
        cfg = dataclasses.replace(cfg, profiles=profiles)
    return export_model(model, sample, out, cfg)
