"""Pruning for the export pipeline.

* ``unstructured:<amount>[:global|:layer]``: magnitude pruning of every Linear
  weight (also inside graph layers), made permanent; shapes are unchanged.
* ``structured:<amount>``: removes hidden channels (per head for attention
  layers) so tensors, and the ONNX file, really shrink.

Example::

    from edge_sdk.exporters.prune import PruneSpec, fine_tune, prune

    pruned, report = prune(model, PruneSpec.parse("structured:0.5"), example)
    fine_tune(pruned, sample, epochs=30)
"""

from __future__ import annotations

from .api import count_params, prune
from .finetune import fine_tune, fine_tune_with
from .spec import PruneReport, PruneSpec

__all__ = ["PruneReport", "PruneSpec", "count_params", "fine_tune", "fine_tune_with", "prune"]
