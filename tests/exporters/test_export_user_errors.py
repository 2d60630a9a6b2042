"""Samples the model cannot take are user errors: exit 3, one line naming the field.

Before, a sample with the wrong feature count and node labels given to a
graph-level model both crashed inside the exporter ("internal error ... bug",
exit 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_run import edge_export
from tiny_models import TINY_GCN_FEATURES

from edge_sdk.errors import InvalidInputError

pytest.importorskip("torch_geometric")

#: A graph-level model: one prediction per graph (graphs numbered by ``batch``).
POOLED_SRC = f"""
import torch
from torch_geometric.nn import GCNConv, global_mean_pool

class Pooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = GCNConv({TINY_GCN_FEATURES}, 3)
    def forward(self, x, edge_index, batch):
        return global_mean_pool(self.conv(x, edge_index), batch)

def pooled():
    torch.manual_seed(0)
    return Pooled()
"""
#: The node-level model: the suite's tiny GCN, loaded as a user would name it.
NET = f"{Path(__file__).resolve().parents[1] / 'tiny_models.py'}:tiny_gcn"

NODES, FEATURES, GRAPHS = 12, TINY_GCN_FEATURES, 3


def _graph(features: int = FEATURES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(NODES, features)).astype(np.float32),
        "edge_index": rng.integers(0, NODES, (2, 30)),
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user_errors")
    (root / "models.py").write_text(POOLED_SRC)
    rng = np.random.default_rng(1)
    np.savez(root / "narrow.npz", **_graph(features=FEATURES - 2))
    batch = np.repeat(np.arange(GRAPHS), NODES // GRAPHS)
    np.savez(root / "node_labels.npz", **_graph(), batch=batch, y=rng.integers(0, 3, NODES))
    np.savez(root / "graph_labels.npz", **_graph(), batch=batch, y=rng.integers(0, 3, GRAPHS))
    return root


def _error_line(stderr: str) -> str:
    """The one ``error:`` line (the console is 1,000 columns wide: rich does not wrap it)."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return errors[0]


def test_sample_with_the_wrong_feature_count_is_exit_3_naming_x(
    workdir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    proc = edge_export(
        "export", "-m", NET, "-s", f"{workdir}/narrow.npz", "-o", str(out),
        check=3, columns=1000,
    )  # fmt: skip
    line = _error_line(proc.stderr)
    assert line.startswith("error: x: the model does not run on sample narrow.npz")
    assert f"x [{NODES}, {FEATURES - 2}]" in line
    assert not out.exists()  # refused before anything was written


def test_node_labels_for_a_graph_level_model_is_exit_3_naming_y(
    workdir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    model = f"{workdir}/models.py:pooled"
    proc = edge_export(
        "export", "-m", model, "-s", f"{workdir}/node_labels.npz", "-o", str(out), check=3,
        columns=1000,
    )  # fmt: skip
    line = _error_line(proc.stderr)
    assert line.startswith(f"error: y: sample node_labels.npz has {NODES} labels")
    assert f"graph-level: one prediction per graph, {GRAPHS} in this sample" in line
    assert not out.exists()
    # One label per graph is what it takes: the same model exports and scores them.
    ok = edge_export(
        "export", "-m", model, "-s", f"{workdir}/graph_labels.npz", "-o", str(out), "--json"
    )
    assert ok.returncode == 0
    assert (out / "manifest.json").is_file()


# -- the checks themselves (API) --------------------------------------------------------------


def _prepare(model: object, *arrays: dict[str, np.ndarray]) -> object:
    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.prepare import prepare

    samples = [sample_from_arrays(a, name=f"s{i}") for i, a in enumerate(arrays)]
    return prepare(model, samples)  # type: ignore[arg-type]


def _net() -> object:
    from tiny_models import tiny_gcn

    return tiny_gcn()


def test_samples_disagreeing_on_feature_count() -> None:
    with pytest.raises(InvalidInputError) as info:
        _prepare(_net(), _graph(), _graph(features=FEATURES + 1))
    assert info.value.field == "x"
    assert f"s1 has x [{NODES}, {FEATURES + 1}]" in str(info.value)


def test_edge_index_out_of_range() -> None:
    graph = _graph()
    graph["edge_index"][1, 4] = NODES  # one past the last node
    with pytest.raises(InvalidInputError) as info:
        _prepare(_net(), graph)
    assert info.value.field == "edge_index" and f"[0, {NODES})" in str(info.value)


def test_static_sample_with_edge_attr_is_refused_not_dropped() -> None:
    """x [B, N, F] folds one topology: its edge features cannot be folded, and were
    silently dropped before (a GAT with an optional edge_attr then ignored them)."""
    from edge_sdk.errors import ExportError
    from edge_sdk.exporters import sample_from_arrays

    graph = _graph()
    static = {
        "x": np.stack([graph["x"]] * 2),
        "edge_index": graph["edge_index"],
        "edge_attr": np.ones((graph["edge_index"].shape[1], 2), np.float32),
    }
    with pytest.raises(ExportError, match="static form has no edge input") as info:
        sample_from_arrays(static, name="plant.npz")
    assert "plant.npz" in str(info.value) and "--form dynamic" in str(info.value)


def test_mask_must_match_labels() -> None:
    graph = {**_graph(), "y": np.zeros(NODES, np.int64), "mask": np.ones(NODES - 1, bool)}
    with pytest.raises(InvalidInputError) as info:
        _prepare(_net(), graph)
    assert info.value.field == "mask"


def test_node_level_labels_accepted_for_a_node_level_model() -> None:
    from edge_sdk.io_contract import OutputLevel

    graph = {**_graph(), "y": np.zeros(NODES, np.int64)}
    prepared = _prepare(_net(), graph)
    assert prepared.output_levels == [OutputLevel.NODE]  # type: ignore[attr-defined]


def test_accuracy_refuses_labels_that_do_not_fit_the_predictions() -> None:
    from edge_sdk.parity import accuracy

    logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]  # 4 rows, predictions 0 1 2 1
    assert accuracy(logits, np.array([0, 1, 2, 2]), None) == 0.75
    with pytest.raises(InvalidInputError) as info:
        accuracy(logits, np.zeros(5, np.int64), None)
    assert info.value.field == "y" and "5 labels for 4 predictions" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        accuracy(logits, np.zeros(4, np.int64), np.ones(3, bool))
    assert info.value.field == "mask"
