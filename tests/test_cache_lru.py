"""LRUCache / TTLCache / WeakValueCache behaviour, bad input and thread safety."""

from __future__ import annotations

import gc
import math
import threading
from typing import Any

import pytest

from memwarden.cache import CacheStats, LRUCache, TTLCache, WeakValueCache
from memwarden.errors import CacheError
from memwarden.testing import ManualClock

POLICIES = ["lru", "tinylfu"]


def test_lru_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(3)
    for k in "abc":
        cache.put(k, ord(k))
    assert cache.get("a") == ord("a")  # a is now the most recent
    cache.put("d", 4)
    assert list(cache) == ["c", "a", "d"]
    assert "b" not in cache
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (1, 0, 1, 3)


@pytest.mark.parametrize("thread_safe", [True, False])
def test_plain_paths_with_and_without_lock_agree(thread_safe: bool) -> None:
    cache: LRUCache[int, int] = LRUCache(2, thread_safe=thread_safe)
    assert isinstance(cache, LRUCache)
    cache.put(1, 1)
    cache.put(2, 2)
    assert cache.get(1) == 1
    cache.put(3, 3)
    assert cache.get(2) is None
    assert cache.get(2, "gone") == "gone"
    cache.put(1, 10)
    assert cache[1] == 10
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.size, s.size_peak) == (2, 2, 1, 2, 2)
    assert s.hit_rate == 0.5


def test_mapping_interface_counts_only_lookups() -> None:
    cache: LRUCache[str, int] = LRUCache(10)
    cache["x"] = 1
    cache.update({"y": 2, "z": 3})
    assert dict(cache.items()) == {"x": 1, "y": 2, "z": 3}
    assert sorted(cache.values()) == [1, 2, 3]
    assert list(cache.keys()) == ["x", "y", "z"]
    assert cache.stats().hits == 0  # views do not count as hits
    assert cache.peek("x") == 1 and cache.peek("nope") is None
    del cache["x"]
    with pytest.raises(KeyError):
        del cache["x"]
    with pytest.raises(KeyError):
        _ = cache["x"]
    assert cache.pop("y") == 2
    assert cache.pop("y", None) is None
    with pytest.raises(KeyError):
        cache.pop("y")
    assert cache.popitem() == ("z", 3)
    with pytest.raises(KeyError):
        cache.popitem()
    assert len(cache) == 0
    assert cache == {}


def test_byte_bound_evicts_until_it_fits_and_reweighs_on_replace() -> None:
    cache: LRUCache[str, bytes] = LRUCache(max_bytes=100, sizeof=len)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.nbytes == 80
    cache.put("a", b"x" * 10)  # replacing re-weighs: 50 bytes, nothing evicted
    assert cache.stats().nbytes == 50 and len(cache) == 2
    cache.put("c", b"x" * 60)  # 110 > 100: the coldest ("b") goes
    assert list(cache) == ["a", "c"]
    assert cache.stats().nbytes == 70
    assert cache.stats().nbytes_peak == 80


def test_value_larger_than_max_bytes_is_refused_and_nothing_changes() -> None:
    cache: LRUCache[str, bytes] = LRUCache(max_bytes=10, sizeof=len)
    cache.put("a", b"12345")
    with pytest.raises(CacheError, match=r"11 bytes is larger than max_bytes=10"):
        cache.put("a", b"x" * 11)
    assert cache.get("a") == b"12345"
    assert cache.stats().nbytes == 5


def test_capacity_and_bytes_together() -> None:
    cache: LRUCache[int, bytes] = LRUCache(3, max_bytes=100, sizeof=len)
    for i in range(5):
        cache.put(i, b"x")
    assert len(cache) == 3
    cache.put(9, b"x" * 99)  # 99 + 1 fits exactly in 100 bytes
    assert list(cache) == [4, 9]
    cache.put(8, b"x" * 100)
    assert list(cache) == [8]


def test_default_sizeof_weighs_nested_values() -> None:
    cache: LRUCache[str, Any] = LRUCache(max_bytes=1 << 20)
    cache.put("big", [b"x" * 10_000])
    # deep: the list and the 10 kB bytes inside it are both counted
    assert cache.stats().nbytes > 10_000


def test_unweighed_cache_measures_nbytes_at_stats_time() -> None:
    cache: LRUCache[int, bytes] = LRUCache(10)
    cache.put(1, b"x" * 1000)
    stats = cache.stats()
    assert stats.nbytes >= 1000 and stats.nbytes_exact
    assert not cache.weighs


def test_shrink_by_bytes_evicts_coldest_first() -> None:
    cache: LRUCache[int, bytes] = LRUCache(max_bytes=1000, sizeof=len)
    for i in range(10):
        cache.put(i, b"x" * 10)
    cache.get(0)
    freed = cache.shrink(0.5)
    assert freed == 50
    assert list(cache) == [6, 7, 8, 9, 0]
    assert cache.stats().evictions == 5
    assert cache.shrink(0) == 0
    assert cache.shrink(1.0) == 50 and len(cache) == 0


