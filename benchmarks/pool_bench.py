"""ObjectPool against the pool users write by hand: a pre-filled ``asyncio.Queue``.

The peer is the minimal Queue pool: ``acquire`` awaits ``queue.get()``,
``release`` calls ``queue.put_nowait()``, and its ``async with`` form is a
two-method class around the same calls. Our acquire is a checkpoint (it yields
to the event loop once, as anyio's ``CapacityLimiter`` does), and
``queue.get()`` on a non-empty queue does not yield, so the peer of the target
rows checkpoints too: it awaits ``asyncio.sleep(0)`` before ``queue.get()``.
Two report rows compare honestly with the peer that does not yield: ours as
is, and ours with ``fast_acquire=True``.

Ours and the peer alternate batch by batch in one event loop; the times are
medians over the batches and the ratio is the median of each round's ratio
(``paired_ratios``), which cancels drift in the machine's speed.

Rows:
- uncontended ``async with`` and ``await acquire()`` / ``await release()``
  (an idle object is always ready), target >= 0.8x;
- contended: 100 tasks share ``max_size=10`` objects, each holding its object
  across one ``asyncio.sleep(0)``, target >= 0.8x;
- report: the uncontended ``await`` form against the Queue pool that does not
  yield, with the default and with ``fast_acquire=True``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from benchmarks._harness import Row, markdown, paired_ratios, speed_row
from memwarden.pool import ObjectPool


class QueuePool:
    """The hand-written pool: a pre-filled asyncio.Queue.

    ``checkpoint=True`` yields once per acquire, as ours does.
    """

    def __init__(self, factory: Callable[[], Any], size: int, *, checkpoint: bool) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._checkpoint = checkpoint
        for _ in range(size):
            self._queue.put_nowait(factory())

    async def acquire(self) -> Any:
        if self._checkpoint:
            await asyncio.sleep(0)
        return await self._queue.get()

    def release(self, obj: Any) -> None:
        self._queue.put_nowait(obj)

    def lease(self) -> _QueueLease:
        return _QueueLease(self)


class _QueueLease:
    __slots__ = ("obj", "pool")

    def __init__(self, pool: QueuePool) -> None:
        self.pool = pool

    async def __aenter__(self) -> Any:
        self.obj = await self.pool.acquire()
        return self.obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pool.release(self.obj)


PEER = "Queue pool + sleep(0)"
PLAIN = "Queue pool"


def _factory() -> list[int]:
    return [0]


async def _interleave(
    ours: Callable[[], Awaitable[None]],
    peer: Callable[[], Awaitable[None]],
    ops: int,
    repeat: int,
) -> list[list[float]]:
    """Seconds per op of each, one batch each per round, alternating which goes first."""
    await ours()  # warm up both
    await peer()
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        order = ((ours, a), (peer, b)) if i % 2 == 0 else ((peer, b), (ours, a))
        for fn, into in order:
            start = time.perf_counter()
            await fn()
            into.append((time.perf_counter() - start) / ops)
    return [a, b]


async def _uncontended(n: int, repeat: int) -> list[tuple[str, list[list[float]], str]]:
    pool: ObjectPool[list[int]] = ObjectPool(_factory, max_size=10)
    await pool.release(await pool.acquire())
    fast: ObjectPool[list[int]] = ObjectPool(_factory, max_size=10, fast_acquire=True)
    await fast.release(await fast.acquire())
    qpool = QueuePool(_factory, 1, checkpoint=True)
    plain = QueuePool(_factory, 1, checkpoint=False)

    async def ours_with() -> None:
        for _ in range(n):
            async with pool.acquire():
                pass

    async def peer_with() -> None:
        for _ in range(n):
            async with qpool.lease():
                pass

    async def ours_await() -> None:
        for _ in range(n):
            o = await pool.acquire()
            await pool.release(o)

    async def peer_await() -> None:
        for _ in range(n):
            o = await qpool.acquire()
            qpool.release(o)

    async def fast_await() -> None:
        for _ in range(n):
            o = await fast.acquire()
            await fast.release(o)

    async def plain_await() -> None:
        for _ in range(n):
            o = await plain.acquire()
            plain.release(o)

    out = []
    w = await _interleave(ours_with, peer_with, n, repeat)
    out.append(("uncontended `async with pool.acquire()`", w, PEER))
    a = await _interleave(ours_await, peer_await, n, repeat)
    out.append(("uncontended `await acquire()` + `await release()`", a, PEER))
    p = await _interleave(ours_await, plain_await, n, repeat)
    out.append(("uncontended `await` form, ours checkpoints, peer does not", p, PLAIN))
    f = await _interleave(fast_await, plain_await, n, repeat)
    out.append(("uncontended `await` form, `fast_acquire=True`", f, PLAIN))
    await pool.aclose()
    await fast.aclose()
    return out


async def _contended(tasks: int, iters: int, repeat: int) -> list[list[float]]:
    pool: ObjectPool[list[int]] = ObjectPool(_factory, max_size=10)
    await pool.fill()
    qpool = QueuePool(_factory, 10, checkpoint=True)
    # Create all ten objects up front so both sides only lend and return.
    held = [await pool.acquire() for _ in range(10)]
    for obj in held:
        await pool.release(obj)

    async def ours_worker() -> None:
        for _ in range(iters):
            async with pool.acquire():
                await asyncio.sleep(0)

    async def peer_worker() -> None:
        for _ in range(iters):
            async with qpool.lease():
                await asyncio.sleep(0)

    async def ours() -> None:
        await asyncio.gather(*(ours_worker() for _ in range(tasks)))

    async def peer() -> None:
        await asyncio.gather(*(peer_worker() for _ in range(tasks)))

    result = await _interleave(ours, peer, tasks * iters, repeat)
    stats = pool.stats()
    assert stats.in_use == 0 and stats.size == 10, stats
    await pool.aclose()
    return result


def _row(
    name: str, samples: list[list[float]], peer_name: str, target: float | None, notes: str = ""
) -> Row:
    ratio, q1, q3 = paired_ratios(*samples)
    spread = f"round ratios, middle half {q1:.2f}-{q3:.2f}x"
    return speed_row(
        name,
        statistics.median(samples[0]),
        statistics.median(samples[1]),
        peer_name,
        target,
        notes=f"{notes}; {spread}" if notes else spread,
        ratio=ratio,
    )


def rows(quick: bool) -> list[Row]:
    """Uncontended and contended acquire/release: ObjectPool vs an asyncio.Queue pool.

    Batches are short and many, and the ratio is the median of the rounds'
    ratios (see ``paired_ratios``): the machine's speed drifts, and this cycle
    is under a microsecond.
    """
    n, repeat = (2_000, 11) if quick else (5_000, 101)
    tasks, iters, crepeat = (100, 5, 5) if quick else (100, 20, 41)
    out: list[Row] = []
    for name, samples, peer_name in asyncio.run(_uncontended(n, repeat)):
        target = 0.8 if peer_name == PEER else None
        out.append(_row(f"pool {name}", samples, peer_name, target))
    contended = asyncio.run(_contended(tasks, iters, crepeat))
    out.append(
        _row(
            "pool contended, 100 tasks / max_size 10, `async with`",
            contended,
            PEER,
            0.8,
            notes="FIFO hand-off, no barging",
        )
    )
    return out


if __name__ == "__main__":
    print(markdown(rows("--quick" in sys.argv[1:])))
