"""ResultCache: exact keys, read-only shared results, LRU eviction by bytes, counters."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_sdk import StaticGraph
from edge_sdk.serving import ResultCache


def _x(seed: int = 0, shape: tuple[int, ...] = (1, 4, 3)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _key(x: np.ndarray, version: str = "1.0.0", model: str = "m") -> bytes:
    return ResultCache.make_key(model, version, {"x": x})


def _out(nbytes: int, fill: float = 1.0) -> dict[str, np.ndarray]:
    return {"y": np.full(nbytes // 4, fill, np.float32)}


# -- keys ----------------------------------------------------------------------------------


def test_equal_requests_share_a_key() -> None:
    x = _x()
    assert _key(x) == _key(x.copy())
    assert len(_key(x)) == 32
    # A validated graph keys like the mapping of its fields.
    assert ResultCache.make_key("m", "1.0.0", StaticGraph(x)) == _key(x)
    assert ResultCache.make_key("m", "1.0.0", x) == _key(x)  # a bare array is "x"
    # Input order does not matter; names do.
    a, b = _x(1, (2, 3)), _x(2, (2, 3))
    assert ResultCache.make_key("m", "1", {"a": a, "b": b}) == ResultCache.make_key(
        "m", "1", {"b": b, "a": a}
    )
    assert ResultCache.make_key("m", "1", {"a": a, "b": b}) != ResultCache.make_key(
        "m", "1", {"a": b, "b": a}
    )


@pytest.mark.parametrize(
    "change",
    ["value", "dtype", "shape", "name", "model", "version", "artifact"],
)
def test_any_difference_changes_the_key(change: str) -> None:
    x = _x()
    base = ResultCache.make_key("m", "1.0.0", {"x": x}, artifact="onnx-fp32")
    other = {
        "value": lambda: ResultCache.make_key(
            "m", "1.0.0", {"x": np.where(np.arange(x.size).reshape(x.shape) == 5, 0.5, x)}
        ),
        "dtype": lambda: ResultCache.make_key("m", "1.0.0", {"x": x.view(np.int32)}),
        "shape": lambda: ResultCache.make_key("m", "1.0.0", {"x": x.reshape(1, 3, 4)}),
        "name": lambda: ResultCache.make_key("m", "1.0.0", {"features": x}),
        "model": lambda: ResultCache.make_key("n", "1.0.0", {"x": x}),
        "version": lambda: ResultCache.make_key("m", "1.1.0", {"x": x}),
        "artifact": lambda: ResultCache.make_key("m", "1.0.0", {"x": x}, artifact="onnx-int8"),
    }[change]()
    assert other != base
    # Non-contiguous inputs hash by their values.
    assert ResultCache.make_key("m", "1.0.0", {"x": np.asfortranarray(x)}, "onnx-fp32") == base


# -- entries -------------------------------------------------------------------------------


def test_hit_returns_equal_read_only_arrays() -> None:
    cache = ResultCache()
    key = _key(_x())
    original = {"y": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert cache.get(key) is None
    stored = cache.put(key, original)
    original["y"][0, 0] = 99  # the cache holds a copy
    got = cache.get(key)
    assert got is not None
    np.testing.assert_array_equal(got["y"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert not got["y"].flags.writeable and not stored["y"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got["y"][0, 0] = 1
    got["z"] = np.zeros(1)  # the dict is the caller's own
    again = cache.get(key)
    assert again is not None and set(again) == {"y"}
    assert cache.stats | {"bytes": 0} == {
        "hits": 2,
        "misses": 1,
        "evictions": 0,
        "entries": 1,
        "bytes": 0,
        "max_bytes": cache.max_bytes,
    }
    assert cache.nbytes == 24 + len(key)


def test_views_are_stored_as_compact_copies() -> None:
    merged = np.zeros((1000, 22), np.float32)
    cache = ResultCache()
    key = _key(_x())
    cache.put(key, {"out": merged[3:4]})
    got = cache.get(key)
    assert got is not None
    assert got["out"].base is None or got["out"].base.nbytes == 22 * 4
    assert cache.nbytes == 22 * 4 + len(key)


def test_lru_eviction_by_bytes() -> None:
    keys = [_key(_x(i)) for i in range(4)]
    entry = 400 + len(keys[0])
    cache = ResultCache(max_bytes=3 * entry)
    for k in keys[:3]:
        cache.put(k, _out(400))
    assert len(cache) == 3 and cache.nbytes == 3 * entry
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recently used
    cache.put(keys[3], _out(400))
    assert keys[1] not in cache  # the least recently used went
    assert all(k in cache for k in (keys[0], keys[2], keys[3]))
    assert cache.stats["evictions"] == 1
    # A bigger entry evicts as many as it needs.
    big = _key(_x(9))
    cache.put(big, _out(800))
    assert big in cache and cache.nbytes <= cache.max_bytes
    assert cache.stats["evictions"] == 3
    # Replacing an entry does not count its old bytes twice.
    cache.put(big, _out(800, fill=2.0))
    assert cache.nbytes == 800 + len(big) + (entry if len(cache) == 2 else 0)
    got = cache.get(big)
    assert got is not None and got["y"][0] == 2.0


def test_an_entry_larger_than_the_cache_is_not_stored() -> None:
    cache = ResultCache(max_bytes=100)
    key = _key(_x())
    out = cache.put(key, _out(400))
    assert not out["y"].flags.writeable
    assert key not in cache and cache.nbytes == 0 and len(cache) == 0


def test_other_model_version_misses() -> None:
    cache = ResultCache()
    x = _x()
    cache.put(_key(x, "1.0.0"), _out(8))
    assert cache.get(_key(x, "1.1.0")) is None
    assert cache.get(_key(x, "1.0.0")) is not None
    assert (cache.stats["hits"], cache.stats["misses"]) == (1, 1)


def test_clear_keeps_counters() -> None:
    cache = ResultCache()
    key = _key(_x())
    cache.put(key, _out(8))
    cache.get(key)
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get(key) is None
    assert cache.stats["hits"] == 1 and cache.stats["misses"] == 1


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ResultCache(max_bytes=0)


def test_thread_safe_under_concurrent_use() -> None:
    keys = [_key(_x(i)) for i in range(32)]
    cache = ResultCache(max_bytes=10 * (64 + 32))
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for i in range(200):
                k = keys[(i + offset) % len(keys)]
                got = cache.get(k)
                if got is None:
                    cache.put(k, {"y": np.full(16, (i + offset) % len(keys), np.float32)})
                else:
                    assert got["y"][0] == keys.index(k)
                assert cache.nbytes <= cache.max_bytes
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    stats = cache.stats
    assert stats["hits"] + stats["misses"] == 8 * 200
    assert stats["entries"] <= 10 and stats["bytes"] <= cache.max_bytes
