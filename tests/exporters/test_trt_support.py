"""The static TensorRT ONNX-parser check (no tensorrt needed): real exports and hand-made graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_sdk.exporters.targets.trt_support import (
    DENSE_HINT,
    SUPPORTED_OPS,
    check_tensorrt_support,
)

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")


class TwoConv(torch.nn.Module):
    """Two PyG convolutions, node-level output: the shape of the Cora models, small."""

    def __init__(self, conv: type, f: int = 8, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.c1, self.c2 = conv(f, hidden), conv(hidden, classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


def export(
    conv_name: str, form: str, out: Path, int8: bool = False, aggregation: str = "auto"
) -> Path:
    from torch_geometric.nn import GATConv, GCNConv

    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    conv = {"gcn": GCNConv, "gat": GATConv}[conv_name]
    rng = np.random.default_rng(0)
    x_shape = (4, 20, 8) if form == "static" else (20, 8)
    sample = sample_from_arrays(
        {
            "x": rng.standard_normal(x_shape, dtype=np.float32),
            "edge_index": rng.integers(0, 20, size=(2, 60)),
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TwoConv(conv).eval()
    cfg = ExportConfig(form=form, int8=int8, aggregation=aggregation)
    export_model(model, sample, out, cfg)
    return out


@pytest.fixture(scope="module")
def gcn_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "gcn_dyn"
    return export("gcn", "dynamic", out, int8=True, aggregation="scatter")


@pytest.fixture(scope="module")
def gat_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(
        "gat", "dynamic", tmp_path_factory.mktemp("trt") / "gat_dyn", aggregation="scatter"
    )


@pytest.fixture(scope="module")
def gcn_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dynamic GCN over neighbour-table inputs (the default aggregation), with its QDQ model."""
    return export("gcn", "dynamic", tmp_path_factory.mktemp("trt") / "gcn_tab", int8=True)


@pytest.fixture(scope="module")
def gat_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export("gat", "dynamic", tmp_path_factory.mktemp("trt") / "gat_tab")


@pytest.fixture(scope="module")
def gcn_static_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "gcn_static_tab"
    return export("gcn", "static", out, aggregation="tables")


@pytest.fixture(scope="module")
def gcn_dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export("gcn", "static", tmp_path_factory.mktemp("trt") / "gcn_dense", int8=True)


# -- real exports ------------------------------------------------------------------------
def test_dynamic_gcn_scatter_add_is_flagged(gcn_dynamic: Path) -> None:
    for name, precision in [("model.onnx", "fp16"), ("model.int8.onnx", "int8")]:
        report = check_tensorrt_support(gcn_dynamic / name, precision)
        assert not report.ok
        assert report.blocking_ops == ["ScatterElements(reduction=add)"]
        scatters = [i for i in report.errors if i.op == "ScatterElements(reduction=add)"]
        assert len(scatters) == 3  # two GCN layers' aggregation + the degree normalisation
        assert all(i.avoid == DENSE_HINT for i in report.errors)
        assert "ScatterElements(reduction=add) x3" in report.message()
        assert "#3650" in report.message() and DENSE_HINT in report.message()
        # NonZero (self-loop removal) is supported since TensorRT 8.5: a warning only.
        assert [i.op for i in report.warnings] == ["NonZero"]


def test_dynamic_gat_scatter_max_and_min_are_flagged(gat_dynamic: Path) -> None:
    report = check_tensorrt_support(gat_dynamic / "model.onnx", "fp32")
    assert not report.ok
    assert set(report.blocking_ops) == {
        "ScatterElements(reduction=add)",
        "ScatterElements(reduction=max)",
        "ScatterElements(reduction=min)",
    }


def test_allow_plugins_downgrades_scatter_to_warning(gcn_dynamic: Path) -> None:
    report = check_tensorrt_support(gcn_dynamic / "model.onnx", "fp16", allow_plugins=True)
    assert report.ok
    assert [i.op for i in report.warnings].count("ScatterElements(reduction=add)") == 3


def test_table_models_have_no_scatter_and_pass(
    gcn_tables: Path, gat_tables: Path, gcn_static_tables: Path
) -> None:
    """Neighbour-table aggregation (static constants or dynamic inputs) is made of
    core TensorRT layers: no scatter at all, no plugin, no warning."""
    for path, extra in [
        (gcn_tables, {"ReduceSum"}),
        (gat_tables, {"Exp", "ReduceMax"}),
        (gcn_static_tables, {"ReduceSum"}),
    ]:
        for precision in ("fp32", "fp16"):
            report = check_tensorrt_support(path / "model.onnx", precision)
            assert report.ok, report.message()
            assert report.scatter_ops == 0
            assert report.issues == []
            assert {"Gather", *extra} <= set(report.ops)
            assert report.to_dict()["scatter_ops"] == 0
    int8 = check_tensorrt_support(gcn_tables / "model.int8.onnx", "int8")
    assert int8.ok, int8.message()
    assert int8.scatter_ops == 0 and "QuantizeLinear" in int8.ops


