"""ONNX Runtime backend (CPU by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.manifest import Target

from .base import Backend


class OrtBackend(Backend):
    """Runs ``.onnx`` artifacts with ONNX Runtime.

    Options (``BackendOptions.extra``): ``providers`` (list, default CPU only),
    ``graph_optimization`` ("all" | "extended" | "basic" | "disable").
    """

    name = "onnxruntime"
    target = Target.ONNXRUNTIME

    def _load_impl(self, path: Path) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")
        extra = self.options.extra or {}
        so = ort.SessionOptions()
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        # One request at a time per session: extra inter-op threads only
        # compete with intra-op ones on small edge CPUs.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = extra.get("graph_optimization", "all")
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[level]
        providers = extra.get("providers", ["CPUExecutionProvider"])
        self._session = ort.InferenceSession(str(path), so, providers=providers)
        self._output_names = [o.name for o in self.outputs]
        self._version = ort.__version__
        # InferenceSession.run re-checks input names (done by Backend.check_feeds or the
        # runtime's validation), WebGPU graph capture and OrtValue ownership (neither
        # applies to numpy feeds), and retries on another provider after an EP failure.
        # With only the CPU provider none of that can matter, so call the bound C++ run
        # directly when this onnxruntime has it: a few microseconds per request.
        direct = getattr(getattr(self._session, "_sess", None), "run", None)
        cpu_only = self._session.get_providers() == ["CPUExecutionProvider"]
        self._run = direct if cpu_only and callable(direct) else self._session.run

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._run(self._output_names, feeds, None)
        return dict(zip(self._output_names, values, strict=True))

    def _describe_impl(self) -> dict[str, Any]:
        return {"engine_version": self._version, "providers": self._session.get_providers()}

    def _close_impl(self) -> None:
        self._session = None
        self._run = _closed  # drop the bound run too: it keeps the session alive


def _closed(*args: Any) -> Any:
    raise RuntimeError("the onnxruntime session is closed")
