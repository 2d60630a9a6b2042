"""The engine registry is the single source of every engine fact.

Each fact that other modules used to keep (the manifest's targets, the
profiles' backend names, devices and ``auto`` order, the runtime registry, the
export compilers, the install extras) must come from the rows of
:mod:`edge_sdk.engines`; these tests fail when one drifts from them.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

from edge_sdk import engines, runtimes
from edge_sdk._optional import install_hint, is_available
from edge_sdk.engines import AUTO_ORDER, ENGINES, EngineOptions, Target
from edge_sdk.errors import BackendUnavailableError
from edge_sdk.manifest import Target as ManifestTarget
from edge_sdk.profiles import TargetSpec, capability_sets


def _resolve(path: str) -> type:
    module, _, name = path.partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def test_every_target_has_one_row_and_every_row_a_target() -> None:
    assert ManifestTarget is Target  # the manifest's enum is the registry's
    assert list(ENGINES) == [t.value for t in Target]
    for name, row in ENGINES.items():
        assert row.target.value == name == row.name


@pytest.mark.parametrize("name", list(ENGINES))
def test_every_row_runtime_resolves_to_its_backend(name: str) -> None:
    row = ENGINES[name]
    cls = runtimes.runtime_class(name)
    assert cls is _resolve(row.runtime)
    assert issubclass(cls, runtimes.Backend)
    assert cls.name == name and cls.target is row.target
    assert runtimes.backend_for_target(row.target) == name
    ok, why = cls.runs_here()  # beyond being installed (TensorRT: a CUDA GPU)
    assert isinstance(ok, bool) and why


@pytest.mark.parametrize("name", [n for n, e in ENGINES.items() if e.compiler])
def test_every_row_compiler_resolves(name: str) -> None:
    pytest.importorskip("torch", reason="the compilers are build-time (edge-graph-sdk[export])")
    from edge_sdk.exporters.targets.compile import COMPILERS

    row = ENGINES[name]
    assert row.compiler is not None
    assert COMPILERS[name] == row.compiler
    assert callable(_resolve(row.compiler))


def test_compilers_are_exactly_the_rows_with_one() -> None:
    pytest.importorskip("torch", reason="the compilers are build-time (edge-graph-sdk[export])")
    from edge_sdk.exporters.targets.compile import COMPILERS

    assert set(COMPILERS) == {n for n, e in ENGINES.items() if e.compiler}
    assert "onnxruntime" not in COMPILERS  # the export's ONNX step writes those artifacts


def test_auto_order_and_known_backends_derive_from_the_rows() -> None:
    from edge_sdk import profiles, selection

    assert [e.name for e in sorted(ENGINES.values(), key=lambda e: e.auto_rank)] == AUTO_ORDER
    assert AUTO_ORDER == ["tensorrt", "openvino", "litert", "onnxruntime"]  # fastest first
    assert profiles.AUTO_ORDER is AUTO_ORDER and selection.AUTO_ORDER is AUTO_ORDER
    assert sorted(e.auto_rank for e in ENGINES.values()) == list(range(len(ENGINES)))
    assert runtimes.known_backends() == list(ENGINES)


def test_unknown_engine_names_list_the_rows() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        runtimes.create_backend("tvm")
    assert ", ".join(ENGINES) in str(info.value)
    assert engines.find("tvm") is None and engines.find(3) is None


@pytest.mark.parametrize("name", list(ENGINES))
def test_devices_options_and_extras_come_from_the_row(name: str) -> None:
    row = ENGINES[name]
    # The default device is the row's first; every row device is accepted, others refused.
    spec = TargetSpec(backend=name, **({"dla_core": 0} if name == "tensorrt" else {}))
    assert spec.device == row.default_device and spec.key == name
    assert type(spec.options) is row.options and spec.engine is row
    for device in row.devices:
        fields = {"dla_core": 0} if device == "DLA" else {}
        assert TargetSpec(backend=name, device=device, **fields).device == device
    for device in {"CPU", "GPU", "NPU", "DLA"} - set(row.devices):
        with pytest.raises(ValueError, match=f"not a {name} device"):
            TargetSpec(backend=name, device=device)
    # The install hint names the row's extra; an alternative distribution counts as installed.
    assert install_hint(row.module) == f'pip install "edge-graph-sdk[{row.extra}]"'
    assert is_available(row.module) == any(
        importlib.util.find_spec(m) is not None for m in (row.module, *row.alternatives)
    )
    # The host profile's capability set is this engine's.
    assert capability_sets()[row.host_set]["backend"] == name


def test_option_fields_belong_to_one_engine_and_are_refused_on_another() -> None:
    owners: dict[str, str] = {}
    for name, row in ENGINES.items():
        assert issubclass(row.options, EngineOptions)
        for key in row.options.model_fields:
            assert key not in owners, f"{key} is an option of {owners.get(key)} and {name}"
            assert key not in TargetSpec.model_fields  # flat YAML: no clash with common fields
            owners[key] = name
    spec = TargetSpec(backend="tensorrt", device="DLA", dla_core=1, workspace_mb=256)
    assert spec.engine_options() == {"device": "DLA", "dla_core": 1, "workspace_mb": 256}
    with pytest.raises(ValueError, match="workspace_mb 256 is a TensorRT option, not openvino"):
        TargetSpec(backend="openvino", workspace_mb=256)
    # Another engine's option at its default is accepted (a flat dump re-validates).
    assert TargetSpec.model_validate(spec.model_dump()) == spec
    assert TargetSpec(backend="openvino", layout="native").layout == "native"


def test_the_registry_imports_no_engine_exporter_or_torch() -> None:
    code = (
        "import sys\n"
        "import edge_sdk.engines, edge_sdk.runtimes, edge_sdk.profiles\n"
        "heavy = {'torch', 'onnx', 'openvino', 'tensorrt', 'ai_edge_litert', 'onnxruntime'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "                or m.startswith('edge_sdk.exporters'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
