"""Helpers the budget tests share: run a test on both backends, wait for waiters, check leaks.

Async tests of the budget are plain ``async def`` functions decorated with
:func:`on_both_backends`, which turns each into one synchronous test per
backend that calls ``anyio.run`` (no pytest plugin involved, so pytest-asyncio's
auto mode leaves them alone). Fixtures such as ``clock`` or ``caplog`` still
reach the test. With ``mock_clock=True`` trio runs on
``trio.testing.MockClock(autojump_threshold=0)``: a timeout expires as soon as
every task is blocked, without real waiting; asyncio uses the real clock, so
such tests keep their timeouts small.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import sniffio
import trio
import trio.testing
from both_backends import BACKENDS, on_both_backends

from memwarden.budget import MemoryManager

__all__ = ["BACKENDS", "assert_clean", "block_loop_for", "on_both_backends", "waiting"]


async def waiting(manager: MemoryManager, count: int) -> None:
    """Let tasks run until ``count`` requests are queued (no real-time sleeping).

    Polls on checkpoints: anyio's ``wait_all_tasks_blocked`` sleeps 0.1 s at a
    time on asyncio, longer than the timeouts these tests use.
    """
    while manager.waiters < count:
        await anyio.lowlevel.checkpoint()
    assert manager.waiters == count


def assert_clean(manager: MemoryManager, usage: int) -> None:
    """No waiter queued, no stray key or queue left, and exactly ``usage`` bytes held."""
    stats = manager.get_stats()
    assert (stats.waiters, stats.current_usage) == (0, usage)
    ledger = manager._ledger
    assert ledger.queued() == []
    assert ledger._queues == {} and ledger._order == []
    assert all(ledger.held(request) for request in ledger._keys.values())


def block_loop_for(seconds: float) -> None:
    """Let ``seconds`` pass while this event loop runs nothing else.

    Under trio (on a MockClock) the clock jumps; under asyncio the thread
    sleeps. Either way every deadline within ``seconds`` is due when the loop
    next runs, together with any wake-up another thread queued meanwhile.
    """
    if sniffio.current_async_library() == "trio":
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock), "use @on_both_backends(mock_clock=True)"
        clock.jump(seconds)
    else:
        time.sleep(seconds)


@on_both_backends
async def test_on_both_backends_runs_each_backend() -> None:
    assert sniffio.current_async_library() in BACKENDS


@on_both_backends(mock_clock=True)
async def test_mock_clock_jumps_under_trio() -> None:
    start = anyio.current_time()
    with anyio.move_on_after(0.01):
        await anyio.sleep_forever()
    assert anyio.current_time() - start >= 0.009
