"""LiteRT: the backend conformance suite on a bundle built for ``generic-arm64``, plus
the choice between ai-edge-litert and tflite-runtime."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_conformance import BackendConformance

from edge_sdk import BackendUnavailableError, Bundle, Runtime

NODES = 16


@pytest.fixture(scope="module")
def litert_bundle(sensor_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static-form sensor bundle with a LiteRT FP32 artifact (read-only by contract)."""
    pytest.importorskip("onnx2tf", reason="building a LiteRT artifact needs onnx2tf")
    pytest.importorskip("ai_edge_litert", reason="checking a LiteRT artifact needs ai-edge-litert")
    import torch

    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    torch.manual_seed(0)
    model = sensor_model.SensorGCN().eval()
    x = np.random.default_rng(0).standard_normal((8, NODES, 20), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph(NODES)})
    out = tmp_path_factory.mktemp("litert_backend") / "sensor.bundle"
    cfg = ExportConfig(name="sensor-litert", form="static", profiles=["generic-arm64"])
    export_model(model, sample, out, cfg)
    return out


class TestLiteRt(BackendConformance):
    backend = "litert"
    engine = "ai_edge_litert"
    profile = "generic-arm64"

    @pytest.fixture
    def bundle(self, litert_bundle: Path) -> Path:
        return litert_bundle

    def test_runtime_pads_batches_to_the_fixed_batch(self, litert_bundle: Path) -> None:
        rt = Runtime.load(litert_bundle, backend="litert", threads=2)
        assert rt.artifact.input_shapes["x"][0] == 1
        inputs, expected = Bundle.open(litert_bundle).load_canary()
        x = np.concatenate([inputs["x"]] * 3)
        got = rt.backend.infer({"x": inputs["x"]})
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, atol=1e-4)
        many = rt.infer({"x": x})
        for name, want in expected.items():
            assert many[name].shape[0] == 3
            np.testing.assert_allclose(many[name], np.concatenate([want] * 3), atol=1e-4)
        assert rt.describe()["engine"] == "ai_edge_litert"


# -- which interpreter module -------------------------------------------------------------------


@pytest.mark.requires_backend("ai_edge_litert")
def test_prefers_ai_edge_litert() -> None:
    from edge_sdk.runtimes import litert

    assert litert.interpreter_module().__name__ == "ai_edge_litert.interpreter"


@pytest.mark.requires_backend("ai_edge_litert")
def test_falls_back_to_tflite_runtime(monkeypatch: pytest.MonkeyPatch, litert_bundle: Path) -> None:
    """Without ai-edge-litert the tflite-runtime module is used (a stand-in here:
    tflite-runtime 2.14 cannot create an Interpreter beside NumPy 2)."""
    from ai_edge_litert import interpreter as real

    from edge_sdk.runtimes import litert

    stand_in = types.ModuleType("tflite_runtime")
    stand_in_interp = types.ModuleType("tflite_runtime.interpreter")
    stand_in_interp.Interpreter = real.Interpreter  # type: ignore[attr-defined]
    stand_in.interpreter = stand_in_interp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tflite_runtime", stand_in)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", stand_in_interp)
    monkeypatch.setattr(litert, "_has", lambda top: top == "tflite_runtime")
    assert litert.interpreter_module() is stand_in_interp
    rt = Runtime.load(litert_bundle, backend="litert", threads=1)
    assert rt.describe()["engine"] == "tflite_runtime"
    inputs, expected = Bundle.open(litert_bundle).load_canary()
    got = rt.backend.infer(inputs)
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, atol=1e-4)


def test_neither_interpreter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_sdk.runtimes import litert

    monkeypatch.setattr(litert, "_has", lambda top: False)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as if absent
    with pytest.raises(BackendUnavailableError) as info:
        litert.interpreter_module()
    assert "edge-graph-sdk[tflite]" in str(info.value)
