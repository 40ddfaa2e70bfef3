"""The monitor's event stream, wait_for and the run() loop, driven by a manual clock."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both

from memwarden._psi import PsiTrigger
from memwarden.pressure import PressureEvent, PressureLevel, PressureMonitor, Subscription
from memwarden.probes import MemorySample
from memwarden.testing import ManualClock, StaticProbe

LOW, MEDIUM, HIGH, CRITICAL = (
    PressureLevel.LOW,
    PressureLevel.MEDIUM,
    PressureLevel.HIGH,
    PressureLevel.CRITICAL,
)


@pytest.fixture
def monitor(probe: StaticProbe, clock: ManualClock) -> PressureMonitor:
    return PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=1.0, use_psi=False)


def at(probe: StaticProbe, monitor: PressureMonitor, fraction: float) -> None:
    probe.set_fraction(fraction)
    monitor.sample_now()


def drain(sub: Subscription[PressureEvent]) -> list[tuple[PressureLevel, PressureLevel]]:
    out: list[tuple[PressureLevel, PressureLevel]] = []
    while True:
        try:
            ev = sub.receive_nowait()
        except anyio.WouldBlock:
            return out
        out.append((ev.previous, ev.level))


# -- subscribe ----------------------------------------------------------------------


@on_both
async def test_include_current_delivers_current_level_first(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    at(probe, monitor, 0.9)
    async with monitor.subscribe() as events:
        first = await events.receive()
        assert (first.previous, first.level) == (HIGH, HIGH)
        assert first.sample is monitor.last_sample
        at(probe, monitor, 0.5)
        assert drain(events) == [(HIGH, LOW)]
    assert monitor.stats().subscribers == 0


@on_both
async def test_include_current_takes_a_first_sample(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    probe.set_fraction(0.75)
    sub = monitor.subscribe()
    assert probe.samples_taken == 1
    assert drain(sub) == [(MEDIUM, MEDIUM)]
    # The first sample's own LOW->MEDIUM event went out before this subscription existed.
    assert monitor.stats().events == 1


@on_both
async def test_without_include_current_only_new_events(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    at(probe, monitor, 0.9)
    sub = monitor.subscribe(include_current=False)
    assert drain(sub) == []
    assert probe.samples_taken == 1


@on_both
async def test_min_level_filters_but_announces_drops(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    at(probe, monitor, 0.75)  # MEDIUM
    sub = monitor.subscribe(min_level=HIGH)
    assert drain(sub) == []  # current MEDIUM is below min_level: not delivered
    for fraction in (0.5, 0.75, 0.9, 0.97, 0.9, 0.75, 0.5):
        at(probe, monitor, fraction)
    assert drain(sub) == [
        (MEDIUM, HIGH),
        (HIGH, CRITICAL),
        (CRITICAL, HIGH),
        (HIGH, MEDIUM),  # the drop out of the range the subscriber cares about
    ]


@on_both
async def test_min_level_accepts_labels(probe: StaticProbe, monitor: PressureMonitor) -> None:
    at(probe, monitor, 0.96)
    sub = monitor.subscribe(min_level="critical")  # type: ignore[arg-type]
    assert drain(sub) == [(CRITICAL, CRITICAL)]


@on_both
async def test_drop_oldest_overflow_counts(probe: StaticProbe, monitor: PressureMonitor) -> None:
    sub = monitor.subscribe(buffer=2)  # current LOW is the first buffered item
    for fraction in (0.9, 0.5, 0.9, 0.5):
        at(probe, monitor, fraction)
    assert sub.dropped == 3
    assert drain(sub) == [(LOW, HIGH), (HIGH, LOW)]
    assert monitor.stats().max_dropped == 3


@on_both
async def test_latest_overflow_keeps_newest(probe: StaticProbe, monitor: PressureMonitor) -> None:
    sub = monitor.subscribe(overflow="latest")
    for fraction in (0.9, 0.5, 0.97):
        at(probe, monitor, fraction)
    assert drain(sub) == [(LOW, CRITICAL)]
    assert sub.dropped == 3


@on_both
async def test_slow_subscriber_blocks_neither_monitor_nor_others(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    slow = monitor.subscribe(buffer=1, include_current=False)
    fast = monitor.subscribe(buffer=1, include_current=False)
    got: list[PressureLevel] = []
    send, receive = anyio.create_memory_object_stream[None](1)

    async def reader() -> None:
        async for event in fast:
            got.append(event.level)
            await send.send(None)

    async with anyio.create_task_group() as tg, send, receive:
        tg.start_soon(reader)
        for i in range(50):
            at(probe, monitor, 0.9 if i % 2 == 0 else 0.1)
            await receive.receive()
        tg.cancel_scope.cancel()
    assert got == [HIGH, LOW] * 25
    assert slow.dropped == 49 and slow.pending == 1
    assert monitor.stats().samples == 50


@on_both
async def test_abandoned_subscription_is_removed(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    keep = monitor.subscribe()
    monitor.subscribe()
    gc.collect()
    assert monitor.stats().subscribers == 1
    at(probe, monitor, 0.9)
    assert drain(keep) == [(LOW, LOW), (LOW, HIGH)]


@on_both
async def test_async_for_with_context_manager(probe: StaticProbe, monitor: PressureMonitor) -> None:
    seen: list[PressureLevel] = []

    async def consumer(task_status: anyio.abc.TaskStatus[None]) -> None:
        async with monitor.subscribe(include_current=False) as events:
            task_status.started()
            async for event in events:
                seen.append(event.level)
                if event.level is CRITICAL:
                    break

    async with anyio.create_task_group() as tg:
        await tg.start(consumer)
        for fraction in (0.75, 0.9, 0.99):
            at(probe, monitor, fraction)
    assert seen == [MEDIUM, HIGH, CRITICAL]
    assert monitor.stats().subscribers == 0


# -- wait_for -------------------------------------------------------------------------


@on_both
async def test_wait_for_returns_at_once_when_already_there(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    at(probe, monitor, 0.97)
    event = await monitor.wait_for(HIGH)
    assert (event.previous, event.level) == (CRITICAL, CRITICAL)
    assert monitor.stats().subscribers == 0


@on_both
async def test_wait_for_takes_first_sample(probe: StaticProbe, monitor: PressureMonitor) -> None:
    probe.set_fraction(0.9)
    event = await monitor.wait_for(HIGH)
    assert event.level is HIGH and probe.samples_taken == 1


@on_both
async def test_wait_for_later(probe: StaticProbe, monitor: PressureMonitor) -> None:
    result: list[PressureEvent] = []

    async def waiter() -> None:
        result.append(await monitor.wait_for(HIGH))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        at(probe, monitor, 0.75)  # MEDIUM: not enough
        at(probe, monitor, 0.5)
        await wait_all_tasks_blocked()
        assert result == []
        at(probe, monitor, 0.96)
    assert [(e.previous, e.level) for e in result] == [(LOW, CRITICAL)]
    assert monitor.stats().subscribers == 0


@on_both
async def test_wait_for_cancelled_leaves_nothing(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.wait_for, CRITICAL)
        await wait_all_tasks_blocked()
        assert monitor.stats().subscribers == 1
        tg.cancel_scope.cancel()
    assert monitor.stats().subscribers == 0
    at(probe, monitor, 0.99)  # publishing afterwards reaches nobody and breaks nothing
    assert monitor.stats().subscribers == 0


@on_both
async def test_wait_for_timeout_leaves_nothing(monitor: PressureMonitor) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(0.01):
        await monitor.wait_for(HIGH)
    assert monitor.stats().subscribers == 0


@on_both
async def test_wait_for_cancelled_as_level_arrives(
    probe: StaticProbe, monitor: PressureMonitor
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.wait_for, HIGH)
        await wait_all_tasks_blocked()
        at(probe, monitor, 0.9)
        tg.cancel_scope.cancel()
    assert monitor.stats().subscribers == 0


@on_both
async def test_wait_for_bad_level(monitor: PressureMonitor) -> None:
    with pytest.raises(ValueError, match="unknown pressure level level='huge'"):
        await monitor.wait_for("huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown pressure level level=9"):
        await monitor.wait_for(9)  # type: ignore[arg-type]
    assert monitor.stats().subscribers == 0


# -- run() ------------------------------------------------------------------------------


@on_both
async def test_run_samples_on_each_interval(
    probe: StaticProbe, clock: ManualClock, monitor: PressureMonitor
) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        assert probe.samples_taken == 1 and monitor.last_sample is not None
        assert monitor.running
        for expected in (2, 3, 4):
            await clock.advance_when_parked(1.0)
            await clock.wait_for_sleepers(1)
            assert probe.samples_taken == expected
        probe.set_fraction(0.9)
        await clock.advance_when_parked(0.5)  # half an interval: no sample yet
        assert probe.samples_taken == 4
        await clock.advance_when_parked(0.5)
        await clock.wait_for_sleepers(1)
        assert monitor.level is HIGH
        tg.cancel_scope.cancel()
    assert not monitor.running
    assert clock.sleepers == 0


@on_both
async def test_run_cancelled_promptly_while_sleeping(
    clock: ManualClock, monitor: PressureMonitor
) -> None:
    with anyio.move_on_after(0.05):
        await monitor.run()
    assert not monitor.running and clock.sleepers == 0


@on_both
async def test_run_under_fail_after_times_out_cleanly(
    probe: StaticProbe, clock: ManualClock, monitor: PressureMonitor
) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(0.05):
        await monitor.run()
    assert not monitor.running and clock.sleepers == 0
    assert probe.samples_taken == 1
    # A later run starts afresh.
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        assert monitor.running
        tg.cancel_scope.cancel()


@on_both
async def test_run_twice_is_refused(monitor: PressureMonitor) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        with pytest.raises(RuntimeError, match="already running"):
            await monitor.run()
        tg.cancel_scope.cancel()
    assert not monitor.running


class FlakyProbe:
    def __init__(self) -> None:
        self.inner = StaticProbe(0, 1000)
        self.fail = True

    def sample(self) -> MemorySample:
        if self.fail:
            raise OSError("probe file vanished")
        return self.inner.sample()


@on_both
async def test_raising_probe_does_not_kill_run(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyProbe()
    monitor = PressureMonitor(flaky, clock=clock, sleep=clock.sleep, use_psi=False)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)  # started even though the first sample failed
        assert monitor.last_sample is None
        await clock.advance_when_parked(1.0)
        await clock.wait_for_sleepers(1)
        assert monitor.stats().probe_errors == 2
        flaky.fail = False
        flaky.inner.set(used=990)
        await clock.advance_when_parked(1.0)
        await clock.wait_for_sleepers(1)
        assert monitor.level is CRITICAL
        tg.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "probe failed" in warnings[0].getMessage()


@on_both
async def test_run_feeds_subscribers_and_wait_for(
    probe: StaticProbe, clock: ManualClock, monitor: PressureMonitor
) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        events = monitor.subscribe(include_current=False)
        result: list[PressureEvent] = []

        async def waiter() -> None:
            result.append(await monitor.wait_for(HIGH))

        tg.start_soon(waiter)
        probe.set_fraction(0.9)
        await clock.advance_when_parked(1.0)
        await clock.wait_for_sleepers(1)
        await wait_all_tasks_blocked()
        assert [e.level for e in result] == [HIGH]
        assert drain(events) == [(LOW, HIGH)]
        tg.cancel_scope.cancel()


# -- PSI wake-ups in run() ------------------------------------------------------------------


@pytest.fixture
def oob_trigger(
    oob: tuple[socket.socket, socket.socket],
) -> Iterator[tuple[socket.socket, socket.socket, PsiTrigger]]:
    """A trigger on an AF_UNIX socket: MSG_OOB data raises POLLPRI as a PSI event does."""
    a, b = oob
    trigger = PsiTrigger(os.dup(b.fileno()), "socketpair")
    yield a, b, trigger
    trigger.close()


@on_both
async def test_psi_trigger_wakes_run_early(
    probe: StaticProbe,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    oob_trigger: tuple[socket.socket, socket.socket, PsiTrigger],
) -> None:
    sender, receiver, trigger = oob_trigger
    # A long interval: only the trigger can cause the second sample within the test.
    monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=3600.0)
    monkeypatch.setattr(monitor, "_open_psi", lambda: trigger)
    sampled = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        assert monitor.stats().psi_active
        assert monitor.stats().psi_source == "socketpair"

        def on_event(event: PressureEvent) -> None:
            # Consume the urgent byte: a PSI trigger, too, signals once per stall.
            receiver.recv(1, socket.MSG_OOB)
            sampled.set()

        monitor.add_listener(on_event)
        probe.set_fraction(0.9)
        await wait_all_tasks_blocked()
        sender.send(b"!", socket.MSG_OOB)
        with anyio.fail_after(10):
            await sampled.wait()
        assert monitor.level is HIGH
        assert monitor.stats().psi_wakeups == 1
        tg.cancel_scope.cancel()
    assert trigger.closed
    assert not monitor.stats().psi_active


@on_both
async def test_trigger_storm_costs_at_most_two_samples_per_interval(
    probe: StaticProbe,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    oob_trigger: tuple[socket.socket, socket.socket, PsiTrigger],
) -> None:
    sender, _, trigger = oob_trigger
    sender.send(b"!", socket.MSG_OOB)  # never read: the trigger looks ready forever
    monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=10.0)
    monkeypatch.setattr(monitor, "_open_psi", lambda: trigger)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        for _ in range(3):
            # trio reports the trigger's readiness one scheduler round later than
            # asyncio: let the watcher act before time moves on.
            await wait_all_tasks_blocked()
            await clock.advance_when_parked(10.0)
        await clock.wait_for_sleepers(1)
        await wait_all_tasks_blocked()
        stats = monitor.stats()
        tg.cancel_scope.cancel()
    # One sample at start, then per interval one on schedule and at most one early;
    # the fourth interval, just begun, may already have had its early one.
    assert 4 <= stats.samples <= 1 + 2 * 3 + 1
    assert stats.psi_wakeups >= 1
    assert trigger.fired <= stats.psi_wakeups + 1
    assert trigger.closed


@on_both
async def test_psi_not_used_for_static_probe(probe: StaticProbe, clock: ManualClock) -> None:
    monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        assert not monitor.stats().psi_active
        await clock.wait_for_sleepers(1)  # it sleeps on the injected clock instead
        tg.cancel_scope.cancel()
