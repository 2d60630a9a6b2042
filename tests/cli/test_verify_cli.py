"""``edge-export verify``: re-running export-time parity on this machine, and its exit codes.

One static sensor-model bundle built for ``intel-core-cpu`` (OpenVINO + ONNX
Runtime) and ``jetson-orin-nano`` (a TensorRT build plan, not runnable here).
Tests that tamper with it take a private copy.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.requires_backend("openvino"), pytest.mark.requires_backend("onnxruntime")]

#: LiteRT is checked too where its engine and converter are installed.
LITERT = all(importlib.util.find_spec(m) for m in ("ai_edge_litert", "onnx2tf", "tensorflow"))


@pytest.fixture(scope="module")
def bundle(sensor_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sensor_model.SensorGCN().eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 52, 20), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph()})
    out = tmp_path_factory.mktemp("verify") / "sensors.bundle"
    profiles = ["intel-core-cpu", "jetson-orin-nano"]
    if LITERT:
        # One LiteRT artifact (native layout, FP32 only: the conversion is the slow part).
        board = out.parent / "board.yaml"
        board.write_text(
            "name: board\ntargets:\n  - use: litert-xnnpack\n    layout: native\n"
            "    precisions: [fp32]\n"
        )
        profiles.append(str(board))
    cfg = ExportConfig(name="sensors", form="static", profiles=profiles)
    return export_model(model, sample, out, cfg).bundle_dir


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "b"))


def verify(*args: str, env: dict[str, str] | None = None) -> Any:
    from edge_sdk.cli.export_cli import app

    env = {"COLUMNS": "220", "EDGE_SDK_DISABLE_BACKENDS": "", **(env or {})}
    return CliRunner().invoke(app, ["verify", *args], env=env)


def _rewrite_manifest(root: Path, **update: Any) -> None:
    from edge_sdk.bundle import write_manifest
    from edge_sdk.manifest import Manifest

    m = Manifest.model_validate_json((root / "manifest.json").read_text())
    write_manifest(root, m.model_copy(update=update))


def test_fresh_bundle_passes_and_lists_skipped(bundle: Path) -> None:
    res = verify(str(bundle))
    assert res.exit_code == 0, res.output
    assert f"{2 + LITERT} artifact(s) reproduce the reference" in res.output
    # Each row on data: the table's cells wrap with the terminal's width (a pytest-xdist
    # worker's console is 80 columns whatever COLUMNS says).
    rows = {r["artifact"]: r for r in json.loads(verify(str(bundle), "--json").stdout)}
    assert {"onnx-fp32", "openvino-fp32"} <= set(rows)
    assert rows["tensorrt-fp16"]["report"] is None
    assert "tensorrt is not installed" in rows["tensorrt-fp16"]["skipped"]


def test_json_output(bundle: Path) -> None:
    res = verify(str(bundle), "--json")
    assert res.exit_code == 0, res.output
    rows = {r["artifact"]: r for r in json.loads(res.stdout)}
    ran = {"onnx-fp32", "openvino-fp32"} | ({"litert-fp32"} if LITERT else set())
    assert set(rows) == ran | {"tensorrt-fp16"}
    for name in ran:
        report = rows[name]["report"]
        assert rows[name]["skipped"] is None and report["passed"] is True
        assert report["samples"] == 1
        assert all(o["max_abs_err"] <= 1e-4 for o in report["outputs"])
    trt = rows["tensorrt-fp16"]
    assert trt["report"] is None and "tensorrt is not installed" in trt["skipped"]
    assert trt["backend"] == "tensorrt" and trt["precision"] == "fp16"


def test_backend_filter(bundle: Path) -> None:
    res = verify(str(bundle), "--backend", "openvino", "--json")
    assert res.exit_code == 0, res.output
    assert [r["artifact"] for r in json.loads(res.stdout)] == ["openvino-fp32"]


def test_verification_set_matches_the_manifest(bundle: Path) -> None:
    from edge_sdk.bundle import Bundle
    from edge_sdk.parity import load_verification, verify_bundle

    b = Bundle.open(bundle)
    v = b.manifest.verification
    assert v is not None and v.cases == 1 and v.atol == 1e-4
    (case,) = load_verification(b)
    assert case.feeds["x"].shape == (4, 52, 20) and case.expected["out"].shape == (4, 22)
    checks = verify_bundle(b, backends=["onnxruntime"])
    assert [(c.artifact.name, c.report is not None and c.report.passed) for c in checks] == [
        ("onnx-fp32", True)
    ]


def test_altered_references_fail_the_check_itself(copy: Path) -> None:
    """References changed *and* re-hashed: the checksums pass, parity must catch it (exit 4)."""
    from edge_sdk.bundle import Bundle, file_digest
    from edge_sdk.manifest import Manifest

    path = copy / "verify.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["0/out/out"] = arrays["0/out/out"] * 1.01 + 0.01
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    size, sha = file_digest(path)
    m = Manifest.model_validate_json((copy / "manifest.json").read_text())
    assert m.verification is not None
    _rewrite_manifest(
        copy, verification=m.verification.model_copy(update={"sha256": sha, "size_bytes": size})
    )
    Bundle.open(copy)  # the checksums are consistent again
    res = verify(str(copy))
    assert res.exit_code == 4, res.output
    failed = "onnx-fp32, openvino-fp32" + (", litert-fp32" if LITERT else "")
    assert f"parity failed on this machine for {failed}" in res.output


def test_tampered_verification_file_is_a_checksum_error(copy: Path) -> None:
    path = copy / "verify.npz"
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    res = verify(str(copy))
    assert res.exit_code == 3, res.output
    assert "verify.npz" in res.output and "sha256" in res.output


def test_bundle_without_verification_set(copy: Path) -> None:
    _rewrite_manifest(copy, verification=None)
    (copy / "verify.npz").unlink()
    res = verify(str(copy))
    assert res.exit_code == 3, res.output
    assert "bundle has no verification set" in res.output and "re-export" in res.output


def test_nothing_runnable_here(bundle: Path) -> None:
    res = verify(str(bundle), env={"EDGE_SDK_DISABLE_BACKENDS": "openvino,onnxruntime,litert"})
    assert res.exit_code == 3, res.output
    assert "no artifact could run here" in res.output
    assert "disabled by EDGE_SDK_DISABLE_BACKENDS" in res.output


def test_missing_bundle(tmp_path: Path) -> None:
    res = verify(str(tmp_path / "nope.bundle"))
    assert res.exit_code == 3, res.output
