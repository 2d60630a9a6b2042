"""TensorRT backend: cache keys and folders (here), engine build + inference + parity (GPU only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import runtimes
from edge_sdk.errors import BackendUnavailableError
from edge_sdk.manifest import Artifact, Precision, Target
from edge_sdk.runtimes.trt import (
    TensorRtBackend,
    cache_folder,
    default_cache_dir,
    engine_cache_key,
    gpu_available,
)

SHA = "ab" * 32
PLAN = {"format": "edge-sdk.tensorrt-plan/1", "builder_flags": ["FP16"], "workspace_mb": 512}


def test_cache_key_is_deterministic_and_changes_with_each_part() -> None:
    key = engine_cache_key("Orin", "8.7", "10.3.0", SHA, PLAN)
    assert key == engine_cache_key("Orin", "8.7", "10.3.0", SHA, dict(reversed(PLAN.items())))
    assert len(key) == 64 and int(key, 16) >= 0
    others = {
        engine_cache_key("NVIDIA H200", "8.7", "10.3.0", SHA, PLAN),  # GPU name
        engine_cache_key("Orin", "9.0", "10.3.0", SHA, PLAN),  # compute capability
        engine_cache_key("Orin", "8.7", "10.4.0", SHA, PLAN),  # TensorRT version
        engine_cache_key("Orin", "8.7", "10.3.0", "cd" * 32, PLAN),  # artifact sha256
        engine_cache_key("Orin", "8.7", "10.3.0", SHA, {**PLAN, "dla_core": 1}),  # plan
    }
    assert key not in others and len(others) == 5
    # The prebuilt-engine record does not change what is built.
    assert key == engine_cache_key("Orin", "8.7", "10.3.0", SHA, {**PLAN, "engine": {"x": 1}})


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_SDK_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tensorrt"
    folder = cache_folder("NVIDIA Jetson AGX Orin", "8.7", "10.3.0")
    assert folder == tmp_path / "tensorrt" / "nvidia-jetson-agx-orin-sm8.7-trt10.3.0"
    monkeypatch.delenv("EDGE_SDK_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "edge-sdk" / "tensorrt"


def test_backend_contract() -> None:
    backend = TensorRtBackend()  # constructing imports no engine
    assert backend.name == "tensorrt" and backend.target is Target.TENSORRT
    assert backend.static_shapes is True
    assert runtimes.backend_for_target(Target.TENSORRT) == "tensorrt"


@pytest.mark.skipif(gpu_available()[0], reason="tensorrt and a GPU are present")
def test_registry_reports_tensorrt_unavailable_with_the_extra() -> None:
    reason = runtimes.unavailable_reason("tensorrt")
    if reason is None:
        pytest.skip("tensorrt is importable here (no GPU, though)")
    assert "edge-graph-sdk[tensorrt]" in reason
    with pytest.raises(BackendUnavailableError, match=r"edge-graph-sdk\[tensorrt\]"):
        runtimes.create_backend("tensorrt")


@pytest.mark.skipif(gpu_available()[0], reason="tensorrt and a GPU are present")
def test_load_without_engine_names_what_is_missing(tmp_path: Path) -> None:
    art = Artifact(
        name="tensorrt-fp16",
        path="tensorrt/model.fp16.onnx",
        target=Target.TENSORRT,
        precision=Precision.FP16,
        size_bytes=0,
        sha256=SHA,
        options=PLAN,
    )
    with pytest.raises(BackendUnavailableError, match=r"tensorrt|cuda-python"):
        TensorRtBackend().load(tmp_path / "model.onnx", art, [], [])


def test_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any torch import now raises
        "import edge_sdk.runtimes.trt as m\n"
        "assert 'tensorrt' not in sys.modules and 'onnx' not in sys.modules\n"
        "print(m.TensorRtBackend.name)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tensorrt"


# -- on a GPU ----------------------------------------------------------------------------
GPU_OK, GPU_WHY = gpu_available()


@pytest.mark.requires_backend("tensorrt")
@pytest.mark.skipif(not GPU_OK, reason=f"needs tensorrt and a CUDA GPU: {GPU_WHY}")
def test_sensor_model_builds_caches_and_matches(
    sensor_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Build from the plan on first load, reuse the cache on the second, match PyTorch.

    The static form folds the adjacency and the global_mean_pool readout densely,
    so no plugin is involved.
    """
    import torch
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets.to_tensorrt import CompileTensorRT
    from edge_sdk.profiles import TargetSpec

    monkeypatch.setenv("EDGE_SDK_CACHE_DIR", str(tmp_path / "cache"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sensor_model.SensorGCN().eval()
    x = np.random.default_rng(0).standard_normal((4, 52, 20), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph()})
    target = TargetSpec(
        backend="tensorrt", precisions=[Precision.FP32, Precision.FP16], static_shapes=True
    )
    job = make_job(model, sample, tmp_path / "bundle", target, form="static")
    cands = CompileTensorRT(batch=4, build_engine=False)(job)
    for cand in cands:
        report = job.check(cand.artifact)  # first load: built from the plan
        assert report.passed, report
        rt = job.open(cand.artifact)
        try:
            assert rt.backend.describe()["engine_source"] == "cache"
            got = rt.infer(dict(job.cases[0].feeds))
        finally:
            rt.close()
        want = job.cases[0].expected["out"]
        tol = 1e-4 if cand.artifact.precision is Precision.FP32 else 2e-2
        np.testing.assert_allclose(got["out"], want, atol=tol * max(1.0, np.abs(want).max()))
