"""Graph-level norms (GraphNorm, InstanceNorm, LayerNorm graph/node, BatchNorm) in every form.

PyG normalises each graph of ``batch`` over its own nodes with a scatter; the exporter
lowers these norms (:mod:`edge_sdk.exporters.lowering.graph_norms`) to reductions over
the ``[B, N, F]`` view (static form) or over the readout table plus each node's graph
id, ``pool.graph`` (dynamic form over tables), so no ``ScatterElements`` reaches an
engine. First the lowerings against eager PyG (every norm of ``GCN(norm=...)``, every
form, padding), then three shared exports (FP32; INT8 is left to the support matrix, its
calibration costs more than this file's budget) through :class:`~edge_sdk.Runtime`: a
model holding every norm (dynamic: ONNX Runtime and OpenVINO, also padded to a bucket as
LiteRT runs it; static: ONNX Runtime and LiteRT), and one whose norm is called without
``batch`` (PyG then takes one set of statistics over the whole request, as
``GIN(norm=...)`` does inside ``GINConv``'s MLP), which the runtime must therefore never
merge with other requests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_add_pool
from torch_geometric.nn import norm as pyg_norm
from torch_geometric.nn.models import GCN, GIN

from edge_sdk import Runtime
from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.aggregation import StaticLowering
from edge_sdk.exporters.lowering.graph_norms import has_lowered_norms
from edge_sdk.exporters.prepare import prepare
from edge_sdk.exporters.support import check_supported
from edge_sdk.exporters.table_wrapper import lower_dynamic, table_feeds
from edge_sdk.exporters.wrappers import StaticWrapper
from edge_sdk.io_contract import Bucket
from edge_sdk.neighbour_tables import GRAPH_IDS, TableLayout, request_tables
from edge_sdk.serving.batcher import BatcherConfig, DynamicBatcher

needs = pytest.mark.requires_backend


def has_litert() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


pytestmark = [
    pytest.mark.requires_backend("onnxruntime"),
    pytest.mark.timeout(600),
]

ATOL = 1e-4
F, N = 4, 10  # features; nodes of the static form's graph
NORMS = {
    "graph_norm": ("graph_norm", {}),
    "instance_norm": ("instance_norm", {}),
    "instance_norm_affine": ("instance_norm", {"affine": True}),
    "instance_norm_running": ("instance_norm", {"track_running_stats": True}),
    "layer_norm": ("layer_norm", {}),
    "layer_norm_node": ("layer_norm", {"mode": "node"}),
    "batch_norm": ("batch_norm", {}),
}
#: Statistics per graph (lowering.graph_norms); the others are per node in eval mode.
PER_GRAPH = {
    n for n in NORMS if n not in ("layer_norm_node", "batch_norm", "instance_norm_running")
}


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with every parameter and running statistic away from its default."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for _, p in module.named_parameters(recurse=False):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            for name, b in module.named_buffers(recurse=False):
                if name in ("running_mean", "running_var"):
                    b.copy_(torch.rand(b.shape, generator=gen) + (0.5 if "var" in name else -0.5))
    return model.eval()


def gcn(norm: str) -> nn.Module:
    kind, kwargs = NORMS[norm]
    return seeded(GCN(F, 8, 2, 3, norm=kind, norm_kwargs=kwargs))


def graph(seed: int, n: int, e: int, graphs: int = 1) -> dict[str, np.ndarray]:
    """``n`` nodes over ``graphs`` graphs (consecutive, uneven), edges within each graph."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), graphs - 1, replace=False))
    batch = np.repeat(np.arange(graphs), np.diff([0, *cuts, n])).astype(np.int64)
    src = rng.integers(0, n, e)
    starts, sizes = np.r_[0, cuts][batch[src]], np.bincount(batch, minlength=graphs)[batch[src]]
    dst = starts + rng.integers(0, 1 << 30, e) % sizes  # same graph as the source
    x = rng.uniform(-2, 3, (n, F)).astype(np.float32)
    return {"x": x, "edge_index": np.stack([src, dst]).astype(np.int64), "batch": batch}


