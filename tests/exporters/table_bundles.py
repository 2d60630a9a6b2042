"""The tiny seeded models, graphs and bundles of the neighbour-table tests, exported once.

:class:`Bundles` exports each (model, form) once, for every engine and precision
(:func:`export_bundle`); the ``table_bundles`` fixture (``conftest.py``) holds one
for the session, so ``test_support_matrix.py`` (a cell per engine x precision) and
``test_dynamic_tables.py`` (the dynamic form's contract: unseen sizes, buckets,
the degree limit, disjoint-union batches, ``edge-export verify``) run on the
same bundles instead of exporting the same models twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # module level: PyG reads the type hints of a MessagePassing's message()

#: Engine -> (backend name for ``Runtime.load``, capability set, column title).
ENGINES = {
    "onnxruntime": ("ort-cpu", "ONNX Runtime"),
    "openvino": ("openvino-cpu", "OpenVINO CPU"),
    "litert": ("litert-xnnpack", "LiteRT"),
}

F, H, C, D = 5, 8, 3, 2  # features, hidden, classes, edge_attr width
STATIC_N, STATIC_B = 12, 16
BUCKET = {"max_nodes": 32, "max_edges": 96, "max_graphs": 4}
#: The dynamic form's padding buckets: :data:`BUCKET` (the matrix's graphs) and one for
#: test_dynamic_tables.py's graphs of up to 2,000 nodes (no engine takes a request
#: beyond the largest bucket).
BUCKETS = (BUCKET, {"max_nodes": 2048, "max_edges": 8192, "max_graphs": 8})
#: Export samples of the dynamic form (nodes, edges, graphs): parity and INT8 calibration.
DYNAMIC_SAMPLES = (
    (14, 40, 2),
    (22, 60, 3),
    (10, 24, 2),
    (30, 90, 3),
    (8, 30, 1),
    (25, 50, 3),
    (18, 36, 2),
    (28, 70, 3),
    (12, 20, 1),
)
MAX_DEGREE = 16  # the dynamic form's in-degree limit: classes of width 1..16


# -- models and graphs -----------------------------------------------------------------------


#: The support matrix's models: PyG's model classes as a user builds them (issue #18),
#: small. Each name is one row; its layers are the ones the class is made of.
MODEL_CLASSES = {
    "GCN": "GCN(F, H, 3, C)",
    "GraphSAGE": "GraphSAGE(F, H, 2, C, jk='cat')",
    "GIN": "GIN(F, H, 2, jk='cat') + global_add_pool + MLP head",
    "GAT": "GAT(F, 4, 2, C, heads=2)",
    "GATv2": "GAT(F, 4, 2, C, v2=True, heads=2, edge_dim=D)",
    "PNA": "PNA(F, H, 2, C, mean/min/max/std x identity/amplification/attenuation)",
    "EdgeCNN": "EdgeCNN(F, H, 2, C, jk='cat')",
    "SAGE-multi": "GraphSAGE(F, H, 2, C, aggr=['mean', 'max'])",
    "GCN-norm": "GCN(F, H, 2, C, norm='graph_norm', jk='max') over batch",
    "custom": "a user's MessagePassing (max of x_j - x_i)",
}
#: Models that take ``batch``: requests hold several graphs (a readout, a graph norm).
BATCHED = ("GIN", "GCN-norm")
#: Models whose dynamic bundles get the second, 2,048-node bucket (test_dynamic_tables.py).
LARGE_GRAPH_MODELS = ("GCN", "GraphSAGE", "GIN", "GAT", "GATv2")


def build_model(name: str) -> Any:
    """A tiny seeded model; forward takes ``x, edge_index`` (+ ``batch`` / ``edge_attr``)."""
    from torch import nn
    from torch_geometric.nn import (
        GAT,
        GCN,
        GIN,
        MLP,
        PNA,
        EdgeCNN,
        GraphSAGE,
        MessagePassing,
        global_add_pool,
    )

    class GINPool(nn.Module):
        """PyG's GIN with jumping knowledge, a readout over ``batch`` and an MLP head."""

        def __init__(self) -> None:
            super().__init__()
            self.gnn = GIN(F, H, 2, jk="cat")
            self.head = MLP([H, H, C], norm=None)

        def forward(
            self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
        ) -> torch.Tensor:
            return self.head(global_add_pool(self.gnn(x, edge_index), batch))

    class MaxDiff(MessagePassing):
        """A user's own layer: max over neighbours of ``x_j - x_i``, then a linear map."""

        def __init__(self) -> None:
            super().__init__(aggr="max")
            self.lin = nn.Linear(F, C)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            return self.lin(self.propagate(edge_index, x=x))

        def message(self, x_i: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
            return x_j - x_i

    deg = torch.tensor([1, 4, 6, 4, 2, 1])  # in-degree histogram PNA normalises its scalers by
    factories = {
        "GCN": lambda: GCN(F, H, 3, C),
        "GraphSAGE": lambda: GraphSAGE(F, H, 2, C, jk="cat"),
        "GIN": GINPool,
        "GAT": lambda: GAT(F, 4, 2, C, heads=2),
        "GATv2": lambda: GAT(F, 4, 2, C, v2=True, heads=2, edge_dim=D),
        "PNA": lambda: PNA(
            F,
            H,
            2,
            C,
            aggregators=["mean", "min", "max", "std"],
            scalers=["identity", "amplification", "attenuation"],
            deg=deg,
        ),
        "EdgeCNN": lambda: EdgeCNN(F, H, 2, C, jk="cat"),
        "SAGE-multi": lambda: GraphSAGE(F, H, 2, C, aggr=["mean", "max"]),
        "GCN-norm": lambda: GCN(F, H, 2, C, norm="graph_norm", jk="max"),
        "custom": MaxDiff,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return factories[name]().eval()


def dynamic_graph(
    model: str, rng: np.random.Generator, n: int, e: int, graphs: int = 1
) -> dict[str, np.ndarray]:
    """A request of ``n`` nodes and ``e`` edges (duplicates on purpose when ``e`` > 6)."""
    ei = rng.integers(0, n, (2, e)).astype(np.int64)
    if e > 6:
        ei[:, :3] = ei[:, 3:6]
    g = {"x": rng.uniform(-1, 1, (n, F)).astype(np.float32), "edge_index": ei}
    if model in BATCHED:
        g["batch"] = np.sort(rng.integers(0, graphs, n)).astype(np.int64)
        g["batch"][:graphs] = np.arange(graphs)  # every graph id present
        g["batch"].sort()
    if model == "GATv2":
        g["edge_attr"] = rng.uniform(-1, 1, (e, D)).astype(np.float32)
    return g


def edge_cases(model: str, seed: int) -> list[dict[str, np.ndarray]]:
    """An edge repeated four times, a node with no edge at all, a graph with no edges."""
    rng = np.random.default_rng(seed)
    dup = dynamic_graph(model, rng, 20, 50, graphs=3)
    dup["edge_index"][:, 10:14] = dup["edge_index"][:, 10:11]  # one edge four times
    isolated = dynamic_graph(model, rng, 15, 30, graphs=2)
    ei = isolated["edge_index"]
    ei[ei == 4] = 5  # node 4 has no edge at all
    no_edges = dynamic_graph(model, rng, 7, 0, graphs=2)
    return [dup, isolated, no_edges]


def unseen_dynamic(model: str) -> list[dict[str, np.ndarray]]:
    """Graphs never seen at export, of each edge case (:func:`edge_cases`)."""
    return edge_cases(model, 101)


def dynamic_samples(model: str) -> list[dict[str, np.ndarray]]:
    """Export samples (parity, INT8 calibration): random graphs that fit the bucket, and
    the edge cases with another seed (calibration should see the structures requests have)."""
    rng = np.random.default_rng(11)
    graphs = [dynamic_graph(model, rng, n, e, graphs=g) for n, e, g in DYNAMIC_SAMPLES]
    return graphs + edge_cases(model, 12)


def static_topology() -> np.ndarray:
    """The static form's fixed graph: duplicate edges, a self loop, an isolated node."""
    rng = np.random.default_rng(7)
    ei = rng.integers(0, STATIC_N, (2, 36)).astype(np.int64)
    ei[:, :3] = ei[:, 3:6]
    ei[:, 6] = 2
    ei[ei == 9] = 10  # node 9: isolated
    return ei


def static_sample(model: str, seed: int, b: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ei = static_topology()
    g = {"x": rng.uniform(-1, 1, (b, STATIC_N, F)).astype(np.float32), "edge_index": ei}
    if model == "GATv2":
        g["edge_attr"] = rng.uniform(-1, 1, (ei.shape[1], D)).astype(np.float32)
    return g


def pyg_reference(model: Any, name: str, form: str, g: dict[str, np.ndarray]) -> np.ndarray:
    """The eager PyG model (its own scatter code): one graph, or the union of B stacked ones."""
    import torch

    if form == "dynamic":
        feeds = {k: torch.from_numpy(v) for k, v in g.items()}
        with torch.no_grad():
            return model(**feeds).numpy()
    x = g["x"]
    b, n, _ = x.shape
    union = np.concatenate([g["edge_index"] + i * n for i in range(b)], axis=1)
    feeds = {"x": torch.from_numpy(x.reshape(b * n, -1)), "edge_index": torch.from_numpy(union)}
    if name in BATCHED:  # per-graph readout or norm statistics: B graphs of N nodes
        feeds["batch"] = torch.from_numpy(np.repeat(np.arange(b), n))
    with torch.no_grad():
        out = model(**feeds).numpy()
    return out if name == "GIN" else out.reshape(b, n, -1)


# -- bundles, built once per (model, form) ---------------------------------------------------


@dataclass
class Built:
    """One (model, form) export: the bundle, or why the export raised."""

    model: str
    form: str
    bundle: Path | None = None
    manifest: Any = None
    error: BaseException | None = None
    seconds: float = 0.0
    module: Any = None


def _profiles(root: Path) -> list[str]:
    """Two declared profiles over the same targets: one ships FP32, the other INT8."""
    paths = []
    for first, second in (("fp32", "int8"), ("int8", "fp32")):
        lines = [
            f"name: matrix-{first}",
            f"description: support matrix, {first} first",
            "arch: x86_64",
            "device_class: x86-cpu",
            "threads: 1",
            "targets:",
        ]
        for use, _title in ENGINES.values():
            lines += [f"  - use: {use}", f"    precisions: [{first}, {second}]"]
            if use.startswith("litert"):
                lines.append("    layout: native")
        path = root / f"matrix-{first}.yaml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def export_bundle(model: str, form: str, root: Path, progress: Any = None) -> Built:
    """Export ``model`` in ``form`` for all engines and precisions (errors kept, not raised)."""
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
    from edge_sdk.io_contract import Bucket

    module = build_model(model)
    built = Built(model, form, module=module)
    if form == "dynamic":
        graphs = dynamic_samples(model)
        graph_opts: dict[str, Any] = {
            "form": "dynamic",
            "buckets": [Bucket(**b) for b in BUCKETS[: 2 if model in LARGE_GRAPH_MODELS else 1]],
            "max_degree": MAX_DEGREE,
        }
    else:
        graphs = [static_sample(model, 11, STATIC_B)]
        graph_opts = {"form": "static"}
    cfg = ExportConfig(
        name=f"{model}-{form}",
        # Tables in both forms (the static form's auto would time dense against tables);
        # the user's own layer has no lowering: auto keeps its scatter where an engine can.
        aggregation="auto" if model == "custom" else "tables",
        int8=True,
        calibration=16,
        profiles=_profiles(root),
        **graph_opts,
    )
    start = time.perf_counter()
    try:
        samples = [sample_from_arrays(g, name=f"s{i}") for i, g in enumerate(graphs)]
        res = export_model(module, samples, root / "bundle", cfg, progress=progress)
        built.bundle, built.manifest = res.bundle_dir, res.manifest
    except Exception as exc:  # kept: each cell says whether it expected this
        built.error = exc
    built.seconds = time.perf_counter() - start
    return built


class Bundles:
    """Exports on first use, kept for the module."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.built: dict[tuple[str, str], Built] = {}

    def get(self, model: str, form: str) -> Built:
        key = (model, form)
        if key not in self.built:
            self.built[key] = export_bundle(model, form, self.factory.mktemp(f"{model}-{form}"))
        return self.built[key]
