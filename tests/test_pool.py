"""ObjectPool behaviour: acquire forms, sizing, FIFO hand-off, maintenance, stats, input checks."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from test_pool_backends import on_both_backends, wait_for_closes

from memwarden.errors import PoolClosedError, PoolError, PoolExhaustedError
from memwarden.pool import ObjectPool, PoolLease, PoolStats
from memwarden.testing import ManualClock


class Maker:
    """A factory of distinct, unhashable, equal-looking objects; records closes."""

    def __init__(self) -> None:
        self.made: list[list[int]] = []
        self.closed: list[list[int]] = []

    def __call__(self) -> list[int]:
        obj = [0]  # every object compares equal: the pool must use identity
        self.made.append(obj)
        return obj

    def close(self, obj: list[int]) -> None:
        self.closed.append(obj)


@on_both_backends(mock_clock=True)
async def test_await_and_async_with_forms() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=2)
    lease = pool.acquire()
    assert isinstance(lease, PoolLease)
    obj = await lease
    assert obj is maker.made[0]
    async with pool.acquire() as other:
        assert other is maker.made[1]
        assert pool.stats().in_use == 2
    await pool.release(obj)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.created, stats.acquired) == (2, 2, 0, 2, 2)
    assert stats.released == 2


@on_both_backends(mock_clock=True)
async def test_newest_idle_object_is_reused_first() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=3)
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    assert await pool.acquire() is b
    assert await pool.acquire() is a


@on_both_backends(mock_clock=True)
async def test_lease_cannot_be_entered_twice() -> None:
    pool = ObjectPool(Maker(), max_size=2)
    lease = pool.acquire()
    async with lease:
        with pytest.raises(PoolError, match="already used"):
            await lease.__aenter__()
    with pytest.raises(PoolError, match="already used"):
        await lease
    assert pool.stats().in_use == 0


@on_both_backends(mock_clock=True)
async def test_async_with_releases_when_body_raises() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    with pytest.raises(ZeroDivisionError):
        async with pool.acquire():
            raise ZeroDivisionError
    assert pool.stats().in_use == 0 and pool.stats().idle == 1


@on_both_backends(mock_clock=True)
async def test_waiters_are_served_fifo_by_direct_hand_off() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with pool.acquire():
            order.append(i)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(waiter, i)
            await anyio.wait_all_tasks_blocked()
        assert pool.stats().waiters == 5
        await pool.release(held)
    assert order == [0, 1, 2, 3, 4]
    assert pool.stats().waiters_peak == 5


@on_both_backends(mock_clock=True)
async def test_released_object_goes_to_the_waiter_not_a_newcomer() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    got: list[object] = []

    async def parked() -> None:
        got.append(await pool.acquire())

    async with anyio.create_task_group() as tg:
        tg.start_soon(parked)
        await anyio.wait_all_tasks_blocked()
        await pool.release(held)
        # The object now belongs to the parked task even though it has not run yet.
        assert pool.stats().idle == 0
        with anyio.move_on_after(0):
            await pool.acquire()
            pytest.fail("a newcomer overtook the parked waiter")
    assert got == [held]


@on_both_backends(mock_clock=True)
async def test_max_size_is_never_exceeded_under_load() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=3)
    peak = 0

    async def worker() -> None:
        nonlocal peak
        for _ in range(20):
            async with pool.acquire():
                peak = max(peak, pool.stats().in_use)
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(worker)
    stats = pool.stats()
    assert peak == 3 and stats.in_use_peak == 3 and len(maker.made) == 3
    assert stats.acquired == 200 and stats.released == 200 and stats.in_use == 0


@on_both_backends(mock_clock=True)
async def test_release_of_foreign_or_released_object_raises() -> None:
    pool = ObjectPool(Maker(), max_size=2)
    obj = await pool.acquire()
    with pytest.raises(PoolError, match="not acquired from this pool"):
        await pool.release([0])  # equal, but not the same object
    await pool.release(obj)
    with pytest.raises(PoolError, match="already released"):
        await pool.release(obj)
    assert pool.stats().idle == 1


@on_both_backends(mock_clock=True)
async def test_fill_creates_min_size_and_first_use_fills() -> None:
    maker = Maker()
    pool = ObjectPool(maker, min_size=3, max_size=5)
    assert pool.stats().size == 0
    async with pool.acquire():
        assert pool.stats().size == 3
    assert await pool.fill() == 0

    explicit = ObjectPool(Maker(), min_size=2, max_size=4)
    assert await explicit.fill() == 2
    assert explicit.stats().idle == 2


@on_both_backends(mock_clock=True)
async def test_pool_as_async_context_manager_fills_and_closes() -> None:
    maker = Maker()
    async with ObjectPool(maker, min_size=2, close=maker.close) as pool:
        assert pool.stats().idle == 2
    await wait_for_closes(pool)
    assert pool.closed and len(maker.closed) == 2


@on_both_backends(mock_clock=True)
async def test_trim_closes_coldest_idle_down_to_keep() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=5, min_size=1, close=maker.close)
    objs = [await pool.acquire() for _ in range(4)]
    for obj in objs[:3]:
        await pool.release(obj)
    assert await pool.trim(keep=3) == 1
    await wait_for_closes(pool)
    assert maker.closed == [objs[0]]
    assert await pool.trim() == 2  # default keep=min_size; the held object stays
    assert pool.stats().size == 1 and pool.stats().in_use == 1
    assert await pool.trim(keep=0) == 0
    stats = pool.stats()
    assert stats.destroyed == 3 and stats.created - stats.destroyed == stats.size


@pytest.mark.parametrize(("keep", "exc"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
@on_both_backends(mock_clock=True)
async def test_trim_rejects_bad_keep(keep: Any, exc: type[Exception]) -> None:
    pool = ObjectPool(Maker())
    with pytest.raises(exc, match="keep"):
        await pool.trim(keep)


@on_both_backends(mock_clock=True)
async def test_reap_closes_idle_objects_past_max_idle_time(clock: ManualClock) -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=4, min_size=1, max_idle_time=10.0, clock=clock)
    objs = [await pool.acquire() for _ in range(3)]
    for obj in objs:
        await pool.release(obj)
    clock.advance(5.0)
    assert await pool.reap() == 0
    clock.advance(5.0)
    assert await pool.reap() == 2  # min_size=1 stays
    assert pool.stats().size == 1


@on_both_backends(mock_clock=True)
async def test_max_lifetime_retires_objects_with_jitter(clock: ManualClock) -> None:
    maker = Maker()
    pool = ObjectPool(
        maker, max_size=4, max_lifetime=100.0, lifetime_jitter=0.1, clock=clock, close=maker.close
    )
    a = await pool.acquire()
    b = await pool.acquire()
    await pool.release(b)
    clock.advance(101.0)
    await pool.release(a)  # past its lifetime: closed instead of kept
    await wait_for_closes(pool)
    assert a in maker.closed
    c = await pool.acquire()  # b expired while idle: skipped and closed
    await wait_for_closes(pool)
    assert c is not b and b in maker.closed
    assert pool.stats().size == 1


@on_both_backends(mock_clock=True)
async def test_reap_refills_to_min_size_after_lifetime(clock: ManualClock) -> None:
    maker = Maker()
    pool = ObjectPool(maker, min_size=2, max_size=4, max_lifetime=50.0, clock=clock)
    await pool.fill()
    clock.advance(60.0)
    assert await pool.reap() == 2
    assert pool.stats().idle == 2 and len(maker.made) == 4


@on_both_backends(mock_clock=True)
async def test_leak_reported_once_with_acquiring_stack(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = ObjectPool(Maker(), leak_threshold=30.0, clock=clock, name="db")

    async def borrow_and_forget() -> list[int]:
        return await pool.acquire()

    obj = await borrow_and_forget()
    clock.advance(29.0)
    assert pool.stats().leaks_suspected == 0
    clock.advance(2.0)
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        assert pool.stats().leaks_suspected == 1
        assert await pool.reap() == 0
        assert pool.stats().leaks_suspected == 1  # reported once
    [record] = [r for r in caplog.records if "held for" in r.getMessage()]
    message = record.getMessage()
    assert "'db'" in message and "borrow_and_forget" in message and "31.000 s" in message
    await pool.release(obj)


@on_both_backends(mock_clock=True)
async def test_leak_found_at_release_when_nobody_looked(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = ObjectPool(Maker(), leak_threshold=1.0, clock=clock)
    obj = await pool.acquire()
    clock.advance(5.0)
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        await pool.release(obj)
    assert pool.stats().leaks_suspected == 1
    assert any("test_leak_found_at_release" in r.getMessage() for r in caplog.records)


@on_both_backends(mock_clock=True)
async def test_stats_wait_time_and_peaks(clock: ManualClock) -> None:
    pool = ObjectPool(Maker(), max_size=1, clock=clock, name="p")
    held = await pool.acquire()

    async def wait_for_one() -> None:
        async with pool.acquire():
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_one)
        await anyio.wait_all_tasks_blocked()
        clock.advance(2.5)
        await pool.release(held)
    stats = pool.stats()
    assert stats.wait_time_max == 2.5 and stats.wait_time_avg == 2.5
    assert stats.waiters_peak == 1 and stats.in_use_peak == 1
    data = stats.to_dict()
    assert data["wait_time_max"] == 2.5 and data["name"] == "p"
    expected = {"size", "idle", "in_use", "waiters", "created", "destroyed", "acquired"}
    assert expected | {"timeouts", "leaks_suspected", "in_use_peak", "waiters_peak"} <= set(data)
    assert isinstance(stats, PoolStats)


@on_both_backends(mock_clock=True)
async def test_acquire_after_close_raises_and_waiters_are_failed() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=1, close=maker.close)
    held = await pool.acquire()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await pool.acquire()
        except PoolClosedError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(pool.aclose)
        await anyio.wait_all_tasks_blocked()
        assert len(errors) == 1
        with pytest.raises(PoolClosedError):
            await pool.acquire()
        await pool.release(held)  # closed on return; aclose then finishes
    await wait_for_closes(pool)
    assert maker.closed == [held]
    await wait_for_closes(pool)
    assert pool.stats().closed and pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_aclose_force_closes_after_timeout() -> None:
    maker = Maker()
    pool = ObjectPool(maker, max_size=2, close=maker.close)
    held = await pool.acquire()
    await pool.aclose(timeout=0.05)
    await wait_for_closes(pool)
    assert maker.closed == [held]
    await pool.release(held)  # a late release of a force-closed object is a no-op
    assert pool.stats().size == 0 and pool.stats().in_use == 0
    await pool.aclose()  # idempotent


@on_both_backends(mock_clock=True)
async def test_concurrent_aclose_calls_all_wait() -> None:
    pool = ObjectPool(Maker())
    held = await pool.acquire()
    done: list[int] = []

    async def close(i: int) -> None:
        await pool.aclose(timeout=100.0)
        done.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(close, 1)
        tg.start_soon(close, 2)
        await anyio.wait_all_tasks_blocked()
        assert done == []
        await pool.release(held)
    assert sorted(done) == [1, 2]


def _bad_ctor_cases() -> list[tuple[dict[str, Any], type[Exception], str]]:
    return [
        ({"factory": 5}, TypeError, "factory"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": True}, TypeError, "max_size"),
        ({"max_size": 2.0}, TypeError, "max_size"),
        ({"min_size": -1}, ValueError, "min_size"),
        ({"min_size": 11}, ValueError, "min_size"),
        ({"acquire_timeout": -1}, ValueError, "acquire_timeout"),
        ({"acquire_timeout": math.nan}, ValueError, "acquire_timeout"),
        ({"max_idle_time": 0}, ValueError, "max_idle_time"),
        ({"max_lifetime": -5}, ValueError, "max_lifetime"),
        ({"max_lifetime": "1h"}, TypeError, "max_lifetime"),
        ({"leak_threshold": math.nan}, ValueError, "leak_threshold"),
        ({"lifetime_jitter": 1.5}, ValueError, "lifetime_jitter"),
        ({"validate": "yes"}, TypeError, "validate"),
        ({"reset": 1}, TypeError, "reset"),
        ({"close": 1}, TypeError, "close"),
        ({"creation_gate": 1}, TypeError, "creation_gate"),
        ({"hook_timeout": 0}, ValueError, "hook_timeout"),
        ({"hook_timeout": None}, TypeError, "hook_timeout"),
        ({"hook_timeout": math.inf}, ValueError, "hook_timeout"),
        ({"close_timeout": math.nan}, ValueError, "close_timeout"),
        ({"fast_acquire": 1}, TypeError, "fast_acquire"),
        ({"rng": 7}, TypeError, "rng"),
        ({"close_timeout": -1}, ValueError, "close_timeout"),
        ({"name": 3}, TypeError, "name"),
        ({"clock": None}, TypeError, "clock"),
    ]


@pytest.mark.parametrize(("kwargs", "exc", "argname"), _bad_ctor_cases())
def test_constructor_rejects_bad_input(
    kwargs: dict[str, Any], exc: type[Exception], argname: str
) -> None:
    factory = kwargs.pop("factory", Maker())
    with pytest.raises(exc) as info:
        ObjectPool(factory, **kwargs)
    message = str(info.value)
    assert argname in message
    shown = repr(next(iter(kwargs.values()))) if kwargs else repr(factory)
    assert shown in message or re.sub(r"\.0\b", "", shown) in message


@pytest.mark.parametrize(
    ("bad", "exc"), [(-1, ValueError), (math.nan, ValueError), ("1", TypeError)]
)
@on_both_backends(mock_clock=True)
async def test_acquire_rejects_bad_timeout(bad: Any, exc: type[Exception]) -> None:
    pool = ObjectPool(Maker())
    with pytest.raises(exc, match="timeout"):
        pool.acquire(timeout=bad)
    assert pool.stats().in_use == 0 and pool.stats().waiters == 0


@on_both_backends(mock_clock=True)
async def test_zero_timeout_fails_fast_when_exhausted() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    held = await pool.acquire()
    with pytest.raises(PoolExhaustedError, match="within 0 s"):
        await pool.acquire(timeout=0)
    assert pool.stats().timeouts == 1 and pool.stats().waiters == 0
    await pool.release(held)
    assert await pool.acquire(timeout=0) is held


@on_both_backends(mock_clock=True)
async def test_repr_and_properties() -> None:
    pool = ObjectPool(Maker(), max_size=3, min_size=1, name="conns")
    await wait_for_closes(pool)
    assert (pool.max_size, pool.min_size, pool.closed) == (3, 1, False)
    assert "conns" in repr(pool) and "size=0/3" in repr(pool)


@on_both_backends(mock_clock=True)
async def test_seed_004_acquire_release_usage() -> None:
    class Request:
        pass

    pool = ObjectPool(Request, max_size=100)
    obj = await pool.acquire()
    try:
        assert isinstance(obj, Request)
    finally:
        await pool.release(obj)
    assert pool.stats().idle == 1


@on_both_backends(mock_clock=True)
async def test_a_refused_argument_changes_nothing() -> None:
    pool = ObjectPool(Maker(), max_size=2)
    obj = await pool.acquire()
    before = pool.stats()
    with pytest.raises(ValueError, match=r"timeout.*-1"):
        pool.acquire(timeout=-1)
    with pytest.raises(ValueError, match=r"keep.*-1"):
        await pool.trim(-1)
    with pytest.raises(TypeError, match=r"timeout.*'soon'"):
        await pool.aclose(timeout="soon")  # type: ignore[arg-type]
    assert pool.stats() == before and not pool.closed
    await pool.release(obj)
    await pool.aclose()


def test_sleep_is_refused_as_a_timer_and_warned_about() -> None:
    """Timeouts always run on the event loop's clock; ``sleep=`` is ignored, loudly."""
    with pytest.warns(DeprecationWarning, match="sleep"):
        ObjectPool(Maker(), sleep=lambda s: None)
