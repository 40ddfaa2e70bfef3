"""A cancellation during a pool hook never loses a slot (asyncpg's pool under ``task.cancel()``).

A release cancelled while its async ``reset`` runs, or an acquire cancelled
while an expired idle object is being closed, must leave the object either
back in the pool or discarded with its slot freed: a ``max_size=1`` pool must
still lend an object afterwards. Raw asyncio cancellation (``task.cancel()``,
``asyncio.timeout``, ``asyncio.wait_for``) reaches through anyio's shield, so
it is tested next to anyio cancel scopes and trio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest
from test_pool_backends import assert_nothing_leaked, on_both_backends, wait_for_closes

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


def _slow_reset_pool() -> tuple[ObjectPool[list[int]], anyio.Event]:
    started = anyio.Event()

    async def reset(obj: list[int]) -> None:
        started.set()
        await anyio.sleep(0.2)

    return ObjectPool(Maker(), max_size=1, reset=reset), started


async def _still_lends(pool: ObjectPool[list[int]]) -> None:
    with anyio.fail_after(5):
        async with pool.acquire() as obj:
            assert isinstance(obj, list)
    assert_nothing_leaked(pool)


# -- release cancelled while reset runs ------------------------------------------------


async def test_task_cancel_during_reset_frees_the_slot() -> None:
    pool, started = _slow_reset_pool()
    obj = await pool.acquire()
    task = asyncio.create_task(pool.release(obj))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = pool.stats()
    assert (stats.size, stats.in_use) == (stats.idle, 0), stats
    await _still_lends(pool)


async def test_asyncio_timeout_during_reset_in_async_with_exit_frees_the_slot() -> None:
    pool, started = _slow_reset_pool()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            async with pool.acquire():
                pass  # the exit's reset outlasts the timeout
    assert started.is_set()
    await _still_lends(pool)


async def test_wait_for_during_reset_frees_the_slot() -> None:
    pool, started = _slow_reset_pool()
    obj = await pool.acquire()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.release(obj), 0.05)
    assert started.is_set()
    await _still_lends(pool)


@on_both_backends(mock_clock=True)
async def test_cancel_scope_during_reset_returns_the_object() -> None:
    """anyio's shield holds: the reset finishes and the object goes back to the pool."""
    pool, started = _slow_reset_pool()
    obj = await pool.acquire()
    with anyio.move_on_after(0.05):
        await pool.release(obj)
    assert started.is_set()
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use) == (1, 1, 0), stats
    await _still_lends(pool)


@on_both_backends(mock_clock=True)
async def test_cancelled_task_group_during_reset_returns_the_object() -> None:
    pool, started = _slow_reset_pool()
    async with anyio.create_task_group() as tg:

        async def user() -> None:
            async with pool.acquire():
                pass

        tg.start_soon(user)
        await started.wait()
        tg.cancel_scope.cancel()
    assert pool.stats().idle == 1
    await _still_lends(pool)


# -- acquire cancelled while an expired idle object is closed ---------------------------


def _expiring_pool(
    close: Callable[[list[int]], Awaitable[None]],
) -> tuple[ObjectPool[list[int]], ManualClock]:
    clock = ManualClock(0.0)
    pool = ObjectPool(Maker(), max_size=1, max_lifetime=10.0, close=close, clock=clock)
    return pool, clock


async def test_task_cancel_while_an_expired_object_closes_frees_the_slot() -> None:
    closing, closed = anyio.Event(), anyio.Event()

    async def close(obj: list[int]) -> None:
        closing.set()
        await anyio.sleep(0.2)
        closed.set()

    pool, clock = _expiring_pool(close)
    await pool.release(await pool.acquire())
    clock.advance(11.0)  # the idle object is past its lifetime

    async def take() -> list[int]:
        return await pool.acquire()

    task = asyncio.create_task(take())
    await closing.wait()
    task.cancel()
    try:
        obj = await task
    except asyncio.CancelledError:
        pass
    else:
        await pool.release(obj)  # the close ran in the background: the acquire finished
    stats = pool.stats()
    assert stats.pending == 0, stats
    await _still_lends(pool)
    await closed.wait()
    await wait_for_closes(pool)


@on_both_backends(mock_clock=True)
async def test_cancel_scope_while_an_expired_object_closes_frees_the_slot() -> None:
    closing, closed = anyio.Event(), anyio.Event()

    async def close(obj: list[int]) -> None:
        closing.set()
        await anyio.sleep(0.2)
        closed.set()

    pool, clock = _expiring_pool(close)
    await pool.release(await pool.acquire())
    clock.advance(11.0)
    async with anyio.create_task_group() as tg:

        async def user() -> None:
            async with pool.acquire():
                await anyio.sleep_forever()

        tg.start_soon(user)
        await closing.wait()
        tg.cancel_scope.cancel()
    assert pool.stats().pending == 0
    await _still_lends(pool)
    await closed.wait()
    await wait_for_closes(pool)
    assert pool.stats().closing == 0


# -- acquire cancelled at its checkpoint, after the core granted it ---------------------


async def test_task_cancel_at_the_acquire_checkpoint_gives_the_grant_back() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    obj = await pool.acquire()
    await pool.release(obj)

    async def take() -> list[int]:
        return await pool.acquire()

    task = asyncio.create_task(take())
    await asyncio.sleep(0)  # the task is granted the idle object, then yields
    assert pool.stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.acquired) == (1, 0, 1), stats
    await _still_lends(pool)


@on_both_backends(mock_clock=True)
async def test_cancelled_creation_grant_at_the_checkpoint_frees_the_slot() -> None:
    pool = ObjectPool(Maker(), max_size=1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await pool.acquire()  # granted a creation slot, cancelled at the checkpoint
    assert scope.cancelled_caught
    assert_nothing_leaked(pool)
    assert pool.stats().size == 0
    await _still_lends(pool)
