"""LRUCache under threads: invariants, exact counters, and the lock-free get's races.

A plain LRU reads without the lock (see ``memwarden._cache_core``); these tests
force thread switches every few bytecodes and check what must still hold.
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
    with cache._lock:
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
) -> None:
    """Run mixed operations from several threads; check counts and invariants."""
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
                if roll < 0.70:
                    gets[index] += 1
                    value = cache.get(key, MISS)
                    if value is not MISS:
                        hits[index] += 1
                        assert value == value_of(key)
                elif roll < 0.93:
                    cache.put(key, value_of(key))
                elif roll < 0.97:
                    cache.pop(key, None)
                elif roll < 0.985:
                    cache.shrink(0.3)
                elif roll < 0.99:
                    cache.clear()
                elif clock is not None:
                    clock.advance(0.4)
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
            cache.stats()  # reads (and so consumes) the lock-free counters

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


def test_hammer_plain_lru_lock_free_reads() -> None:
    cache: LRUCache[int, Any] = LRUCache(50)
    assert not cache._locked_reads  # the lock-free get path is the one under test
    _hammer(cache, lambda k: ("v", k))
    assert not cache._locked_reads


def test_hammer_byte_bounded_lru_lock_free_reads() -> None:
    cache: LRUCache[int, bytes] = LRUCache(40, max_bytes=300, sizeof=len)
    assert not cache._locked_reads
    _hammer(cache, lambda k: b"x" * (k % 17 + 1))
    assert not cache._locked_reads


def test_hammer_bytes_and_ttl_locked_path() -> None:
    clock = ManualClock()
    cache: TTLCache[int, bytes] = TTLCache(1.0, 40, max_bytes=300, sizeof=len, clock=clock)
    _hammer(cache, lambda k: b"x" * (k % 17 + 1), clock=clock)


def test_hammer_after_switch_to_locked_path() -> None:
    cache: LRUCache[Any, Any] = LRUCache(50)
    cache.put(KeyWithPythonHash(1), "first")
    assert cache._locked_reads
    _hammer(cache, lambda k: ("v", k))


def test_counters_exact_under_concurrent_gets() -> None:
    cache: LRUCache[int, int] = LRUCache(10)
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


# -- the race between the lookup and move_to_end ---------------------------


def _race_after_lookup(cache: LRUCache[Any, Any], action: Callable[[Any], None]) -> None:
    """Make the next lookup run ``action(key)`` right after it reads the dict.

    That is the point where another thread may run between the two steps of
    a lock-free get; the get takes no lock, so ``action`` may take it.
    """
    lookup = cache._data_get

    def racing_lookup(key: Any, default: Any) -> Any:
        value = lookup(key, default)
        cache._data_get = lookup
        action(key)
        return value

    cache._data_get = racing_lookup


def test_eviction_between_lookup_and_refresh() -> None:
    cache: LRUCache[int, str] = LRUCache(2)
    cache.put(1, "one")
    cache.put(2, "two")
    _race_after_lookup(cache, lambda key: cache.put(3, "three"))  # evicts 1
    assert cache.get(1) == "one"  # read before the eviction: still a hit
    assert 1 not in cache
    assert list(cache) == [2, 3]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (1, 0, 1, 2)
    _check_locked(cache)


def test_pop_and_reinsert_between_lookup_and_refresh() -> None:
    cache: LRUCache[int, str] = LRUCache(3)
    for k, v in ((1, "one"), (2, "two"), (3, "three")):
        cache.put(k, v)

    def pop_and_put_back(key: int) -> None:
        cache.pop(key)
        cache.put(key, "new")
        cache.put(2, "two")  # 2 becomes the most recent

    _race_after_lookup(cache, pop_and_put_back)
    assert cache.get(1) == "one"  # the value it read, before the pop
    assert cache.peek(1) == "new"
    assert list(cache) == [3, 2, 1]  # the refresh moved the new entry
    assert cache.stats().hits == 1
    _check_locked(cache)


def test_clear_between_lookup_and_refresh() -> None:
    cache: LRUCache[int, str] = LRUCache(3)
    cache.put(1, "one")
    cache.put(2, "two")
    _race_after_lookup(cache, lambda key: cache.clear())
    assert cache.get(2) == "two"
    assert len(cache) == 0
    assert list(cache._data) == []
    assert cache.stats().hits == 1


def test_get_while_clear_drops_values() -> None:
    # OrderedDict.clear empties the dict before it drops the order list, and
    # dropping a value may run Python code: a get may run in that window.
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
    assert list(cache._data) == []
    cache.put(7, "seven")
    assert cache.get(7) == "seven"
    assert list(cache) == [7]


def test_replace_between_lookup_and_refresh() -> None:
    cache: LRUCache[int, str] = LRUCache(3)
    cache.put(1, "one")
    cache.put(2, "two")
    _race_after_lookup(cache, lambda key: cache.put(key, "uno"))
    assert cache.get(1) == "one"  # linearized before the replace
    assert cache.peek(1) == "uno"
    assert list(cache) == [2, 1]


# -- which keys keep the lock-free path -------------------------------------


class KeyWithPythonHash:
    """A key whose hash and equality run Python code."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyWithPythonHash) and other.n == self.n


