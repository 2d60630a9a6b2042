"""Export of each graph form and model intake, checked through the Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import gcn_gat_net
from torch import nn
from torch_geometric.nn import GCNConv, SAGEConv, global_max_pool, global_mean_pool

from edge_sdk import Runtime
from edge_sdk.errors import ExportError, ParityError, UnsupportedModelError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.io_contract import GraphForm, OutputLevel

F, C = 6, 3


def NodeNet() -> nn.Module:
    """GCN then multi-head GAT, node-level logits (tests/tiny_models.py)."""
    return gcn_gat_net(F, C)


class GraphNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = SAGEConv(F, 16)
        self.bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(32, C)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        h = self.bn(self.c1(x, edge_index)).relu()
        return self.head(torch.cat([global_mean_pool(h, batch), global_max_pool(h, batch)], -1))


class LearnedTopology(nn.Module):
    """Adaptive graph: A = softmax(relu(E1 E2^T)), top-k sparsified, then A @ X W."""

    def __init__(self, n: int, k: int = 3) -> None:
        super().__init__()
        self.e1 = nn.Parameter(torch.randn(n, 5))
        self.e2 = nn.Parameter(torch.randn(n, 5))
        self.lin = nn.Linear(F, 8)
        self.head = nn.Linear(8, C)
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(torch.relu(self.e1 @ self.e2.T), dim=-1)
        top = torch.topk(a, self.k, dim=-1)
        a = torch.zeros_like(a).scatter(-1, top.indices, top.values)
        return self.head(torch.relu(a @ self.lin(x))).mean(dim=1)


def _graph(rng: np.random.Generator, n: int, e: int) -> dict[str, np.ndarray]:
    ei = rng.integers(0, n, (2, e))
    ei[:, :3] = ei[:, 3:6]  # duplicate edges on purpose
    return {"x": rng.normal(size=(n, F)).astype(np.float32), "edge_index": ei}


def test_dynamic_node_level_runs_other_sizes(tmp_path):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = NodeNet().eval()
    samples = [sample_from_arrays(_graph(rng, 15, 40)), sample_from_arrays(_graph(rng, 31, 90))]
    res = export_model(model, samples, tmp_path / "b", ExportConfig(name="node"))
    m = res.manifest
    assert m.graph.form is GraphForm.DYNAMIC
    # The request is (x, edge_index); the model takes x and the neighbour tables.
    assert m.graph.input_names == ["x", "edge_index"] and m.graph.aggregation == "tables"
    assert m.inputs[0].name == "x" and "edge_index" not in [i.name for i in m.inputs]
    assert m.inputs[0].shape == ["num_nodes", F]
    assert m.outputs[0].level is OutputLevel.NODE
    assert m.parity[0].samples == 2 and m.parity[0].passed
    rt = Runtime.load(res.bundle_dir)
    g = _graph(rng, 57, 200)  # a size never seen at export
    want = model(torch.from_numpy(g["x"]), torch.from_numpy(g["edge_index"])).detach().numpy()
    np.testing.assert_allclose(rt.infer(g)["out"], want, atol=1e-5)


def test_dynamic_graph_level_readout(tmp_path):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    model = GraphNet().eval()
    g = _graph(rng, 20, 50)
    g["batch"] = np.repeat(np.arange(4), 5)
    res = export_model(model, sample_from_arrays(g), tmp_path / "b", ExportConfig(name="graph"))
    assert res.manifest.graph.has_batch
    assert res.manifest.outputs[0].level is OutputLevel.GRAPH
    assert res.manifest.outputs[0].shape == ["num_graphs", C]
    rt = Runtime.load(res.bundle_dir)
    g2 = _graph(rng, 12, 30)
    g2["batch"] = np.repeat(np.arange(3), 4)
    t = {k: torch.from_numpy(v) for k, v in g2.items()}
    want = model(t["x"], t["edge_index"], t["batch"]).detach().numpy()
    got = rt.infer(g2)["out"]
    assert got.shape == (3, C)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["dense", "tables", "scatter"])
def test_static_topology_folds_adjacency(tmp_path, aggregation):
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    model = NodeNet().eval()
    n = 12
    topo = _graph(rng, n, 30)["edge_index"]
    x = rng.normal(size=(3, n, F)).astype(np.float32)
    cfg = ExportConfig(name="static", aggregation=aggregation)
    res = export_model(model, sample_from_arrays({"x": x, "edge_index": topo}), tmp_path / "b", cfg)
    m = res.manifest
    assert m.graph.form is GraphForm.STATIC and m.graph.num_nodes == n
    assert m.graph.aggregation == aggregation
    assert m.graph.aggregation_reason == f"asked for (--aggregation {aggregation})"
    assert [i.name for i in m.inputs] == ["x"] and m.inputs[0].shape == ["batch_size", n, F]
    if aggregation != "scatter":
        assert not {"ScatterElements", "ScatterND", "NonZero"} & set(m.artifacts[0].ops)
    rt = Runtime.load(res.bundle_dir)
    x5 = rng.normal(size=(5, n, F)).astype(np.float32)
    got = rt.infer(x5)["out"]
    ei = torch.from_numpy(topo)
    want = np.stack([model(torch.from_numpy(xi), ei).detach().numpy() for xi in x5])
    assert got.shape == (5, n, C)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_learned_topology_plain_torch(tmp_path):
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    n = 10
    model = LearnedTopology(n).eval()
    x = rng.normal(size=(4, n, F)).astype(np.float32)
    res = export_model(
        model, sample_from_arrays({"x": x}), tmp_path / "b", ExportConfig(form="learned")
    )
    assert res.manifest.graph.form is GraphForm.LEARNED
    assert res.manifest.outputs[0].level is OutputLevel.BATCH
    out = Runtime.load(res.bundle_dir).infer(x)["out"]
    np.testing.assert_allclose(out, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_unsupported_layer_is_named(tmp_path):
    from torch_geometric.nn import TransformerConv

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = TransformerConv(F, 4)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    rng = np.random.default_rng(4)
    with pytest.raises(UnsupportedModelError) as exc:
        export_model(Bad(), sample_from_arrays(_graph(rng, 8, 20)), tmp_path / "b")
    msg = str(exc.value)
    assert "conv" in msg and "TransformerConv" in msg and "GCNConv" in msg and "SAGEConv" in msg
    assert not (tmp_path / "b").exists()


def test_parity_failure_fails_export(tmp_path):
    class ExportsDifferently(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = GCNConv(F, C)

        def forward(self, x, edge_index):
            out = self.conv(x, edge_index)
            # A model whose traced graph differs from eager: parity must catch it.
            return out * 1.5 if torch.compiler.is_exporting() else out

    rng = np.random.default_rng(5)
    with pytest.raises(ParityError) as exc:
        export_model(ExportsDifferently(), sample_from_arrays(_graph(rng, 8, 20)), tmp_path / "b")
    assert "'out'" in str(exc.value) and "max abs err" in str(exc.value)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_pt2_program_intake(tmp_path):
    rng = np.random.default_rng(6)
    torch.manual_seed(6)
    model = NodeNet().eval()
    g = _graph(rng, 14, 40)
    args = (torch.from_numpy(g["x"]), torch.from_numpy(g["edge_index"]))
    dims = {"x": {0: torch.export.Dim("n")}, "edge_index": {1: torch.export.Dim("e")}}
    program = torch.export.export(model, args, dynamic_shapes=dims, strict=False)
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    res = export_model(path, sample_from_arrays(g), tmp_path / "b")
    assert res.manifest.parity[0].passed
    g2 = _graph(rng, 25, 70)
    want = model(torch.from_numpy(g2["x"]), torch.from_numpy(g2["edge_index"])).detach().numpy()
    np.testing.assert_allclose(Runtime.load(res.bundle_dir).infer(g2)["out"], want, atol=1e-5)


def test_module_function_with_weights(tmp_path):
    src = tmp_path / "mymodels.py"
    src.write_text(
        "import torch\nfrom torch_geometric.nn import GCNConv\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.conv = GCNConv(6, 3)\n"
        "    def forward(self, x, edge_index):\n        return self.conv(x, edge_index)\n"
        "def build():\n    return Net()\n"
    )
    torch.manual_seed(7)
    trained = nn.Module()
    trained.conv = GCNConv(F, C)
    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": trained.state_dict()}, ckpt)
    rng = np.random.default_rng(7)
    g = _graph(rng, 9, 20)
    res = export_model(f"{src}:build", sample_from_arrays(g), tmp_path / "b", weights=ckpt)
    want = trained.conv(torch.from_numpy(g["x"]), torch.from_numpy(g["edge_index"]))
    got = Runtime.load(res.bundle_dir).infer(g)["out"]
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-5)

    wrong = tmp_path / "wrong.pt"
    torch.save({"other.weight": torch.zeros(2)}, wrong)
    with pytest.raises(ExportError, match=r"missing \['conv"):
        export_model(f"{src}:build", sample_from_arrays(g), tmp_path / "c", weights=wrong)
    with pytest.raises(ExportError, match="no callable 'nope'"):
        export_model(f"{src}:nope", sample_from_arrays(g), tmp_path / "d")


def test_output_dir_must_be_empty(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("precious")
    rng = np.random.default_rng(8)
    with pytest.raises(ExportError, match="not empty"):
        export_model(NodeNet(), sample_from_arrays(_graph(rng, 8, 20)), tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "precious"
