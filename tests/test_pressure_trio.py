"""The monitor, its stream, wait_for, run() and PSI waits on trio (via anyio.run)."""

from __future__ import annotations

import os
import socket
import threading

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from memwarden._broadcast import Broadcaster
from memwarden._psi import PsiTrigger
from memwarden.pressure import PressureEvent, PressureLevel, PressureMonitor
from memwarden.testing import ManualClock, StaticProbe

HIGH, CRITICAL = PressureLevel.HIGH, PressureLevel.CRITICAL


def test_subscribe_wait_for_and_run_on_trio() -> None:
    async def main() -> None:
        clock = ManualClock(0.0)
        probe = StaticProbe(0, 1000)
        monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, use_psi=False)
        seen: list[PressureLevel] = []
        waited: list[PressureEvent] = []

        async def consumer(task_status: anyio.abc.TaskStatus[None]) -> None:
            async with monitor.subscribe(include_current=False) as events:
                task_status.started()
                async for event in events:
                    seen.append(event.level)
                    if event.level is CRITICAL:
                        return

        async def waiter() -> None:
            waited.append(await monitor.wait_for(HIGH))

        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            await tg.start(consumer)
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            for used in (900, 990):
                probe.set(used=used)
                await clock.advance_when_parked(1.0)
                await clock.wait_for_sleepers(1)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

        assert seen == [HIGH, CRITICAL]
        assert [e.level for e in waited] == [HIGH]
        assert monitor.stats().subscribers == 0
        assert not monitor.running

    anyio.run(main, backend="trio")


def test_wait_for_timeout_leaves_nothing_on_trio() -> None:
    async def main() -> None:
        monitor = PressureMonitor(StaticProbe(0, 1000), clock=ManualClock(), use_psi=False)
        with pytest.raises(TimeoutError), anyio.fail_after(0.01):
            await monitor.wait_for(CRITICAL)
        assert monitor.stats().subscribers == 0

    anyio.run(main, backend="trio")


def test_cross_thread_publish_wakes_trio_receiver() -> None:
    async def main() -> None:
        b: Broadcaster[int] = Broadcaster()
        sub = b.subscribe(buffer=100)
        got: list[int] = []

        async def reader() -> None:
            while len(got) < 50:
                got.append(await sub.receive())

        def publisher() -> None:
            for i in range(50):
                b.publish(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await wait_all_tasks_blocked()
            thread = threading.Thread(target=publisher)
            thread.start()
            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(thread.join)
        assert got == list(range(50))

    anyio.run(main, backend="trio")


def test_psi_wait_and_cancel_on_trio(oob: tuple[socket.socket, socket.socket]) -> None:
    a, b = oob
    trigger = PsiTrigger(os.dup(b.fileno()), "socketpair")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(trigger.wait, 60)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert not trigger.waiting
        a.send(b"!", socket.MSG_OOB)
        assert await trigger.wait(30) is True

    try:
        anyio.run(main, backend="trio")
    finally:
        trigger.close()


def test_trigger_wakes_run_early_on_trio(
    monkeypatch: pytest.MonkeyPatch, oob: tuple[socket.socket, socket.socket]
) -> None:
    a, b = oob
    trigger = PsiTrigger(os.dup(b.fileno()), "socketpair")
    clock = ManualClock(0.0)
    probe = StaticProbe(0, 1000)
    monitor = PressureMonitor(probe, clock=clock, sleep=clock.sleep, interval=3600.0)
    monkeypatch.setattr(monitor, "_open_psi", lambda: trigger)

    async def main() -> None:
        sampled = anyio.Event()

        def on_event(event: PressureEvent) -> None:
            b.recv(1, socket.MSG_OOB)
            sampled.set()

        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            monitor.add_listener(on_event)
            probe.set(used=990)
            await clock.wait_for_sleepers(1)
            a.send(b"!", socket.MSG_OOB)
            with anyio.fail_after(10):
                await sampled.wait()
            assert monitor.level is CRITICAL
            tg.cancel_scope.cancel()
        assert trigger.closed and monitor.stats().psi_wakeups == 1

    try:
        anyio.run(main, backend="trio")
    finally:
        trigger.close()
