"""INT8 post-training quantisation of exported models (ONNX Runtime QDQ).

Models are small real exports (GCN 500 -> 64 -> 4) trained on a synthetic
graph whose labels come from a fixed teacher, so accuracy means something.
INT8 output tolerance on an unseen graph (duplicate edges included): relative
error ``||q - ref|| / ||ref||`` <= 0.05, the default ``max_rel_error``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch_geometric.nn import GCNConv

from edge_sdk.errors import AccuracyError, ExportError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.quantize import (
    CalibMethod,
    EvalCase,
    QuantConfig,
    QuantReport,
    quantize_int8,
)

N, F, HIDDEN, C = 400, 500, 64, 4
INT8_REL_TOL = 0.05


class Net(nn.Module):
    """GCN then a linear head; ``outlier`` scales one hidden channel by 1e4 (head compensates)."""

    def __init__(self, outlier: bool = False) -> None:
        super().__init__()
        self.conv = GCNConv(F, HIDDEN)
        self.head = nn.Linear(HIDDEN, C)
        self.register_buffer("scale", torch.ones(HIDDEN))
        self.outlier = outlier

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x, edge_index).relu() * self.scale)

    def make_outlier(self) -> None:
        # Same function in FP32, but the head's input range is set by channel 0 alone.
        with torch.no_grad():
            self.scale[0] = 1e4
            self.head.weight[:, 0] /= 1e4


def _graph(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planted classes: class-specific sparse features, mostly same-class edges."""
    prototypes = np.random.default_rng(7).random((C, F)) < 0.05  # the fixed teacher
    y = rng.integers(0, C, n)
    x = ((rng.random((n, F)) < 0.02) | (prototypes[y] & (rng.random((n, F)) < 0.15))).astype(
        np.float32
    )
    src = rng.integers(0, n, 3 * n)
    same = rng.random(3 * n) < 0.6
    dst = np.where(
        same, [rng.choice(np.flatnonzero(y == y[s])) for s in src], rng.integers(0, n, 3 * n)
    )
    ei = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], 1).astype(np.int64)
    return x, ei, y


def _trained(outlier: bool = False) -> tuple[Net, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, ei, y = _graph(rng, N)
    split = rng.permutation(N)
    masks = {k: np.zeros(N, bool) for k in ("train_mask", "val_mask", "mask")}
    masks["train_mask"][split[:200]] = True
    masks["val_mask"][split[200:300]] = True
    masks["mask"][split[300:]] = True
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    xt, et, yt = torch.from_numpy(x), torch.from_numpy(ei), torch.from_numpy(y)
    train = torch.from_numpy(masks["train_mask"])
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt, et)[train], yt[train]).backward()
        opt.step()
    model.eval()
    if outlier:
        model.make_outlier()
    return model, {"x": x, "edge_index": ei, "y": y, **masks}


