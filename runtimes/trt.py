"""TensorRT backend: ONNX + build plan in the bundle, engine built and cached on the device.

A TensorRT engine binds to one GPU model and one TensorRT version, so the
bundle carries the ONNX model and a *build plan* (precision flags,
optimisation profiles from the padding buckets, workspace, DLA core, timing
cache name; see :func:`build_serialized_engine`). On first load the engine is
built from the plan and cached, with the timing cache, under ``cache_dir``
(``BackendOptions.cache_dir``, else ``EDGE_SDK_CACHE_DIR``/tensorrt, else
``~/.cache/edge-sdk/tensorrt``) keyed by GPU name, compute capability,
TensorRT version and the artifact's sha256 (:func:`engine_cache_key`). A
bundle built on the same GPU carries the engine itself (``plan["engine"]``),
used when GPU and version match.

Inference uses the TensorRT 10 tensor-address API: device buffers allocated
once for the largest profile shape, ``set_input_shape`` per call (the runtime
pads to the bucket or fixed batch), ``execute_async_v3`` on one CUDA stream.
``tensorrt`` and ``cuda-python`` are imported lazily; torch is never imported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._env import env_path
from edge_sdk._fs import write_atomic
from edge_sdk._optional import require
from edge_sdk.errors import BackendUnavailableError, InvalidInputError
from edge_sdk.manifest import Target

from .base import Backend

#: Version tag of the plan JSON this module reads and the exporter writes.
PLAN_FORMAT = "edge-sdk.tensorrt-plan/1"
#: TensorRT majors the plan's builder calls were written for (11 drops BuilderFlag.FP16/INT8).
SUPPORTED_MAJORS = (10,)
#: Timing-cache file name (in the engine cache folder of one GPU + TensorRT version).
TIMING_CACHE = "timing.cache"


# -- shared with the exporter -------------------------------------------------------------
def engine_cache_key(
    gpu_name: str,
    compute_capability: str,
    trt_version: str,
    artifact_sha256: str,
    plan: Mapping[str, Any] | None = None,
) -> str:
    """Deterministic cache key of one engine.

    Args:
        gpu_name: CUDA device name, e.g. ``"Orin"`` or ``"NVIDIA H200"``.
        compute_capability: ``"major.minor"``, e.g. ``"8.7"``.
        trt_version: ``tensorrt.__version__``.
        artifact_sha256: sha256 of the ONNX the engine is built from.
        plan: The build settings (flags, profiles, DLA core...): a different
            plan for the same model is a different engine.

    Returns:
        A 64-character hex digest.
    """
    settings = {k: v for k, v in (plan or {}).items() if k != "engine"}
    blob = json.dumps(
        [gpu_name.strip(), compute_capability, trt_version, artifact_sha256, settings],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``EDGE_SDK_CACHE_DIR``/tensorrt, else ``~/.cache/edge-sdk/tensorrt``."""
    root = env_path("CACHE_DIR", Path.home() / ".cache" / "edge-sdk")
    assert root is not None
    return root / "tensorrt"


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        BackendUnavailableError: cuda-python is not installed.
    """
    try:
        return require("cuda.bindings.runtime", "TensorRT device buffers")
    except BackendUnavailableError as first:
        try:
            return require("cuda.cudart", "TensorRT device buffers")
        except BackendUnavailableError:
            raise BackendUnavailableError(
                'the TensorRT backend needs cuda-python: pip install "edge-graph-sdk[tensorrt]" '
                f"(or pip install cuda-python); {first}"
            ) from first


def _call(result: Any) -> Any:
    """Unwrap a cuda-python ``(err, value...)`` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def gpu_identity(cudart: Any, device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability ``"major.minor"``) of CUDA device ``device``."""
    prop = _call(cudart.cudaGetDeviceProperties(device))
    name = prop.name
    if isinstance(name, bytes | bytearray):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def gpu_available() -> tuple[bool, str]:
    """Whether tensorrt, cuda-python and a CUDA GPU are all present here (and why not)."""
    try:
        trt = require("tensorrt", "TensorRT engine builds")
        cudart = import_cudart()
        count = _call(cudart.cudaGetDeviceCount())
    except (BackendUnavailableError, RuntimeError) as exc:
        return False, str(exc)
    if not count:
        return False, "no CUDA device"
    name, cc = gpu_identity(cudart)
    return True, f"{name} (sm {cc}), TensorRT {trt.__version__}"


def _check_version(trt: Any) -> None:
    major = int(str(trt.__version__).split(".")[0])
    if major not in SUPPORTED_MAJORS:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__}: this build plan was written for TensorRT "
            f"{'/'.join(map(str, SUPPORTED_MAJORS))}.x (TensorRT 11 removes the FP16/INT8 "
            "builder flags the plan uses); install tensorrt>=10,<11"
        )


def build_serialized_engine(
    onnx_path: Path, plan: Mapping[str, Any], timing_cache: Path | None = None
) -> bytes:
    """Build a TensorRT engine from an ONNX file and a build plan.

    The one builder: the exporter calls it when a GPU is present at export,
    the runtime on first load otherwise.

    Args:
        onnx_path: The ONNX model (QDQ for INT8: explicit quantisation).
        plan: ``builder_flags`` and ``cleared_flags`` (``BuilderFlag`` names),
            ``profiles`` (list of ``{input: {"min","opt","max"}}``),
            ``workspace_mb``, ``device`` (``GPU``/``DLA``), ``dla_core``,
            ``builder_optimization_level``.
        timing_cache: Timing-cache file read before and written after the build.

    Returns:
        The serialised engine.

    Raises:
        BackendUnavailableError: TensorRT is missing or the wrong major version.
        RuntimeError: The parser or the builder refused the model (errors listed).
    """
    trt = require("tensorrt", "building TensorRT engines")
    _check_version(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # plugin-routed ops must resolve at build and load
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan["workspace_mb"]) << 20)
    if plan.get("builder_optimization_level") is not None:
        config.builder_optimization_level = int(plan["builder_optimization_level"])
    for flag in plan.get("builder_flags", []):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.get("cleared_flags", []):
        # FP32 plans clear TF32 (on by default from Ampere): FP32 parity needs IEEE matmuls.
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if plan.get("device") == "DLA":
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan["dla_core"])  # GPU_FALLBACK, if wanted, is in builder_flags
    for shapes in plan.get("profiles", []):
        profile = builder.create_optimization_profile()
        for name, s in shapes.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)

    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path.name}")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def cache_folder(
    gpu_name: str, compute_capability: str, trt_version: str, root: Path | None = None
) -> Path:
    """Engine + timing-cache folder of one GPU model and TensorRT version."""
    base = root or default_cache_dir()
    return base / _slug(f"{gpu_name}-sm{compute_capability}-trt{trt_version}")


# -- the backend ------------------------------------------------------------------------
class TensorRtBackend(Backend):
    """Runs TensorRT artifacts (ONNX + build plan, optionally a prebuilt engine).

    Reads ``artifact.options`` (the plan, see :func:`build_serialized_engine`)
    and ``BackendOptions.cache_dir``; ``BackendOptions.extra`` may carry
    ``dla_core`` (overrides the plan's) and ``device``.
    """

    name = "tensorrt"
    target = Target.TENSORRT
    static_shapes = True  # engines are built for the buckets / fixed batch: the runtime pads

    @classmethod
    def runs_here(cls) -> tuple[bool, str]:
        return gpu_available()

    def _load_impl(self, path: Path) -> None:
        trt = require("tensorrt", "the TensorRT backend")
        _check_version(trt)
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        assert self.artifact is not None
        plan = dict(self.artifact.options)
        if plan.get("format") != PLAN_FORMAT:
            raise BackendUnavailableError(
                f"{self.artifact.name}: no TensorRT build plan ({PLAN_FORMAT}) in the manifest"
            )
        extra = self.options.extra or {}
        if extra.get("dla_core") is not None and plan.get("device") == "DLA":
            plan["dla_core"] = int(extra["dla_core"])
        self._plan = plan

        gpu, cc = gpu_identity(cudart)
        version = str(trt.__version__)
        self._source, engine_bytes = self._engine_bytes(path, plan, gpu, cc, version)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)
        if plan.get("device") == "DLA":
            self._runtime.DLA_core = int(plan["dla_core"])
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._stream = _call(cudart.cudaStreamCreate())
        self._gpu, self._version = f"{gpu} (sm {cc})", version
        self._setup_io()

    def _engine_bytes(
        self, path: Path, plan: Mapping[str, Any], gpu: str, cc: str, version: str
    ) -> tuple[str, bytes]:
        """The bundle's engine when built for this GPU and version; else cached; else built."""
        assert self.artifact is not None
        pre = plan.get("engine")
        if pre and (pre.get("gpu"), pre.get("compute_capability"), pre.get("tensorrt")) == (
            gpu,
            cc,
            version,
        ):
            return "bundle", (path.parent / pre["path"]).read_bytes()
        key = engine_cache_key(gpu, cc, version, self.artifact.sha256, plan)
        folder = cache_folder(gpu, cc, version, self.options.cache_dir)
        engine_file = folder / f"{key}.engine"
        if engine_file.is_file():
            return "cache", engine_file.read_bytes()
        timing = folder / str(plan.get("timing_cache", TIMING_CACHE))
        data = build_serialized_engine(path, plan, timing)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(engine_file, data)  # a concurrent loader never reads half an engine
        return "built", data

    def _setup_io(self) -> None:
        """Buffers sized for the largest shape of every profile; addresses set once."""
        trt, cudart, engine, ctx = self._trt, self._cudart, self._engine, self._context
        self._inputs: list[str] = []
        self._outs: list[str] = []
        self._dtypes: dict[str, np.dtype[Any]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self._dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outs).append(name)
        # Each profile's (min, max) per input: a call picks the first profile its shapes fit.
        self._ranges: list[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = []
        nbytes: dict[str, int] = dict.fromkeys(self._dtypes, 0)
        for p in range(engine.num_optimization_profiles):
            ranges = {}
            ctx.set_optimization_profile_async(p, int(self._stream))
            for name in self._inputs:
                lo, _opt, hi = engine.get_tensor_profile_shape(name, p)
                ranges[name] = (tuple(lo), tuple(hi))
                ctx.set_input_shape(name, tuple(hi))
                nbytes[name] = max(nbytes[name], int(np.prod(hi)) * self._dtypes[name].itemsize)
            for name in self._outs:
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"output {name} has a data-dependent shape {shape}")
                size = int(np.prod(shape)) * self._dtypes[name].itemsize
                nbytes[name] = max(nbytes[name], size)
            self._ranges.append(ranges)
        _call(cudart.cudaStreamSynchronize(self._stream))
        self._buffers = {n: _call(cudart.cudaMalloc(max(b, 1))) for n, b in nbytes.items()}
        for name, ptr in self._buffers.items():
            ctx.set_tensor_address(name, int(ptr))
        self._profile = engine.num_optimization_profiles - 1  # the last one set above
        self._profile_for: dict[tuple[tuple[int, ...], ...], int] = {}

    def _pick_profile(self, shapes: tuple[tuple[int, ...], ...]) -> int:
        cached = self._profile_for.get(shapes)
        if cached is not None:
            return cached
        for p, ranges in enumerate(self._ranges):
            if all(
                len(s) == len(ranges[n][0])
                and all(lo <= d <= hi for d, lo, hi in zip(s, *ranges[n], strict=True))
                for n, s in zip(self._inputs, shapes, strict=True)
            ):
                self._profile_for[shapes] = p
                return p
        raise InvalidInputError(
            self._inputs[0],
            f"shapes {dict(zip(self._inputs, shapes, strict=True))} fit no optimisation profile "
            f"of this engine ({self._ranges})",
        )

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self._context, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        arrays = [np.ascontiguousarray(feeds[n], dtype=self._dtypes[n]) for n in self._inputs]
        profile = self._pick_profile(tuple(a.shape for a in arrays))
        if profile != self._profile:
            ctx.set_optimization_profile_async(profile, int(stream))
            self._profile = profile
        for name, arr in zip(self._inputs, arrays, strict=True):
            ctx.set_input_shape(name, arr.shape)
            _call(
                cudart.cudaMemcpyAsync(
                    self._buffers[name], arr.ctypes.data, arr.nbytes, h2d, stream
                )
            )
        if not ctx.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = {}
        for name in self._outs:
            host = np.empty(tuple(ctx.get_tensor_shape(name)), self._dtypes[name])
            _call(
                cudart.cudaMemcpyAsync(
                    host.ctypes.data, self._buffers[name], host.nbytes, d2h, stream
                )
            )
            out[name] = host
        # Pageable host memory: the D2H copies complete at this sync, not before.
        _call(cudart.cudaStreamSynchronize(stream))
        return out

    def _describe_impl(self) -> dict[str, Any]:
        return {
            "engine_version": self._version,
            "gpu": self._gpu,
            "engine_source": self._source,  # bundle | cache | built
            "device": self._plan.get("device", "GPU"),
            "profiles": len(self._ranges),
        }

    def _close_impl(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = self._runtime = None
