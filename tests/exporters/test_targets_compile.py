"""Per-profile compilation (``CompileTargets``) and ``Runtime.load`` of the result.

One multi-profile export of the 52-sensor model (static form, INT8 on) is
shared by the module: OpenVINO (CPU and NPU), TensorRT build plans for two
Jetsons, ONNX Runtime, and a custom profile that measures on this machine.
Two more exports break an OpenVINO artifact on purpose: parity must refuse it.
Real engines throughout (OpenVINO, ONNX Runtime); TensorRT is not installed here.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.manifest import Manifest, Precision, TargetChoice

pytestmark = [
    pytest.mark.requires_backend("openvino"),
    pytest.mark.requires_backend("onnxruntime"),
    pytest.mark.requires_backend("nncf"),
]

PROFILES = [
    "intel-core-cpu",
    "generic-x86",
    "jetson-orin-nano",
    "jetson-agx-orin",
    "intel-core-ultra-npu",
]

MEASURED_YAML = """\
name: build-box
description: the CI machine itself (measured)
device_class: x86-cpu
measure: true
threads: 2
targets:
  - use: openvino-cpu
    threads: 1          # a run-time setting: shares the intel-core-cpu build
  - use: ort-cpu
"""


def _sample(sensor_model: Any, seed: int = 0) -> Any:
    from edge_sdk.exporters import sample_from_arrays

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, sensor_model.NUM_SENSORS, sensor_model.WINDOW), dtype=np.float32)
    return sample_from_arrays({"x": x, "edge_index": sensor_model.sensor_graph()})


def _model(sensor_model: Any) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return sensor_model.SensorGCN().eval()


def _export(sensor_model: Any, out: Path, profiles: list[str], int8: bool) -> Any:
    from edge_sdk.exporters import ExportConfig, export_model

    cfg = ExportConfig(name="sensors", form="static", int8=int8, profiles=profiles)
    return export_model(_model(sensor_model), _sample(sensor_model), out, cfg)


@pytest.fixture(scope="module")
def measured_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "build-box.yaml"
    path.write_text(MEASURED_YAML)
    return path


@pytest.fixture(scope="module")
def multi(sensor_model: Any, measured_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The multi-profile export (bundle directory and manifest). Read-only."""
    out = tmp_path_factory.mktemp("multi") / "sensors.bundle"
    return _export(sensor_model, out, [*PROFILES, str(measured_yaml)], int8=True)


def _choices(m: Manifest, profile: str) -> list[TargetChoice]:
    return [c for c in m.targets if c.profile == profile]


# -- orchestration ------------------------------------------------------------------------


def test_one_choice_per_profile_target_with_a_reason(multi: Any, measured_yaml: Path) -> None:
    from edge_sdk.profiles import load_profile

    m: Manifest = multi.manifest
    assert m.profiles == [*PROFILES, "build-box"]
    names = {a.name for a in m.artifacts}
    for name in [*PROFILES, measured_yaml]:
        prof = load_profile(name)
        got = [(c.backend, c.device) for c in _choices(m, prof.name)]
        assert got == [(t.backend, t.device) for t in prof.targets], name
    for c in m.targets:
        assert c.reason, c
        assert c.artifact in names, c  # every target of this model got an artifact


def test_declared_choice_follows_the_precision_order(multi: Any) -> None:
    m: Manifest = multi.manifest
    by = {(c.profile, c.backend, c.device): c for c in m.targets}
    ov = by["intel-core-cpu", "openvino", "CPU"]
    # openvino-cpu declares [int8, fp32]; INT8 passes the gate, so it ships.
    assert (ov.artifact, ov.precision) == ("openvino-int8", Precision.INT8)
    assert ov.reason.startswith("declared")
    assert ov.reason.index("int8") < ov.reason.index("fp32")  # names the order it followed
    assert all(x.median_ms is None for x in ov.measured)  # not this machine's class: not timed
    ort = by["generic-x86", "onnxruntime", "CPU"]
    assert (ort.artifact, ort.precision) == ("onnx-fp32", Precision.FP32)  # ort-cpu: fp32 first
    npu = by["intel-core-ultra-npu", "openvino", "NPU"]
    assert (npu.artifact, npu.precision) == ("openvino-npu-int8", Precision.INT8)
    # The NPU profile's CPU fallback is the very artifact intel-core-cpu ships (built once).
    assert by["intel-core-ultra-npu", "openvino", "CPU"].artifact == "openvino-int8"


