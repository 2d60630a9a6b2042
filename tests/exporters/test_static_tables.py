"""Static form over neighbour tables, and the rule that picks the aggregation (issue #17).

A fixed graph's tables are folded into the artifact as constants (int32 ids,
uint8 masks): no ``ScatterElements``, a few bytes per edge instead of the
dense form's ``4·N²``, and the same outputs as PyG's own scatter code.
``aggregation='auto'`` takes tables unless the graph is small and dense
measures faster; the manifest and the progress output say which and why.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_models import gcn_gat_net
from torch import nn
from torch_geometric.nn import SAGEConv, global_max_pool, global_mean_pool

from edge_sdk import Runtime
from edge_sdk.errors import ExportError, UnsupportedModelError
from edge_sdk.export_config import cli_fields
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.lowering.tables import ConstantTables
from edge_sdk.exporters.lowering.tabulate import TABLE_CONVS, graph_tables
from edge_sdk.exporters.prepare import prepare
from edge_sdk.exporters.trace import trace_to_onnx

pytestmark = pytest.mark.requires_backend("onnxruntime")

F, C, N, E = 6, 3, 150, 600


def NodeNet() -> nn.Module:
    """GCN then multi-head GAT, node-level logits (tests/tiny_models.py)."""
    return gcn_gat_net(F, C)


class GraphNet(nn.Module):
    """SAGE (``raw`` table) then mean and max readouts over ``batch``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = SAGEConv(F, 16)
        self.head = nn.Linear(32, C)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        h = self.c1(x, edge_index).relu()
        return self.head(torch.cat([global_mean_pool(h, batch), global_max_pool(h, batch)], -1))