class Exported:
    """One FP32 export plus what the quantiser needs."""

    def __init__(self, tmp: Path, outlier: bool) -> None:
        self.model, self.arrays = _trained(outlier)
        sample = sample_from_arrays(self.arrays)
        # Scatter: these tests feed (x, edge_index) to the ONNX model directly.
        cfg = ExportConfig(output_names=["logits"], aggregation="scatter")
        export_model(self.model, sample, tmp / "bundle", cfg)
        self.fp32 = tmp / "bundle" / "model.onnx"
        self.tmp = tmp
        feeds = {"x": self.arrays["x"], "edge_index": self.arrays["edge_index"]}
        self.feeds = feeds
        ref = self.reference(feeds)
        self.case = EvalCase(feeds, {"logits": ref}, sample.labels, sample.val_mask, sample.mask)
        # Calibration: the full graph plus smaller induced subgraphs (sizes differ).
        self.calib = [feeds] + [_induced(feeds, k) for k in (200, 100, 50)]

    def reference(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return self.model(*(torch.from_numpy(feeds[k]) for k in ("x", "edge_index"))).numpy()

    def quantize(self, name: str, config: QuantConfig, cases: list[EvalCase] | None = None):
        out = self.tmp / name
        report = quantize_int8(self.fp32, out, self.calib, cases or [self.case], ["logits"], config)
        return out, report


def _induced(feeds: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    ei = feeds["edge_index"]
    keep = (ei[0] < k) & (ei[1] < k)
    return {"x": feeds["x"][:k], "edge_index": ei[:, keep]}


@pytest.fixture(scope="module")
def gcn(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return Exported(tmp_path_factory.mktemp("gcn"), outlier=False)


@pytest.fixture(scope="module")
def gcn_int8(gcn: Exported) -> tuple[Path, QuantReport]:
    return gcn.quantize("model.int8.onnx", QuantConfig())


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], feeds)[0]


def _rel(q: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(q - ref) / np.linalg.norm(ref))


def test_int8_is_small_symmetric_and_per_channel(
    gcn: Exported, gcn_int8: tuple[Path, QuantReport]
) -> None:
    path, report = gcn_int8
    assert gcn.fp32.stat().st_size >= 3 * path.stat().st_size
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert {n.op_type for n in qdq} == {"QuantizeLinear", "DequantizeLinear"}
    for node in qdq:  # symmetric: every zero point is 0 (TensorRT's explicit INT8 needs it)
        if len(node.input) > 2:
            assert not inits[node.input[2]].any(), node.name
    weights = {n.name: n for n in qdq if n.input[0].endswith("weight_quantized")}
    first = next(n for k, n in weights.items() if k.startswith("model.conv.lin.weight"))
    assert inits[first.input[1]].shape == (HIDDEN,)  # one scale per output channel
    assert any(a.name == "axis" for a in first.attribute)
    assert inits[first.input[0]].dtype == np.int8
    assert len(report.quantized_ops) == 2  # the GCN's and the head's Gemm
    ops = {f["op"]: f["reason"] for f in report.stayed_float}
    assert ops["ScatterElements"] == "not quantisable op type"
    assert report.calibration_items == 4
    assert report.calibration_sizes == [N, 200, 100, 50]


def test_graph_outputs_stay_float(gcn: Exported, gcn_int8: tuple[Path, QuantReport]) -> None:
    # ORT quantises the head's output; a Q/DQ pair on a graph output only rounds
    # what the caller gets to the output's scale, so the exporter removes it.
    path, _ = gcn_int8
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer["logits"].op_type == "Gemm"
    used = {i for n in model.graph.node for i in n.input}
    assert all(t.name in used for t in model.graph.initializer)  # no orphaned scales
    logits = _run(path, gcn.feeds)
    # with a quantised output every logit would be a multiple of one scale: 1000 logits
    # would take only a few hundred distinct values
    assert len(np.unique(np.round(logits, 6))) > 0.9 * logits.size


def test_accuracy_within_gate_and_outputs_within_tolerance(
    gcn: Exported, gcn_int8: tuple[Path, QuantReport]
) -> None:
    path, report = gcn_int8
    assert report.passed and len(report.tried) == 1
    base = gcn.case.reference_metric
    assert base is None  # computed from the reference outputs
    ref_acc = (gcn.case.reference["logits"].argmax(1) == gcn.arrays["y"])[gcn.arrays["val_mask"]]
    assert report.decision_metric is not None and report.report_metric is not None
    assert ref_acc.mean() > 0.8  # the teacher is learnable: accuracy means something
    assert report.decision_metric >= ref_acc.mean() - 0.01
    # An unseen graph with duplicate edges (and a self-loop) still matches PyTorch.
    x, ei, _ = _graph(np.random.default_rng(3), 150)
    ei = np.concatenate([ei, ei[:, :100], np.array([[5], [5]])], 1)
    feeds = {"x": x, "edge_index": ei}
    assert _rel(_run(path, feeds), gcn.reference(feeds)) <= INT8_REL_TOL
    assert report.rel_error["logits"] <= INT8_REL_TOL


def test_impossible_gate_raises_listing_attempts(gcn: Exported) -> None:
    with pytest.raises(AccuracyError) as err:
        gcn.quantize("never.onnx", QuantConfig(max_accuracy_drop=-1))
    message = str(err.value)
    assert "attempt 1: all 2 MatMul/Gemm/Conv INT8" in message
    assert "attempt 2: float [" in message and "accuracy" in message
    assert not (gcn.tmp / "never.onnx").exists()
    out, report = gcn.quantize(
        "best.onnx", QuantConfig(max_accuracy_drop=-1, allow_accuracy_drop=True)
    )
    assert not report.passed and len(report.tried) == 2 and out.is_file()
    assert not any(t["passed"] for t in report.tried)


def test_impossible_gate_without_labels(gcn: Exported) -> None:
    unlabelled = EvalCase(gcn.feeds, gcn.case.reference)
    with pytest.raises(AccuracyError, match=r"(?s)relative output error <= 0 .*attempt 2"):
        gcn.quantize("never.onnx", QuantConfig(max_rel_error=0), [unlabelled])
    _, report = gcn.quantize("ok.onnx", QuantConfig(max_rel_error=INT8_REL_TOL), [unlabelled])
    assert report.passed and report.decision_metric is None


def test_sensitive_node_falls_back_to_float(tmp_path: Path) -> None:
    outlier = Exported(tmp_path, outlier=True)
    out, report = outlier.quantize("model.int8.onnx", QuantConfig())
    assert len(report.tried) >= 2
    assert not report.tried[0]["passed"] and report.tried[-1]["passed"]
    assert report.passed
    sensitive = [f for f in report.stayed_float if f["reason"].startswith("sensitivity")]
    assert [f["op"] for f in sensitive] == ["Gemm"]
    assert sensitive[0]["node"] in report.tried[-1]["float_nodes"]
    # The node kept float is the head (it reads the outlier channel); the GCN's stays INT8.
    model = onnx.load(str(out))
    head = next(n for n in model.graph.node if n.name == sensitive[0]["node"])
    assert "model.head.weight" in head.input
    assert len(report.quantized_ops) == 1


@pytest.mark.parametrize("method", list(CalibMethod))
def test_each_calibration_method(gcn: Exported, method: CalibMethod) -> None:
    _, report = gcn.quantize(f"{method}.onnx", QuantConfig(method=method, calibration=3))
    assert report.method == method.value and report.passed
    assert report.calibration_sizes == [N, 200, 100]


def test_percentile_sets_how_much_of_an_outlier_the_ranges_keep(gcn: Exported) -> None:
    """A lower percentile clips the calibration graphs' extreme activations: smaller scales."""

    def scales(percentile: float) -> dict[str, float]:
        cfg = QuantConfig(method=CalibMethod.PERCENTILE, calibration=3, percentile=percentile)
        path, _ = gcn.quantize(f"p{percentile}.onnx", cfg)
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        inputs = {i.name for i in model.graph.input}  # sparse bag-of-words x: 90 % of it is 0
        q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        return {n.input[0]: float(inits[n.input[1]]) for n in q if n.input[0] not in inputs}

    wide, narrow = scales(99.999), scales(90.0)
    assert wide.keys() == narrow.keys() and len(wide) >= 2  # the hidden activations
    assert all(narrow[k] < 0.8 * wide[k] for k in wide), (wide, narrow)


def test_config_is_validated() -> None:
    assert QuantConfig(method="entropy").method is CalibMethod.ENTROPY  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="minmax, percentile, entropy"):
        QuantConfig(method="kl")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="calibration"):
        QuantConfig(calibration=0)
    with pytest.raises(ExportError, match=r"percentile must be in \(0, 100\]"):
        QuantConfig(percentile=0.0)


