"""The TEP-size sensor model of samples/tep, loaded for the benchmark scripts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SENSOR_MODEL = Path(__file__).resolve().parents[1] / "samples" / "tep" / "sensor_model.py"


def sensor_module() -> ModuleType:
    """Import ``samples/tep/sensor_model.py`` (registered, as torch.export re-imports it)."""
    if "tep_sensor_model" in sys.modules:
        return sys.modules["tep_sensor_model"]
    spec = importlib.util.spec_from_file_location("tep_sensor_model", SENSOR_MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
