"""Fast signals: min_dwell, the adaptive interval, kernel wake-ups and the start/level logs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both
from test_probes import FakeHost

from memwarden import _psi
from memwarden._psi import PsiTrigger
from memwarden.pressure import PressureEvent, PressureLevel, PressureMonitor
from memwarden.probes import SystemProbe
from memwarden.testing import ManualClock, StaticProbe

LOW, MEDIUM, HIGH, CRITICAL = (
    PressureLevel.LOW,
    PressureLevel.MEDIUM,
    PressureLevel.HIGH,
    PressureLevel.CRITICAL,
)


def _monitor(
    probe: StaticProbe, clock: ManualClock, **kw: object
) -> tuple[PressureMonitor, list[tuple[PressureLevel, PressureLevel]]]:
    monitor = PressureMonitor(
        probe,
        clock=clock,
        sleep=clock.sleep,
        use_psi=False,
        **kw,  # type: ignore[arg-type]
    )
    changes: list[tuple[PressureLevel, PressureLevel]] = []

    def on_event(event: PressureEvent) -> None:
        if event.level != event.previous:
            changes.append((event.previous, event.level))

    monitor.add_listener(on_event)
    return monitor, changes


def _at(probe: StaticProbe, monitor: PressureMonitor, fraction: float) -> PressureLevel:
    probe.set_fraction(fraction)
    monitor.sample_now()
    return monitor.level


# -- min_dwell -----------------------------------------------------------------------


def test_moving_up_is_immediate_moving_down_waits_min_dwell() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, changes = _monitor(probe, clock, min_dwell=1.0)
    assert monitor.min_dwell == 1.0
    assert _at(probe, monitor, 0.96) is CRITICAL  # LOW -> CRITICAL at once
    assert _at(probe, monitor, 0.5) is CRITICAL  # below 0.93 since t=0
    clock.advance(0.5)
    assert _at(probe, monitor, 0.5) is CRITICAL
    clock.advance(0.49)
    assert _at(probe, monitor, 0.5) is CRITICAL
    clock.advance(0.01)  # 1.0 s below the exit line
    assert _at(probe, monitor, 0.5) is LOW  # one step, straight down
    assert changes == [(LOW, CRITICAL), (CRITICAL, LOW)]
    assert monitor.stats().dwell_holds == 3


def test_going_back_above_the_exit_line_restarts_the_dwell() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, changes = _monitor(probe, clock, min_dwell=1.0)
    assert _at(probe, monitor, 0.9) is HIGH
    assert _at(probe, monitor, 0.8) is HIGH  # below 0.83: the dwell starts
    clock.advance(0.75)
    assert _at(probe, monitor, 0.84) is HIGH  # back above 0.83: reset
    clock.advance(0.5)
    assert _at(probe, monitor, 0.8) is HIGH  # 1.25 s after the first drop, but a new dwell
    clock.advance(0.5)
    assert _at(probe, monitor, 0.8) is HIGH
    clock.advance(0.5)
    assert _at(probe, monitor, 0.8) is MEDIUM
    assert changes == [(LOW, HIGH), (HIGH, MEDIUM)]


def test_a_rise_during_the_dwell_is_immediate() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, changes = _monitor(probe, clock, min_dwell=1.0)
    _at(probe, monitor, 0.9)
    _at(probe, monitor, 0.5)
    clock.advance(0.5)
    assert _at(probe, monitor, 0.97) is CRITICAL
    assert changes == [(LOW, HIGH), (HIGH, CRITICAL)]


@pytest.mark.parametrize(("min_dwell", "expected_changes"), [(0.0, 100), (1.0, 1)])
def test_an_oscillating_probe_flaps_only_without_dwell(
    min_dwell: float, expected_changes: int
) -> None:
    # 0.90 / 0.80 every 0.1 s: 0.80 is below HIGH's exit line (0.83), so hysteresis
    # alone moves the level on every sample; min_dwell holds HIGH throughout.
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, changes = _monitor(probe, clock, min_dwell=min_dwell)
    for i in range(100):
        _at(probe, monitor, 0.9 if i % 2 == 0 else 0.8)
        clock.advance(0.1)
    assert len(changes) == expected_changes
    if min_dwell:
        assert monitor.level is HIGH


def test_classify_alone_is_unchanged_by_dwell() -> None:
    monitor, _ = _monitor(StaticProbe(0, 1000), ManualClock(), min_dwell=5.0)
    assert monitor.thresholds.classify(0.5, HIGH) is LOW


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1.0, ValueError, "min_dwell must be >= 0.0, got -1.0"),
        (math.nan, ValueError, "min_dwell must not be NaN, got nan"),
        (math.inf, ValueError, "min_dwell must be finite, got inf"),
        ("1", TypeError, "min_dwell must be a number, got str '1'"),
        (True, TypeError, "min_dwell must be a number, got bool True"),
    ],
)
def test_min_dwell_is_validated(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        PressureMonitor(StaticProbe(), min_dwell=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0.0, ValueError, "min_interval must be > 0, got 0.0"),
        (math.nan, ValueError, "min_interval must not be NaN, got nan"),
        ("fast", TypeError, "min_interval must be a number, got str 'fast'"),
    ],
)
def test_min_interval_is_validated(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        PressureMonitor(StaticProbe(), min_interval=value)  # type: ignore[arg-type]


# -- the adaptive interval --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.0, 1.0),
        (0.69, 1.0),
        (0.70, 1.0),
        (0.775, math.sqrt(0.1)),  # halfway between the lines: the geometric mean
        (0.85, 0.1),
        (0.99, 0.1),
    ],
)
def test_current_interval_follows_the_headroom(fraction: float, expected: float) -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, _ = _monitor(probe, clock, interval=1.0, min_interval=0.1)
    _at(probe, monitor, fraction)
    assert monitor.current_interval == pytest.approx(expected)
    assert monitor.stats().current_interval == pytest.approx(expected)


def test_a_level_held_high_keeps_the_fast_interval() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, _ = _monitor(probe, clock, min_dwell=1.0)
    _at(probe, monitor, 0.9)
    assert _at(probe, monitor, 0.3) is HIGH  # held by min_dwell
    assert monitor.current_interval == pytest.approx(0.1)


def test_min_interval_at_or_above_interval_turns_adaptation_off() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, _ = _monitor(probe, clock, interval=0.05, min_interval=0.1)
    assert monitor.min_interval == 0.05
    _at(probe, monitor, 0.99)
    assert monitor.current_interval == 0.05


async def _samples_in(
    clock: ManualClock, probe: StaticProbe, seconds: float, step: float = 0.0625
) -> int:
    # Binary fractions keep the manual clock exact: no sample slips a step late.
    before = probe.samples_taken
    for _ in range(round(seconds / step)):
        await clock.advance_when_parked(step)
        await clock.wait_for_sleepers(1)
    return probe.samples_taken - before


def test_default_min_interval_samples_ten_times_a_second_at_high() -> None:
    monitor, _ = _monitor(StaticProbe(900, 1000), ManualClock())
    assert monitor.min_interval == 0.1
    monitor.sample_now()
    assert monitor.current_interval == 0.1


@on_both
async def test_run_samples_faster_as_the_headroom_shrinks() -> None:
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, _ = _monitor(probe, clock, interval=1.0, min_interval=0.125)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        assert await _samples_in(clock, probe, 3.0) == 3  # LOW: the plain interval
        probe.set_fraction(0.9)
        await _samples_in(clock, probe, 1.0)  # the next scheduled sample sees HIGH
        assert monitor.level is HIGH
        assert await _samples_in(clock, probe, 2.0) == 16  # 1 / min_interval per second
        probe.set_fraction(0.775)  # MEDIUM, halfway to HIGH: every ~0.35 s
        await _samples_in(clock, probe, 1.0)
        assert 4 <= await _samples_in(clock, probe, 2.0) <= 6
        tg.cancel_scope.cancel()
    assert clock.sleepers == 0


# -- kernel wake-ups on fake cgroup trees -------------------------------------------------

GIB = 1 << 30
MIB = 1 << 20


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class Registrations:
    """Records what is written to cgroup.event_control (writes there are concatenated)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[tuple[int, int, int]] = []
        real = _psi._os_write

        def record(fd: int, data: bytes) -> int:
            fields = data.split()
            if len(fields) == 3 and all(f.isdigit() for f in fields):
                efd, target, value = (int(f) for f in fields)
                self.writes.append((efd, target, value))
            return real(fd, data)

        monkeypatch.setattr(_psi, "_os_write", record)

    def values(self, efd: int) -> list[int]:
        return [value for fd, _, value in self.writes if fd == efd]