def test_shrink_by_count_reports_bytes_freed() -> None:
    cache: LRUCache[int, bytes] = LRUCache(10, sizeof=None)
    for i in range(4):
        cache.put(i, b"x" * 1000)
    freed = cache.shrink(0.5)
    assert len(cache) == 2 and list(cache) == [2, 3]
    assert freed >= 2000


@pytest.mark.parametrize("policy", POLICIES)
def test_ttl_expires_lazily_and_in_sweep(clock: ManualClock, policy: str) -> None:
    cache: TTLCache[str, int] = TTLCache(10.0, clock=clock, policy=policy)  # type: ignore[arg-type]
    cache.put("a", 1)
    clock.advance(5)
    cache.put("b", 2)
    assert cache.get("a") == 1
    clock.advance(5)  # a is exactly 10 s old: expired
    assert cache.get("a") is None
    assert "b" in cache
    assert cache.stats().expirations == 1
    clock.advance(5)
    assert cache.peek("b") is None
    assert cache.sweep_expired() == 1
    assert len(cache) == 0
    assert cache.stats().expirations == 2


def test_ttl_rewrite_restarts_the_clock(clock: ManualClock) -> None:
    cache: TTLCache[str, int] = TTLCache(10.0, clock=clock)
    cache.put("a", 1)
    clock.advance(8)
    cache.put("a", 2)
    clock.advance(8)
    assert cache.get("a") == 2
    assert cache.sweep_expired() == 0


def test_expired_entries_are_dropped_before_live_ones_are_evicted(clock: ManualClock) -> None:
    cache: TTLCache[str, int] = TTLCache(10.0, 2, clock=clock)
    cache.put("old", 1)
    clock.advance(6)
    cache.put("new", 2)
    cache.get("old")  # old is the most recently used ...
    clock.advance(5)  # ... but expired
    cache.put("third", 3)
    assert set(cache) == {"new", "third"}
    s = cache.stats()
    assert s.evictions == 0 and s.expirations == 1


def test_lru_cache_with_ttl_keyword(clock: ManualClock) -> None:
    cache: LRUCache[str, int] = LRUCache(5, ttl=1.0, clock=clock)
    cache["k"] = 1
    clock.advance(1.5)
    assert cache.get("k") is None
    with pytest.raises(KeyError):
        cache.pop("k")


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"capacity": -1}, ValueError, r"capacity must be >= 0, got -1"),
        ({"capacity": 2.5}, TypeError, r"capacity must be an int, got float 2.5"),
        ({"capacity": True}, TypeError, r"capacity must be an int"),
        ({"max_bytes": -5}, ValueError, r"max_bytes must be >= 1, got -5"),
        ({"ttl": 0}, ValueError, r"ttl must be > 0, got 0"),
        ({"ttl": -1.0}, ValueError, r"ttl must be > 0, got -1.0"),
        ({"ttl": math.nan}, ValueError, r"ttl must not be NaN"),
        ({"ttl": "5"}, TypeError, r"ttl must be a number, got str '5'"),
        ({"policy": "lfu"}, ValueError, r"policy must be one of .*got 'lfu'"),
        ({"sizeof": 3}, TypeError, r"sizeof must be callable, got int 3"),
        ({"clock": None}, TypeError, r"clock must be callable"),
        ({"thread_safe": "yes"}, TypeError, r"thread_safe must be a bool, got str 'yes'"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        LRUCache(**kwargs)


@pytest.mark.parametrize("ttl", [0, -1, math.inf, None])
def test_ttl_cache_rejects_non_positive_ttl(ttl: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="ttl"):
        TTLCache(ttl)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ttl", [None, 5.0])
def test_unhashable_key_is_a_clear_type_error(policy: str, ttl: float | None) -> None:
    cache: LRUCache[Any, int] = LRUCache(4, policy=policy, ttl=ttl)  # type: ignore[arg-type]
    cache.put("ok", 1)
    for op in (
        lambda: cache.get(["a"]),
        lambda: cache.put(["a"], 1),
        lambda: ["a"] in cache,
        lambda: cache.pop(["a"], None),
        lambda: cache.peek(["a"]),
    ):
        with pytest.raises(TypeError, match=r"cache key must be hashable, got list \['a'\]"):
            op()
    assert cache.snapshot() == {"ok": 1}
    assert cache.stats().misses == 0


def test_bad_sizeof_results_leave_cache_unchanged() -> None:
    bad: LRUCache[str, int] = LRUCache(max_bytes=10, sizeof=lambda v: -1)
    with pytest.raises(ValueError, match="non-negative int, got -1"):
        bad.put("a", 1)
    weird: LRUCache[str, int] = LRUCache(max_bytes=10, sizeof=lambda v: 1.5)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"sizeof must return an int, got float 1\.5"):
        weird.put("a", 1)
    assert len(bad) == 0 and len(weird) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.5, math.nan, "half"])
