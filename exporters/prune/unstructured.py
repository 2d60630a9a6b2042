"""Unstructured magnitude pruning of every Linear weight (``torch.nn.utils.prune``).

The pruning is made permanent (``prune.remove``): a state dict with
``weight_orig`` / ``weight_mask`` does not load into the plain model. The zeros
are stored densely, so the ONNX file keeps its size.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn
from torch.nn.utils import prune as torch_prune

from edge_sdk.errors import ExportError

from .layers import LINEARS, weight_of

DENSE_NOTE = (
    "unstructured pruning zeroes weights but keeps every tensor's shape: the dense ONNX file "
    "does not shrink (use structured pruning to shrink it)"
)


def linear_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear layer (torch or PyG, also inside graph layers), once each."""
    seen: set[int] = set()
    found = []
    for path, module in model.named_modules():
        if isinstance(module, LINEARS) and id(module) not in seen:
            seen.add(id(module))
            found.append((path, module))
    return found


def unstructured(
    model: nn.Module, amount: float, scope: Literal["global", "layer"]
) -> tuple[list[dict[str, Any]], int, int]:
    """Zero the ``amount`` fraction of smallest-magnitude Linear weights, in place.

    Args:
        model: Model with initialised weights (run it once if it has lazy layers).
        amount: Fraction of weights to zero.
        scope: ``global``: rank all Linear weights together; ``layer``: each
            layer loses ``amount`` of its own weights.

    Returns:
        Per layer ``{"layer", "sparsity", "params"}``, the zeros and the weights
        in all those layers.

    Raises:
        ExportError: The model has no Linear layer.
    """
    layers = linear_weights(model)
    if not layers:
        raise ExportError(
            "unstructured pruning found no Linear layer (torch or PyG, also inside graph layers)"
        )
    if scope == "global":
        torch_prune.global_unstructured(
            [(m, "weight") for _, m in layers],
            pruning_method=torch_prune.L1Unstructured,
            amount=amount,
        )
    else:
        for _, m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=amount)
    for _, m in layers:
        torch_prune.remove(m, "weight")  # permanent: no weight_orig / weight_mask left
    report = []
    zeros = total = 0
    for path, m in layers:
        w = weight_of(m)
        n_zero, n = int((w == 0).sum()), w.numel()
        zeros, total = zeros + n_zero, total + n
        report.append({"layer": path, "sparsity": n_zero / n, "params": n})
    return report, zeros, total