def _v1_host(tmp_path: Path, *, usage: int, inactive: int, limit: int = GIB) -> FakeHost:
    host = FakeHost(tmp_path)
    host.v1("/app")
    host.v1_level("/app", limit=str(limit), usage=usage, inactive_file=inactive)
    host.write("/sys/fs/cgroup/memory/app/cgroup.event_control", "")
    return host


def _lines(limit: int, inactive: int, *fractions: float) -> list[int]:
    return sorted(round(limit * f) + inactive for f in fractions)


def _thresholds_trigger(monitor: PressureMonitor) -> PsiTrigger:
    (source,) = [s for s in monitor._sources if s.kind == "cgroup-v1-thresholds"]
    return source.trigger


async def _next_sample(monitor: PressureMonitor) -> None:
    seen = anyio.Event()
    remove = monitor.add_sample_listener(lambda sample: seen.set())
    try:
        with anyio.fail_after(10):
            await seen.wait()
    finally:
        remove()


@on_both
async def test_v1_thresholds_armed_at_each_line_plus_inactive_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registrations = Registrations(monkeypatch)
    inactive = 100 * MIB
    host = _v1_host(tmp_path, usage=300 * MIB + inactive, inactive=inactive)
    clock = ManualClock()
    with SystemProbe(root=str(host.root), limit_refresh=0) as probe:
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=3600.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            stats = monitor.stats()
            assert stats.event_sources == ("cgroup-v1-thresholds",)
            assert stats.psi_source is not None
            assert stats.psi_source.endswith("app/memory.usage_in_bytes")
            trigger = _thresholds_trigger(monitor)
            assert registrations.values(trigger._fd) == _lines(GIB, inactive, 0.70, 0.85, 0.95)
            (line,) = monitor.event_sources()
            assert line.startswith("cgroup-v1-thresholds ")
            assert "memory.usage_in_bytes at 816.8 MiB, 970.4 MiB" in line
            tg.cancel_scope.cancel()
        assert monitor.event_sources() == ()
        assert trigger.closed


