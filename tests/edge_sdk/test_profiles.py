"""Device profiles: shipped files, capability sets, schema errors, ``host``, and the CLI listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge_sdk.engines import TensorRtOptions
from edge_sdk.errors import ProfileError
from edge_sdk.manifest import Precision
from edge_sdk.profiles import (
    AUTO_ORDER,
    DeviceProfile,
    TargetSpec,
    capability_sets,
    host_profile,
    load_profile,
    profile_from_dict,
    shipped_profiles,
)

SHIPPED = [
    "generic-arm64",
    "generic-x86",
    "intel-core-cpu",
    "intel-core-ultra-npu",
    "intel-igpu",
    "jetson-agx-orin",
    "jetson-orin-nano",
    "raspberry-pi-5",
]


# -- shipped profiles and capability sets --------------------------------------------------


def test_every_issue_profile_ships() -> None:
    assert shipped_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_is_consistent(name: str) -> None:
    p = load_profile(name)
    assert isinstance(p, DeviceProfile)
    assert p.name == name  # the file stem is the profile's id
    assert p.description
    # Every device keeps ONNX Runtime as its last-resort engine.
    assert p.targets[-1].backend == "onnxruntime"
    if p.arch == "aarch64":
        assert not any(t.backend == "openvino" for t in p.targets)


def test_shipped_profiles_use_the_declared_capabilities() -> None:
    npu = load_profile("intel-core-ultra-npu")
    assert [(t.backend, t.device) for t in npu.targets] == [
        ("openvino", "NPU"),
        ("openvino", "CPU"),
        ("onnxruntime", "CPU"),
    ]
    assert npu.targets[0].static_shapes and npu.targets[0].precisions == ["int8", "fp16"]
    agx = load_profile("jetson-agx-orin")
    assert (
        agx.targets[0].options_as(TensorRtOptions).workspace_mb == 4096
    )  # overridden beside `use:`
    assert (
        agx.targets[1].device == "DLA" and agx.targets[1].options_as(TensorRtOptions).dla_core == 0
    )
    assert agx.targets[1].key == "tensorrt-dla"
    nano = load_profile("jetson-orin-nano")
    assert nano.targets[0].options_as(TensorRtOptions).workspace_mb == 512
    pi = load_profile("raspberry-pi-5")
    assert pi.threads == 4 and pi.threads_for(pi.targets[0]) == 4
    assert pi.targets[0].layout == "auto" and pi.targets[0].precisions[0] is Precision.INT8
    assert load_profile("intel-core-cpu").targets[0].engine_options() == {
        "device": "CPU",
        "performance_hint": "LATENCY",
        "num_requests": 2,
    }


def test_capability_sets_are_valid_targets() -> None:
    sets = capability_sets()
    assert set(sets) >= {
        "ort-cpu",
        "openvino-cpu",
        "openvino-igpu",
        "openvino-npu",
        "litert-xnnpack",
        "tensorrt-gpu",
        "tensorrt-dla",
    }
    for name, fields in sets.items():
        spec = TargetSpec.model_validate(fields)
        assert spec.backend in AUTO_ORDER, name


def test_a_user_profile_file_with_use_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "my-board.yaml"
    path.write_text(
        "name: my-board\n"
        "arch: aarch64\n"
        "threads: 2\n"
        "targets:\n"
        "  - use: litert-xnnpack\n"
        "    layout: native\n"
        "    precisions: [fp32]\n"
        "    threads: 3\n"
        "  - ort-cpu\n"  # a bare capability set name
    )
    p = load_profile(path)
    assert p.name == "my-board" and p.arch == "aarch64"
    lite, ort = p.targets
    # Overridden fields win, the rest comes from the set.
    assert (lite.backend, lite.layout, lite.precisions) == ("litert", "native", ["fp32"])
    assert lite.static_shapes is True
    assert p.threads_for(lite) == 3 and p.threads_for(ort) == 2
    assert ort.precisions == ["fp32", "int8"]
    assert p.backends == ["litert", "onnxruntime"]
    assert load_profile(str(path)) == p


# -- schema errors name the field -------------------------------------------------------------


def _base(**over: Any) -> dict[str, Any]:
    return {"name": "x", "targets": [{"use": "ort-cpu"}], **over}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_base(colour="red"), "field colour: Extra inputs are not permitted"),
        (
            _base(targets=[{"use": "ort-cpu", "speed": 3}]),
            "field targets.0.speed: Extra inputs",
        ),
        (
            _base(targets=[{"backend": "onnxruntime", "precisions": ["int4"]}]),
            "field targets.0.precisions.0: Input should be 'fp32', 'fp16' or 'int8'",
        ),
        (
            _base(targets=[{"backend": "tvm"}]),
            "field targets.0.backend",
        ),
        (
            _base(targets=[{"use": "ort-cpu"}, {"backend": "onnxruntime"}]),
            "field targets: Value error, targets repeat ['onnxruntime']",
        ),
        (
            _base(targets=[{"backend": "tensorrt", "device": "DLA"}]),
            "field targets.0: Value error, device DLA needs dla_core",
        ),
        (
            _base(targets=[{"backend": "openvino", "layout": "nhwc"}]),
            "field targets.0: Value error, layout nhwc is a LiteRT option, not openvino",
        ),
        (
            _base(targets=[{"backend": "litert", "device": "GPU"}]),
            "device GPU is not a litert device",
        ),
        (_base(threads=0), "field threads: Input should be greater than 0"),
        (_base(targets=[]), "field targets: List should have at least 1 item"),
        ({"targets": [{"use": "ort-cpu"}]}, "field name: Field required"),
    ],
)
def test_schema_errors_name_the_field(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(raw, "my.yaml")
    assert str(info.value).startswith("my.yaml: ")
    assert expected in str(info.value)


def test_unknown_capability_set_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(_base(targets=[{"use": "ort-cpu"}, {"use": "openvino-tpu"}]), "p.yaml")
    msg = str(info.value)
    assert "field targets.1.use: unknown capability set 'openvino-tpu'" in msg
    for name in capability_sets():
        assert name in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("", "expected a mapping at the top level"),
        ("name: b\ntargets:\n  - use: ort-cpu\n    device: GPU\n", "field targets.0"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "board.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(ProfileError, match=r"profile file not found: .*nowhere\.yaml"):
        load_profile("/nonexistent/nowhere.yaml")
    with pytest.raises(ProfileError) as info:
        load_profile("pi-zero")
    assert "unknown profile 'pi-zero'" in str(info.value)
    assert all(n in str(info.value) for n in SHIPPED)
    # The capability-set file is data, not a profile.
    with pytest.raises(ProfileError, match="unknown profile 'capabilities'"):
        load_profile("capabilities")


# -- host: this machine ---------------------------------------------------------------------


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_host_lists_installed_engines_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    host = load_profile("host")
    assert host.name == "host" and host.measure is True and host.device_class == "host"
    modules = {
        "tensorrt": "tensorrt",
        "openvino": "openvino",
        "litert": "ai_edge_litert",
        "onnxruntime": "onnxruntime",
    }
    expected = [
        b
        for b in AUTO_ORDER
        if _installed(modules[b]) or (b == "litert" and _installed("tflite_runtime"))
    ]
    assert host.backends == expected  # auto's order, only what is installed
    for t in host.targets:
        # Every precision the engine can build is offered, so the export measures them all.
        assert Precision.FP32 in t.precisions and Precision.INT8 in t.precisions
    assert ("VNNI" in host.description) and "CPUs" in host.description


def test_host_leaves_out_disabled_engines(disable_backends: Any) -> None:
    # A disabled engine can neither be checked nor timed by the export on this machine.
    disable_backends("openvino", "litert")
    assert host_profile().backends == ["onnxruntime"]


def test_host_with_every_engine_disabled_is_an_error(disable_backends: Any) -> None:
    disable_backends(*AUTO_ORDER)
    with pytest.raises(ProfileError, match="no inference engine"):
        host_profile()


# -- edge-export profiles ---------------------------------------------------------------------


def _cli(*args: str) -> Any:
    from edge_sdk.cli.export_cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "220"})


def test_cli_lists_every_shipped_profile() -> None:
    # On data (--json), not on the table's text: its columns wrap with the terminal width.
    res = _cli("profiles", "--json")
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert {p["name"] for p in listed} >= set(SHIPPED)
    dla = [
        (t["precisions"], t["static_shapes"])
        for p in listed
        for t in p["targets"]
        if t["backend"] == "tensorrt" and t["device"] == "DLA"
    ]
    assert dla == [(["int8", "fp16"], True)]
    human = _cli("profiles")
    assert human.exit_code == 0 and "also: host" in human.output


def test_cli_json_round_trips() -> None:
    res = _cli("profiles", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [p["name"] for p in doc] == SHIPPED
    assert [DeviceProfile.model_validate(p) for p in doc] == [load_profile(n) for n in SHIPPED]


def test_cli_show_host_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_SDK_DISABLE_BACKENDS", raising=False)
    res = _cli("profiles", "--show", "host", "--json")
    assert res.exit_code == 0, res.output
    (doc,) = json.loads(res.stdout)
    assert doc["name"] == "host" and doc["measure"] is True
    assert [t["backend"] for t in doc["targets"]] == host_profile().backends


def test_cli_show_user_file_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "board.yaml"
    good.write_text("name: board\nthreads: 2\ntargets: [openvino-cpu, ort-cpu]\n")
    res = _cli("profiles", "--show", str(good))
    assert res.exit_code == 0, res.output
    assert "profile board" in res.output and "openvino:CPU int8/fp32" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntargets:\n  - use: ort-cpu\n    precision: fp32\n")
    res = _cli("profiles", "--show", str(bad))
    assert res.exit_code == 3
    assert "field targets.0.precision" in res.output
    res = _cli("profiles", "--show", "pi-zero")
    assert res.exit_code == 3 and "unknown profile 'pi-zero'" in res.output