@pytest.mark.parametrize("key", [1, "a", b"b", 1.5, True, None, (1, "a", None), ()], ids=repr)
def test_c_hashed_keys_keep_lock_free_gets(key: Any) -> None:
    cache: LRUCache[Any, int] = LRUCache(4)
    cache.put(key, 1)
    assert not cache._locked_reads
    assert cache.get(key) == 1


@pytest.mark.parametrize(
    "key",
    [KeyWithPythonHash(1), (1, KeyWithPythonHash(2)), ((1, 2), 3), frozenset({1})],
    ids=["object", "tuple with object", "nested tuple", "frozenset"],
)
def test_other_keys_switch_every_get_to_the_lock(key: Any) -> None:
    cache: LRUCache[Any, int] = LRUCache(4)
    cache.put(0, 0)
    cache.put(key, 1)
    assert cache._locked_reads
    assert cache.get(key) == 1
    assert cache.get(0) == 0
    assert cache.stats().hits == 2
    cache.put(1, 1)  # stays on the locked path
    assert cache._locked_reads


def test_weighing_cache_switches_too() -> None:
    cache: LRUCache[Any, bytes] = LRUCache(max_bytes=100, sizeof=len)
    cache.put((1, "a"), b"xx")
    assert not cache._locked_reads
    cache.put(KeyWithPythonHash(1), b"x")
    assert cache._locked_reads
    assert cache.get(KeyWithPythonHash(1)) == b"x"
    assert cache.stats().nbytes == 3


def test_ttl_and_tinylfu_gets_always_lock() -> None:
    assert TTLCache(1.0, 4)._locked_reads
    assert LRUCache(4, policy="tinylfu")._locked_reads


def test_single_thread_cache_never_switches() -> None:
    cache: LRUCache[Any, int] = LRUCache(4, thread_safe=False)
    cache.put(KeyWithPythonHash(1), 1)
    assert not cache._special
    assert cache.get(KeyWithPythonHash(1)) == 1


def test_copies_retry_after_a_stale_reorder() -> None:
    # A get that started before the switch to the locked path may reorder the
    # dict once while a locked copy runs; the copy starts over.
    cache: LRUCache[Any, int] = LRUCache(10)
    armed = [False]
    target = [0]

    class Reorders(KeyWithPythonHash):
        def __hash__(self) -> int:
            # Copying the dict hashes each key: the stale get runs here.
            if armed[0]:
                armed[0] = False
                cache._move_to_end(target[0])
            return hash(self.n)

    cache.put(0, 0)
    cache.put(Reorders(1), 1)
    cache.put(2, 2)
    with pytest.raises(RuntimeError):  # what the retry is for
        armed[0] = True
        list(cache._data)
    assert [getattr(k, "n", k) for k in cache._data] == [1, 2, 0]
    target[0] = 2
    armed[0] = True
    keys = list(cache)
    assert not armed[0]  # the reorder did happen during a copy
    assert [getattr(k, "n", k) for k in keys] == [1, 0, 2]
    target[0] = 0
    armed[0] = True
    assert cache.shrink(0.5) > 0  # evicts the two coldest of [1, 2, 0]
    assert not armed[0]
    assert list(cache) == [0]


def test_without_the_gil_every_shared_cache_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    shared: LRUCache[int, int] = LRUCache(4)
    assert shared._locked_reads
    shared.put(1, 1)
    assert shared.get(1) == 1
    assert shared.stats().hits == 1
    own: LRUCache[int, int] = LRUCache(4, thread_safe=False)
    assert not own._locked_reads
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert not LRUCache(4)._locked_reads