def test_scatter_ops_are_counted(gcn_dynamic: Path) -> None:
    assert check_tensorrt_support(gcn_dynamic / "model.onnx", allow_plugins=True).scatter_ops == 3


def test_dense_static_model_passes_at_every_precision(gcn_dense: Path) -> None:
    for name, precision in [
        ("model.onnx", "fp32"),
        ("model.onnx", "fp16"),
        ("model.int8.onnx", "int8"),
    ]:
        report = check_tensorrt_support(gcn_dense / name, precision)
        assert report.ok, report.message()
        assert report.issues == []
        assert "ScatterElements" not in report.ops and "MatMul" in report.ops
        assert set(report.ops) <= SUPPORTED_OPS


def test_ort_qdq_model_is_symmetric(gcn_dense: Path) -> None:
    """The exporter's QDQ model (ORT quantize_static) has int8 zero points of 0."""
    model = onnx.load(str(gcn_dense / "model.int8.onnx"))
    zps = [
        numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("zero_point")
    ]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_int8_without_qdq_is_flagged(gcn_dense: Path) -> None:
    report = check_tensorrt_support(gcn_dense / "model.onnx", "int8")
    assert not report.ok and report.blocking_ops == ["no Q/DQ"]


# -- hand-made graphs -------------------------------------------------------------------
def _qdq_model(zero_point: np.ndarray) -> onnx.ModelProto:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zp = numpy_helper.from_array(zero_point, "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq0"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [scale, zp],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_asymmetric_qdq_is_flagged() -> None:
    report = check_tensorrt_support(_qdq_model(np.array(128, np.uint8)), "int8")
    assert not report.ok
    assert {i.node for i in report.errors} == {"q0", "dq0"}
    reasons = " ".join(i.reason for i in report.errors)
    assert "zero point [128]" in reasons and "UINT8" in reasons
    # A non-zero signed zero point is asymmetric too.
    report = check_tensorrt_support(_qdq_model(np.array(3, np.int8)), "int8")
    assert not report.ok and "zero point [3]" in report.errors[0].reason


def test_symmetric_qdq_passes() -> None:
    report = check_tensorrt_support(_qdq_model(np.array(0, np.int8)), "int8")
    assert report.ok, report.message()


def _one_node(
    op: str, inputs: list[tuple[str, int, list[int]]], opset: int = 18, **attrs: object
) -> onnx.ModelProto:
    node = helper.make_node(op, [n for n, _, _ in inputs], ["y"], name="n0", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


SCATTER_INPUTS = [
    ("data", TensorProto.FLOAT, [4, 2]),
    ("idx", TensorProto.INT64, [6, 2]),
    ("upd", TensorProto.FLOAT, [6, 2]),
]


def test_scatternd_reduction_is_rejected_and_plain_scatter_passes() -> None:
    nd = [
        ("data", TensorProto.FLOAT, [4, 2]),
        ("idx", TensorProto.INT64, [6, 1]),
        ("upd", TensorProto.FLOAT, [6, 2]),
    ]
    report = check_tensorrt_support(_one_node("ScatterND", nd, reduction="add"), "fp32")
    assert report.blocking_ops == ["ScatterND(reduction=add)"]
    # allow_plugins does not help: the parser rejects it outright.
    nd_report = check_tensorrt_support(
        _one_node("ScatterND", nd, reduction="add"), "fp32", allow_plugins=True
    )
    assert not nd_report.ok
    assert check_tensorrt_support(_one_node("ScatterND", nd), "fp32").ok
    assert check_tensorrt_support(_one_node("ScatterElements", SCATTER_INPUTS), "fp32").ok


def test_unsupported_custom_and_out_of_range_opset() -> None:
    unique = _one_node("Unique", [("x", TensorProto.FLOAT, [4])])
    assert check_tensorrt_support(unique, "fp32").blocking_ops == ["Unique"]
    custom = _one_node("Relu", [("x", TensorProto.FLOAT, [4])])
    custom.graph.node[0].domain = "com.microsoft"
    assert check_tensorrt_support(custom, "fp32").blocking_ops == ["com.microsoft.Relu"]
    new = _one_node("Relu", [("x", TensorProto.FLOAT, [4])], opset=21)
    report = check_tensorrt_support(new, "fp32")
    assert report.blocking_ops == ["opset 21"] and report.opset == 21


def test_reduce_with_runtime_axes_is_flagged() -> None:
    model = _one_node(
        "ReduceSum", [("x", TensorProto.FLOAT, [4, 3]), ("axes", TensorProto.INT64, [1])]
    )
    assert check_tensorrt_support(model, "fp32").blocking_ops == ["ReduceSum"]
