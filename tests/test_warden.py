"""The Warden facade: lifecycle, pressure reactions, pools, leaks, history, report."""

from __future__ import annotations

import gc as pygc
import json
import sys
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both

from memwarden import PoolExhaustedError, PressureLevel, StaticProbe, WardenConfig
from memwarden.testing import ManualClock
from memwarden.units import MiB
from memwarden.warden import Warden

LIMIT = 1000 * MiB


def make(
    clock: ManualClock, probe: StaticProbe, tmp_path: Path | None = None, **changes: object
) -> Warden:
    config = WardenConfig(
        monitor_use_psi=False,
        state_dir=None if tmp_path is None else str(tmp_path),
        leak_min_samples=5,
        **changes,  # type: ignore[arg-type]
    )
    return Warden(config, probe=probe, clock=clock, sleep=clock.sleep, wall_clock=clock)


@pytest.fixture
def probe() -> StaticProbe:
    return StaticProbe(used=100 * MiB, limit=LIMIT)


def _names(path: Path) -> list[str]:
    return [p.name for p in path.iterdir()]


async def settle(clock: ManualClock) -> None:
    """Let every task run until it waits (on an event, a stream or the manual clock)."""
    await wait_all_tasks_blocked()


async def test_lifecycle_starts_supervised_tasks_and_reports_json(
    clock: ManualClock, probe: StaticProbe
) -> None:
    warden = make(clock, probe)
    assert warden.manager.capacity == int(LIMIT * 0.85)
    async with warden:
        await settle(clock)
        status = warden.supervisor.status()
        assert {
            "pressure-monitor",
            "pressure-reactions",
            "session-cleanup",
            "pool-reaper",
            "cache-sweeper",
            "leak-sample",
            "leak-check",
        } <= set(status)
        assert all(s.state in ("running", "sleeping") for s in status.values())
        report = warden.report()
        json.dumps(report)
        assert report["level"] == "low"
        assert report["budget"]["total_allocated"] == warden.manager.capacity
        assert report["sample"]["used"] == 100 * MiB
    assert not warden.supervisor.running
    assert warden.gc.installed is False


async def test_explicit_capacity_and_entering_twice(clock: ManualClock, probe: StaticProbe) -> None:
    warden = make(clock, probe, capacity=64 * MiB)
    assert warden.manager.capacity == 64 * MiB
    async with warden:
        with pytest.raises(RuntimeError, match="already running"):
            await warden.__aenter__()


async def test_high_pressure_shrinks_caches_and_trims_pools(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe) as warden:
        cache = warden.caches.create_lru_cache("results", capacity=100)
        for i in range(10):
            cache.put(i, str(i))
        pool = warden.create_pool("conns", object, max_size=4, min_size=1)
        leases = [await pool.acquire() for _ in range(3)]
        for obj in leases:
            await pool.release(obj)
        assert pool.stats().idle == 3
        await settle(clock)

        probe.set_fraction(0.90)
        warden.monitor.sample_now()
        await settle(clock)

        assert warden.monitor.level is PressureLevel.HIGH
        assert len(cache) == 5
        assert pool.stats().size == 1  # trimmed to min_size
        assert warden.report()["reactions"]["high"] == 1


async def test_critical_pressure_clears_caches_and_expires_idle_sessions(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe, critical_session_min_idle=30.0) as warden:
        cache = warden.caches.create_lru_cache("results", capacity=100)
        cache.put("a", 1)
        idle = await warden.sessions.create_session(user="idle")
        clock.advance(60)
        busy = await warden.sessions.create_session(user="busy")
        await settle(clock)

        probe.set_fraction(0.97)
        warden.monitor.sample_now()
        await settle(clock)

        assert warden.monitor.level is PressureLevel.CRITICAL
        assert len(cache) == 0
        assert warden.sessions.get_session(idle) is None
        assert warden.sessions.get_session(busy) is not None
        assert warden.report()["reactions"]["critical"] == 1