def test_shrink_rejects_bad_fraction(fraction: Any) -> None:
    cache: LRUCache[int, int] = LRUCache(4)
    cache.put(1, 1)
    with pytest.raises((ValueError, TypeError), match="fraction"):
        cache.shrink(fraction)
    assert len(cache) == 1


def test_stats_is_frozen_and_seed_compatible() -> None:
    cache: LRUCache[int, int] = LRUCache(4)
    cache.get(1)
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert stats["misses"] == 1 and stats.to_dict()["misses"] == 1
    assert set(stats.keys()) >= {"hits", "misses", "evictions", "expirations", "size", "nbytes"}
    with pytest.raises(KeyError):
        stats["nope"]
    with pytest.raises(AttributeError):
        stats.hits = 3  # type: ignore[misc]
    cache.reset_stats()
    assert cache.stats().misses == 0


def test_lru_cache_is_thread_safe_under_contention() -> None:
    cache: LRUCache[int, bytes] = LRUCache(50, max_bytes=5_000, sizeof=len)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def hammer(seed: int) -> None:
        try:
            start.wait()
            for i in range(3_000):
                k = (i * 7 + seed) % 120
                if cache.get(k) is None:
                    cache.put(k, b"x" * (k % 90 + 1))
                if i % 500 == 0:
                    cache.shrink(0.3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.size <= 50 and stats.nbytes <= 5_000
    assert stats.nbytes == sum(len(v) for v in cache.values())
    assert stats.hits + stats.misses == 4 * 3_000


# -- WeakValueCache ----------------------------------------------------------


class Blob:
    """A weakly referenceable value."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_weak_value_cache_entries_vanish_with_their_values() -> None:
    cache: WeakValueCache[str, Blob] = WeakValueCache()
    keep = Blob(1)
    temp = Blob(2)
    cache.put("keep", keep)
    cache.put("temp", temp)
    assert len(cache) == 2 and cache.get("temp") is temp
    del temp
    gc.collect()
    assert cache.get("temp") is None
    assert len(cache) == 1 and "temp" not in cache and "keep" in cache
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (1, 1, 1, 1)
    assert cache.pop("keep") is keep and len(cache) == 0


def test_weak_value_cache_rejects_unreferenceable_values_and_unhashable_keys() -> None:
    cache: WeakValueCache[Any, Any] = WeakValueCache()
    with pytest.raises(TypeError, match="must support weak references, got int 3"):
        cache.put("a", 3)
    with pytest.raises(TypeError, match="cache key must be hashable"):
        cache.put(["a"], Blob(1))
    with pytest.raises(TypeError, match="cache key must be hashable"):
        cache.get(["a"])
    assert len(cache) == 0


def test_weak_value_cache_replacing_a_key_ignores_the_old_values_death() -> None:
    cache: WeakValueCache[str, Blob] = WeakValueCache()
    first = Blob(1)
    second = Blob(2)
    cache.put("k", first)
    cache.put("k", second)
    del first
    gc.collect()
    assert cache.get("k") is second
    cache.clear()
    assert len(cache) == 0 and list(cache) == []


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_shrink_with_hold_keeps_the_cache_small_until_released(
    policy: str, ttl: float | None
) -> None:
    cache: LRUCache[int, int] = LRUCache(10, policy=policy, ttl=ttl)  # type: ignore[arg-type]
    for i in range(10):
        cache.put(i, i)
    cache.shrink(0.5, hold=True)
    assert len(cache) == 5 and cache.held and cache.stats().held
    for i in range(100, 120):
        cache.put(i, i)
    assert len(cache) == 5  # cannot grow back while held
    assert cache.release_hold() is True and not cache.held
    assert cache.release_hold() is False
    for i in range(200, 220):
        cache.put(i, i)
    assert len(cache) == 10


def test_hold_on_a_weighed_cache_bounds_bytes_too() -> None:
    cache: LRUCache[int, bytes] = LRUCache(max_bytes=1_000, sizeof=len)
    for i in range(10):
        cache.put(i, b"x" * 100)
    cache.shrink(0.5, hold=True)
    cache.put(0, b"x" * 100)  # replaces the hottest with the same weight: fits
    cache.put(1, b"x" * 300)
    assert cache.stats().nbytes <= 500
    cache.shrink(1.0, hold=True)
    cache.put(2, b"x")
    assert len(cache) == 0  # held at zero: put succeeds, nothing is kept
    with pytest.raises(TypeError, match="hold must be a bool"):
        cache.shrink(0.5, hold="yes")  # type: ignore[arg-type]


def test_repr_and_thread_safe_flag() -> None:
    safe: LRUCache[int, int] = LRUCache(3)
    fast: LRUCache[int, int] = LRUCache(3, thread_safe=False)
    assert safe.thread_safe and not fast.thread_safe
    assert repr(fast).startswith("LRUCache(size=0, capacity=3")
    assert "thread_safe=False" in repr(fast)
    assert repr(TTLCache(1.0)).startswith("TTLCache(")
