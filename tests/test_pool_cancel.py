"""Cancellation and timeout twins for every wait in ObjectPool: nothing may leak.

Each test ends by checking that the pool holds no stray object, slot or
waiter (``_assert_clean``): in-use and pending are zero unless a test holds
something on purpose, and no waiter stays queued. Every test runs under
asyncio and trio (trio on an autojumping mock clock, so timeouts take no real
time), except those of asyncio's own ``Task.cancel()``.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest
from test_pool_backends import assert_nothing_leaked, on_both_backends, wait_for_closes

from memwarden.errors import PoolClosedError, PoolError, PoolExhaustedError
from memwarden.pool import ObjectPool
from memwarden.testing import ManualClock


class Maker:
    def __init__(self) -> None:
        self.made: list[list[int]] = []
        self.closed: list[list[int]] = []

    def __call__(self) -> list[int]:
        obj = [len(self.made)]
        self.made.append(obj)
        return obj

    def close(self, obj: list[int]) -> None:
        self.closed.append(obj)


def _assert_clean(pool: ObjectPool[list[int]], *, in_use: int = 0) -> None:
    assert_nothing_leaked(pool, in_use=in_use)


# -- parked acquire -------------------------------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_cancelled_parked_acquire_leaves_no_waiter() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    with anyio.move_on_after(0):
        await pool.acquire()
    _assert_clean(pool, in_use=1)
    await pool.release(held)
    assert pool.stats().idle == 1
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_timed_out_parked_acquire_leaves_no_waiter() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    with pytest.raises(PoolExhaustedError, match=r"within 0\.05 s"):
        await pool.acquire(timeout=0.05)
    assert pool.stats().timeouts == 1
    _assert_clean(pool, in_use=1)
    await pool.release(held)
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_pool_acquire_timeout_default_applies() -> None:
    pool = ObjectPool(Maker(), max_size=1, acquire_timeout=0.05)
    held = await pool.acquire()
    with pytest.raises(PoolExhaustedError):
        async with pool.acquire():
            pass  # pragma: no cover
    assert pool.stats().timeouts == 1
    _assert_clean(pool, in_use=1)
    await pool.release(held)


@on_both_backends(mock_clock=True)
async def test_timeout_on_the_real_clock() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    with pytest.raises(PoolExhaustedError) as info:
        await pool.acquire(timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    _assert_clean(pool, in_use=1)
    await pool.release(held)


@on_both_backends(mock_clock=True)
async def test_grant_racing_cancel_scope_leaks_nothing() -> None:
    """The release hands the object over, then the waiter's scope is cancelled before it
    resumes: it either keeps the grant (and releases it) or passes it on; never both."""
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    second: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def first_waiter() -> None:
            with scope:
                obj = await pool.acquire()
                await pool.release(obj)

        async def second_waiter() -> None:
            second.append(await pool.acquire())

        tg.start_soon(first_waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second_waiter)
        await anyio.wait_all_tasks_blocked()
        await pool.release(held)  # handed to first_waiter, synchronously
        scope.cancel()  # ... which is cancelled before it resumes
    assert second == [held]
    _assert_clean(pool, in_use=1)
    await pool.release(held)
    _assert_clean(pool)


async def test_grant_racing_task_cancel_hands_object_on() -> None:
    """asyncio's Task.cancel() after the grant throws CancelledError into the waiter:
    the granted object must go to the next waiter."""
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()

    async def get() -> list[int]:
        return await pool.acquire()

    first = asyncio.create_task(get())
    await anyio.wait_all_tasks_blocked()
    second = asyncio.create_task(get())
    await anyio.wait_all_tasks_blocked()
    await pool.release(held)  # granted to `first`
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is held
    _assert_clean(pool, in_use=1)
    await pool.release(held)
    _assert_clean(pool)


async def test_grant_racing_cancellation_with_validation_returns_to_idle() -> None:
    pool = ObjectPool(Maker(), max_size=1, validate=lambda obj: True)
    held = await pool.acquire()

    async def get() -> list[int]:
        return await pool.acquire()

    waiter = asyncio.create_task(get())
    await anyio.wait_all_tasks_blocked()
    await pool.release(held)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.stats().idle == 1
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_many_cancelled_acquires_leak_nothing() -> None:
    """trio's CapacityLimiter memleak test, for the pool."""
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    for _ in range(200):
        with anyio.move_on_after(0):
            await pool.acquire()
    _assert_clean(pool, in_use=1)
    assert len(pool._core.waiters) == 0
    await pool.release(held)


