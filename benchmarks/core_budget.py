"""Budget benchmarks: uncontended reserve, 100 contending tasks, admission control.

Every budget here has no pressure monitor, so it compares like with like.

- ``reserve`` uncontended (``async with`` around an empty block), on the asyncio
  backend: with the default semantics (a checkpoint, as anyio's) vs
  ``anyio.CapacityLimiter``; and with ``fast_acquire=True`` (no yield when it
  fits, as ``asyncio.Semaphore``) vs ``asyncio.Semaphore``, reported only.
- 100 tasks contending for a budget that fits 4 of them at a time, each
  holding its bytes across one checkpoint, vs a ``CapacityLimiter(4)``.
- Admission control: 200 jobs that each really allocate and touch 20 MB and
  hold it across an await, with and without a 256 MB budget. Each variant runs
  in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own.

Ours and the peer are measured alternately, round after round, and the
median of the rounds is reported, so a noisy neighbour hurts both alike.
Run: ``python -m benchmarks core`` (or ``python -m benchmarks.core_budget``).
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from benchmarks._harness import Row, print_and_save, speed_row
from memwarden.budget import MemoryManager

MiB = 1024 * 1024


def _interleaved(
    variants: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, float]:
    """Median seconds per op of each variant, alternating variants within every round."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(anyio.run(run, backend="asyncio"))
    return {name: statistics.median(values) for name, values in samples.items()}


# ------------------------------------------------------------------ uncontended


def _uncontended(number: int) -> dict[str, Callable[[], Awaitable[float]]]:
    async def reserve_loop(budget: MemoryManager) -> float:
        reserve = budget.reserve
        start = time.perf_counter()
        for _ in range(number):
            async with reserve(4096):
                pass
        return (time.perf_counter() - start) / number

    async def ours() -> float:
        return await reserve_loop(MemoryManager(1 << 40))

    async def ours_fast() -> float:
        return await reserve_loop(MemoryManager(1 << 40, fast_acquire=True))

    async def semaphore() -> float:
        sem = asyncio.Semaphore(1 << 30)
        start = time.perf_counter()
        for _ in range(number):
            async with sem:
                pass
        return (time.perf_counter() - start) / number

    async def limiter() -> float:
        lim = anyio.CapacityLimiter(1 << 30)
        start = time.perf_counter()
        for _ in range(number):
            async with lim:
                pass
        return (time.perf_counter() - start) / number

    return {"ours": ours, "ours_fast": ours_fast, "semaphore": semaphore, "limiter": limiter}


# -------------------------------------------------------------------- contended


def _contended(tasks: int, cycles: int, fits: int) -> dict[str, Callable[[], Awaitable[float]]]:
    size = 1 * MiB

    async def run_all(body: Callable[[], Awaitable[None]]) -> float:
        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(body)
        return (time.perf_counter() - start) / (tasks * cycles)

    async def ours() -> float:
        budget = MemoryManager(fits * size)

        async def body() -> None:
            for _ in range(cycles):
                async with budget.reserve(size):
                    await anyio.lowlevel.checkpoint()

        per_op = await run_all(body)
        stats = budget.get_stats()
        assert stats.peak_usage <= fits * size and stats.current_usage == 0
        return per_op

    async def limiter() -> float:
        lim = anyio.CapacityLimiter(fits)

        async def body() -> None:
            for _ in range(cycles):
                async with lim:
                    await anyio.lowlevel.checkpoint()

        return await run_all(body)

    return {"ours": ours, "limiter": limiter}


# ------------------------------------------------------------ admission control


