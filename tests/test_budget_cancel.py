"""Cancellation and timeout twins: a waiter that gives up leaves nothing behind."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from memwarden.budget import Allocation, MemoryManager
from memwarden.errors import AllocationTimeoutError
from memwarden.testing import ManualClock


async def _waiting(manager: MemoryManager, count: int) -> None:
    while manager.waiters < count:
        await wait_all_tasks_blocked()
    assert manager.waiters == count


def _assert_clean(manager: MemoryManager, usage: int) -> None:
    """No waiter queued, no stray key or queue left, and exactly ``usage`` bytes held."""
    stats = manager.get_stats()
    assert (stats.waiters, stats.current_usage) == (0, usage)
    ledger = manager._ledger
    assert ledger.queued() == []
    assert ledger._queues == {} and ledger._order == []
    assert all(request._state == 2 for request in ledger._keys.values())


async def _cancelled_while_waiting(manager: MemoryManager, enter: Any) -> None:
    """Start ``enter`` in a scope, let it queue, cancel it, and return."""
    scope = anyio.CancelScope()
    queued = manager.waiters

    async def run() -> None:
        with scope:
            await enter()
        assert scope.cancelled_caught

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await _waiting(manager, queued + 1)
        scope.cancel()


async def test_cancelled_acquire_leaves_nothing() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    await _cancelled_while_waiting(manager, functools.partial(manager.acquire, 60, key="k"))
    _assert_clean(manager, 100)
    assert manager.get_stats().cancelled == 1
    blocker.release()
    again = await manager.acquire(60, key="k")  # the key was freed too
    assert again.key == "k"


async def test_cancelled_reserve_entry_leaves_nothing() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)

    async def enter() -> None:
        async with manager.reserve(60):
            pytest.fail("should not get the bytes")

    await _cancelled_while_waiting(manager, enter)
    _assert_clean(manager, 100)
    blocker.release()
    _assert_clean(manager, 0)


async def test_cancelled_inside_reserve_block_releases() -> None:
    manager = MemoryManager(100)
    entered = anyio.Event()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def hold() -> None:
                async with manager.reserve(70):
                    entered.set()
                    await anyio.sleep_forever()

            group.start_soon(hold)
            await entered.wait()
            assert manager.current_usage == 70
            scope.cancel()
    _assert_clean(manager, 0)


async def test_already_cancelled_scope_does_not_queue() -> None:
    manager = MemoryManager(10)
    blocker = await manager.acquire(10)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.acquire(5)
    assert scope.cancelled_caught
    _assert_clean(manager, 10)
    blocker.release()


async def test_grant_racing_cancellation_is_handed_to_the_next_waiter() -> None:
    # asyncio delivers task.cancel() even after the awaited event was set: the
    # waiter is granted, then raises CancelledError before it resumes.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    got: list[str] = []

    async def second() -> None:
        allocation = await manager.acquire(100)
        got.append("second")
        allocation.release()

    first = asyncio.create_task(manager.acquire(100))
    await _waiting(manager, 1)
    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await _waiting(manager, 2)
        blocker.release()  # grants `first` (its bytes are taken) ...
        assert manager.waiters == 1 and manager.current_usage == 100
        first.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await first
    assert got == ["second"]
    _assert_clean(manager, 0)
    stats = manager.get_stats()
    assert (stats.cancelled, stats.granted) == (1, 3)


async def test_grant_racing_a_scope_cancel_is_kept_and_released() -> None:
    # anyio (like trio) lets a grant that already happened win over a later
    # cancel: acquire returns, and the block's exit gives the bytes back.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()
    got: list[str] = []

    async def first() -> None:
        with scope:
            async with manager.reserve(100):
                got.append("first")
                await anyio.lowlevel.checkpoint()
                got.append("not reached")

    async def second() -> None:
        async with manager.reserve(100):
            got.append("second")

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await _waiting(manager, 1)
        group.start_soon(second)
        await _waiting(manager, 2)
        blocker.release()
        scope.cancel()
    assert got == ["first", "second"]
    _assert_clean(manager, 0)


async def test_cancelling_many_waiters_leaks_nothing() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    for _ in range(3):  # repeated rounds: internal tables must not grow
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(
                        functools.partial(manager.acquire, 1 + index, priority=index % 5)
                    )
                await _waiting(manager, 50)
                scope.cancel()
        _assert_clean(manager, 100)
    assert manager.get_stats().cancelled == 150
    blocker.release()


async def test_timeout_twin_acquire(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock, sleep=clock.sleep)
    blocker = await manager.acquire(100)
    async with anyio.create_task_group() as group:

        async def doomed() -> None:
            with pytest.raises(AllocationTimeoutError):
                await manager.acquire(10, key="t", timeout=3)

        group.start_soon(doomed)
        await clock.advance_when_parked(3)
    _assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 1
    blocker.release()
    assert (await manager.acquire(10, key="t")).key == "t"


async def test_timeout_twin_reserve(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock, sleep=clock.sleep)
    blocker = await manager.acquire(100)
    async with anyio.create_task_group() as group:

        async def doomed() -> None:
            with pytest.raises(AllocationTimeoutError, match="timeout=3"):
                async with manager.reserve(10, timeout=3):
                    pytest.fail("should not get the bytes")

        group.start_soon(doomed)
        await clock.advance_when_parked(3)
    _assert_clean(manager, 100)
    blocker.release()


async def test_outer_cancel_during_a_manual_clock_timeout(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock, sleep=clock.sleep)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()

    async def waiter() -> None:
        with scope:
            await manager.acquire(10, timeout=60)

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await clock.wait_for_sleepers(1)
        scope.cancel()
    assert scope.cancelled_caught
    _assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 0
    assert clock.sleepers == 0
    blocker.release()


async def test_outer_deadline_shorter_than_timeout() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    with anyio.move_on_after(0.01) as scope:
        await manager.acquire(10, timeout=60)
    assert scope.cancelled_caught
    _assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 0
    blocker.release()


async def test_cancelled_head_with_timeout_serves_the_rest(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock, sleep=clock.sleep)
    half = await manager.acquire(50)
    got: list[Allocation] = []

    async def big() -> None:
        with pytest.raises(AllocationTimeoutError):
            await manager.acquire(90, timeout=1)

    async def small() -> None:
        got.append(await manager.acquire(30))

    async with anyio.create_task_group() as group:
        group.start_soon(big)
        await _waiting(manager, 1)
        group.start_soon(small)
        await _waiting(manager, 2)
        assert got == []
        await clock.advance_when_parked(1)
    assert [a.nbytes for a in got] == [30]
    _assert_clean(manager, 80)
    half.release()


async def test_allocate_cancelled_during_optimize_holds_nothing() -> None:
    manager = MemoryManager(100)
    await manager.acquire(100, key="full")
    started = anyio.Event()

    async def slow_cleanup() -> int:
        started.set()
        await anyio.sleep_forever()
        return 0

    manager.register_cleanup_callback(slow_cleanup)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(manager.allocate, "wanted", 10)
            await started.wait()
            scope.cancel()
    _assert_clean(manager, 100)
    assert manager.release("wanted") is False
