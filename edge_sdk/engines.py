"""The engine registry: one row per inference engine, the one place its facts live.

A row says what the engine is called (the ``target`` written in manifests),
which devices it runs on, which module it is and which extra installs it, which
runtime backend runs its artifacts and which compiler builds them, where it
comes in ``auto``'s order, and the type of its per-engine options in a device
profile. Everything else reads these rows: :class:`~edge_sdk.manifest.Target`
is the enum below, :mod:`edge_sdk.profiles` (``AUTO_ORDER``, the device check,
the ``host`` profile), :mod:`edge_sdk.runtimes` (``create_backend``), the
export's compilers (``exporters/targets/compile.py``) and the install hints of
:mod:`edge_sdk._optional`.

Adding an engine is a :class:`Target` member and its row here, plus its
runtime (``runtimes/<engine>.py``) and compiler (``exporters/targets/to_<engine>.py``).

Runtime and compiler are ``module:Class`` strings, imported on use: reading
this module imports no engine, no exporter and no torch (the device reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Target(StrEnum):
    """Inference engine an artifact is built for (its manifest ``target``)."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    LITERT = "litert"
    TENSORRT = "tensorrt"


#: Kinds of silicon an engine may run on (a row's ``devices`` are among these).
Device = Literal["CPU", "GPU", "NPU", "DLA"]


# -- per-engine options (the engine-specific fields of a profile target) ---------------------
class EngineOptions(BaseModel):
    """Settings of one engine in a device profile target.

    Written flat in profile YAML beside ``backend`` and ``device`` (see
    :class:`~edge_sdk.profiles.TargetSpec`); each engine declares its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Fields the runtime backend reads from ``BackendOptions.extra`` (when set).
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ()
    #: Fields applied only when the artifact is loaded: builds differing only in
    #: them share one artifact.
    LOAD_TIME_KEYS: ClassVar[tuple[str, ...]] = ()

    def check(self, device: str) -> None:
        """Raise ValueError when the options do not fit ``device``."""

    def runtime_extra(self) -> dict[str, Any]:
        """The fields a runtime backend reads, those that are set."""
        return {k: getattr(self, k) for k in self.RUNTIME_KEYS if getattr(self, k) is not None}

    def build_settings(self) -> dict[str, Any]:
        """The fields that shape the artifact (load-time ones left out)."""
        return self.model_dump(mode="json", exclude=set(self.LOAD_TIME_KEYS))


class OrtOptions(EngineOptions):
    """ONNX Runtime: no engine options (threads are common to every target)."""


class OpenVinoOptions(EngineOptions):
    """OpenVINO.

    Attributes:
        performance_hint: ``LATENCY`` or ``THROUGHPUT``.
        num_requests: Infer requests in the async queue.
        int8_sources: INT8 routes built (``nncf``, ``qdq``; unset: both, measured).
            For a model whose NNCF IR is known to fail the accuracy gate, ``[qdq]``
            skips its calibration, check and timing.
    """

    RUNTIME_KEYS = ("performance_hint", "num_requests")
    LOAD_TIME_KEYS = ("performance_hint", "num_requests")

    performance_hint: Literal["LATENCY", "THROUGHPUT"] | None = None
    num_requests: int | None = Field(default=None, gt=0)
    int8_sources: tuple[Literal["nncf", "qdq"], ...] | None = Field(default=None, min_length=1)


class LiteRtOptions(EngineOptions):
    """LiteRT.

    Attributes:
        layout: ``native``; ``nhwc`` (node-wise linear layers as 1x1
            convolutions over ``[B, 1, N, F]``); ``auto`` (build both, measure,
            keep the faster one that passes parity).
        int8_flavours: INT8 files tried, in this order, until one passes the
            accuracy gate (unset: every flavour the compiler knows, full integer
            first). For a model known to fail full-integer INT8 (attention: a
            probability of 1/degree rounds to 0 in 8 bits) listing only
            ``dynamic_range_quant`` skips a calibration and a conversion per bucket.
    """

    layout: Literal["native", "nhwc", "auto"] = "native"
    int8_flavours: (
        tuple[Literal["integer_quant", "integer_quant_with_int16_act", "dynamic_range_quant"], ...]
        | None
    ) = Field(default=None, min_length=1)


class TensorRtOptions(EngineOptions):
    """TensorRT (the profile's side; the build plan's format is in ``runtimes/trt.py``).

    Attributes:
        dla_core: DLA core (``device: DLA``).
        workspace_mb: Builder workspace limit (unset: :attr:`DEFAULT_WORKSPACE_MB`).
        fp16_fallback: Let layers without INT8 kernels run in FP16.
    """

    RUNTIME_KEYS = ("dla_core", "workspace_mb")
    #: Workspace of a build plan whose target sets none.
    DEFAULT_WORKSPACE_MB: ClassVar[int] = 1024
    #: Precisions the DLA runs (it has no FP32; FP32 layers fall back to the GPU).
    DLA_PRECISIONS: ClassVar[tuple[str, ...]] = ("fp16", "int8")

    dla_core: int | None = Field(default=None, ge=0)
    workspace_mb: int | None = Field(default=None, gt=0)
    fp16_fallback: bool = True

    def check(self, device: str) -> None:
        if device == "DLA" and self.dla_core is None:
            raise ValueError("device DLA needs dla_core")

    @property
    def workspace(self) -> int:
        """The builder workspace in MB (the default when unset)."""
        return self.workspace_mb or self.DEFAULT_WORKSPACE_MB


# -- the rows -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """One inference engine.

    Attributes:
        target: Its name, the manifest's ``target`` and the profile's ``backend``.
        label: Its name for people (in messages).
        devices: Devices it runs on; the first is the default (artifact keys
            name the others, e.g. ``openvino-npu``).
        module: Import name checked with ``find_spec`` (never imported here).
        alternatives: Other distributions providing it (e.g. ``tflite_runtime``).
        extra: The ``edge-graph-sdk[...]`` extra that installs it.
        runtime: ``module:Class`` of its runtime backend.
        compiler: ``module:Class`` of its export compiler; None when the export
            pipeline writes its artifacts itself (ONNX).
        options: Type of its profile options.
        auto_rank: Place in ``auto``'s order (fastest engines first).
        host_set: Capability set the ``host`` profile starts from for it.
        host_precisions: Precisions ``host`` offers, in order; None: INT8 first
            on CPUs with VNNI/AMX, else FP32 first.
    """

    target: Target
    label: str
    devices: tuple[Device, ...]
    module: str
    extra: str
    runtime: str
    compiler: str | None
    options: type[EngineOptions]
    auto_rank: int
    host_set: str
    host_precisions: tuple[str, ...] | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The engine's name (``target``'s value)."""
        return self.target.value

    @property
    def default_device(self) -> Device:
        """The device a target gets when it names none in its key."""
        return self.devices[0]


