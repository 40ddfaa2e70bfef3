"""Hook behaviour: sync and async hooks, and every failure path restores capacity."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from test_pool_backends import on_both_backends, wait_for_closes

from memwarden.errors import PoolError, PoolExhaustedError
from memwarden.pool import ObjectPool


def _hook(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``fn`` as a sync hook, or wrapped in a coroutine function."""
    if kind == "sync":
        return fn

    async def wrapper(*args: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return fn(*args)

    return wrapper


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


class Boom(Exception):
    pass


class Maker:
    def __init__(self) -> None:
        self.made: list[list[int]] = []
        self.fail_next = 0

    def __call__(self) -> list[int]:
        if self.fail_next:
            self.fail_next -= 1
            raise Boom("factory failed")
        obj = [len(self.made)]
        self.made.append(obj)
        return obj


@on_both_backends(mock_clock=True)
@KINDS
async def test_all_hooks_run_in_order(kind: str) -> None:
    events: list[tuple[str, int]] = []
    maker = Maker()

    def validate(obj: list[int]) -> bool:
        events.append(("validate", obj[0]))
        return True

    def reset(obj: list[int]) -> None:
        events.append(("reset", obj[0]))

    def close(obj: list[int]) -> None:
        events.append(("close", obj[0]))

    pool = ObjectPool(
        _hook(maker, kind),
        validate=_hook(validate, kind),
        reset=_hook(reset, kind),
        close=_hook(close, kind),
    )
    async with pool.acquire() as obj:
        assert obj == [0]
    async with pool.acquire() as again:
        assert again is obj
    await pool.aclose()
    # A new object is not validated; a reused one is.
    assert events == [("reset", 0), ("validate", 0), ("reset", 0), ("close", 0)]


@on_both_backends(mock_clock=True)
@KINDS
async def test_factory_error_goes_to_the_caller_and_capacity_is_kept(kind: str) -> None:
    maker = Maker()
    pool = ObjectPool(_hook(maker, kind), max_size=1)
    maker.fail_next = 1
    with pytest.raises(Boom):
        await pool.acquire()
    stats = pool.stats()
    assert (stats.size, stats.pending, stats.create_failures) == (0, 0, 1)
    async with pool.acquire() as obj:  # the slot was not lost
        assert obj == [0]


@on_both_backends(mock_clock=True)
async def test_factory_error_passes_the_slot_to_the_next_waiter() -> None:
    """node generic-pool #175: a failing factory must not hang the other waiters."""
    maker = Maker()

    def reset(obj: list[int]) -> None:
        raise Boom("reset failed")  # the held object is discarded on return

    pool = ObjectPool(maker, max_size=1, reset=reset)
    held = await pool.acquire()
    results: list[object] = []

    async def waiter() -> None:
        try:
            results.append(await pool.acquire())
        except Boom as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        maker.fail_next = 1
        await pool.release(held)  # frees the slot: first waiter creates, fails
    assert isinstance(results[0], Boom)
    assert results[1] == [1]
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.waiters, stats.pending) == (1, 1, 0, 0)


@on_both_backends(mock_clock=True)
@KINDS
async def test_validate_false_discards_and_creates_another(kind: str) -> None:
    maker = Maker()
    closed: list[list[int]] = []
    pool = ObjectPool(
        maker, validate=_hook(lambda obj: obj[0] != 0, kind), close=_hook(closed.append, kind)
    )
    first = await pool.acquire()
    await pool.release(first)
    second = await pool.acquire()  # first fails validation
    await wait_for_closes(pool)
    assert second is not first and closed == [first]
    stats = pool.stats()
    assert (stats.validation_failures, stats.size, stats.destroyed) == (1, 1, 1)