# -- creation in progress -------------------------------------------------------------------


def _slow_factory(started: anyio.Event, proceed: anyio.Event, maker: Maker):  # type: ignore[no-untyped-def]
    async def factory() -> list[int]:
        started.set()
        await proceed.wait()
        return maker()

    return factory


@on_both_backends(mock_clock=True)
async def test_cancelled_creation_frees_its_slot() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(_slow_factory(started, proceed, maker), max_size=1)
    with anyio.move_on_after(0.0) as scope:
        await pool.acquire()
    assert scope.cancelled_caught
    _assert_clean(pool)
    proceed.set()
    async with pool.acquire() as obj:
        assert obj == [0]


@on_both_backends(mock_clock=True)
async def test_timed_out_creation_frees_its_slot() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(_slow_factory(started, proceed, maker), max_size=1)
    with pytest.raises(PoolExhaustedError):
        await pool.acquire(timeout=0.05)
    assert started.is_set()
    _assert_clean(pool)
    assert pool.stats().create_failures == 0  # a cancelled creation is not a failure
    proceed.set()
    assert await pool.acquire() == [0]


@on_both_backends(mock_clock=True)
async def test_cancelled_creation_hands_slot_to_next_waiter() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(_slow_factory(started, proceed, maker), max_size=1)
    got: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def creator() -> None:
            with scope:
                await pool.acquire()

        async def waiter() -> None:
            got.append(await pool.acquire())

        tg.start_soon(creator)
        await started.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert pool.stats().waiters == 1
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        proceed.set()
    assert got == [[0]]
    _assert_clean(pool, in_use=1)


@on_both_backends(mock_clock=True)
async def test_cancelled_gate_wait_frees_its_slot() -> None:
    gate_open = anyio.Event()

    async def gate() -> None:
        await gate_open.wait()

    pool = ObjectPool(Maker(), max_size=1, creation_gate=gate)
    with anyio.move_on_after(0.01):
        await pool.acquire()
    _assert_clean(pool)
    with pytest.raises(PoolExhaustedError):
        await pool.acquire(timeout=0.05)
    _assert_clean(pool)
    gate_open.set()
    assert await pool.acquire() == [0]


# -- validation and reset in progress ------------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_cancelled_validation_discards_the_object() -> None:
    maker = Maker()
    started = anyio.Event()

    async def validate(obj: list[int]) -> bool:
        started.set()
        await anyio.sleep_forever()
        return True  # pragma: no cover

    pool = ObjectPool(maker, validate=validate, close=maker.close)
    obj = await pool.acquire()
    await pool.release(obj)

    async def get() -> None:
        await pool.acquire()

    async with anyio.create_task_group() as tg:
        tg.start_soon(get)
        await started.wait()
        tg.cancel_scope.cancel()
    await wait_for_closes(pool)
    assert maker.closed == [obj]  # state unknown after an interrupted check
    _assert_clean(pool)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_cancelled_release_still_finishes_the_reset() -> None:
    resets: list[list[int]] = []
    started = anyio.Event()

    async def reset(obj: list[int]) -> None:
        started.set()
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        resets.append(obj)

    pool = ObjectPool(Maker(), reset=reset)
    async with anyio.create_task_group() as tg:

        async def user() -> None:
            async with pool.acquire():
                pass

        tg.start_soon(user)
        await started.wait()
        tg.cancel_scope.cancel()
    assert len(resets) == 1 and pool.stats().idle == 1
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_cancelled_async_with_body_releases() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    with anyio.move_on_after(0.01):
        async with pool.acquire():
            await anyio.sleep_forever()
    assert pool.stats().idle == 1
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_acquire_in_a_cancelled_scope_is_a_checkpoint() -> None:
    """As anyio's CapacityLimiter: a cancelled scope is honoured even when an object is idle."""
    pool = ObjectPool(Maker(), max_size=1)
    await pool.release(await pool.acquire())
    lease = pool.acquire()
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with lease:
            pytest.fail("entered a cancelled scope")  # pragma: no cover
    assert scope.cancelled_caught
    _assert_clean(pool)
    assert pool.stats().idle == 1
    with pytest.raises(PoolError, match="already used"):
        await lease  # the lease is spent


