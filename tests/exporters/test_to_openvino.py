"""OpenVINO compiler: FP32 IR parity, INT8 from NNCF and from QDQ (measured), static reshape.

Real OpenVINO and NNCF on the 52-sensor model (static form) and the tiny GCN.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import tiny_gcn, tiny_gcn_arrays

from edge_sdk.manifest import Precision

pytestmark = pytest.mark.requires_backend("openvino")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _need_export() -> None:
    for module in ("torch", "torch_geometric", "onnx", "openvino", "nncf"):
        if not _importable(module):
            pytest.skip(f"compiling OpenVINO artifacts needs {module}")


def _target(**fields: Any) -> Any:
    from edge_sdk.profiles import TargetSpec

    return TargetSpec(backend="openvino", **fields)


def _retarget(job: Any, target: Any, where: Path) -> Any:
    """The same job in a private copy of its bundle directory, for another target."""
    out = Path(shutil.copytree(job.out, where, ignore=shutil.ignore_patterns("openvino")))
    int8 = out / job.onnx_int8.name if job.onnx_int8 else None
    return dataclasses.replace(
        job, out=out, onnx_fp32=out / job.onnx_fp32.name, onnx_int8=int8, target=target
    )


def _max_err(job: Any, artifact: Any) -> float:
    report = job.check(artifact)
    assert report.passed, report
    return max(o.max_abs_err for o in report.outputs)


@pytest.fixture(scope="module")
def sensor_job(sensor_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The 52-sensor model (static form), FP32 + QDQ INT8 ONNX exported."""
    _need_export()
    import torch
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sensor_model.SensorGCN().eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, sensor_model.NUM_SENSORS, sensor_model.WINDOW), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph()})
    out = tmp_path_factory.mktemp("ov_sensor") / "bundle"
    target = _target(precisions=["int8", "fp32"])
    return make_job(model, sample, out, target, form="static", int8=True)


@pytest.fixture(scope="module")
def sensor_built(sensor_job: Any) -> dict[Precision, Any]:
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    return {c.artifact.precision: c for c in CompileOpenVINO(latency_runs=20)(sensor_job)}


def test_sensor_fp32_ir_matches_reference(sensor_job: Any, sensor_built: dict) -> None:
    cand = sensor_built[Precision.FP32]
    art = cand.artifact
    assert art.name == "openvino-fp32"
    assert art.path == "openvino/model.fp32.xml"
    assert [f.path for f in art.companions] == ["openvino/model.fp32.bin"]
    assert art.options["inference_precision"] == "f32"
    assert art.options["device"] == "CPU"
    assert art.input_shapes == {}  # CPU: the IR keeps the dynamic batch
    assert _max_err(sensor_job, art) <= 1e-4


def test_sensor_int8_both_routes_measured(sensor_job: Any, sensor_built: dict) -> None:
    cand = sensor_built[Precision.INT8]
    art, details = cand.artifact, cand.details
    assert art.name == "openvino-int8"
    assert art.path == "openvino/model.int8.xml"
    assert details["int8_source"] in {"nncf", "qdq"}
    assert art.options["int8_source"] == details["int8_source"]
    numbers = details["candidates"]
    assert set(numbers) == {"nncf", "qdq"}, details.get("failed")
    for source in ("nncf", "qdq"):
        assert numbers[source]["passed"] is True
        assert numbers[source]["median_ms"] > 0
        assert 0 < numbers[source]["max_abs_err"] < 0.5  # quantised: moved, not broken
    assert details["int8_source"] in details["why"]
    assert "faster" in details["why"] or "output error" in details["why"]
    # Quantised for real: the IR carries FakeQuantize (NNCF) or its QDQ equivalent.
    assert {"FakeQuantize"} & set(art.ops) or {"Convert", "Subtract", "Multiply"} <= set(art.ops)
    # The losing route's files are gone; only the kept IRs remain.
    files = sorted(p.name for p in (sensor_job.out / "openvino").iterdir())
    assert files == ["model.fp32.bin", "model.fp32.xml", "model.int8.bin", "model.int8.xml"]
    assert sensor_job.check(art).passed


