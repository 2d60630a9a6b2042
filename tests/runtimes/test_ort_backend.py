"""ONNX Runtime: the backend conformance suite (see backend_conformance.py)."""

from __future__ import annotations

from backend_conformance import BackendConformance


class TestOnnxRuntime(BackendConformance):
    backend = "onnxruntime"
    profile = "generic-x86"
