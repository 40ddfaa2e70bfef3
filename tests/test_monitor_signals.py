"""Fast signals: min_dwell, the adaptive interval, kernel wake-ups and the start/level logs."""

from __future__ import annotations

import math

import anyio
import pytest
from both_backends import on_both

from memwarden.pressure import PressureEvent, PressureLevel, PressureMonitor
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
