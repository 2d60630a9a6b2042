"""Recovery fine-tuning after pruning: full-batch, Adam, best validation weights."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sdk.errors import ExportError

from ..intake import Sample
from ..wrappers import StaticWrapper, as_tuple, model_inputs


def fine_tune(
    model: nn.Module, sample: Sample, epochs: int, lr: float = 0.01, weight_decay: float = 5e-4
) -> list[float]:
    """Train ``model`` in place on ``sample``'s training rows.

    Cross-entropy of the first output against ``sample.labels[train_mask]``.
    With a ``val_mask``, the weights of the best validation accuracy are kept
    (the starting weights count as epoch 0); ``sample.mask`` (the reported
    rows) is never used.

    Args:
        model: The (pruned) model; ends in eval mode.
        sample: One sample graph with ``labels`` and ``train_mask``.
        epochs: Full-batch training steps.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.

    Returns:
        The training loss of each epoch.

    Raises:
        ExportError: No labels or train_mask, non-integer labels, or labels
            that do not match the first output's rows.
    """
    if sample.labels is None or sample.train_mask is None:
        raise ExportError(
            f"fine-tuning needs labels ('y') and a 'train_mask' in the sample data; "
            f"{sample.name} has {'no labels' if sample.labels is None else 'no train_mask'}"
        )
    if not np.issubdtype(sample.labels.dtype, np.integer):
        raise ExportError(
            f"fine-tuning needs integer class labels; {sample.name} has {sample.labels.dtype}"
        )
    if epochs < 0:
        raise ExportError(f"fine-tuning epochs must be >= 0, got {epochs}")
    feeds = _feeds(model, sample)
    labels = torch.from_numpy(sample.labels.astype(np.int64)).reshape(-1)
    train = _rows(sample.train_mask)
    val = _rows(sample.val_mask) if sample.val_mask is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_acc, best_state = -1.0, _state(model)
    if val is not None:
        best_acc = _accuracy(model, feeds, labels, val)
    losses: list[float] = []
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        logits = _logits(model, feeds, labels.numel())
        loss = F.cross_entropy(logits[train], labels[train])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if val is not None:
            acc = _accuracy(model, feeds, labels, val)
            if acc > best_acc:
                best_acc, best_state = acc, _state(model)
    if val is not None:
        model.load_state_dict(best_state)
    model.eval()
    return losses


def fine_tune_with(model: nn.Module, fn: Callable[[nn.Module], None]) -> None:
    """Let the user's own training function fine-tune ``model``; then set eval mode."""
    fn(model)
    model.eval()


def _feeds(model: nn.Module, sample: Sample) -> dict[str, Tensor]:
    x = sample.inputs["x"]
    if x.ndim == 3 and "edge_index" in sample.topology:  # static form: the disjoint union
        names = [n for n in model_inputs(model, ["x", "edge_index", "batch"]) if n != "edge_attr"]
        ei = torch.from_numpy(np.asarray(sample.topology["edge_index"], np.int64))
        wrapper = StaticWrapper(model, ei, int(x.shape[1]), names, [])
        return wrapper.flat_inputs(torch.from_numpy(x))
    if x.ndim == 3:
        return {"x": torch.from_numpy(x)}
    names = model_inputs(model, list(sample.inputs))
    feeds = {k: torch.from_numpy(v) for k, v in sample.inputs.items() if k in names}
    if "batch" in names and "batch" not in feeds:
        feeds["batch"] = torch.zeros(x.shape[0], dtype=torch.int64)
    return feeds


def _rows(mask: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(mask, bool)).reshape(-1)


def _logits(model: nn.Module, feeds: dict[str, Tensor], n_labels: int) -> Tensor:
    out = as_tuple(model(**feeds))[0]
    logits = out.reshape(-1, out.shape[-1])
    if logits.shape[0] != n_labels:
        raise ExportError(
            f"fine-tuning: the model's first output has {logits.shape[0]} rows of class scores, "
            f"the labels have {n_labels}"
        )
    return logits


def _accuracy(model: nn.Module, feeds: dict[str, Tensor], labels: Tensor, rows: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = _logits(model, feeds, labels.numel()).argmax(-1)
    return float((pred[rows] == labels[rows]).float().mean())


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