@on_both_backends(mock_clock=True)
async def test_fast_acquire_takes_an_idle_object_without_yielding() -> None:
    pool = ObjectPool(Maker(), max_size=1, fast_acquire=True)
    await pool.release(await pool.acquire())
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with pool.acquire() as obj:  # no checkpoint: not cancelled
            assert obj == [0]
    _assert_clean(pool)


# -- aclose --------------------------------------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_aclose_timeout_twin_closes_leftovers() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=2, close=maker.close)
    held = [await pool.acquire(), await pool.acquire()]
    await pool.release(held[1])
    await pool.aclose(timeout=0.05)
    await wait_for_closes(pool)
    assert maker.closed == [held[1], held[0]]
    _assert_clean(pool)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_cancelled_aclose_leaves_pool_closed_and_consistent() -> None:
    maker = Maker()
    pool = ObjectPool(maker, close=maker.close)
    held = await pool.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.aclose)
        while not pool.closed:
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert pool.closed
    with pytest.raises(PoolClosedError):
        await pool.acquire()
    await pool.release(held)  # still closed properly on return
    await wait_for_closes(pool)
    assert maker.closed == [held]
    _assert_clean(pool)
    await pool.aclose()  # returns at once: already done


@on_both_backends(mock_clock=True)
async def test_creation_finishing_after_close_is_closed() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(
        _slow_factory(started, proceed, maker),
        close=maker.close,
    )
    async with anyio.create_task_group() as tg:

        async def creator() -> None:
            with pytest.raises(PoolClosedError):
                await pool.acquire()

        tg.start_soon(creator)
        await started.wait()
        tg.start_soon(lambda: pool.aclose(timeout=10.0))
        await anyio.wait_all_tasks_blocked()
        proceed.set()
    await wait_for_closes(pool)
    assert maker.closed == maker.made == [[0]]
    _assert_clean(pool)


# -- fill ----------------------------------------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_cancelled_fill_frees_every_reserved_slot() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(_slow_factory(started, proceed, maker), min_size=3, max_size=3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.fill)
        await started.wait()
        assert pool.stats().pending == 3
        tg.cancel_scope.cancel()
    _assert_clean(pool)
    assert pool.stats().size == 0 and pool.stats().create_failures == 0
    proceed.set()
    assert await pool.fill() == 3


@on_both_backends(mock_clock=True)
async def test_timed_out_fill_frees_every_reserved_slot() -> None:
    maker = Maker()
    started, proceed = anyio.Event(), anyio.Event()
    pool = ObjectPool(_slow_factory(started, proceed, maker), min_size=2, max_size=2)
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            await pool.fill()
    _assert_clean(pool)
    assert pool.stats().size == 0


# -- contended acquires -------------------------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_contended_acquires_keep_stats_exact_and_fifo() -> None:
    clock = ManualClock(1000.0)
    pool = ObjectPool(Maker(), max_size=2, clock=clock)
    a = await pool.acquire()
    b = await pool.acquire()
    order: list[tuple[int, list[int]]] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def user(n: int) -> None:
            async with pool.acquire() as obj:
                order.append((n, obj))
                await done.wait()

        for n in range(3):
            tg.start_soon(user, n)
            await anyio.wait_all_tasks_blocked()
        stats = pool.stats()
        assert (stats.waiters, stats.waiters_peak, stats.in_use) == (3, 3, 2)
        clock.advance(2.5)
        await pool.release(a)  # to waiter 0, which waited 2.5 s
        await anyio.wait_all_tasks_blocked()
        clock.advance(4.0)
        await pool.release(b)  # to waiter 1, which waited 6.5 s
        await anyio.wait_all_tasks_blocked()
        # The first of waiters 0 and 1 to finish (the backend's scheduler
        # decides) hands its object to waiter 2, which waited 6.5 s.
        done.set()
    assert [n for n, _ in order] == [0, 1, 2]
    assert order[0][1] is a and order[1][1] is b
    assert order[2][1] is a or order[2][1] is b
    stats = pool.stats()
    assert stats.wait_time_max == 6.5
    assert stats.wait_time_avg == pytest.approx((2.5 + 6.5 + 6.5) / 3)
    assert (stats.acquired, stats.released, stats.in_use, stats.idle) == (5, 5, 0, 2)
    assert (stats.in_use_peak, stats.size_peak, stats.created) == (2, 2, 2)
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_contended_waiter_creates_after_factory_failure() -> None:
    started, proceed = anyio.Event(), anyio.Event()
    calls: list[int] = []

    async def factory() -> list[int]:
        calls.append(len(calls))
        if len(calls) == 2:
            started.set()
            await proceed.wait()
            raise RuntimeError("factory failed")
        return [len(calls)]

    pool: ObjectPool[list[int]] = ObjectPool(factory, max_size=2)
    held = await pool.acquire()
    got: list[list[int]] = []
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def creator() -> None:
            try:
                await pool.acquire()
            except RuntimeError as exc:
                errors.append(exc)

        async def waiter() -> None:
            got.append(await pool.acquire())

        tg.start_soon(creator)
        await started.wait()
        tg.start_soon(waiter)  # nothing idle, the last slot reserved: parks
        await anyio.wait_all_tasks_blocked()
        assert pool.stats().waiters == 1
        proceed.set()  # the failure passes the slot to the waiter, which creates
    assert len(errors) == 1 and got == [[3]]
    stats = pool.stats()
    assert (stats.create_failures, stats.created, stats.size, stats.in_use) == (1, 2, 2, 2)
    _assert_clean(pool, in_use=2)
    await pool.release(held)
    await pool.release(got[0])
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_contended_waiter_fails_when_pool_closes() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=1, close=maker.close)
    held = await pool.acquire()
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            try:
                await pool.acquire()
            except PoolClosedError as exc:
                errors.append(exc)

        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(pool.aclose)
        await anyio.wait_all_tasks_blocked()
        assert len(errors) == 1 and pool.stats().waiters == 0
        await pool.release(held)
    await wait_for_closes(pool)
    assert maker.closed == [held]
    _assert_clean(pool)


