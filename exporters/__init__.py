"""Build-time pipeline: PyTorch / PyG model -> verified edge bundle.

Needs the ``[export]`` extra (torch, torch-geometric, onnx). Example::

    from edge_sdk.exporters import ExportConfig, export_model
    export_model(model, "samples.npz", "out/gcn.bundle", ExportConfig(name="gcn"))
"""

from __future__ import annotations

from edge_sdk._optional import require

require("torch", "edge_sdk.exporters")
require("torch_geometric", "edge_sdk.exporters")
require("onnx", "edge_sdk.exporters")

from .intake import Sample, load_model, load_samples, sample_from_arrays  # noqa: E402
from .pipeline import ExportConfig, ExportResult, export_model  # noqa: E402
from .support import supported_names  # noqa: E402

__all__ = [
    "ExportConfig",
    "ExportResult",
    "Sample",
    "export_model",
    "load_model",
    "load_samples",
    "sample_from_arrays",
    "supported_names",
]
