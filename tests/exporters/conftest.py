"""Fixtures shared by the exporter tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from table_bundles import Bundles
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


@pytest.fixture(scope="session")
def table_bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Each tiny (model, form) exported once for the session, on first use (never modify).

    Shared by ``test_support_matrix.py`` and ``test_dynamic_tables.py``: every engine and
    precision, the dynamic form over neighbour tables with two padding buckets and an
    in-degree limit of 16 (see ``table_bundles.py``).
    """
    return Bundles(tmp_path_factory)
