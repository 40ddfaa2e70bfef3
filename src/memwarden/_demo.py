"""``memwarden demo``: an async service whose jobs reserve memory from a budget.

Jobs really allocate (and touch) what they reserve, so the process' memory
follows the budget. A ``PressureMonitor`` watches the jobs' working set (this
process' RSS above what it used before the jobs started) against a limit a
little above the budget, and a subscriber prints each level change.
Low-priority "warm cache" reservations are evictable; urgent jobs evict them
when they need room.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from ._rss import process_rss
from .budget import Allocation, MemoryManager, Priority
from .errors import AllocationTimeoutError
from .pressure import PressureLevel, PressureMonitor, PressureThresholds
from .probes import MemorySample, ProcessProbe
from .units import MiB, format_size

if TYPE_CHECKING:
    from .warden import Warden

__all__: list[str] = []

_PAGE = 4096


class _WorkingSetProbe:
    """RSS above a baseline, against a limit: the memory the jobs themselves use."""

    def __init__(self, baseline: int, limit: int) -> None:
        self._process = ProcessProbe(limit=limit)
        self._baseline = baseline
        self.limit = limit

    def sample(self) -> MemorySample:
        raw = self._process.sample()
        used = max(raw.used - self._baseline, 0)
        return MemorySample(
            timestamp=raw.timestamp,
            used=used,
            limit=self.limit,
            available=max(self.limit - used, 0),
            rss=raw.rss,
            source="process",
        )

    def close(self) -> None:
        self._process.close()


@dataclass
class DemoReport:
    """What a demo run did; printed at the end."""

    jobs: int = 0
    completed: int = 0
    waits: int = 0
    gave_up: int = 0
    evictions: int = 0
    peak_reserved: int = 0
    budget: int = 0
    peak_rss: int = 0
    levels_seen: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report as aligned text lines."""
        return [
            f"jobs completed      {self.completed}/{self.jobs} in {self.seconds:.2f} s",
            f"peak reserved       {format_size(self.peak_reserved)} of a "
            f"{format_size(self.budget)} budget",
            f"jobs that waited    {self.waits} (gave up after the timeout: {self.gave_up})",
            f"evictions           {self.evictions}",
            f"peak process RSS    {format_size(self.peak_rss)}",
            f"levels seen         {', '.join(self.levels_seen)}",
        ]