def one_graph(seed: int, n: int, e: int) -> dict[str, np.ndarray]:
    """A request without a batch vector."""
    return {k: v for k, v in graph(seed, n, e).items() if k != "batch"}


def eager(model: nn.Module, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))


# -- the lowerings against eager PyG ---------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["dense", "tables"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_static_norms_are_per_stacked_graph(norm: str, aggregation: str) -> None:
    model = gcn(norm)
    rng = np.random.default_rng(3)
    ei = torch.from_numpy(rng.integers(0, N, (2, 30)))
    names = ["x", "edge_index", "batch"]
    x = torch.from_numpy(rng.uniform(-2, 3, (3, N, F)).astype(np.float32))
    lowered, _ = StaticLowering(model, ei, N, names, [True]).build(aggregation)
    assert has_lowered_norms(lowered) is (norm in PER_GRAPH)
    with torch.no_grad():
        want = StaticWrapper(model, ei, N, names, [True])(x)[0]
        got = lowered(x)[0]
        # Per graph: graph 1 alone gives what it gives among the three.
        alone = lowered(x[1:2])[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL)
    np.testing.assert_allclose(alone[0].numpy(), want[1].numpy(), atol=ATOL)


def dynamic_lowering(model: nn.Module, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
    low = lower_dynamic(model, names, feeds, list(eager(model, feeds)), max_degree=16)
    assert low.module is not None and low.layout is not None, low.reason
    return low


def run_tables(low: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    inputs = table_feeds(feeds, low.layout)
    with torch.no_grad():
        return low.module(*(torch.from_numpy(inputs[k]) for k in low.module.input_names))[0].numpy()


@pytest.mark.parametrize("norm", list(NORMS))
def test_dynamic_table_norms_are_per_graph_of_the_union(norm: str) -> None:
    model = gcn(norm)
    names = ["x", "edge_index", "batch"]
    low = dynamic_lowering(model, names, graph(1, 24, 60, graphs=3))
    graph_level = norm in PER_GRAPH
    assert low.layout.graph_ids is graph_level
    assert (GRAPH_IDS in low.module.input_names) is graph_level
    for seed, (n, e, g) in enumerate([(30, 80, 4), (7, 12, 1), (40, 100, 5)]):
        feeds = graph(10 + seed, n, e, g)
        np.testing.assert_allclose(run_tables(low, feeds), eager(model, feeds)[0], atol=ATOL)
        # Without a batch vector the request is one graph (PyG's semantics).
        single = {k: feeds[k] for k in ("x", "edge_index")}
        np.testing.assert_allclose(run_tables(low, single), eager(model, single)[0], atol=ATOL)


@pytest.mark.parametrize("norm", ["graph_norm", "instance_norm", "layer_norm"])
def test_padding_nodes_do_not_enter_the_statistics(norm: str) -> None:
    """A bucket's padding nodes (garbage features, no graph) change no real row."""
    model = gcn(norm)
    low = dynamic_lowering(model, ["x", "edge_index", "batch"], graph(1, 24, 60, graphs=3))
    for batched in (True, False):
        feeds = graph(5, 20, 50, graphs=3)
        want = eager(model, feeds if batched else {k: feeds[k] for k in ("x", "edge_index")})[0]
        n, pad = 20, 12
        x = np.concatenate([feeds["x"], np.full((pad, F), 50.0, np.float32)])
        # As the runtime pads (edge_sdk.packing.table_feeds): real nodes graph 0 when no batch.
        batch = feeds["batch"] if batched else np.zeros(n, np.int64)
        tables = request_tables(feeds["edge_index"], n + pad, low.layout, batch=batch, num_graphs=4)
        assert tables[GRAPH_IDS].shape == (n + pad,)
        inputs = {"x": x} | tables
        with torch.no_grad():
            got = low.module(*(torch.from_numpy(inputs[k]) for k in low.module.input_names))[0]
        np.testing.assert_allclose(got.numpy()[:n], want, atol=ATOL)


def test_graph_ids_in_the_table_contract() -> None:
    """``pool.graph`` is an input only where the layout says so; old layouts load without."""
    old = TableLayout.model_validate({"widths": [1, 2], "pool_widths": [1, 2], "pool_splits": 2})
    assert not old.graph_ids and GRAPH_IDS not in old.input_names()
    layout = TableLayout.for_model(["loops"], max_degree=4, graph_ids=True)
    assert layout.pool_widths and layout.input_names()[-1] == GRAPH_IDS
    sized = layout.with_buckets([BUCKET])
    assert sized.fixed_shapes(BUCKET, 0, F)[GRAPH_IDS] == [BUCKET.max_nodes]
    ei = np.array([[0, 1, 3], [1, 2, 4]])
    tables = request_tables(ei, 6, sized, batch=np.array([0, 0, 1, 1, 1]), num_graphs=4, bucket=0)
    np.testing.assert_array_equal(tables[GRAPH_IDS], [0, 0, 1, 1, 1, 0])  # padding: graph 0
    with pytest.raises(ValueError, match="graph_ids needs the readout table"):
        TableLayout(widths=[1], graph_ids=True)


# -- refusals ---------------------------------------------------------------------------------


def test_static_form_refuses_a_norm_called_without_batch() -> None:
    """GIN's norms sit in GINConv's MLP, called without ``batch``: across B stacked graphs."""
    model = seeded(GIN(F, 8, 2, 2, norm="graph_norm"))
    x = np.random.default_rng(0).uniform(-1, 1, (2, N, F)).astype(np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": np.array([[0, 1], [1, 2]])})
    with pytest.raises(
        UnsupportedModelError, match=r"'convs\.0\.nn\.norms\.0' \(GraphNorm\).*batch"
    ):
        prepare(model, [sample], form="static", aggregation="dense")


@pytest.mark.parametrize("norm", ["pairnorm", "diffgroupnorm"])
def test_norms_without_a_lowering_are_refused_by_name(norm: str) -> None:
    model = GCN(
        F, 8, 2, 3, norm=norm, norm_kwargs={"groups": 2} if norm == "diffgroupnorm" else None
    )
    with pytest.raises(
        UnsupportedModelError, match=r"layer norms\.0 is .*(PairNorm|DiffGroupNorm)"
    ):
        check_supported(model)


# -- exported, through the Runtime ------------------------------------------------------------


class AllNorms(nn.Module):
    """Every norm in a row, a node-level output and a ``global_add_pool`` readout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = GCNConv(F, 8)
        self.norms = nn.ModuleList(
            [
                pyg_norm.GraphNorm(8),
                pyg_norm.InstanceNorm(8, affine=True),
                pyg_norm.LayerNorm(8),
                pyg_norm.LayerNorm(8, mode="node"),
                pyg_norm.BatchNorm(8),
            ]
        )
        self.conv2 = GCNConv(8, 3)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv1(x, edge_index).relu()
        for i, norm in enumerate(self.norms):
            h = norm(h, batch) if i < 3 else norm(h)
        h = self.conv2(h, edge_index)
        return h, global_add_pool(h, batch)


def profile(root: Path, engines: list[str]) -> str:
    """A device profile running ``engines`` in FP32 (INT8: see the module docstring)."""
    lines = ["name: norms", "description: graph norms", "arch: x86_64", "device_class: x86-cpu"]
    lines += ["threads: 1", "targets:"]
    for use in engines:
        lines += [f"  - use: {use}", "    precisions: [fp32]"]
        lines += ["    layout: native"] if use.startswith("litert") else []
    path = root / "norms.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


BUCKET = Bucket(max_nodes=32, max_edges=128, max_graphs=4)
UNSEEN = [(25, 70, 3), (9, 20, 1), (31, 100, 4)]


def no_scatter(rt: Runtime) -> None:
    for a in rt.manifest.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    root = tmp_path_factory.mktemp("norms-dynamic")
    model = seeded(AllNorms())
    samples = [graph(20 + i, n, 3 * n, g) for i, (n, g) in enumerate([(14, 2), (22, 3), (30, 4)])]
    cfg = ExportConfig(
        name="all-norms",
        form="dynamic",
        aggregation="tables",
        buckets=[BUCKET],
        max_degree=16,
        profiles=[profile(root, ["ort-cpu", "openvino-cpu"])],
    )
    res = export_model(model, [sample_from_arrays(s) for s in samples], root / "b", cfg)
    return model, res.bundle_dir


@pytest.mark.parametrize(
    "backend", ["onnxruntime", pytest.param("openvino", marks=needs("openvino"))]
)
def test_dynamic_form_matches_pyg(dynamic_bundle: tuple[nn.Module, Path], backend: str) -> None:
    model, bundle = dynamic_bundle
    with Runtime.load(bundle, backend=backend, precision="fp32") as rt:
        spec = rt.manifest.graph
        assert spec.tables is not None and spec.tables.graph_ids and not spec.whole_request_stats
        assert GRAPH_IDS in [i.name for i in rt.manifest.inputs]
        no_scatter(rt)
        reqs = [graph(40 + i, n, e, g) for i, (n, e, g) in enumerate(UNSEEN)]
        merged = rt.infer_batch(reqs)  # one disjoint union: per-graph statistics allow it
        for req, together in zip(reqs, merged, strict=True):
            node, pooled = eager(model, req)
            alone = rt.infer(req)
            for got in (alone, together):
                np.testing.assert_allclose(got["out0"], node, atol=ATOL)
                np.testing.assert_allclose(got["out1"], pooled, atol=ATOL)


def test_dynamic_form_padded_to_a_bucket(
    dynamic_bundle: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a static-shape engine (LiteRT) runs it: padding nodes belong to no graph."""
    model, bundle = dynamic_bundle
    with Runtime.load(bundle, backend="onnxruntime", precision="fp32") as rt:
        monkeypatch.setattr(rt.backend, "static_shapes", True)
        for i, (n, e, g) in enumerate(UNSEEN):
            req = graph(50 + i, n, e, g)
            node, pooled = eager(model, req)
            got = rt.infer(req)
            np.testing.assert_allclose(got["out0"], node, atol=ATOL)
            np.testing.assert_allclose(got["out1"], pooled, atol=ATOL)


STATIC_EI = np.random.default_rng(4).integers(0, N, (2, 30)).astype(np.int64)


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    root = tmp_path_factory.mktemp("norms-static")
    model = seeded(AllNorms())
    x = np.random.default_rng(5).uniform(-2, 3, (4, N, F)).astype(np.float32)
    engines = ["ort-cpu"] + (["litert-xnnpack"] if has_litert() else [])
    cfg = ExportConfig(
        name="all-norms-static",
        form="static",
        aggregation="tables",
        profiles=[profile(root, engines)],
    )
    sample = sample_from_arrays({"x": x, "edge_index": STATIC_EI})
    return model, export_model(model, [sample], root / "b", cfg).bundle_dir


@pytest.mark.parametrize(
    "backend", ["onnxruntime", pytest.param("litert", marks=needs("ai_edge_litert"))]
)
def test_static_form_matches_pyg(static_bundle: tuple[nn.Module, Path], backend: str) -> None:
    model, bundle = static_bundle
    rng = np.random.default_rng(6)
    with Runtime.load(bundle, backend=backend, precision="fp32") as rt:
        no_scatter(rt)
        for b in (1, 3):
            xs = rng.uniform(-2, 3, (b, N, F)).astype(np.float32)
            union = np.concatenate([STATIC_EI + i * N for i in range(b)], axis=1)
            feeds = {"x": xs.reshape(-1, F), "edge_index": union}
            node, pooled = eager(model, feeds | {"batch": np.repeat(np.arange(b), N)})
            got = rt.infer(xs)
            np.testing.assert_allclose(got["out0"], node.reshape(b, N, -1), atol=ATOL)
            np.testing.assert_allclose(got["out1"], pooled, atol=ATOL)


# -- a norm over the whole request: never merged ----------------------------------------------


class WholeRequest(nn.Module):
    """No ``batch`` in forward: the norm's statistics span the whole request."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = GCNConv(F, 4)
        self.norm = pyg_norm.GraphNorm(4)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.norm(self.conv(x, edge_index))


def test_gin_norms_inside_the_mlp_see_no_batch() -> None:
    """``GIN(norm=...)`` puts a norm in each ``GINConv`` MLP, which PyG calls without batch."""
    model = seeded(GIN(F, 8, 2, 4, norm="graph_norm"))
    prepared = prepare(model, [sample_from_arrays(graph(1, 20, 50, graphs=2))], form="dynamic")
    assert prepared.whole_request_stats == ["convs.0.nn.norms.0", "convs.1.nn.norms.0"]
    assert prepared.tables is not None and prepared.tables.graph_ids


@pytest.fixture(scope="module")
def whole_request_runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("norms-whole")
    model = seeded(WholeRequest())
    samples = [
        {k: v for k, v in graph(60 + i, n, 3 * n).items() if k != "batch"}
        for i, n in enumerate([14, 22])
    ]
    cfg = ExportConfig(
        name="whole-request", form="dynamic", aggregation="tables", buckets=[BUCKET], max_degree=16
    )
    res = export_model(model, [sample_from_arrays(s) for s in samples], root / "b", cfg)
    with Runtime.load(res.bundle_dir, backend="onnxruntime", precision="fp32") as rt:
        yield model, rt


def test_whole_request_norms_are_recorded_and_never_merged(
    whole_request_runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, rt = whole_request_runtime
    spec = rt.manifest.graph
    assert spec.whole_request_stats and not spec.has_batch
    assert spec.tables is not None and spec.tables.graph_ids
    reqs = [
        {k: v for k, v in graph(70 + i, n, e).items() if k != "batch"}
        for i, (n, e, _) in enumerate(UNSEEN)
    ]
    want = [eager(model, r)[0] for r in reqs]
    calls: list[int] = []
    infer = rt.backend.infer

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feeds["x"].shape[0])
        return infer(feeds)

    monkeypatch.setattr(rt.backend, "infer", spy)
    for got, w in zip(rt.infer_batch(reqs), want, strict=True):
        np.testing.assert_allclose(got["out"], w, atol=ATOL)
    assert calls == [r["x"].shape[0] for r in reqs]  # one call per request: none merged
    with DynamicBatcher(rt, BatcherConfig(max_batch=8, max_delay_ms=50)) as batcher:
        futures = [batcher.submit(r) for r in reqs * 3]
        for f, w in zip(futures, want * 3, strict=True):
            np.testing.assert_allclose(f.result(30)["out"], w, atol=ATOL)
    # Padded to the bucket (static-shape engines), the padding nodes stay out.
    monkeypatch.setattr(rt.backend, "static_shapes", True)
    for r, w in zip(reqs, want, strict=True):
        np.testing.assert_allclose(rt.infer(r)["out"], w, atol=ATOL)
    # Merged as one union, the statistics would span the requests: the answers would change.
    offsets = np.cumsum([0] + [r["x"].shape[0] for r in reqs])
    union = {
        "x": np.concatenate([r["x"] for r in reqs]),
        "edge_index": np.concatenate(
            [r["edge_index"] + o for r, o in zip(reqs, offsets[:-1], strict=True)], axis=1
        ),
    }
    assert np.abs(eager(model, union)[0][: want[0].shape[0]] - want[0]).max() > 1e-2
