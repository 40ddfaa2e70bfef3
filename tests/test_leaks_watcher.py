"""LeakWatcher: sampled and pushed series, events on change, subscriptions, restore."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memwarden.leaks import LeakDetector, LeakEvent, LeakReport, LeakWatcher
from memwarden.testing import ManualClock

MB = 1_000_000


class Growing:
    """A source whose value rises by ``rate`` per call until told to stop."""

    def __init__(self, rate: float) -> None:
        self.value = 100.0 * MB
        self.rate = rate

    def __call__(self) -> float:
        self.value += self.rate
        return self.value


def run_checks(watcher: LeakWatcher, clock: ManualClock, count: int) -> list[LeakEvent]:
    events: list[LeakEvent] = []
    for _ in range(count):
        clock.advance(1.0)
        events += watcher.check()
    return events


def test_sampled_series_becomes_leak_then_stops(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    source = Growing(1 * MB)
    watcher.add_series("proc", source, kind="process")
    events = run_checks(watcher, clock, 60)
    assert [e.is_leak for e in events] == [True]
    event = events[0]
    assert (event.series, event.kind) == ("proc", "process")
    assert event.report.growth_rate == pytest.approx(1 * MB)
    assert watcher.leaks().keys() == {"proc"}
    assert event.to_dict()["report"]["is_leak"] is True  # type: ignore[index]
    # The leak is fixed: memory stays flat; once the window is flat, one "resolved" event.
    source.rate = 0.0
    events = run_checks(watcher, clock, 200)
    assert [e.is_leak for e in events] == [False]
    assert watcher.leaks() == {}
    assert not watcher.findings()["proc"].is_leak


def test_flat_series_publishes_nothing(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("cache", lambda: 5.0 * MB, kind="cache")
    assert run_checks(watcher, clock, 120) == []
    report = watcher.findings()["cache"]
    assert isinstance(report, LeakReport) and not report.is_leak


def test_pushed_series_and_history_bound(clock: ManualClock) -> None:
    watcher = LeakWatcher(LeakDetector(window=50))
    for i in range(300):
        watcher.record("pool:db", float(i), 1000.0 + 5000.0 * i, kind="pool")
    assert len(watcher.history("pool:db")) == 100  # 2 * window
    assert watcher.series() == {"pool:db": "pool"}
    events = watcher.check(now=300.0)
    assert [(e.series, e.kind, e.is_leak) for e in events] == [("pool:db", "pool", True)]
    # No new samples: nothing is judged again and nothing is published.
    assert watcher.check(now=301.0) == []


def test_failing_source_does_not_affect_others(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)

    def broken() -> float:
        raise RuntimeError("boom")

    watcher.add_series("broken", broken)
    watcher.add_series("nan", lambda: float("nan"))
    watcher.add_series("ok", Growing(1 * MB))
    events = run_checks(watcher, clock, 60)
    assert [e.series for e in events] == ["ok"]
    assert "broken" not in watcher.findings()


def test_remove_series(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("a", Growing(1 * MB))
    assert watcher.has_series("a")
    assert watcher.remove_series("a") is True
    assert not watcher.has_series("a")
    assert watcher.remove_series("a") is False
    assert run_checks(watcher, clock, 3) == []
    with pytest.raises(KeyError):
        watcher.history("a")


def test_bad_input_is_rejected_and_changes_nothing() -> None:
    watcher = LeakWatcher()
    watcher.add_series("a", lambda: 1.0)
    with pytest.raises(ValueError, match="already watched"):
        watcher.add_series("a", lambda: 2.0)
    with pytest.raises(TypeError, match="source"):
        watcher.add_series("b", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        watcher.add_series("  ", lambda: 1.0)
    with pytest.raises(TypeError, match="name"):
        watcher.record(7, 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value"):
        watcher.record("p", 1.0, float("inf"))
    watcher.record("p", 5.0, 1.0)
    with pytest.raises(ValueError, match="back in time"):
        watcher.record("p", 4.0, 1.0)
    assert watcher.history("p") == [(5.0, 1.0)]
    assert watcher.series() == {"a": "custom", "p": "custom"}
    with pytest.raises(TypeError, match="detector"):
        LeakWatcher(detector="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history"):
        LeakWatcher(history=2)


def test_take_records_and_restore_continue_analysis() -> None:
    first = LeakWatcher()
    for i in range(30):
        first.record("proc", float(i), 100.0 * MB + 1 * MB * i, kind="process")
    records = first.take_records()
    assert len(records) == 30 and first.take_records() == []
    assert records[0] == {"series": "proc", "kind": "process", "t": 0.0, "value": 100.0 * MB}

    # After a restart: restore, then keep sampling; the leak is seen on 30 + 20 samples.
    second = LeakWatcher()
    bad = [{"series": "proc"}, {"series": "", "t": 1.0, "value": 1.0}]
    assert second.restore([*bad, *records]) == 30
    assert second.take_records() == []
    source = Growing(1 * MB)
    source.value = 100.0 * MB + 1 * MB * 29
    second.add_series("proc", source, kind="process")
    events = []
    for i in range(30, 50):
        events += second.check(now=float(i))
    assert [e.is_leak for e in events] == [True]
    assert len(second.history("proc")) == 50


@on_both
async def test_subscription_receives_events(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    received: list[LeakEvent] = []
    async with watcher.subscribe() as events, anyio.create_task_group() as tg:

        async def consume() -> None:
            async for event in events:
                received.append(event)

        tg.start_soon(consume)
        await wait_all_tasks_blocked()
        published = run_checks(watcher, clock, 60)
        watcher.close()
    assert received == published and len(received) == 1


@on_both
async def test_include_current_and_accept(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    run_checks(watcher, clock, 60)
    current = watcher.subscribe(include_current=True)
    event = current.receive_nowait()
    assert event.series == "proc" and event.is_leak
    current.close()
    only_resolved = watcher.subscribe(accept=lambda e: not e.is_leak)
    watcher.add_series("other", Growing(1 * MB))
    run_checks(watcher, clock, 60)
    assert only_resolved.pending == 0
    only_resolved.close()


@on_both
async def test_acheck_runs_in_a_worker_thread(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    events = []
    for _ in range(60):
        clock.advance(1.0)
        events += await watcher.acheck()
    assert [e.series for e in events] == ["proc"]


@on_both
async def test_acheck_cancelled_leaves_watcher_consistent(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await watcher.acheck()
    # The cancelled check either ran fully or not at all; the next one works.
    clock.advance(1.0)
    watcher.check()
    assert 1 <= len(watcher.history("proc")) <= 2


class WatcherMachine(RuleBasedStateMachine):
    """Random add/remove/record/check sequences: events mirror every change of verdict."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(0.0)
        self.watcher = LeakWatcher(LeakDetector(window=20, min_samples=3), clock=self.clock)
        self.sampled: dict[str, Growing] = {}
        self.leaking: dict[str, bool] = {}  # what the events so far say

    names = st.sampled_from(["a", "b", "c"])

    @rule(name=names, rate=st.sampled_from([0.0, 1e5, 1e6]))
    def add(self, name: str, rate: float) -> None:
        if name in self.sampled:
            with pytest.raises(ValueError, match="already watched"):
                self.watcher.add_series(name, Growing(rate))
            return
        source = Growing(rate)
        self.watcher.add_series(name, source)
        self.sampled[name] = source

    @rule(name=names)
    def remove(self, name: str) -> None:
        known = name in self.watcher.series()
        assert self.watcher.remove_series(name) is known
        self.sampled.pop(name, None)
        self.leaking.pop(name, None)

    @rule(name=names, rate=st.sampled_from([0.0, 1e6]))
    def change_rate(self, name: str, rate: float) -> None:
        if name in self.sampled:
            self.sampled[name].rate = rate

    @rule(steps=st.integers(1, 30))
    def check(self, steps: int) -> None:
        for _ in range(steps):
            self.clock.advance(1.0)
            for event in self.watcher.check():
                # An event is a change: never the verdict the series already had.
                assert self.leaking.get(event.series, False) is not event.is_leak
                self.leaking[event.series] = event.is_leak

    @invariant()
    def verdicts_match_events(self) -> None:
        findings = self.watcher.findings()
        for name, report in findings.items():
            assert report.is_leak is self.leaking.get(name, False)
        assert set(self.watcher.leaks()) == {n for n, v in self.leaking.items() if v}

    @invariant()
    def histories_are_bounded(self) -> None:
        for name in self.watcher.series():
            assert len(self.watcher.history(name)) <= 40


