"""The dynamic form over neighbour tables, exported and run through the Runtime.

Each model is exported once (ONNX Runtime and OpenVINO CPU artifacts, two padding
buckets) and run on graphs it never saw: 1 to 2,000 nodes, zero edges, duplicate
edges, self loops, isolated nodes; on engines taking any shape and, with the
backend told it needs static shapes, padded to a bucket's fixed table shapes. The
artifacts take ``x`` (``edge_attr``) and the tables; ``edge_index`` and ``batch``
stay the user's request, turned into tables by the runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    SAGEConv,
    global_add_pool,
)
from torch_geometric.utils import degree

from edge_sdk import Bucket, Runtime
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ExportError, InvalidInputError, UnsupportedModelError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.prepare import prepare
from edge_sdk.parity import verify_bundle

pytestmark = [pytest.mark.requires_backend("onnxruntime"), pytest.mark.requires_backend("openvino")]

F, H, C, D = 6, 8, 3, 2
ATOL = 1e-4
BUCKETS = [
    Bucket(max_nodes=32, max_edges=128, max_graphs=4),
    Bucket(max_nodes=2048, max_edges=8192, max_graphs=8),
]


class Node(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "gcn":
            self.c1, self.c2 = GCNConv(F, H), GCNConv(H, C)
        elif kind == "sage":
            self.c1, self.c2 = SAGEConv(F, H), SAGEConv(H, C, aggr="max")
        else:
            self.c1, self.c2 = GATConv(F, H // 2, heads=2), GATConv(H, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


class GinPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = GINConv(nn.Sequential(nn.Linear(F, H), nn.ReLU(), nn.Linear(H, H)))
        self.head = nn.Linear(H, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> Any:
        return self.head(global_add_pool(self.c1(x, edge_index).relu(), batch))


class EdgeAttn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = GATv2Conv(F, H // 2, heads=2, edge_dim=D)
        self.head = nn.Linear(H, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> Any:
        return self.head(self.c1(x, edge_index, edge_attr).relu())


MODELS = ["gcn", "sage", "gin_pool", "gat", "gatv2_edge"]


def build(name: str) -> nn.Module:
    torch.manual_seed(MODELS.index(name))
    if name == "gin_pool":
        return GinPool().eval()
    if name == "gatv2_edge":
        return EdgeAttn().eval()
    return Node(name).eval()


def request(name: str, seed: int, n: int, e: int, graphs: int = 1) -> dict[str, np.ndarray]:
    """A graph of ``n`` nodes, ``e`` edges: duplicates, a self loop, isolated nodes."""
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, max(1, n - n // 4), (2, e)).astype(np.int64)  # last quarter isolated
    if e >= 6:
        ei[:, :3] = ei[:, 3:6]
        ei[1, 0] = ei[0, 0]
    req = {"x": rng.standard_normal((n, F)).astype(np.float32), "edge_index": ei}
    if name == "gin_pool":
        cuts = np.sort(rng.choice(np.arange(1, n), graphs - 1, replace=False)) if n > 1 else []
        req["batch"] = np.repeat(np.arange(graphs), np.diff([0, *cuts, n])).astype(np.int64)
    if name == "gatv2_edge":
        req["edge_attr"] = rng.standard_normal((e, D)).astype(np.float32)
    return req


def reference(model: nn.Module, req: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in req.items()}).numpy()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("dynamic_tables")
    out = {}
    for name in MODELS:
        sample = request(name, 100, 24, 70, graphs=3)
        cfg = ExportConfig(name=name, buckets=BUCKETS, profiles=["intel-core-cpu"])
        export_model(build(name), sample_from_arrays(sample), root / name, cfg)
        out[name] = root / name
    yield out


@pytest.mark.parametrize("name", MODELS)
def test_artifacts_take_tables_not_edge_index(bundles: dict[str, Path], name: str) -> None:
    with Runtime.load(bundles[name], backend="onnxruntime") as rt:
        m = rt.manifest
    spec = m.graph
    assert spec.aggregation == "tables" and spec.tables is not None
    assert spec.tables.max_degree == 512 and "--max-degree" in spec.aggregation_reason
    names = [i.name for i in m.inputs]
    assert "edge_index" not in names and "batch" not in names
    assert names[0] == "x" and ("edge_attr" in names) is (name == "gatv2_edge")
    assert set(names) <= set(spec.model_input_names)
    assert spec.input_names[:2] == ["x", "edge_index"]  # the request is unchanged
    assert spec.has_batch is (name == "gin_pool")
    assert (spec.tables.pool_widths != []) is (name == "gin_pool")
    assert len(spec.tables.capacities[0]) == len(BUCKETS)
    assert {a.name for a in m.artifacts} == {"onnx-fp32", "openvino-fp32"}
    for a in m.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name
    # Export parity went through the runtime on the sample and a duplicate-edge graph.
    assert m.verification is not None and m.verification.cases == 2
    assert all(r.passed for r in m.parity)
    # ... and is repeated on a device the same way (edge-export verify).
    checks = verify_bundle(Bundle.open(bundles[name]))
    assert {c.artifact.name for c in checks if c.report and c.report.passed} == {
        "onnx-fp32",
        "openvino-fp32",
    }


GRAPHS = [(1, 0, 1), (2, 0, 2), (5, 0, 1), (17, 60, 3), (300, 1500, 5), (2000, 7000, 8)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", MODELS)
def test_unseen_graphs_match_pytorch(bundles: dict[str, Path], name: str, backend: str) -> None:
    model = build(name)
    with Runtime.load(bundles[name], backend=backend) as rt:
        assert not rt.backend.static_shapes
        for i, (n, e, graphs) in enumerate(GRAPHS):
            req = request(name, i, n, e, graphs)
            want = reference(model, req)
            got = rt.infer(req)["out"]
            assert got.shape == want.shape, (n, e)
            np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=f"{n} nodes")
        assert np.abs(want).max() > 1e-2  # not trivially zero


@pytest.mark.parametrize("name", MODELS)
def test_static_shape_engines_get_a_buckets_fixed_tables(
    bundles: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build(name)
    with Runtime.load(bundles[name], backend="onnxruntime") as rt:
        monkeypatch.setattr(rt.backend, "static_shapes", True)
        spec = rt.manifest.graph
        seen: list[dict[str, tuple[int, ...]]] = []
        infer = rt.backend.infer

        def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.append({k: v.shape for k, v in feeds.items()})
            return infer(feeds)

        monkeypatch.setattr(rt.backend, "infer", spy)
        for i, (n, e, graphs) in enumerate([(1, 0, 1), (9, 30, 2), (32, 128, 4), (400, 900, 6)]):
            req = request(name, 10 + i, n, e, graphs)
            np.testing.assert_allclose(rt.infer(req)["out"], reference(model, req), atol=ATOL)
        for shapes, bucket in zip(seen, [0, 0, 0, 1], strict=True):
            fixed = spec.fixed_shapes(bucket)
            assert shapes == {k: tuple(fixed[k]) for k in shapes}


@pytest.mark.parametrize("name", ["gcn", "gin_pool", "gatv2_edge"])
def test_disjoint_union_batches_match_single_requests(bundles: dict[str, Path], name: str) -> None:
    reqs = [
        request(name, 20 + i, n, e, g)
        for i, (n, e, g) in enumerate([(7, 20, 2), (1, 0, 1), (30, 90, 3)])
    ]
    with Runtime.load(bundles[name], backend="onnxruntime") as rt:
        singles = [rt.infer(r)["out"] for r in reqs]
        batched = rt.infer_batch(reqs)
        assert rt.warmup(runs=1) > 0  # the canary is a request too
    for got, want in zip(batched, singles, strict=True):
        np.testing.assert_allclose(got["out"], want, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_node_beyond_the_degree_limit_is_refused_by_name(
    bundles: dict[str, Path], backend: str
) -> None:
    hub = np.stack([np.arange(1, 601), np.zeros(600, int)]).astype(np.int64)
    req = {"x": np.zeros((601, F), np.float32), "edge_index": hub}
    with Runtime.load(bundles["gcn"], backend=backend) as rt:
        with pytest.raises(InvalidInputError) as info:
            rt.infer(req)
        assert rt.infer({**req, "edge_index": hub[:, :511]})["out"].shape == (601, C)
    assert info.value.field == "edge_index"
    assert "node 0 has 601 incoming edges" in str(info.value)
    assert "graph.tables.max_degree" in str(info.value) and "--max-degree" in str(info.value)


class UsesEdgeIndex(nn.Module):
    """Reads edge_index itself (degree features): only the scatter form can run it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = GCNConv(F + 1, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        deg = degree(edge_index[1], x.shape[0]).unsqueeze(-1)
        return self.c1(torch.cat([x, deg], -1), edge_index)


def test_models_without_a_table_route_keep_scatter_with_the_reason() -> None:
    sample = sample_from_arrays(request("gcn", 1, 12, 30))
    prepared = prepare(UsesEdgeIndex().eval(), [sample], "dynamic")
    assert prepared.aggregation == "scatter" and prepared.tables is None
    assert "does not run over tables" in prepared.aggregation_reason
    assert prepared.model_names == ["x", "edge_index"]
    with pytest.raises(UnsupportedModelError, match="aggregation 'tables'"):
        prepare(UsesEdgeIndex().eval(), [sample], "dynamic", aggregation="tables")
    kept = prepare(build("gcn"), [sample], "dynamic", aggregation="scatter")
    assert kept.aggregation == "scatter" and "--aggregation scatter" in kept.aggregation_reason
    with pytest.raises(ExportError, match="static form"):
        prepare(build("gcn"), [sample], "dynamic", aggregation="dense")


def test_max_degree_option_sets_the_layout() -> None:
    sample = sample_from_arrays(request("gcn", 1, 12, 30))
    prepared = prepare(build("gcn"), [sample], "dynamic", max_degree=100)
    assert prepared.tables is not None
    assert prepared.tables.widths[-1] == 64 and prepared.tables.max_degree == 128
    with pytest.raises(InvalidInputError, match="max_degree"):  # the sample itself is over
        prepare(build("gcn"), [sample], "dynamic", max_degree=2)
