"""Inference engines behind one small interface (see :mod:`.base`).

Registering a backend imports nothing of its engine: availability is checked
with ``find_spec`` and the engine is imported on first load. Set
``EDGE_SDK_DISABLE_BACKENDS=name[,name]`` to force backends unavailable (to
test fallback paths, or to pin a device to one engine).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from edge_sdk._env import env_str
from edge_sdk._optional import install_hint, is_available
from edge_sdk.errors import BackendUnavailableError
from edge_sdk.manifest import Target

from .base import Backend, BackendOptions


@dataclass(frozen=True)
class _Entry:
    module: str  # our module implementing the backend
    cls: str
    engine: str  # the engine's import name, checked with find_spec
    target: Target


_REGISTRY: dict[str, _Entry] = {
    "onnxruntime": _Entry("edge_sdk.runtimes.ort", "OrtBackend", "onnxruntime", Target.ONNXRUNTIME),
    "openvino": _Entry("edge_sdk.runtimes.ov", "OpenVinoBackend", "openvino", Target.OPENVINO),
    # ai-edge-litert, or tflite-runtime where that is what a device has.
    "litert": _Entry("edge_sdk.runtimes.litert", "LiteRtBackend", "ai_edge_litert", Target.LITERT),
    "tensorrt": _Entry("edge_sdk.runtimes.trt", "TensorRtBackend", "tensorrt", Target.TENSORRT),
}


def known_backends() -> list[str]:
    """Names of all registered backends."""
    return list(_REGISTRY)


def _disabled() -> set[str]:
    return {n.strip() for n in (env_str("DISABLE_BACKENDS") or "").split(",") if n.strip()}


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot be used here, or None when it can.

    Raises:
        BackendUnavailableError: Unknown name (lists the known ones).
    """
    entry = _entry(name)
    if name in _disabled():
        return "disabled by EDGE_SDK_DISABLE_BACKENDS"
    if not is_available(entry.engine):
        return f"{entry.engine} is not installed ({install_hint(entry.engine)})"
    return None


def backend_for_target(target: Target) -> str | None:
    """Registered backend name that runs ``target`` artifacts, if any."""
    return next((n for n, e in _REGISTRY.items() if e.target == target), None)


def create_backend(name: str, options: BackendOptions | None = None) -> Backend:
    """Instantiate backend ``name`` (its engine is imported later, at load).

    Raises:
        BackendUnavailableError: Unknown, disabled or not installed.
    """
    entry = _entry(name)
    reason = unavailable_reason(name)
    if reason:
        raise BackendUnavailableError(f"backend {name!r} unavailable: {reason}")
    cls: type[Backend] = getattr(importlib.import_module(entry.module), entry.cls)
    return cls(options)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}"
        ) from None


__all__ = [
    "Backend",
    "BackendOptions",
    "backend_for_target",
    "create_backend",
    "known_backends",
    "unavailable_reason",
]
