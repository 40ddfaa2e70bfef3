"""LRUCache / TTLCache against the behaviour users know from dict, functools and cachetools.

Re-entrant keys, ``maxsize=0``, ``__missing__``, pickling, ``del`` of an expired
entry, ``thread_safe=False`` and argument checks, each compared with the peer
where one defines the behaviour.
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
import threading
from typing import Any

import cachetools
import pytest

from memwarden.cache import CacheManager, LRUCache, TTLCache, WeakValueCache
from memwarden.testing import ManualClock

POLICIES = ["lru", "tinylfu"]


def _run_with_deadline(fn: Any, seconds: float = 10.0) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging) if it deadlocks."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "deadlocked: a key calling back into its own cache"
    if errors:
        raise errors[0]
    return result[0]


# -- re-entrancy (CPython test_functools.test_need_for_rlock) ----------------


class CallsBack:
    """A key whose hash and equality read the cache that holds it."""

    def __init__(self, n: int, cache: Any) -> None:
        self.n = n
        self.cache = cache

    def __hash__(self) -> int:
        self.cache.get("probe")
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        self.cache.get("probe")
        return isinstance(other, CallsBack) and other.n == self.n


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ttl", [None, 60.0])
@pytest.mark.parametrize("weigh", [False, True])
def test_key_that_reads_its_own_cache_does_not_deadlock(
    policy: str, ttl: float | None, weigh: bool
) -> None:
    cache: LRUCache[Any, int] = LRUCache(
        8,
        policy=policy,  # type: ignore[arg-type]
        ttl=ttl,
        sizeof=(lambda v: 1) if weigh else None,
    )

    def exercise() -> list[Any]:
        cache.put(CallsBack(1, cache), 1)
        cache.put(CallsBack(2, cache), 2)
        out = [cache.get(CallsBack(1, cache)), cache[CallsBack(2, cache)]]
        out.append(CallsBack(1, cache) in cache)
        out.append(cache.pop(CallsBack(2, cache)))
        del cache[CallsBack(1, cache)]
        out.append(len(cache))
        return out

    assert _run_with_deadline(exercise) == [1, 2, True, 2, 0]


def test_weak_value_cache_key_that_reads_its_own_cache_does_not_deadlock() -> None:
    cache: WeakValueCache[Any, Any] = WeakValueCache()

    class Value:
        pass

    keep = Value()

    def exercise() -> Any:
        cache.put(CallsBack(1, cache), keep)
        return cache.get(CallsBack(1, cache))

    assert _run_with_deadline(exercise) is keep


def test_need_for_rlock_like_functools() -> None:
    # CPython's test_functools.test_need_for_rlock, on a memoized function.
    from memwarden.cache import memoize

    @memoize(capacity=10)
    def test_func(x: Any) -> Any:
        return x

    class DoubleEq:
        def __init__(self, x: int) -> None:
            self.x = x

        def __hash__(self) -> int:
            return self.x

        def __eq__(self, other: object) -> bool:
            if self.x == 2:
                test_func(DoubleEq(1))
            return isinstance(other, DoubleEq) and self.x == other.x

    @functools.lru_cache(maxsize=10)
    def peer(x: Any) -> Any:
        return x

    def exercise() -> Any:
        test_func(DoubleEq(1))
        test_func(DoubleEq(2))
        return test_func(DoubleEq(2))

    assert _run_with_deadline(exercise) == DoubleEq(2)
    peer(DoubleEq(1))
    peer(DoubleEq(2))
    assert peer(DoubleEq(2)) == DoubleEq(2)


# -- TTL: del of an expired, unswept entry ------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_del_of_expired_entry_raises_like_pop_and_counts_the_expiry(
    clock: ManualClock, policy: str
) -> None:
    cache: TTLCache[str, int] = TTLCache(10.0, clock=clock, policy=policy)  # type: ignore[arg-type]
    cache.put("k", 1)
    cache.put("other", 2)
    clock.advance(10)
    assert "k" not in cache
    with pytest.raises(KeyError):
        del cache["k"]
    assert cache.stats().expirations >= 1
    with pytest.raises(KeyError):
        cache.pop("k")
    # The peer: cachetools.TTLCache raises KeyError for both as well.
    peer: cachetools.TTLCache[str, int] = cachetools.TTLCache(10, 10.0, timer=clock)
    peer["k"] = 1
    clock.advance(10)
    with pytest.raises(KeyError):
        del peer["k"]


def test_del_of_expired_entry_counts_exactly_one_expiry(clock: ManualClock) -> None:
    cache: TTLCache[str, int] = TTLCache(10.0, clock=clock)
    cache.put("k", 1)
    clock.advance(10)
    with pytest.raises(KeyError):
        del cache["k"]
    stats = cache.stats()
    assert (stats.expirations, stats.size) == (1, 0)


# -- capacity=0 (functools, cachetools and async-lru's maxsize=0) -------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ttl", [None, 5.0])
def test_capacity_zero_caches_nothing(policy: str, ttl: float | None) -> None:
    cache: LRUCache[str, int] = LRUCache(0, policy=policy, ttl=ttl)  # type: ignore[arg-type]
    cache.put("a", 1)
    cache["b"] = 2
    assert len(cache) == 0 and "a" not in cache
    assert cache.get("a") is None
    assert cache.capacity == 0
    stats = cache.stats()
    assert (stats.size, stats.misses, stats.size_peak) == (0, 1, 0)


def test_ttl_cache_and_manager_accept_capacity_zero() -> None:
    ttl: TTLCache[str, int] = TTLCache(5.0, 0)
    ttl.put("a", 1)
    assert len(ttl) == 0
    manager = CacheManager()
    lru = manager.create_lru_cache("none", capacity=0)
    manager.put_in_cache("lru", "none", "k", 1)
    assert manager.get_from_cache("lru", "none", "k", "miss") == "miss"
    assert len(lru) == 0
    timed = manager.create_timed_cache("timed", 5.0, capacity=0)
    timed.put("k", 1)
    assert len(timed) == 0


def test_memoize_capacity_zero_computes_every_call_like_functools() -> None:
    from memwarden.cache import memoize

    ours_calls: list[int] = []
    peer_calls: list[int] = []

    @memoize(capacity=0)
    def ours(x: int) -> int:
        ours_calls.append(x)
        return x * 2

    @functools.lru_cache(maxsize=0)
    def peer(x: int) -> int:
        peer_calls.append(x)
        return x * 2

    for fn in (ours, peer):
        assert [fn(1), fn(1), fn(2)] == [2, 2, 4]
    assert ours_calls == peer_calls == [1, 1, 2]
    info = ours.cache_info()
    peer_info = peer.cache_info()
    assert (info.hits, info.misses, info.maxsize, info.currsize) == (
        peer_info.hits,
        peer_info.misses,
        peer_info.maxsize,
        peer_info.currsize,
    )


def test_manager_memoize_capacity_zero() -> None:
    manager = CacheManager()
    calls = 0

    @manager.memoize(capacity=0, namespace="nothing")
    def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    assert f(1) == 1 and f(1) == 1 and calls == 2


# -- __missing__, as dict and cachetools call it ------------------------------


class DefaultLRU(LRUCache[str, str]):
    def __missing__(self, key: str) -> str:
        value = key.upper()
        self[key] = value
        return value


class DefaultPeer(cachetools.LRUCache[str, str]):
    def __missing__(self, key: str) -> str:
        value = key.upper()
        self[key] = value
        return value


def test_subclass_missing_is_called_by_getitem_like_cachetools() -> None:
    ours = DefaultLRU(4)
    peer = DefaultPeer(4)
    for cache in (ours, peer):
        assert cache["a"] == "A"
        assert "a" in cache
        assert cache.get("b") is None  # get never calls __missing__
        assert "b" not in cache
    with pytest.raises(KeyError):
        LRUCache(4)["nope"]


def test_missing_runs_outside_the_lock() -> None:
    # A __missing__ that waits for another thread using the cache must not deadlock.
    class Waits(LRUCache[str, int]):
        def __missing__(self, key: str) -> int:
            other = threading.Thread(target=self.put, args=(key, 7))
            other.start()
            other.join(5)
            assert not other.is_alive()
            return self.get(key, -1)

    assert _run_with_deadline(lambda: Waits(4)["k"]) == 7


# -- pickling (cachetools' caches pickle) --------------------------------------


def _same(a: LRUCache[Any, Any], b: LRUCache[Any, Any]) -> None:
    assert type(a) is type(b)
    assert list(a.items()) == list(b.items())
    assert (a.capacity, a.max_bytes, a.ttl, a.policy, a.thread_safe, a.weighs) == (
        b.capacity,
        b.max_bytes,
        b.ttl,
        b.policy,
        b.thread_safe,
        b.weighs,
    )


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("thread_safe", [True, False])
def test_lru_cache_pickles_with_entries_order_and_bounds(policy: str, thread_safe: bool) -> None:
    cache: LRUCache[str, int] = LRUCache(3, policy=policy, thread_safe=thread_safe)  # type: ignore[arg-type]
    for i, k in enumerate("abc"):
        cache.put(k, i)
    cache.get("a")
    restored = pickle.loads(pickle.dumps(cache))
    _same(cache, restored)
    restored.put("d", 3)  # still bounded, and the copy has a working lock (or none)
    assert len(restored) == 3 and len(cache) == 3
    assert restored.thread_safe is thread_safe
    _same(cache, copy.deepcopy(cache))
    peer: cachetools.LRUCache[str, int] = pickle.loads(pickle.dumps(cachetools.LRUCache(3)))
    assert peer.maxsize == 3


def test_byte_bounded_cache_pickles_with_its_weights() -> None:
    cache: LRUCache[str, bytes] = LRUCache(max_bytes=100)  # the default sizeof
    cache.put("a", b"x" * 10)
    cache.put("b", b"x" * 20)
    restored = pickle.loads(pickle.dumps(cache))
    _same(cache, restored)
    assert restored.stats().nbytes == cache.stats().nbytes
    assert restored.max_bytes == 100


class StepClock:
    """A picklable manual clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_pickles_with_remaining_lifetimes() -> None:
    clock = StepClock(1000.0)
    cache: TTLCache[str, int] = TTLCache(10.0, 5, clock=clock)
    cache.put("old", 1)
    clock.now += 6
    cache.put("new", 2)
    restored = pickle.loads(pickle.dumps(cache))
    _same(cache, restored)
    assert restored.ttl == 10.0
    # What is pickled is the time each entry has left, not a clock reading.
    assert cache.__getstate__()["_deadlines"] == [("old", 4.0), ("new", 10.0)]
    restored._clock.now += 4  # "old" is 10 s old now, "new" 4 s
    assert restored.get("old") is None
    assert restored.get("new") == 2
    assert cache.get("old") == 1  # the original is untouched


