"""memoize on async functions: single-flight, cancellation and timeouts, on asyncio and trio.

Every test of waiting runs under both backends, and has a cancelled-waiter
and a timed-out-waiter twin that checks nothing is left in the flight table.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from async_lru import alru_cache

from memwarden.cache import CacheInfo, memoize
from memwarden.errors import CacheError

BACKENDS = ["asyncio", "trio"]
backends = pytest.mark.parametrize("backend", BACKENDS)


def in_flight(fn: Any) -> int:
    """How many shared computations the memoized ``fn`` has in its table."""
    return len(fn._flights)


class Gate:
    """A computation the test releases by hand, counting how often it ran.

    Make it inside the event loop that uses it (its events belong to that loop).
    """

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


async def _run_in_scope(scope: anyio.CancelScope, fn: Any, x: int) -> None:
    with scope:
        await fn(x)
        raise AssertionError("the cancelled waiter got a result")


# -- hits and sharing ----------------------------------------------------------


@backends
def test_async_hit_and_functools_controls(backend: str) -> None:
    @memoize(capacity=4)
    async def square(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * x

    async def main() -> None:
        assert await square(3) == 9 and await square(3) == 9
        assert square.cache_info() == CacheInfo(1, 1, 4, 1)
        assert square.cache_invalidate(3) is True
        assert await square(3) == 9
        assert square.cache_info().misses == 2

    anyio.run(main, backend=backend)


@backends
def test_100_concurrent_awaits_run_the_function_once(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        results: list[int] = []

        async def waiter() -> None:
            results.append(await fn(7))

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert in_flight(fn) == 1
            gate.release.set()
        assert results == [70] * 100
        assert gate.runs == 1
        assert fn.cache_info() == CacheInfo(hits=99, misses=1, maxsize=None, currsize=1)
        assert in_flight(fn) == 0

    anyio.run(main, backend=backend)


@backends
def test_capacity_zero_still_shares_one_computation(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(capacity=0)(gate.compute)
        results: list[int] = []

        async def waiter() -> None:
            results.append(await fn(2))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            gate.release.set()
        assert results == [20] * 5 and gate.runs == 1
        assert await fn(2) == 20 and gate.runs == 2  # nothing was cached
        assert fn.cache_info().currsize == 0

    anyio.run(main, backend=backend)


def test_one_function_serves_asyncio_then_trio() -> None:
    calls = 0

    @memoize
    async def double(x: int) -> int:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        return 2 * x

    async def main() -> None:
        assert await double(4) == 8

    anyio.run(main, backend="asyncio")
    anyio.run(main, backend="trio")
    assert calls == 1 and in_flight(double) == 0


def test_two_event_loops_in_two_threads_each_run_their_own_flight() -> None:
    runs: list[str] = []
    both_waiting = threading.Barrier(2)

    @memoize
    async def fetch(x: int) -> int:
        runs.append(threading.current_thread().name)
        release = anyio.Event()
        # Both loops have started their flight before either may finish.
        await anyio.to_thread.run_sync(both_waiting.wait)
        release.set()
        await release.wait()
        return x

    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def thread_main(backend: str) -> None:
        async def main() -> None:
            got: list[int] = []

            async def waiter() -> None:
                got.append(await fetch(1))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(waiter)
            results[backend] = got

        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=thread_main, args=(b,), name=b, daemon=True) for b in BACKENDS
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert results == {"asyncio": [1, 1, 1], "trio": [1, 1, 1]}
    assert sorted(runs) == ["asyncio", "trio"]
    assert in_flight(fetch) == 0


# -- cancellation twins ---------------------------------------------------------


@backends
def test_cancelling_the_first_waiter_leaves_the_others_their_result(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        results: list[int] = []

        async def waiter() -> None:
            results.append(await fn(1))

        async with anyio.create_task_group() as tg:
            first_scope = anyio.CancelScope()
            # The first caller is the one that started the computation.
            tg.start_soon(_run_in_scope, first_scope, fn, 1)
            await gate.started.wait()
            for _ in range(3):
                tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            first_scope.cancel()
            await wait_all_tasks_blocked()
            assert gate.cancelled == 0  # the shared computation survived
            assert in_flight(fn) == 1
            gate.release.set()
        assert results == [10, 10, 10]
        assert gate.runs == 1 and gate.cancelled == 0
        assert fn.cache_info().currsize == 1
        assert in_flight(fn) == 0

    anyio.run(main, backend=backend)


@backends
def test_cancelled_waiters_leave_one_by_one_and_the_last_abandons(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        scopes = [anyio.CancelScope() for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for scope in scopes:
                tg.start_soon(_run_in_scope, scope, fn, 5)
            await wait_all_tasks_blocked()
            flight = next(iter(fn._flights.values()))
            assert len(flight.parked) == 3
            for left, scope in zip((2, 1), scopes, strict=False):
                scope.cancel()
                await wait_all_tasks_blocked()
                assert len(flight.parked) == left
                assert in_flight(fn) == 1 and gate.cancelled == 0
            scopes[2].cancel()
            await wait_all_tasks_blocked()
        assert flight.parked == set() and flight.abandoned
        assert gate.runs == 1 and gate.cancelled == 1
        assert in_flight(fn) == 0 and fn.cache_info().currsize == 0
        gate.release.set()
        assert await fn(5) == 50 and gate.runs == 2

    anyio.run(main, backend=backend)


@backends
def test_cancel_all_waiters_leaves_no_flight_queued(backend: str) -> None:
    async def main() -> None:
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

    anyio.run(main, backend=backend)


@backends
def test_call_in_a_cancelled_scope_starts_nothing(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await fn(1)
        assert scope.cancelled_caught
        await wait_all_tasks_blocked()
        assert gate.runs == 0  # abandoned before the computation began
        assert in_flight(fn) == 0 and fn.cache_info().currsize == 0

    anyio.run(main, backend=backend)


# -- timeout twins ----------------------------------------------------------------


@backends
def test_timeout_of_the_last_waiter_cancels_the_computation_and_leaks_nothing(
    backend: str,
) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        with anyio.move_on_after(0.01) as scope:
            await fn(2)
        assert scope.cancelled_caught
        await wait_all_tasks_blocked()
        assert gate.cancelled == 1
        assert fn.cache_info().currsize == 0
        assert in_flight(fn) == 0
        gate.release.set()
        assert await fn(2) == 20
        assert gate.runs == 2

    anyio.run(main, backend=backend)


@backends
def test_fail_after_around_a_slow_computation_leaks_nothing(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.01):
                await fn(6)
        await wait_all_tasks_blocked()
        assert gate.runs == 1 and gate.cancelled == 1
        assert in_flight(fn) == 0 and len(fn.cache) == 0

    anyio.run(main, backend=backend)


@backends
def test_timeout_of_one_waiter_leaves_the_flight_to_the_others(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        fn = memoize(gate.compute)
        results: list[int] = []
        timed_out: list[bool] = []
        gave_up = anyio.Event()

        async def impatient() -> None:
            with anyio.move_on_after(0.01) as scope:
                await fn(8)
            timed_out.append(scope.cancelled_caught)
            gave_up.set()

        async def patient() -> None:
            results.append(await fn(8))

        async with anyio.create_task_group() as tg:
            tg.start_soon(patient)
            tg.start_soon(impatient)
            await gate.started.wait()
            await gave_up.wait()
            assert in_flight(fn) == 1 and gate.cancelled == 0
            gate.release.set()
        assert timed_out == [True] and results == [80]
        assert in_flight(fn) == 0 and fn.cache_info().currsize == 1

    anyio.run(main, backend=backend)


# -- results that are not cached -------------------------------------------------


@backends
def test_each_awaiter_raises_its_own_exception_with_a_bounded_traceback(backend: str) -> None:
    async def main() -> None:
        gate = Gate()
        gate.fail = ValueError("boom")
        fn = memoize(gate.compute)
        errors: list[BaseException] = []
        depths: list[int] = []

        async def waiter() -> None:
            try:
                await fn(4)
            except ValueError as exc:
                errors.append(exc)
                depths.append(len(traceback.extract_tb(exc.__traceback__)))

        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            gate.release.set()
        assert len(errors) == 1000 and all(str(e) == "boom" for e in errors)
        assert len({id(e) for e in errors}) == 1000  # no two awaiters share one
        assert max(depths) <= 10, max(depths)
        # Every copy still shows where the computation failed.
        assert all(traceback.extract_tb(e.__traceback__)[-1].name == "compute" for e in errors[:5])
        assert fn.cache_info().currsize == 0 and in_flight(fn) == 0
        gate.fail = None
        assert await fn(4) == 40
        assert gate.runs == 2

    anyio.run(main, backend=backend)


class Coded(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code
        self.seen = "attribute"


@backends
def test_copied_exceptions_keep_args_attributes_and_cause(backend: str) -> None:
    @memoize
    async def fail(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        try:
            raise KeyError(x)
        except KeyError as cause:
            raise Coded("bad", 7) from cause

    async def main() -> None:
        errors: list[Coded] = []

        async def waiter() -> None:
            try:
                await fail(1)
            except Coded as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
        assert len({id(e) for e in errors}) == 3
        for exc in errors:
            assert exc.args == ("bad", 7) and exc.code == 7 and exc.seen == "attribute"
            assert isinstance(exc.__cause__, KeyError) and exc.__suppress_context__
        assert errors[0].__cause__ is errors[1].__cause__  # the cause itself is shared

    anyio.run(main, backend=backend)


class Rebuilt(Exception):
    """An exception ``copy.copy`` cannot rebuild faithfully: ``__init__`` reshapes its args."""

    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")


@backends
def test_exception_that_cannot_be_copied_keeps_a_bounded_traceback(backend: str) -> None:
    @memoize
    async def fail(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        raise Rebuilt(x)

    async def main() -> None:
        messages: list[str] = []
        depths: list[int] = []

        async def waiter() -> None:
            try:
                await fail(3)
            except Rebuilt as exc:
                messages.append(str(exc))
                depths.append(len(traceback.extract_tb(exc.__traceback__)))

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(waiter)
        assert messages == ["code 3"] * 200  # never "code code 3"
        assert max(depths) <= 10, max(depths)

    anyio.run(main, backend=backend)


@backends
def test_invalidate_during_flight_delivers_but_does_not_store(backend: str) -> None:
    async def main() -> None:
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
        assert fn.cache_info().currsize == 0 and in_flight(fn) == 0

    anyio.run(main, backend=backend)


@backends
def test_async_oversized_result_not_cached(backend: str) -> None:
    @memoize(max_bytes=4, sizeof=len)
    async def blob(n: int) -> bytes:
        await anyio.lowlevel.checkpoint()
        return b"x" * n

    async def main() -> None:
        assert await blob(10) == b"x" * 10
        assert len(blob.cache) == 0

    anyio.run(main, backend=backend)


@backends
def test_computation_that_cancels_itself_reports_cache_error(backend: str) -> None:
    @memoize
    async def cancels_itself(x: int) -> int:
        # Ends with a cancellation that its own task's scopes did not ask for.
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await anyio.sleep(1)
            except anyio.get_cancelled_exc_class() as exc:
                stray = exc
        raise stray

    async def main() -> None:
        with pytest.raises(CacheError, match="was cancelled"):
            await cancels_itself(1)
        assert in_flight(cancels_itself) == 0

    anyio.run(main, backend=backend)


@backends
def test_failing_sizeof_reaches_async_waiters_instead_of_hanging(backend: str) -> None:
    def bad_sizeof(value: object) -> int:
        raise TypeError("cannot weigh this")

    @memoize(max_bytes=100, sizeof=bad_sizeof)
    async def compute(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    async def main() -> None:
        with anyio.fail_after(5):
            with pytest.raises(TypeError, match="cannot weigh this"):
                await compute(1)
        assert compute.cache_info().currsize == 0 and in_flight(compute) == 0

    anyio.run(main, backend=backend)


# -- methods (async-lru binds self) -----------------------------------------------


def test_async_method_cache_invalidate_like_async_lru() -> None:
    calls: list[tuple[str, int]] = []

    class Ours:
        @memoize
        async def load(self, x: int) -> int:
            calls.append(("ours", x))
            return x

    class Peer:
        @alru_cache
        async def load(self, x: int) -> int:
            calls.append(("peer", x))
            return x

    async def main() -> None:
        for cls in (Ours, Peer):
            obj, other = cls(), cls()
            assert await obj.load(42) == 42 and await obj.load(42) == 42
            await other.load(42)
            assert obj.load.cache_invalidate(42) is True
            assert obj.load.cache_invalidate(42) is False
            await obj.load(42)
            await other.load(42)  # another instance's entry stayed

    anyio.run(main, backend="asyncio")
    assert calls == [("ours", 42)] * 3 + [("peer", 42)] * 3


@backends
def test_async_method_cache_invalidate_on_both_backends(backend: str) -> None:
    class Repo:
        def __init__(self) -> None:
            self.loads = 0

        @memoize
        async def load(self, x: int) -> int:
            self.loads += 1
            await anyio.lowlevel.checkpoint()
            return x

    async def main() -> None:
        repo = Repo()
        await repo.load(1)
        await repo.load(1)
        assert repo.loads == 1
        assert repo.load.cache_invalidate(1) is True
        await repo.load(1)
        assert repo.loads == 2
        assert repo.load.cache_info() == Repo.load.cache_info()

    anyio.run(main, backend=backend)


def test_memoized_async_function_is_a_coroutine_function() -> None:
    import asyncio
    import inspect

    @memoize
    async def f(x: int) -> int:
        return x

    class C:
        @memoize
        async def m(self) -> int:
            return 1

    assert asyncio.iscoroutinefunction(f) and asyncio.iscoroutinefunction(C().m)
    assert inspect.iscoroutinefunction(f.__call__)
    assert inspect.signature(f) == inspect.signature(f.__wrapped__)
