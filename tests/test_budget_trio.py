"""The budget on trio: waiting, fairness, cancellation, timeouts and async callbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from memwarden.budget import Allocation, MemoryManager, Priority
from memwarden.errors import AllocationTimeoutError


def _run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main)


async def _waiting(manager: MemoryManager, count: int) -> None:
    while manager.waiters < count:
        await trio.testing.wait_all_tasks_blocked()
    assert manager.waiters == count


def _assert_clean(manager: MemoryManager, usage: int) -> None:
    stats = manager.get_stats()
    assert (stats.waiters, stats.current_usage) == (0, usage)
    assert manager._ledger.queued() == []


def test_fast_path_reserve_and_release() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        async with manager.reserve(60) as allocation:
            assert manager.current_usage == 60 and allocation.nbytes == 60
        allocation2 = await manager.acquire(100)
        assert manager.try_acquire(1) is None
        allocation2.release()
        _assert_clean(manager, 0)

    _run(main)


def test_waiters_are_served_by_priority_then_fifo() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        blocker = await manager.acquire(100)
        granted: list[str] = []

        async def take(name: str, priority: int) -> None:
            allocation = await manager.acquire(100, priority=priority)
            granted.append(name)
            await trio.lowlevel.checkpoint()
            allocation.release()

        async with trio.open_nursery() as nursery:
            plan = [("low", Priority.LOW), ("n1", Priority.NORMAL), ("high", Priority.HIGH)]
            plan.append(("n2", Priority.NORMAL))
            for index, (name, priority) in enumerate(plan):
                nursery.start_soon(take, name, priority)
                await _waiting(manager, index + 1)
            blocker.release()
        assert granted == ["high", "n1", "n2", "low"]
        _assert_clean(manager, 0)

    _run(main)


def test_cancelled_waiter_leaves_nothing() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        blocker = await manager.acquire(100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.acquire, 50)
            nursery.start_soon(manager.acquire, 20)
            await _waiting(manager, 2)
            nursery.cancel_scope.cancel()
        _assert_clean(manager, 100)
        assert manager.get_stats().cancelled == 2
        blocker.release()
        _assert_clean(manager, 0)

    _run(main)


def test_grant_then_cancel_is_released_on_exit() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        blocker = await manager.acquire(100)
        entered: list[str] = []

        async def hold() -> None:
            async with manager.reserve(100):
                entered.append("in")
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await _waiting(manager, 1)
            blocker.release()  # granted ...
            nursery.cancel_scope.cancel()  # ... and cancelled before it resumed
        _assert_clean(manager, 0)
        assert entered in ([], ["in"])

    _run(main)


def test_timeout_on_the_trio_clock() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        await manager.acquire(100)
        with pytest.raises(AllocationTimeoutError):
            await manager.acquire(10, timeout=0.01)
        _assert_clean(manager, 100)
        assert manager.get_stats().timeouts == 1

    _run(main)


def test_timeout_on_a_mock_clock() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        await manager.acquire(100)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def doomed() -> None:
                with pytest.raises(AllocationTimeoutError):
                    async with manager.reserve(10, timeout=2):
                        pytest.fail("should not get the bytes")

            nursery.start_soon(doomed)
        assert trio.current_time() - start == 2  # the clock jumped straight to the deadline
        _assert_clean(manager, 100)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_async_on_evict_runs_as_a_background_task() -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        done = trio.Event()
        seen: list[Allocation] = []

        async def on_evict(allocation: Allocation) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(allocation)
            done.set()

        victim = await manager.acquire(100, priority=0, evictable=True, on_evict=on_evict)
        await manager.acquire(100)
        with trio.fail_after(10):
            await done.wait()
        assert seen == [victim]

    _run(main)


def test_async_on_evict_failure_does_not_crash_the_run(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        manager = MemoryManager(100)
        done = trio.Event()

        async def on_evict(allocation: Allocation) -> None:
            done.set()
            raise RuntimeError("trio callback failed")

        await manager.acquire(100, priority=0, evictable=True, on_evict=on_evict)
        await manager.acquire(100)
        with trio.fail_after(10):
            await done.wait()
        await trio.testing.wait_all_tasks_blocked()

    _run(main)
    assert "trio callback failed" in caplog.text
