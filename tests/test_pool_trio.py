"""ObjectPool on trio: the same guarantees as on asyncio (the pool parks on a trio.Event).

Most pool tests run on both backends (``test_pool_backends.on_both_backends``);
these are written for trio alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from test_pool_backends import run, wait_for_closes

from memwarden.errors import PoolClosedError, PoolExhaustedError
from memwarden.pool import ObjectPool


def run_trio(fn: Callable[[], Awaitable[None]]) -> None:
    run("trio", fn, mock_clock=True)


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


def test_fifo_contention_on_trio() -> None:
    async def main() -> None:
        pool = ObjectPool(Maker(), max_size=2)
        order: list[int] = []

        async def worker(i: int) -> None:
            for _ in range(10):
                async with pool.acquire():
                    order.append(i)
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(worker, i)
        stats = pool.stats()
        assert stats.size == 2 and stats.in_use == 0 and stats.acquired == 60
        assert stats.waiters == 0 and stats.waiters_peak >= 3
        assert sorted(order) == sorted([i for i in range(6) for _ in range(10)])
        await pool.aclose()

    run_trio(main)


def test_cancelled_and_timed_out_acquires_on_trio() -> None:
    async def main() -> None:
        pool = ObjectPool(Maker(), max_size=1)
        held = await pool.acquire()
        with anyio.move_on_after(0):
            await pool.acquire()
        assert pool.stats().waiters == 0
        start = anyio.current_time()
        with pytest.raises(PoolExhaustedError):
            await pool.acquire(timeout=2.0)
        assert anyio.current_time() - start == pytest.approx(2.0)  # on the mock clock
        stats = pool.stats()
        assert (stats.waiters, stats.timeouts, stats.in_use) == (0, 1, 1)
        await pool.release(held)
        assert pool.stats().idle == 1

    run_trio(main)


def test_grant_racing_cancel_on_trio_leaks_nothing() -> None:
    async def main() -> None:
        pool = ObjectPool(Maker(), max_size=1, validate=lambda obj: True)
        held = await pool.acquire()
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def waiter() -> None:
                with scope:
                    obj = await pool.acquire()
                    await pool.release(obj)

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await pool.release(held)
            scope.cancel()
        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.waiters, stats.pending) == (1, 0, 0, 0)

    run_trio(main)


def test_hooks_and_aclose_on_trio() -> None:
    async def main() -> None:
        maker = Maker()
        resets: list[list[int]] = []

        async def reset(obj: list[int]) -> None:
            await anyio.lowlevel.checkpoint()
            resets.append(obj)

        pool = ObjectPool(maker, min_size=1, reset=reset, close=maker.close)
        async with pool:
            async with pool.acquire() as obj:
                pass
            assert resets == [obj]
            held = await pool.acquire()

            async def late_release() -> None:
                await anyio.lowlevel.checkpoint()
                await pool.release(held)

            async with anyio.create_task_group() as tg:
                tg.start_soon(late_release)
                await pool.aclose(timeout=10.0)
        await wait_for_closes(pool)
        assert maker.closed == [held]
        with pytest.raises(PoolClosedError):
            await pool.acquire()

    run_trio(main)