def test_default_ttl_cache_pickles() -> None:
    cache: TTLCache[str, int] = TTLCache(60.0, max_bytes=1000)
    cache.put("a", 1)
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.get("a") == 1 and restored.ttl == 60.0 and restored.max_bytes == 1000


# -- thread_safe=False is honoured everywhere --------------------------------


@pytest.mark.parametrize("thread_safe", [True, False])
def test_ttl_cache_honours_thread_safe(thread_safe: bool) -> None:
    cache: TTLCache[str, int] = TTLCache(5.0, 4, thread_safe=thread_safe)
    assert cache.thread_safe is thread_safe
    assert f"thread_safe={thread_safe}" in repr(cache)
    assert (cache._lock is None) is not thread_safe


@pytest.mark.parametrize("policy", POLICIES)
def test_unlocked_cache_takes_no_lock(policy: str) -> None:
    cache: LRUCache[int, int] = LRUCache(4, policy=policy, thread_safe=False)  # type: ignore[arg-type]
    assert cache._lock is None and not cache.thread_safe
    cache.put(1, 1)
    assert cache.get(1) == 1


def test_manager_passes_thread_safe_through() -> None:
    manager = CacheManager()
    assert not manager.create_lru_cache("a", 4, thread_safe=False).thread_safe
    assert not manager.create_timed_cache("b", 5.0, thread_safe=False).thread_safe