def test_measured_profile_times_every_candidate_and_ships_the_fastest(multi: Any) -> None:
    m: Manifest = multi.manifest
    ov = next(c for c in _choices(m, "build-box") if c.backend == "openvino")
    assert {x.artifact for x in ov.measured} == {"openvino-fp32", "openvino-int8"}
    for x in ov.measured:
        assert x.passed and x.threads == 1  # the target's threads override the profile's 2
        assert x.median_ms is not None and x.p99_ms is not None
        assert 0 < x.median_ms <= x.p99_ms
    best = min((x for x in ov.measured if x.passed), key=lambda x: x.median_ms or np.inf)
    assert ov.artifact == best.artifact and ov.precision == best.precision
    assert ov.reason.startswith("measured")
    loser = next(x for x in ov.measured if x.artifact != best.artifact)
    assert f"vs {loser.artifact}" in ov.reason  # the reason shows what it was compared with


def test_unchosen_candidates_are_deleted_and_not_listed(multi: Any) -> None:
    m: Manifest = multi.manifest
    root: Path = multi.bundle_dir
    names = {a.name for a in m.artifacts}
    chosen = {c.artifact for c in m.targets}
    # Only chosen artifacts, plus the two ONNX models that always stay.
    assert names == chosen | {"onnx-fp32", "onnx-int8"}
    assert "openvino-npu-fp16" not in names and "tensorrt-fp16" not in names
    listed = {"manifest.json", m.canary.path if m.canary else "", "verify.npz"}
    for a in m.artifacts:
        listed |= {a.path, *(f.path for f in a.companions)}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    # No orphan file of an unchosen candidate (or of a staging folder) is left behind.
    assert on_disk == listed - {""}
    assert not list(root.glob(".build-*"))


def test_tensorrt_gets_build_plans_checked_on_the_device(multi: Any) -> None:
    import json

    from edge_sdk.runtimes.trt import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is present: TensorRT parity runs here")
    m: Manifest = multi.manifest
    root: Path = multi.bundle_dir
    nano = next(c for c in _choices(m, "jetson-orin-nano") if c.backend == "tensorrt")
    agx = [c for c in _choices(m, "jetson-agx-orin") if c.backend == "tensorrt"]
    assert nano.artifact == "tensorrt-int8"
    assert nano.reason.startswith("declared") and "checked on the device" in nano.reason
    assert all(x.note == "parity not run: engine not installed here" for x in nano.measured)
    # Different settings for the same engine: separate plans, no overwrite.
    assert [(c.device, c.artifact) for c in agx] == [
        ("GPU", "tensorrt-int8-2"),
        ("DLA", "tensorrt-dla-int8"),
    ]
    reported = {r.artifact for r in m.parity}
    plans = {}
    for name in ("tensorrt-int8", "tensorrt-int8-2", "tensorrt-dla-int8"):
        art = m.artifact(name)
        assert name not in reported  # nothing ran here
        (plan_ref,) = [f for f in art.companions if f.path.endswith(".json")]
        plans[name] = json.loads((root / plan_ref.path).read_text())
        assert (root / art.path).is_file() and plans[name]["engine"] is None
    assert plans["tensorrt-int8"]["workspace_mb"] == 512
    assert plans["tensorrt-int8-2"]["workspace_mb"] == 4096
    assert plans["tensorrt-dla-int8"]["device"] == "DLA"
    assert plans["tensorrt-dla-int8"]["dla_core"] == 0


def test_npu_artifact_is_checked_on_the_cpu_plugin(multi: Any) -> None:
    from edge_sdk.exporters.targets.base import openvino_has

    if openvino_has("NPU"):
        pytest.skip("this machine has an NPU")
    reports = {r.artifact: r for r in multi.manifest.parity}
    npu = reports["openvino-npu-int8"]
    assert npu.passed and npu.note == "checked on the CPU plugin: no NPU here"
    assert reports["openvino-int8"].note == ""
    assert multi.manifest.artifact("openvino-npu-int8").options["device"] == "NPU"


