"""Fixtures and markers shared by the whole suite.

Sections: threads, markers, hangs, environment, bundles. Keep fixtures generic; a
fixture used by one test file belongs in that file.

Bundles are exported once per session and must never be modified: a test
that tampers with one takes ``bundle_copy`` (a fresh copy per test).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# -- threads (before anything imports torch or TensorFlow) ---------------------------------

#: Thread-count variables read once, when torch (OpenMP, MKL) and TensorFlow load.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def _share_cores_between_workers() -> None:
    """Give each pytest-xdist worker its share of the cores (``make test``: 2 on 2 cores).

    torch and TensorFlow start a thread per core in every process: two workers on two
    cores ran four spinning threads, and a Cora training epoch took 5x the CPU of one
    thread (0.49 s against 0.099 s; 200 GCN epochs 100 CPU-s against 20, same weights). Only under
    xdist, only where unset (an explicit value wins); child processes inherit it. The
    engines' own defaults are untouched: tests that set threads still do.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if os.environ.get("PYTEST_XDIST_WORKER") is None or workers < 1:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for var in THREAD_VARS:
        os.environ.setdefault(var, share)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


_share_cores_between_workers()

import pytest  # noqa: E402  (after the thread variables)
from tiny_models import tiny_gcn, tiny_gcn_arrays  # noqa: E402

# -- markers -------------------------------------------------------------------------------


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires_backend("onnxruntime")``: skip unless the engine imports."""
    for mark in item.iter_markers("requires_backend"):
        engine = mark.args[0]
        if not _importable(engine):
            pytest.skip(f"needs the {engine!r} inference engine, which is not importable")


# -- parallel runs (make test: pytest -n 2 --dist loadgroup) ---------------------------------

#: The session's shared table bundles (tests/exporters/table_bundles.py): the tests that use
#: them form two groups, one per graph form (:func:`_bundles_group`), so one worker exports
#: each bundle once; they go first (longest: 10 exports each, every engine and precision).
SHARED_BUNDLES_GROUP = "table_bundles"


def _bundles_group(item: pytest.Item) -> str:
    """``table_bundles-static`` for a test whose parameters name the static form (the
    matrix's cells, test_pna's), else ``table_bundles-dynamic``: two halves, two workers."""
    callspec = getattr(item, "callspec", None)
    form = "static" if callspec is not None and "static" in callspec.id.split("-") else "dynamic"
    return f"{SHARED_BUNDLES_GROUP}-{form}"


#: Files whose module fixtures take minutes (a sample's full run, exports for several
#: engines): their groups start right after the shared bundles', in this order, so none is
#: left to run alone at the end. Setup of each's first test, measured under -n 2 on the
#: loaded 2-core machine: TEP real 673 s, TEP demo 90 s, LiteRT backend 99 s, padding
#: parity 78 s (Cora: 3 trainings and 5 exports, graph norms: 3 exports, 200 s alone).
LONG_FIRST = (
    "tests/samples/test_tep_real.py",
    "tests/samples/test_cora.py",
    "tests/samples/test_tep_demo.py",
    "tests/samples/test_fraud_export.py",
    "tests/samples/test_fraud_demo.py",
    "tests/exporters/test_graph_norms.py",
    "tests/exporters/test_to_litert.py",
    "tests/runtimes/test_litert_backend.py",
    "tests/runtimes/test_padding_parity.py",
)


def _schedule_rank(item: pytest.Item) -> int:
    """0 for the shared bundles' users, then :data:`LONG_FIRST`'s files in order, then
    the rest (in collection order: xdist's reordering by test count is off, see below)."""
    if "table_bundles" in getattr(item, "fixturenames", ()):
        return 0
    path = item.nodeid.split("::")[0]
    return 1 + (LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST))


def pytest_configure(config: pytest.Config) -> None:
    """Under ``--dist loadgroup``, units start in collection order (:func:`_schedule_rank`),
    not xdist's default of most tests first (which put the TEP sample's 4 tests last)."""
    if config.getoption("dist", "no") == "loadgroup":
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests for pytest-xdist's ``loadgroup``: by file (module fixtures export once),
    except the users of ``table_bundles``, two groups across files; long groups first.

    xdist's worker turns each ``xdist_group`` marker into an ``@group`` suffix of the node
    id, which is all its scheduler sees. It did not happen here: its hook ran before this
    one (``tryfirst`` now), and it sets ``item._nodeid``, which pytest 9 no longer reads
    (:func:`_suffix_group` sets the id pytest 9 reads). Every test was its own unit, and
    both workers set up the same module and session fixtures: Cora trained and the TEP
    sample run twice, each matrix bundle exported on both workers.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return  # a plain pytest without the dev extras: no groups (nor their marker)
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            shared = "table_bundles" in getattr(item, "fixturenames", ())
            group = _bundles_group(item) if shared else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER") is not None or config.getoption("dist", "no") != "no":
        items.sort(key=_schedule_rank)
    if os.environ.get("PYTEST_XDIST_WORKER") is not None and config.getvalue("loadgroup"):
        for item in items:
            _suffix_group(item)


