"""Profiling costs: per-package attribution against tracemalloc's floor, and tracing's slowdown.

Rows:
- ``LazyLoader.update_all_memory_metrics()`` with 50k live traced blocks spread
  over 20 registered packages, against a bare
  ``tracemalloc.take_snapshot().statistics("filename")`` (the least any
  per-file attribution must do);
- a fixed allocation-heavy workload traced with nframe=1 and nframe=25,
  against the same workload untraced (the ratio is tracemalloc's slowdown);
- a ``monitor_function_memory`` call, untraced (its own bookkeeping) and while
  tracing (where tracemalloc's per-allocation hook dominates), against the bare call.

Ours and the peer are measured alternately, batch by batch, and compared by
their medians. Run: ``python -m benchmarks analysis`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import gc
import importlib
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from benchmarks._harness import Row, median_interleaved, speed_row
from memwarden.modules import LazyLoader
from memwarden.pressure import PressureLevel
from memwarden.profiler import monitor_function_memory, reset_function_stats

_PACKAGES = 20
_BLOCKS = 50_000
_PACKAGE_SOURCE = """\
HELD = []

def fill(n):
    HELD.extend(bytes(64) + bytes(i % 7) for i in range(n))
"""


def _write_packages(root: Path, prefix: str) -> list[str]:
    names = []
    for i in range(_PACKAGES):
        name = f"{prefix}{i}"
        pkg = root / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(_PACKAGE_SOURCE)
        names.append(name)
    return names


def _update_rows(quick: bool) -> list[Row]:
    repeat = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        names = _write_packages(Path(tmp), "mwbench_pkg")
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        tracemalloc.start(1)
        try:
            loader = LazyLoader(pressure_level=lambda: PressureLevel.LOW, trace_imports=False)
            for name in names:
                loader.load(name).fill(_BLOCKS // _PACKAGES)
            traced = len(tracemalloc.take_snapshot().traces)
            ours, peer = median_interleaved(
                loader.update_all_memory_metrics,
                lambda: tracemalloc.take_snapshot().statistics("filename"),
                number=1,
                rounds=repeat,
            )
        finally:
            tracemalloc.stop()
            sys.path.remove(tmp)
            for name in names:
                sys.modules.pop(name, None)
    return [
        speed_row(
            f"update_all_memory_metrics, {traced // 1000}k traced blocks, {_PACKAGES} packages",
            ours,
            peer,
            "take_snapshot().statistics('filename')",
            0.8,
            unit="ms/op",
            scale=1e3,
        )
    ]


def _recurse(depth: int, fn: Callable[[], object]) -> object:
    return fn() if depth == 0 else _recurse(depth - 1, fn)


def _workload() -> object:
    records = [{"id": i, "name": f"item-{i}", "tags": [i, i + 1]} for i in range(4000)]
    text = json.dumps(records)
    return len(json.loads(text))


def _deep_workload() -> object:
    # 30 frames deep, so nframe=25 has a real stack to record.
    return _recurse(30, _workload)


def _slowdown_rows(quick: bool) -> list[Row]:
    repeat = 5 if quick else 11
    number = 2 if quick else 4
    rows = []
    for nframe in (1, 25):
        traced_s: list[float] = []
        plain_s: list[float] = []
        for _ in range(repeat):
            # Start/stop sit outside the timed region: only the workload's slowdown counts.
            tracemalloc.start(nframe)
            start = time.perf_counter()
            for _ in range(number):
                _deep_workload()
            traced_s.append((time.perf_counter() - start) / number)
            tracemalloc.stop()
            start = time.perf_counter()
            for _ in range(number):
                _deep_workload()
            plain_s.append((time.perf_counter() - start) / number)
        ours, peer = statistics.median(traced_s), statistics.median(plain_s)
        rows.append(
            speed_row(
                f"workload traced, nframe={nframe} (ratio = 1/slowdown)",
                ours,
                peer,
                "same workload untraced",
                None,
                unit="ms/op",
                scale=1e3,
                notes=f"{ours / peer:.1f}x slower",
            )
        )
    return rows


def _decorator_rows(quick: bool) -> list[Row]:
    number = 2000 if quick else 20000
    repeat = 5 if quick else 9

    def bare() -> int:
        return 1

    monitored = monitor_function_memory(name="bench.monitored")(bare)
    duration_only = monitor_function_memory(name="bench.duration", trace=False)(bare)
    try:
        # Untraced: the decorator's own bookkeeping (duration only, tracing stays off).
        plain_ours, plain_peer = median_interleaved(
            duration_only, bare, number=number, rounds=repeat
        )
        tracemalloc.start(1)
        try:
            ours, peer = median_interleaved(monitored, bare, number=number, rounds=repeat)
        finally:
            tracemalloc.stop()
    finally:
        reset_function_stats("bench.monitored")
        reset_function_stats("bench.duration")
    return [
        speed_row(
            "monitor_function_memory(trace=False) call, tracing off",
            plain_ours,
            plain_peer,
            "undecorated call",
            None,
            notes=f"+{(plain_ours - plain_peer) * 1e6:.2f} µs/call",
        ),
        speed_row(
            "monitor_function_memory call while tracing",
            ours,
            peer,
            "undecorated call, traced",
            None,
            notes=f"+{(ours - peer) * 1e6:.2f} µs/call",
        ),
    ]


def rows(quick: bool) -> list[Row]:
    """Every row of this part (``quick`` keeps it to a few seconds)."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    try:
        return [*_update_rows(quick), *_slowdown_rows(quick), *_decorator_rows(quick)]
    finally:
        if was_tracing:
            tracemalloc.start()


if __name__ == "__main__":
    from benchmarks._harness import print_and_save

    print_and_save("analysis_profiler", rows("--quick" in sys.argv))
