"""OpenVINO backend: OpenVINO IR (``.xml`` + ``.bin``) on CPU, GPU or NPU.

Settings come from three places, later ones winning: the defaults here, the
artifact's ``options`` (what the exporter baked in: device, hint, inference
precision) and ``BackendOptions.extra`` (the device profile's target).

Keys read (artifact ``options`` and ``BackendOptions.extra``):

- ``device``: ``CPU`` (default), ``GPU`` or ``NPU``.
- ``performance_hint``: ``LATENCY`` (default) or ``THROUGHPUT``.
- ``num_requests``: infer requests :meth:`OpenVinoBackend.infer_many` keeps in flight
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

No Python code ever runs on an OpenVINO worker thread (no ``set_callback``, no
``AsyncInferQueue``): such a callback needs the GIL, and destroying the
``CompiledModel`` on a thread that holds the GIL joins the plugin's worker
threads, so a callback still waiting for the GIL deadlocked the process (issue
#15; an upstream class of bug). Requests are started and waited for from the
calling thread, and :meth:`~runtimes.base.Backend.close` waits for calls in
flight, then drops the requests before the compiled model that made them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
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

    The sync path (:meth:`infer`) reuses one infer request, one call at a
    time. Batch and benchmark paths can use :meth:`infer_many`, which keeps
    ``num_requests`` requests in flight (useful with the ``THROUGHPUT`` hint,
    or on GPU/NPU where requests overlap with the host).

    Thread-safe: :meth:`infer` and :meth:`infer_many` may be called from
    several threads; :meth:`close` waits for the calls in flight, and a call
    that starts after it raises :class:`~edge_sdk.errors.InternalError`.
    """

    name = "openvino"
    target = Target.OPENVINO

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        self._compiled: Any = None
        self._request: Any = None
        #: Infer requests of :meth:`infer_many` not in use (taken and returned per call).
        self._idle: list[Any] = []
        #: Guards the fields above, ``_calls`` and ``_closed``; notified when ``_calls`` drops.
        self._state = threading.Condition()
        self._calls = 0  # calls in flight on the engine
        self._closed = False
        self._sync_lock = threading.Lock()  # the one sync request runs one call at a time
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

        compiled = core.compile_model(model, device, config)
        with self._state:
            self._compiled = compiled
            self._request = compiled.create_infer_request()
            self._idle = []
            self._closed = False
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

    @contextlib.contextmanager
    def _call(self) -> Iterator[Any]:
        """Count one call in flight (``close`` waits for it); yield the compiled model."""
        with self._state:
            if self._closed or self._compiled is None:
                raise InternalError(f"{self.name} backend used after close()")
            self._calls += 1
            compiled = self._compiled
        try:
            yield compiled
        finally:
            with self._state:
                self._calls -= 1
                if not self._calls:
                    self._state.notify_all()

    def _outputs(self, request: Any) -> dict[str, np.ndarray]:
        # The output tensors are the request's own buffers, reused next call: copy out.
        return {name: request.get_output_tensor(j).data.copy() for j, name in self._out_index}

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._call(), self._sync_lock:
            req = self._request
            # Inputs are copied in, never shared: the CPU plugin may keep a shared buffer as
            # its stream's input memory after the call, and a later request on that stream
            # (infer_many) then wrote its inputs into the caller's array (measured: the
            # caller's x overwritten; 4 KB copied per TEP-size window is the price).
            req.infer(self._feeds(feeds))
            return self._outputs(req)

    def infer_many(
        self, feeds_list: Sequence[dict[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """Run many independent requests, ``num_requests`` of them in flight at a time.

        Requests are started and waited for on the calling thread (no callback
        runs on an engine thread); results come back in input order. Each feed
        dict is checked against the input specs like :meth:`infer`
        (``CheckedFeeds`` skip the check) before any request starts. Inputs are
        copied into the requests, so the caller may reuse its arrays at once.
        Shapes are the caller's business: on a static-shape device each feed
        must already have the compiled shape (the :class:`~edge_sdk.Runtime`
        pads only on its sync path).

        Args:
            feeds_list: One feed dict per request.

        Returns:
            Outputs by manifest name, one dict per request, in order.

        Raises:
            InvalidInputError: A feed does not match the input specs.
            InternalError: The backend is not loaded, or was closed.
        """
        if not self._loaded:
            raise InternalError(f"{self.name} backend used before load()")
        for feeds in feeds_list:
            if type(feeds) is not CheckedFeeds:
                self.check_feeds(feeds)
        if not feeds_list:
            return []
        if self._buckets:  # one IR per bucket (base class): each call to its own IR
            return [self.infer(f) for f in feeds_list]
        with self._call() as compiled:
            wanted = min(self._num_requests, len(feeds_list))
            with self._state:
                requests = self._idle[-wanted:]
                del self._idle[-wanted:]
            requests += [compiled.create_infer_request() for _ in range(wanted - len(requests))]
            try:
                return self._run_many(requests, feeds_list)
            finally:
                with self._state:
                    self._idle.extend(requests)

    def _run_many(
        self, requests: list[Any], feeds_list: Sequence[dict[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        results: list[dict[str, np.ndarray]] = [{}] * len(feeds_list)
        running: list[int | None] = [None] * len(requests)  # slot each request works on
        try:
            for slot, feeds in enumerate(feeds_list):
                k = slot % len(requests)
                req, prev = requests[k], running[k]
                if prev is not None:
                    req.wait()  # releases the GIL
                    running[k] = None
                    results[prev] = self._outputs(req)
                # No share_inputs: the inputs are copied into the request.
                req.start_async(self._feeds(feeds))
                running[k] = slot
            for k, last in enumerate(running):
                if last is not None:
                    requests[k].wait()
                    running[k] = None
                    results[last] = self._outputs(requests[k])
        finally:
            # On an error, no request is handed back (or closed) while it still runs.
            for k, left in enumerate(running):
                if left is not None:
                    with contextlib.suppress(Exception):  # the first error is propagating
                        requests[k].wait()
        return results

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
        with self._state:
            self._closed = True  # no new call starts
            while self._calls:
                self._state.wait()  # calls in flight finish on the engine first
            requests, compiled = [self._request, *self._idle], self._compiled
            self._request, self._idle, self._compiled = None, [], None
        # Nothing runs on the engine now: drop the requests, then the compiled model
        # (its destructor joins the plugin's worker threads, none of which waits for us).
        requests.clear()
        del compiled