@on_both
async def test_a_crossing_wakes_run_early_and_rearms_for_the_new_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registrations = Registrations(monkeypatch)
    inactive = 64 * MIB
    host = _v1_host(tmp_path, usage=300 * MIB + inactive, inactive=inactive)
    clock = ManualClock()
    with SystemProbe(root=str(host.root), limit_refresh=0) as probe:
        # An hour between samples: only the crossing can cause the second one.
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=3600.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            first = _thresholds_trigger(monitor)
            await wait_all_tasks_blocked()
            host.v1_level(
                "/app", limit=str(GIB), usage=round(0.9 * GIB) + inactive, inactive_file=inactive
            )
            registrations.writes.clear()  # a new eventfd may reuse the old number
            os.eventfd_write(first._fd, 1)  # what the kernel does on a crossing
            await _next_sample(monitor)
            assert monitor.level is HIGH
            assert clock() == 0.0  # no time passed: the sample came before the interval
            stats = monitor.stats()
            assert stats.psi_wakeups == 1 and stats.samples == 2 and stats.rearms == 1
            assert first.closed
            second = _thresholds_trigger(monitor)
            # HIGH adds the line it would drop below: 0.85 - 0.02.
            assert registrations.values(second._fd) == _lines(GIB, inactive, 0.70, 0.83, 0.85, 0.95)
            tg.cancel_scope.cancel()
        assert second.closed


@on_both
async def test_thresholds_follow_the_limit_and_page_cache_beyond_a_tolerance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registrations = Registrations(monkeypatch)
    host = _v1_host(tmp_path, usage=200 * MIB, inactive=0)
    clock = ManualClock()
    with SystemProbe(root=str(host.root), limit_refresh=0) as probe:
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=1.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            # 2 MiB more page cache: within the tolerance (4 MiB, 1 % of 1 GiB = 10 MiB).
            host.v1_level("/app", limit=str(GIB), usage=202 * MIB, inactive_file=2 * MIB)
            await clock.advance_when_parked(1.0)
            await clock.wait_for_sleepers(1)
            assert monitor.stats().rearms == 0
            # 50 MiB more: every line moves, so they are re-armed.
            registrations.writes.clear()
            host.v1_level("/app", limit=str(GIB), usage=250 * MIB, inactive_file=50 * MIB)
            await clock.advance_when_parked(1.0)
            await clock.wait_for_sleepers(1)
            assert monitor.stats().rearms == 1
            trigger = _thresholds_trigger(monitor)
            assert registrations.values(trigger._fd) == _lines(GIB, 50 * MIB, 0.70, 0.85, 0.95)
            # A new limit re-arms at once.
            registrations.writes.clear()
            host.v1_level("/app", limit=str(2 * GIB), usage=250 * MIB, inactive_file=50 * MIB)
            await clock.advance_when_parked(1.0)
            await clock.wait_for_sleepers(1)
            assert monitor.stats().rearms == 2
            trigger = _thresholds_trigger(monitor)
            assert registrations.values(trigger._fd) == _lines(2 * GIB, 50 * MIB, 0.70, 0.85, 0.95)
            tg.cancel_scope.cancel()