TestWatcherMachine = WatcherMachine.TestCase
TestWatcherMachine.settings = settings(max_examples=15, stateful_step_count=15, deadline=None)


@on_both
async def test_acheck_timeout_leaves_watcher_consistent(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    with anyio.move_on_after(0) as scope:
        await watcher.acheck()
    assert scope.cancelled_caught
    # The timed-out check ran whole (worker threads are not abandoned) or not at all.
    assert len(watcher.history("proc")) in (0, 1)
    clock.advance(1.0)
    watcher.check()
    assert len(watcher.history("proc")) in (1, 2)


def test_per_series_detector_for_counts(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    size = Growing(0.5)  # a pool that grows by half an object per second
    size.value = 10.0
    watcher.add_series("pool:db", size, kind="pool", detector=LeakDetector(growth_threshold=0.01))
    watcher.add_series("pool:same-with-bytes-threshold", Growing(0.5), kind="pool")
    events = run_checks(watcher, clock, 60)
    assert [e.series for e in events] == ["pool:db"]
    with pytest.raises(TypeError, match="detector"):
        watcher.add_series("x", size, detector=0.01)  # type: ignore[arg-type]


def test_sample_often_check_rarely(clock: ManualClock) -> None:
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))
    for _ in range(59):
        clock.advance(1.0)
        assert watcher.sample() == 1
    assert watcher.findings() == {}  # nothing judged yet
    clock.advance(1.0)
    events = watcher.check(sample=False)
    assert [e.series for e in events] == ["proc"]
    assert len(watcher.history("proc")) == 59


def test_clock_going_back_restarts_a_sampled_history() -> None:
    watcher = LeakWatcher()
    watcher.restore([{"series": "proc", "t": 5000.0 + i, "value": 1.0} for i in range(10)])
    watcher.add_series("proc", lambda: 2.0)
    # A history restored from another time base must not stall new samples.
    assert watcher.sample(now=10.0) == 1
    assert watcher.history("proc") == [(10.0, 2.0)]


def test_acheck_and_subscription_on_trio() -> None:
    clock = ManualClock(0.0)
    watcher = LeakWatcher(clock=clock)
    watcher.add_series("proc", Growing(1 * MB))

    async def main() -> list[LeakEvent]:
        received = []
        async with watcher.subscribe() as events:
            for _ in range(60):
                clock.advance(1.0)
                await watcher.acheck()
            received.append(await events.receive())
        return received

    received = anyio.run(main, backend="trio")
    assert [(e.series, e.is_leak) for e in received] == [("proc", True)]