def test_bundle_verifies_and_packs(multi: Any, tmp_path: Path) -> None:
    from edge_sdk.bundle import Bundle, pack

    b = Bundle.open(multi.bundle_dir)
    assert b.manifest.targets == multi.manifest.targets
    archive = pack(multi.bundle_dir, tmp_path / "sensors.tar.gz")
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
    assert "tensorrt-2/plan.int8.json" in members and "openvino-npu/model.int8.bin" in members
    assert Bundle.open(archive).manifest.model.name == "sensors"


def test_bundle_reverifies_here_skipping_what_cannot_run(multi: Any) -> None:
    from edge_sdk.bundle import Bundle
    from edge_sdk.parity import verify_bundle

    if _ov_npu():
        pytest.skip("this machine has an NPU")
    checks = {c.artifact.name: c for c in verify_bundle(Bundle.open(multi.bundle_dir))}
    assert set(checks) == {a.name for a in multi.manifest.artifacts}
    for name in ("onnx-fp32", "onnx-int8", "openvino-int8"):
        report = checks[name].report
        assert report is not None and report.passed, name
    # The NPU IR needs the NPU plugin: skipped with the load failure, not failed.
    assert checks["openvino-npu-int8"].report is None
    assert "openvino-npu/model.int8.xml" in checks["openvino-npu-int8"].skipped
    assert "tensorrt is not installed" in checks["tensorrt-int8"].skipped


# -- Runtime.load picks what the export chose -------------------------------------------------


def _ov_npu() -> bool:
    from edge_sdk.exporters.targets.base import openvino_has

    return openvino_has("NPU")


@pytest.mark.parametrize("profile", ["intel-core-cpu", "generic-x86", "build-box"])
def test_runtime_loads_the_recorded_choice(
    multi: Any, measured_yaml: Path, profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk.runtime import Runtime

    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    first = _choices(multi.manifest, profile)[0]
    with Runtime.load(
        multi.bundle_dir, profile=measured_yaml if profile == "build-box" else profile
    ) as rt:
        d = rt.describe()
        assert d["artifact"] == first.artifact
        assert d["why"][0] == f"profile: {profile}"
        assert d["why"][-1].endswith(first.reason)
        out = rt.infer(_sample_x())
    assert out["out"].shape == (2, 22) and np.isfinite(out["out"]).all()


def _sample_x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 52, 20), dtype=np.float32)


def test_runtime_jetson_profile_falls_back_to_onnxruntime(multi: Any) -> None:
    from edge_sdk.runtime import Runtime
    from edge_sdk.runtimes import unavailable_reason

    if unavailable_reason("tensorrt") is None:
        pytest.skip("TensorRT is installed here")
    with Runtime.load(multi.bundle_dir, profile="jetson-orin-nano") as rt:
        d = rt.describe()
    assert d["artifact"] == "onnx-fp32"
    assert any(w.startswith("tensorrt: unavailable") for w in d["why"])


def test_runtime_npu_profile_falls_back_to_the_cpu_artifact(multi: Any) -> None:
    from edge_sdk.runtime import Runtime

    if _ov_npu():
        pytest.skip("this machine has an NPU")
    with Runtime.load(multi.bundle_dir, profile="intel-core-ultra-npu") as rt:
        d = rt.describe()
        assert d["artifact"] == "openvino-int8"
        # The CPU fallback runs on the CPU, not with the NPU target's settings.
        assert (rt.backend.options.extra or {}).get("device", "CPU") == "CPU"
    assert any("openvino-npu-int8 did not load" in w for w in d["why"])