def _admission_child(jobs: int, job_mb: int, budget_mb: int) -> dict[str, float]:
    """Run the jobs in this process; ``budget_mb == 0`` means no budget."""
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nbytes = job_mb * MiB

    def touch(buffer: bytearray) -> None:
        buffer[::4096] = b"\x01" * len(range(0, len(buffer), 4096))

    async def job(budget: MemoryManager | None) -> None:
        async def work() -> None:
            buffer = bytearray(nbytes)
            touch(buffer)
            await anyio.sleep(0.02)  # holding the memory across I/O
            touch(buffer)
            del buffer

        if budget is None:
            await work()
        else:
            async with budget.reserve(nbytes):
                await work()

    async def main() -> float:
        budget = MemoryManager(budget_mb * MiB) if budget_mb else None
        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(jobs):
                group.start_soon(job, budget)
        return time.perf_counter() - start

    elapsed = anyio.run(main, backend="asyncio")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "elapsed": elapsed,
        "peak_mb": peak_kb / 1024,
        "baseline_mb": baseline_kb / 1024,
        "jobs_per_s": jobs / elapsed,
    }


def _admission(jobs: int, job_mb: int, budget_mb: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.core_budget",
        "--admission-child",
        str(jobs),
        str(job_mb),
        str(budget_mb),
    ]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        command, cwd=root, capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------- rows


def rows(quick: bool) -> list[Row]:
    """Run every budget benchmark and return its rows."""
    rounds = 5 if quick else 9
    number = 20_000 if quick else 100_000
    out: list[Row] = []

    times = _interleaved(_uncontended(number), rounds)
    out.append(
        speed_row(
            "budget reserve, uncontended (checkpoint, the default)",
            times["ours"],
            times["limiter"],
            "anyio.CapacityLimiter",
            1.2,
        )
    )
    out.append(
        speed_row(
            "budget reserve, uncontended, fast_acquire=True (no yield)",
            times["ours_fast"],
            times["semaphore"],
            "asyncio.Semaphore",
            None,
        )
    )

    tasks, cycles, fits = 100, (20 if quick else 100), 4
    times = _interleaved(_contended(tasks, cycles, fits), rounds)
    out.append(
        speed_row(
            f"budget, {tasks} tasks contending, {fits} fit",
            times["ours"],
            times["limiter"],
            "anyio.CapacityLimiter",
            1.0,
        )
    )

    jobs, job_mb, budget_mb = (40, 20, 128) if quick else (200, 20, 256)
    peer_runs, our_runs = [], []
    for _ in range(1 if quick else 3):
        peer_runs.append(_admission(jobs, job_mb, 0))
        our_runs.append(_admission(jobs, job_mb, budget_mb))
    ours = {k: statistics.median(r[k] for r in our_runs) for k in our_runs[0]}
    peer = {k: statistics.median(r[k] for r in peer_runs) for k in peer_runs[0]}
    grown = ours["peak_mb"] - ours["baseline_mb"]
    out.append(
        Row(
            name=f"admission control: {jobs} jobs x {job_mb} MB, {budget_mb} MB budget",
            ours=ours["peak_mb"],
            peer=peer["peak_mb"],
            unit="MB peak RSS",
            peer_name="no budget",
            ratio=peer["peak_mb"] / ours["peak_mb"],
            target=f"growth <= {budget_mb} MB",
            met=grown <= budget_mb * 1.05,
            notes=f"growth over a {ours['baseline_mb']:.0f} MB baseline: {grown:.0f} MB",
            extra={
                "ours_growth_mb": grown,
                "peer_growth_mb": peer["peak_mb"] - peer["baseline_mb"],
            },
        )
    )
    out.append(
        Row(
            name="admission control: throughput",
            ours=ours["jobs_per_s"],
            peer=peer["jobs_per_s"],
            unit="jobs/s",
            peer_name="no budget",
            ratio=ours["jobs_per_s"] / peer["jobs_per_s"],
            target="report",
            met=None,
            notes="jobs hold their 20 MB across a 20 ms await",
        )
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--admission-child":
        print(json.dumps(_admission_child(*(int(a) for a in sys.argv[2:]))))
    else:
        print_and_save("core_budget", rows("--quick" in sys.argv))