async def run_demo(
    *,
    jobs: int = 120,
    budget: int = 192 * MiB,
    concurrency: int = 40,
    seed: int = 0,
    interval: float = 0.02,
    job_timeout: float = 10.0,
    out: list[str] | None = None,
    file: TextIO | None = None,
) -> DemoReport:
    """Run the demo and return its report.

    Progress lines are appended to ``out`` when given, else printed to ``file``
    (default: stdout).
    """
    rng = random.Random(seed)

    def emit(line: str) -> None:
        if out is None:
            print(line, file=sys.stdout if file is None else file, flush=True)
        else:
            out.append(line)

    # A full budget is ~91% of the limit: busy moments visit MEDIUM and HIGH.
    probe = _WorkingSetProbe(process_rss() or 0, budget + budget // 10)
    thresholds = PressureThresholds(medium=0.5, high=0.8, critical=0.97)
    monitor = PressureMonitor(probe, interval=interval, thresholds=thresholds, use_psi=False)
    manager = MemoryManager(budget, monitor=monitor)
    report = DemoReport(jobs=jobs, budget=budget)
    levels: list[PressureLevel] = [monitor.level]
    started = time.perf_counter()
    cache: dict[str, mmap.mmap] = {}
    limiter = anyio.CapacityLimiter(concurrency)
    unit = max(budget // 32, _PAGE)

    def drop_cached(allocation: Allocation) -> None:
        buffer = cache.pop(allocation.key, None)
        if buffer is not None:
            buffer.close()

    async def job(index: int) -> None:
        async with limiter:
            urgent = rng.random() < 0.15
            warm = not urgent and rng.random() < 0.2
            nbytes = rng.randint(1, 6) * unit
            priority = Priority.HIGH if urgent else (Priority.LOW if warm else Priority.NORMAL)
            key = f"warm-{index}" if warm else None
            on_evict = drop_cached if warm else None
            allocation = manager.try_acquire(
                nbytes, key=key, priority=priority, evictable=warm, on_evict=on_evict
            )
            if allocation is None:
                report.waits += 1
                try:
                    allocation = await manager.acquire(
                        nbytes,
                        key=key,
                        priority=priority,
                        evictable=warm,
                        on_evict=on_evict,
                        timeout=job_timeout,
                    )
                except AllocationTimeoutError:
                    report.gave_up += 1
                    return
            # Anonymous mappings go back to the OS the moment they are closed, so the
            # working set falls when jobs finish (heap blocks may stay mapped).
            buffer = mmap.mmap(-1, nbytes)
            # Fresh pages are mapped lazily: touch one byte per page so the
            # reservation shows up in RSS as real work would.
            buffer[::_PAGE] = b"\x01" * len(range(0, nbytes, _PAGE))
            try:
                if warm:
                    cache[allocation.key] = buffer  # held until evicted or done
                    await anyio.sleep(rng.uniform(0.2, 0.8))
                    cache.pop(allocation.key, None)
                else:
                    await anyio.sleep(rng.uniform(0.01, 0.06))
            finally:
                buffer.close()
                allocation.release()
            report.completed += 1

    async def watch_levels() -> None:
        async with monitor.subscribe(include_current=False) as events:
            async for event in events:
                levels.append(event.level)
                sample = event.sample
                emit(
                    f"[{time.perf_counter() - started:6.2f}s] pressure {event.previous} -> "
                    f"{event.level}: jobs use {format_size(sample.used)}, "
                    f"{sample.fraction:.0%} of {format_size(sample.limit)}"
                )

    async def watch_rss() -> None:
        while True:
            report.peak_rss = max(report.peak_rss, process_rss() or 0)
            await anyio.sleep(interval)

    emit(
        f"memwarden demo: {jobs} jobs, {concurrency} at a time, budget "
        f"{format_size(budget)}, pressure limit {format_size(probe.limit)} above the baseline"
    )
    try:
        async with anyio.create_task_group() as services:
            await services.start(monitor.run)
            services.start_soon(watch_levels)
            services.start_soon(watch_rss)
            async with anyio.create_task_group() as workers:
                for index in range(jobs):
                    workers.start_soon(job, index)
            # Let the monitor see the drained process before stopping it.
            with anyio.move_on_after(2.0):
                async with monitor.subscribe() as current:
                    async for event in current:
                        if event.level == PressureLevel.LOW:
                            break
            services.cancel_scope.cancel()
    finally:
        manager.close()
        probe.close()
    stats = manager.get_stats()
    report.seconds = time.perf_counter() - started
    report.evictions = stats.evictions
    report.peak_reserved = stats.peak_usage
    report.levels_seen = [level.label for level in dict.fromkeys(levels)]
    return report


# -- memwarden demo --serve ------------------------------------------------------------

# One wave of load every this many seconds: the chart rises into HIGH and falls back.
_WAVE_SECONDS = 40.0


async def run_service(
    *,
    budget: int,
    concurrency: int,
    seed: int,
    serve: Callable[[Warden], Awaitable[None]],
    emit: Callable[[str], None] | None = None,
) -> None:
    """Run the demo workload as a Warden-governed service until cancelled.

    ``serve`` is an async callable taking the Warden; it serves the HTTP app and
    returns when the server stops, which ends the workload. ``emit`` (a
    callable taking one line) reports level changes. Jobs come in waves, so
    the dashboard shows memory rising into HIGH and falling back; a cache, a
    pool and sessions give its panels something to show.
    """
    from .config import WardenConfig
    from .warden import Warden

    rng = random.Random(seed)
    unit = max(budget // 32, _PAGE)
    probe = _WorkingSetProbe(process_rss() or 0, budget + budget // 10)
    config = WardenConfig(
        capacity=budget,
        medium_threshold=0.5,
        high_threshold=0.8,
        critical_threshold=0.97,
        monitor_interval=0.25,
        monitor_history=600,
        monitor_use_psi=False,
    )
    limiter = anyio.CapacityLimiter(concurrency)
    started = time.perf_counter()
    async with Warden(config, probe=probe) as warden:
        manager = warden.manager
        thumbnails: Any = warden.caches.create_lru_cache(
            "thumbnails", max_bytes=max(budget // 8, _PAGE)
        )
        connections = warden.create_pool("connections", object, max_size=concurrency)

        async def job(index: int) -> None:
            # A request: a connection from the pool, then memory from the budget.
            nbytes = rng.randint(1, 6) * unit
            priority = Priority.HIGH if rng.random() < 0.15 else Priority.NORMAL
            try:
                async with (
                    limiter,
                    connections.acquire(timeout=5.0),
                    manager.reserve(nbytes, priority=priority, timeout=5.0),
                ):
                    buffer = mmap.mmap(-1, nbytes)
                    try:
                        buffer[::_PAGE] = b"\x01" * len(range(0, nbytes, _PAGE))
                        await anyio.sleep(rng.uniform(0.2, 1.0))
                    finally:
                        buffer.close()
                    thumbnails[f"thumb-{index % 97}"] = bytes(rng.randint(1, 64) * 1024)
            except TimeoutError:
                pass  # no connection or no memory in time: the request gives up

        async def visitors() -> None:
            # A few sessions come and go, so the sessions panel moves.
            live: list[str] = []
            while True:
                live.append(await warden.sessions.create_session(cart=bytes(32 * 1024)))
                if len(live) > 6:
                    await warden.sessions.end_session(live.pop(0))
                await anyio.sleep(2.0)

        async def load() -> None:
            # A job holds 3.5 units (of 32 per budget) for 0.6 s on average, so about
            # 15 jobs a second fill the budget: the wave goes from 10% to 120% of that.
            full_rate = 32 / 3.5 / 0.6
            due = 0.0
            index = 0
            async with anyio.create_task_group() as jobs:
                while True:
                    phase = (time.perf_counter() - started) / _WAVE_SECONDS
                    intensity = 0.1 + 1.1 * (0.5 - 0.5 * math.cos(2 * math.pi * phase))
                    due += intensity * full_rate * 0.1
                    while due >= 1.0:
                        due -= 1.0
                        jobs.start_soon(job, index)
                        index += 1
                    await anyio.sleep(0.1)

        async def report_levels() -> None:
            async with warden.subscribe(include_current=False) as events:
                async for event in events:
                    if emit is not None:
                        emit(
                            f"[{time.perf_counter() - started:7.1f}s] pressure "
                            f"{event.previous} -> {event.level}"
                        )

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(load)
                tg.start_soon(visitors)
                tg.start_soon(report_levels)
                await serve(warden)
                tg.cancel_scope.cancel()
        finally:
            probe.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``memwarden demo`` argument parser."""
    from .cli import command_parser, size_argument

    parser = command_parser("memwarden demo", _DESCRIPTION)
    parser.add_argument(
        "--jobs", type=int, default=120, help="number of jobs in a single run (default: 120)"
    )
    parser.add_argument(
        "--budget",
        type=size_argument,
        default=192 * MiB,
        help="the jobs' budget, e.g. 192MiB or 200MB (default: 192MiB)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=40, help="jobs in flight at once (default: 40)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout; progress goes to stderr (default: text)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run continuously, serving the API and live dashboard, until Ctrl-C "
        "(default: one run of --jobs jobs)",
    )
    from ._serve import add_server_arguments

    add_server_arguments(parser, prefix="with --serve: ")
    return parser


_DESCRIPTION = """An async service whose jobs reserve memory from a budget. Jobs really allocate
what they reserve, so the process' memory follows the budget; a pressure
monitor watches their working set against a limit a little above the budget
and prints each level change. Low-priority warm-cache reservations are
evictable: urgent jobs evict them when they need room. Ends with a report.

With --serve the jobs come in waves, forever, under a Warden whose HTTP API
and live dashboard are served until Ctrl-C.
"""


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden demo``."""
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {ns.jobs}")
    if ns.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {ns.concurrency}")
    if ns.budget < 32 * _PAGE:
        parser.error(f"--budget must be at least {32 * _PAGE} bytes, got {ns.budget}")
    if ns.serve:
        return _main_serve(parser, ns)
    progress = sys.stderr if ns.json else sys.stdout
    report = anyio.run(
        lambda: run_demo(
            jobs=ns.jobs,
            budget=ns.budget,
            concurrency=ns.concurrency,
            seed=ns.seed,
            file=progress,
        )
    )
    if ns.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print("\nreport")
        for line in report.lines():
            print("  " + line)
    return 0


def _main_serve(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> int:
    from ._serve import bind, serve_app, server_token

    if ns.json:
        parser.error("--json gives a report at the end of a run; --serve runs until Ctrl-C")
    token = server_token(parser, ns)
    try:
        sock = bind(ns.host, ns.port)
    except OSError as exc:
        print(f"memwarden demo: cannot listen on {ns.host}:{ns.port}: {exc}", file=sys.stderr)
        return 1

    def announce(url: str) -> None:
        print(f"memwarden demo: dashboard on {url} (Ctrl-C to stop)", file=sys.stderr)
        print(url, flush=True)

    def emit(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def serve(warden: Warden) -> None:
        from .http import create_app

        await serve_app(create_app(warden, token=token), sock, announce=announce)

    with sock:
        anyio.run(
            lambda: run_service(
                budget=ns.budget,
                concurrency=ns.concurrency,
                seed=ns.seed,
                serve=serve,
                emit=emit,
            )
        )
    print("memwarden demo: stopped", file=sys.stderr)
    return 0