async def test_pool_creation_waits_while_critical_then_proceeds(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe) as warden:
        pool = warden.create_pool("conns", object, max_size=2)
        probe.set_fraction(0.97)
        warden.monitor.sample_now()
        got: list[object] = []

        async def take() -> None:
            got.append(await pool.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await settle(clock)
            assert got == []  # held back by the creation gate
            assert pool.stats().size == 0
            probe.set_fraction(0.5)
            warden.monitor.sample_now()  # below the line: the Warden's min_dwell starts
            clock.advance(warden.config.monitor_min_dwell)
            warden.monitor.sample_now()
        assert len(got) == 1
        assert pool.stats().in_use == 1
        await pool.release(got[0])


async def test_pool_creation_gate_times_out(clock: ManualClock, probe: StaticProbe) -> None:
    async with make(clock, probe, critical_create_timeout=0.01) as warden:
        pool = warden.create_pool("conns", object, max_size=2)
        probe.set_fraction(0.97)
        warden.monitor.sample_now()
        with pytest.raises(PoolExhaustedError, match="critical"):
            await pool.acquire()
        stats = pool.stats()
        assert (stats.size, stats.in_use, stats.waiters) == (0, 0, 0)


async def test_create_pool_rejects_duplicates_and_bad_names(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe) as warden:
        pool = warden.create_pool("p", object)
        with pytest.raises(ValueError, match="'p'"):
            warden.create_pool("p", object)
        with pytest.raises(ValueError, match="name"):
            warden.create_pool("", object)
        assert warden.get_pool("p") is pool
        with pytest.raises(KeyError, match="'q'"):
            warden.get_pool("q")
    assert pool.closed


async def test_periodic_leak_sampling_and_check(clock: ManualClock, probe: StaticProbe) -> None:
    config_changes = {"leak_sample_interval": 1.0, "leak_check_interval": 5.0}
    async with make(clock, probe, **config_changes) as warden:
        warden.caches.create_lru_cache("c", capacity=10)
        events = []
        async with warden.leaks.subscribe() as stream:
            # A steady 200 kB/s rise of memory use: a leak by any measure.
            for step in range(60):
                probe.set(used=100 * MiB + step * 200_000)
                warden.monitor.sample_now()
                await settle(clock)
                clock.advance(1.0)
                await settle(clock)
            while True:
                try:
                    events.append(stream.receive_nowait())
                except anyio.WouldBlock:
                    break
        series = warden.leaks.series()
        assert "memory.used" in series
        assert "cache.c.nbytes" in series
        findings = warden.report()["leaks"]
        assert findings["memory.used"]["is_leak"] is True
        assert findings["sessions.bytes"]["is_leak"] is False
        assert [e.series for e in events] == ["memory.used"]


async def test_history_survives_a_restart(
    clock: ManualClock, probe: StaticProbe, tmp_path: Path
) -> None:
    async with make(clock, probe, tmp_path) as warden:
        for _ in range(8):
            clock.advance(1.0)
            warden.sample_series()
        await warden.check_leaks()
    assert any(name.startswith("leak_series") for name in _names(tmp_path))
    assert any(name.startswith("leaks") for name in _names(tmp_path))
    async with make(clock, probe, tmp_path) as again:
        assert again.report()["history"]["restored_records"] >= 8
        assert len(again.leaks.history("memory.used")) >= 8


async def test_cancelling_the_body_shuts_everything_down(
    clock: ManualClock, probe: StaticProbe
) -> None:
    closed: list[object] = []
    with anyio.CancelScope() as scope:
        async with make(clock, probe) as warden:
            pool = warden.create_pool("p", object, close=closed.append)
            obj = await pool.acquire()
            await pool.release(obj)
            warden.resources.register_resource("r", object(), lambda _r: closed.append("r"))
            scope.cancel()
            await anyio.sleep_forever()
    assert pool.closed
    assert closed == [obj, "r"]
    assert not warden.supervisor.running
    assert all(cb.__class__.__name__ != "_PauseRecorder" for cb in pygc.callbacks)


async def test_react_survives_a_failing_component(
    clock: ManualClock, probe: StaticProbe, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(clock, probe) as warden:

        async def broken(*_args: object, **_kw: object) -> None:
            raise RuntimeError("boom")

        warden.caches.react = broken  # type: ignore[method-assign]
        warden.create_pool("p", object)
        probe.set_fraction(0.9)
        warden.monitor.sample_now()
        await settle(clock)
        assert "pressure reaction caches failed" in caplog.text
        assert warden.report()["reactions"]["high"] == 1


def test_bad_arguments_raise_type_error(clock: ManualClock, probe: StaticProbe) -> None:
    with pytest.raises(TypeError, match="config"):
        Warden({"capacity": 1}, probe=probe)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="probe"):
        Warden(WardenConfig(), probe=object())  # type: ignore[arg-type]


def test_runs_under_trio(probe: StaticProbe) -> None:
    async def main() -> dict[str, object]:
        clock = ManualClock()
        async with make(clock, probe) as warden:
            cache = warden.caches.create_lru_cache("c", capacity=4)
            cache.put(1, 1)
            cache.put(2, 2)
            probe.set_fraction(0.9)
            warden.monitor.sample_now()
            await wait_all_tasks_blocked()
            assert len(cache) == 1
            return warden.report()

    report = anyio.run(main, backend="trio")
    assert report["level"] == "high"


async def test_tracked_packages_become_leak_series(
    clock: ManualClock, probe: StaticProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg_growing"
    package.mkdir()
    (package / "__init__.py").write_text(
        "HELD = []\n\ndef grow(n):\n    HELD.append(bytearray(n))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    async with make(clock, probe, profiling_enabled=True) as warden:
        warden.loader.register("pkg_growing")
        module = warden.loader.load("pkg_growing")
        for _ in range(3):
            module.grow(50_000)
            clock.advance(1.0)
            assert await warden.update_packages() == 1
        history = warden.leaks.history("package.pkg_growing.bytes")
        assert len(history) == 3
        assert history[-1][1] > history[0][1] >= 50_000
        assert warden.leaks.series()["package.pkg_growing.bytes"] == "package"
    sys.modules.pop("pkg_growing", None)


async def test_timeout_in_the_body_shuts_everything_down(
    clock: ManualClock, probe: StaticProbe
) -> None:
    closed: list[object] = []
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            async with make(clock, probe) as warden:
                pool = warden.create_pool("p", object, close=closed.append)
                await pool.release(await pool.acquire())
                await anyio.sleep_forever()
    assert pool.closed and len(closed) == 1
    assert not warden.supervisor.running
    assert warden.manager.current_usage == 0


async def test_cancelled_acquire_at_the_creation_gate_leaks_nothing(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe) as warden:
        pool = warden.create_pool("conns", object, max_size=1)
        probe.set_fraction(0.97)
        warden.monitor.sample_now()

        async def take() -> None:
            await pool.acquire()

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(take)
                await settle(clock)
                assert pool.stats().pending == 1  # a creation slot held at the gate
                scope.cancel()
        stats = pool.stats()
        assert (stats.size, stats.pending, stats.waiters, stats.in_use) == (0, 0, 0, 0)
        probe.set_fraction(0.5)
        warden.monitor.sample_now()
        clock.advance(warden.config.monitor_min_dwell)
        warden.monitor.sample_now()
        obj = await pool.acquire()  # the slot came back
        assert pool.stats().in_use == 1
        await pool.release(obj)


async def test_ready_follows_the_shedding_level(clock: ManualClock, probe: StaticProbe) -> None:
    async with make(clock, probe, shed_level=PressureLevel.HIGH) as warden:
        assert warden.ready and warden.report()["ready"] is True
        probe.set_fraction(0.9)
        warden.monitor.sample_now()
        assert warden.monitor.level is PressureLevel.HIGH and not warden.ready
        assert warden.report()["shed_level"] == "high"


async def test_a_warden_charges_sessions_and_byte_weighted_caches(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe) as warden:
        assert warden.monitor.min_dwell == warden.config.monitor_min_dwell == 1.0
        session = await warden.sessions.create_session(blob=b"x" * 100_000)
        charged = warden.manager.current_usage
        assert charged >= 100_000
        cache = warden.caches.create_lru_cache("results", max_bytes=10 * MiB)
        cache.put("k", b"y" * 200_000)
        assert warden.manager.current_usage >= charged + 200_000
        cache.clear()
        await warden.sessions.end_session(session)
        assert warden.manager.current_usage == 0


async def test_memory_history_carries_managed_unmanaged_and_cache(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(clock, probe, monitor_history=3) as warden:
        cache = warden.caches.create_lru_cache("results", max_bytes=10 * MiB)
        cache.put("k", b"y" * 200_000)
        async with warden.manager.reserve(5 * MiB):
            probe.set(used=300 * MiB, limit=LIMIT)
            warden.monitor.sample_now()
            point = warden.memory_history()[-1]
        assert point["used"] == 300 * MiB and point["limit"] == LIMIT
        assert point["cache"] >= 200_000 and point["cache"] == warden.manager.get_stats().evictable
        assert point["managed"] == 5 * MiB + point["cache"]
        assert point["unmanaged"] >= 300 * MiB - point["managed"]
        assert point["capacity"] == warden.manager.capacity
        for _ in range(5):
            warden.monitor.sample_now()
        points = warden.memory_history()
        assert len(points) == 3
        assert [p["timestamp"] for p in points] == sorted(p["timestamp"] for p in points)
        assert warden.memory_history(limit=1) == points[-1:]
        for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)):
            with pytest.raises(error, match="limit"):
                warden.memory_history(limit=bad)  # type: ignore[arg-type]


@on_both
async def test_warden_subscriptions_end_when_it_closes(probe: StaticProbe) -> None:
    config = WardenConfig(monitor_use_psi=False)
    seen: list[str] = []
    warden = Warden(config, probe=probe)
    assert not warden.running

    async def read(events: object) -> None:
        async for event in events:  # type: ignore[attr-defined]
            seen.append(event.level.label)

    async with anyio.create_task_group() as tg:
        async with warden:
            assert warden.running
            events = warden.subscribe(buffer=4)
            tg.start_soon(read, events)
            await wait_all_tasks_blocked()
            assert seen == ["low"]
        assert not warden.running
    assert events.closed
    assert warden.subscribe().closed  # asked for after closing: already ended
    with pytest.raises(ValueError, match="buffer"):
        warden.subscribe(buffer=0)


def test_a_warden_never_run_leaves_no_gc_hook(clock: ManualClock, probe: StaticProbe) -> None:
    before = list(pygc.callbacks)
    warden = make(clock, probe)
    assert pygc.callbacks == before and not warden.gc.installed

    async def main() -> None:
        async with warden:
            assert warden.gc.installed

    anyio.run(main)
    assert pygc.callbacks == before


async def test_upkeep_runs_seed_003s_emergency_and_proactive_collection(
    clock: ManualClock, probe: StaticProbe
) -> None:
    async with make(
        clock, probe, emergency_cleanup_threshold_mb=50.0, proactive_gc_threshold=90.0
    ) as warden:
        assert await warden.upkeep() is None
        probe.set_fraction(0.91)  # 90 MiB available: proactive collection only
        warden.monitor.sample_now()
        assert await warden.upkeep() == "collect"
        assert await warden.upkeep() is None  # cooling down
        clock.advance(5.0)
        probe.set_fraction(0.96)  # 40 MiB available: the emergency path
        warden.monitor.sample_now()
        assert await warden.upkeep() == "emergency"
        assert warden.report()["upkeep"] == {"emergency": 1, "collect": 1}
        assert "memory-upkeep" in warden.report()["supervisor"]["tasks"]
    off = make(clock, probe, emergency_cleanup_threshold_mb=0.0, enable_proactive_gc=False)
    async with off:
        assert "memory-upkeep" not in off.report()["supervisor"]["tasks"]
