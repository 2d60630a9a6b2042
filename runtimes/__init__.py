"""Inference engines behind one small interface (see :mod:`.base`).

The backends are the engine registry's rows (:mod:`edge_sdk.engines`): each
row names its runtime class, imported only when a backend is created.
Registering a backend imports nothing of its engine: availability is checked
with ``find_spec`` and the engine is imported on first load. Set
``EDGE_SDK_DISABLE_BACKENDS=name[,name]`` to force backends unavailable (to
test fallback paths, or to pin a device to one engine).
"""

from __future__ import annotations

import importlib

from edge_sdk._env import env_str
from edge_sdk._optional import install_hint, is_available
from edge_sdk.engines import ENGINES, Engine
from edge_sdk.errors import BackendUnavailableError
from edge_sdk.manifest import Target

from .base import Backend, BackendOptions


def known_backends() -> list[str]:
    """Names of all registered backends."""
    return list(ENGINES)


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
    if not is_available(entry.module):
        return f"{entry.module} is not installed ({install_hint(entry.module)})"
    return None


def backend_for_target(target: Target) -> str | None:
    """Registered backend name that runs ``target`` artifacts, if any."""
    return next((n for n, e in ENGINES.items() if e.target == target), None)


def create_backend(name: str, options: BackendOptions | None = None) -> Backend:
    """Instantiate backend ``name`` (its engine is imported later, at load).

    Raises:
        BackendUnavailableError: Unknown, disabled or not installed.
    """
    reason = unavailable_reason(name)  # unknown names raise here, listing the known ones
    if reason:
        raise BackendUnavailableError(f"backend {name!r} unavailable: {reason}")
    return runtime_class(name)(options)


def runtime_class(name: str) -> type[Backend]:
    """The runtime backend class of engine ``name`` (imports our module, not the engine).

    Raises:
        BackendUnavailableError: Unknown name (lists the known ones).
    """
    module, cls = _entry(name).runtime.split(":")
    backend: type[Backend] = getattr(importlib.import_module(module), cls)
    return backend


def _entry(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; known backends: {', '.join(ENGINES)}"
        ) from None


__all__ = [
    "Backend",
    "BackendOptions",
    "backend_for_target",
    "create_backend",
    "known_backends",
    "runtime_class",
    "unavailable_reason",
]
