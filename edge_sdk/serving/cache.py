"""A bounded, thread-safe LRU cache of inference results.

Sensor windows repeat (a stuck sensor, a replayed message, several clients
asking about the same window): answering those from memory costs a hash
instead of a model run. Entries are keyed by the model identity and the exact
request bytes (:meth:`ResultCache.make_key`), so a different model version or
one changed input bit is a different entry; the cache is bounded by bytes,
not entries, and evicts the least recently used first.

Cached arrays are read-only (``flags.writeable = False``): every caller that
hits the same entry shares them, so none may change them. Copy one
(``np.array(out["y"])``) to modify it.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..graph import DynamicGraph, StaticGraph

#: Default bound of a cache: 64 MiB of outputs and keys.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_DIGEST_SIZE = 32


def _frame(h: Any, data: bytes) -> None:
    """Feed ``data`` length-prefixed, so concatenations never collide."""
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


class ResultCache:
    """Outputs by request, bounded by bytes, least recently used evicted first.

    Thread-safe. Used by :class:`~edge_sdk.serving.DynamicBatcher` (a hit
    answers a request without queuing it) and usable alone::

        cache = ResultCache(max_bytes=16 << 20)
        key = ResultCache.make_key("tep", "1.0.0", {"x": x})
        out = cache.get(key)
        if out is None:
            out = cache.put(key, runtime.infer(x))

    Args:
        max_bytes: Bound on the sum of every entry's output ``nbytes`` plus
            its key. An entry larger than this on its own is not stored.

    Raises:
        ValueError: ``max_bytes`` < 1.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- keys ---------------------------------------------------------------------------
    @staticmethod
    def make_key(
        model: str,
        version: str,
        inputs: Mapping[str, Any] | StaticGraph | DynamicGraph | np.ndarray,
        artifact: str = "",
    ) -> bytes:
        """The cache key of one request: BLAKE2b over the model and every input.

        Covers the model name, version and artifact name, then each input's
        name, dtype, shape and bytes (inputs in name order). Two requests
        share a key only if all of those are equal.

        Args:
            model: Model name (``manifest.model.name``).
            version: Model version.
            inputs: Named arrays, a validated graph (its fields), or a bare
                array (named ``x``). Use the same form for the same request:
                a ``[N, F]`` array and its ``[1, N, F]`` batch differ in shape,
                so in key (the batcher keys validated graphs, which are
                canonical).
            artifact: Artifact name, when one model ships several.

        Returns:
            A 32-byte digest.
        """
        h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
        for part in (model, version, artifact):
            _frame(h, part.encode())
        for name, value in sorted(_named_arrays(inputs)):
            arr = np.ascontiguousarray(value)
            _frame(h, f"{name}\0{arr.dtype.str}\0{arr.shape}".encode())
            h.update(arr.data)  # its length follows from dtype and shape
        return h.digest()

    # -- entries ----------------------------------------------------------------------------
    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        """The cached outputs for ``key`` (read-only arrays), or None on a miss.

        A hit makes the entry the most recently used. The returned dict is the
        caller's own; the arrays are shared and not writeable.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return dict(entry[0])

    def put(self, key: bytes, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Store a copy of ``outputs`` under ``key``; evict LRU entries to fit.

        The arrays are copied (a view would pin its whole base array, e.g. a
        merged batch's output) and made read-only.

        Returns:
            The stored (read-only) outputs, which :meth:`get` will return. When
            the entry alone exceeds ``max_bytes`` it is not stored and the
            read-only copies are returned all the same.
        """
        stored: dict[str, np.ndarray] = {}
        for name, value in outputs.items():
            arr = np.array(value, copy=True, order="C")
            arr.flags.writeable = False
            stored[name] = arr
        size = sum(a.nbytes for a in stored.values()) + len(key)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return dict(stored)
            self._entries[key] = (stored, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed
                self.evictions += 1
        return dict(stored)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held now (outputs plus keys)."""
        with self._lock:
            return self._bytes

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``hits``, ``misses``, ``evictions``, ``entries``, ``bytes``, ``max_bytes``."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }


def _named_arrays(
    inputs: Mapping[str, Any] | StaticGraph | DynamicGraph | np.ndarray,
) -> list[tuple[str, Any]]:
    if isinstance(inputs, StaticGraph):
        return [("x", inputs.x)]
    if isinstance(inputs, DynamicGraph):
        fields = {
            "x": inputs.x,
            "edge_index": inputs.edge_index,
            "edge_attr": inputs.edge_attr,
            "batch": inputs.batch,
        }
        return [(k, v) for k, v in fields.items() if v is not None]
    if isinstance(inputs, Mapping):
        return [(str(k), v) for k, v in inputs.items()]
    return [("x", inputs)]


__all__ = ["DEFAULT_MAX_BYTES", "ResultCache"]
