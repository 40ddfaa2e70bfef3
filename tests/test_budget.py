"""MemoryManager: grants, fairness, eviction, pressure coupling, stats and the seed surface.

Every async test runs under asyncio and under trio (see ``test_budget_support``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from test_budget_support import assert_clean, on_both_backends, waiting

import memwarden.probes
from memwarden.budget import Allocation, MemoryManager, MemoryStats, Priority
from memwarden.config import WardenConfig
from memwarden.errors import (
    AllocationTimeoutError,
    MemoryAllocationError,
    MemoryOptimizationError,
)
from memwarden.pressure import PressureLevel, PressureMonitor
from memwarden.testing import ManualClock, StaticProbe

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    """Acquires in a task and records the order in which grants complete."""

    def __init__(self, manager: MemoryManager) -> None:
        self.manager = manager
        self.order: list[str] = []
        self.held: dict[str, Allocation] = {}

    async def take(self, name: str, nbytes: int, **kwargs: Any) -> None:
        allocation = await self.manager.acquire(nbytes, **kwargs)
        self.order.append(name)
        self.held[name] = allocation


# --------------------------------------------------------------- construction


def test_priority_values() -> None:
    assert (Priority.LOW, Priority.NORMAL, Priority.HIGH) == (0, 50, 100)
    assert isinstance(Priority.NORMAL, int)


def test_capacity_from_config_and_detected_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MemoryManager(config=WardenConfig(capacity=4096)).capacity == 4096
    monkeypatch.setattr(memwarden.probes, "detect_memory_limit", lambda: 1000, raising=False)
    assert MemoryManager(config=WardenConfig(max_memory_percent=50.0)).capacity == 500
    assert MemoryManager(config=WardenConfig()).capacity == 850
    assert MemoryManager(123, config=WardenConfig(capacity=4096)).capacity == 123


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"capacity": 0}, ValueError, "capacity"),
        ({"capacity": -5}, ValueError, "capacity"),
        ({"capacity": 1.5}, TypeError, "capacity"),
        ({"capacity": True}, TypeError, "capacity"),
        ({"capacity": "1GiB"}, TypeError, "capacity"),
        ({"capacity": 10, "history": -1}, ValueError, "history"),
        ({"capacity": 10, "history": 2.0}, TypeError, "history"),
        ({"capacity": 10, "clock": 3}, TypeError, "clock.*int 3"),
        ({"capacity": math.inf}, TypeError, "capacity.*inf"),
        ({"capacity": math.nan}, TypeError, "capacity.*nan"),
        ({"capacity": 10, "history": True}, TypeError, "history.*True"),
        ({"capacity": 10, "history": math.inf}, TypeError, "history.*inf"),
        ({"capacity": 10, "fast_acquire": 1}, TypeError, "fast_acquire.*1"),
        ({"capacity": 10, "fast_acquire": None}, TypeError, "fast_acquire.*None"),
        ({"capacity": 10, "monitor": object()}, TypeError, "monitor"),
        ({"capacity": 10, "gc_controller": object()}, TypeError, "gc_controller"),
        ({"config": {"capacity": 10}}, TypeError, "config.*dict.*capacity"),
    ],
)
def test_constructor_rejects_bad_input(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        MemoryManager(**kwargs)


# ------------------------------------------------------------ basic granting


@on_both_backends
async def test_acquire_release_accounting() -> None:
    manager = MemoryManager(1000)
    allocation = await manager.acquire(300, key="a", priority=7)
    assert (allocation.key, allocation.nbytes, allocation.priority) == ("a", 300, 7)
    assert not allocation.evictable and not allocation.released
    assert (manager.current_usage, manager.available_memory, manager.capacity) == (300, 700, 1000)
    assert manager.release(allocation) is True
    assert allocation.released
    assert manager.release(allocation) is False
    assert allocation.release() is False
    assert manager.current_usage == 0


@on_both_backends
async def test_release_by_key_and_generated_keys() -> None:
    manager = MemoryManager(1000)
    first = await manager.acquire(10)
    second = await manager.acquire(20)
    assert first.key != second.key
    assert manager.release(second.key) is True
    assert manager.current_usage == 10
    assert manager.release(second.key) is False
    assert manager.release("no-such-key") is False
    key = first.key
    assert first.key == key  # stable once generated
    assert manager.deallocate(key) is True
    assert manager.current_usage == 0


@on_both_backends
async def test_generated_key_never_collides_with_an_explicit_one() -> None:
    manager = MemoryManager(1000)
    squatter = await manager.acquire(1, key="alloc-1")
    anonymous = await manager.acquire(1)
    assert anonymous.key != "alloc-1"
    assert manager.release("alloc-1") and squatter.released
    assert manager.release(anonymous.key)


@on_both_backends
async def test_key_named_after_release_is_not_indexed() -> None:
    manager = MemoryManager(100)
    allocation = await manager.acquire(10)
    allocation.release()
    assert manager.release(allocation.key) is False


@on_both_backends
async def test_duplicate_live_key_is_rejected_until_released() -> None:
    manager = MemoryManager(100)
    held = await manager.acquire(10, key="k")
    with pytest.raises(ValueError, match="'k'"):
        await manager.acquire(10, key="k")
    with pytest.raises(ValueError, match="'k'"):
        manager.try_acquire(10, key="k")
    assert manager.current_usage == 10
    held.release()
    again = await manager.acquire(10, key="k")
    assert manager.release("k") and again.released


@on_both_backends
async def test_queued_key_counts_as_taken() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(manager.acquire, 50, key="q"))
        await waiting(manager, 1)
        with pytest.raises(ValueError, match="'q'"):
            manager.try_acquire(1, key="q")
        assert manager.release("q") is False  # queued, not live
        blocker.release()
    assert manager.release("q") is True


@on_both_backends
async def test_zero_bytes_is_granted_at_once_even_with_waiters() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    async with anyio.create_task_group() as group:
        group.start_soon(manager.acquire, 60)
        await waiting(manager, 1)
        empty = await manager.acquire(0)
        assert not empty.released and empty.nbytes == 0
        assert manager.try_acquire(0, priority=-10) is not None
        blocker.release()


@on_both_backends
async def test_release_rejects_foreign_allocations_and_wrong_types() -> None:
    mine, theirs = MemoryManager(100), MemoryManager(100)
    foreign = await theirs.acquire(5, key="theirs")
    with pytest.raises(ValueError, match=r"allocation_or_key=.*another MemoryManager") as info:
        mine.release(foreign)
    assert "theirs" in str(info.value)
    assert theirs.current_usage == 5 and not foreign.released
    with pytest.raises(TypeError, match="allocation_or_key"):
        mine.release(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bad input

BAD_REQUESTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"nbytes": -1}, ValueError, r"nbytes.*-1"),
    ({"nbytes": math.inf}, TypeError, r"nbytes.*inf"),
    ({"nbytes": -math.inf}, TypeError, r"nbytes.*-inf"),
    ({"nbytes": 1.5}, TypeError, r"nbytes.*1\.5"),
    ({"nbytes": math.nan}, TypeError, r"nbytes.*nan"),
    ({"nbytes": True}, TypeError, r"nbytes.*True"),
    ({"nbytes": "10"}, TypeError, r"nbytes.*'10'"),
    ({"nbytes": 101}, MemoryAllocationError, r"nbytes=101.*capacity of 100"),
    ({"nbytes": 1, "key": 3}, TypeError, r"key.*3"),
    ({"nbytes": 1, "priority": True}, TypeError, r"priority.*True"),
    ({"nbytes": 1, "priority": 1.0}, TypeError, r"priority.*1\.0"),
    ({"nbytes": 1, "priority": "high"}, TypeError, r"priority.*'high'"),
    ({"nbytes": 1, "priority": math.nan}, TypeError, r"priority.*nan"),
    ({"nbytes": 1, "priority": math.inf}, TypeError, r"priority.*inf"),
    ({"nbytes": 1, "priority": None}, TypeError, r"priority.*None"),
    ({"nbytes": 1, "timeout": -1}, ValueError, r"timeout.*-1"),
    ({"nbytes": 1, "timeout": -math.inf}, ValueError, r"timeout.*-inf"),
    ({"nbytes": 1, "timeout": math.nan}, ValueError, r"timeout.*nan"),
    ({"nbytes": 1, "timeout": True}, TypeError, r"timeout.*True"),
    ({"nbytes": 1, "timeout": "1"}, TypeError, r"timeout.*'1'"),
    ({"nbytes": 1, "evictable": 1}, TypeError, r"evictable.*1"),
    ({"nbytes": 1, "evictable": True, "on_evict": 5}, TypeError, r"on_evict.*int 5"),
    ({"nbytes": 1, "on_evict": print}, ValueError, r"on_evict=.*print.*evictable=False"),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD_REQUESTS)
@on_both_backends
async def test_bad_requests_raise_and_change_nothing(
    kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    manager = MemoryManager(100)
    held = await manager.acquire(10, key="held")
    kwargs = dict(kwargs)  # shared by both backends' runs
    nbytes = kwargs.pop("nbytes")
    with pytest.raises(error, match=pattern):
        await manager.acquire(nbytes, **kwargs)
    with pytest.raises(error, match=pattern):
        manager.try_acquire(nbytes, **kwargs)
    with pytest.raises(error, match=pattern):
        manager.reserve(nbytes, **kwargs)  # checked at the call, not on entry
    stats = manager.get_stats()
    assert (stats.current_usage, stats.allocations, stats.waiters) == (10, 1, 0)
    assert held.release()


@on_both_backends
async def test_allocation_fields_are_read_only() -> None:
    manager = MemoryManager(100)
    allocation = await manager.acquire(10)
    for name in ("nbytes", "priority", "evictable", "released", "key"):
        with pytest.raises(AttributeError):
            setattr(allocation, name, 1)


# ------------------------------------------------------------------ fairness


@on_both_backends
async def test_fifo_within_a_priority() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    granted: list[int] = []

    async def take(index: int) -> None:
        allocation = await manager.acquire(100)
        granted.append(index)
        allocation.release()

    async with anyio.create_task_group() as group:
        for index in range(5):
            group.start_soon(take, index)
            await waiting(manager, index + 1)
        blocker.release()
    assert granted == [0, 1, 2, 3, 4]


@on_both_backends
async def test_grant_order_follows_priority_then_arrival() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    granted: list[str] = []

    async def take(name: str, priority: int) -> None:
        allocation = await manager.acquire(100, priority=priority)
        granted.append(name)
        allocation.release()

    async with anyio.create_task_group() as group:
        plan = [("low1", 0), ("normal1", 50), ("low2", 0), ("high", 100), ("normal2", 50)]
        for index, (name, priority) in enumerate(plan):
            group.start_soon(take, name, priority)
            await waiting(manager, index + 1)
        blocker.release()
    assert granted == ["high", "normal1", "normal2", "low1", "low2"]


@on_both_backends
async def test_large_head_is_not_overtaken_by_small_later_requests() -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    recorder = _Recorder(manager)
    async with anyio.create_task_group() as group:
        group.start_soon(recorder.take, "big", 80)
        await waiting(manager, 1)
        # 10 bytes would fit, but the 80-byte head came first: no barging.
        assert manager.try_acquire(10) is None
        assert manager.try_acquire(10, priority=Priority.LOW) is None
        group.start_soon(recorder.take, "small", 10)
        await waiting(manager, 2)
        assert recorder.order == []
        half.release()
        # Both are granted inside release(), head first, before either task runs.
        assert (manager.waiters, manager.current_usage) == (0, 90)
    assert sorted(recorder.order) == ["big", "small"]


@on_both_backends
async def test_higher_priority_may_go_ahead_of_queued_lower_priority() -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(manager.acquire, 80, priority=Priority.LOW))
        await waiting(manager, 1)
        urgent = manager.try_acquire(30, priority=Priority.HIGH)
        assert urgent is not None  # fits, and no waiter of equal or higher priority
        urgent.release()
        also = await manager.acquire(30, priority=Priority.NORMAL)
        also.release()
        half.release()
    assert manager.current_usage == 80


@on_both_backends
async def test_cancelled_head_lets_the_next_waiters_through() -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    recorder = _Recorder(manager)
    async with anyio.create_task_group() as group:
        head_scope = anyio.CancelScope()
        group.start_soon(_in_scope, head_scope, manager.acquire, 80)
        await waiting(manager, 1)
        group.start_soon(recorder.take, "small", 40)
        await waiting(manager, 2)
        head_scope.cancel()
        await wait_all_tasks_blocked()
    assert recorder.order == ["small"]
    assert manager.current_usage == 90 and manager.waiters == 0
    half.release()


async def _in_scope(scope: anyio.CancelScope, func: Callable[..., Any], *args: Any) -> None:
    with scope:
        await func(*args)


# ------------------------------------------------------------------ eviction


@on_both_backends
async def test_eviction_takes_lowest_priority_then_smallest_and_only_what_is_needed() -> None:
    manager = MemoryManager(100)
    evicted: list[str] = []

    def note(allocation: Allocation) -> None:
        evicted.append(allocation.key)

    keep = await manager.acquire(40, key="keep")
    for key, size, priority in [("p10-small", 10, 10), ("p0-big", 30, 0), ("p0-small", 20, 0)]:
        await manager.acquire(size, key=key, priority=priority, evictable=True, on_evict=note)
    assert manager.available_memory == 0
    allocation = await manager.acquire(45, priority=Priority.NORMAL)
    # Priority 0 goes first, smallest first: 20 then 30 frees 50 >= 45; p10 survives.
    assert evicted == ["p0-small", "p0-big"]
    assert manager.current_usage == 40 + 10 + 45
    stats = manager.get_stats()
    assert (stats.evictions, stats.evicted_bytes) == (2, 50)
    assert manager.release("p0-small") is False  # evicted counts as released
    assert manager.release("p10-small") is True
    assert allocation.release() and keep.release()


@on_both_backends
async def test_only_strictly_lower_priority_is_evicted() -> None:
    manager = MemoryManager(100)
    peer = await manager.acquire(100, priority=Priority.NORMAL, evictable=True)
    assert manager.try_acquire(10, priority=Priority.NORMAL) is None
    assert not peer.released
    higher = manager.try_acquire(10, priority=Priority.NORMAL + 1)
    assert higher is not None and peer.released


@on_both_backends
async def test_no_eviction_when_evicting_everything_would_not_be_enough() -> None:
    manager = MemoryManager(100)
    fixed = await manager.acquire(70)
    cheap = await manager.acquire(30, priority=Priority.LOW, evictable=True)
    assert manager.try_acquire(40) is None  # evicting 30 frees too little
    assert not cheap.released and manager.get_stats().evictions == 0
    fixed.release()


@on_both_backends
async def test_queued_waiter_is_granted_by_eviction_after_a_release() -> None:
    manager = MemoryManager(100)
    first = await manager.acquire(30)
    await manager.acquire(30)
    cheap = await manager.acquire(40, priority=Priority.LOW, evictable=True)
    recorder = _Recorder(manager)
    async with anyio.create_task_group() as group:
        group.start_soon(recorder.take, "w", 60)
        await waiting(manager, 1)
        assert not cheap.released  # 40 evictable bytes cannot cover 60
        first.release()  # now 30 free + 40 evictable >= 60
    assert recorder.order == ["w"] and cheap.released
    assert manager.current_usage == 90


@on_both_backends
async def test_on_evict_that_raises_is_logged_not_propagated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = MemoryManager(100)

    def boom(allocation: Allocation) -> None:
        raise RuntimeError("callback failed")

    await manager.acquire(100, priority=0, evictable=True, on_evict=boom)
    with caplog.at_level(logging.ERROR, logger="memwarden.budget"):
        allocation = await manager.acquire(50)
    assert allocation.nbytes == 50
    assert "on_evict" in caplog.text and "callback failed" in caplog.text


@on_both_backends
async def test_async_on_evict_runs_without_blocking_the_grant() -> None:
    manager = MemoryManager(100)
    started, finish = anyio.Event(), anyio.Event()
    seen: list[Allocation] = []

    async def slow(allocation: Allocation) -> None:
        seen.append(allocation)
        started.set()
        await finish.wait()

    victim = await manager.acquire(100, priority=0, evictable=True, on_evict=slow)
    granted = await manager.acquire(100)  # does not wait for `slow`
    assert granted.nbytes == 100 and victim.released
    with anyio.fail_after(5):
        await started.wait()
    assert seen == [victim]
    finish.set()


@on_both_backends
async def test_async_on_evict_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    manager = MemoryManager(100)
    done = anyio.Event()

    async def bad(allocation: Allocation) -> None:
        done.set()
        raise RuntimeError("async callback failed")

    await manager.acquire(100, priority=0, evictable=True, on_evict=bad)
    with caplog.at_level(logging.ERROR, logger="memwarden.budget"):
        await manager.acquire(100)
        with anyio.fail_after(5):
            await done.wait()
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
    assert "async callback failed" in caplog.text


# ------------------------------------------------------------------ timeouts


@on_both_backends(mock_clock=True)
async def test_timeout_expires_at_its_deadline_and_is_counted() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    start = anyio.current_time()
    with pytest.raises(AllocationTimeoutError, match=r"nbytes=60.*timeout=0.05") as info:
        await manager.acquire(60, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert anyio.current_time() - start >= 0.049
    stats = manager.get_stats()
    assert (stats.waiters, stats.timeouts, stats.current_usage) == (0, 1, 100)
    blocker.release()
    assert manager.current_usage == 0


@on_both_backends(mock_clock=True)
async def test_waiter_granted_before_its_deadline_is_not_timed_out() -> None:
    manager = MemoryManager(100)
    blocker = await manager.acquire(100)
    results: list[Allocation] = []
    async with anyio.create_task_group() as group:

        async def take() -> None:
            results.append(await manager.acquire(50, timeout=60))

        group.start_soon(take)
        await waiting(manager, 1)
        blocker.release()
    assert results[0].nbytes == 50 and manager.current_usage == 50
    assert manager.get_stats().timeouts == 0


def test_manager_has_one_timeout_mechanism() -> None:
    # Timeouts follow the event loop's clock (anyio.move_on_after); there is
    # no second, injected sleep to drive them.
    with pytest.raises(TypeError, match="sleep"):
        MemoryManager(100, sleep=anyio.sleep)  # type: ignore[call-arg]


@on_both_backends
async def test_timeout_on_the_event_loop_clock() -> None:
    manager = MemoryManager(100)
    await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(1, timeout=0.01)
    with pytest.raises(AllocationTimeoutError):
        async with manager.reserve(1, timeout=0.01):
            pass
    stats = manager.get_stats()
    assert (stats.waiters, stats.timeouts, stats.current_usage) == (0, 2, 100)


@on_both_backends
async def test_zero_timeout_fails_at_once_without_queueing() -> None:
    manager = MemoryManager(100)
    await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(1, timeout=0)
    assert manager.get_stats().waiters_peak == 0


@on_both_backends
async def test_zero_timeout_grants_what_fits_ahead_of_lower_priority_waiters() -> None:
    manager = MemoryManager(100)
    half = await manager.acquire(50)
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(manager.acquire, 80, priority=Priority.LOW))
        await waiting(manager, 1)
        async with manager.reserve(30, priority=Priority.HIGH, timeout=0) as allocation:
            assert allocation.nbytes == 30 and manager.current_usage == 80
        urgent = await manager.acquire(30, priority=Priority.HIGH, timeout=0)
        urgent.release()
        with pytest.raises(AllocationTimeoutError):
            await manager.acquire(30, priority=Priority.LOW, timeout=0)  # no barging
        half.release()
    assert manager.get_stats().timeouts == 1


@on_both_backends
async def test_infinite_timeout_waits() -> None:
    manager = MemoryManager(10)
    blocker = await manager.acquire(10)
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(manager.acquire, 10, timeout=math.inf))
        await waiting(manager, 1)
        blocker.release()
    assert manager.current_usage == 10


# ------------------------------------------------------------------- reserve


@on_both_backends
async def test_reserve_releases_on_exit_and_on_error() -> None:
    manager = MemoryManager(100)
    async with manager.reserve(40, key="r") as allocation:
        assert manager.current_usage == 40 and allocation.key == "r"
    assert manager.current_usage == 0 and allocation.released
    with pytest.raises(KeyError):
        async with manager.reserve(40):
            raise KeyError("boom")
    assert manager.current_usage == 0


@on_both_backends
async def test_acquire_and_reserve_are_checkpoints() -> None:
    manager = MemoryManager(100)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with anyio.create_task_group() as group:
        group.start_soon(other)
        for _ in range(2):  # trio may run a woken task after us within one batch
            async with manager.reserve(10):
                pass
        assert ran == ["other"]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.acquire(10)  # free bytes, but the scope is cancelled
        ran.append("not reached")
    assert scope.cancelled_caught and ran == ["other"]
    assert_clean(manager, 0)


@on_both_backends
async def test_reserve_is_entered_once() -> None:
    manager = MemoryManager(100)
    reservation = manager.reserve(10)
    async with reservation:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with reservation:
            pass
    assert manager.current_usage == 0


@on_both_backends
async def test_acquired_allocation_as_context_manager() -> None:
    manager = MemoryManager(100)
    async with await manager.acquire(30) as allocation:
        assert manager.current_usage == 30
    assert allocation.released and manager.current_usage == 0


@on_both_backends
async def test_release_inside_reserve_block_is_fine() -> None:
    manager = MemoryManager(100)
    async with manager.reserve(30) as allocation:
        assert allocation.release() is True
    assert manager.current_usage == 0


# --------------------------------------------------------------------- stats


@on_both_backends
async def test_peak_is_exact(clock: ManualClock) -> None:
    manager = MemoryManager(1000, clock=clock)
    for size in (10, 700, 5):
        allocation = await manager.acquire(size)
        allocation.release()
    stats = manager.get_stats()
    assert stats.peak_usage == 700 and stats.current_usage == 0
    assert stats.total_allocated == 1000 and stats.available == 1000
    assert stats.granted == 3


@on_both_backends
async def test_history_is_coalesced_per_10ms_and_bounded(clock: ManualClock) -> None:
    manager = MemoryManager(1000, clock=clock, history=3)
    for _ in range(5):
        (await manager.acquire(1)).release()  # ten changes within one window
    history = manager.get_stats_history()
    assert len(history) == 1
    assert history[-1].current_usage == 0  # the window's latest state
    for step in range(5):
        clock.advance(0.011)
        await manager.acquire(10)
        assert manager.get_stats_history()[-1].current_usage == 10 * (step + 1)
    assert len(manager.get_stats_history()) == 3
    assert all(isinstance(entry, MemoryStats) for entry in manager.get_stats_history())
    manager.clear_stats_history()
    assert manager.get_stats_history() == []
    assert manager.get_stats().peak_usage == 50  # clearing history keeps peaks


@on_both_backends
async def test_history_can_be_disabled(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock, history=0)
    (await manager.acquire(5)).release()
    assert manager.get_stats_history() == []


def test_stats_to_dict_has_seed_fields() -> None:
    manager = MemoryManager(100)
    data = manager.get_stats().to_dict()
    for field in (
        "total_allocated",
        "available",
        "peak_usage",
        "current_usage",
        "timestamp",
        "allocations",
        "waiters",
        "evictions",
        "timeouts",
        "waiters_peak",
    ):
        assert field in data
    assert data["total_allocated"] == 100 and data["available"] == 100


@on_both_backends
async def test_waiters_peak_and_repr() -> None:
    manager = MemoryManager(10)
    blocker = await manager.acquire(10)
    async with anyio.create_task_group() as group:
        for index in range(3):
            group.start_soon(manager.acquire, 1)
            await waiting(manager, index + 1)
        assert "waiters=3" in repr(manager)
        blocker.release()
    assert manager.get_stats().waiters_peak == 3
    assert "live" in repr(blocker) or "released" in repr(blocker)


# --------------------------------------------------------------- seed surface


@on_both_backends
async def test_allocate_and_deallocate() -> None:
    manager = MemoryManager(100)
    assert await manager.allocate("model", 60) is True
    assert await manager.allocate("other", 60) is False
    assert manager.current_usage == 60
    assert manager.deallocate("model") is True
    assert manager.deallocate("model") is False
    with pytest.raises(MemoryAllocationError):
        await manager.allocate("huge", 101)
    with pytest.raises(TypeError, match="key"):
        await manager.allocate(1, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        manager.deallocate(None)  # type: ignore[arg-type]


@on_both_backends
async def test_allocate_optimizes_then_retries() -> None:
    manager = MemoryManager(100)
    await manager.allocate("pinned", 50)
    cheap = await manager.acquire(50, priority=Priority.HIGH, evictable=True)
    freed_by_cleanup: list[int] = []

    def cleanup() -> int:
        freed_by_cleanup.append(1)
        cheap.release()  # a cleanup that drops a cache holding budget bytes
        return 50

    manager.register_cleanup_callback(cleanup)
    assert await manager.allocate("needs-room", 40) is True
    assert freed_by_cleanup == [1]


@on_both_backends
async def test_optimize_evicts_low_priority_and_runs_cleanups(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = MemoryManager(1000)
    low = await manager.acquire(100, priority=Priority.LOW, evictable=True)
    normal = await manager.acquire(100, priority=Priority.NORMAL, evictable=True)
    ran: list[str] = []

    async def async_cleanup() -> int:
        ran.append("async")
        return 7

    def failing_cleanup() -> None:
        ran.append("failing")
        raise RuntimeError("cleanup broke")

    manager.register_cleanup_callback(async_cleanup)
    manager.register_cleanup_callback(failing_cleanup)
    with caplog.at_level(logging.ERROR, logger="memwarden.budget"):
        freed = await manager.optimize()
    assert freed >= 107
    assert low.released and not normal.released
    assert ran == ["async", "failing"] and "cleanup broke" in caplog.text
    assert manager.get_stats().evictions == 1
    assert await manager.optimize(below=Priority.HIGH) >= 100
    assert normal.released
    with pytest.raises(TypeError, match=r"callback.*int 42"):
        manager.register_cleanup_callback(42)  # type: ignore[arg-type]


@on_both_backends
async def test_optimize_uses_a_gc_controller() -> None:
    calls: list[str] = []

    class FakeGC:
        def collect_with_stats(self, generation: int = 2) -> object:
            calls.append(f"collect{generation}")
            return None

        async def run_cleanup(self) -> int:
            calls.append("cleanup")
            return 11

    manager = MemoryManager(100, gc_controller=FakeGC())
    assert await manager.optimize() >= 11
    assert calls == ["cleanup", "collect2"]


@on_both_backends
async def test_optimize_with_the_real_gc_controller() -> None:
    from memwarden.gc import GCController

    controller = GCController()
    controller.register_cleanup_callback(lambda: 1234)
    manager = MemoryManager(100, gc_controller=controller)
    assert await manager.optimize() >= 1234


@on_both_backends
async def test_optimize_needed_raises_when_not_enough_is_free() -> None:
    manager = MemoryManager(100)
    await manager.acquire(80)
    with pytest.raises(MemoryOptimizationError, match="needed=50"):
        await manager.optimize(needed=50)
    assert await manager.optimize(needed=20) >= 0
    with pytest.raises(ValueError, match="needed"):
        await manager.optimize(needed=-1)

    with pytest.raises(TypeError, match=r"below.*1\.5"):
        await manager.optimize(below=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"below.*True"):
        await manager.optimize(below=True)
    with pytest.raises(TypeError, match=r"needed.*nan"):
        await manager.optimize(needed=math.nan)  # type: ignore[arg-type]
    assert manager.get_stats().current_usage == 80


@pytest.mark.parametrize(
    ("size", "error", "pattern"),
    [
        (-1, ValueError, r"^size must be >= 0, got -1$"),
        (1.5, TypeError, r"^size must be an int, got float 1\.5$"),
        (math.inf, TypeError, r"^size must be an int, got float inf$"),
        (True, TypeError, r"^size must be an int, got bool True$"),
        (101, MemoryAllocationError, r"^size=101 exceeds the budget's capacity of 100"),
    ],
)
@on_both_backends
async def test_allocate_names_size_for_a_bad_size(
    size: Any, error: type[Exception], pattern: str
) -> None:
    manager = MemoryManager(100)
    ran: list[str] = []
    manager.register_cleanup_callback(lambda: ran.append("optimize"))
    with pytest.raises(error, match=pattern):
        await manager.allocate("k", size)
    assert ran == []  # refused before optimizing anything
    assert_clean(manager, 0)
    assert manager.release("k") is False


# ----------------------------------------------------------------- pressure


# ------------------------------------------- with the real PressureMonitor


@on_both_backends
async def test_real_monitor_unmanaged_growth_holds_then_releases_waiters(
    clock: ManualClock,
) -> None:
    probe = StaticProbe(used=0, limit=1000)
    monitor = PressureMonitor(probe, clock=clock)
    manager = MemoryManager(10_000, monitor=monitor, clock=clock)
    probe.set(used=850)  # 850 unmanaged bytes: 950 - 850 = 100 bytes of room
    monitor.sample_now()
    assert manager.try_acquire(60) is not None
    assert manager.try_acquire(60) is None  # 40 bytes of room remain
    recorder = _Recorder(manager)
    async with anyio.create_task_group() as group:
        group.start_soon(recorder.take, "big", 500)
        await waiting(manager, 1)
        for _ in range(3):  # the spike is forgotten after 2 s and 3 samples
            clock.advance(1.0)
            probe.set(used=300)
            monitor.sample_now()
    assert recorder.order == ["big"]
    assert manager.current_usage == 560


@on_both_backends
async def test_real_monitor_critical_evicts_and_close_detaches(clock: ManualClock) -> None:
    probe = StaticProbe(used=0, limit=1000)
    monitor = PressureMonitor(probe, clock=clock)
    manager = MemoryManager(10_000, monitor=monitor, clock=clock)
    order: list[str] = []
    for key, priority in [("normal", 50), ("low", 0), ("high", 100)]:
        await manager.acquire(
            10,
            key=key,
            priority=priority,
            evictable=True,
            on_evict=lambda allocation: order.append(allocation.key),
        )
    pinned = await manager.acquire(10, key="pinned")
    assert monitor.stats().listeners == 0  # it follows samples, not level events
    probe.set_fraction(0.97)
    monitor.sample_now()
    assert monitor.level == PressureLevel.CRITICAL
    assert order == ["low", "normal", "high"]
    assert manager.current_usage == 10 and not pinned.released
    assert manager.get_stats().evictions == 3
    assert manager.try_acquire(100) is None  # no measured room at all
    manager.close()
    manager.close()
    assert manager.get_stats().headroom is None  # no longer follows the monitor
    assert manager.get_stats().limit is None
    probe.set_fraction(1.0)
    monitor.sample_now()
    assert manager.try_acquire(100) is not None
