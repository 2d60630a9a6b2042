"""Fixtures for the serving tests: runtimes, servers and HTTP clients.

The TEP-size ``sensor_bundle`` and the dynamic ``tiny_gcn_bundle`` come from
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from http_helpers import Client


@pytest.fixture(scope="module")
def sensor_runtime(sensor_bundle: Path) -> Iterator[Any]:
    """The sensor bundle loaded once per module (fp32, one thread)."""
    from edge_sdk import Runtime

    with Runtime.load(sensor_bundle, precision="fp32", threads=1) as rt:
        yield rt


@pytest.fixture(scope="module")
def gcn_runtime(tiny_gcn_bundle: Path) -> Iterator[Any]:
    """The tiny dynamic-form GCN (x [N, 8] + edge_index [2, E] -> out [N, 3])."""
    from edge_sdk import Runtime

    with Runtime.load(tiny_gcn_bundle, precision="fp32", threads=1) as rt:
        yield rt


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """Return ``serve(runtime, **kwargs) -> InferenceServer`` (started; stopped at teardown)."""
    from edge_sdk.serving.http import InferenceServer

    made: list[InferenceServer] = []

    def make(runtime: Any, **kwargs: Any) -> InferenceServer:
        server = InferenceServer(runtime, **kwargs).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def client_for() -> Iterator[Callable[..., Client]]:
    """Return ``client_for(server) -> Client``; clients are closed at teardown."""
    made: list[Client] = []

    def make(server: Any) -> Client:
        c = Client(server.port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
