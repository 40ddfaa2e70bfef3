"""PressureMonitor's synchronous core: sampling, hysteresis, renotify, listeners, history."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memwarden.pressure import (
    MonitorStats,
    PressureEvent,
    PressureLevel,
    PressureMonitor,
    PressureThresholds,
)
from memwarden.probes import MemorySample
from memwarden.testing import ManualClock, StaticProbe

LOW, MEDIUM, HIGH, CRITICAL = (
    PressureLevel.LOW,
    PressureLevel.MEDIUM,
    PressureLevel.HIGH,
    PressureLevel.CRITICAL,
)


def make(
    probe: StaticProbe, clock: ManualClock, **kw: object
) -> tuple[PressureMonitor, list[PressureEvent]]:
    monitor = PressureMonitor(probe, clock=clock, use_psi=False, **kw)  # type: ignore[arg-type]
    events: list[PressureEvent] = []
    monitor.add_listener(events.append)
    return monitor, events


def levels(events: list[PressureEvent]) -> list[tuple[PressureLevel, PressureLevel]]:
    return [(e.previous, e.level) for e in events]


def test_initial_state_is_low_with_no_sample(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    assert monitor.level is LOW
    assert monitor.last_sample is None
    assert monitor.history() == []
    assert events == []


def test_first_low_sample_publishes_nothing(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    probe.set_fraction(0.5)
    sample = monitor.sample_now()
    assert sample.used == probe.used
    assert monitor.last_sample is sample
    assert events == []


def test_first_sample_above_low_publishes(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    probe.set_fraction(0.9)
    sample = monitor.sample_now()
    assert levels(events) == [(LOW, HIGH)]
    assert events[0].sample is sample
    assert events[0].timestamp == sample.timestamp


def test_hysteresis_sequence(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    seen = []
    for fraction in [0.5, 0.71, 0.69, 0.679, 0.86, 0.84, 0.96, 0.94, 0.92, 0.5, 0.5]:
        probe.set_fraction(fraction)
        monitor.sample_now()
        seen.append(monitor.level)
    assert seen == [LOW, MEDIUM, MEDIUM, LOW, HIGH, HIGH, CRITICAL, CRITICAL, HIGH, LOW, LOW]
    assert levels(events) == [
        (LOW, MEDIUM),
        (MEDIUM, LOW),
        (LOW, HIGH),
        (HIGH, CRITICAL),
        (CRITICAL, HIGH),
        (HIGH, LOW),
    ]


def test_hovering_at_a_threshold_does_not_flap(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    for fraction in [0.851, 0.849, 0.852, 0.84, 0.851, 0.835] * 5:
        probe.set_fraction(fraction)
        monitor.sample_now()
    assert levels(events) == [(LOW, HIGH)]


def test_renotify_while_high(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock, renotify_interval=10.0)
    probe.set_fraction(0.9)
    monitor.sample_now()
    for _ in range(9):
        clock.advance(1.0)
        monitor.sample_now()
    assert len(events) == 1  # 9 s later: not yet
    clock.advance(1.0)
    monitor.sample_now()
    assert levels(events) == [(LOW, HIGH), (HIGH, HIGH)]
    clock.advance(5.0)
    probe.set_fraction(0.97)
    monitor.sample_now()  # a change resets the renotify timer
    clock.advance(9.9)
    monitor.sample_now()
    assert levels(events)[-1] == (HIGH, CRITICAL)
    clock.advance(0.1)
    monitor.sample_now()
    assert levels(events)[-1] == (CRITICAL, CRITICAL)
    assert monitor.stats().renotifications == 2


def test_no_renotify_below_high(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock, renotify_interval=1.0)
    probe.set_fraction(0.75)
    for _ in range(5):
        monitor.sample_now()
        clock.advance(2.0)
    assert levels(events) == [(LOW, MEDIUM)]


def test_history_is_bounded_oldest_first(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, _ = make(probe, clock, history=3)
    for used in range(5):
        probe.set(used=used)
        monitor.sample_now()
    history = monitor.history()
    assert [s.used for s in history] == [2, 3, 4]
    history.clear()  # a copy: the monitor keeps its own
    assert len(monitor.history()) == 3


def test_listeners_run_in_order_and_can_be_removed(probe: StaticProbe, clock: ManualClock) -> None:
    monitor = PressureMonitor(probe, clock=clock, use_psi=False)
    calls: list[str] = []
    remove_a = monitor.add_listener(lambda e: calls.append("a"))
    monitor.add_listener(lambda e: calls.append("b"))
    probe.set_fraction(0.9)
    monitor.sample_now()
    assert calls == ["a", "b"]
    remove_a()
    remove_a()  # idempotent
    probe.set_fraction(0.1)
    monitor.sample_now()
    assert calls == ["a", "b", "b"]
    assert monitor.stats().listeners == 1


def test_raising_listener_is_logged_and_removed(
    probe: StaticProbe, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = PressureMonitor(probe, clock=clock, use_psi=False)
    good: list[PressureEvent] = []

    def bad(event: PressureEvent) -> None:
        raise RuntimeError("listener broke")

    monitor.add_listener(bad)
    monitor.add_listener(good.append)
    sub = monitor.subscribe(include_current=False)
    probe.set_fraction(0.9)
    monitor.sample_now()
    probe.set_fraction(0.1)
    monitor.sample_now()
    assert len(good) == 2
    assert sub.pending == 2
    assert monitor.stats().listeners == 1
    assert "listener broke" in caplog.text
    assert any(r.name == "memwarden.pressure" for r in caplog.records)


def test_listener_may_read_the_monitor(probe: StaticProbe, clock: ManualClock) -> None:
    monitor = PressureMonitor(probe, clock=clock, use_psi=False)
    seen: list[PressureLevel] = []
    monitor.add_listener(lambda e: seen.append(monitor.level))
    probe.set_fraction(0.99)
    monitor.sample_now()
    assert seen == [CRITICAL]


def test_probe_error_leaves_state_unchanged(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, events = make(probe, clock)
    probe.set_fraction(0.9)
    monitor.sample_now()

    class Broken:
        def sample(self) -> MemorySample:
            raise OSError("gone")

    monitor._probe = Broken()
    with pytest.raises(OSError, match="gone"):
        monitor.sample_now()
    assert monitor.level is HIGH
    assert len(monitor.history()) == 1
    assert len(events) == 1


def test_stats(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, _ = make(probe, clock)
    sub = monitor.subscribe(buffer=1, include_current=False)
    for fraction in (0.9, 0.1, 0.9):
        probe.set_fraction(fraction)
        monitor.sample_now()
    stats = monitor.stats()
    assert isinstance(stats, MonitorStats)
    assert stats.samples == 3 and stats.events == 3
    assert stats.subscribers == 1 and stats.peak_subscribers == 1
    assert stats.max_dropped == 2 == sub.dropped
    assert stats.level is HIGH and not stats.running and not stats.psi_active
    sub.close()
    assert monitor.stats().subscribers == 0
    assert monitor.stats().max_dropped == 2
    data = monitor.stats().to_dict()
    assert data["level"] == "high" and data["samples"] == 3
    assert json.loads(json.dumps(data)) == data


def test_default_probe_is_system_probe(clock: ManualClock) -> None:
    from memwarden.probes import SystemProbe

    monitor = PressureMonitor(clock=clock, use_psi=False)
    assert isinstance(monitor.probe, SystemProbe)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0, got 0"),
        ({"interval": math.nan}, ValueError, "interval must not be NaN"),
        ({"interval": "1"}, TypeError, "interval must be a number, got str '1'"),
        ({"history": 0}, ValueError, "history must be >= 1, got 0"),
        ({"history": 2.0}, TypeError, "history must be an int, got float 2.0"),
        ({"renotify_interval": -1.0}, ValueError, "renotify_interval must be > 0, got -1.0"),
        ({"thresholds": (0.7, 0.8, 0.9)}, TypeError, "thresholds must be a PressureThresholds"),
        ({"clock": 5}, TypeError, "clock must be callable, got 5"),
        ({"sleep": None}, TypeError, "sleep must be callable, got None"),
        ({"use_psi": "yes"}, TypeError, "use_psi must be a bool, got str 'yes'"),
    ],
)
def test_bad_constructor_arguments(
    probe: StaticProbe, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PressureMonitor(probe, **kwargs)  # type: ignore[arg-type]


def test_probe_without_sample_is_rejected() -> None:
    with pytest.raises(TypeError, match="probe must have a sample\\(\\) method, got object"):
        PressureMonitor(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"min_level": "severe"}, ValueError, "unknown pressure level min_level='severe'"),
        (
            {"min_level": 1.5},
            TypeError,
            "min_level must be a PressureLevel, str or int, got float 1.5",
        ),
        (
            {"min_level": True},
            TypeError,
            "min_level must be a PressureLevel, str or int, got bool True",
        ),
        ({"buffer": 0}, ValueError, "buffer must be >= 1, got 0"),
        ({"buffer": None}, TypeError, "buffer must be an int, got NoneType None"),
        ({"overflow": "drop_newest"}, ValueError, "got 'drop_newest'"),
        ({"include_current": 1}, TypeError, "include_current must be a bool, got int 1"),
    ],
)
def test_bad_subscribe_arguments_leave_no_subscription(
    probe: StaticProbe,
    clock: ManualClock,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    monitor, _ = make(probe, clock)
    with pytest.raises(error, match=message):
        monitor.subscribe(**kwargs)  # type: ignore[arg-type]
    assert monitor.stats().subscribers == 0
    assert monitor.stats().samples == 0


def test_add_listener_rejects_non_callable(probe: StaticProbe, clock: ManualClock) -> None:
    monitor, _ = make(probe, clock)
    with pytest.raises(TypeError, match="callback must be callable, got 3"):
        monitor.add_listener(3)  # type: ignore[arg-type]


THRESHOLDS = PressureThresholds()


@given(st.lists(st.floats(0.0, 1.2, allow_nan=False), min_size=1, max_size=50))
def test_level_stays_within_one_hysteresis_band(fractions: list[float]) -> None:
    probe = StaticProbe(0, 1_000_000_000)
    monitor = PressureMonitor(probe, clock=ManualClock(), use_psi=False)
    for fraction in fractions:
        probe.set_fraction(fraction)
        sample = monitor.sample_now()
        exact = sample.fraction
        raw = THRESHOLDS.classify(exact)
        assert monitor.level >= raw
        assert monitor.level <= THRESHOLDS.classify(exact + THRESHOLDS.hysteresis)


class MonitorMachine(RuleBasedStateMachine):
    """sample_now's events against a direct model of hysteresis and renotify."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(0.0)
        self.probe = StaticProbe(0, 10_000)
        self.monitor = PressureMonitor(
            self.probe, clock=self.clock, renotify_interval=5.0, history=4, use_psi=False
        )
        self.events: list[PressureEvent] = []
        self.monitor.add_listener(self.events.append)
        self.model_level = LOW
        self.model_events: list[tuple[PressureLevel, PressureLevel]] = []
        self.last_notified = -math.inf
        self.samples = 0

    @rule(used=st.integers(0, 11_000))
    def set_used(self, used: int) -> None:
        self.probe.set(used=used)

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5, 5.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def sample(self) -> None:
        self.monitor.sample_now()
        self.samples += 1
        fraction = self.probe.used / self.probe.limit
        h = THRESHOLDS.hysteresis
        # Step down one level at a time while below the current level's exit point.
        level = THRESHOLDS.classify(fraction)
        if level < self.model_level:
            level = self.model_level
            while level > LOW and fraction + h < THRESHOLDS.threshold(level):
                level = PressureLevel(level - 1)
        now = self.clock()
        if level != self.model_level:
            self.model_events.append((self.model_level, level))
            self.last_notified = now
        elif level >= HIGH and now - self.last_notified >= 5.0:
            self.model_events.append((level, level))
            self.last_notified = now
        self.model_level = level

    @invariant()
    def agrees(self) -> None:
        assert self.monitor.level is self.model_level
        assert levels(self.events) == self.model_events
        assert len(self.monitor.history()) == min(self.samples, 4)


