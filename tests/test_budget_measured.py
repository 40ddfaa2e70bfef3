"""The budget against measured memory: unmanaged bytes, the measured room, re-sampling,
the default capacity, the new stats fields and resizing a reservation.

Every figure comes from a StaticProbe and every time from a ManualClock: nothing
reads this machine's memory, nothing sleeps to wait for a condition. Async tests
run under asyncio and trio (see ``test_budget_support``).
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from test_budget_support import assert_clean, on_both_backends, waiting

from memwarden.budget import Allocation, MemoryManager, Priority
from memwarden.config import WardenConfig
from memwarden.errors import AllocationTimeoutError, MemoryAllocationError
from memwarden.pressure import PressureMonitor, PressureThresholds
from memwarden.testing import ManualClock, StaticProbe

LIMIT = 1000  # critical line 950, high line 850 with the default thresholds


def _setup(
    clock: ManualClock, used: int = 0, capacity: int | None = 10_000
) -> tuple[StaticProbe, PressureMonitor, MemoryManager]:
    probe = StaticProbe(used=used, limit=LIMIT)
    monitor = PressureMonitor(probe, clock=clock)
    manager = MemoryManager(capacity, monitor=monitor, clock=clock)
    return probe, monitor, manager


def _sample(clock: ManualClock, probe: StaticProbe, monitor: PressureMonitor, used: int) -> None:
    clock.advance(1.0)
    probe.set(used=used)
    monitor.sample_now()


# ------------------------------------------------------------ the measured rule


@on_both_backends
async def test_unmanaged_growth_refuses_what_the_capacity_allows(clock: ManualClock) -> None:
    probe, monitor, manager = _setup(clock)
    held = await manager.acquire(400)
    # The process now uses 500 bytes nobody reserved: 950 - 500 - 400 = 50 bytes of room.
    probe.set(used=900)
    monitor.sample_now()
    stats = manager.get_stats()
    assert (stats.managed, stats.unmanaged, stats.headroom) == (400, 500, 50)
    assert manager.try_acquire(100) is None  # the capacity (10,000) would allow it
    got: list[Allocation] = []

    async def take() -> None:
        got.append(await manager.acquire(100))

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await waiting(manager, 1)
        _sample(clock, probe, monitor, used=400)  # unmanaged fell to 0...
        _sample(clock, probe, monitor, used=400)
        await anyio.lowlevel.checkpoint()
        assert got == [] and manager.waiters == 1  # ...but the spike is still recent
        _sample(clock, probe, monitor, used=400)  # 3 samples and 2 s later it is forgotten
    assert len(got) == 1 and manager.current_usage == 500
    assert manager.get_stats().unmanaged == 0
    held.release()
    got[0].release()
    assert_clean(manager, 0)


def test_unmanaged_recent_is_the_max_over_two_seconds_and_three_samples(
    clock: ManualClock,
) -> None:
    probe, monitor, manager = _setup(clock)
    probe.set(used=500)
    monitor.sample_now()
    for used in (100, 100):
        clock.advance(0.5)
        probe.set(used=used)
        monitor.sample_now()
    assert manager.get_stats().unmanaged == 500  # 1 s ago: kept
    clock.advance(1.1)
    monitor.sample_now()
    assert manager.get_stats().unmanaged == 100  # 2.1 s ago and 3 newer samples: forgotten
    # Samples far apart: the last three are kept however old.
    probe.set(used=700)
    monitor.sample_now()
    for _ in range(2):
        clock.advance(10.0)
        probe.set(used=0)
        monitor.sample_now()
    assert manager.get_stats().unmanaged == 700
    clock.advance(10.0)
    monitor.sample_now()
    assert manager.get_stats().unmanaged == 0


def test_unmanaged_counts_only_what_is_not_reserved(clock: ManualClock) -> None:
    probe, monitor, manager = _setup(clock)
    held = manager.try_acquire(300)
    assert held is not None
    probe.set(used=200)  # granted but not yet touched: used < reserved
    monitor.sample_now()
    assert manager.get_stats().unmanaged == 0
    assert manager.get_stats().headroom == 950 - 300


# ------------------------------------------------------------------- re-sample


def test_a_stale_sample_is_taken_again_before_a_grant_above_high(clock: ManualClock) -> None:
    probe, _monitor, manager = _setup(clock)
    assert probe.samples_taken == 1  # the budget sampled once to start
    # Fresh sample: a grant past the HIGH line decides on it, without sampling.
    first = manager.try_acquire(900)
    assert first is not None and probe.samples_taken == 1
    first.release()
    clock.advance(0.1)  # the sample is now stale
    # Below the HIGH line a stale sample is good enough.
    small = manager.try_acquire(100)
    assert small is not None and probe.samples_taken == 1
    small.release()
    # Meanwhile the process grew; the grant would end above HIGH, so it samples again.
    probe.set(used=600)
    assert manager.try_acquire(900) is None  # 950 - 600 = 350 bytes of room, not 900
    assert probe.samples_taken == 2
    assert manager.get_stats().unmanaged == 600
    # Fresh again: no second sample for the next decision.
    assert manager.try_acquire(300) is not None
    assert probe.samples_taken == 2


@on_both_backends
async def test_acquire_samples_again_when_stale(clock: ManualClock) -> None:
    probe, _monitor, manager = _setup(clock)
    clock.advance(1.0)
    probe.set(used=500)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(900, timeout=0)  # 950 - 500 = 450 bytes of room
    assert probe.samples_taken == 2
    allocation = await manager.acquire(450)
    assert probe.samples_taken == 2  # the sample is fresh now
    allocation.release()
    assert_clean(manager, 0)


def test_resize_samples_again_when_stale(clock: ManualClock) -> None:
    probe, _monitor, manager = _setup(clock)
    allocation = manager.try_acquire(100)
    assert allocation is not None
    clock.advance(1.0)
    probe.set(used=700)  # 600 unmanaged: room for 350 reserved bytes
    assert manager.resize(allocation, 900) is False
    assert probe.samples_taken == 2
    assert manager.resize(allocation, 350) is True


# ------------------------------------------------------------ default capacity


def test_default_capacity_comes_from_the_first_sample(clock: ManualClock) -> None:
    probe = StaticProbe(used=100, limit=LIMIT)
    monitor = PressureMonitor(probe, clock=clock)
    manager = MemoryManager(monitor=monitor, clock=clock)
    assert manager.capacity == 950 - 100
    probe.set(used=300)
    monitor.sample_now()
    assert manager.capacity == 850  # same limit: the capacity (and a 413) stays put
    with pytest.raises(MemoryAllocationError, match="nbytes=851"):
        manager.try_acquire(851)
    probe.set(limit=2000)
    monitor.sample_now()
    assert manager.capacity == 1900 - 300  # the limit changed: recomputed
    probe.set(used=0)
    monitor.sample_now()
    assert manager.capacity == 1600


def test_default_capacity_uses_the_monitors_last_sample_and_thresholds(
    clock: ManualClock,
) -> None:
    probe = StaticProbe(used=0, limit=LIMIT)
    monitor = PressureMonitor(
        probe, clock=clock, thresholds=PressureThresholds(medium=0.5, high=0.6, critical=0.8)
    )
    monitor.sample_now()
    manager = MemoryManager(monitor=monitor, clock=clock)
    assert probe.samples_taken == 1  # the monitor's sample served
    assert manager.capacity == 800


def test_explicit_capacity_is_kept(clock: ManualClock) -> None:
    probe = StaticProbe(used=100, limit=LIMIT)
    monitor = PressureMonitor(probe, clock=clock)
    assert MemoryManager(123, monitor=monitor, clock=clock).capacity == 123
    configured = MemoryManager(monitor=monitor, config=WardenConfig(capacity=4096))
    assert configured.capacity == 4096
    # max_memory_percent applies only without a monitor.
    shared = MemoryManager(monitor=monitor, config=WardenConfig(max_memory_percent=10.0))
    assert shared.capacity == 850


# ----------------------------------------------------------------------- stats


def test_stats_without_a_monitor() -> None:
    manager = MemoryManager(100)
    assert manager.try_acquire(30) is not None
    stats = manager.get_stats()
    assert (stats.managed, stats.unmanaged, stats.limit, stats.headroom) == (30, None, None, None)
    assert stats.to_dict()["managed"] == 30


def test_stats_with_a_monitor(clock: ManualClock) -> None:
    _, _, manager = _setup(clock, used=50)
    assert manager.try_acquire(100) is not None
    stats = manager.get_stats()
    assert (stats.managed, stats.unmanaged, stats.limit) == (100, 50, LIMIT)
    assert stats.headroom == 950 - 50 - 100
    assert stats.current_usage == 100 and stats.total_allocated == 10_000
    history = manager.get_stats_history()
    assert history[-1].limit == LIMIT


# ----------------------------------------------------------------------- resize


def test_resize_grows_and_shrinks() -> None:
    manager = MemoryManager(100)
    allocation = manager.try_acquire(10, evictable=True, priority=Priority.LOW)
    assert allocation is not None
    assert manager.resize(allocation, 60) is True
    assert (allocation.nbytes, manager.current_usage) == (60, 60)
    assert manager.resize(allocation, 101 - 1) is True
    assert manager.resize(allocation, 20) is True
    assert (allocation.nbytes, manager.current_usage) == (20, 20)
    other = manager.try_acquire(70)
    assert other is not None
    assert manager.resize(allocation, 40) is False  # 110 bytes would not fit
    assert (allocation.nbytes, manager.current_usage) == (20, 90)
    assert manager.get_stats().peak_usage == 100
    assert manager.resize(allocation, 0) is True
    allocation.release()
    assert manager.resize(allocation, 5) is False  # no longer held
    assert manager.current_usage == 70


def test_resize_refuses_bad_sizes_and_foreign_allocations() -> None:
    manager = MemoryManager(100)
    allocation = manager.try_acquire(10)
    assert allocation is not None
    with pytest.raises(ValueError, match=r"nbytes.*-1"):
        manager.resize(allocation, -1)
    with pytest.raises(TypeError, match=r"nbytes.*1\.5"):
        manager.resize(allocation, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nbytes.*True"):
        manager.resize(allocation, True)
    with pytest.raises(MemoryAllocationError, match="nbytes=101"):
        manager.resize(allocation, 101)
    foreign = MemoryManager(100).try_acquire(1)
    assert foreign is not None
    with pytest.raises(ValueError, match="another MemoryManager"):
        manager.resize(foreign, 5)
    with pytest.raises(TypeError, match="allocation"):
        manager.resize("k", 5)  # type: ignore[arg-type]
    assert allocation.nbytes == 10 and manager.current_usage == 10


def test_resize_growth_evicts_lower_priority_and_never_barges() -> None:
    manager = MemoryManager(100)
    evicted: list[str] = []
    cache = manager.try_acquire(
        50,
        key="cache",
        priority=Priority.LOW,
        evictable=True,
        on_evict=lambda a: evicted.append(a.key),
    )
    grower = manager.try_acquire(40, key="grower")
    assert cache is not None and grower is not None
    assert manager.resize(grower, 90) is True  # the LOW cache made room
    assert evicted == ["cache"] and cache.released
    assert manager.current_usage == 90


@on_both_backends
async def test_resize_never_passes_a_queued_waiter(clock: ManualClock) -> None:
    manager = MemoryManager(100)
    grower = await manager.acquire(40)
    got: list[Allocation] = []

    async def take() -> None:
        got.append(await manager.acquire(70))

    async with anyio.create_task_group() as group:
        group.start_soon(take)
        await waiting(manager, 1)
        assert manager.resize(grower, 50) is False  # room for 10 more, but a waiter is first
        assert grower.nbytes == 40
        assert manager.resize(grower, 30) is True  # shrinking serves the waiter
    assert got[0].nbytes == 70 and manager.current_usage == 100
    grower.release()
    got[0].release()
    assert_clean(manager, 0)


@on_both_backends
async def test_resize_growth_after_a_sample_frees_room(clock: ManualClock) -> None:
    probe, monitor, manager = _setup(clock)
    allocation = await manager.acquire(100, priority=Priority.LOW, evictable=True)
    probe.set(used=900)  # 800 unmanaged: room for 150 reserved bytes
    monitor.sample_now()
    assert manager.resize(allocation, 200) is False
    assert manager.resize(allocation, 150) is True
    assert manager.get_stats().headroom == 0


# ------------------------------------------------- cancellation and timeout


@on_both_backends
async def test_cancelled_waiter_held_by_the_measured_rule_leaves_nothing(
    clock: ManualClock,
) -> None:
    probe, monitor, manager = _setup(clock)
    probe.set(used=900)
    monitor.sample_now()
    scope = anyio.CancelScope()

    async def doomed() -> None:
        with scope:
            await manager.acquire(100, key="k")
            pytest.fail("should not get the bytes")

    async with anyio.create_task_group() as group:
        group.start_soon(doomed)
        await waiting(manager, 1)
        scope.cancel()
    assert_clean(manager, 0)
    assert manager.get_stats().cancelled == 1
    for _ in range(3):
        _sample(clock, probe, monitor, used=0)
    assert manager.try_acquire(100, key="k") is not None  # the key was not kept


@on_both_backends(mock_clock=True)
async def test_timed_out_waiter_held_by_the_measured_rule_leaves_nothing(
    clock: ManualClock,
) -> None:
    probe, monitor, manager = _setup(clock)
    probe.set(used=900)
    monitor.sample_now()
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(100, key="k", timeout=0.01)
    assert_clean(manager, 0)
    assert manager.get_stats().timeouts == 1
    for _ in range(3):
        _sample(clock, probe, monitor, used=0)
    assert manager.try_acquire(100, key="k") is not None


# ------------------------------------------------------------------------ split


def test_split_moves_bytes_into_a_new_allocation_without_changing_the_total() -> None:
    manager = MemoryManager(100)
    source = manager.try_acquire(60, evictable=True, priority=10)
    assert source is not None
    part = manager.split(source, 20, key="result", priority=75)
    assert part is not None and part.nbytes == 20 and part.key == "result"
    assert part.priority == 75 and not part.evictable
    assert source.nbytes == 40 and manager.current_usage == 60
    assert manager.get_stats().evictable == 40
    assert manager.split(source, 41) is None and source.nbytes == 40
    source.release()
    assert manager.current_usage == 20 and manager.split(source, 1) is None
    part.release()
    assert manager.current_usage == 0 and manager.get_stats().evictable == 0


def test_split_refuses_bad_input_naming_it_and_changes_nothing() -> None:
    manager = MemoryManager(100)
    source = manager.try_acquire(60, key="held")
    assert source is not None
    for args, kwargs, error, name in (
        ((source, -1), {}, ValueError, "nbytes"),
        ((source, 1.5), {}, TypeError, "nbytes"),
        ((source, 1), {"key": "held"}, ValueError, "held"),
        ((source, 1), {"priority": "high"}, TypeError, "priority"),
        (("held", 1), {}, TypeError, "allocation"),
        ((MemoryManager(100).try_acquire(5), 1), {}, ValueError, "another MemoryManager"),
    ):
        with pytest.raises(error, match=name):
            manager.split(*args, **kwargs)
    assert source.nbytes == 60 and manager.current_usage == 60
    assert manager.get_stats().allocations == 1


# ------------------------------------------------- the floor of unmanaged memory


def test_untouched_grants_do_not_hide_the_baseline(clock: ManualClock) -> None:
    probe, monitor, manager = _setup(clock, used=200)  # a settled sample: 200 unmanaged
    held = [manager.try_acquire(100) for _ in range(5)]
    for _ in range(10):  # 5 s of churn: each step one request ends and a new one starts
        old = held.pop(0)
        assert old is not None
        old.release()
        held.append(manager.try_acquire(100))
        clock.advance(0.5)
        probe.set(used=200 + 250)  # half of what is reserved has been touched yet
        monitor.sample_now()
        # used - reserved = -50, yet the baseline measured when settled still counts.
        assert manager.get_stats().unmanaged == 200
    assert manager.try_acquire(251) is None  # 950 - 200 - 500 = 250 left
    assert manager.try_acquire(250) is not None


def test_the_floor_follows_a_settled_sample(clock: ManualClock) -> None:
    probe, monitor, manager = _setup(clock, used=600)
    held = manager.try_acquire(10)
    assert held is not None and manager.get_stats().unmanaged == 600
    for _ in range(3):  # the grant is old, so these samples are settled: 300 - 10
        _sample(clock, probe, monitor, used=300)
    assert manager.get_stats().unmanaged == 290


# ------------------------------------------------------------- wait listeners


@on_both_backends
async def test_wait_listeners_hear_every_acquire_with_its_wait(clock: ManualClock) -> None:
    manager = MemoryManager(100, clock=clock)
    heard: list[tuple[float, bool]] = []
    remove = manager.add_wait_listener(lambda seconds, granted: heard.append((seconds, granted)))
    first = await manager.acquire(80)
    assert heard == [(0.0, True)]
    async with anyio.create_task_group() as group:

        async def wait_for_room() -> None:
            await manager.acquire(50)

        group.start_soon(wait_for_room)
        await waiting(manager, 1)
        clock.advance(2.5)
        first.release()
    assert heard[-1] == (2.5, True)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(60, timeout=0)
    assert heard[-1] == (0.0, False)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.acquire(60)
    assert heard[-1] == (0.0, False) and len(heard) == 4
    remove()
    remove()  # idempotent
    await manager.acquire(1)
    assert len(heard) == 4
    assert_clean(manager, 51)


def test_a_failing_wait_listener_is_removed_and_bad_ones_refused() -> None:
    manager = MemoryManager(100)

    def broken(seconds: float, granted: bool) -> None:
        raise RuntimeError("boom")

    manager.add_wait_listener(broken)
    anyio.run(manager.acquire, 1)
    assert manager._wait_listeners == []
    with pytest.raises(TypeError, match="callback"):
        manager.add_wait_listener("nope")  # type: ignore[arg-type]


@on_both_backends(mock_clock=True)
async def test_wait_listeners_hear_a_wait_that_timed_out_or_was_cancelled() -> None:
    manager = MemoryManager(100, clock=anyio.current_time)
    heard: list[tuple[float, bool]] = []
    manager.add_wait_listener(lambda seconds, granted: heard.append((seconds, granted)))
    blocker = await manager.acquire(100)
    with pytest.raises(AllocationTimeoutError):
        await manager.acquire(60, timeout=0.05)
    seconds, granted = heard[-1]
    assert not granted and seconds >= 0.049
    with anyio.move_on_after(0.05):
        await manager.acquire(60)
    seconds, granted = heard[-1]
    assert not granted and seconds >= 0.049 and len(heard) == 3
    assert_clean(manager, 100)
    blocker.release()
    assert_clean(manager, 0)
