"""One helper for optional dependencies.

Availability is checked without importing (``importlib.util.find_spec``) so
listing backends never pays for, or crashes on, an engine's import. The first
real use of a missing engine raises an error naming the extra to install.
Nothing is ever installed at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .engines import ENGINES
from .errors import BackendUnavailableError

#: module name -> (alternative module names, extra that provides it); the inference
#: engines' own come from their registry rows.
_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    **{e.module: (e.alternatives, e.extra) for e in ENGINES.values()},
    "cuda.bindings.runtime": (("cuda.cudart",), "tensorrt"),
    "nncf": ((), "openvino-export"),
    "onnx2tf": ((), "tflite-export"),
    "tensorflow": ((), "tflite-export"),
    "paho.mqtt": ((), "mqtt"),
    "cryptography": ((), "mqtt"),
    "google.protobuf": ((), "mqtt"),
    "torch": ((), "export"),
    "torch_geometric": ((), "export"),
    "onnx": ((), "export"),
    "onnxslim": ((), "export"),
    "matplotlib": ((), "export"),
    "prometheus_client": ((), "serve"),
    "amqtt": ((), "broker"),
}


def _find(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # find_spec imports parent packages; a broken parent means "absent".
        return False


def is_available(name: str) -> bool:
    """Tell whether ``name`` (or a registered alternative) can be imported.

    Args:
        name: Top-level module name, e.g. ``"onnxruntime"``.

    Returns:
        True when the module or one of its alternative distributions is found.
    """
    alternatives = _EXTRAS.get(name, ((), ""))[0]
    return any(_find(n) for n in (name, *alternatives))


def install_hint(name: str) -> str:
    """Return the pip command that provides ``name``."""
    extra = _EXTRAS.get(name, ((), ""))[1]
    if extra:
        return f'pip install "edge-graph-sdk[{extra}]"'
    return f"pip install {name}"


def require(name: str, purpose: str = "") -> ModuleType:
    """Import an optional module or raise an error naming the extra.

    Args:
        name: Module to import.
        purpose: What it is needed for, included in the message.

    Returns:
        The imported module.

    Raises:
        BackendUnavailableError: The module is absent, or present but failing
            to import (the original error is chained, never swallowed).
    """
    why = f" (needed for {purpose})" if purpose else ""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not name.startswith(exc.name.split(".")[0]):
            # The module exists but one of *its* dependencies is missing.
            raise BackendUnavailableError(
                f"{name} is installed but failed to import: {exc}{why}"
            ) from exc
        raise BackendUnavailableError(
            f"{name} is not installed{why}; install it with: {install_hint(name)}"
        ) from exc
    except Exception as exc:
        raise BackendUnavailableError(
            f"{name} is installed but failed to import: {type(exc).__name__}: {exc}{why}"
        ) from exc
