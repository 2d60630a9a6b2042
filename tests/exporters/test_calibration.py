"""Calibration items cover the graph sizes a device will see."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.nn import GCNConv

from edge_sdk.exporters import sample_from_arrays
from edge_sdk.exporters.calibration import calibration_feeds, induced_subgraph
from edge_sdk.exporters.prepare import prepare


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = GCNConv(4, 2)

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


def test_big_graph_adds_smaller_neighbourhoods() -> None:
    rng = np.random.default_rng(0)
    n = 300
    ei = rng.integers(0, n, (2, 1200))
    sample = sample_from_arrays({"x": rng.normal(size=(n, 4)), "edge_index": ei})
    prepared = prepare(Net(), [sample])
    items = calibration_feeds(prepared, [sample], limit=32, min_nodes=32)
    sizes = [it["x"].shape[0] for it in items]
    assert sizes == [300, 150, 75, 37]
    for it in items:
        assert set(it) == {"x", "edge_index"}
        assert it["edge_index"].max() < it["x"].shape[0]
        assert it["edge_index"].shape[1] > 0  # BFS neighbourhoods keep their edges
    assert len(calibration_feeds(prepared, [sample], limit=2)) == 2


def test_induced_subgraph_renumbers_and_keeps_batch_contiguous() -> None:
    feeds = {
        "x": np.arange(12, dtype=np.float32).reshape(6, 2),
        "edge_index": np.array([[0, 1, 4, 5, 2], [1, 4, 5, 0, 3]]),
        "batch": np.array([0, 0, 1, 1, 2, 2]),
    }
    sub = induced_subgraph(feeds, np.array([1, 4, 5]))
    np.testing.assert_array_equal(sub["x"], feeds["x"][[1, 4, 5]])
    np.testing.assert_array_equal(sub["edge_index"], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(sub["batch"], [0, 1, 1])


def test_static_batches_are_split_per_graph() -> None:
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    x = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    sample = sample_from_arrays({"x": x})
    items = calibration_feeds(prepare(Plain(), [sample]), [sample], limit=10)
    assert [it["x"].shape for it in items] == [(3, 5, 4), (1, 5, 4), (1, 5, 4), (1, 5, 4)]
