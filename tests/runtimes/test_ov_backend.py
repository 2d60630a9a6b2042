"""OpenVINO: the backend conformance suite, FP32 inference precision, infer_many, teardown.

The bundle is the tiny GCN (dynamic form) with an OpenVINO FP32 IR built by
the real compiler (:class:`CompileOpenVINO`) and added to its manifest.
"""

from __future__ import annotations

import importlib.util
import threading
import time
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
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO
    from edge_sdk.profiles import TargetSpec

    sample = sample_from_arrays(tiny_gcn_arrays())
    out = tmp_path_factory.mktemp("ov") / "tiny_gcn.bundle"
    # Scatter, as tiny_gcn_scatter_bundle: the conformance tests feed (x, edge_index) to the engine.
    target = TargetSpec(backend="openvino")
    job = make_job(tiny_gcn(), sample, out, target, form="dynamic", aggregation="scatter")
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


def test_a_later_request_never_writes_into_the_callers_inputs(ov_bundle: Path) -> None:
    # The sync path once shared the caller's arrays with its request (share_inputs): the CPU
    # plugin kept the last one as its stream's input memory and infer_many's requests then
    # wrote their own inputs into it (the caller's x changed; every later result was wrong).
    backend = _openvino_backend(ov_bundle)
    feeds = [_feeds(seed, nodes=12 + seed) for seed in range(4)]
    pristine = [{k: v.copy() for k, v in f.items()} for f in feeds]
    want = [backend.infer(f) for f in feeds]
    _assert_same(backend.infer_many(feeds), want)
    for f, p in zip(feeds, pristine, strict=True):
        for name in p:
            np.testing.assert_array_equal(f[name], p[name])
    _assert_same([backend.infer(f) for f in feeds], want)
    backend.close()


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


# -- teardown under threads (issue #15: a close deadlocked with an AsyncInferQueue callback) ---

CYCLE_THREADS, CYCLES_PER_THREAD = 4, 50
JOIN_S = 150.0  # far above the ~10-30 s the cycles take; a deadlock fails here, not in CI


def _openvino_backend(bundle: Path, **extra: Any) -> Any:
    from edge_sdk.runtimes import BackendOptions, create_backend

    manifest = Bundle.open(bundle).manifest
    art = next(a for a in manifest.artifacts if a.target == "openvino")
    backend = create_backend("openvino", BackendOptions(threads=1, extra=extra or None))
    backend.load(bundle / art.path, art, manifest.inputs, manifest.outputs)
    return backend


def _run_threads(target: Any, count: int) -> list[BaseException]:
    """Run ``target(k)`` on ``count`` daemon threads; return what they raised.

    Daemon threads and a bounded join: a deadlocked engine fails the test (and
    cannot keep the interpreter from exiting) instead of hanging the suite.
    """
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:  # reported by the caller, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads {stuck} still running after {JOIN_S:g} s: deadlock"
    return errors


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for name in w:
            np.testing.assert_array_equal(g[name], w[name])


def test_load_infer_many_close_cycles_from_four_threads_finish(ov_bundle: Path) -> None:
    feeds = [_feeds(seed, nodes=10 + 3 * seed) for seed in range(5)]
    reference = _openvino_backend(ov_bundle)
    want = [reference.infer(f) for f in feeds]
    reference.close()
    cycles = [0] * CYCLE_THREADS

    def cycle(k: int) -> None:
        for _ in range(CYCLES_PER_THREAD):
            backend = _openvino_backend(ov_bundle, num_requests=3)
            got = backend.infer_many(feeds)
            backend.close()
            _assert_same(got, want)
            cycles[k] += 1

    errors = _run_threads(cycle, CYCLE_THREADS)
    assert errors == []
    assert cycles == [CYCLES_PER_THREAD] * CYCLE_THREADS  # 200 cycles in all


def test_one_backend_shared_by_threads_closes_while_they_infer(ov_bundle: Path) -> None:
    from edge_sdk import InternalError

    feeds = [_feeds(seed, nodes=12 + seed) for seed in range(4)]
    backend = _openvino_backend(ov_bundle, num_requests=2)
    want = [backend.infer(f) for f in feeds]
    served = [0] * CYCLE_THREADS
    refused: list[str] = []
    warm = threading.Barrier(CYCLE_THREADS + 1)

    def hammer(k: int) -> None:
        for i in range(10_000):  # bounded; close() ends it long before
            if i == 5:
                warm.wait(timeout=60)  # every thread has served before the close
            try:
                got = backend.infer_many(feeds) if (k + i) % 2 else [backend.infer(feeds[i % 4])]
            except InternalError as exc:
                refused.append(str(exc))
                return
            _assert_same(got, want if (k + i) % 2 else [want[i % 4]])
            served[k] += 1

    def close_midway(k: int) -> None:
        if k == CYCLE_THREADS:
            warm.wait(timeout=60)
            backend.close()
        else:
            hammer(k)

    errors = _run_threads(close_midway, CYCLE_THREADS + 1)
    assert errors == []
    assert all(n >= 5 for n in served), served
    # Every thread was refused cleanly once the backend closed, none crashed or hung.
    assert len(refused) == CYCLE_THREADS
    assert all("used after close()" in r or "used before load()" in r for r in refused), refused