TestMonitorMachine = MonitorMachine.TestCase
TestMonitorMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_thresholds_used_by_monitor_are_custom(probe: StaticProbe, clock: ManualClock) -> None:
    custom = PressureThresholds(medium=0.5, high=0.6, critical=0.7, hysteresis=0.0)
    monitor, events = make(probe, clock, thresholds=custom)
    assert events == []
    probe.set_fraction(0.65)
    monitor.sample_now()
    assert monitor.level is HIGH
    assert levels(events) == [(LOW, HIGH)]
    assert monitor.thresholds is custom


def test_sample_listeners_see_every_sample_before_event_listeners() -> None:
    probe = StaticProbe(used=10, limit=100)
    monitor = PressureMonitor(probe)
    seen: list[str] = []
    remove = monitor.add_sample_listener(lambda sample: seen.append(f"sample {sample.used}"))
    monitor.add_listener(lambda event: seen.append(f"event {event.level.label}"))
    monitor.sample_now()  # LOW -> LOW: no event
    probe.set(used=90, limit=100)
    monitor.sample_now()  # LOW -> HIGH
    assert seen == ["sample 10", "sample 90", "event high"]
    remove()
    remove()
    monitor.sample_now()
    assert len(seen) == 3


def test_a_sample_listener_that_raises_is_removed() -> None:
    monitor = PressureMonitor(StaticProbe(used=10, limit=100))
    calls = 0

    def broken(sample: object) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    monitor.add_sample_listener(broken)
    monitor.sample_now()
    monitor.sample_now()
    assert calls == 1
    with pytest.raises(TypeError, match="callback"):
        monitor.add_sample_listener(5)  # type: ignore[arg-type]