def test_runtime_auto_follows_the_bundle_profile_order(
    multi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk.runtime import Runtime

    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    with Runtime.load(multi.bundle_dir) as rt:
        d = rt.describe()
    assert d["artifact"] == "openvino-int8"  # intel-core-cpu comes first in the bundle
    assert d["why"] == [
        "profile: auto",
        "openvino: chosen, artifact openvino-int8 (int8): "
        "chosen at export for profile intel-core-cpu",
    ]


def test_runtime_auto_without_openvino_falls_back(multi: Any, disable_backends: Any) -> None:
    from edge_sdk.runtime import Runtime

    disable_backends("openvino")
    with Runtime.load(multi.bundle_dir) as rt:
        d = rt.describe()
    assert d["backend"] == "onnxruntime" and d["artifact"] == "onnx-fp32"
    assert "openvino: unavailable: disabled by EDGE_SDK_DISABLE_BACKENDS" in d["why"]
    assert d["why"][-1].endswith("chosen at export for profile intel-core-cpu")


def test_runtime_precision_forcing(multi: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_sdk.errors import UnsupportedTargetError
    from edge_sdk.runtime import Runtime

    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    names = {a.name for a in multi.manifest.artifacts}
    with Runtime.load(multi.bundle_dir, profile="generic-x86", precision="int8") as rt:
        assert rt.describe()["artifact"] == "onnx-int8"
        assert rt.describe()["why"][-1].endswith("precision forced to int8")
    with Runtime.load(multi.bundle_dir, precision="fp32") as rt:
        # auto + fp32: the fastest engine that has an FP32 artifact.
        expected = "openvino-fp32" if "openvino-fp32" in names else "onnx-fp32"
        assert rt.artifact.precision is Precision.FP32 and rt.describe()["artifact"] == expected
    with Runtime.load(multi.bundle_dir, backend="onnxruntime", precision="fp32") as rt:
        assert rt.describe()["artifact"] == "onnx-fp32"
    with pytest.raises(UnsupportedTargetError, match="unknown precision 'int4'"):
        Runtime.load(multi.bundle_dir, precision="int4")
    with pytest.raises(UnsupportedTargetError, match="no artifact"):
        Runtime.load(multi.bundle_dir, backend="onnxruntime", precision="fp16")


def test_runtime_profile_the_bundle_was_not_built_for(
    multi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk.runtime import Runtime

    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    with Runtime.load(multi.bundle_dir, profile="intel-igpu") as rt:
        d = rt.describe()
    # No GPU artifact: the declared openvino-cpu order [int8, fp32] picks the CPU INT8 IR.
    assert d["artifact"] == "openvino-int8"
    assert "declared order of profile intel-igpu" in d["why"][-1]
    assert "not built for this profile" in d["why"][-1]
    with Runtime.load(multi.bundle_dir, profile="raspberry-pi-5") as rt:
        d = rt.describe()
    assert d["artifact"] == "onnx-fp32"  # no LiteRT artifact; ort-cpu declares fp32 first


# -- broken artifacts are refused -------------------------------------------------------------


def _corrupt_ir(xml: Path) -> None:
    """Scale the largest float constant of an IR (a weight or the adjacency): wrong model."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml)
    consts = [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32
    ]
    big = max(consts, key=lambda op: int(np.prod(op.get_output_shape(0))))
    data = np.array(big.get_data(), dtype=np.float32)
    new = ov.opset13.constant(-2.0 * data + 0.5)
    big.output(0).replace(new.output(0))
    model.validate_nodes_and_infer_types()
    tmp = xml.with_name("tmp_" + xml.name)
    ov.save_model(model, tmp, compress_to_fp16=False)
    tmp.replace(xml)
    tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))


@pytest.fixture
def break_openvino(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[Precision]]:
    """Make the OpenVINO compiler return a corrupted IR for the precisions put in the set.

    The manifest entry gets the corrupted files' sizes and checksums, so only
    parity can notice.
    """
    from edge_sdk.bundle import file_digest
    from edge_sdk.exporters.targets import to_openvino

    broken: set[Precision] = set()
    real = to_openvino.CompileOpenVINO.__call__

    def call(self: Any, job: Any) -> Any:
        cands = real(self, job)
        for c in cands:
            a = c.artifact
            if a.precision not in broken:
                continue
            _corrupt_ir(job.out / a.path)
            size, sha = file_digest(job.out / a.path)
            refs = []
            for f in a.companions:
                f_size, f_sha = file_digest(job.out / f.path)
                refs.append(f.model_copy(update={"size_bytes": f_size, "sha256": f_sha}))
            c.artifact = a.model_copy(
                update={"size_bytes": size, "sha256": sha, "companions": refs}
            )
        return cands

    monkeypatch.setattr(to_openvino.CompileOpenVINO, "__call__", call)
    yield broken


def test_broken_fp32_artifact_fails_the_export(
    sensor_model: Any, break_openvino: set[Precision], tmp_path: Path
) -> None:
    from edge_sdk.errors import ParityError

    break_openvino.add(Precision.FP32)
    out = tmp_path / "new.bundle"
    with pytest.raises(ParityError) as info:
        _export(sensor_model, out, ["intel-core-cpu"], int8=False)
    msg = str(info.value)
    assert "artifact openvino-fp32 does not reproduce the PyTorch model on openvino" in msg
    assert "max abs err" in msg and "refused" in msg
    assert not out.exists()  # nothing half-written left behind
    # A directory the user created stays, but empty.
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(ParityError):
        _export(sensor_model, given, ["intel-core-cpu"], int8=False)
    assert given.is_dir() and not any(given.iterdir())


def test_broken_int8_candidate_is_dropped_and_fp32_ships(
    sensor_model: Any, break_openvino: set[Precision], measured_yaml: Path, tmp_path: Path
) -> None:
    from edge_sdk.bundle import Bundle

    break_openvino.add(Precision.INT8)
    result = _export(
        sensor_model, tmp_path / "b", ["intel-core-cpu", str(measured_yaml)], int8=True
    )
    m: Manifest = result.manifest
    names = {a.name for a in m.artifacts}
    assert "openvino-int8" not in names and "openvino-fp32" in names
    assert not (result.bundle_dir / "openvino" / "model.int8.xml").exists()
    assert not (result.bundle_dir / "openvino" / "model.int8.bin").exists()
    assert {r.artifact for r in m.parity} == {"onnx-fp32", "onnx-int8", "openvino-fp32"}
    for profile in ("intel-core-cpu", "build-box"):
        ov = next(c for c in _choices(m, profile) if c.backend == "openvino")
        assert ov.artifact == "openvino-fp32", profile
        refused = next(x for x in ov.measured if x.artifact == "openvino-int8")
        assert not refused.passed and refused.median_ms is None  # refused: never timed
        assert refused.note  # the reason it was refused
    measured = next(c for c in _choices(m, "build-box") if c.backend == "openvino")
    assert measured.reason.startswith("measured")
    Bundle.open(result.bundle_dir)


# -- a dynamic-form table model on the Raspberry Pi 5 profile ---------------------------------
@pytest.fixture(scope="module")
def pi5_tables(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The dynamic tiny GCN (neighbour-table inputs, one bucket, INT8 on) for raspberry-pi-5."""
    pytest.importorskip("onnx2tf", reason="LiteRT conversion needs onnx2tf")
    pytest.importorskip("ai_edge_litert", reason="LiteRT parity needs ai-edge-litert")
    from tiny_models import tiny_gcn, tiny_gcn_arrays

    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
    from edge_sdk.io_contract import Bucket

    samples = [sample_from_arrays(tiny_gcn_arrays(seed=s)) for s in (1, 2)]
    cfg = ExportConfig(
        name="tables",
        form="dynamic",
        int8=True,
        buckets=[Bucket(max_nodes=32, max_edges=96)],
        profiles=["raspberry-pi-5"],
    )
    out = tmp_path_factory.mktemp("pi5") / "tables.bundle"
    return out, export_model(tiny_gcn(), samples, out, cfg).manifest


def test_pi5_chooses_litert_for_a_dynamic_table_model(pi5_tables: Any) -> None:
    """LiteRT builds FP32 and INT8 per bucket and is chosen; no silent ORT fallback."""
    out, m = pi5_tables
    assert m.graph.tables is not None and m.graph.aggregation == "tables"
    (litert,) = [c for c in _choices(m, "raspberry-pi-5") if c.backend == "litert"]
    assert litert.artifact == "litert-int8" and litert.precision is Precision.INT8
    assert "declared order" in litert.reason
    measured = {x.artifact: x for x in litert.measured}
    assert set(measured) == {"litert-int8", "litert-fp32"}
    assert all(x.passed for x in measured.values())
    art = next(a for a in m.artifacts if a.name == "litert-int8")
    assert art.options["buckets"][0]["file"] == "model.b0.int8.tflite"
    assert (out / art.path).is_file()
    report = next(r for r in m.parity if r.artifact == "litert-int8")
    assert report.passed and max(o.max_abs_err for o in report.outputs) < 0.2


def test_pi5_table_bundle_runs_on_litert(pi5_tables: Any) -> None:
    from tiny_models import tiny_gcn_arrays

    from edge_sdk import Runtime

    out, _ = pi5_tables
    with Runtime.load(out, profile="raspberry-pi-5") as rt:
        assert rt.describe()["backend"] == "litert"
        feeds = tiny_gcn_arrays(seed=9)
        got = next(iter(rt.infer(feeds).values()))
        assert got.shape == (feeds["x"].shape[0], 3) and np.isfinite(got).all()