# -- bad input: named, shown, and nothing changes ------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"capacity": -1}, ValueError, r"capacity must be >= 0, got -1"),
        ({"capacity": 2.5}, TypeError, r"capacity must be an int, got float 2.5"),
        ({"capacity": True}, TypeError, r"capacity must be an int, got bool True"),
        ({"capacity": math.nan}, TypeError, r"capacity must be an int, got float nan"),
        ({"max_bytes": 0}, ValueError, r"max_bytes must be >= 1, got 0"),
        ({"max_bytes": False}, TypeError, r"max_bytes must be an int, got bool False"),
        ({"max_bytes": "1k"}, TypeError, r"max_bytes must be an int, got str '1k'"),
        ({"ttl": math.inf}, ValueError, r"ttl must be finite, got inf"),
        ({"ttl": True}, TypeError, r"ttl must be a number, got bool True"),
        ({"ttl": -0.5}, ValueError, r"ttl must be > 0, got -0.5"),
        ({"sizeof": "len"}, TypeError, r"sizeof must be callable, got str 'len'"),
        ({"thread_safe": 1}, TypeError, r"thread_safe must be a bool, got int 1"),
        ({"policy": None}, ValueError, r"policy must be one of .*got None"),
    ],
)
def test_lru_refusals_name_the_argument_and_value(
    kwargs: dict[str, Any], exc: type, pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        LRUCache(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "pattern"),
    [
        ((math.nan,), {}, ValueError, r"ttl must not be NaN, got nan"),
        ((0,), {}, ValueError, r"ttl must be > 0, got 0"),
        ((5.0, -2), {}, ValueError, r"capacity must be >= 0, got -2"),
        ((5.0,), {"max_bytes": -1}, ValueError, r"max_bytes must be >= 1, got -1"),
        ((5.0,), {"thread_safe": "no"}, TypeError, r"thread_safe must be a bool, got str 'no'"),
        ((5.0,), {"clock": 3}, TypeError, r"clock must be callable, got int 3"),
    ],
)
def test_ttl_refusals_name_the_argument_and_value(
    args: tuple[Any, ...], kwargs: dict[str, Any], exc: type, pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        TTLCache(*args, **kwargs)


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [
        (lambda m: m.create_lru_cache("c", -1), ValueError, r"capacity must be >= 0, got -1"),
        (lambda m: m.create_timed_cache("c", -1), ValueError, r"ttl_seconds must be > 0, got -1"),
        (
            lambda m: m.create_timed_cache("c", 5.0, capacity=1.5),
            TypeError,
            r"capacity must be an int, got float 1.5",
        ),
        (lambda m: m.memoize(capacity=-3), ValueError, r"capacity must be >= 0, got -3"),
        (lambda m: m.memoize(ttl_seconds=math.nan), ValueError, r"ttl_seconds must not be NaN"),
        (lambda m: m.memoize(max_bytes=0), ValueError, r"max_bytes must be >= 1, got 0"),
        (
            lambda m: m.memoize(thread_safe="x"),
            TypeError,
            r"thread_safe must be a bool, got str 'x'",
        ),
    ],
)
def test_manager_refusals_name_the_argument_and_register_nothing(
    call: Any, exc: type, pattern: str
) -> None:
    manager = CacheManager()
    with pytest.raises(exc, match=pattern):
        call(manager)
    assert manager.names() == []


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"capacity": -1}, ValueError, r"capacity must be >= 0, got -1"),
        ({"capacity": 1.0}, TypeError, r"capacity must be an int, got float 1.0"),
        ({"max_bytes": 0}, ValueError, r"max_bytes must be >= 1, got 0"),
        ({"ttl": -1}, ValueError, r"ttl must be > 0, got -1"),
        ({"ttl": False}, TypeError, r"ttl must be a number, got bool False"),
        ({"sizeof": 1}, TypeError, r"sizeof must be callable, got int 1"),
        ({"policy": "lfu"}, ValueError, r"policy must be one of .*got 'lfu'"),
        ({"thread_safe": None}, TypeError, r"thread_safe must be a bool, got NoneType None"),
        ({"clock": "now"}, TypeError, r"clock must be callable, got str 'now'"),
    ],
)
def test_memoize_refusals_name_the_argument_and_value(
    kwargs: dict[str, Any], exc: type, pattern: str
) -> None:
    from memwarden.cache import memoize

    with pytest.raises(exc, match=pattern):
        memoize(**kwargs)


@pytest.mark.parametrize(
    ("value", "exc", "pattern"),
    [
        (-0.1, ValueError, r"fraction must be >= 0.0, got -0.1"),
        (math.nan, ValueError, r"fraction must not be NaN, got nan"),
        (True, TypeError, r"fraction must be a number, got bool True"),
    ],
)
def test_shrink_refusal_changes_nothing(value: Any, exc: type, pattern: str) -> None:
    cache: LRUCache[int, int] = LRUCache(4)
    cache.put(1, 1)
    cache.put(2, 2)
    with pytest.raises(exc, match=pattern):
        cache.shrink(value, hold=True)
    assert list(cache) == [1, 2] and not cache.held
    assert cache.stats().evictions == 0


def test_subclass_attributes_survive_pickling() -> None:
    cache = DefaultLRU(4)
    cache.label = "users"  # type: ignore[attr-defined]
    cache["a"] = "A"
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.label == "users"
    assert restored["b"] == "B" and list(restored) == ["a", "b"]