def test_int8_without_qdq_keeps_nncf_and_says_why(sensor_job: Any, tmp_path: Path) -> None:
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    job = dataclasses.replace(
        _retarget(sensor_job, _target(precisions=["int8"]), tmp_path / "b"), onnx_int8=None
    )
    (cand,) = CompileOpenVINO(latency_runs=5)(job)
    assert cand.details["int8_source"] == "nncf"
    assert "QDQ" in cand.details["failed"]["qdq"]
    assert "only one built" in cand.details["why"]


def test_static_reshape_pads_and_slices_batches(sensor_job: Any, tmp_path: Path) -> None:
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    job = _retarget(sensor_job, _target(static_shapes=True), tmp_path / "b")
    (cand,) = CompileOpenVINO()(job)
    art = cand.artifact
    assert art.input_shapes == {"x": [1, 52, 20]}
    rt = job.open(art)
    try:
        assert rt.backend.static_shapes is True
        assert rt.describe()["input_shapes"] == {"x": [1, 52, 20]}
        x = job.cases[0].feeds["x"][:3]  # B=3 on an engine compiled for B=1
        got = rt.infer({"x": x})["out"]
    finally:
        rt.close()
    want = job.cases[0].expected["out"][:3]
    assert got.shape == want.shape == (3, 22)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_npu_target_builds_static_irs_without_the_device(sensor_job: Any, tmp_path: Path) -> None:
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    target = _target(device="NPU", static_shapes=True, precisions=["int8", "fp16"])
    job = _retarget(sensor_job, target, tmp_path / "b")
    built = {c.artifact.precision: c for c in CompileOpenVINO()(job)}
    assert set(built) == {Precision.INT8, Precision.FP16}
    for cand in built.values():
        assert cand.artifact.name.startswith("openvino-npu-")
        assert cand.artifact.input_shapes == {"x": [1, 52, 20]}
        assert cand.artifact.options["device"] == "NPU"
    why = built[Precision.INT8].details["why"]
    assert "not measured" in why and "NPU" in why


def test_tiny_gcn_static_form_fp32(tmp_path: Path) -> None:
    _need_export()
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    sample = sample_from_arrays(tiny_gcn_arrays(batch=4, seed=1))
    job = make_job(tiny_gcn(), sample, tmp_path / "b", _target(), form="static")
    (cand,) = CompileOpenVINO()(job)
    assert cand.artifact.precision is Precision.FP32
    assert _max_err(job, cand.artifact) <= 1e-4


def test_dynamic_form_with_static_shapes_refused(tmp_path: Path) -> None:
    _need_export()
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets import TargetNotSupported
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    sample = sample_from_arrays(tiny_gcn_arrays(seed=2))
    target = _target(device="NPU", static_shapes=True, precisions=["fp16"])
    job = make_job(
        tiny_gcn(), sample, tmp_path / "b", target, form="dynamic", aggregation="scatter"
    )
    with pytest.raises(TargetNotSupported) as info:
        CompileOpenVINO()(job)
    message = str(info.value)
    assert "openvino-npu" in message
    assert "dynamic-form" in message
    assert "--form static" in message
    assert not (job.out / "openvino").exists() or not any((job.out / "openvino").iterdir())


