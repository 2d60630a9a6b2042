"""Padding and disjoint-union batching are exact on real exported models (ONNX Runtime).

These models keep ``edge_index`` (``--aggregation scatter``): padding edges and the
padding node/graph are what is checked. Models over neighbour tables pad without
padding edges: tests/exporters/test_dynamic_tables.py.

Every model here is a small PyG network exported once per module with
``export_model`` and loaded with ``Runtime.load``. For graphs with duplicate
edges, self loops and isolated nodes we check, to 1e-5:

* bucket padding (``pick_bucket`` / ``pad_graph`` / ``unpad_outputs``) run through
  the backend gives what an unpadded ``Runtime.infer`` gives;
* ``Runtime.infer_batch`` (one merged disjoint union) gives what one
  ``Runtime.infer`` per request gives, for node- and graph-level models, including
  requests that already carry a batch vector;

and, so that both sides cannot be equally wrong, the runtime against the PyTorch
model itself (1e-4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn import (
    GATConv,
    GCNConv,
    GINConv,
    GraphConv,
    SAGEConv,
    global_mean_pool,
)

from edge_sdk import Bucket, DynamicGraph, OutputLevel, Runtime, as_graph
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.packing import pad_graph, pick_bucket, unpad_outputs

pytestmark = pytest.mark.requires_backend("onnxruntime")

F, H, C = 5, 8, 3
ATOL = 1e-5
TORCH_ATOL = 1e-4
BUCKETS = [
    Bucket(max_nodes=8, max_edges=24, max_graphs=2),
    Bucket(max_nodes=16, max_edges=64, max_graphs=4),
    Bucket(max_nodes=32, max_edges=128, max_graphs=4),
]


# -- models --------------------------------------------------------------------------------


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, H), nn.ReLU(), nn.Linear(H, o))


CONVS: dict[str, Callable[[int, int], nn.Module]] = {
    "gcn": lambda i, o: GCNConv(i, o),
    "gat": lambda i, o: GATConv(i, o // 2 if o == H else o, heads=2 if o == H else 1),
    "sage": lambda i, o: SAGEConv(i, o),
    "sage-max": lambda i, o: SAGEConv(i, o, aggr="max"),
    "gin": lambda i, o: GINConv(_mlp(i, o), train_eps=True),
    "graphconv": lambda i, o: GraphConv(i, o),
}


class NodeNet(nn.Module):
    """Two message-passing layers (2-hop receptive field) and a linear head."""

    def __init__(self, conv: Callable[[int, int], nn.Module]) -> None:
        super().__init__()
        self.c1 = conv(F, H)
        self.c2 = conv(H, H)
        self.head = nn.Linear(H, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.c1(x, edge_index).relu()
        return self.head(self.c2(h, edge_index).relu())


class GraphNet(nn.Module):
    """Every layer kind, then a per-graph mean readout."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = GCNConv(F, H)
        self.c2 = GATConv(H, H // 2, heads=2)
        self.c3 = SAGEConv(H, H)
        self.c4 = GINConv(_mlp(H, H))
        self.c5 = GraphConv(H, H)
        self.head = nn.Linear(H, C)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        h = x
        for conv in (self.c1, self.c2, self.c3, self.c4, self.c5):
            h = conv(h, edge_index).relu()
        return self.head(global_mean_pool(h, batch))


class WholeGraphNet(nn.Module):
    """A readout without a batch input: the whole request is one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = SAGEConv(F, H)
        self.head = nn.Linear(H, C)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.head(self.c1(x, edge_index).relu().mean(0, keepdim=True))


NODE_MODELS = list(CONVS)
ALL_MODELS = [*NODE_MODELS, "graph", "whole-graph"]


# -- random graphs -------------------------------------------------------------------------


def component(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """One graph of ``n`` nodes with duplicate edges, self loops and isolated nodes.

    The highest node id is always isolated, so an exporter that sizes its
    scatter from ``edge_index.max() + 1`` instead of ``N`` is caught.
    """
    assert n >= 4
    isolated = {n - 1, *rng.choice(n - 1, size=max(1, n // 5), replace=False).tolist()}
    linked = np.array(sorted(set(range(n)) - isolated))
    e = int(rng.integers(n, 3 * n))
    src, dst = rng.choice(linked, e), rng.choice(linked, e)
    dup = rng.integers(0, e, size=3)  # duplicate edges
    loops = rng.choice(linked, size=2)  # self loops, one of them twice
    ei = np.concatenate(
        [
            np.stack([src, dst]),
            np.stack([src[dup], dst[dup]]),
            np.stack([loops, loops]),
            np.stack([loops[:1], loops[:1]]),
        ],
        axis=1,
    )
    ei = ei[:, rng.permutation(ei.shape[1])]
    x = rng.standard_normal((n, F)).astype(np.float32)
    _assert_awkward(ei, n)
    return {"x": x, "edge_index": ei.astype(np.int64)}


def _assert_awkward(ei: np.ndarray, n: int) -> None:
    """The graph really has what the test claims to cover."""
    cols = {tuple(c) for c in ei.T.tolist()}
    assert len(cols) < ei.shape[1], "no duplicate edge"
    assert (ei[0] == ei[1]).any(), "no self loop"
    assert len(set(ei.ravel().tolist())) < n, "no isolated node"
    assert n - 1 not in set(ei.ravel().tolist()), "last node not isolated"


def union(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge components into one request with a batch vector."""
    offsets = np.cumsum([0, *(p["x"].shape[0] for p in parts)])
    return {
        "x": np.concatenate([p["x"] for p in parts]),
        "edge_index": np.concatenate(
            [p["edge_index"] + o for p, o in zip(parts, offsets, strict=False)], axis=1
        ),
        "batch": np.concatenate(
            [np.full(p["x"].shape[0], i, np.int64) for i, p in enumerate(parts)]
        ),
    }


def random_request(seed: int, graphs: int = 1, max_n: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts = [component(rng, int(rng.integers(4, max_n + 1))) for _ in range(graphs)]
    return parts[0] if graphs == 1 else union(parts)


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, err_msg=name)


# -- exported bundles ----------------------------------------------------------------------


@dataclass
class Exported:
    model: nn.Module
    rt: Runtime

    @property
    def graph_level(self) -> bool:
        return OutputLevel.GRAPH in self.rt.manifest.output_levels.values()


def _build(name: str) -> nn.Module:
    if name == "graph":
        return GraphNet()
    if name == "whole-graph":
        return WholeGraphNet()
    return NodeNet(CONVS[name])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Exported]]:
    root = tmp_path_factory.mktemp("padding_parity")
    out: dict[str, Exported] = {}
    for i, name in enumerate(ALL_MODELS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            model = _build(name).eval()
        sample = random_request(100 + i, graphs=2 if name == "graph" else 1, max_n=12)
        export_model(
            model,
            sample_from_arrays(sample),
            root / name,
            ExportConfig(name=name, buckets=BUCKETS, aggregation="scatter"),
        )
        out[name] = Exported(model, Runtime.load(root / name))
    yield out
    for e in out.values():
        e.rt.close()


def test_bundles_have_the_expected_contract(exported: dict[str, Exported]) -> None:
    for name, e in exported.items():
        spec = e.rt.manifest.graph
        assert spec.buckets == BUCKETS, name
        assert spec.has_batch is (name == "graph"), name
        assert e.graph_level is (name in ("graph", "whole-graph")), name
        assert e.rt.describe()["backend"] == "onnxruntime"


# -- (0) the runtime reproduces PyTorch ---------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_runtime_matches_pytorch(exported: dict[str, Exported], name: str) -> None:
    e = exported[name]
    req = random_request(7, graphs=3 if name == "graph" else 1, max_n=9)
    feeds = {k: torch.from_numpy(v) for k, v in req.items()}
    if name != "graph":
        feeds.pop("batch", None)
    with torch.no_grad():
        want = e.model(**feeds).numpy()
    got = e.rt.infer(req)["out"]
    rows = 3 if name == "graph" else 1 if name == "whole-graph" else req["x"].shape[0]
    assert got.shape == (rows, C)
    assert np.abs(want).max() > 1e-2  # not trivially zero
    np.testing.assert_allclose(got, want, rtol=0, atol=TORCH_ATOL)


# -- (a) padding to a bucket is exact -----------------------------------------------------


@pytest.mark.parametrize("name", [*NODE_MODELS, "graph"])
def test_padding_matches_unpadded_inference(exported: dict[str, Exported], name: str) -> None:
    e = exported[name]
    spec = e.rt.manifest.graph
    levels = e.rt.manifest.output_levels
    used = set()
    for seed in range(5):
        graphs = 1 + seed % 3 if name == "graph" else 1
        req = random_request(seed, graphs=graphs, max_n=10 if seed % 2 else 5)
        want = e.rt.infer(req)

        g = as_graph(req, spec)
        assert isinstance(g, DynamicGraph)
        bucket = pick_bucket(g, spec.buckets, spec.has_batch)
        used.add(bucket)
        padded, padding = pad_graph(g, bucket, spec.has_batch, e.graph_level)
        assert padded.num_nodes > g.num_nodes and padded.num_edges > g.num_edges

        got = unpad_outputs(e.rt.backend.infer(padded.feeds(spec)), padding, levels)
        assert_close(got, want, ATOL)

        # Padding nodes are cut off from real ones: their features cannot matter.
        rng = np.random.default_rng(seed)
        noisy = padded.x.copy()
        noisy[~padding.node_mask] = rng.standard_normal(noisy[~padding.node_mask].shape) * 10
        feeds = {**padded.feeds(spec), "x": noisy}
        got = unpad_outputs(e.rt.backend.infer(feeds), padding, levels)
        assert_close(got, want, ATOL)
    assert len(used) >= 2  # more than one bucket was exercised


@pytest.mark.parametrize("name", ["gat", "sage-max", "graph"])
def test_runtime_pads_on_static_shape_backends(
    exported: dict[str, Exported], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``static_shapes`` the runtime pads every request itself; results do not move."""
    e = exported[name]
    # For the readout model: 2 + 1 graphs, plus the padding graph, fill max_graphs=4.
    graphs = (2, 1) if name == "graph" else (1, 1)
    reqs = [random_request(s, graphs=k, max_n=7) for s, k in zip((11, 12), graphs, strict=True)]
    want = [e.rt.infer(r) for r in reqs]
    want_batch = e.rt.infer_batch(reqs)
    seen: list[dict[str, tuple[int, ...]]] = []
    infer = e.rt.backend.infer

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append({k: v.shape for k, v in feeds.items()})
        return infer(feeds)

    monkeypatch.setattr(e.rt.backend, "static_shapes", True)
    monkeypatch.setattr(e.rt.backend, "infer", spy)
    for r, w in zip(reqs, want, strict=True):
        assert_close(e.rt.infer(r), w, ATOL)
    for got, w in zip(e.rt.infer_batch(reqs), want_batch, strict=True):
        assert_close(got, w, ATOL)
    bucket_shapes = {(b.max_nodes, b.max_edges) for b in BUCKETS}
    assert seen and all((s["x"][0], s["edge_index"][1]) in bucket_shapes for s in seen), seen


def test_static_shape_batch_splits_when_union_overflows(
    exported: dict[str, Exported], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that fit alone but not together are run in several bucket-sized calls."""
    e = exported["graph"]
    reqs = [random_request(s, graphs=2, max_n=7) for s in (41, 42, 43)]
    want = [e.rt.infer(r) for r in reqs]
    calls: list[int] = []
    infer = e.rt.backend.infer

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(int(feeds["x"].shape[0]))
        return infer(feeds)

    monkeypatch.setattr(e.rt.backend, "static_shapes", True)
    monkeypatch.setattr(e.rt.backend, "infer", spy)
    got = e.rt.infer_batch(reqs)
    # 2 graphs each + 1 padding graph: max_graphs=4 holds one request per call.
    assert len(calls) == 3
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, ATOL)


# -- (b) merged batches equal one call per request ---------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_infer_batch_matches_single_inference(exported: dict[str, Exported], name: str) -> None:
    e = exported[name]
    reqs = [random_request(s, max_n=n) for s, n in ((21, 4), (22, 10), (23, 7))]
    want = [e.rt.infer(r) for r in reqs]
    got = e.rt.infer_batch(reqs)
    assert len(got) == len(reqs)
    for g, w, r in zip(got, want, reqs, strict=True):
        rows = 1 if e.graph_level else r["x"].shape[0]
        assert g["out"].shape == (rows, C)
        assert_close(g, w, ATOL)
    # Requests differ, so their results must too (nothing got mixed up or reused).
    assert not np.allclose(got[0]["out"][:1], got[1]["out"][:1])


def test_infer_batch_accepts_mixed_containers(exported: dict[str, Exported]) -> None:
    e = exported["gcn"]
    a, b = random_request(31), random_request(32)
    g = as_graph(b, e.rt.manifest.graph)
    lists = {"x": a["x"].tolist(), "edge_index": a["edge_index"].astype(np.int32).tolist()}
    got = e.rt.infer_batch([lists, g])
    assert_close(got[0], e.rt.infer(a), ATOL)
    assert_close(got[1], e.rt.infer(b), ATOL)


# -- (c) requests that already hold several graphs ----------------------------------------


def test_graph_level_requests_with_batch_vectors(exported: dict[str, Exported]) -> None:
    e = exported["graph"]
    rng = np.random.default_rng(41)
    comps = [component(rng, int(rng.integers(4, 9))) for _ in range(6)]
    # 2 graphs, 1 graph without a batch vector, 3 graphs.
    reqs = [union(comps[:2]), comps[2], union(comps[3:])]
    per_graph = [e.rt.infer(c)["out"] for c in comps]

    single = [e.rt.infer(r) for r in reqs]
    merged = e.rt.infer_batch(reqs)
    assert [m["out"].shape[0] for m in merged] == [2, 1, 3]
    for m, s in zip(merged, single, strict=True):
        assert_close(m, s, ATOL)
    # And every row equals that graph run on its own.
    rows = np.concatenate([m["out"] for m in merged])
    np.testing.assert_allclose(rows, np.concatenate(per_graph), rtol=0, atol=ATOL)
    # A single graph sent with an explicit all-zero batch vector is the same request.
    explicit = {**comps[2], "batch": np.zeros(comps[2]["x"].shape[0], np.int64)}
    assert_close(e.rt.infer(explicit), single[1], ATOL)


def test_readout_without_batch_input_is_never_pooled_across_requests(
    exported: dict[str, Exported],
) -> None:
    e = exported["whole-graph"]
    reqs = [random_request(s, max_n=6) for s in (51, 52)]
    merged = union(reqs)
    pooled = e.rt.infer({"x": merged["x"], "edge_index": merged["edge_index"]})["out"]
    got = e.rt.infer_batch(reqs)
    for g, r in zip(got, reqs, strict=True):
        assert_close(g, e.rt.infer(r), ATOL)
        assert not np.allclose(g["out"], pooled)
