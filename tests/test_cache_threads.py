"""LRUCache under threads: invariants, exact counters, and the lock-free get's races.

LRU and TTL caches answer gets without the lock (see ``memwarden._cache_core``);
these tests force thread switches every few bytecodes and check what must
still hold, and replay each race between a get's steps and a locked change.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections import OrderedDict
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


class Stamped:
    """A value that learns, after the put, a time no earlier than its own write."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.written: float | None = None


def test_hammer_ttl_lock_free_reads_never_return_expired() -> None:
    clock = ManualClock()
    ttl = 1.0
    cache: TTLCache[int, Stamped] = TTLCache(ttl, 40, clock=clock)
    assert cache._ttl_free_reads

    def fresh(key: int, value: Stamped, before: float) -> None:
        # The put read the clock no later than ``written``, so the entry's
        # deadline is at most written + ttl; the get happened after
        # ``before`` and saw it live, so the deadline is later than that.
        assert value.key == key
        assert value.written is None or value.written + ttl > before

    # Few puts (each put sweeps) and many clock steps: gets meet expired entries.
    _hammer(cache, Stamped, clock=clock, check=fresh, get_share=0.85, put_share=0.05)
    assert cache._ttl_free_reads
    assert cache.stats().expirations > 0


def test_hammer_bytes_and_ttl() -> None:
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


def test_which_gets_lock() -> None:
    ttl: TTLCache[int, int] = TTLCache(1.0, 4)
    assert ttl._locked_reads and ttl._ttl_free_reads  # the general path, lock-free
    tiny: LRUCache[int, int] = LRUCache(4, policy="tinylfu")
    assert tiny._locked_reads and not tiny._ttl_free_reads
    ttl_tiny: TTLCache[int, int] = TTLCache(1.0, 4, policy="tinylfu")
    assert ttl_tiny._locked_reads and not ttl_tiny._ttl_free_reads


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


# -- TTL gets without the lock -----------------------------------------------


class HookedDeadlines(OrderedDict[Any, float]):
    """The deadline table, with a hook run right after a get reads a deadline."""

    def __init__(self, cache: LRUCache[Any, Any]) -> None:
        super().__init__(cache._deadlines or {})
        self.cache = cache
        self.after_get: Callable[[Any], None] | None = None
        self.values_at_write: list[Any] = []

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        deadline = super().get(key, default)
        hook, self.after_get = self.after_get, None
        if hook is not None:
            hook(key)
        return deadline

    def __setitem__(self, key: Any, deadline: float) -> None:
        self.values_at_write.append(self.cache._data.get(key))
        super().__setitem__(key, deadline)


def _ttl_cache() -> tuple[TTLCache[str, str], ManualClock, HookedDeadlines]:
    clock = ManualClock()
    cache: TTLCache[str, str] = TTLCache(1.0, 4, clock=clock)
    hooked = HookedDeadlines(cache)
    cache._deadlines = hooked
    return cache, clock, hooked


def test_ttl_deadline_is_written_after_the_value() -> None:
    cache, _, hooked = _ttl_cache()
    cache.put("k", "v1")
    cache.put("k", "v2")
    assert hooked.values_at_write == ["v1", "v2"]


def test_ttl_expired_entry_is_not_returned() -> None:
    cache, clock, _ = _ttl_cache()
    cache.put("k", "v")
    clock.advance(1.0)
    assert cache.get("k", "gone") == "gone"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (0, 1, 1, 0)
    _check_locked(cache)


def test_ttl_replace_between_deadline_and_value() -> None:
    cache, clock, hooked = _ttl_cache()
    cache.put("k", "old")
    clock.advance(0.5)

    def replace(key: str) -> None:
        clock.advance(0.4)
        cache.put(key, "new")

    hooked.after_get = replace
    # Read the old deadline (1.0), then the new value, at 0.9: the new value
    # is live (deadline 1.9), and is what the get returns.
    assert cache.get("k") == "new"
    assert cache.stats().hits == 1


def test_ttl_expiry_and_replace_between_deadline_and_value() -> None:
    cache, clock, hooked = _ttl_cache()
    cache.put("k", "old")

    def expire_and_replace(key: str) -> None:
        clock.advance(1.2)
        cache.put(key, "new")  # sweeps "old" first

    hooked.after_get = expire_and_replace
    # The old deadline (1.0) has passed: the get decides under the lock,
    # where it finds the new entry live.
    assert cache.get("k") == "new"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations) == (1, 0, 1)


def test_ttl_sweep_between_deadline_and_value() -> None:
    cache, clock, hooked = _ttl_cache()
    cache.put("k", "old")

    def sweep(key: str) -> None:
        clock.advance(1.2)
        cache.sweep_expired()

    hooked.after_get = sweep
    assert cache.get("k", "gone") == "gone"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.expirations, stats.size) == (0, 1, 1, 0)


def test_ttl_expiry_between_value_and_clock() -> None:
    cache, clock, _ = _ttl_cache()
    cache.put("k", "v")
    clock.advance(0.5)
    _race_after_lookup(cache, lambda key: clock.advance(0.6))
    # The clock read after the value says the entry has expired: not returned.
    assert cache.get("k", "gone") == "gone"
    assert "k" not in cache
    assert cache.stats().expirations == 1


def test_ttl_cache_switches_to_locked_gets() -> None:
    cache: TTLCache[Any, int] = TTLCache(1.0, 4)
    cache.put(KeyWithPythonHash(1), 1)
    assert not cache._ttl_free_reads
    assert cache._locked_reads
    assert cache.get(KeyWithPythonHash(1)) == 1


def test_unhashable_key_does_not_switch_gets_to_the_lock() -> None:
    for cache in (LRUCache(4), TTLCache(1.0, 4), LRUCache(4, max_bytes=100, sizeof=len)):
        for key in ([1], (1, [2])):
            with pytest.raises(TypeError, match="hashable"):
                cache.put(key, b"x")
        assert not cache._locked_reads or cache._ttl_free_reads
