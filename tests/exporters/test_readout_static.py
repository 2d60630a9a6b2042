"""Static-form readouts lower to dense reductions (``exporters/lowering/readout.py``).

PyG pools with a scatter, which exports as ``ScatterElements`` with a
reduction (refused by onnx2tf, a no-INT8 plugin in TensorRT). In the static
form the exported graph must have no Scatter op at all and still match PyG's
own (scatter) computation on the same graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.requires_backend("onnxruntime")


def _pools_model() -> Any:
    import torch
    from torch_geometric.nn import GCNConv, global_add_pool, global_max_pool, global_mean_pool

    class Pools(torch.nn.Module):
        """Max, sum and mean readouts side by side."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = GCNConv(6, 8)
            self.head = torch.nn.Linear(24, 3)

        def forward(
            self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
        ) -> torch.Tensor:
            h = self.conv(x, edge_index).relu()
            pooled = [global_max_pool(h, batch), global_add_pool(h, batch)]
            return self.head(torch.cat([*pooled, global_mean_pool(h, batch)], -1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Pools().eval()


def _pyg_reference(model: Any, x: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
    """The eager PyG model on the disjoint union of the B graphs (its scatter readout)."""
    import torch

    b, n, f = x.shape
    ei = np.concatenate([edge_index + g * n for g in range(b)], axis=1)
    batch = np.repeat(np.arange(b), n)
    with torch.no_grad():
        out = model(
            torch.from_numpy(x.reshape(b * n, f)),
            torch.from_numpy(ei),
            torch.from_numpy(batch),
        )
    return out.numpy()


def _export_static(model: Any, x: np.ndarray, edge_index: np.ndarray, out: Path) -> Path:
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    sample = sample_from_arrays({"x": x, "edge_index": edge_index})
    return export_model(model, sample, out, ExportConfig(form="static")).bundle_dir


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _run(bundle: Path, x: np.ndarray) -> np.ndarray:
    from edge_sdk.runtime import Runtime

    with Runtime.load(bundle, backend="onnxruntime") as rt:
        return rt.infer(x)["out"]


def test_sensor_model_readout_is_dense(sensor_model: Any, tmp_path: Path) -> None:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sensor_model.SensorGCN().eval()
    edge_index = sensor_model.sensor_graph()
    x = np.random.default_rng(0).standard_normal((3, 52, 20), dtype=np.float32)
    bundle = _export_static(model, x, edge_index, tmp_path / "sensor.bundle")
    ops = _op_types(bundle / "model.onnx")
    assert not {op for op in ops if op.startswith("Scatter")}, sorted(ops)
    assert "ReduceMean" in ops or "ReduceSum" in ops
    other = np.random.default_rng(5).standard_normal((5, 52, 20), dtype=np.float32)
    for batch in (x, other):
        got = _run(bundle, batch)
        np.testing.assert_allclose(got, _pyg_reference(model, batch, edge_index), atol=1e-5)


def test_max_and_add_pool_lower_densely(tmp_path: Path) -> None:
    model = _pools_model()
    n = 10
    ring = np.arange(n)
    edge_index = np.stack(
        [np.concatenate([ring, (ring + 1) % n]), np.concatenate([(ring + 1) % n, ring])]
    ).astype(np.int64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, n, 6), dtype=np.float32)
    bundle = _export_static(model, x, edge_index, tmp_path / "pools.bundle")
    ops = _op_types(bundle / "model.onnx")
    assert not {op for op in ops if op.startswith("Scatter")}, sorted(ops)
    assert "ReduceMax" in ops
    for batch in (x, rng.standard_normal((1, n, 6), dtype=np.float32)):
        got = _run(bundle, batch)
        ref = _pyg_reference(model, batch, edge_index)
        assert got.shape == ref.shape == (batch.shape[0], 3)
        np.testing.assert_allclose(got, ref, atol=1e-5)
