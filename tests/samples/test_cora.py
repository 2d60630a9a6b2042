"""The Cora sample end to end: train, export, run the bundles, compare with PyTorch.

Needs the shared Planetoid files (``../shared/datasets/planetoid/Cora/raw``
beside the repository); skips with the reason when they are absent.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sample_scripts import cora_module

import edge_sdk

REPO = Path(__file__).resolve().parents[2]
CORA_SCRIPT = REPO / "samples" / "cora" / "cora.py"
CORA_RAW = REPO.parent / "shared" / "datasets" / "planetoid" / "Cora" / "raw"
MODELS = ("gcn", "gat", "sage")
EPOCHS = 200
#: Lowest PyTorch test accuracy a correct training reaches (published: GCN 81.5 %, GAT 83.0 %).
MIN_TORCH_ACC = {"gcn": 0.78, "gat": 0.78, "sage": 0.74}
MAX_ACC_DELTA = 0.001  # 0.1 pp
MAX_LOGIT_DIFF = 1e-4
LATENCY_CALLS = 5  # the sample times 20 calls; 5 keep the test short (SAGE on ORT: ~0.5 s each)

# The shared runs are set up in the first test that uses them: 608 s (three models trained
# and exported) and 179 s measured on a loaded 2-core machine, past the suite's 300 s.
pytestmark = pytest.mark.timeout(1500)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.fixture(scope="module")
def cora_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One full run of the sample (all three models) shared by the tests below."""
    if not CORA_RAW.is_dir():
        pytest.skip(f"Cora data not found at {CORA_RAW} (shared datasets are absent here)")
    cora = cora_module()
    tmp = tmp_path_factory.mktemp("cora")
    root = tmp / "planetoid"
    shutil.copytree(CORA_RAW, root / "Cora" / "raw")
    before = _tree(root)
    out = tmp / "out"
    log = io.StringIO()
    rows = cora.run(
        root,
        out,
        MODELS,
        EPOCHS,
        seed=0,
        latency_calls=LATENCY_CALLS,
        console=Console(file=log, width=120, no_color=True),
    )
    return {
        "root": root,
        "before": before,
        "out": out,
        "log": log.getvalue(),
        "rows": {r["model"]: r for r in rows},
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_bundle_reproduces_pytorch(cora_run: dict[str, Any], name: str) -> None:
    row = cora_run["rows"][name]
    assert row["torch_acc"] >= MIN_TORCH_ACC[name], f"{name} trained badly: {row}"
    assert abs(row["bundle_acc"] - row["torch_acc"]) <= MAX_ACC_DELTA, row
    assert row["max_abs_logit_diff"] <= MAX_LOGIT_DIFF, row
    assert row["graph_form"] == "dynamic"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_manifest_parity_records_the_bundle_accuracy(cora_run: dict[str, Any], name: str) -> None:
    out: Path = cora_run["out"]
    with np.load(out / "cora.npz") as npz:
        sample = {k: npz[k] for k in npz.files}
    assert sample["mask"].sum() == 1000
    with edge_sdk.Runtime.load(out / f"{name}.bundle", precision="fp32") as rt:
        logits = rt.infer({"x": sample["x"], "edge_index": sample["edge_index"]})["logits"]
        manifest = rt.manifest
    mask = sample["mask"]
    own_acc = float((logits.argmax(-1)[mask] == sample["y"][mask]).mean())
    row = cora_run["rows"][name]
    assert own_acc == pytest.approx(row["bundle_acc"], abs=1e-12)
    parity = manifest.parity[0]
    assert parity.passed and parity.metric == "accuracy"
    assert parity.artifact_metric == pytest.approx(own_acc, abs=1e-12)
    assert parity.reference_metric == pytest.approx(row["torch_acc"], abs=1e-12)
    # The INT8 artifact beside it: within the 1 pp gate and >= 3x smaller (the
    # neighbour-table GAT keeps its attention and table aggregation in float: 3.2x;
    # GCN and SAGE reach 3.5x and more).
    assert row["int8_acc"] >= row["torch_acc"] - 0.01
    assert row["onnx_kb"] / row["int8_kb"] >= (3.0 if name == "gat" else 3.5)
    assert manifest.model.name == f"cora-{name}"
    assert manifest.model.labels == cora_module().CORA_LABELS
    assert [o.name for o in manifest.outputs] == ["logits"]


@pytest.mark.slow
def test_results_file_and_table(cora_run: dict[str, Any]) -> None:
    report = json.loads((cora_run["out"] / "cora_results.json").read_text())
    assert {"torch", "torch_geometric", "onnxruntime", "python"} <= set(report["versions"])
    assert report["date"]
    assert [r["model"] for r in report["results"]] == list(MODELS)
    for r in report["results"]:
        assert r == pytest.approx(cora_run["rows"][r["model"]])
        assert r["ort_ms"] > 0 and r["torch_ms"] > 0 and r["export_s"] > 0 and r["bundle_kb"] > 0
    assert "|Δlogit|" in cora_run["log"]


@pytest.mark.slow
def test_data_folder_is_left_untouched(cora_run: dict[str, Any]) -> None:
    assert _tree(cora_run["root"]) == cora_run["before"]


def test_missing_data_names_path_and_env_var(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cora = cora_module()
    with pytest.raises(cora.CoraNotFoundError) as info:
        cora.run(tmp_path / "nowhere", tmp_path / "out", ["gcn"], epochs=1)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "Cora" / "raw") in message
    assert cora.ENV_VAR in message
    assert not (tmp_path / "out").exists()

    assert cora.main(["--root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and cora.ENV_VAR in err and str(tmp_path) in err


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    cora = cora_module()
    with pytest.raises(ValueError, match="unknown model"):
        cora.run(tmp_path, tmp_path / "out", ["gin"], epochs=1)


# -- the same trained models compiled for OpenVINO and LiteRT (issue #4's must-show) ------------

TARGET_MODELS = ("gcn", "gat")
ENGINES = {"openvino": "openvino", "litert": "ai_edge_litert"}


def _profiles(tmp: Path) -> list[str]:
    """Two profiles whose declared precisions keep both FP32 and INT8 of each engine."""
    paths = []
    for precision in ("fp32", "int8"):
        path = tmp / f"{precision}.yaml"
        path.write_text(
            f"name: cora-{precision}\n"
            "targets:\n"
            f"  - {{use: openvino-cpu, precisions: [{precision}]}}\n"
            f"  - {{use: litert-xnnpack, precisions: [{precision}], layout: native}}\n",
            encoding="utf-8",
        )
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def cora_targets(cora_run: dict[str, Any]) -> dict[str, Path]:
    """The sample's trained GCN and GAT exported in the static form for both engines.

    Aggregation is left to ``auto``: Cora's 2,708 nodes are above the dense
    threshold, so the fixed graph is folded in as neighbour tables.
    """
    for module in ("openvino", "onnx2tf", "ai_edge_litert"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} to compile and run the OpenVINO / LiteRT artifacts")
    from edge_sdk.exporters import ExportConfig, export_model, load_model, load_samples

    out: Path = cora_run["out"]
    profiles = _profiles(out)
    bundles = {}
    for name in TARGET_MODELS:
        model = load_model(f"{REPO}/samples/cora/models.py:{name}", out / f"{name}.pt")
        bundles[name] = out / f"{name}-targets.bundle"
        export_model(
            model,
            load_samples(out / "cora.npz"),
            bundles[name],
            ExportConfig(form="static", int8=True, profiles=profiles, name=name),
        )
    return bundles


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGET_MODELS)
@pytest.mark.parametrize("backend", list(ENGINES))
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engines_reproduce_pytorch_accuracy(
    cora_run: dict[str, Any],
    cora_targets: dict[str, Path],
    name: str,
    backend: str,
    precision: str,
) -> None:
    """Through Runtime: FP32 within 0.1 pp of PyTorch, INT8 within 1 pp, on the test split."""
    with np.load(cora_run["out"] / "cora.npz") as npz:
        x, y, mask = npz["x"], npz["y"], npz["mask"]
    with edge_sdk.Runtime.load(
        cora_targets[name], backend=backend, precision=precision, threads=2
    ) as rt:
        assert rt.describe()["backend"] == backend
        assert str(rt.artifact.precision) == precision
        logits = rt.infer(x[None])["out"][0]
    acc = float((logits.argmax(-1)[mask] == y[mask]).mean())
    torch_acc = cora_run["rows"][name]["torch_acc"]
    assert abs(acc - torch_acc) <= (MAX_ACC_DELTA if precision == "fp32" else 0.01), (
        acc,
        torch_acc,
    )
    if precision == "fp32":
        torch_logits = _torch_logits(cora_run, name)
        assert np.abs(logits - torch_logits).max() <= MAX_LOGIT_DIFF


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGET_MODELS)
def test_target_choices_recorded(cora_targets: dict[str, Path], name: str) -> None:
    manifest = edge_sdk.Bundle.open(cora_targets[name]).manifest
    chosen = {(c.profile, c.backend): c for c in manifest.targets}
    for precision in ("fp32", "int8"):
        for backend in ENGINES:
            choice = chosen[(f"cora-{precision}", backend)]
            assert choice.artifact == f"{backend}-{precision}", choice
            assert choice.reason.startswith(f"declared order {precision}")
    reports = {r.artifact: r for r in manifest.parity}
    assert {f"{b}-{p}" for b in ENGINES for p in ("fp32", "int8")} <= set(reports)
    assert all(r.passed for r in reports.values())


#: Issue #17's bounds for the static form over neighbour tables (dense was 29.7 MB per ONNX).
MAX_ONNX_BYTES = 1_500_000
MAX_BUNDLE_BYTES = 5_000_000


@pytest.mark.slow
@pytest.mark.parametrize("name", TARGET_MODELS)
def test_static_tables_are_small(cora_targets: dict[str, Path], name: str) -> None:
    """FP32 ONNX <= 1.5 MB and the whole bundle (ORT, OpenVINO, LiteRT; FP32 + INT8) <= 5 MB."""
    bundle = cora_targets[name]
    graph = edge_sdk.Bundle.open(bundle).manifest.graph
    assert graph.aggregation == "tables", graph
    assert graph.aggregation_reason == "N=2708 > dense threshold 256: not timed"
    assert (bundle / "model.onnx").stat().st_size <= MAX_ONNX_BYTES
    assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) <= MAX_BUNDLE_BYTES


def _torch_logits(cora_run: dict[str, Any], name: str) -> np.ndarray:
    import torch

    from edge_sdk.exporters import load_model

    out: Path = cora_run["out"]
    model = load_model(f"{REPO}/samples/cora/models.py:{name}", out / f"{name}.pt").eval()
    with np.load(out / "cora.npz") as npz, torch.no_grad():
        return model(torch.from_numpy(npz["x"]), torch.from_numpy(npz["edge_index"])).numpy()
