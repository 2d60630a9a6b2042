"""LiteRT (TFLite) backend: ``ai_edge_litert``, or ``tflite_runtime`` where a device has that.

XNNPACK is LiteRT's default CPU delegate; ``threads`` sets its thread count.
The artifact's ``options`` (written by the LiteRT compiler) say how manifest
tensors map onto the file's tensors:

- ``inputs`` / ``outputs``: manifest name -> TFLite tensor name (full-INT8
  conversion renames ``x`` to ``serving_default_x:0`` and may reorder);
  without them, tensors are matched by name, then by position.
- ``input_transform``: ``{"x": {"reshape": [1, 1, N, F]}}`` for the NHWC
  layout: a pure reshape of ``x [B, N, F]`` (same memory order, no copy).

Quantised (int8/uint8) input or output tensors are (de)quantised with the
tensor's scale and zero point, so integer-IO files work too.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.manifest import Target

from .base import Backend

#: Interpreter modules, in order of preference.
INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def interpreter_module() -> ModuleType:
    """The first importable LiteRT interpreter module (ai-edge-litert, then tflite-runtime).

    Raises:
        BackendUnavailableError: Neither is installed (names the extra).
    """
    for name in INTERPRETERS:
        if _has(name.split(".")[0]):
            return require(name, "the litert backend")
    return require("ai_edge_litert", "the litert backend")  # raises, naming the extra


def _has(top: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


class LiteRtBackend(Backend):
    """Runs ``.tflite`` artifacts with the LiteRT interpreter (XNNPACK on CPU)."""

    name = "litert"
    target = Target.LITERT
    static_shapes = True  # converted with fixed input shapes

    def _load_impl(self, path: Path) -> None:
        module = interpreter_module()
        self._engine = module.__name__.split(".")[0]
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if self.options.threads:
            kwargs["num_threads"] = self.options.threads
        it = module.Interpreter(**kwargs)
        it.allocate_tensors()
        assert self.artifact is not None
        opts = self.artifact.options
        self._ins = self._bind(
            [s.name for s in self.inputs], it.get_input_details(), opts.get("inputs", {})
        )
        self._outs = self._bind(
            [s.name for s in self.outputs], it.get_output_details(), opts.get("outputs", {})
        )
        transform = opts.get("input_transform", {})
        # Per input: (name, tensor index, shape to reshape to or None, (scale, zero, dtype) or None)
        self._feed = [
            (name, d["index"], _reshape(transform.get(name), d), _quant(d))
            for name, d in self._ins.items()
        ]
        self._fetch = [
            (name, d["index"], _quant(d), _out_shape(spec_shape, d))
            for (name, d), spec_shape in zip(
                self._outs.items(), [s.shape for s in self.outputs], strict=True
            )
        ]
        self._set, self._invoke, self._get = it.set_tensor, it.invoke, it.get_tensor
        self._it = it

    @staticmethod
    def _bind(
        names: list[str], details: list[dict[str, Any]], mapping: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        """Manifest name -> tensor details: by the recorded name, then own name, then position."""
        by_name = {d["name"]: d for d in details}
        if len(details) != len(names):
            raise ValueError(
                f"the .tflite file has {len(details)} tensors where the manifest has {names}"
            )
        out: dict[str, dict[str, Any]] = {}
        for pos, name in enumerate(names):
            want = mapping.get(name)
            if want is not None and want not in by_name:
                raise ValueError(f"tensor {want!r} (for {name!r}) is not in the .tflite file")
            key = want or (name if name in by_name else f"serving_default_{name}:0")
            out[name] = by_name.get(key, details[pos])
        return out

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, index, shape, quant in self._feed:
            arr = feeds[name]
            if shape is not None:
                arr = arr.reshape(shape)
            if quant is not None:
                scale, zero, dtype = quant
                info = np.iinfo(dtype)
                arr = np.clip(np.rint(arr / scale) + zero, info.min, info.max).astype(dtype)
            self._set(index, arr)
        self._invoke()
        out: dict[str, np.ndarray] = {}
        for name, index, quant, shape in self._fetch:
            # get_tensor copies: the interpreter's buffers are reused by the next invoke.
            value = self._get(index)
            if quant is not None:
                scale, zero, _ = quant
                value = (value.astype(np.float32) - np.float32(zero)) * np.float32(scale)
            out[name] = value if shape is None else value.reshape(shape)
        return out

    def _describe_impl(self) -> dict[str, Any]:
        assert self.artifact is not None
        return {
            "engine": self._engine,
            "layout": self.artifact.layout,
            "inputs": {n: d["name"] for n, d in self._ins.items()},
        }

    def _close_impl(self) -> None:
        self._it = None
        self._set = self._invoke = self._get = _closed


def _reshape(transform: dict[str, Any] | None, detail: dict[str, Any]) -> tuple[int, ...] | None:
    if transform and "reshape" in transform:
        return tuple(int(d) for d in transform["reshape"])
    return None


def _quant(detail: dict[str, Any]) -> tuple[float, int, Any] | None:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return None
    scale, zero = detail["quantization"]
    return (float(scale), int(zero), dtype) if scale else None


def _out_shape(spec: list[int | str], detail: dict[str, Any]) -> tuple[int, ...] | None:
    """The manifest's rank when the file's output differs only by reshaping (NHWC)."""
    have = [int(d) for d in detail["shape"]]
    if len(have) == len(spec):
        return None
    rest = [d for d in spec[1:]]
    if all(isinstance(d, int) for d in rest):
        return (have[0], *[int(d) for d in rest])
    return None


def _closed(*args: Any) -> Any:
    raise RuntimeError("the litert interpreter is closed")