@on_both
async def test_v1_without_event_control_samples_on_the_interval(tmp_path: Path) -> None:
    host = _v1_host(tmp_path, usage=200 * MIB, inactive=0)
    (host.root / "sys/fs/cgroup/memory/app/cgroup.event_control").unlink()
    clock = ManualClock()
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=1.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert monitor.stats().event_sources == ()
            assert not monitor.stats().psi_active
            await clock.advance_when_parked(1.0)
            await clock.wait_for_sleepers(1)
            assert monitor.stats().samples == 2
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["cancel", "timeout"])
@on_both
async def test_run_ending_on_a_fake_tree_leaves_no_descriptors(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inactive = 10 * MIB
    host = _v1_host(tmp_path, usage=900 * MIB, inactive=inactive)
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(probe, interval=3600.0)
        before = _open_fds()
        if how == "cancel":
            async with anyio.create_task_group() as tg:
                await tg.start(monitor.run)
                assert monitor.stats().event_sources == ("cgroup-v1-thresholds",)
                await wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        else:
            with pytest.raises(TimeoutError), anyio.fail_after(0.05):
                await monitor.run()
        assert _open_fds() == before
        assert not monitor.running and monitor.event_sources() == ()


# -- cgroup v2 memory.events --------------------------------------------------------------


def _v2_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path)
    host.v2("/app")
    host.v2_level("/app", limit=str(GIB), current=300 * MIB, inactive_file=0)
    host.write("/sys/fs/cgroup/app/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    return host


@on_both
async def test_v2_memory_events_change_wakes_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, oob: tuple[socket.socket, socket.socket]
) -> None:
    sender, receiver = oob
    host = _v2_host(tmp_path)
    events_path = str(host.root / "sys/fs/cgroup/app/memory.events")
    opened: list[str] = []
    real_open = _psi._os_open

    def fake_open(path: str, flags: int) -> int:
        if path == events_path:
            # A regular file cannot be polled: stand in a descriptor that raises POLLPRI.
            opened.append(path)
            return os.dup(receiver.fileno())
        return int(real_open(path, flags))

    drained: list[int] = []

    def drain(fd: int) -> None:
        drained.append(fd)
        with contextlib.suppress(OSError):
            socket.socket(fileno=os.dup(fd)).recv(1, socket.MSG_OOB)

    monkeypatch.setattr(_psi, "_os_open", fake_open)
    monkeypatch.setattr(_psi, "_looks_like_events", lambda fd: True)
    monkeypatch.setattr(_psi, "_drain_kernfs", drain)
    clock = ManualClock()
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=3600.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert opened == [events_path]
            assert monitor.stats().event_sources == ("cgroup-v2-memory.events",)
            assert len(drained) == 1  # the baseline read when armed
            await wait_all_tasks_blocked()
            sender.send(b"!", socket.MSG_OOB)  # the kernel bumped a counter
            await _next_sample(monitor)
            assert monitor.stats().psi_wakeups == 1 and clock() == 0.0
            assert len(drained) == 2  # read again, so the change is not reported twice
            tg.cancel_scope.cancel()
        assert monitor.event_sources() == ()


def test_memory_events_on_an_ordinary_file_is_refused(tmp_path: Path) -> None:
    host = _v2_host(tmp_path)
    before = _open_fds()
    assert PsiTrigger.open_memory_events(host.root / "sys/fs/cgroup/app") is None
    assert PsiTrigger.open_memory_events(tmp_path / "missing") is None
    assert _open_fds() == before


