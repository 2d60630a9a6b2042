"""Fixtures shared by the exporter tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

GraphFactory = Callable[[int, int, int], dict[str, Tensor]]


@pytest.fixture
def make_graph() -> GraphFactory:
    """``make_graph(nodes, features, edges)``: a seeded random graph as forward kwargs."""

    def build(n: int, f: int, e: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        return {
            "x": torch.randn(n, f, generator=g),
            "edge_index": torch.randint(0, n, (2, e), generator=g),
        }

    return build
