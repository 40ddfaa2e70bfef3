"""Running pool tests under asyncio and trio, and one pool moving between them.

``on_both_backends`` (from ``both_backends``) turns an ``async def`` test into a
synchronous test run once per backend; under trio it can run on
``trio.testing.MockClock(autojump_threshold=0)``, so timeouts are instant and
exact. The other pool test modules import it from here.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
from both_backends import BACKENDS, on_both_backends, run

from memwarden.pool import ObjectPool

__all__ = ["BACKENDS", "on_both_backends", "run"]


async def wait_for_waiters(pool: ObjectPool[Any], n: int) -> None:
    """Yield until ``n`` acquires are parked on ``pool``."""
    while pool.stats().waiters != n:
        await anyio.lowlevel.checkpoint()


async def wait_for_closes(pool: ObjectPool[Any]) -> None:
    """Let ready tasks run until no close hook is left in the background.

    Call it once the hooks have returned (wait on an event they set first).
    """
    for _ in range(100):
        if not pool.stats().closing:
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"background closes did not finish: {pool.stats()}")


def assert_nothing_leaked(pool: ObjectPool[Any], *, in_use: int = 0) -> None:
    """No waiter, no pending creation, nothing stuck mid-hook, sizes consistent."""
    stats = pool.stats()
    assert stats.waiters == 0, stats
    assert stats.pending == 0, stats
    assert stats.in_use == in_use, stats
    assert stats.size == stats.idle + stats.in_use, stats  # nothing checking or returning
    assert stats.created - stats.destroyed == stats.size, stats


def test_one_pool_under_asyncio_then_trio() -> None:
    """The pool picks its way to park per event loop, not once per pool."""
    pool = ObjectPool(list, max_size=1)

    async def contend() -> None:
        got: list[object] = []
        held = await pool.acquire()
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                got.append(await pool.acquire())

            tg.start_soon(waiter)
            await wait_for_waiters(pool, 1)
            await pool.release(held)
        assert got == [held]
        await pool.release(held)
        assert_nothing_leaked(pool)

    anyio.run(contend, backend="asyncio")
    anyio.run(contend, backend="trio")
    anyio.run(contend, backend="asyncio")

    assert pool.stats().acquired == 6
