"""The dynamic form over neighbour tables, exported and run through the Runtime.

The models are the support matrix's tiny GCN, GraphSAGE, GIN + global_add_pool, GAT and
GATv2 + edge_attr, on the session's bundles (``table_bundles`` in ``conftest.py``:
exported once for this file and ``test_support_matrix.py``, ONNX Runtime, OpenVINO CPU
and LiteRT, FP32 and INT8, two padding buckets, in-degree limit 16). Here the FP32
artifacts run on graphs the export never saw: 1 to 2,000 nodes, zero edges, duplicate
edges, self loops, isolated nodes; on engines taking any shape and, with the backend
told it needs static shapes, padded to the bucket's fixed table shapes. The artifacts
take ``x`` (``edge_attr``) and the tables; ``edge_index`` and ``batch`` stay the user's
request, turned into tables by the runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from table_bundles import BUCKETS, MAX_DEGREE, Bundles, C, D, F, build_model, dynamic_samples
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import degree

from edge_sdk import Runtime
from edge_sdk.bundle import Bundle
from edge_sdk.errors import ExportError, InvalidInputError, UnsupportedModelError
from edge_sdk.exporters import sample_from_arrays
from edge_sdk.exporters.prepare import prepare
from edge_sdk.parity import verify_bundle

pytestmark = [
    pytest.mark.requires_backend("onnxruntime"),
    pytest.mark.requires_backend("openvino"),
    pytest.mark.requires_backend("ai_edge_litert"),
    pytest.mark.timeout(900),  # the first test to ask for a bundle exports it
]

ATOL = 1e-4
MODELS = ["GCN", "GraphSAGE", "GIN", "GAT", "GATv2"]
FP32 = {"onnx-fp32", "openvino-fp32"}  # the artifacts these tests run


def request(name: str, seed: int, n: int, e: int, graphs: int = 1) -> dict[str, np.ndarray]:
    """A graph of ``n`` nodes, at most ``e`` edges: duplicates, a self loop, isolated nodes.

    Edges past a node's ``MAX_DEGREE - 1``-th incoming one are dropped: the bundles' limit,
    counting the self loop GCN and GAT add.
    """
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, max(1, n - n // 4), (2, e)).astype(np.int64)  # last quarter isolated
    if e >= 6:
        ei[:, :3] = ei[:, 3:6]
        ei[1, 0] = ei[0, 0]
    order = np.argsort(ei[1], kind="stable")
    rank = np.empty(e, np.int64)
    rank[order] = np.arange(e) - np.searchsorted(ei[1][order], ei[1][order])
    ei = ei[:, rank < MAX_DEGREE - 1]  # + the self loop GCN/GAT add
    req = {"x": rng.uniform(-1, 1, (n, F)).astype(np.float32), "edge_index": ei}
    if name == "GIN":
        cuts = np.sort(rng.choice(np.arange(1, n), graphs - 1, replace=False)) if n > 1 else []
        req["batch"] = np.repeat(np.arange(graphs), np.diff([0, *cuts, n])).astype(np.int64)
    if name == "GATv2":
        req["edge_attr"] = rng.standard_normal((ei.shape[1], D)).astype(np.float32)
    return req


def reference(model: nn.Module, req: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in req.items()}).numpy()


class DynamicBundles:
    """``bundles[name]``: the session's dynamic-form bundle of ``name`` (exported on first use)."""

    def __init__(self, shared: Bundles) -> None:
        self.shared = shared

    def __getitem__(self, name: str) -> Path:
        built = self.shared.get(name, "dynamic")
        if built.error is not None:
            raise built.error
        assert built.bundle is not None
        return built.bundle


@pytest.fixture
def bundles(table_bundles: Bundles) -> DynamicBundles:
    return DynamicBundles(table_bundles)


@pytest.mark.parametrize("name", MODELS)
def test_artifacts_take_tables_not_edge_index(bundles: DynamicBundles, name: str) -> None:
    with Runtime.load(bundles[name], backend="onnxruntime", precision="fp32") as rt:
        m = rt.manifest
    spec = m.graph
    assert spec.aggregation == "tables" and spec.tables is not None
    assert spec.tables.max_degree == MAX_DEGREE and "--max-degree" in spec.aggregation_reason
    names = [i.name for i in m.inputs]
    assert "edge_index" not in names and "batch" not in names
    assert names[0] == "x" and ("edge_attr" in names) is (name == "GATv2")
    assert set(names) <= set(spec.model_input_names)
    assert spec.input_names[:2] == ["x", "edge_index"]  # the request is unchanged
    assert spec.has_batch is (name == "GIN")
    assert (spec.tables.pool_widths != []) is (name == "GIN")
    assert len(spec.tables.capacities[0]) == len(BUCKETS)
    assert {a.name for a in m.artifacts} >= FP32  # and the matrix's INT8, LiteRT ones
    for a in m.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name
    # Export parity went through the runtime on the samples and a duplicate-edge graph.
    assert m.verification is not None and m.verification.cases == len(dynamic_samples(name)) + 1
    assert {r.artifact for r in m.parity if r.passed} >= FP32
    # ... and is repeated on a device the same way (edge-export verify).
    checks = verify_bundle(Bundle.open(bundles[name]))
    assert {c.artifact.name for c in checks if c.report and c.report.passed} >= FP32


