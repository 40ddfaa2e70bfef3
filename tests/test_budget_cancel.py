"""Cancellation and timeout twins: a waiter that gives up leaves nothing behind.

Every test runs under asyncio and trio except the one about asyncio's own
``task.cancel()``; ``test_budget_twins`` covers each waiting entry the same way.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import anyio
import pytest
from test_budget_support import assert_clean, on_both_backends, waiting

from memwarden.budget import Allocation, MemoryManager
from memwarden.errors import AllocationTimeoutError


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
        await waiting(manager, queued + 1)
        scope.cancel()


@on_both_backends
async def test_cancelled_acquire_leaves_nothing() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    await _cancelled_while_waiting(manager, functools.partial(manager.acquire, 60, key="k"))
    assert_clean(manager, 100)
    assert manager.get_stats().cancelled == 1
    blocker.release()
    again = await manager.acquire(60, key="k")  # the key was freed too
    assert again.key == "k"


@on_both_backends
async def test_cancelled_reserve_entry_leaves_nothing() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)

    async def enter() -> None:
        async with manager.reserve(60):
            pytest.fail("should not get the bytes")

    await _cancelled_while_waiting(manager, enter)
    assert_clean(manager, 100)
    blocker.release()
    assert_clean(manager, 0)


@on_both_backends
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
    assert_clean(manager, 0)


@on_both_backends
async def test_already_cancelled_scope_does_not_queue() -> None:
    manager = MemoryManager(10)
    blocker = await manager.acquire(10)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.acquire(5)
    assert scope.cancelled_caught
    assert_clean(manager, 10)
    blocker.release()


async def test_asyncio_task_cancel_racing_a_grant_hands_it_to_the_next_waiter() -> None:
    # asyncio only (pytest-asyncio): task.cancel() is delivered even after the
    # awaited future was resolved, so the waiter is granted, then raises
    # CancelledError before it resumes. test_budget_twins races a grant from
    # another thread against a cancel scope on both backends.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    got: list[str] = []

    async def second() -> None:
        allocation = await manager.acquire(100)
        got.append("second")
        allocation.release()

    first = asyncio.create_task(manager.acquire(100))
    await waiting(manager, 1)
    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await waiting(manager, 2)
        blocker.release()  # grants `first` (its bytes are taken) ...
        assert manager.waiters == 1 and manager.current_usage == 100
        first.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await first
    assert got == ["second"]
    assert_clean(manager, 0)
    stats = manager.get_stats()
    assert (stats.cancelled, stats.granted) == (1, 3)


@on_both_backends
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
        await waiting(manager, 1)
        group.start_soon(second)
        await waiting(manager, 2)
        blocker.release()
        scope.cancel()
    assert got == ["first", "second"]
    assert_clean(manager, 0)


@on_both_backends
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
                await waiting(manager, 50)
                scope.cancel()
        assert_clean(manager, 100)
    assert manager.get_stats().cancelled == 150
    blocker.release()


@on_both_backends(mock_clock=True)
async def test_timeout_twin_acquire() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(10, key="t", timeout=0.02)
    assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 1
    blocker.release()
    assert (await manager.acquire(10, key="t")).key == "t"


@on_both_backends(mock_clock=True)
async def test_timeout_twin_reserve() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError, match=r"timeout=0\.02"):
        async with manager.reserve(10, timeout=0.02):
            pytest.fail("should not get the bytes")
    assert_clean(manager, 100)
    blocker.release()


@on_both_backends
async def test_outer_cancel_during_a_timeout_is_a_cancellation() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()

    async def waiter() -> None:
        with scope:
            await manager.acquire(10, timeout=60)

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await waiting(manager, 1)
        scope.cancel()
    assert scope.cancelled_caught
    assert_clean(manager, 100)
    stats = manager.get_stats()
    assert (stats.timeouts, stats.cancelled) == (0, 1)
    blocker.release()


@on_both_backends
async def test_outer_deadline_shorter_than_timeout() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    with anyio.move_on_after(0.01) as scope:
        await manager.acquire(10, timeout=60)
    assert scope.cancelled_caught
    assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 0
    blocker.release()


@on_both_backends(mock_clock=True)
async def test_timed_out_head_serves_the_rest() -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    got: list[Allocation] = []

    async def big() -> None:
        # Long enough (on asyncio's real clock) for `small` to queue behind it first.
        with pytest.raises(AllocationTimeoutError):
            await manager.acquire(90, timeout=0.2)

    async def small() -> None:
        got.append(await manager.acquire(30))

    async with anyio.create_task_group() as group:
        group.start_soon(big)
        await waiting(manager, 1)
        group.start_soon(small)
        await waiting(manager, 2)
        assert got == []
    assert [a.nbytes for a in got] == [30]
    assert_clean(manager, 80)
    half.release()


@on_both_backends
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
    assert_clean(manager, 100)
    assert manager.release("wanted") is False