# -- logging ------------------------------------------------------------------------------


@on_both
async def test_run_logs_one_info_line_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memwarden.pressure")
    host = _v1_host(tmp_path, usage=200 * MIB, inactive=0)
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(probe, interval=3600.0, min_dwell=1.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            tg.cancel_scope.cancel()
    (record,) = [r for r in caplog.records if "started" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.INFO
    assert "limit 1.0 GiB (cgroup v1 " in message and "memory/app)" in message
    assert "min_dwell 1s" in message
    assert "wake-ups: cgroup-v1-thresholds " in message


@on_both
async def test_start_line_without_signals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="memwarden.pressure")
    monitor = PressureMonitor(StaticProbe(100, 1000), interval=3600.0)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        tg.cancel_scope.cancel()
    assert "limit 1000 B (static)" in caplog.text
    assert "wake-ups: none (interval only)" in caplog.text


def test_level_lines_are_rate_limited_per_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="memwarden.pressure")
    clock, probe = ManualClock(), StaticProbe(0, 1000)
    monitor, changes = _monitor(probe, clock)
    for _ in range(5):  # a load in waves, 1 s apart
        _at(probe, monitor, 0.9)
        clock.advance(0.5)
        _at(probe, monitor, 0.1)
        clock.advance(0.5)
    assert len(changes) == 10
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 2
    assert info[0].startswith("memory pressure high (was low): 900 B used of 1000 B (90.0 %)")
    assert info[1].startswith("memory pressure low (was high)")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 8
    caplog.clear()
    clock.advance(10.0)
    _at(probe, monitor, 0.9)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert line.endswith("; entered 4 more times since the last line")


def test_renotifications_log_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="memwarden.pressure")
    clock, probe = ManualClock(), StaticProbe(900, 1000)
    monitor, _ = _monitor(probe, clock)
    monitor.sample_now()
    caplog.clear()
    clock.advance(10.0)
    monitor.sample_now()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "still high" in caplog.text


@on_both
async def test_v1_without_a_limit_falls_back_to_pressure_level(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.v1("/app")
    host.v1_level("/app", limit="9223372036854771712", usage=200 * MIB, inactive_file=0)
    host.write("/sys/fs/cgroup/memory/app/cgroup.event_control", "")
    host.write("/sys/fs/cgroup/memory/app/memory.pressure_level", "")
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(probe, interval=3600.0)
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert monitor.last_sample is not None
            assert monitor.last_sample.source == "system"
            assert monitor.stats().event_sources == ("cgroup-v1-pressure-level",)
            tg.cancel_scope.cancel()


@on_both
async def test_after_an_early_sample_the_next_min_interval_is_not_cut(tmp_path: Path) -> None:
    host = _v1_host(tmp_path, usage=200 * MIB, inactive=0)
    clock = ManualClock()
    with SystemProbe(root=str(host.root)) as probe:
        monitor = PressureMonitor(
            probe, clock=clock, sleep=clock.sleep, interval=3600.0, min_interval=0.125
        )
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            trigger = _thresholds_trigger(monitor)
            await wait_all_tasks_blocked()
            os.eventfd_write(trigger._fd, 1)
            await _next_sample(monitor)
            assert monitor.stats().samples == 2
            os.eventfd_write(trigger._fd, 1)  # a second crossing at once: a storm
            await clock.wait_for_sleepers(1)
            await wait_all_tasks_blocked()
            assert monitor.stats().samples == 2  # held for min_interval
            await clock.advance_when_parked(0.125)
            await _next_sample(monitor)  # answered as soon as the held stretch ends
            assert clock() == 0.125
            stats = monitor.stats()
            assert stats.samples == 3 and stats.psi_wakeups == 2
            tg.cancel_scope.cancel()


@on_both
async def test_kernfs_error_flag_is_a_change_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # kernfs reports a changed file as EPOLLPRI | EPOLLERR; the write end of a pipe
    # whose reader is gone reports EPOLLERR the same way.
    r, w = os.pipe()
    os.close(r)
    drained: list[int] = []
    monkeypatch.setattr(_psi, "_drain_kernfs", drained.append)
    trigger = PsiTrigger(w, "memory.events", events=select.EPOLLPRI | select.EPOLLERR, kernfs=True)
    try:
        assert await trigger.wait(5) is True
        assert not trigger.broken and drained == [w]
    finally:
        trigger.close()
