"""Import the samples' scripts (samples are not packages) the way they import each other.

Each script is registered in ``sys.modules`` under the private name the
samples use among themselves (``_edge_sdk_sample_tep_<name>``, ``_edge_sdk_sample_fraud_<name>``,
``_edge_sdk_sample_cora``), so a test and a sample share one copy of a
module: dataclasses and ``isinstance`` checks see the same classes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
#: The shared datasets beside the repository (read-only; absent on users' machines).
DATASETS = REPO.parent / "shared" / "datasets"


def load_script(path: Path, key: str) -> ModuleType:
    """Import ``path`` as module ``key``, once."""
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def tep_module(name: str) -> ModuleType:
    """``samples/tep/<name>.py``."""
    return load_script(REPO / "samples" / "tep" / f"{name}.py", f"_edge_sdk_sample_tep_{name}")


def cora_module() -> ModuleType:
    """``samples/cora/cora.py``."""
    return load_script(REPO / "samples" / "cora" / "cora.py", "_edge_sdk_sample_cora")


def fraud_module(name: str) -> ModuleType:
    """``samples/fraud/<name>.py``."""
    return load_script(REPO / "samples" / "fraud" / f"{name}.py", f"_edge_sdk_sample_fraud_{name}")
