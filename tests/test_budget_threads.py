"""Releases and non-waiting grants from real threads, and waiters on several event loops.

The async tests run with the test's own loop on asyncio and on trio.
"""

from __future__ import annotations

import random
import threading

import anyio
import anyio.to_thread
import pytest
import trio
from test_budget_support import on_both_backends, waiting

from memwarden.budget import Allocation, MemoryManager, Priority


@on_both_backends
async def test_release_from_a_worker_thread_wakes_the_waiter() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    got: list[Allocation] = []
    async with anyio.create_task_group() as group:

        async def take() -> None:
            got.append(await manager.acquire(80))

        group.start_soon(take)
        await waiting(manager, 1)
        assert await anyio.to_thread.run_sync(blocker.release) is True
    assert [a.nbytes for a in got] == [80]
    assert manager.current_usage == 80


@on_both_backends
async def test_releasing_thread_never_blocks_on_the_event_loop() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    got: list[Allocation] = []
    async with anyio.create_task_group() as group:

        async def take() -> None:
            got.append(await manager.acquire(100))

        group.start_soon(take)
        await waiting(manager, 1)
        # Block the loop thread while another thread releases: a release that
        # needed the loop to run (a blocking call into it) would deadlock here.
        worker = threading.Thread(target=blocker.release)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive()
        assert manager.waiters == 0 and manager.current_usage == 100  # granted already
    assert len(got) == 1


@on_both_backends
async def test_threads_and_tasks_hammer_one_budget() -> None:
    manager = MemoryManager(12)
    successes = [0]
    lock = threading.Lock()

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(1500):
            allocation = manager.try_acquire(rng.randint(0, 4), priority=rng.choice((0, 50, 100)))
            if allocation is not None:
                with lock:
                    successes[0] += 1
                assert manager.release(allocation) is True
                assert allocation.release() is False

    async def task_loop(size: int) -> None:
        for _ in range(40):
            async with manager.reserve(size):
                await anyio.lowlevel.checkpoint()

    threads = [threading.Thread(target=churn, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    async with anyio.create_task_group() as group:
        for index in range(16):
            group.start_soon(task_loop, 1 + index % 6)
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join)
    stats = manager.get_stats()
    assert (stats.current_usage, stats.waiters, stats.allocations) == (0, 0, 0)
    assert stats.granted == successes[0] + 16 * 40
    assert stats.peak_usage <= 12


@on_both_backends
async def test_waiters_on_other_event_loops_are_woken() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run_loop(backend: str, size: int) -> None:
        async def take() -> None:
            allocation = await manager.acquire(size)
            results[backend] = allocation.nbytes
            allocation.release()

        try:
            anyio.run(take, backend=backend)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=run_loop, args=("asyncio", 60)),
        threading.Thread(target=run_loop, args=("trio", 70)),
    ]
    for thread in threads:
        thread.start()
    with anyio.fail_after(30):
        while manager.waiters < 2:  # spin on checkpoints: the waiters live on other loops
            await anyio.lowlevel.checkpoint()
    blocker.release()  # from this loop's thread to two other loops
    for thread in threads:
        await anyio.to_thread.run_sync(thread.join, 30)
    assert not errors
    assert results == {"asyncio": 60, "trio": 70}
    assert manager.current_usage == 0 and manager.waiters == 0


@on_both_backends
async def test_eviction_from_a_thread_runs_async_on_evict_on_its_loop() -> None:
    manager = MemoryManager(100)
    called = anyio.Event()
    seen: list[tuple[str, int]] = []
    loop_thread = threading.get_ident()

    async def on_evict(allocation: Allocation) -> None:
        seen.append((allocation.key, threading.get_ident()))
        called.set()

    await manager.acquire(
        100, key="cheap", priority=Priority.LOW, evictable=True, on_evict=on_evict
    )
    granted = await anyio.to_thread.run_sync(manager.try_acquire, 100)
    assert granted is not None
    with anyio.fail_after(10):
        await called.wait()
    assert seen == [("cheap", loop_thread)]


def test_try_acquire_and_release_without_any_event_loop() -> None:
    manager = MemoryManager(10)
    first = manager.try_acquire(6)
    assert first is not None
    assert manager.try_acquire(6) is None
    assert manager.release(first)
    assert manager.try_acquire(10) is not None


def test_async_on_evict_without_a_loop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryManager(10)

    async def on_evict(allocation: Allocation) -> None:
        raise AssertionError("never run")

    manager.try_acquire(10, priority=0, evictable=True, on_evict=on_evict)
    assert manager.try_acquire(10, priority=1) is not None
    assert "not run" in caplog.text


def test_trio_waiter_woken_from_a_plain_thread() -> None:
    manager = MemoryManager(10)
    blocker = manager.try_acquire(10)
    assert blocker is not None

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            got: list[int] = []

            async def take() -> None:
                got.append((await manager.acquire(10)).nbytes)

            nursery.start_soon(take)
            while manager.waiters < 1:
                await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(blocker.release)
        return got[0]

    assert trio.run(main) == 10
