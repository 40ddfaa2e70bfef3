"""Caches charged to a budget: one LOW-priority evictable reservation per cache.

The reservation grows in chunks as the cache fills; when the budget refuses, the
cache evicts its own coldest entries; when the budget evicts the reservation the
cache empties; clearing and shrinking hand the bytes back. Figures come from a
StaticProbe and a ManualClock, never from this machine.
"""

from __future__ import annotations

import copy
import threading

import pytest

from memwarden.budget import MemoryManager, Priority
from memwarden.cache import CacheManager, LRUCache, TTLCache
from memwarden.pressure import PressureMonitor
from memwarden.testing import ManualClock, StaticProbe


def _cache(budget: MemoryManager, **kw: object) -> LRUCache[str, bytes]:
    kw.setdefault("sizeof", len)
    kw.setdefault("budget_chunk", 100)
    return LRUCache(budget=budget, **kw)  # type: ignore[arg-type]


def test_the_reservation_grows_in_chunks() -> None:
    budget = MemoryManager(1000)
    cache = _cache(budget)
    assert cache.reserved == 0 and budget.current_usage == 0
    cache.put("a", b"x" * 30)
    assert cache.reserved == 100 and budget.current_usage == 100
    cache.put("b", b"x" * 60)
    assert cache.reserved == 100  # 90 bytes fit the first chunk
    cache.put("c", b"x" * 30)
    assert cache.reserved == 200 and budget.current_usage == 200
    cache.put("big", b"x" * 250)
    assert cache.reserved == 400
    assert cache.stats().reserved == 400 and cache.nbytes == 370
    (allocation,) = budget._ledger.indexed()
    assert (allocation.priority, allocation.evictable) == (Priority.LOW, True)
    assert budget.get_stats().allocations == 1  # one reservation, however many entries


def test_refused_growth_evicts_the_caches_own_coldest_entries() -> None:
    budget = MemoryManager(400)
    cache = _cache(budget)
    for key in "abc":
        cache.put(key, b"x" * 100)
    # Another LOW-priority holder (which cannot evict the cache) fills the budget.
    assert budget.try_acquire(100, priority=Priority.LOW) is not None
    assert cache.reserved == 300
    cache.get("a")  # "b" is now the coldest
    cache.put("d", b"x" * 100)  # growth refused: "b" goes
    assert list(cache) == ["c", "a", "d"]
    assert cache.reserved == 300 and budget.current_usage == 400
    assert cache.stats().evictions == 1


def test_a_value_larger_than_the_budget_grants_is_not_stored() -> None:
    budget = MemoryManager(300)
    pinned = budget.try_acquire(150)
    assert pinned is not None
    cache = _cache(budget)
    cache.put("a", b"x" * 50)
    cache.put("old", b"x" * 10)
    cache.put("old", b"x" * 200)  # never raises; the stale value does not survive
    assert "old" not in cache and cache.get("a") == b"x" * 50
    cache.put("huge", b"x" * 5000)  # beyond the capacity itself
    assert "huge" not in cache
    assert cache.stats().evictions == 2
    assert cache.reserved is not None and cache.nbytes <= cache.reserved


def test_a_higher_priority_request_evicts_the_cache_which_empties() -> None:
    budget = MemoryManager(1000)
    cache = _cache(budget)
    for key in "abcd":
        cache.put(key, b"x" * 100)
    assert budget.current_usage == 400
    urgent = budget.try_acquire(900)  # NORMAL priority: the LOW cache makes room
    assert urgent is not None
    assert len(cache) == 0 and cache.nbytes == 0 and cache.reserved == 0
    assert budget.current_usage == 900
    cache.put("e", b"x" * 100)  # reserves again on a later put
    assert cache.reserved == 100 and "e" in cache
    cache.put("f", b"x" * 100)  # no room: the new entry displaces the old one
    assert list(cache) == ["f"] and budget.current_usage == 1000


def test_a_critical_sample_evicts_the_cache(clock: ManualClock) -> None:
    probe = StaticProbe(used=0, limit=10_000)
    monitor = PressureMonitor(probe, clock=clock)
    budget = MemoryManager(5000, monitor=monitor, clock=clock)
    cache = _cache(budget)
    for key in "abc":
        cache.put(key, b"x" * 100)
    assert cache.reserved == 300
    probe.set_fraction(0.97)
    monitor.sample_now()
    assert len(cache) == 0 and cache.reserved == 0 and budget.current_usage == 0
    # 9,700 measured, 9,400 of it unmanaged: 100 bytes of room under the 9,500 line.
    cache.put("d", b"x" * 200)
    assert "d" not in cache and budget.current_usage == 0