@on_both_backends(mock_clock=True)
async def test_cancelled_middle_waiter_leaves_the_queue_in_order() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    got: list[int] = []
    scopes = [anyio.CancelScope() for _ in range(3)]
    async with anyio.create_task_group() as tg:

        async def user(n: int) -> None:
            with scopes[n]:
                async with pool.acquire():
                    got.append(n)
                    await anyio.lowlevel.checkpoint()

        for n in range(3):
            tg.start_soon(user, n)
            await anyio.wait_all_tasks_blocked()
        scopes[1].cancel()
        await anyio.wait_all_tasks_blocked()
        assert pool.stats().waiters == 2
        await pool.release(held)
    assert got == [0, 2]
    assert pool.stats().waiters_peak == 3
    _assert_clean(pool)


# -- trim ----------------------------------------------------------------------------------


def _trim_pool(maker: Maker, started: anyio.Event) -> ObjectPool[list[int]]:
    async def close(obj: list[int]) -> None:
        started.set()
        await anyio.sleep(0.2)
        maker.close(obj)

    return ObjectPool(maker, max_size=3, close=close)


@on_both_backends(mock_clock=True)
async def test_cancelled_trim_still_closes_what_it_removed() -> None:
    maker, started = Maker(), anyio.Event()
    pool = _trim_pool(maker, started)
    objs = [await pool.acquire() for _ in range(3)]
    for obj in objs:
        await pool.release(obj)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.trim, 0)
        await started.wait()
        tg.cancel_scope.cancel()
    assert sorted(maker.closed) == sorted(objs)  # shielded: every close ran
    _assert_clean(pool)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_timed_out_trim_still_closes_what_it_removed() -> None:
    maker, started = Maker(), anyio.Event()
    pool = _trim_pool(maker, started)
    objs = [await pool.acquire() for _ in range(2)]
    for obj in objs:
        await pool.release(obj)
    with anyio.move_on_after(0.05):
        await pool.trim(0)
    assert sorted(maker.closed) == sorted(objs)
    _assert_clean(pool)
    assert pool.stats().size == 0


# -- the lease is spent whatever happens ----------------------------------------------------


@on_both_backends(mock_clock=True)
async def test_timed_out_lease_is_spent() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    lease = pool.acquire(timeout=0.05)
    with pytest.raises(PoolExhaustedError):
        await lease
    with pytest.raises(PoolError, match="already used"):
        await lease
    _assert_clean(pool, in_use=1)
    await pool.release(held)


@on_both_backends(mock_clock=True)
async def test_cancelled_async_with_lease_is_spent() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    lease = pool.acquire()
    with anyio.move_on_after(0.05):
        async with lease:
            pytest.fail("acquired an object that is held")  # pragma: no cover
    with pytest.raises(PoolError, match="already used"):
        async with lease:
            pass  # pragma: no cover
    _assert_clean(pool, in_use=1)
    await pool.release(held)
