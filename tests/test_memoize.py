"""memoize on sync functions: functools-style keys and controls, TTL, shared caches.

Async single-flight is tested in ``test_memoize_flight.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from memwarden.cache import CacheInfo, LRUCache, TTLCache, memoize
from memwarden.testing import ManualClock

# -- sync ----------------------------------------------------------------------


def test_sync_hits_misses_and_functools_key_rules() -> None:
    calls: list[tuple[Any, ...]] = []

    @memoize
    def add(x: Any, y: Any = 1) -> Any:
        calls.append((x, y))
        return x + y

    assert add(1) == 2 and add(1) == 2
    assert add(1, y=2) == 3
    # Keyword order does not matter; positional and keyword spellings differ (as in functools).
    assert add(y=2, x=1) == 3 and add(x=1, y=2) == 3
    assert add(1.0) == 2.0  # functools' fast path: a lone int and a lone float differ
    assert add.cache_info() == CacheInfo(hits=2, misses=4, maxsize=None, currsize=4)
    assert calls == [(1, 1), (1, 2), (1, 2), (1.0, 1)]
    add.cache_clear()
    assert add.cache_info() == CacheInfo(0, 0, None, 0)
    assert add.__name__ == "add" and add.__wrapped__(5) == 6


def test_typed_keys_separate_int_and_float() -> None:
    @memoize(typed=True, capacity=8)
    def ident(x: Any) -> Any:
        return x

    assert ident(1) == 1 and type(ident(1.0)) is float
    assert ident.cache_info().currsize == 2
    assert ident.cache_info().maxsize == 8


def test_exceptions_are_not_cached() -> None:
    attempts = 0

    @memoize
    def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError):
        flaky(3)
    assert flaky(3) == 3 and flaky(3) == 3
    assert attempts == 2


def test_cache_invalidate_and_custom_key() -> None:
    calls = 0

    @memoize(key=lambda user, **_: user)
    def profile(user: str, *, verbose: bool = False) -> str:
        nonlocal calls
        calls += 1
        return f"{user}:{verbose}"

    assert profile("ann") == "ann:False"
    assert profile("ann", verbose=True) == "ann:False"  # same key by design
    assert profile.cache_invalidate("ann") is True
    assert profile.cache_invalidate("ann") is False
    assert profile("ann", verbose=True) == "ann:True"
    assert calls == 2


def test_ttl_through_the_cache(clock: ManualClock) -> None:
    calls = 0

    @memoize(ttl=5.0, clock=clock)
    def now_value(x: int) -> int:
        nonlocal calls
        calls += 1
        return calls

    assert now_value(1) == 1
    clock.advance(4)
    assert now_value(1) == 1
    clock.advance(1)
    assert now_value(1) == 2
    assert isinstance(now_value.cache, TTLCache)


def test_shared_cache_namespaces_functions() -> None:
    shared: LRUCache[Any, Any] = LRUCache(100)

    @memoize(shared)
    def double(x: int) -> int:
        return 2 * x

    @memoize(shared)
    def triple(x: int) -> int:
        return 3 * x

    assert double(2) == 4 and triple(2) == 6 and double(2) == 4
    assert double.cache_info().currsize == 1
    double.cache_clear()
    assert triple.cache_info().currsize == 1 and len(shared) == 1
    assert double.cache_invalidate(2) is False and triple.cache_invalidate(2) is True


def test_oversized_result_is_returned_but_not_cached() -> None:
    calls = 0

    @memoize(max_bytes=10, sizeof=len)
    def blob(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return b"x" * n

    assert blob(50) == b"x" * 50 and blob(50) == b"x" * 50
    assert calls == 2
    assert blob(5) == b"xxxxx" and blob(5) == b"xxxxx" and calls == 3


def test_method_cache_invalidate_binds_self() -> None:
    class Account:
        def __init__(self, name: str) -> None:
            self.name = name
            self.loads = 0

        @memoize
        def balance(self, day: int) -> str:
            self.loads += 1
            return f"{self.name}:{day}"

    ann, bob = Account("ann"), Account("bob")
    assert ann.balance(42) == "ann:42" and ann.balance(42) == "ann:42"
    assert bob.balance(42) == "bob:42"
    assert ann.balance.cache_invalidate(42) is True  # ann's entry, not bob's
    assert ann.balance.cache_invalidate(42) is False
    assert Account.balance.cache_invalidate(bob, 42) is True  # the unbound spelling
    assert ann.balance(42) == "ann:42" and bob.balance(42) == "bob:42"
    assert (ann.loads, bob.loads) == (2, 2)
    assert ann.balance.cache_info() == Account.balance.cache_info()
    assert ann.balance.cache_info().currsize == 2
    ann.balance.cache_clear()  # one cache for every instance, as functools
    assert Account.balance.cache_info().currsize == 0
    assert ann.balance == ann.balance and ann.balance != bob.balance
    assert ann.balance.__name__ == "balance" and ann.balance.__self__ is ann


def test_memoized_functions_pickle_and_copy_by_reference() -> None:
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(module_level)) is module_level
    assert copy.deepcopy(module_level) is module_level
    ledger = Ledger()
    bound = pickle.loads(pickle.dumps(ledger.total))
    assert bound(2) == 2 and isinstance(bound.__self__, Ledger)
    assert ledger.total.__doc__ == "The total for a day."


@pytest.mark.parametrize("thread_safe", [True, False])
def test_memoize_honours_thread_safe(thread_safe: bool) -> None:
    @memoize(capacity=4, thread_safe=thread_safe)
    def f(x: int) -> int:
        return x

    @memoize(ttl=5.0, thread_safe=thread_safe)
    def g(x: int) -> int:
        return x

    for fn in (f, g):
        assert fn.cache.thread_safe is thread_safe
        assert (fn.cache._lock is None) is not thread_safe
        assert fn(1) == 1 and fn(1) == 1
        assert fn.cache_info().hits == 1


def test_one_memoize_call_gives_each_function_its_own_cache() -> None:
    memo = memoize(capacity=8)

    @memo
    def double(x: int) -> int:
        return 2 * x

    @memo
    def triple(x: int) -> int:
        return 3 * x

    assert double(2) == 4 and triple(2) == 6
    assert double.cache is not triple.cache


def test_methods_bind_self_into_the_key() -> None:
    class Box:
        def __init__(self, v: int) -> None:
            self.v = v

        @memoize
        def get(self) -> int:
            return self.v

    assert Box(1).get() == 1 and Box(2).get() == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"capacity": -1}, ValueError, r"capacity must be >= 0, got -1"),
        ({"ttl": 0}, ValueError, r"ttl must be > 0, got 0"),
        ({"ttl": math.nan}, ValueError, r"ttl must not be NaN"),
        ({"key": 3}, TypeError, r"key must be callable, got int 3"),
        ({"typed": "no"}, TypeError, r"typed must be a bool, got str 'no'"),
        ({"cache": LRUCache(3), "ttl": 1.0}, ValueError, r"pass either cache or ttl"),
        ({"cache": {}}, TypeError, r"cache must be an LRUCache, got dict"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        memoize(**kwargs)


def test_unhashable_argument_is_a_clear_type_error() -> None:
    @memoize
    def total(xs: list[int]) -> int:
        return sum(xs)

    with pytest.raises(TypeError, match="cache key must be hashable"):
        total([1, 2])


def test_sync_counters_are_exact_across_threads() -> None:
    import threading

    @memoize(capacity=16)
    def square(x: int) -> int:
        return x * x

    @memoize(capacity=16, ttl=60.0)
    def square_ttl(x: int) -> int:
        return x * x

    barrier = threading.Barrier(4)

    def hammer() -> None:
        barrier.wait()
        for i in range(2_000):
            square(i % 8)
            square_ttl(i % 8)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for fn in (square, square_ttl):
        info = fn.cache_info()
        assert info.hits + info.misses == 8_000
        assert info.currsize == 8
        stats = fn.cache.stats()
        assert stats.hits + stats.misses == 8_000


def test_cache_parameters_like_functools() -> None:
    @memoize(capacity=8, ttl=3.0, typed=True)
    def f(x: int) -> int:
        return x

    assert f.cache_parameters() == {
        "maxsize": 8,
        "max_bytes": None,
        "ttl": 3.0,
        "policy": "lru",
        "typed": True,
    }


@memoize
def module_level(x: int) -> int:
    return x


class Ledger:
    @memoize
    def total(self, day: int) -> int:
        """The total for a day."""
        return day
