"""The node's running model, swappable without failing an in-flight inference.

Callers borrow the current :class:`~edge_sdk.Runtime` with :meth:`ActiveModel.use`;
:meth:`ActiveModel.swap` installs a new one at once for later callers and
closes the old one only when its last borrower returns it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..runtime import Runtime


class ActiveModel:
    """Reference-counted holder of the serving runtime.

    Args:
        runtime: The runtime to serve first.
        source: Bundle directory it was loaded from.
    """

    def __init__(self, runtime: Runtime, source: Path) -> None:
        self._lock = threading.Lock()
        self._runtime = runtime
        self._source = source
        self._borrowed: dict[int, int] = {}
        self._retired: dict[int, Runtime] = {}

    @property
    def runtime(self) -> Runtime:
        """The current runtime (for reading metadata; use :meth:`use` to infer)."""
        return self._runtime

    @property
    def source(self) -> Path:
        """Bundle directory of the current runtime."""
        return self._source

    @contextmanager
    def use(self) -> Iterator[Runtime]:
        """Borrow the current runtime for one call; a concurrent swap waits for it."""
        with self._lock:
            rt = self._runtime
            self._borrowed[id(rt)] = self._borrowed.get(id(rt), 0) + 1
        try:
            yield rt
        finally:
            with self._lock:
                left = self._borrowed[id(rt)] - 1
                if left:
                    self._borrowed[id(rt)] = left
                else:
                    del self._borrowed[id(rt)]
                    retired = self._retired.pop(id(rt), None)
            if not left and retired is not None:
                retired.close()

    def swap(self, runtime: Runtime, source: Path) -> Runtime:
        """Serve ``runtime`` from now on; the old one closes once no call uses it.

        Returns:
            The previous runtime (already closed, or closing when returned).
        """
        with self._lock:
            old = self._runtime
            self._runtime, self._source = runtime, source
            busy = id(old) in self._borrowed
            if busy:
                self._retired[id(old)] = old
        if not busy:
            old.close()
        return old

    def close(self) -> None:
        """Close the current runtime."""
        with self._lock:
            rt = self._runtime
        rt.close()
