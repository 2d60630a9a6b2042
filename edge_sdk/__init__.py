"""edge-graph-sdk: compressed graph neural networks on factory edge devices.

The device-side API lives here (graph types, bundles, :class:`Runtime`); the
build-time pipeline is :mod:`edge_sdk.exporters` (needs the ``[export]`` extra).
Importing this package never imports torch or an inference engine.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .bundle import Bundle, pack, unpack
from .errors import (
    AccuracyError,
    BackendUnavailableError,
    EdgeSDKError,
    ExportError,
    InternalError,
    InvalidInputError,
    ManifestError,
    OverloadedError,
    ParityError,
    ProfileError,
    UnsupportedModelError,
    UnsupportedTargetError,
)
from .graph import DynamicGraph, StaticGraph, as_graph, validate
from .io_contract import Bucket, GraphForm, GraphSpec, OutputLevel, TensorSpec
from .manifest import Decision, Manifest, Topology
from .packing import BatchLayout, Padding, batch_graphs, pad_graph, unbatch_outputs, unpad_outputs
from .runtime import Runtime

try:
    __version__ = version("edge-graph-sdk")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

__all__ = [
    "AccuracyError",
    "BackendUnavailableError",
    "BatchLayout",
    "Bucket",
    "Bundle",
    "Decision",
    "DynamicGraph",
    "EdgeSDKError",
    "ExportError",
    "GraphForm",
    "GraphSpec",
    "InternalError",
    "InvalidInputError",
    "Manifest",
    "ManifestError",
    "OutputLevel",
    "OverloadedError",
    "Padding",
    "ParityError",
    "ProfileError",
    "Runtime",
    "StaticGraph",
    "TensorSpec",
    "Topology",
    "UnsupportedModelError",
    "UnsupportedTargetError",
    "__version__",
    "as_graph",
    "batch_graphs",
    "pack",
    "pad_graph",
    "unbatch_outputs",
    "unpack",
    "unpad_outputs",
    "validate",
]
