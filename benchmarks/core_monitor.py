"""PressureMonitor cost: CPU share of a running sampler, per-sample overhead, event fan-out.

CPU share: a ``PressureMonitor.run()`` loop on a real ``SystemProbe`` runs for
a while on asyncio; the CPU time this process used (``time.process_time()``,
all threads, so PSI worker threads count too) divided by the wall time is its
share of one core. The same is measured for a bare ``anyio.sleep`` loop at the
same interval (the floor any periodic task pays for waking up), in
alternating segments, and the figure reported is the median monitor share
minus the median floor. Run alone with ``python -m benchmarks.core_monitor
[--quick]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from benchmarks._harness import Row, print_and_save, speed_row, time_sync
from memwarden._broadcast import Broadcaster
from memwarden.pressure import PressureMonitor
from memwarden.probes import SystemProbe

_TARGETS = {1.0: 0.05, 0.1: 0.5}  # interval (s) -> max % of one core


async def _cpu_share(
    start: Callable[[anyio.abc.TaskGroup], Awaitable[object]], seconds: float
) -> float:
    """Percent of one core used over ``seconds`` of wall time once ``start`` has run.

    Start-up (task creation, the first sample) happens before the measurement
    window opens: the steady-state loop is what a service pays for.
    """
    async with anyio.create_task_group() as tg:
        await start(tg)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await anyio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        tg.cancel_scope.cancel()
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0)


def _monitor_cpu(interval: float, total: float, segments: int) -> tuple[float, float, str | None]:
    """Median monitor share, median idle-loop share, and the kernel trigger armed, if any."""

    async def main() -> tuple[float, float, str | None]:
        probe = SystemProbe()
        monitor = PressureMonitor(probe, interval=interval)
        psi_seen: str | None = None

        async def start_monitor(tg: anyio.abc.TaskGroup) -> None:
            nonlocal psi_seen
            await tg.start(monitor.run)
            psi_seen = psi_seen or monitor.stats().psi_source

        async def idle_loop() -> None:
            # The floor: a periodic task that does nothing but wake up.
            while True:  # noqa: ASYNC110
                await anyio.sleep(interval)

        async def start_idle(tg: anyio.abc.TaskGroup) -> None:
            tg.start_soon(idle_loop)

        ours: list[float] = []
        floor: list[float] = []
        per_segment = total / segments
        for _ in range(segments):
            ours.append(await _cpu_share(start_monitor, per_segment))
            floor.append(await _cpu_share(start_idle, per_segment))
        probe.close()
        return statistics.median(ours), statistics.median(floor), psi_seen

    return anyio.run(main)


def _trigger_name(path: str | None) -> str:
    # The file's name says which kernel source it is; its directory is this machine's.
    return os.path.basename(path) if path else "none (interval sleep)"


def _cpu_rows(quick: bool) -> list[Row]:
    total = 2.0 if quick else 10.0
    segments = 2 if quick else 5
    out: list[Row] = []
    for interval, target in _TARGETS.items():
        gross, floor, psi = _monitor_cpu(interval, total, segments)
        net = max(gross - floor, 0.0)
        ratio = target / net if net > 0 else float("inf")
        out.append(
            Row(
                name=f"PressureMonitor.run() CPU at interval {interval:g} s",
                ours=net,
                peer=floor,
                unit="% of a core",
                peer_name=f"idle anyio.sleep({interval:g}) loop",
                ratio=ratio,
                target=f"< {target:g} %",
                met=net < target,
                notes=(
                    f"SystemProbe, {total:g} s in {segments} alternating segments; ours = "
                    "monitor share minus idle-loop share (the floor, shown as peer); "
                    f"ratio = target / ours; early-wake trigger: {_trigger_name(psi)}"
                ),
                extra={"gross_percent": gross, "floor_percent": floor},
            )
        )
    return out


def _sample_row(quick: bool) -> Row:
    number = 2000 if quick else 20000
    rounds = 3 if quick else 9
    with SystemProbe() as probe:
        monitor = PressureMonitor(probe, use_psi=False)
        monitor.subscribe(include_current=False)  # a live subscriber, as in service use
        ours_t: list[float] = []
        peer_t: list[float] = []
        monitor.sample_now()
        for _ in range(rounds):
            ours_t.append(time_sync(monitor.sample_now, number=number, repeat=1))
            peer_t.append(time_sync(probe.sample, number=number, repeat=1))
    ours, peer = statistics.median(ours_t), statistics.median(peer_t)
    overhead_us = (ours - peer) * 1e6
    return speed_row(
        "PressureMonitor.sample_now()",
        ours,
        peer,
        "SystemProbe.sample() alone",
        None,
        notes=f"classify + history + renotify check add {overhead_us:.2f} µs per sample",
    )


def _fanout_row(quick: bool) -> Row:
    subscribers = 10
    number = 2000 if quick else 20000
    rounds = 3 if quick else 9

    async def main() -> tuple[float, float]:
        b: Broadcaster[int] = Broadcaster()
        subs = [b.subscribe(buffer=16) for _ in range(subscribers)]
        streams = [anyio.create_memory_object_stream[int](16) for _ in range(subscribers)]

        def ours() -> None:
            b.publish(1)
            for s in subs:
                s.receive_nowait()

        def peer() -> None:
            for send, _ in streams:
                send.send_nowait(1)
            for _, receive in streams:
                receive.receive_nowait()

        ours_t: list[float] = []
        peer_t: list[float] = []
        for _ in range(rounds):
            ours_t.append(time_sync(ours, number=number, repeat=1))
            peer_t.append(time_sync(peer, number=number, repeat=1))
        for send, receive in streams:
            send.close()
            receive.close()
        return statistics.median(ours_t), statistics.median(peer_t)

    ours, peer = anyio.run(main)
    return speed_row(
        f"publish + receive_nowait, {subscribers} subscribers",
        ours,
        peer,
        f"{subscribers} anyio memory object streams",
        0.8,
        notes="one item to every subscriber and read back, no waiting",
    )


def rows(quick: bool) -> list[Row]:
    """CPU share of the sampling loop, per-sample overhead, and event fan-out cost."""
    return [*_cpu_rows(quick), _sample_row(quick), _fanout_row(quick)]


if __name__ == "__main__":
    print_and_save("core_monitor", rows("--quick" in sys.argv))
