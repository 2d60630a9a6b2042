"""Prune + INT8 through export_model and the CLI: sizes, gate, report, runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv

from edge_sdk import Runtime
from edge_sdk.errors import AccuracyError, ExportError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

F_IN, HIDDEN, C, N = 1000, 64, 4, 400


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = GCNConv(F_IN, HIDDEN)
        self.c2 = GCNConv(HIDDEN, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(F.dropout(self.c1(x, edge_index).relu(), 0.3, self.training), edge_index)


@pytest.fixture(scope="module")
def trained() -> tuple[Net, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = (rng.random((N, F_IN)) < 0.05).astype(np.float32)
    ei = rng.integers(0, N, (2, 1600))
    ei[:, :40] = ei[:, 40:80]  # duplicate edges
    teacher = rng.normal(size=(F_IN, C))
    y = (x @ teacher).argmax(1)
    idx = rng.permutation(N)
    masks = {k: np.zeros(N, bool) for k in ("train_mask", "val_mask", "mask")}
    masks["train_mask"][idx[:200]] = True
    masks["val_mask"][idx[200:300]] = True
    masks["mask"][idx[300:]] = True
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    xt, eit, yt = torch.from_numpy(x), torch.from_numpy(ei), torch.from_numpy(y)
    tm = torch.from_numpy(masks["train_mask"])
    for _ in range(100):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(xt, eit)[tm], yt[tm]).backward()
        opt.step()
    return model.eval(), {"x": x, "edge_index": ei, "y": y, **masks}


def test_int8_and_structured_pruning_shrink_and_hold_accuracy(trained, tmp_path) -> None:
    model, arrays = trained
    cfg = ExportConfig(
        name="net", prune="structured:0.5", fine_tune_epochs=30, int8=True, max_accuracy_drop=0.05
    )
    res = export_model(model, sample_from_arrays(arrays), tmp_path / "b", cfg)
    m = res.manifest
    c = m.compression
    assert set(c.sizes) == {"fp32", "pruned", "int8"}
    assert c.sizes["fp32"] / c.sizes["pruned"] > 1.6  # half the hidden channels (+ graph ops)
    assert c.sizes["fp32"] / c.sizes["int8"] > 6  # pruned + int8
    assert set(c.metrics) == {"fp32", "pruned", "int8"}
    assert c.metrics["int8"]["val"] >= c.metrics["fp32"]["val"] - 0.05
    assert c.pruning is not None and c.pruning["kind"] == "structured"
    assert c.quantization is not None and c.quantization["passed"] is True
    # The pruned FP32 ONNX really has 32 hidden channels.
    shapes = {
        tuple(i.dims) for i in onnx.load(str(res.bundle_dir / "model.onnx")).graph.initializer
    }
    assert any(HIDDEN // 2 in s and F_IN in s for s in shapes), shapes
    assert not any(HIDDEN in s and F_IN in s for s in shapes), shapes
    # Both precisions load and agree on most predictions.
    feeds = {"x": arrays["x"], "edge_index": arrays["edge_index"]}
    fp32 = Runtime.load(res.bundle_dir, precision="fp32").infer(feeds)["out"]
    int8_rt = Runtime.load(res.bundle_dir, precision="int8")
    assert int8_rt.describe()["precision"] == "int8"
    int8 = int8_rt.infer(feeds)["out"]
    assert (fp32.argmax(1) == int8.argmax(1)).mean() > 0.95
    assert [a.precision for a in m.artifacts] == ["fp32", "int8"]


def test_impossible_gate_fails_with_report(trained, tmp_path) -> None:
    model, arrays = trained
    cfg = ExportConfig(int8=True, max_accuracy_drop=0.0, max_rel_error=0.0)
    # Any INT8 change of a prediction on validation rows breaks a zero-drop gate,
    # so make one certain: an impossible gate is below the FP32 accuracy itself.
    cfg.max_accuracy_drop = -0.5  # bypasses __post_init__ on purpose: "impossible"
    with pytest.raises(AccuracyError) as exc:
        export_model(model, sample_from_arrays(arrays), tmp_path / "b", cfg)
    msg = str(exc.value)
    assert "tried" in msg.lower() or "attempt" in msg.lower()
    assert not (tmp_path / "b").exists()  # nothing half-written is left behind


def test_allow_accuracy_drop_keeps_and_reports(trained, tmp_path) -> None:
    model, arrays = trained
    cfg = ExportConfig(int8=True, allow_accuracy_drop=True)
    cfg.max_accuracy_drop = -0.5
    res = export_model(model, sample_from_arrays(arrays), tmp_path / "b", cfg)
    assert res.manifest.compression.quantization["passed"] is False
    int8_parity = next(p for p in res.manifest.parity if p.artifact == "onnx-int8")
    assert int8_parity.passed is False


def test_bad_options_are_refused() -> None:
    with pytest.raises(ExportError, match="calib_method"):
        ExportConfig(calib_method="magic")
    with pytest.raises(ExportError, match="--prune"):
        ExportConfig(fine_tune_epochs=5)