def _suffix_group(item: pytest.Item) -> None:
    """Append ``@group`` to ``item``'s node id as xdist's loadgroup expects, on pytest 9.

    pytest 9 derives ``nodeid`` from a structured ``_id``; xdist 3.8 still writes the
    ``_nodeid`` string of pytest 8 (there it does the job itself, and this does nothing).
    """
    if not hasattr(item, "_id") or "@" in item.nodeid.rpartition("]")[2]:
        return
    from _pytest.nodeid import NodeId  # pytest >= 9 only (pytest 8 has no _id)

    names = sorted(
        {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
    )
    if names:
        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


# -- hangs ---------------------------------------------------------------------------------

# A C watchdog that ends a test hung with the GIL held (see hang_watchdog.py). The
# real-broker fixtures (broker, mqtt_client_factory, sensor bundles, fleet keys, make_node)
# are shared by tests/node/, tests/fleet/ and tests/cli/: one plugin module, not copies.
pytest_plugins = ["hang_watchdog", "mqtt_fixtures"]


# -- environment ---------------------------------------------------------------------------


@pytest.fixture
def disable_backends(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Return ``disable(*names)``: mark backends unavailable even when installed.

    Sets ``EDGE_SDK_DISABLE_BACKENDS`` for the current test only.
    """

    def disable(*names: str) -> None:
        monkeypatch.setenv("EDGE_SDK_DISABLE_BACKENDS", ",".join(names))

    return disable


@pytest.fixture(scope="session")
def mosquitto_path() -> str:
    """Path of the mosquitto binary; the one place that decides skip vs fail.

    Real-broker tests fail (not skip) without mosquitto or paho-mqtt: ``make
    test`` installs both. ``EDGE_SDK_SKIP_MQTT=1`` skips them deliberately.
    """
    from edge_sdk.fleet.brokers import INSTALL_HINT, find_mosquitto

    if os.environ.get("EDGE_SDK_SKIP_MQTT") == "1":
        pytest.skip("EDGE_SDK_SKIP_MQTT=1: real-broker MQTT tests skipped on request")
    path = find_mosquitto()
    if path is None:
        pytest.fail(f"{INSTALL_HINT} (or set EDGE_SDK_SKIP_MQTT=1 to skip MQTT tests)")
    if importlib.util.find_spec("paho") is None:
        pytest.fail(
            'paho-mqtt is not installed: pip install -e ".[mqtt]" or `make test` '
            "(or set EDGE_SDK_SKIP_MQTT=1 to skip MQTT tests)"
        )
    return path


# -- bundles -------------------------------------------------------------------------------


def _export_tiny_gcn(tmp_path_factory: pytest.TempPathFactory, aggregation: str) -> Path:
    for module in ("torch", "torch_geometric", "onnx"):
        if not _importable(module):
            pytest.skip(f"exporting a test bundle needs the [export] extra ({module} missing)")
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    sample = sample_from_arrays(tiny_gcn_arrays())
    out = tmp_path_factory.mktemp(f"tiny_gcn_{aggregation}") / "tiny_gcn.bundle"
    cfg = ExportConfig(name="tiny-gcn", form="dynamic", aggregation=aggregation)
    export_model(tiny_gcn(), sample, out, cfg)
    return out


@pytest.fixture(scope="session")
def tiny_gcn_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a bundle exported from a tiny GCN (dynamic form, the default
    aggregation: neighbour tables built by the runtime). Read-only by contract."""
    return _export_tiny_gcn(tmp_path_factory, "auto")


@pytest.fixture(scope="session")
def tiny_gcn_scatter_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GCN exported with ``aggregation="scatter"``: its model takes
    ``(x, edge_index)`` itself, for tests that feed an engine directly."""
    return _export_tiny_gcn(tmp_path_factory, "scatter")


@pytest.fixture
def bundle_copy(tiny_gcn_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_gcn_bundle`` that the test may tamper with."""
    return Path(shutil.copytree(tiny_gcn_bundle, tmp_path / "bundle"))


# -- the TEP-size sensor model ---------------------------------------------------------------

SENSOR_MODEL = Path(__file__).resolve().parents[1] / "samples" / "tep" / "sensor_model.py"


def load_sensor_model() -> Any:
    """Import ``samples/tep/sensor_model.py`` (skips without the [export] extra)."""
    for module in ("torch", "torch_geometric", "onnx"):
        if not _importable(module):
            pytest.skip(f"exporting a test bundle needs the [export] extra ({module} missing)")
    if "tep_sensor_model" in sys.modules:
        return sys.modules["tep_sensor_model"]
    spec = importlib.util.spec_from_file_location("tep_sensor_model", SENSOR_MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.export (strict) re-imports the model's module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sensor_model() -> Any:
    """The ``samples/tep/sensor_model.py`` module (export builders of the TEP-size model)."""
    return load_sensor_model()


@pytest.fixture(scope="session")
def sensor_bundle(sensor_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TEP-size static bundle, version 1.0.0 (seed 0). Read-only by contract.

    Input ``x`` ``[B, 52, 20]`` float32 (52 sensors, windows of 20 samples),
    output ``out`` ``[B, 22]`` (22 classes).
    """
    out = tmp_path_factory.mktemp("sensor_bundle") / "v1.bundle"
    return Path(sensor_model.export_sensor_bundle(out, version="1.0.0", seed=0).bundle_dir)
