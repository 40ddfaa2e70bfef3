"""Pool hooks never hold a caller without bound.

``reset`` and ``close`` run shielded, so each is bounded by ``hook_timeout``
(10 s unless configured) and a caller never returns later than its own
deadline plus that bound. Objects discarded by an acquire or a release are
closed in the background, so a slow ``close`` never delays the caller at all.
Under trio the tests run on an autojumping mock clock: the times are exact.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from test_pool_backends import assert_nothing_leaked, on_both_backends, run, wait_for_closes

from memwarden.errors import PoolExhaustedError
from memwarden.pool import ObjectPool


class Maker:
    def __init__(self) -> None:
        self.made: list[list[int]] = []

    def __call__(self) -> list[int]:
        obj = [len(self.made)]
        self.made.append(obj)
        return obj


class SlowClose:
    """A close hook that takes 1.5 s and says when it is done."""

    def __init__(self) -> None:
        self.done = anyio.Event()

    async def __call__(self, obj: object) -> None:
        await anyio.sleep(1.5)
        self.done.set()


async def _hang(obj: object) -> None:
    await anyio.sleep_forever()


@on_both_backends(mock_clock=True)
async def test_acquire_timeout_is_not_extended_by_closing_a_rejected_object() -> None:
    close = SlowClose()
    pool = ObjectPool(Maker(), max_size=1, validate=lambda obj: obj != [0], close=close)
    await pool.release(await pool.acquire())  # [0], which validation will reject
    start = anyio.current_time()
    async with pool.acquire(timeout=0.05) as obj:
        assert obj == [1]
    assert anyio.current_time() - start < 0.5
    assert pool.stats().closing == 1  # [0] is being closed in the background
    await close.done.wait()
    await wait_for_closes(pool)
    assert_nothing_leaked(pool)


@on_both_backends(mock_clock=True)
async def test_release_into_a_closing_pool_does_not_wait_for_close() -> None:
    close = SlowClose()
    pool = ObjectPool(Maker(), close=close)
    obj = await pool.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: pool.aclose(timeout=0.1))
        while not pool.closed:
            await anyio.lowlevel.checkpoint()
        start = anyio.current_time()
        with anyio.move_on_after(0.05) as scope:
            await pool.release(obj)
        assert not scope.cancelled_caught
        assert anyio.current_time() - start < 0.5  # the close hook takes 1.5 s
    await close.done.wait()
    await wait_for_closes(pool)
    assert_nothing_leaked(pool)


@on_both_backends(mock_clock=True)
async def test_aclose_returns_within_its_timeout_plus_hook_timeout() -> None:
    pool = ObjectPool(Maker(), max_size=2, close=_hang, hook_timeout=0.3)
    held = await pool.acquire()
    await pool.release(await pool.acquire())
    start = anyio.current_time()
    await pool.aclose(timeout=0.1)
    assert anyio.current_time() - start < 0.1 + 0.3 + 0.2
    await pool.release(held)  # force-closed meanwhile: a quiet no-op
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.pending) == (0, 0, 0)


async def _hanging_reset_is_bounded(hook_timeout: float | None) -> None:
    kw: dict[str, Any] = {} if hook_timeout is None else {"hook_timeout": hook_timeout}
    bound = 10.0 if hook_timeout is None else hook_timeout
    pool = ObjectPool(Maker(), max_size=1, reset=_hang, **kw)
    start = anyio.current_time()
    with anyio.fail_after(60):
        async with pool.acquire():
            pass
    assert bound <= anyio.current_time() - start < bound + 1.0
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use) == (0, 0, 0)  # discarded, slot freed
    with anyio.fail_after(1):
        async with pool.acquire() as obj:
            assert obj == [1]


def test_a_hanging_reset_is_bounded_by_the_default_hook_timeout() -> None:
    """With nothing configured, a reset that never returns holds release() for 10 s
    (on trio's mock clock, so the test takes no real time)."""
    run("trio", lambda: _hanging_reset_is_bounded(None), mock_clock=True)


@on_both_backends(mock_clock=True)
async def test_a_hanging_reset_is_bounded_by_hook_timeout() -> None:
    await _hanging_reset_is_bounded(0.3)


@on_both_backends(mock_clock=True)
async def test_a_cancelled_release_with_a_hanging_reset_returns_by_its_deadline_plus_bound() -> (
    None
):
    pool = ObjectPool(Maker(), max_size=1, reset=_hang, hook_timeout=0.5)
    obj = await pool.acquire()
    start = anyio.current_time()
    with anyio.fail_after(60):
        with anyio.move_on_after(0.1):
            await pool.release(obj)
    assert anyio.current_time() - start <= 0.1 + 0.5 + 0.1
    assert_nothing_leaked(pool)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_a_timed_out_close_is_logged_and_the_object_dropped() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("memwarden.pool")
    logger.addHandler(handler)
    try:
        pool = ObjectPool(Maker(), close=_hang, hook_timeout=0.2)
        await pool.release(await pool.acquire())
        assert await pool.trim(0) == 1
    finally:
        logger.removeHandler(handler)
    assert any("hook_timeout" in r.getMessage() for r in records)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_acquire_timeout_twin_with_a_slow_factory_leaks_nothing() -> None:
    async def factory() -> list[int]:
        await anyio.sleep(1.0)
        return [0]

    pool: ObjectPool[list[int]] = ObjectPool(factory, max_size=1)
    with pytest.raises(PoolExhaustedError):
        await pool.acquire(timeout=0.1)
    assert_nothing_leaked(pool)
    assert pool.stats().timeouts == 1


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        (None, TypeError),
        (0, ValueError),
        (-1.0, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_hook_timeout_must_be_a_finite_positive_number(value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"hook_timeout .*" + repr(value).replace("(", r"\(")[:3]):
        ObjectPool(list, hook_timeout=value)
