"""Timing helpers and the result table shared by every suite.

Times are best-of-N medians of repeated batches (``time.perf_counter``), so a
noisy neighbour inflates them less. A row compares ours with a peer measured
in the same process, moments apart, and states its target.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    """One benchmark comparison.

    ``ratio`` is how many times better ours is (higher is better, whatever the
    unit); ``met`` says whether the issue's target holds.
    """

    name: str
    ours: float
    peer: float
    unit: str
    peer_name: str
    ratio: float
    target: str
    met: bool | None
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def speed_row(
    name: str,
    ours_s: float,
    peer_s: float,
    peer_name: str,
    target_ratio: float | None,
    *,
    unit: str = "µs/op",
    scale: float = 1e6,
    notes: str = "",
    ratio: float | None = None,
) -> Row:
    """A row for per-operation times: ratio = peer time / our time (>1 means we are faster).

    ``ratio``, when given, replaces that quotient (for instance the median of
    per-round ratios, see :func:`paired_ratios`).
    """
    if ratio is None:
        ratio = peer_s / ours_s if ours_s > 0 else float("inf")
    target = f">= {target_ratio:g}x" if target_ratio is not None else "report"
    met = None if target_ratio is None else ratio >= target_ratio
    return Row(name, ours_s * scale, peer_s * scale, unit, peer_name, ratio, target, met, notes)


def time_sync(fn: Callable[[], object], *, number: int, repeat: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` batches of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def time_interleaved(*fns: Callable[[], object], number: int, rounds: int) -> list[list[float]]:
    """Seconds per call of each ``fn``, one batch of ``number`` calls each per round.

    Batches alternate between the functions within every round, so a noisy
    neighbour slows all of them alike; each function is called once first to
    warm caches and lazy imports. Returns one list of ``rounds`` samples per fn.
    """
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - start) / number)
    return samples


def median_interleaved(
    ours: Callable[[], object], peer: Callable[[], object], *, number: int, rounds: int
) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``peer``, measured by :func:`time_interleaved`."""
    ours_s, peer_s = time_interleaved(ours, peer, number=number, rounds=rounds)
    return statistics.median(ours_s), statistics.median(peer_s)


def paired_ratios(ours_s: list[float], peer_s: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of peer/ours over rounds measured back to back.

    Each round's two batches ran moments apart, so a shift in the machine's
    speed between rounds cancels in their quotient; it does not cancel in the
    quotient of two separate medians when the speed is bimodal.
    """
    ratios = sorted(p / o for o, p in zip(ours_s, peer_s, strict=True) if o > 0)
    if len(ratios) < 4:
        mid = statistics.median(ratios)
        return mid, ratios[0], ratios[-1]
    q1, mid, q3 = statistics.quantiles(ratios, n=4)
    return mid, q1, q3


def run_parts(parts: tuple[str, ...], quick: bool) -> list[Row]:
    """Run the part modules ``benchmarks.<part>`` in order and return all their rows."""
    import importlib

    rows: list[Row] = []
    for part in parts:
        rows.extend(importlib.import_module(f"benchmarks.{part}").rows(quick))
    return rows


def time_async(
    fn: Callable[[], Awaitable[object]], *, number: int, repeat: int = 5, backend: str = "asyncio"
) -> float:
    """Median seconds per await of ``fn()`` over ``repeat`` batches, on a fresh event loop."""

    async def run() -> float:
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                await fn()
            samples.append((time.perf_counter() - start) / number)
        return statistics.median(samples)

    return anyio.run(run, backend=backend)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "date": time.strftime("%Y-%m-%d"),
    }


def markdown(rows: list[Row]) -> str:
    """Render rows as a Markdown table."""
    lines = [
        "| benchmark | ours | peer | unit | ratio (higher = better for us) | target | met |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        note = f" ({r.notes})" if r.notes else ""
        lines.append(
            f"| {r.name}{note} | {r.ours:.3g} | {r.peer:.3g} ({r.peer_name}) | {r.unit} "
            f"| {r.ratio:.2f}x | {r.target} | {met} |"
        )
    return "\n".join(lines)


def print_and_save(suite: str, rows: list[Row]) -> None:
    """Print the table and write ``results/<suite>.json`` and ``results/<suite>.md``."""
    table = markdown(rows)
    print(f"\n## {suite}\n\n{table}\n")
    RESULTS.mkdir(exist_ok=True)
    payload = {"suite": suite, "machine": machine(), "rows": [asdict(r) for r in rows]}
    (RESULTS / f"{suite}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{suite}.md").write_text(table + "\n")