_ROWS = (
    Engine(
        Target.ONNXRUNTIME,
        label="ONNX Runtime",
        devices=("CPU",),
        module="onnxruntime",
        extra="onnxruntime",
        runtime="edge_sdk.runtimes.ort:OrtBackend",
        compiler=None,  # model.onnx / model.int8.onnx come from the export's ONNX step
        options=OrtOptions,
        auto_rank=3,
        host_set="ort-cpu",
    ),
    Engine(
        Target.OPENVINO,
        label="OpenVINO",
        devices=("CPU", "GPU", "NPU"),
        module="openvino",
        extra="openvino",
        runtime="edge_sdk.runtimes.ov:OpenVinoBackend",
        compiler="edge_sdk.exporters.targets.to_openvino:CompileOpenVINO",
        options=OpenVinoOptions,
        auto_rank=1,
        host_set="openvino-cpu",
    ),
    Engine(
        Target.LITERT,
        label="LiteRT",
        devices=("CPU",),
        # ai-edge-litert, or tflite-runtime where that is what a device has.
        module="ai_edge_litert",
        alternatives=("tflite_runtime",),
        extra="tflite",
        runtime="edge_sdk.runtimes.litert:LiteRtBackend",
        compiler="edge_sdk.exporters.targets.to_litert:CompileLiteRT",
        options=LiteRtOptions,
        auto_rank=2,
        host_set="litert-xnnpack",
        host_precisions=("int8", "fp32"),
    ),
    Engine(
        Target.TENSORRT,
        label="TensorRT",
        devices=("GPU", "DLA"),
        module="tensorrt",
        extra="tensorrt",
        runtime="edge_sdk.runtimes.trt:TensorRtBackend",
        compiler="edge_sdk.exporters.targets.to_tensorrt:CompileTensorRT",
        options=TensorRtOptions,
        auto_rank=0,
        host_set="tensorrt-gpu",
        host_precisions=("int8", "fp16", "fp32"),
    ),
)

#: Every engine by name, in :class:`Target` order.
ENGINES: dict[str, Engine] = {e.name: e for e in _ROWS}

#: Engine names in ``auto``'s order when no profile is given: fastest first.
AUTO_ORDER: list[str] = [e.name for e in sorted(_ROWS, key=lambda e: e.auto_rank)]


def find(name: object) -> Engine | None:
    """The row of engine ``name``, or None for an unknown name."""
    return ENGINES.get(str(name)) if isinstance(name, str) else None


def option_owner(key: str) -> Engine | None:
    """The engine whose options have a field ``key``, if any."""
    return next((e for e in _ROWS if key in e.options.model_fields), None)


__all__ = [
    "AUTO_ORDER",
    "ENGINES",
    "Device",
    "Engine",
    "EngineOptions",
    "LiteRtOptions",
    "OpenVinoOptions",
    "OrtOptions",
    "Target",
    "TensorRtOptions",
    "find",
    "option_owner",
]