def _model(cls: type[nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls().eval()


def _graph(n: int = N, e: int = E, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, n, (2, e))
    ei[:, :4] = ei[:, 4:8]  # duplicate edges
    ei[:, 8] = 5  # a self loop (the loops table replaces it)
    ei[1, ei[1] == 7] = 3  # node 7 has no incoming edge
    ei[1, 100:140] = 11  # node 11: in-degree > 32, a wider class
    return rng.normal(size=(3, n, F)).astype(np.float32), ei


def _pyg(model: nn.Module, x: np.ndarray, ei: np.ndarray) -> np.ndarray:
    """The eager PyG model on the disjoint union of the B graphs (its scatter code)."""
    b, n, f = x.shape
    union = np.concatenate([ei + g * n for g in range(b)], axis=1)
    feeds = {"x": torch.from_numpy(x.reshape(b * n, f)), "edge_index": torch.from_numpy(union)}
    if isinstance(model, GraphNet):
        feeds["batch"] = torch.from_numpy(np.repeat(np.arange(b), n))
    with torch.no_grad():
        out = model(**feeds).numpy()
    return out if isinstance(model, GraphNet) else out.reshape(b, n, -1)


@pytest.mark.parametrize("cls", [NodeNet, GraphNet])
def test_tables_export_matches_pyg_without_scatter(tmp_path: Path, cls: type[nn.Module]) -> None:
    model = _model(cls)
    x, ei = _graph()
    said: list[str] = []
    res = export_model(
        model,
        sample_from_arrays({"x": x, "edge_index": ei}),
        tmp_path / "b",
        ExportConfig(name="tables", aggregation="tables"),
        progress=said.append,
    )
    graph = res.manifest.graph
    assert (graph.form, graph.num_nodes, graph.aggregation) == ("static", N, "tables")
    assert graph.aggregation_reason == "asked for (--aggregation tables)"
    assert f"aggregation: tables ({graph.aggregation_reason})" in said
    ops = set(res.manifest.artifacts[0].ops)
    assert "Gather" in ops and not {"ScatterElements", "ScatterND", "NonZero"} & ops
    assert res.manifest.parity[0].passed
    x5 = np.random.default_rng(9).normal(size=(5, N, F)).astype(np.float32)
    with Runtime.load(res.bundle_dir) as rt:
        got = rt.infer(x5)["out"]
    want = _pyg(model, x5, ei)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_tables_are_compact_and_far_below_dense(tmp_path: Path) -> None:
    x, ei = _graph()
    sample = sample_from_arrays({"x": x, "edge_index": ei})
    sizes, inits = {}, {}
    for aggregation in ("tables", "dense"):
        prepared = prepare(_model(NodeNet), [sample], "static", aggregation=aggregation)
        out = tmp_path / aggregation
        traced = trace_to_onnx(prepared, sample, ["out"], True, out)
        sizes[aggregation] = traced.size
        inits[aggregation] = onnx.load(str(out / "model.onnx")).graph.initializer
    # Dense folds two [N, N] float adjacencies (GCN's weights, GAT's edge counts).
    assert sizes["dense"] > 2 * 4 * N * N
    assert sizes["tables"] < sizes["dense"] / 5, sizes
    by_type: dict[int, int] = {}
    for t in inits["tables"]:
        if int(np.prod(t.dims)) > N:  # the tables, not the small shape constants
            by_type[t.data_type] = by_type.get(t.data_type, 0) + 1
    # Ids as int32 and masks as uint8; no int64 copy of a table folded in by the exporter.
    assert by_type.get(onnx.TensorProto.INT32, 0) >= 2
    assert by_type.get(onnx.TensorProto.UINT8, 0) >= 2
    assert onnx.TensorProto.INT64 not in by_type


MEASURED = re.compile(r"dense ([0-9.]+) ms, tables ([0-9.]+) ms")


def test_auto_times_dense_against_tables_on_small_graphs() -> None:
    x, ei = _graph(n=40, e=120)
    sample = sample_from_arrays({"x": x, "edge_index": ei})
    small = prepare(_model(NodeNet), [sample], "static", dense_threshold=40)
    found = MEASURED.search(small.aggregation_reason)
    assert found, small.aggregation_reason
    dense_ms, tables_ms = map(float, found.groups())
    assert dense_ms > 0 and tables_ms > 0
    assert small.aggregation == ("dense" if dense_ms < tables_ms else "tables")
    assert small.aggregation_reason.startswith("N=40 <= dense threshold 40; measured")

    large = prepare(_model(NodeNet), [sample], "static", dense_threshold=39)
    assert large.aggregation == "tables"
    assert large.aggregation_reason == "N=40 > dense threshold 39: not timed"


def test_layers_without_tables_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(TABLE_CONVS, SAGEConv)
    x, ei = _graph(n=20, e=60)
    sample = sample_from_arrays({"x": x, "edge_index": ei})
    for threshold, chosen in ((20, "dense"), (19, "scatter")):
        prepared = prepare(_model(GraphNet), [sample], "static", dense_threshold=threshold)
        assert prepared.aggregation == chosen
        assert prepared.aggregation_reason.startswith("no neighbour-table lowering (")
        assert "SAGEConv" in prepared.aggregation_reason
    with pytest.raises(UnsupportedModelError, match=r"aggregation 'tables':.*SAGEConv"):
        prepare(_model(GraphNet), [sample], "static", aggregation="tables")


def test_aggregation_option() -> None:
    assert ExportConfig().graph.aggregation == "auto"
    assert ExportConfig(aggregation="scatter").graph.aggregation == "scatter"
    assert ExportConfig().graph.dense_threshold == 256
    flags = {f.flat: f for f in cli_fields()}
    assert "aggregation" in flags and "dense_threshold" in flags
    with pytest.raises(ExportError, match="aggregation 'sparse': expected one of auto, dense"):
        ExportConfig(aggregation="sparse")


def test_ids_are_int64_where_stacked_ids_would_overflow_int32() -> None:
    tables = graph_tables(np.array([[0, 1, 2], [1, 2, 0]]), 3, ["raw"])
    small = ConstantTables(tables, 3)
    assert small.raw_index0.dtype == torch.int32 and small.raw_mask0.dtype == torch.uint8
    # 600,000 nodes x 4,096 stacked graphs pass 2**31: offsets would wrap in int32.
    assert ConstantTables(tables, 600_000).raw_index0.dtype == torch.int64
