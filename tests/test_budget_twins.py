"""Every waiting entry of the budget, cancelled, timed out and raced, on asyncio and trio.

The entries are ``await acquire()``, ``async with reserve()`` and a reservation
entered by hand (``await reservation.__aenter__()``). For each: a waiter that is
cancelled or times out leaves nothing (no waiter queued, no bytes held, no key
kept); a grant that races the cancellation goes to the next waiter; a grant
that races the timeout is kept. And acquiring is a checkpoint unless the
budget was made with ``fast_acquire=True``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from test_budget_support import assert_clean, block_loop_for, on_both_backends, waiting

from memwarden.budget import Allocation, MemoryManager
from memwarden.errors import AllocationTimeoutError

Hold = Callable[[Allocation], Awaitable[None]]


async def _via_acquire(manager: MemoryManager, nbytes: int, hold: Hold, **kw: Any) -> None:
    allocation = await manager.acquire(nbytes, **kw)
    try:
        await hold(allocation)
    finally:
        allocation.release()


async def _via_reserve(manager: MemoryManager, nbytes: int, hold: Hold, **kw: Any) -> None:
    async with manager.reserve(nbytes, **kw) as allocation:
        await hold(allocation)


async def _via_aenter(manager: MemoryManager, nbytes: int, hold: Hold, **kw: Any) -> None:
    reservation = manager.reserve(nbytes, **kw)
    allocation = await reservation.__aenter__()
    try:
        await hold(allocation)
    finally:
        await reservation.__aexit__(None, None, None)


ENTRIES = pytest.mark.parametrize(
    "enter", [_via_acquire, _via_reserve, _via_aenter], ids=["acquire", "reserve", "aenter"]
)
FAST = pytest.mark.parametrize("fast_acquire", [False, True], ids=["checkpoint", "fast"])


async def _nothing(allocation: Allocation) -> None:
    pass


# ----------------------------------------------------------------- cancelled


@ENTRIES
@FAST
@on_both_backends
async def test_cancelled_waiter_leaves_nothing(enter: Any, fast_acquire: bool) -> None:
    manager = MemoryManager(100, fast_acquire=fast_acquire)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()

    async def doomed() -> None:
        with scope:
            await enter(manager, 60, _nothing, key="k")
            pytest.fail("should not get the bytes")

    async with anyio.create_task_group() as group:
        group.start_soon(doomed)
        await waiting(manager, 1)
        scope.cancel()
    assert scope.cancelled_caught
    assert_clean(manager, 100)
    assert manager.get_stats().cancelled == 1
    blocker.release()
    assert (await manager.acquire(60, key="k")).key == "k"  # the key was freed too


@ENTRIES
@on_both_backends
async def test_cancelled_head_serves_the_next_waiter(enter: Any) -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    scope = anyio.CancelScope()
    served: list[int] = []

    async def head() -> None:
        with scope:
            await enter(manager, 80, _nothing)

    async def note(allocation: Allocation) -> None:
        served.append(allocation.nbytes)

    async with anyio.create_task_group() as group:
        group.start_soon(head)
        await waiting(manager, 1)
        group.start_soon(enter, manager, 40, note)
        await waiting(manager, 2)
        scope.cancel()
    assert served == [40]
    assert_clean(manager, 50)
    half.release()


@ENTRIES
@on_both_backends
async def test_grant_racing_cancellation_goes_to_the_next_waiter(enter: Any) -> None:
    # Another thread grants the head while this loop is busy; before the head
    # resumes, its scope is cancelled. It leaves with Cancelled and hands the
    # bytes it was granted to the next waiter.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()
    served: list[str] = []

    async def note(allocation: Allocation) -> None:
        served.append(allocation.key)

    async def head() -> None:
        with scope:
            await enter(manager, 100, note, key="head")
        assert scope.cancelled_caught

    async with anyio.create_task_group() as group:
        group.start_soon(head)
        await waiting(manager, 1)
        group.start_soon(functools.partial(enter, manager, 100, note, key="next"))
        await waiting(manager, 2)
        worker = threading.Thread(target=blocker.release)
        worker.start()
        worker.join()  # the loop stays blocked: the head's wake-up is queued, not run
        assert manager.waiters == 1 and manager.current_usage == 100  # granted to the head
        scope.cancel()
    assert served == ["next"]
    assert_clean(manager, 0)
    stats = manager.get_stats()
    assert (stats.cancelled, stats.granted) == (1, 3)


@ENTRIES
@on_both_backends
async def test_grant_before_a_scope_cancel_is_kept_then_released(enter: Any) -> None:
    # Granted on this thread, the head is woken at once; a cancel that comes
    # later does not undo the grant (as in anyio and trio): the entry returns
    # and the bytes are released on the way out.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    scope = anyio.CancelScope()
    served: list[str] = []

    async def note(allocation: Allocation) -> None:
        served.append(allocation.key)
        await anyio.lowlevel.checkpoint()  # the cancel lands here, while held

    async def head() -> None:
        with scope:
            await enter(manager, 100, note, key="head")

    async with anyio.create_task_group() as group:
        group.start_soon(head)
        await waiting(manager, 1)
        group.start_soon(functools.partial(enter, manager, 100, note, key="next"))
        await waiting(manager, 2)
        blocker.release()
        scope.cancel()
    assert served == ["head", "next"]
    assert_clean(manager, 0)


@ENTRIES
@on_both_backends
async def test_outer_deadline_shorter_than_the_timeout(enter: Any) -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    with anyio.move_on_after(0.02) as scope:
        await enter(manager, 10, _nothing, timeout=60)
    assert scope.cancelled_caught
    assert_clean(manager, 100)
    stats = manager.get_stats()
    # A cancellation, not a timeout; on a starved machine the deadline may
    # even pass at the entry's checkpoint, before it ever queued.
    assert stats.timeouts == 0 and stats.cancelled <= 1
    blocker.release()


# ------------------------------------------------------------------ timeouts


@ENTRIES
@on_both_backends(mock_clock=True)
async def test_timed_out_waiter_leaves_nothing(enter: Any) -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    start = anyio.current_time()
    with pytest.raises(AllocationTimeoutError, match=r"nbytes=10.*timeout=0.02") as info:
        await enter(manager, 10, _nothing, key="t", timeout=0.02)
    assert isinstance(info.value, TimeoutError)
    assert anyio.current_time() - start >= 0.019
    assert_clean(manager, 100)
    assert manager.get_stats().timeouts == 1
    blocker.release()
    assert (await manager.acquire(10, key="t")).key == "t"


@ENTRIES
@on_both_backends(mock_clock=True)
async def test_timed_out_head_serves_the_rest(enter: Any) -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    served: list[int] = []

    async def big() -> None:
        # Long enough (on asyncio's real clock) for `small` to queue behind it first.
        with pytest.raises(AllocationTimeoutError):
            await enter(manager, 90, _nothing, timeout=0.2)

    async def note(allocation: Allocation) -> None:
        served.append(allocation.nbytes)

    async with anyio.create_task_group() as group:
        group.start_soon(big)
        await waiting(manager, 1)
        group.start_soon(enter, manager, 30, note)
        await waiting(manager, 2)
        assert served == []
    assert served == [30]
    assert_clean(manager, 50)
    half.release()


@ENTRIES
@on_both_backends(mock_clock=True)
async def test_grant_racing_the_timeout_is_kept(enter: Any) -> None:
    # The wake-up (queued by another thread) and the deadline are both due
    # when the loop next runs: whichever it sees first, the grant stands.
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    served: list[int] = []

    async def note(allocation: Allocation) -> None:
        served.append(allocation.nbytes)

    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(enter, manager, 50, note, timeout=0.2))
        await waiting(manager, 1)
        worker = threading.Thread(target=blocker.release)
        worker.start()
        worker.join()
        block_loop_for(0.25)
    assert served == [50]
    assert_clean(manager, 0)
    stats = manager.get_stats()
    assert (stats.timeouts, stats.cancelled, stats.granted) == (0, 0, 2)


@ENTRIES
@on_both_backends
async def test_zero_timeout_grants_now_or_fails_without_queueing(enter: Any) -> None:
    manager = MemoryManager(100)
    served: list[int] = []

    async def note(allocation: Allocation) -> None:
        served.append(allocation.nbytes)

    await enter(manager, 100, note, timeout=0)
    blocker = await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError, match="timeout=0"):
        await enter(manager, 1, note, timeout=0)
    assert served == [100]
    assert manager.get_stats().waiters_peak == 0
    assert_clean(manager, 100)
    blocker.release()


# --------------------------------------------------------------- checkpoints


@ENTRIES
@on_both_backends
async def test_entry_in_a_cancelled_scope_raises_even_when_bytes_are_free(enter: Any) -> None:
    manager = MemoryManager(100)
    served: list[int] = []

    async def note(allocation: Allocation) -> None:
        served.append(allocation.nbytes)

    with anyio.CancelScope() as scope:
        scope.cancel()
        await enter(manager, 10, note)
    assert scope.cancelled_caught
    assert served == []
    assert_clean(manager, 0)
    # As in trio's _sync.py the checkpoint follows the grant: a grant made
    # inside a cancelled scope is handed back through the ledger at once.
    stats = manager.get_stats()
    assert stats.granted == stats.cancelled


@ENTRIES
@on_both_backends
async def test_uncontended_entry_lets_other_tasks_run(enter: Any) -> None:
    manager = MemoryManager(100)
    turns = [0]

    async def spin() -> None:
        while True:
            turns[0] += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(spin)
        for _ in range(10):
            await enter(manager, 10, _nothing)
        assert turns[0] > 0  # the other task ran during acquisitions that fit at once
        group.cancel_scope.cancel()
    assert_clean(manager, 0)


@ENTRIES
@on_both_backends
async def test_fast_acquire_does_not_yield_when_it_fits(enter: Any) -> None:
    manager = MemoryManager(100, fast_acquire=True)
    turns = [0]

    async def spin() -> None:
        while True:
            turns[0] += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(spin)
        for _ in range(10):
            await enter(manager, 10, _nothing)
        assert turns[0] == 0  # like asyncio.Semaphore: no checkpoint when it fits
        group.cancel_scope.cancel()
    assert_clean(manager, 0)


@on_both_backends
async def test_fast_acquire_still_waits_fairly_when_contended() -> None:
    manager = MemoryManager(100, fast_acquire=True)
    blocker = await manager.acquire(100)
    order: list[str] = []

    async def take(name: str) -> None:
        async with manager.reserve(100):
            order.append(name)

    async with anyio.create_task_group() as group:
        for index, name in enumerate(["first", "second"]):
            group.start_soon(take, name)
            await waiting(manager, index + 1)
        assert manager.try_acquire(1) is None  # no barging past the queue
        blocker.release()
    assert order == ["first", "second"]
    assert_clean(manager, 0)


@on_both_backends
async def test_entering_an_acquired_allocation_holds_it_without_waiting() -> None:
    manager = MemoryManager(100)
    allocation = await manager.acquire(30)
    async with allocation as same:
        assert same is allocation and manager.current_usage == 30
    assert allocation.released
    with pytest.raises(RuntimeError, match="entered once"):
        async with allocation:
            pass
    assert_clean(manager, 0)