GRAPHS = [(1, 0, 1), (2, 0, 2), (5, 0, 1), (17, 60, 3), (300, 1500, 5), (2000, 7000, 8)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", MODELS)
def test_unseen_graphs_match_pytorch(bundles: DynamicBundles, name: str, backend: str) -> None:
    model = build_model(name)
    with Runtime.load(bundles[name], backend=backend, precision="fp32") as rt:
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
    bundles: DynamicBundles, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_model(name)
    with Runtime.load(bundles[name], backend="onnxruntime", precision="fp32") as rt:
        monkeypatch.setattr(rt.backend, "static_shapes", True)
        spec = rt.manifest.graph
        seen: list[dict[str, tuple[int, ...]]] = []
        infer = rt.backend.infer

        def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.append({k: v.shape for k, v in feeds.items()})
            return infer(feeds)

        monkeypatch.setattr(rt.backend, "infer", spy)
        for i, (n, e, graphs) in enumerate([(1, 0, 1), (9, 30, 2), (32, 96, 4), (400, 900, 6)]):
            req = request(name, 10 + i, n, e, graphs)
            np.testing.assert_allclose(rt.infer(req)["out"], reference(model, req), atol=ATOL)
        beyond = request(name, 13, BUCKETS[-1]["max_nodes"] + 1, 40)
        with pytest.raises(InvalidInputError, match="fits no bucket"):
            rt.infer(beyond)
        for shapes, bucket in zip(seen, [0, 0, 0, 1], strict=True):
            fixed = spec.fixed_shapes(bucket)
            assert shapes == {k: tuple(fixed[k]) for k in shapes}
        # Buckets bound static-shape engines only: an engine taking any shape runs it.
        monkeypatch.setattr(rt.backend, "static_shapes", False)
        # (rtol: GIN's pooled sums over 2,049 nodes reach 150, float32 order differs)
        got, want = rt.infer(beyond)["out"], reference(model, beyond)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("name", ["GCN", "GIN", "GATv2"])
def test_disjoint_union_batches_match_single_requests(bundles: DynamicBundles, name: str) -> None:
    reqs = [
        request(name, 20 + i, n, e, g)
        for i, (n, e, g) in enumerate([(7, 20, 2), (1, 0, 1), (30, 90, 3)])
    ]
    with Runtime.load(bundles[name], backend="onnxruntime", precision="fp32") as rt:
        singles = [rt.infer(r)["out"] for r in reqs]
        batched = rt.infer_batch(reqs)
        assert rt.warmup(runs=1) > 0  # the canary is a request too
    for got, want in zip(batched, singles, strict=True):
        np.testing.assert_allclose(got["out"], want, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_node_beyond_the_degree_limit_is_refused_by_name(
    bundles: DynamicBundles, backend: str
) -> None:
    hub = np.stack([np.arange(1, 41), np.zeros(40, int)]).astype(np.int64)
    req = {"x": np.zeros((41, F), np.float32), "edge_index": hub}
    with Runtime.load(bundles["GCN"], backend=backend, precision="fp32") as rt:
        with pytest.raises(InvalidInputError) as info:
            rt.infer(req)
        assert rt.infer({**req, "edge_index": hub[:, : MAX_DEGREE - 1]})["out"].shape == (41, C)
    assert info.value.field == "edge_index"
    assert "node 0 has 41 incoming edges" in str(info.value)
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
    sample = sample_from_arrays(request("GCN", 1, 12, 30))
    prepared = prepare(UsesEdgeIndex().eval(), [sample], "dynamic")
    assert prepared.aggregation == "scatter" and prepared.tables is None
    assert "does not run over tables" in prepared.aggregation_reason
    assert prepared.model_names == ["x", "edge_index"]
    with pytest.raises(UnsupportedModelError, match="aggregation 'tables'"):
        prepare(UsesEdgeIndex().eval(), [sample], "dynamic", aggregation="tables")
    kept = prepare(build_model("GCN"), [sample], "dynamic", aggregation="scatter")
    assert kept.aggregation == "scatter" and "--aggregation scatter" in kept.aggregation_reason
    with pytest.raises(ExportError, match="static form"):
        prepare(build_model("GCN"), [sample], "dynamic", aggregation="dense")


def test_max_degree_option_sets_the_layout() -> None:
    sample = sample_from_arrays(request("GCN", 1, 12, 30))
    prepared = prepare(build_model("GCN"), [sample], "dynamic", max_degree=100)
    assert prepared.tables is not None
    assert prepared.tables.widths[-1] == 64 and prepared.tables.max_degree == 128
    with pytest.raises(InvalidInputError, match="max_degree"):  # the sample itself is over
        prepare(build_model("GCN"), [sample], "dynamic", max_degree=2)
