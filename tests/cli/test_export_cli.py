"""edge-export end to end through its real entry point: outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import edge_export

MODEL_SRC = """
import torch
from torch_geometric.nn import GCNConv, TransformerConv

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = GCNConv(5, 8)
        self.c2 = GCNConv(8, 3)
    def forward(self, x, edge_index):
        return self.c2(self.c1(x, edge_index).relu(), edge_index)

class Drifts(Net):
    def forward(self, x, edge_index):
        out = super().forward(x, edge_index)
        return out + 1.0 if torch.compiler.is_exporting() else out

class Unsupported(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = TransformerConv(5, 3)
    def forward(self, x, edge_index):
        return self.attn(x, edge_index)

def net():
    torch.manual_seed(0)
    return Net()

def drifts():
    torch.manual_seed(0)
    return Drifts()

def unsupported():
    return Unsupported()
"""


cli = edge_export


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "models.py").write_text(MODEL_SRC)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    edge_index = rng.integers(0, 12, (2, 30))
    np.savez(root / "sample.npz", x=x, edge_index=edge_index, y=rng.integers(0, 3, 12))
    (root / "request.json").write_text(
        json.dumps({"x": x[:4].tolist(), "edge_index": [[0, 1, 2, 3], [1, 2, 3, 0]]})
    )
    (root / "bad.json").write_text(
        json.dumps({"x": x[:4].tolist(), "edge_index": [[0, 1], [1, 7]]})
    )
    cli(
        "export",
        "--model",
        f"{root}/models.py:net",
        "-s",
        f"{root}/sample.npz",
        "-o",
        f"{root}/net.bundle",
        "--name",
        "net",
        "--labels",
        "a,b,c",
        "--pack",
    )
    return root


def test_export_writes_bundle_and_archive(workdir: Path) -> None:
    assert (workdir / "net.bundle" / "manifest.json").is_file()
    assert (workdir / "net.bundle.tar.gz").is_file()
    doc = json.loads(cli("inspect", str(workdir / "net.bundle.tar.gz"), "--json").stdout)
    assert doc["model"]["name"] == "net" and doc["model"]["labels"] == ["a", "b", "c"]
    assert doc["parity"][0]["passed"] is True
    assert doc["parity"][0]["metric"] == "accuracy"


def test_inspect_tables(workdir: Path) -> None:
    out = cli("inspect", str(workdir / "net.bundle")).stdout
    for needle in ("signature", "[num_nodes, 5]", "onnx-fp32", "parity", "sha256 verified"):
        assert needle in out


def test_run_json_matches_runtime(workdir: Path) -> None:
    from edge_sdk import Runtime

    proc = cli(
        "run", str(workdir / "net.bundle"), "--input", str(workdir / "request.json"), "--json"
    )
    got = np.asarray(json.loads(proc.stdout)["outputs"]["out"], np.float32)
    request = json.loads((workdir / "request.json").read_text())
    want = Runtime.load(workdir / "net.bundle").infer(request)["out"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    table = cli("run", str(workdir / "net.bundle"), "--input", str(workdir / "request.json"))
    assert "outputs" in table.stdout and any(c in table.stdout for c in ("a", "b", "c"))


def test_bad_request_is_one_line_exit_3(workdir: Path) -> None:
    proc = cli("run", str(workdir / "net.bundle"), "--input", str(workdir / "bad.json"), check=3)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "error: edge_index: index 7 at column 1 is out of range for 4 nodes (valid 0..3)"
    ]
    verbose = cli(
        "-v", "run", str(workdir / "net.bundle"), "--input", str(workdir / "bad.json"), check=3
    )
    assert "Traceback" in verbose.stderr


def test_a_user_error_stays_one_line_in_a_narrow_terminal(tmp_path: Path) -> None:
    # rich wraps at the terminal width (80 columns when stderr is not a terminal):
    # a long path must not split the error over lines that scripts read one by one
    missing = tmp_path / ("deep" * 40) / "net.bundle"
    proc = cli("inspect", str(missing), check=3, columns=40)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and lines[0].startswith("error: ")


def test_tampered_bundle_exit_3_names_file(workdir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(workdir / "net.bundle", copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    proc = cli("inspect", str(copy), check=3)
    assert "model.onnx" in proc.stderr and "sha256" in proc.stderr


def test_unsupported_layer_exit_3(workdir: Path, tmp_path: Path) -> None:
    proc = cli(
        "export",
        "--model",
        f"{workdir}/models.py:unsupported",
        "-s",
        f"{workdir}/sample.npz",
        "-o",
        str(tmp_path / "u"),
        check=3,
    )
    assert "TransformerConv" in proc.stderr and "supported layers" in proc.stderr


def test_parity_failure_exit_4(workdir: Path, tmp_path: Path) -> None:
    proc = cli(
        "export",
        "--model",
        f"{workdir}/models.py:drifts",
        "-s",
        f"{workdir}/sample.npz",
        "-o",
        str(tmp_path / "d"),
        check=4,
    )
    assert "does not reproduce" in proc.stderr and "max abs err" in proc.stderr
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_usage_error_exit_2_and_help_has_examples() -> None:
    cli("export", "--nonsense", check=2)
    assert "Examples" in cli("export", "--help").stdout
    assert "generic-x86" in cli("profiles").stdout
    assert "edge-export" in cli("--help").stdout


def test_int8_export_reports_compression(workdir: Path, tmp_path: Path) -> None:
    out = cli(
        "export",
        "--model",
        f"{workdir}/models.py:net",
        "-s",
        f"{workdir}/sample.npz",
        "-o",
        str(tmp_path / "q"),
        "--int8",
        "--max-accuracy-drop",
        "100",
    ).stdout
    assert "compression" in out and "int8" in out
    doc = json.loads(cli("inspect", str(tmp_path / "q"), "--json").stdout)
    assert [a["precision"] for a in doc["artifacts"]] == ["fp32", "int8"]
    assert doc["compression"]["quantization"]["method"] == "minmax"
    assert doc["compression"]["sizes"]["int8"] < doc["compression"]["sizes"]["fp32"]
    proc = cli(
        "run",
        str(tmp_path / "q"),
        "--input",
        str(workdir / "request.json"),
        "--precision",
        "int8",
        "--json",
    )
    assert json.loads(proc.stdout)["artifact"] == "onnx-int8"
    cli(
        "export",
        "--model",
        f"{workdir}/models.py:net",
        "-s",
        f"{workdir}/sample.npz",
        "-o",
        str(tmp_path / "bad"),
        "--calib-method",
        "magic",
        check=3,
    )


# -- padding buckets: --bucket, and the default a static-shape target gets ---------------------
def test_a_malformed_bucket_is_refused_by_name(workdir: Path, tmp_path: Path) -> None:
    for bad in ("64x128", "64:many", "64", "1:8"):
        proc = cli(
            "export",
            "--model",
            f"{workdir}/models.py:net",
            "-s",
            f"{workdir}/sample.npz",
            "-o",
            str(tmp_path / "b"),
            "--bucket",
            bad,
            check=3,
        )
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and f"--bucket '{bad}'" in lines[0], proc.stderr
        assert "NODES:EDGES[:GRAPHS]" in lines[0]
    assert "--bucket" in cli("export", "--help").stdout


def test_pi5_dynamic_export_without_bucket_gets_default_buckets_and_litert(
    workdir: Path, tmp_path: Path
) -> None:
    """A CLI user exporting a dynamic table model for the Pi 5 gets LiteRT, not a refusal:
    the buckets come from the sample (12 nodes, 30 edges -> 16:32, then 4x) and are said."""
    pytest.importorskip("onnx2tf", reason="LiteRT conversion needs onnx2tf")
    pytest.importorskip("ai_edge_litert", reason="LiteRT parity needs ai-edge-litert")
    out = tmp_path / "pi5.bundle"
    proc = cli(
        "export",
        "--model",
        f"{workdir}/models.py:net",
        "-s",
        f"{workdir}/sample.npz",
        "-o",
        str(out),
        "--form",
        "dynamic",
        "--profile",
        "raspberry-pi-5",
    )
    assert "padding buckets for litert" in proc.stderr and "16:32:1, 64:128:1" in proc.stderr
    doc = json.loads(cli("inspect", str(out), "--json").stdout)
    sizes = [(b["max_nodes"], b["max_edges"]) for b in doc["graph"]["buckets"]]
    assert sizes == [(16, 32), (64, 128)] and doc["graph"]["aggregation"] == "tables"
    # the profile's first (preferred) target
    choice = next(c for c in doc["targets"] if c["profile"] == "raspberry-pi-5")
    assert choice["backend"] == "litert" and choice["artifact"] == "litert-fp32"
    report = next(r for r in doc["parity"] if r["artifact"] == "litert-fp32")
    assert report["passed"] and max(o["max_abs_err"] for o in report["outputs"]) <= 1e-4

    # an unseen 40-node graph runs on the larger bucket's file within 1e-4 of PyTorch
    import importlib.util

    import torch

    from edge_sdk import Runtime

    spec = importlib.util.spec_from_file_location("cli_models", workdir / "models.py")
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    edge_index = rng.integers(0, 40, (2, 100))
    want = models.net().eval()(torch.from_numpy(x), torch.from_numpy(edge_index))
    with Runtime.load(out, profile="raspberry-pi-5") as rt:
        assert rt.describe()["backend"] == "litert"
        got = rt.infer({"x": x, "edge_index": edge_index})["out"]
    np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-4)