def test_mismatched_names_and_missing_data_are_errors(gcn: Exported) -> None:
    with pytest.raises(ExportError, match=r"output\(s\) \['probs'\] are not in the model"):
        quantize_int8(gcn.fp32, gcn.tmp / "x.onnx", gcn.calib, [gcn.case], ["probs"], QuantConfig())
    no_edges = EvalCase({"x": gcn.feeds["x"]}, gcn.case.reference)
    with pytest.raises(ExportError, match=r"lacks input\(s\) \['edge_index'\]"):
        quantize_int8(
            gcn.fp32, gcn.tmp / "x.onnx", gcn.calib, [no_edges], ["logits"], QuantConfig()
        )
    with pytest.raises(ExportError, match="at least one calibration graph"):
        quantize_int8(gcn.fp32, gcn.tmp / "x.onnx", [], [gcn.case], ["logits"], QuantConfig())


def test_int8_export_leaves_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ORT's symbolic shape inference fails on a pooled static GCN and dumps
    # sym_shape_infer_temp.onnx + <uuid>.data into the current directory.
    from torch_geometric.nn import global_mean_pool

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = GCNConv(6, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x, edge_index, batch):
            return self.head(global_mean_pool(self.conv(x, edge_index).relu(), batch))

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rng = np.random.default_rng(0)
    ring = np.arange(10)
    sample = sample_from_arrays(
        {
            "x": rng.standard_normal((4, 10, 6), dtype=np.float32),
            "edge_index": np.stack([ring, (ring + 1) % 10]),
        }
    )
    torch.manual_seed(0)
    cfg = ExportConfig(name="pooled", form="static", int8=True, max_rel_error=1.0)
    export_model(Pooled().eval(), sample, tmp_path / "b", cfg)
    assert sorted(p.name for p in cwd.iterdir()) == []
