"""OpenVINO backend: OpenVINO IR (``.xml`` + ``.bin``) on CPU, GPU or NPU.

Settings come from three places, later ones winning: the defaults here, the
artifact's ``options`` (what the exporter baked in: device, hint, inference
precision) and ``BackendOptions.extra`` (the device profile's target).

Keys read (artifact ``options`` and ``BackendOptions.extra``):

- ``device``: ``CPU`` (default), ``GPU`` or ``NPU``.
- ``performance_hint``: ``LATENCY`` (default) or ``THROUGHPUT``.
- ``num_requests``: infer requests in the async queue of :meth:`OpenVinoBackend.infer_many`
  (default 2).
- ``num_streams``: CPU/GPU streams (default 1 under ``LATENCY``; the plugin's
  choice under ``THROUGHPUT``).
- ``inference_precision``: ``f32``, ``bf16`` or ``f16``. FP32 and INT8
  artifacts default to ``f32`` on CPU and GPU: the CPU plugin otherwise runs
  float layers in bf16 on AVX512-BF16/AMX machines, and an FP32 artifact would
  silently lose its parity with the reference (measured: 6e-3 vs 3e-8 max abs
  error on the sensor model). FP16 artifacts keep the plugin's default
  (reduced precision is what they asked for).

``BackendOptions.threads`` sets ``INFERENCE_NUM_THREADS``; ``cache_dir`` sets
``CACHE_DIR`` (compiled-blob cache: NPU/GPU compiles take seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.errors import InternalError
from edge_sdk.manifest import Precision, Target

from .base import Backend, BackendOptions, CheckedFeeds

#: Devices whose plugin takes ``INFERENCE_PRECISION_HINT``.
_PRECISION_HINT_DEVICES = {"CPU", "GPU"}


class OpenVinoBackend(Backend):
    """Runs OpenVINO IR artifacts with the OpenVINO runtime.

    The sync path (:meth:`infer`) reuses one infer request. Batch and
    benchmark paths can use :meth:`infer_many`, which keeps ``num_requests``
    requests in flight on an ``AsyncInferQueue`` (useful with the
    ``THROUGHPUT`` hint, or on GPU/NPU where requests overlap with the host).
    """

    name = "openvino"
    target = Target.OPENVINO

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._compiled: Any = None
        self._request: Any = None
        self._queue: Any = None
        self._device = "CPU"
        self._hint = "LATENCY"
        self._num_requests = 2
        self._version = ""
        self._out_index: list[tuple[int, str]] = []

    def _load_impl(self, path: Path) -> None:
        ov = require("openvino", "the openvino backend")
        assert self.artifact is not None  # set by Backend.load before _load_impl
        opts: dict[str, Any] = {**self.artifact.options, **(self.options.extra or {})}
        device = str(opts.get("device", "CPU")).upper()
        hint = str(opts.get("performance_hint") or "LATENCY").upper()
        self._num_requests = int(opts.get("num_requests") or 2)

        core = ov.Core()
        if self.options.cache_dir is not None:
            Path(self.options.cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.options.cache_dir)})
        # read_model finds the weights in the .bin beside the .xml (same stem).
        model = core.read_model(str(path))

        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if self.options.threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(self.options.threads)
        streams = opts.get("num_streams")
        if streams is None and hint == "LATENCY" and device in _PRECISION_HINT_DEVICES:
            streams = 1  # one request at a time: every thread on that one stream
        if streams is not None:
            config["NUM_STREAMS"] = int(streams)
        precision = opts.get("inference_precision")
        if precision is None and self.artifact.precision is not Precision.FP16:
            precision = "f32"
        if precision is not None and device in _PRECISION_HINT_DEVICES:
            config["INFERENCE_PRECISION_HINT"] = str(precision)

        self._compiled = core.compile_model(model, device, config)
        self._request = self._compiled.create_infer_request()
        self._queue = None
        self._device, self._hint, self._config = device, hint, config
        self._version = ov.get_version()
        self._ov = ov

        # Names usually survive ONNX -> IR; map by index where one did not.
        ports = list(self._compiled.outputs)
        if len(ports) < len(self.outputs):
            raise InternalError(
                f"the IR has {len(ports)} outputs, the manifest {len(self.outputs)}"
            )
        self._out_index = []
        for i, spec in enumerate(self.outputs):
            j = next((k for k, p in enumerate(ports) if spec.name in p.get_names()), i)
            self._out_index.append((j, spec.name))
        in_ports = list(self._compiled.inputs)
        self._in_key: dict[str, int | str] = {}
        for i, spec in enumerate(self.inputs):
            named = any(spec.name in p.get_names() for p in in_ports)
            self._in_key[spec.name] = spec.name if named else i
        self._renamed_inputs = any(not isinstance(k, str) for k in self._in_key.values())
        #: Fixed shapes (NPU, or an IR reshaped at export): the runtime pads to them.
        self.static_shapes = bool(self.artifact.input_shapes) or device == "NPU"

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[Any, np.ndarray]:
        if not self._renamed_inputs:
            return feeds
        return {self._in_key[k]: v for k, v in feeds.items()}

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = self._request
        # share_inputs: the request reads the numpy buffers in place (no copy in).
        req.infer(self._feeds(feeds), share_inputs=True)
        # The output tensors are the request's own buffers, reused next call: copy out.
        return {name: req.get_output_tensor(j).data.copy() for j, name in self._out_index}

    def infer_many(
        self, feeds_list: Sequence[dict[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """Run many independent requests through an async infer-request queue.

        Keeps ``num_requests`` requests in flight (``AsyncInferQueue``); results
        come back in input order. Each feed dict is checked against the input
        specs like :meth:`infer` (``CheckedFeeds`` skip the check). Shapes are
        the caller's business: on a static-shape device each feed must already
        have the compiled shape (the :class:`~edge_sdk.Runtime` pads only on its
        sync path).

        Args:
            feeds_list: One feed dict per request.

        Returns:
            Outputs by manifest name, one dict per request, in order.

        Raises:
            InvalidInputError: A feed does not match the input specs.
        """
        if not self._loaded:
            raise InternalError(f"{self.name} backend used before load()")
        for feeds in feeds_list:
            if type(feeds) is not CheckedFeeds:
                self.check_feeds(feeds)
        if self._queue is None:
            self._queue = self._ov.AsyncInferQueue(self._compiled, self._num_requests)
        results: list[dict[str, np.ndarray] | None] = [None] * len(feeds_list)
        index = self._out_index

        def done(request: Any, slot: int) -> None:
            results[slot] = {name: request.get_output_tensor(j).data.copy() for j, name in index}

        self._queue.set_callback(done)
        for slot, feeds in enumerate(feeds_list):
            # Inputs are copied into the request (no share_inputs): the caller may
            # reuse its arrays while requests are still in flight.
            self._queue.start_async(self._feeds(feeds), slot)
        self._queue.wait_all()
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise InternalError(f"openvino async queue returned no result for {missing}")
        return [r for r in results if r is not None]

    def _describe_impl(self) -> dict[str, Any]:
        compiled = self._compiled
        info: dict[str, Any] = {
            "engine_version": self._version,
            "device": self._device,
            "performance_hint": self._hint,
            "num_requests": self._num_requests,
            "static_shapes": self.static_shapes,
            "source": self.artifact.options.get("source") if self.artifact else None,
        }
        if compiled is not None:
            for key, prop in (
                ("num_streams", "NUM_STREAMS"),
                ("inference_precision", "INFERENCE_PRECISION_HINT"),
                ("inference_threads", "INFERENCE_NUM_THREADS"),
            ):
                try:
                    value = compiled.get_property(prop)
                except Exception:
                    info[key] = None
                    continue
                # ov.Type prints as "<Type: 'float32'>"; its type name is the config spelling.
                type_name = getattr(value, "get_type_name", None)
                info[key] = type_name() if callable(type_name) else str(value)
        if self.artifact and self.artifact.input_shapes:
            info["input_shapes"] = self.artifact.input_shapes
        return info

    def _close_impl(self) -> None:
        self._queue = None
        self._request = None
        self._compiled = None