@on_both_backends(mock_clock=True)
@KINDS
async def test_validate_raising_discards_and_logs(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    maker = Maker()

    def validate(obj: list[int]) -> bool:
        if obj[0] == 0:
            raise Boom("validate failed")
        return True

    pool = ObjectPool(maker, max_size=2, validate=_hook(validate, kind))
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        got = await pool.acquire()  # b validates fine (LIFO)
        assert got is b
        got2 = await pool.acquire()  # a raises: discarded, replaced
    assert got2 is not a and got2 == [2]
    assert any("validate raised" in r.getMessage() for r in caplog.records)
    assert pool.stats().validation_failures == 1


@on_both_backends(mock_clock=True)
@KINDS
async def test_reset_raising_discards_restores_capacity_and_logs(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    maker = Maker()
    closed: list[list[int]] = []

    def reset(obj: list[int]) -> None:
        raise Boom("reset failed")

    pool = ObjectPool(maker, max_size=1, reset=_hook(reset, kind), close=closed.append)
    obj = await pool.acquire()
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        await pool.release(obj)  # does not raise
    await wait_for_closes(pool)
    assert closed == [obj]
    assert any("reset raised" in r.getMessage() for r in caplog.records)
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.destroyed) == (0, 0, 1)
    assert await pool.acquire() == [1]


@on_both_backends(mock_clock=True)
@KINDS
async def test_close_raising_is_logged_and_object_dropped(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def close(obj: list[int]) -> None:
        raise Boom("close failed")

    pool = ObjectPool(Maker(), max_size=2, close=_hook(close, kind))
    a, b = await pool.acquire(), await pool.acquire()
    await pool.release(a)
    await pool.release(b)
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        assert await pool.trim(keep=0) == 2
    assert sum("close raised" in r.getMessage() for r in caplog.records) == 2
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_hung_reset_is_bounded_by_hook_timeout(caplog: pytest.LogCaptureFixture) -> None:
    never = anyio.Event()

    async def reset(obj: list[int]) -> None:
        await never.wait()

    pool = ObjectPool(Maker(), reset=reset, hook_timeout=0.01)
    obj = await pool.acquire()
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        await pool.release(obj)
    assert any("hook_timeout" in r.getMessage() for r in caplog.records)
    assert pool.stats().size == 0


@on_both_backends(mock_clock=True)
async def test_factory_returning_a_pooled_object_is_refused() -> None:
    shared = [0]
    pool = ObjectPool(lambda: shared, max_size=2)
    assert await pool.acquire() is shared
    with pytest.raises(PoolError, match="already in the pool"):
        await pool.acquire()
    assert pool.stats().pending == 0 and pool.stats().size == 1


@on_both_backends(mock_clock=True)
async def test_creation_gate_runs_before_new_objects_only() -> None:
    gate_calls = 0
    opened = anyio.Event()

    async def gate() -> None:
        nonlocal gate_calls
        gate_calls += 1
        await opened.wait()

    pool = ObjectPool(Maker(), max_size=2, creation_gate=gate)
    got: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_acquire_into, pool, got)
        await anyio.wait_all_tasks_blocked()
        assert gate_calls == 1 and pool.stats().pending == 1
        opened.set()
    obj = got[-1]
    await pool.release(obj)
    assert await pool.acquire() is obj  # reuse does not pass the gate
    assert gate_calls == 1


async def _acquire_into(pool: ObjectPool[list[int]], into: list[Any]) -> None:
    into.append(await pool.acquire())


@on_both_backends(mock_clock=True)
async def test_creation_gate_timeout_becomes_pool_exhausted() -> None:
    async def gate() -> None:
        raise TimeoutError("memory pressure stayed critical")

    pool = ObjectPool(Maker(), creation_gate=gate, name="g")
    with pytest.raises(PoolExhaustedError, match="creation gate") as info:
        await pool.acquire()
    assert isinstance(info.value.__cause__, TimeoutError)
    stats = pool.stats()
    assert (stats.pending, stats.size, stats.create_failures) == (0, 0, 1)


@on_both_backends(mock_clock=True)
async def test_fill_raises_first_factory_error_after_the_rest() -> None:
    maker = Maker()
    maker.fail_next = 1
    pool = ObjectPool(maker, min_size=3, max_size=3)
    with pytest.raises(Boom):
        await pool.fill()
    assert pool.stats().idle == 2 and pool.stats().pending == 0


@on_both_backends(mock_clock=True)
async def test_first_use_fill_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    maker = Maker()
    maker.fail_next = 1
    pool = ObjectPool(maker, min_size=2, max_size=3)
    with caplog.at_level(logging.WARNING, logger="memwarden.pool"):
        obj = await pool.acquire()
    assert obj in maker.made
    assert any("creations failed" in r.getMessage() for r in caplog.records)
