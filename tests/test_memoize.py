"""memoize: functools-style keys and controls, TTL, and async single-flight with cancellation."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from memwarden.cache import CacheInfo, LRUCache, TTLCache, memoize
from memwarden.errors import CacheError
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


# -- async ---------------------------------------------------------------------


def in_flight(fn: Any) -> int:
    """How many shared computations the memoized ``fn`` has queued."""
    return len(fn._flights)


class Gate:
    """A computation the test releases by hand, counting how often it ran."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.started = anyio.Event()
        self.runs = 0
        self.cancelled = 0
        self.fail: BaseException | None = None

    async def compute(self, x: int) -> int:
        self.runs += 1
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        return x * 10


async def test_async_hit_and_functools_controls() -> None:
    @memoize(capacity=4)
    async def square(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * x

    assert await square(3) == 9 and await square(3) == 9
    assert square.cache_info() == CacheInfo(1, 1, 4, 1)
    assert square.cache_invalidate(3) is True
    assert await square(3) == 9
    assert square.cache_info().misses == 2


async def _single_flight_100() -> None:
    gate = Gate()
    fn = memoize(gate.compute)
    results: list[int] = []

    async def waiter() -> None:
        results.append(await fn(7))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        gate.release.set()
    assert results == [70] * 100
    assert gate.runs == 1
    assert fn.cache_info() == CacheInfo(hits=99, misses=1, maxsize=None, currsize=1)


async def test_100_concurrent_awaits_run_the_function_once() -> None:
    await _single_flight_100()


def test_single_flight_under_trio() -> None:
    anyio.run(_single_flight_100, backend="trio")


async def _cancel_one_waiter_others_get_result() -> None:
    gate = Gate()
    fn = memoize(gate.compute)
    results: list[int] = []

    async def waiter() -> None:
        results.append(await fn(1))

    async with anyio.create_task_group() as tg:
        first_scope = anyio.CancelScope()
        # The first caller is the one that started the computation.
        tg.start_soon(_run_in_scope, first_scope, fn)
        await gate.started.wait()
        for _ in range(3):
            tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        first_scope.cancel()
        await wait_all_tasks_blocked()
        assert gate.cancelled == 0  # the shared computation survived
        gate.release.set()
    assert results == [10, 10, 10]
    assert gate.runs == 1 and gate.cancelled == 0
    assert fn.cache_info().currsize == 1
    assert in_flight(fn) == 0


async def _run_in_scope(scope: anyio.CancelScope, fn: Any) -> None:
    with scope:
        await fn(1)
        raise AssertionError("the cancelled waiter got a result")


async def test_cancelling_the_first_waiter_leaves_the_others_their_result() -> None:
    await _cancel_one_waiter_others_get_result()


def test_cancelling_one_waiter_under_trio() -> None:
    anyio.run(_cancel_one_waiter_others_get_result, backend="trio")


async def _last_waiter_cancelled() -> None:
    gate = Gate()
    fn = memoize(gate.compute)
    with anyio.move_on_after(0.01) as scope:  # a timeout twin: the only waiter gives up
        await fn(2)
    assert scope.cancelled_caught
    # The computation is cancelled once nobody waits for it, and nothing is kept.
    await wait_all_tasks_blocked()
    assert gate.cancelled == 1
    assert fn.cache_info().currsize == 0
    assert in_flight(fn) == 0
    assert not fn.cache._data  # type: ignore[attr-defined]
    gate.release.set()
    assert await fn(2) == 20
    assert gate.runs == 2


async def test_timeout_of_the_last_waiter_cancels_the_computation_and_leaks_nothing() -> None:
    await _last_waiter_cancelled()


def test_last_waiter_timeout_under_trio() -> None:
    anyio.run(_last_waiter_cancelled, backend="trio")


async def test_cancel_all_waiters_leaves_no_flight_queued() -> None:
    gate = Gate()
    fn = memoize(gate.compute)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(fn, 3)
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    await wait_all_tasks_blocked()
    assert gate.runs == 1 and gate.cancelled == 1
    assert fn.cache_info().currsize == 0
    assert in_flight(fn) == 0
    # No abandoned flight is left to join: the next call computes afresh.
    gate.release.set()
    assert await fn(3) == 30
    assert gate.runs == 2 and fn.cache_info().misses == 2


async def test_exception_reaches_every_waiter_and_is_not_cached() -> None:
    gate = Gate()
    gate.fail = ValueError("boom")
    fn = memoize(gate.compute)
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await fn(4)
        except ValueError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        gate.release.set()
    assert len(errors) == 10 and all(str(e) == "boom" for e in errors)
    assert fn.cache_info().currsize == 0
    assert in_flight(fn) == 0
    gate.fail = None
    assert await fn(4) == 40
    assert gate.runs == 2


async def test_invalidate_during_flight_delivers_but_does_not_store() -> None:
    gate = Gate()
    fn = memoize(gate.compute)
    results: list[int] = []

    async def waiter() -> None:
        results.append(await fn(5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await gate.started.wait()
        assert fn.cache_invalidate(5) is True
        gate.release.set()
    assert results == [50]
    assert fn.cache_info().currsize == 0


async def test_async_oversized_result_not_cached() -> None:
    @memoize(max_bytes=4, sizeof=len)
    async def blob(n: int) -> bytes:
        return b"x" * n

    assert await blob(10) == b"x" * 10
    assert len(blob.cache) == 0


async def test_async_computation_cancelled_from_outside_reports_cache_error() -> None:
    """If the computation ends without a result (cancelled on its own), waiters learn it."""

    @memoize
    async def cancels_itself(x: int) -> int:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anyio.sleep(1)
        raise anyio.get_cancelled_exc_class()()

    with pytest.raises(CacheError, match="was cancelled"):
        await cancels_itself(1)


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


async def test_failing_sizeof_reaches_async_waiters_instead_of_hanging() -> None:
    def bad_sizeof(value: object) -> int:
        raise TypeError("cannot weigh this")

    @memoize(max_bytes=100, sizeof=bad_sizeof)
    async def compute(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    with anyio.fail_after(5):
        with pytest.raises(TypeError, match="cannot weigh this"):
            await compute(1)
    assert compute.cache_info().currsize == 0


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
