"""ResourceManager: named resources and their stats, tracking, LIFO shielded cleanup."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from memwarden.errors import ResourceError
from memwarden.resources import ResourceManager, ResourceManagerStats, ResourceStats
from memwarden.testing import ManualClock


class Conn:
    """A resource with a close() method, weakly referenceable."""

    def __init__(self, name: str = "conn") -> None:
        self.name = name
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class AsyncConn:
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.closed += 1


@pytest.fixture
def manager(clock: ManualClock) -> ResourceManager:
    return ResourceManager(clock=clock)


# -- named resources ------------------------------------------------------------------------


async def test_acquire_yields_the_resource_and_records_hold_time(
    manager: ResourceManager, clock: ManualClock
) -> None:
    conn = Conn()
    manager.register_resource("db", conn, kind="database")
    async with manager.acquire_resource("db", "database") as got:
        assert got is conn
        assert manager.get_resource_stats("db").in_use == 1
        clock.advance(2.5)
    async with manager.acquire_resource("db"):
        clock.advance(0.5)
    stats = manager.get_resource_stats("db")
    assert isinstance(stats, ResourceStats)
    assert (stats.acquisitions, stats.in_use, stats.kind) == (2, 0, "database")
    assert stats.total_hold == pytest.approx(3.0)
    assert stats.max_hold == pytest.approx(2.5)
    assert stats.mean_hold == pytest.approx(1.5)
    assert stats.total_wait == 0 and stats.peak_in_use == 1
    assert stats.to_dict()["mean_hold"] == pytest.approx(1.5)


async def test_first_kind_sticks_and_a_different_kind_is_refused(
    manager: ResourceManager,
) -> None:
    manager.register_resource("cache", {})
    async with manager.acquire_resource("cache", "memory_cache"):
        pass
    assert manager.get_resource_stats("cache").kind == "memory_cache"
    with pytest.raises(ResourceError, match="memory_cache"):
        async with manager.acquire_resource("cache", "database"):
            pass
    assert manager.get_resource_stats("cache").acquisitions == 1


async def test_exclusive_by_default_and_wait_time_is_measured(
    manager: ResourceManager, clock: ManualClock
) -> None:
    manager.register_resource("db", Conn())
    order: list[str] = []
    release_first = anyio.Event()

    async def first() -> None:
        async with manager.acquire_resource("db"):
            order.append("first in")
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        async with manager.acquire_resource("db"):
            order.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await wait_all_tasks_blocked()
        tg.start_soon(second)
        await wait_all_tasks_blocked()
        assert manager.get_resource_stats("db").waiting == 1
        clock.advance(4.0)
        release_first.set()
    assert order == ["first in", "first out", "second in"]
    stats = manager.get_resource_stats("db")
    assert stats.max_wait == pytest.approx(4.0) and stats.acquisitions == 2


async def test_max_concurrent_allows_shared_use(manager: ResourceManager) -> None:
    manager.register_resource("client", Conn(), max_concurrent=2)
    async with manager.acquire_resource("client"), manager.acquire_resource("client"):
        stats = manager.get_resource_stats("client")
        assert stats.in_use == 2 and stats.peak_in_use == 2
        assert manager.stats().in_use == 2


async def test_acquire_timeout_holds_nothing(manager: ResourceManager) -> None:
    manager.register_resource("db", Conn())
    async with manager.acquire_resource("db"):
        with pytest.raises(TimeoutError, match="'db'"):
            async with manager.acquire_resource("db", timeout=0):
                pass
    stats = manager.get_resource_stats("db")
    assert (stats.timeouts, stats.waiting, stats.in_use, stats.acquisitions) == (1, 0, 0, 1)
    async with manager.acquire_resource("db", timeout=0):
        pass


async def test_acquire_cancelled_while_waiting_holds_nothing(manager: ResourceManager) -> None:
    manager.register_resource("db", Conn())
    async with manager.acquire_resource("db"), anyio.create_task_group() as tg:

        async def waiter() -> None:
            async with manager.acquire_resource("db"):
                pytest.fail("must not get the resource")

        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        assert manager.get_resource_stats("db").waiting == 1
        tg.cancel_scope.cancel()
    stats = manager.get_resource_stats("db")
    assert (stats.waiting, stats.in_use, stats.acquisitions) == (0, 0, 1)
    async with manager.acquire_resource("db", timeout=0):
        pass


# -- unregister -----------------------------------------------------------------------------


async def test_unregister_runs_sync_and_async_cleanups(manager: ResourceManager) -> None:
    calls: list[Any] = []
    conn = Conn()

    async def async_cleanup(resource: Any) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("async", resource))

    manager.register_resource("a", conn, lambda r: calls.append(("sync", r)))
    manager.register_resource("b", conn, async_cleanup)
    assert await manager.unregister_resource("a") is conn
    assert await manager.unregister_resource("b") is conn
    assert calls == [("sync", conn), ("async", conn)]
    assert "a" not in manager and len(manager) == 0
    with pytest.raises(ResourceError, match="'a'"):
        await manager.unregister_resource("a")


async def test_unregister_default_cleanup_and_opt_out(manager: ResourceManager) -> None:
    sync_conn, async_conn, kept = Conn(), AsyncConn(), Conn()
    manager.register_resource("s", sync_conn)
    manager.register_resource("a", async_conn)
    manager.register_resource("k", kept)
    await manager.unregister_resource("s")
    await manager.unregister_resource("a")
    assert await manager.unregister_resource("k", cleanup=False) is kept
    assert (sync_conn.closed, async_conn.closed, kept.closed) == (1, 1, 0)


async def test_unregister_waits_for_holders(manager: ResourceManager) -> None:
    conn = Conn()
    manager.register_resource("db", conn)
    leave = anyio.Event()
    unregistered = anyio.Event()

    async def holder() -> None:
        async with manager.acquire_resource("db"):
            await leave.wait()
            assert conn.closed == 0  # not cleaned while held

    async def remover() -> None:
        await manager.unregister_resource("db")
        unregistered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await wait_all_tasks_blocked()
        tg.start_soon(remover)
        await wait_all_tasks_blocked()
        with pytest.raises(ResourceError):
            async with manager.acquire_resource("db"):
                pass
        assert not unregistered.is_set()
        leave.set()
    assert conn.closed == 1 and "db" not in manager


async def test_unregister_cancelled_while_waiting_keeps_the_resource(
    manager: ResourceManager,
) -> None:
    conn = Conn()
    manager.register_resource("db", conn)
    async with manager.acquire_resource("db"):
        with anyio.move_on_after(0):
            await manager.unregister_resource("db")
    assert "db" in manager and conn.closed == 0
    async with manager.acquire_resource("db"):
        pass


async def test_waiter_sees_the_unregistration(manager: ResourceManager) -> None:
    manager.register_resource("db", Conn())
    errors: list[BaseException] = []
    leave = anyio.Event()

    async def holder() -> None:
        async with manager.acquire_resource("db"):
            await leave.wait()

    async def waiter() -> None:
        try:
            async with manager.acquire_resource("db"):
                pass
        except ResourceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        tg.start_soon(manager.unregister_resource, "db")
        await wait_all_tasks_blocked()
        leave.set()
    assert len(errors) == 1 and "unregistered" in str(errors[0])


async def test_failing_unregister_cleanup_still_unregisters(manager: ResourceManager) -> None:
    def broken(resource: Any) -> None:
        raise OSError("disk on fire")

    manager.register_resource("db", Conn(), broken)
    with pytest.raises(ResourceError, match="disk on fire") as info:
        await manager.unregister_resource("db")
    assert isinstance(info.value.__cause__, OSError)
    assert "db" not in manager
    assert manager.stats().cleanup_failures == 1


# -- cleanup_resources ----------------------------------------------------------------------


async def test_cleanup_is_lifo_across_registered_and_tracked(manager: ResourceManager) -> None:
    order: list[str] = []
    tracked = Conn("tracked")
    manager.register_resource("first", Conn(), lambda r: order.append("first"))
    manager.track_resource(tracked, lambda: order.append("tracked"))
    manager.register_resource("last", Conn(), lambda r: order.append("last"))
    assert await manager.cleanup_resources() == 3
    assert order == ["last", "tracked", "first"]
    stats = manager.stats()
    assert (stats.registered, stats.tracked, stats.cleanups_run) == (0, 0, 3)
    assert await manager.cleanup_resources() == 0  # everything ran exactly once
    del tracked
    gc.collect()
    assert order == ["last", "tracked", "first"]


async def test_failures_are_aggregated_and_do_not_stop_the_others(
    manager: ResourceManager, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def bad_sync(resource: Any) -> None:
        raise ValueError("sync broke")

    async def bad_async(resource: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("async broke")

    manager.register_resource("ok1", Conn(), lambda r: ran.append("ok1"))
    manager.register_resource("bad1", Conn(), bad_sync)
    manager.register_resource("ok2", Conn(), lambda r: ran.append("ok2"))
    manager.register_resource("bad2", Conn(), bad_async)
    with (
        caplog.at_level(logging.ERROR, logger="memwarden.resources"),
        pytest.raises(ExceptionGroup) as info,
    ):
        await manager.cleanup_resources()
    group = info.value
    assert "2 of 4" in str(group)
    assert all(isinstance(e, ResourceError) for e in group.exceptions)
    causes = sorted(type(e.__cause__).__name__ for e in group.exceptions)
    assert causes == ["KeyError", "ValueError"]
    assert sorted(ran) == ["ok1", "ok2"]
    assert manager.stats().cleanup_failures == 2 and manager.stats().cleanups_run == 2
    assert "bad1" in caplog.text and "bad2" in caplog.text


async def test_cleanup_is_shielded_from_the_callers_cancellation(
    manager: ResourceManager,
) -> None:
    started, proceed, finished = anyio.Event(), anyio.Event(), anyio.Event()
    ran: list[str] = []

    async def slow(resource: Any) -> None:
        started.set()
        await proceed.wait()
        ran.append("slow")

    manager.register_resource("early", Conn(), lambda r: ran.append("early"))
    manager.register_resource("slow", Conn(), slow)
    caller_scope = anyio.CancelScope()

    async def caller() -> None:
        with caller_scope:
            assert await manager.cleanup_resources() == 2  # completed, not interrupted
            finished.set()
            await anyio.sleep_forever()  # the pending cancellation lands here

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await started.wait()
        caller_scope.cancel()
        await wait_all_tasks_blocked()
        assert not finished.is_set()  # still cleaning, despite the cancellation
        proceed.set()
    assert finished.is_set() and caller_scope.cancelled_caught
    assert ran == ["slow", "early"]


async def test_each_cleanup_is_bounded_by_the_timeout(clock: ManualClock) -> None:
    manager = ResourceManager(cleanup_timeout=0, clock=clock)
    ran: list[str] = []

    async def hangs(resource: Any) -> None:
        await anyio.sleep_forever()

    manager.register_resource("next", Conn(), lambda r: ran.append("next"))
    manager.register_resource("hangs", Conn(), hangs)
    with pytest.raises(ExceptionGroup) as info:
        await manager.cleanup_resources()
    assert len(info.value.exceptions) == 1
    assert "timed out" in str(info.value.exceptions[0])
    assert ran == ["next"]


async def test_held_resources_are_cleaned_at_shutdown(manager: ResourceManager) -> None:
    conn = Conn()
    manager.register_resource("db", conn)
    async with manager.acquire_resource("db"):
        assert await manager.cleanup_resources() == 1
        assert conn.closed == 1
    assert manager.stats().in_use == 0


# -- tracked objects ------------------------------------------------------------------------


async def test_tracked_cleanup_runs_when_collected(manager: ResourceManager) -> None:
    closed: list[str] = []
    obj = Conn()
    manager.track_resource(obj, lambda: closed.append("handle"))
    assert manager.stats().tracked == 1
    del obj
    gc.collect()
    assert closed == ["handle"]
    stats = manager.stats()
    assert (stats.tracked, stats.collected, stats.cleanups_run) == (0, 1, 1)
    assert await manager.cleanup_resources() == 0
    assert closed == ["handle"]


async def test_tracked_cleanup_runs_once_at_cleanup_resources(manager: ResourceManager) -> None:
    closed: list[str] = []
    obj = Conn()
    manager.track_resource(obj, lambda: closed.append("handle"))
    assert await manager.cleanup_resources() == 1
    del obj
    gc.collect()
    assert closed == ["handle"]


async def test_own_close_method_is_held_weakly(manager: ResourceManager) -> None:
    alive, collected = Conn(), Conn()
    manager.track_resource(alive)  # default: alive.close, held weakly
    manager.track_resource(collected, collected.close)  # a bound method of the object
    probe = collected
    del collected
    import weakref

    ref = weakref.ref(probe)
    del probe
    gc.collect()
    assert ref() is None  # the tracker did not keep it alive
    assert await manager.cleanup_resources() == 1
    assert alive.closed == 1


async def test_async_cleanup_of_a_collected_object_is_skipped(
    manager: ResourceManager, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bool] = []

    async def async_cleanup() -> None:
        calls.append(True)

    obj = Conn()
    manager.track_resource(obj, async_cleanup)
    with caplog.at_level(logging.WARNING, logger="memwarden.resources"):
        del obj
        gc.collect()
    assert calls == [] and "skipped" in caplog.text
    assert manager.stats().cleanup_failures == 1


async def test_failing_collection_cleanup_is_logged(
    manager: ResourceManager, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("no")

    obj = Conn()
    manager.track_resource(obj, broken)
    with caplog.at_level(logging.ERROR, logger="memwarden.resources"):
        del obj
        gc.collect()
    assert "failed" in caplog.text and manager.stats().cleanup_failures == 1


async def test_untrack(manager: ResourceManager) -> None:
    closed: list[bool] = []
    obj = Conn()
    manager.track_resource(obj, lambda: closed.append(True))
    assert manager.untrack_resource(obj) is True
    assert manager.untrack_resource(obj) is False
    del obj
    gc.collect()
    assert await manager.cleanup_resources() == 0
    assert closed == []


def test_track_bad_input(manager: ResourceManager) -> None:
    with pytest.raises(TypeError, match="weak"):
        manager.track_resource([1, 2, 3])
    with pytest.raises(TypeError, match="cleanup"):
        manager.track_resource(Conn(), cleanup="close")  # type: ignore[arg-type]
    obj = Conn()
    manager.track_resource(obj)
    with pytest.raises(ValueError, match="already tracked"):
        manager.track_resource(obj)
    assert manager.stats().tracked == 1
    manager.untrack_resource(obj)


# -- bad input and reports ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        ((5, Conn()), {}, TypeError, "name"),
        (("", Conn()), {}, ValueError, "name"),
        (("x", Conn(), "close"), {}, TypeError, "cleanup"),
        (("x", Conn()), {"max_concurrent": 0}, ValueError, "max_concurrent"),
        (("x", Conn()), {"max_concurrent": 1.0}, TypeError, "max_concurrent"),
        (("x", Conn()), {"kind": 3}, TypeError, "kind"),
    ],
)
def test_register_bad_input(
    manager: ResourceManager,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    fragment: str,
) -> None:
    with pytest.raises(error, match=fragment):
        manager.register_resource(*args, **kwargs)
    assert len(manager) == 0


async def test_name_errors(manager: ResourceManager) -> None:
    manager.register_resource("db", Conn())
    with pytest.raises(ValueError, match="'db'"):
        manager.register_resource("db", Conn())
    with pytest.raises(ResourceError, match="'nope'"):
        manager.get_resource_stats("nope")
    with pytest.raises(ResourceError, match="'nope'"):
        async with manager.acquire_resource("nope"):
            pass
    with pytest.raises(ValueError, match="timeout"):
        manager.acquire_resource("db", timeout=-1)
    with pytest.raises(TypeError, match="kind"):
        manager.acquire_resource("db", 5)  # type: ignore[arg-type]


def test_constructor_bad_input() -> None:
    with pytest.raises(ValueError, match="cleanup_timeout"):
        ResourceManager(cleanup_timeout=-1)
    with pytest.raises(TypeError, match="clock"):
        ResourceManager(clock=1.0)  # type: ignore[arg-type]


async def test_report_is_json_and_groups_by_kind(manager: ResourceManager) -> None:
    manager.register_resource("db1", Conn(), kind="database")
    manager.register_resource("db2", Conn(), kind="database")
    manager.register_resource("misc", Conn())
    async with manager.acquire_resource("db1"):
        pass
    report = manager.report()
    json.dumps(report)
    assert report["kinds"]["database"]["resources"] == 2
    assert report["kinds"]["database"]["acquisitions"] == 1
    assert report["kinds"]["unspecified"]["resources"] == 1
    assert set(report["resources"]) == {"db1", "db2", "misc"}
    stats = manager.stats()
    assert isinstance(stats, ResourceManagerStats)
    assert stats.to_dict()["peak_registered"] == 3


def test_runs_on_trio() -> None:
    manager = ResourceManager()
    conn = Conn()
    manager.register_resource("db", conn)  # created outside any event loop

    async def scenario() -> int:
        async with manager.acquire_resource("db") as got:
            assert got is conn
        return await manager.cleanup_resources()

    assert anyio.run(scenario, backend="trio") == 1
    assert conn.closed == 1


async def test_cleanup_runs_even_when_called_already_cancelled(manager: ResourceManager) -> None:
    conn = AsyncConn()
    manager.register_resource("db", conn)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.cleanup_resources()
    assert conn.closed == 1 and len(manager) == 0
