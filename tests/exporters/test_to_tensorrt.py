"""CompileTensorRT: the static check gates the target; the build plan is written and exact.

No GPU here: the compiler writes build plans (the engine is built on the
device); the plan's contents are what the device builder reads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.io_contract import Bucket
from edge_sdk.manifest import Precision, Target
from edge_sdk.profiles import TargetSpec

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from target_jobs import make_job  # noqa: E402

from edge_sdk.exporters.targets.base import TargetJob, TargetNotSupported  # noqa: E402
from edge_sdk.exporters.targets.to_tensorrt import CompileTensorRT  # noqa: E402
from edge_sdk.runtimes.trt import PLAN_FORMAT, gpu_available  # noqa: E402

GPU = TargetSpec(
    backend="tensorrt",
    device="GPU",
    precisions=[Precision.INT8, Precision.FP16, Precision.FP32],
    static_shapes=True,
    workspace_mb=512,
)
NO_GPU, GPU_WHY = not gpu_available()[0], gpu_available()[1]


def _gcn(static: bool) -> Any:
    from torch_geometric.nn import GCNConv

    class TwoConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = GCNConv(8, 16), GCNConv(16, 3)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            return self.c2(self.c1(x, edge_index).relu(), edge_index)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoConv().eval()


def _samples(static: bool) -> Any:
    from edge_sdk.exporters import sample_from_arrays

    rng = np.random.default_rng(0)
    shape = (4, 20, 8) if static else (20, 8)
    return sample_from_arrays(
        {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "edge_index": rng.integers(0, 20, size=(2, 60)),
        }
    )


@pytest.fixture(scope="module")
def dense_job(tmp_path_factory: pytest.TempPathFactory) -> TargetJob:
    """A dense static-topology GCN (20 nodes, 8 features) with its QDQ model."""
    out = tmp_path_factory.mktemp("trt_dense")
    return make_job(_gcn(True), _samples(True), out, GPU, form="static", int8=True)


@pytest.fixture(scope="module")
def dynamic_job(tmp_path_factory: pytest.TempPathFactory) -> TargetJob:
    out = tmp_path_factory.mktemp("trt_dyn")
    return make_job(
        _gcn(False), _samples(False), out, GPU, form="dynamic", int8=False, aggregation="scatter"
    )


def _plan(job: TargetJob, key: str, precision: str) -> dict[str, Any]:
    return json.loads((job.out / key / f"plan.{precision}.json").read_text())


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the engine is built, not planned")
def test_dense_model_gets_build_plans_for_every_precision(dense_job: TargetJob) -> None:
    cands = CompileTensorRT(batch=4)(dense_job)
    assert [c.artifact.precision for c in cands] == [Precision.INT8, Precision.FP16, Precision.FP32]
    for cand in cands:
        art, p = cand.artifact, cand.artifact.precision
        assert art.target is Target.TENSORRT and art.name == f"tensorrt-{p}"
        assert art.path == f"tensorrt/model.{p}.onnx"
        source = dense_job.onnx_int8 if p is Precision.INT8 else dense_job.onnx_fp32
        assert source is not None
        assert (dense_job.out / art.path).read_bytes() == source.read_bytes()
        assert [c.path for c in art.companions] == [f"tensorrt/plan.{p}.json"]
        plan = _plan(dense_job, "tensorrt", p)
        assert art.options == plan  # the manifest carries the plan; the JSON is for tools
        assert plan["format"] == PLAN_FORMAT and plan["onnx"] == f"model.{p}.onnx"
        assert plan["profiles"] == [
            {"x": {"min": [1, 20, 8], "opt": [4, 20, 8], "max": [4, 20, 8]}}
        ]
        assert art.input_shapes == {"x": [4, 20, 8]}  # the runtime pads batches to 4
        assert plan["workspace_mb"] == 512
        assert plan["device"] == "GPU" and plan["dla_core"] is None
        assert plan["timing_cache"] == "timing.cache"
        assert plan["tensorrt"] == {"checked": ">=10.0,<11", "opsets": [9, 20]}
        assert plan["engine"] is None
        assert cand.details["engine"] == "build plan: engine is built on the device at first load"
        assert cand.details["support"]["ok"] is True
    flags = {
        c.artifact.precision: _plan(dense_job, "tensorrt", c.artifact.precision) for c in cands
    }
    assert flags[Precision.INT8]["builder_flags"] == ["INT8", "FP16"]
    assert flags[Precision.INT8]["explicit_quantization"] is True
    assert flags[Precision.FP16]["builder_flags"] == ["FP16"]
    assert flags[Precision.FP32]["builder_flags"] == []
    assert flags[Precision.FP32]["cleared_flags"] == ["TF32"]


def test_dla_plan_and_no_fp16_fallback(dense_job: TargetJob) -> None:
    dla = TargetSpec(
        backend="tensorrt",
        device="DLA",
        dla_core=1,
        precisions=[Precision.INT8, Precision.FP32],
        static_shapes=True,
        workspace_mb=256,
        fp16_fallback=False,
    )
    job = dataclasses.replace(dense_job, target=dla)
    cands = CompileTensorRT(build_engine=False)(job)
    assert [c.artifact.precision for c in cands] == [Precision.INT8]
    assert cands[0].details["not_built"] == {"fp32": "DLA runs FP16 and INT8 only"}
    plan = _plan(job, "tensorrt-dla", "int8")
    assert cands[0].artifact.path == "tensorrt-dla/model.int8.onnx"
    assert plan["device"] == "DLA" and plan["dla_core"] == 1
    assert plan["builder_flags"] == ["INT8", "GPU_FALLBACK"]  # no FP16: fp16_fallback is off
    assert plan["workspace_mb"] == 256
    assert plan["profiles"] == [{"x": {"min": [1, 20, 8], "opt": [1, 20, 8], "max": [1, 20, 8]}}]


def test_scatter_model_is_refused_naming_the_ops(dynamic_job: TargetJob) -> None:
    with pytest.raises(TargetNotSupported) as err:
        CompileTensorRT(build_engine=False)(dynamic_job)
    msg = str(err.value)
    assert "ScatterElements(reduction=add) x3" in msg
    assert "export with --form static (dense)" in msg
    assert not (dynamic_job.out / "tensorrt").exists()  # nothing written


def test_dynamic_plan_has_one_profile_per_bucket(dynamic_job: TargetJob) -> None:
    buckets = [Bucket(max_nodes=32, max_edges=128), Bucket(max_nodes=256, max_edges=1024)]
    job = dataclasses.replace(
        dynamic_job, graph=dynamic_job.graph.model_copy(update={"buckets": buckets})
    )
    cands = CompileTensorRT(build_engine=False, allow_plugins=True)(job)
    assert [c.artifact.precision for c in cands] == [Precision.FP16, Precision.FP32]
    plan = _plan(job, "tensorrt", "fp16")
    assert plan["profiles"] == [
        {
            "x": {"min": [32, 8], "opt": [32, 8], "max": [32, 8]},
            "edge_index": {"min": [2, 128], "opt": [2, 128], "max": [2, 128]},
        },
        {
            "x": {"min": [256, 8], "opt": [256, 8], "max": [256, 8]},
            "edge_index": {"min": [2, 1024], "opt": [2, 1024], "max": [2, 1024]},
        },
    ]
    assert cands[0].artifact.input_shapes == {}  # the runtime pads to the manifest's buckets
    warned = {i["op"] for i in cands[0].details["support"]["issues"]}
    assert "ScatterElements(reduction=add)" in warned


@pytest.fixture(scope="module")
def table_job(tmp_path_factory: pytest.TempPathFactory) -> TargetJob:
    """The dynamic GCN over neighbour-table inputs (the default), two buckets, INT8 on."""
    out = tmp_path_factory.mktemp("trt_tables")
    buckets = [Bucket(max_nodes=24, max_edges=64), Bucket(max_nodes=48, max_edges=160)]
    return make_job(
        _gcn(False), _samples(False), out, GPU, form="dynamic", int8=True, buckets=buckets
    )


def test_table_model_plans_every_precision_with_table_profiles(table_job: TargetJob) -> None:
    """No scatter left: every precision is planned (INT8 from the QDQ model), and each
    bucket's profile fixes x and every table input at the bucket's capacities."""
    cands = CompileTensorRT(build_engine=False)(table_job)
    assert [c.artifact.precision for c in cands] == [Precision.INT8, Precision.FP16, Precision.FP32]
    graph = table_job.graph
    assert graph.tables is not None and len(graph.buckets) == 2
    for cand in cands:
        support = cand.details["support"]
        assert support["ok"] and support["scatter_ops"] == 0 and support["issues"] == []
        plan = _plan(table_job, "tensorrt", str(cand.artifact.precision))
        assert len(plan["profiles"]) == 2
        for b, profile in enumerate(plan["profiles"]):
            fixed = graph.fixed_shapes(b)
            assert "edge_index" not in profile
            assert profile["x"]["min"] == [graph.buckets[b].max_nodes, 8]
            assert any(k.startswith("loops.index") for k in profile)
            for name, dims in profile.items():
                assert dims["min"] == dims["opt"] == dims["max"] == fixed[name]
    int8 = _plan(table_job, "tensorrt", "int8")
    assert int8["explicit_quantization"] and int8["onnx"] == "model.int8.onnx"


def test_dynamic_without_buckets_is_refused(dynamic_job: TargetJob) -> None:
    with pytest.raises(TargetNotSupported, match="no padding buckets"):
        CompileTensorRT(build_engine=False, allow_plugins=True)(dynamic_job)


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_build_at_export_without_gpu_is_refused(dense_job: TargetJob) -> None:
    with pytest.raises(TargetNotSupported, match="needs a GPU"):
        CompileTensorRT(build_engine=True)(dense_job)


def _sensor_job(sensor_model: Any, path: Path, aggregation: str) -> TargetJob:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = sensor_model.SensorGCN().eval()
    from edge_sdk.exporters import sample_from_arrays

    x = np.random.default_rng(0).standard_normal((4, 52, 20), dtype=np.float32)
    sample = sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph()})
    return make_job(model, sample, path, GPU, form="static", aggregation=aggregation)


def test_static_sensor_model_with_readout_is_accepted(sensor_model: Any, tmp_path: Path) -> None:
    """Dense static form: the adjacency and the global_mean_pool readout have no scatter."""
    job = _sensor_job(sensor_model, tmp_path, aggregation="dense")
    cands = CompileTensorRT(build_engine=False)(job)
    assert [c.artifact.precision for c in cands] == [Precision.FP16, Precision.FP32]
    for cand in cands:
        assert cand.artifact.ops and not any(op.startswith("Scatter") for op in cand.artifact.ops)


def test_static_scatter_form_is_refused_naming_the_ops(sensor_model: Any, tmp_path: Path) -> None:
    """Above the dense threshold the static form aggregates with scatters: refused early."""
    job = _sensor_job(sensor_model, tmp_path, aggregation="scatter")
    with pytest.raises(TargetNotSupported) as err:
        CompileTensorRT(build_engine=False)(job)
    msg = str(err.value)
    assert "ScatterElements(reduction=add)" in msg
    assert "dense" in msg


@pytest.mark.requires_backend("tensorrt")
@pytest.mark.skipif(NO_GPU, reason=f"needs tensorrt and a CUDA GPU to build an engine: {GPU_WHY}")
def test_engine_built_at_export_passes_parity(dense_job: TargetJob) -> None:
    """On a GPU machine: the engine is built now, and runs within the precision's tolerance."""
    cands = CompileTensorRT(batch=4)(dense_job)
    for cand in cands:
        assert cand.details["engine"] == "engine built at export"
        assert cand.artifact.options["engine"]["path"] == f"model.{cand.artifact.precision}.engine"
        report = dense_job.check(cand.artifact)
        assert report.passed, report