def test_clear_pop_and_shrink_return_bytes() -> None:
    budget = MemoryManager(10_000)
    cache = _cache(budget)
    for index in range(10):
        cache.put(str(index), b"x" * 100)
    assert budget.current_usage == 1000
    cache.pop("0")
    del cache["1"]
    assert cache.reserved == 800 and budget.current_usage == 800
    cache.popitem()
    assert budget.current_usage == 700
    cache.shrink(0.5)
    assert cache.nbytes <= 400 and budget.current_usage == cache.reserved
    assert budget.current_usage <= 400
    cache.clear()
    assert cache.reserved == 0 and budget.current_usage == 0
    assert budget.get_stats().allocations == 0  # the empty cache holds no reservation
    cache.put("again", b"x" * 10)
    assert budget.current_usage == 100


def test_expired_entries_return_bytes_when_swept(clock: ManualClock) -> None:
    budget = MemoryManager(10_000)
    cache: TTLCache[str, bytes] = TTLCache(
        5.0, sizeof=len, clock=clock, budget=budget, budget_chunk=100
    )
    cache.put("a", b"x" * 150)
    assert budget.current_usage == 200
    clock.advance(6.0)
    assert cache.sweep_expired() == 1
    assert budget.current_usage == 0


def test_max_bytes_caps_the_reservation() -> None:
    budget = MemoryManager(10_000)
    cache = _cache(budget, max_bytes=250)
    for key in "abcd":
        cache.put(key, b"x" * 100)
    assert cache.reserved == 250 and budget.current_usage == 250
    assert list(cache) == ["c", "d"]


def test_bad_budget_arguments() -> None:
    budget = MemoryManager(100)
    with pytest.raises(ValueError, match="max_bytes or sizeof"):
        LRUCache(10, budget=budget)
    with pytest.raises(TypeError, match="budget"):
        LRUCache(sizeof=len, budget=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget_chunk"):
        LRUCache(sizeof=len, budget=budget, budget_chunk=0)
    with pytest.raises(TypeError, match="budget"):
        CacheManager(budget=3)  # type: ignore[arg-type]


def test_a_copy_is_not_charged() -> None:
    budget = MemoryManager(1000)
    cache = _cache(budget)
    cache.put("a", b"x" * 10)
    clone = copy.copy(cache)
    assert clone.budget is None and clone.reserved is None
    clone.put("b", b"x" * 500)
    assert budget.current_usage == 100 and clone.get("a") == b"x" * 10


def test_cache_manager_charges_every_byte_weighted_cache() -> None:
    budget = MemoryManager(10_000)
    manager = CacheManager(budget=budget)
    assert manager.budget is budget
    weighed = manager.create_lru_cache("weighed", max_bytes=5000)
    timed = manager.create_timed_cache("timed", 60.0, sizeof=len)
    counted = manager.create_lru_cache("counted", 10)
    assert weighed.budget is budget and timed.budget is budget and counted.budget is None
    weighed.put("a", b"x" * 100)
    timed.put("a", b"x" * 100)
    counted.put("a", b"x" * 100)
    assert budget.get_stats().allocations == 2
    stats = manager.get_stats("timed")
    assert stats.reserved == timed.reserved and stats.reserved is not None
    manager.clear_all()
    assert budget.current_usage == 0


def test_concurrent_puts_and_evictions_keep_the_cache_within_its_reservation() -> None:
    budget = MemoryManager(5000)
    cache = _cache(budget, budget_chunk=64)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(prefix: str) -> None:
        try:
            for index in range(2000):
                cache.put(f"{prefix}{index % 50}", b"x" * (index % 97))
                if index % 300 == 0:
                    cache.shrink(0.5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def evictor() -> None:
        try:
            while not stop.is_set():
                urgent = budget.try_acquire(4000)
                if urgent is not None:
                    urgent.release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "ab"]
    pressure = threading.Thread(target=evictor)
    pressure.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    pressure.join()
    assert errors == []
    reserved = cache.reserved
    assert reserved is not None and cache.nbytes <= reserved
    assert budget.current_usage == reserved
    cache.clear()
    assert budget.current_usage == 0
