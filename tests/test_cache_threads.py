"""LRUCache under threads: invariants and exact counters with every configuration.

Every operation takes the cache's lock; these tests force thread switches
every few bytecodes and check, under that lock, what must hold.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memwarden.cache import LRUCache, TTLCache

MISS = object()


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    # Switch threads every microsecond so that interleavings actually happen.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def _check_locked(cache: LRUCache[Any, Any]) -> None:
    """Structural invariants, read under the cache's own lock."""
    with cache._guard:
        data = cache._data
        keys = list(data)
        assert len(keys) == len(set(keys)) == len(data)
        if cache.capacity is not None:
            assert len(data) <= cache.capacity
        sizes = cache._sizes
        if sizes is not None:
            assert set(sizes) == set(keys)
            assert cache._nbytes == sum(sizes.values())
            assert all(sizes[k] == len(data[k]) for k in keys)
            if cache.max_bytes is not None:
                assert cache._nbytes <= cache.max_bytes
        deadlines = cache._deadlines
        if deadlines is not None:
            assert set(deadlines) == set(keys)


def _hammer(
    cache: LRUCache[int, Any],
    value_of: Callable[[int], Any],
    *,
    threads: int = 4,
    ops: int = 6_000,
    clock: ManualClock | None = None,
    check: Callable[[int, Any, float], None] | None = None,
    get_share: float = 0.70,
    put_share: float = 0.23,
) -> None:
    """Run mixed operations from several threads; check counts and invariants.

    ``check(key, value, before)`` vets each value a get returns; ``before`` is
    the clock read just before that get.
    """
    if check is None:

        def check(key: int, value: Any, before: float) -> None:
            assert value == value_of(key)

    gets = [0] * threads
    hits = [0] * threads
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        rng = random.Random(index)
        start.wait()
        try:
            for _ in range(ops):
                key = int(rng.paretovariate(1.0)) % 200
                roll = rng.random()
                if roll < get_share:
                    gets[index] += 1
                    before = clock() if clock is not None else 0.0
                    value = cache.get(key, MISS)
                    if value is not MISS:
                        hits[index] += 1
                        check(key, value, before)
                elif (roll := roll - get_share) < put_share:
                    value = value_of(key)
                    cache.put(key, value)
                    if isinstance(value, Stamped) and clock is not None:
                        value.written = clock()
                elif (roll := roll - put_share) < 0.04:
                    cache.pop(key, None)
                elif roll < 0.055:
                    cache.shrink(0.3)
                elif roll < 0.06:
                    cache.clear()
                elif clock is not None:
                    clock.advance(0.4)
                    if rng.random() < 0.3:  # else expired entries wait for a get or put
                        cache.sweep_expired()
                else:
                    with contextlib.suppress(KeyError):  # emptied by another thread
                        cache.popitem()
        except BaseException as exc:
            errors.append(exc)

    def checker() -> None:
        start.wait()
        while not done.is_set():
            _check_locked(cache)
            cache.stats()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    watcher = threading.Thread(target=checker)
    for t in (*pool, watcher):
        t.start()
    for t in pool:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    _check_locked(cache)
    stats = cache.stats()
    assert stats.hits + stats.misses == sum(gets)
    assert stats.hits == sum(hits)
    assert stats.size == len(cache)


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_hammer_count_bounded(policy: str) -> None:
    cache: LRUCache[int, Any] = LRUCache(50, policy=policy)  # type: ignore[arg-type]
    _hammer(cache, lambda k: ("v", k))


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
def test_hammer_byte_bounded(policy: str) -> None:
    cache: LRUCache[int, bytes] = LRUCache(40, max_bytes=300, sizeof=len, policy=policy)  # type: ignore[arg-type]
    _hammer(cache, lambda k: b"x" * (k % 17 + 1))


class Stamped:
    """A value that learns, after the put, a time no earlier than its own write."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.written: float | None = None


def test_hammer_ttl_never_returns_expired() -> None:
    clock = ManualClock()
    ttl = 1.0
    cache: TTLCache[int, Stamped] = TTLCache(ttl, 40, clock=clock)

    def fresh(key: int, value: Stamped, before: float) -> None:
        # The put read the clock no later than ``written``, so the entry's
        # deadline is at most written + ttl; the get happened after
        # ``before`` and saw it live, so the deadline is later than that.
        assert value.key == key
        assert value.written is None or value.written + ttl > before

    # Few puts (each put sweeps) and many clock steps: gets meet expired entries.
    _hammer(cache, Stamped, clock=clock, check=fresh, get_share=0.85, put_share=0.05)
    assert cache.stats().expirations > 0


def test_hammer_bytes_and_ttl() -> None:
    clock = ManualClock()
    cache: TTLCache[int, bytes] = TTLCache(1.0, 40, max_bytes=300, sizeof=len, clock=clock)
    _hammer(cache, lambda k: b"x" * (k % 17 + 1), clock=clock)


class KeyWithPythonHash:
    """A key whose hash and equality run Python code (so threads switch inside dict calls)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyWithPythonHash) and other.n == self.n


def test_hammer_keys_hashed_in_python() -> None:
    cache: LRUCache[Any, Any] = LRUCache(50)
    cache.put(KeyWithPythonHash(1), "first")
    _hammer(cache, lambda k: ("v", k))
    assert cache.get(KeyWithPythonHash(1), MISS) in ("first", MISS)


@pytest.mark.parametrize("ttl", [None, 60.0])
def test_counters_exact_under_concurrent_gets(ttl: float | None) -> None:
    cache: LRUCache[int, int] = LRUCache(10, ttl=ttl)
    for k in range(10):
        cache.put(k, k)
    per_thread = 20_000
    start = threading.Barrier(4)

    def reader() -> None:
        start.wait()
        for i in range(per_thread):
            cache.get(i % 20)  # keys 0..9 hit, 10..19 miss

    pool = [threading.Thread(target=reader) for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stats = cache.stats()
    assert stats.hits == stats.misses == 4 * per_thread // 2
    cache.reset_stats()
    assert (cache.stats().hits, cache.stats().misses) == (0, 0)
    cache.get(0)
    cache.get(99)
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


def test_get_while_clear_drops_values() -> None:
    # Dropping a value may run Python code (``__del__``) while clear() holds
    # the lock; that code may use the cache (the lock is re-entrant).
    cache: LRUCache[int, Any] = LRUCache(10)
    seen: list[Any] = []

    class Reentrant:
        def __del__(self) -> None:
            seen.append(cache.get(5, MISS))

    cache.put(5, "five")
    cache.put(1, Reentrant())
    cache.put(6, "six")
    cache.clear()
    assert seen == [MISS]
    assert len(cache) == 0
    cache.put(7, "seven")
    assert cache.get(7) == "seven"
    assert list(cache) == [7]


def test_unlocked_cache_has_no_lock_and_the_same_behaviour() -> None:
    locked: LRUCache[int, int] = LRUCache(3)
    unlocked: LRUCache[int, int] = LRUCache(3, thread_safe=False)
    assert locked._lock is not None and unlocked._lock is None
    for cache in (locked, unlocked):
        for k in (1, 2, 3, 1, 4, 5):
            if cache.get(k) is None:
                cache.put(k, k)
    assert list(locked) == list(unlocked) == [1, 4, 5]
    assert locked.stats() == unlocked.stats()
