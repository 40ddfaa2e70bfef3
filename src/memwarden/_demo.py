"""``memwarden demo``: an async service whose jobs reserve memory from a budget.

Jobs really allocate (and touch) what they reserve, so the process' memory
follows the budget. A ``PressureMonitor`` watches the jobs' working set (this
process' RSS above what it used before the jobs started) against a limit a
little above the budget, and a subscriber prints each level change.
Low-priority "warm cache" reservations are evictable; urgent jobs evict them
when they need room.
"""

from __future__ import annotations

import json
import mmap
import random
import time
from dataclasses import asdict, dataclass, field

import anyio

from ._rss import process_rss
from .budget import Allocation, MemoryManager, Priority
from .errors import AllocationTimeoutError
from .pressure import PressureLevel, PressureMonitor, PressureThresholds
from .probes import MemorySample, ProcessProbe
from .units import MiB, format_size

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
) -> DemoReport:
    """Run the demo and return its report; lines are printed (or appended to ``out``)."""
    rng = random.Random(seed)

    def emit(line: str) -> None:
        if out is None:
            print(line, flush=True)
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


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden demo``."""
    import argparse

    from .units import parse_size

    parser = argparse.ArgumentParser(prog="memwarden demo", description=__doc__)
    parser.add_argument("--jobs", type=int, default=120, help="number of jobs (default 120)")
    parser.add_argument("--budget", type=parse_size, default=192 * MiB, help="e.g. 192MiB")
    parser.add_argument("--concurrency", type=int, default=40, help="jobs in flight at once")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    ns = parser.parse_args(args)
    if ns.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {ns.jobs}")
    if ns.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {ns.concurrency}")
    if ns.budget < 32 * _PAGE:
        parser.error(f"--budget must be at least {32 * _PAGE} bytes, got {ns.budget}")
    report = anyio.run(
        lambda: run_demo(jobs=ns.jobs, budget=ns.budget, concurrency=ns.concurrency, seed=ns.seed)
    )
    if ns.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print("\nreport")
        for line in report.lines():
            print("  " + line)
    return 0
