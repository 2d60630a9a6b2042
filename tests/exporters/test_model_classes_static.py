"""PyG's model classes in the static form (one fixed topology, ``x [B, N, F]``).

Tiny ``GCN``, ``GraphSAGE`` (``jk='cat'`` with ``act='leaky_relu'``; ``jk='max'`` with
``act='elu'`` and dropout), ``GIN`` (``jk='cat'``) + ``global_add_pool`` + an ``MLP``
head, ``GAT`` (heads, ``jk='last'``), ``GAT(v2=True)`` and ``EdgeCNN`` side by side in
one module, exported once per aggregation (``dense``: the ``[N, N]`` folding, which has
no ``EdgeConv``; ``tables``: constant neighbour tables) for ONNX Runtime, then run
through the ``Runtime`` on stacked graphs the export never saw and compared with eager
PyG on their disjoint union (FP32 <= 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GAT, GCN, GIN, MLP, EdgeCNN, GraphSAGE, global_add_pool

pytestmark = [pytest.mark.requires_backend("onnxruntime"), pytest.mark.timeout(600)]

F, H, C = 5, 8, 3  # features, hidden, outputs
N = 12
ATOL = 1e-4


class GINPool(nn.Module):
    """GIN with jumping knowledge, summed per graph, then PyG's MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.gnn = GIN(F, H, 2, jk="cat")
        self.head = MLP([H, H, C], norm=None, dropout=0.2)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        return self.head(global_add_pool(self.gnn(x, edge_index), batch))


def classes(edge_cnn: bool) -> dict[str, nn.Module]:
    models: dict[str, nn.Module] = {
        "GCN": GCN(F, H, 3, C),  # the seed's GCN(16, 64, 3, 7), tiny
        "GraphSAGE-jk-cat": GraphSAGE(F, H, 2, C, jk="cat", act="leaky_relu"),
        "GraphSAGE-jk-max": GraphSAGE(F, H, 2, C, jk="max", act="elu", dropout=0.3),
        "GIN-jk-cat-pool-mlp": GINPool(),
        "GAT-heads-jk-last": GAT(F, H, 2, C, heads=4, jk="last"),
        "GATv2": GAT(F, H, 2, C, v2=True, heads=2),
    }
    if edge_cnn:
        models["EdgeCNN-jk-cat"] = EdgeCNN(F, H, 2, C, jk="cat")
    return models


class Zoo(nn.Module):
    """Every model class on the same graph: one export for all (outputs in this order)."""

    def __init__(self, edge_cnn: bool) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.models = nn.ModuleDict(classes(edge_cnn))
        self.eval()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> tuple[Tensor, ...]:
        return tuple(
            m(x, edge_index, batch) if isinstance(m, GINPool) else m(x, edge_index)
            for m in self.models.values()
        )


def topology() -> np.ndarray:
    """Duplicate edges, a self loop, an isolated node (9), a node that only sends (4).

    In-degree at most 3 (4 with the loops GCN and GAT add): three table classes, so
    the export stays small.
    """
    src = [1, 2, 2, 0, 5, 3, 3, 6, 7, 8, 10, 11, 0, 4, 4, 1, 8, 11, 10, 5]
    dst = [0, 0, 0, 1, 1, 2, 3, 3, 5, 5, 6, 6, 7, 7, 8, 8, 10, 10, 11, 11]
    return np.array([src, dst], np.int64)


def features(seed: int, b: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (b, N, F)).astype(np.float32)


def reference(model: Zoo, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Eager PyG on the disjoint union of the ``B`` stacked graphs (its own scatter code)."""
    b = x.shape[0]
    ei = topology()
    union = np.concatenate([ei + i * N for i in range(b)], axis=1)
    with torch.no_grad():
        outs = model(
            torch.from_numpy(x.reshape(b * N, F)),
            torch.from_numpy(union),
            torch.from_numpy(np.repeat(np.arange(b), N)),
        )
    # Node-level outputs as the static form returns them: [B, N, C]; graph-level [B, C].
    return tuple(o.numpy().reshape(b, N, -1) if o.shape[0] == b * N else o.numpy() for o in outs)


@dataclass
class Exported:
    model: Zoo
    bundle: Path
    manifest: Any


def export(root: Path, aggregation: str) -> Exported:
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    profile = root / "ort.yaml"
    profile.write_text(
        "name: ort-fp32\ndescription: ONNX Runtime FP32\narch: x86_64\n"
        "device_class: x86-cpu\nthreads: 1\ntargets:\n"
        "  - use: ort-cpu\n    precisions: [fp32]\n"
    )
    model = Zoo(edge_cnn=aggregation != "dense")
    sample = {"x": features(11, 4), "edge_index": topology(), "batch": np.zeros(N, np.int64)}
    cfg = ExportConfig(
        name=f"zoo-{aggregation}",
        form="static",
        aggregation=aggregation,
        profiles=[str(profile)],
    )
    res = export_model(model, [sample_from_arrays(sample)], root / "bundle", cfg)
    return Exported(model, res.bundle_dir, res.manifest)


AGGREGATIONS = ("dense", "tables")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    return {a: export(tmp_path_factory.mktemp(a), a) for a in AGGREGATIONS}


@pytest.fixture(scope="module")
def outputs(exported: dict[str, Exported]) -> dict[str, list[tuple[Any, Any]]]:
    """Per aggregation: (Runtime outputs, eager outputs) for 3 and 1 stacked graphs."""
    from edge_sdk import Runtime

    got: dict[str, list[tuple[Any, Any]]] = {}
    for agg, e in exported.items():
        with Runtime.load(e.bundle, backend="onnxruntime", precision="fp32") as rt:
            got[agg] = [
                (list(rt.infer(x).values()), reference(e.model, x))
                for x in (features(202, 3), features(303, 1))
            ]
    return got


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_static_form_aggregates_as_asked(exported: dict[str, Exported], aggregation: str) -> None:
    spec = exported[aggregation].manifest.graph
    assert spec.aggregation == aggregation
    names = [i.name for i in exported[aggregation].manifest.inputs]
    assert names == ["x"]  # edge_index and batch are folded in


CELLS = [(a, m) for a in AGGREGATIONS for m in classes(a != "dense")]


@pytest.mark.parametrize(("aggregation", "name"), CELLS, ids=["-".join(c) for c in CELLS])
def test_model_class_matches_pyg(
    outputs: dict[str, list[tuple[Any, Any]]], aggregation: str, name: str
) -> None:
    k = list(classes(aggregation != "dense")).index(name)
    for got, want in outputs[aggregation]:
        assert got[k].shape == want[k].shape
        err = float(np.abs(got[k] - want[k]).max())
        assert err <= ATOL, f"{name} ({aggregation}): max abs err {err:.3g}"
