"""OpenVINO: the backend conformance suite, FP32 inference precision, the async queue.

The bundle is the tiny GCN (dynamic form) with an OpenVINO FP32 IR built by
the real compiler (:class:`CompileOpenVINO`) and added to its manifest.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_conformance import BackendConformance
from tiny_models import TINY_GCN_FEATURES, TINY_GCN_NODES, tiny_gcn, tiny_gcn_arrays

from edge_sdk import Bundle, InvalidInputError, Runtime
from edge_sdk.bundle import write_manifest

pytestmark = pytest.mark.requires_backend("openvino")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def ov_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny GCN bundle (dynamic form) with ONNX and OpenVINO FP32 artifacts. Read-only."""
    for module in ("torch", "torch_geometric", "onnx", "openvino"):
        if not _importable(module):
            pytest.skip(f"building the OpenVINO test bundle needs {module}")
    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets.jobs import make_job
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO
    from edge_sdk.profiles import TargetSpec

    sample = sample_from_arrays(tiny_gcn_arrays())
    out = tmp_path_factory.mktemp("ov") / "tiny_gcn.bundle"
    job = make_job(tiny_gcn(), sample, out, TargetSpec(backend="openvino"), form="dynamic")
    (cand,) = CompileOpenVINO()(job)
    manifest = Bundle.open(out).manifest
    write_manifest(
        out, manifest.model_copy(update={"artifacts": [*manifest.artifacts, cand.artifact]})
    )
    return out


class TestOpenVino(BackendConformance):
    backend = "openvino"
    profile = "intel-core-cpu"

    @pytest.fixture
    def bundle(self, ov_bundle: Path) -> Path:
        return ov_bundle


def _feeds(seed: int, nodes: int = TINY_GCN_NODES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((nodes, TINY_GCN_FEATURES), dtype=np.float32),
        "edge_index": rng.integers(0, nodes, size=(2, 3 * nodes)).astype(np.int64),
    }


def _ort(bundle: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    return Runtime.load(bundle, backend="onnxruntime", precision="fp32").backend.infer(feeds)


def test_fp32_runs_in_f32_and_matches_onnxruntime(ov_bundle: Path) -> None:
    # The CPU plugin defaults to bf16 on AVX512-BF16/AMX CPUs: an FP32 artifact must
    # ask for f32, or it drifts ~1e-2 from the reference there.
    rt = Runtime.load(ov_bundle, backend="openvino", threads=1)
    info = rt.describe()
    assert info["inference_precision"] == "f32"
    assert info["device"] == "CPU"
    assert info["performance_hint"] == "LATENCY"
    assert info["num_streams"] == "1"
    assert info["source"] == "model.onnx"
    for seed in range(3):
        feeds = _feeds(seed, nodes=15 + 10 * seed)  # dynamic N: no padding on OpenVINO CPU
        got, want = rt.backend.infer(feeds), _ort(ov_bundle, feeds)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=0)


def test_async_queue_matches_sync(ov_bundle: Path) -> None:
    rt = Runtime.load(ov_bundle, backend="openvino", threads=1)
    backend = rt.backend
    feeds = [_feeds(seed, nodes=10 + seed) for seed in range(7)]  # different N per request
    many = backend.infer_many(feeds)  # type: ignore[attr-defined]
    assert len(many) == len(feeds)
    for f, got in zip(feeds, many, strict=True):
        want = backend.infer(f)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].shape == (f["x"].shape[0], 3)
            np.testing.assert_array_equal(got[name], want[name])


def test_async_queue_checks_feeds(ov_bundle: Path) -> None:
    backend = Runtime.load(ov_bundle, backend="openvino").backend
    bad = _feeds(0) | {"x": np.zeros((TINY_GCN_NODES, TINY_GCN_FEATURES), np.float64)}
    with pytest.raises(InvalidInputError, match="dtype"):
        backend.infer_many([_feeds(1), bad])  # type: ignore[attr-defined]


def test_profile_options_and_cache_dir(ov_bundle: Path, tmp_path: Path) -> None:
    from edge_sdk.runtimes import BackendOptions, create_backend

    manifest = Bundle.open(ov_bundle).manifest
    art = next(a for a in manifest.artifacts if a.target == "openvino")
    cache = tmp_path / "ov-cache"
    options = BackendOptions(
        threads=1,
        cache_dir=cache,
        extra={"device": "CPU", "performance_hint": "THROUGHPUT", "num_requests": 3},
    )
    backend = create_backend("openvino", options)
    backend.load(ov_bundle / art.path, art, manifest.inputs, manifest.outputs)
    info = backend.describe()
    assert info["performance_hint"] == "THROUGHPUT"
    assert info["num_requests"] == 3
    assert info["inference_threads"] == "1"
    assert backend.static_shapes is False
    assert cache.is_dir() and any(cache.iterdir()), "compiled blob cached in CACHE_DIR"
    got = backend.infer_many([_feeds(s) for s in range(4)])  # type: ignore[attr-defined]
    assert len(got) == 4
    backend.close()