@pytest.fixture(scope="module")
def table_npu(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The dynamic tiny GCN over neighbour-table inputs, two buckets, built for an NPU target
    (static shapes; FP32 and INT8), checked on the CPU plugin."""
    _need_export()
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO
    from edge_sdk.io_contract import Bucket

    samples = [sample_from_arrays(tiny_gcn_arrays(seed=s)) for s in (3, 4)]
    target = _target(device="NPU", static_shapes=True, precisions=["int8", "fp32"])
    buckets = [Bucket(max_nodes=24, max_edges=64), Bucket(max_nodes=48, max_edges=160)]
    out = tmp_path_factory.mktemp("ov_tables") / "b"
    job = make_job(tiny_gcn(), samples, out, target, form="dynamic", int8=True, buckets=buckets)
    return job, {c.artifact.precision: c for c in CompileOpenVINO(("nncf",))(job)}


def test_table_model_gets_one_static_ir_per_bucket(table_npu: Any) -> None:
    job, built = table_npu
    assert job.graph.tables is not None
    art = built[Precision.FP32].artifact
    buckets = art.options["buckets"]
    assert [b["file"] for b in buckets] == ["model.fp32.b0.xml", "model.fp32.b1.xml"]
    assert art.path == "openvino-npu/model.fp32.b1.xml"  # the largest bucket is the main file
    for b, entry in enumerate(buckets):
        want = job.graph.fixed_shapes(b)
        assert entry["input_shapes"] == {k: want[k] for k in entry["input_shapes"]}
        assert entry["input_shapes"]["x"] == [job.graph.buckets[b].max_nodes, 8]
        assert (job.out / "openvino-npu" / entry["file"]).is_file()
    companions = {c.path for c in art.companions}
    assert "openvino-npu/model.fp32.b0.xml" in companions
    assert "openvino-npu/model.fp32.b0.bin" in companions
    assert not any("Scatter" in op for op in art.ops)
    assert _max_err(job, art) <= 1e-4


def test_table_ir_runs_each_request_in_its_own_bucket(table_npu: Any) -> None:
    """A small graph runs the small IR, a larger one the large IR: both match PyTorch."""
    from edge_sdk.graph import DynamicGraph
    from edge_sdk.packing import pick_bucket

    job, built = table_npu
    rng = np.random.default_rng(7)
    rt = job.open(built[Precision.FP32].artifact)
    try:
        for n, e in [(10, 30), (40, 150)]:
            feeds = {
                "x": rng.standard_normal((n, 8), dtype=np.float32),
                "edge_index": rng.integers(0, n, size=(2, e)),
            }
            graph = DynamicGraph(feeds["x"], feeds["edge_index"])
            bucket = pick_bucket(graph, job.graph.buckets, False)
            assert bucket.max_nodes == (24 if n == 10 else 48)
            (ref,) = job.prepared.run_reference(feeds)
            got = rt.infer(feeds)
            assert np.abs(next(iter(got.values())) - ref).max() <= 1e-4
        assert rt.backend.describe()["buckets"] == 2
    finally:
        rt.close()


def test_table_int8_ir_per_bucket_from_nncf(table_npu: Any) -> None:
    job, built = table_npu
    cand = built[Precision.INT8]
    art = cand.artifact
    assert [b["file"] for b in art.options["buckets"]] == ["model.int8.b0.xml", "model.int8.b1.xml"]
    assert art.options["int8_source"] == "nncf"
    assert (job.out / art.path).is_file()
    assert not list((job.out / "openvino-npu").glob("model.int8-*"))  # route files renamed
    assert "FakeQuantize" in art.ops
    report = job.check(art)
    assert max(o.max_abs_err for o in report.outputs) < 0.5  # quantised, same model


def test_table_model_without_buckets_asks_for_them(tmp_path: Path) -> None:
    _need_export()
    from target_jobs import make_job

    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.targets import TargetNotSupported
    from edge_sdk.exporters.targets.to_openvino import CompileOpenVINO

    sample = sample_from_arrays(tiny_gcn_arrays(seed=2))
    target = _target(device="NPU", static_shapes=True, precisions=["fp32"])
    job = make_job(tiny_gcn(), sample, tmp_path / "b", target, form="dynamic")
    assert job.graph.tables is not None
    with pytest.raises(TargetNotSupported, match="--bucket NODES:EDGES"):
        CompileOpenVINO()(job)
