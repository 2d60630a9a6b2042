"""Runtime.infer's hot path: no copies, no repeated checks, every check still made; warm-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_sdk import Bundle, InvalidInputError, ManifestError, Runtime
from edge_sdk.io_contract import TensorSpec
from edge_sdk.runtime import _validation_implies_specs
from edge_sdk.runtimes.base import CheckedFeeds

N, F = 52, 20

pytestmark = pytest.mark.requires_backend("onnxruntime")


@pytest.fixture(scope="module")
def rt(sensor_bundle: Path) -> Iterator[Runtime]:
    with Runtime.load(sensor_bundle, threads=1) as runtime:
        yield runtime


@pytest.fixture
def seen(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    """Feeds as the engine receives them."""
    calls: list[dict[str, np.ndarray]] = []
    impl = rt.backend._infer_impl

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feeds)
        return impl(feeds)

    monkeypatch.setattr(rt.backend, "_infer_impl", spy)
    return calls


def _x(b: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, N, F), dtype=np.float32)


def test_float32_contiguous_input_reaches_the_engine_uncopied(
    rt: Runtime, seen: list[dict[str, np.ndarray]]
) -> None:
    x = _x()
    rt.infer(x)
    rt.infer(x[0])  # [N, F]: a view with B = 1 added
    rt.infer({"x": x})
    assert [f["x"].shape for f in seen] == [(1, N, F)] * 3
    assert all(np.shares_memory(f["x"], x) for f in seen)
    assert seen[0]["x"] is x
    # Already validated against a contract that implies the input specs: not checked twice.
    assert all(type(f) is CheckedFeeds for f in seen)


def test_other_inputs_are_converted_with_the_same_result(
    rt: Runtime, seen: list[dict[str, np.ndarray]]
) -> None:
    x = _x(3)
    want = rt.infer(x)["out"]
    for other in (x.astype(np.float64), np.asfortranarray(x), x[::-1][::-1].copy(order="F")):
        np.testing.assert_allclose(rt.infer(other)["out"], want, atol=1e-6)
    assert all(f["x"].dtype == np.float32 and f["x"].flags.c_contiguous for f in seen)
    assert rt.infer(x.tolist())["out"].shape == (3, 22)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_still_refused(rt: Runtime, bad: float) -> None:
    x = _x(2)
    x[1, 7, 3] = bad
    with pytest.raises(InvalidInputError, match=r"1 NaN/Inf value\(s\), first at index \[1, 7, 3"):
        rt.infer(x)


@pytest.mark.parametrize(
    ("x", "words"),
    [
        (np.zeros((1, N, F + 1), np.float32), "features on axis 2"),
        (np.zeros((1, N - 1, F), np.float32), "nodes on axis 1"),
        (np.zeros((0, N, F), np.float32), "B = 0"),
        (np.zeros((1, 1, N, F), np.float32), "rank"),
        (np.zeros((1, N, F), np.complex64), "float dtype"),
        (np.array([[1.0], [1.0, 2.0]], dtype=object), "ragged"),
    ],
    ids=["features", "nodes", "empty", "rank", "complex", "object"],
)
def test_shape_and_dtype_are_still_checked(rt: Runtime, x: np.ndarray, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        rt.infer(x)


def test_dynamic_edge_indices_are_still_range_checked(tiny_gcn_bundle: Path) -> None:
    with Runtime.load(tiny_gcn_bundle, threads=1) as gcn:
        assert _validation_implies_specs(gcn.manifest)
        fixed_n = [
            s.model_copy(update={"shape": [20, *s.shape[1:]]}) if s.name == "x" else s
            for s in gcn.manifest.inputs
        ]
        assert not _validation_implies_specs(gcn.manifest.model_copy(update={"inputs": fixed_n}))
        x = np.zeros((4, 8), np.float32)
        with pytest.raises(InvalidInputError, match="out of range for 4 nodes"):
            gcn.infer({"x": x, "edge_index": np.array([[0, 1], [1, 4]])})
        with pytest.raises(InvalidInputError, match="negative"):
            gcn.infer({"x": x, "edge_index": np.array([[0, -1], [1, 2]])})


def test_specs_validation_does_not_imply_keep_the_backend_check(
    rt: Runtime, seen: list[dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = rt.manifest
    assert _validation_implies_specs(manifest)

    def implied(*inputs: TensorSpec) -> bool:
        return _validation_implies_specs(manifest.model_copy(update={"inputs": list(inputs)}))

    # A fixed batch dim is fine: the runtime checks B per call (below).
    assert implied(TensorSpec(name="x", dtype="float32", shape=[4, N, F]))
    # Input specs that say something the graph contract does not.
    assert not implied()
    assert not implied(TensorSpec(name="x", dtype="float16", shape=["b", N, F]))
    assert not implied(TensorSpec(name="x", dtype="float32", shape=["b", N + 1, F]))
    assert not implied(TensorSpec(name="x", dtype="float32", shape=["b", N * F]))
    assert not implied(
        TensorSpec(name="x", dtype="float32", shape=["b", N, F]),
        TensorSpec(name="mask", dtype="bool", shape=["b", N]),
    )
    # A fixed B is implied only once padded to it: otherwise the backend checks it.
    monkeypatch.setattr(rt, "_batch_dim", 4)
    monkeypatch.setattr(rt.backend, "_checks", [("x", np.dtype("float32"), [4, N, F], [(0, 4)])])
    with pytest.raises(InvalidInputError, match="expected size 4 on axis 0"):
        rt.infer(_x(1))
    assert not seen
    monkeypatch.setattr(rt.backend, "static_shapes", True)
    out = rt.infer(_x(1))  # padded to 4 by the runtime, cut back to 1
    assert out["out"].shape == (1, 22)
    assert [f["x"].shape for f in seen] == [(4, N, F)] and type(seen[0]) is CheckedFeeds


def test_the_engine_output_is_returned_by_name(rt: Runtime) -> None:
    session_out = rt.backend._session.run(None, {"x": _x(2)})[0]
    np.testing.assert_array_equal(rt.infer(_x(2))["out"], session_out)


# -- warm-up -------------------------------------------------------------------------------


def test_warmup_returns_the_median_and_changes_nothing(rt: Runtime) -> None:
    x = _x(4, seed=3)
    before = rt.infer(x)["out"].copy()
    ms = rt.warmup()
    assert isinstance(ms, float) and ms > 0
    assert rt.warmup(runs=1) > 0
    np.testing.assert_array_equal(rt.infer(x)["out"], before)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        rt.warmup(runs=0)


def test_warmup_uses_the_canary_or_zeros(
    rt: Runtime, seen: list[dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = Bundle.open(rt.bundle.root).load_canary()[0]["x"]
    rt.warmup(runs=2)
    assert len(seen) == 2 and all(np.array_equal(f["x"], canary) for f in seen)
    seen.clear()

    def unreadable() -> None:
        raise ManifestError("canary.npz: truncated")

    monkeypatch.setattr(rt.bundle, "load_canary", unreadable)
    rt.warmup(runs=1)
    monkeypatch.setattr(rt.bundle, "manifest", rt.manifest.model_copy(update={"canary": None}))
    rt.warmup(runs=1)
    assert [f["x"].shape for f in seen] == [(1, N, F)] * 2
    assert all(not f["x"].any() for f in seen)


def test_warmup_of_a_dynamic_model_without_canary(
    tiny_gcn_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Runtime.load(tiny_gcn_bundle, threads=1) as gcn:
        assert gcn.warmup() > 0
        monkeypatch.setattr(
            gcn.bundle, "manifest", gcn.manifest.model_copy(update={"canary": None})
        )
        assert gcn.warmup(runs=1) > 0


def test_close_releases_the_engine_session(sensor_bundle: Path) -> None:
    import gc
    import weakref

    runtime = Runtime.load(sensor_bundle, threads=1)
    runtime.infer(_x())
    session = weakref.ref(runtime.backend._session)
    engine = weakref.ref(runtime.backend._session._sess)  # what a bound run would pin
    runtime.close()
    gc.collect()
    assert session() is None and engine() is None
