"""Recovery fine-tuning after structured pruning, on a small synthetic task."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_undirected

from edge_sdk.errors import ExportError
from edge_sdk.exporters import Sample, sample_from_arrays
from edge_sdk.exporters.prune import PruneSpec, fine_tune, fine_tune_with, prune

N, F, C = 200, 8, 3


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = GCNConv(F, 32), GCNConv(32, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


@pytest.fixture(scope="module")
def task() -> Sample:
    """Labels: argmax of a fixed random linear map of the mean-aggregated features."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, F, generator=g)
    ei = to_undirected(torch.randint(0, N, (2, 400), generator=g))
    deg = torch.zeros(N).index_add_(0, ei[1], torch.ones(ei.shape[1])) + 1
    agg = (torch.zeros(N, F).index_add_(0, ei[1], x[ei[0]]) + x) / deg[:, None]
    y = (agg @ torch.randn(F, C, generator=g)).argmax(-1)
    split = np.arange(N) % 5
    arrays = {"x": x.numpy(), "edge_index": ei.numpy(), "y": y.numpy()}
    return sample_from_arrays(
        arrays | {"train_mask": split < 3, "val_mask": split == 3, "mask": split == 4}
    )


@pytest.fixture(scope="module")
def trained(task: Sample) -> nn.Module:
    torch.manual_seed(0)
    model = Net()
    fine_tune(model, task, 60, lr=0.05)  # the same loop trains from scratch
    return model


def _inputs(sample: Sample) -> dict[str, Tensor]:
    return {k: torch.from_numpy(v) for k, v in sample.inputs.items()}


def _accuracy(model: nn.Module, sample: Sample, rows: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(**_inputs(sample)).argmax(-1).numpy()
    assert sample.labels is not None
    return float((pred[rows] == sample.labels[rows]).mean())


def test_fine_tuning_recovers_what_pruning_lost(task: Sample, trained: nn.Module) -> None:
    assert task.mask is not None and task.val_mask is not None
    original = _accuracy(trained, task, task.mask)
    pruned, report = prune(trained, PruneSpec("structured", 0.75), _inputs(task))
    assert report.layers[0]["channels_after"] == 8
    before = _accuracy(pruned, task, task.mask)
    val_before = _accuracy(pruned, task, task.val_mask)
    losses = fine_tune(pruned, task, 20, lr=0.05)
    after = _accuracy(pruned, task, task.mask)

    assert original > 0.6 and before < original  # pruning hurt this model
    assert after >= before and after > before - 0.01
    assert _accuracy(pruned, task, task.val_mask) >= val_before
    assert len(losses) == 20 and losses[-1] < losses[0]
    assert not pruned.training


def test_best_validation_weights_are_kept(task: Sample, trained: nn.Module) -> None:
    model = copy.deepcopy(trained)
    start = copy.deepcopy(model.state_dict())
    losses = fine_tune(model, task, 3, lr=1e4)  # every step ruins the model
    assert len(losses) == 3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in start.items())


def test_static_form_samples_train_on_the_union() -> None:
    torch.manual_seed(0)
    ring = np.stack([np.arange(6), (np.arange(6) + 1) % 6])
    arrays = {
        "x": np.random.default_rng(0).normal(size=(2, 6, F)).astype(np.float32),
        "edge_index": to_undirected(torch.from_numpy(ring)).numpy(),
        "y": np.arange(12).reshape(2, 6) % C,
        "train_mask": np.ones((2, 6), bool),
    }
    losses = fine_tune(Net(), sample_from_arrays(arrays), 15, lr=0.05)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("drop", "match"), [("y", "no labels"), ("train_mask", "no train_mask")])
def test_missing_labels_or_train_mask_is_refused(task: Sample, drop: str, match: str) -> None:
    broken = copy.copy(task)
    setattr(broken, "labels" if drop == "y" else drop, None)
    with pytest.raises(ExportError, match=match):
        fine_tune(Net(), broken, 5)


def test_fine_tune_with_calls_the_user_function_then_sets_eval() -> None:
    model, seen = Net(), []
    fine_tune_with(model, lambda m: seen.append(m.training))
    assert seen == [True] and not model.training
