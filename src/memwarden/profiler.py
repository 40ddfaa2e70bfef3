"""Allocation profiling on tracemalloc: snapshots, top consumers, trends, per-function figures.

- :class:`MemoryProfiler` starts and stops tracing (reference-counted and
  shared process-wide with :func:`monitor_function_memory` and the lazy
  loader, and never stopping tracing that was on before it started), takes
  :class:`ProfileSnapshot` objects, ranks and compares allocation sites, and
  analyses growth over its snapshot history.
- :func:`monitor_function_memory` records net and peak traced bytes and the
  duration of every call of a sync or async function into a registry you
  query with :func:`function_memory_stats` and :func:`get_function_stats`.
- :func:`memory_efficient_context` is a sync and async context manager that
  collects garbage on entry and exit and reports what the exit cleanup freed.

tracemalloc is the standard library's allocation tracer; no third-party
package offers more for attributing Python allocations to source lines, so
this module only adds bookkeeping around it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import json
import os
import pickle
import secrets
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

import aiofiles
import anyio
import anyio.to_thread
import psutil

from . import _backend
from ._native import malloc_trim
from ._packages import package_of
from ._rss import process_rss
from ._validate import check_int
from .leaks import LeakDetector, analyze_memory_trend
from .probes import Probe, SystemProbe

__all__ = [
    "ContextMemoryStats",
    "FunctionMemoryStats",
    "MemoryEfficientContext",
    "MemoryProfiler",
    "ProfileSnapshot",
    "function_memory_stats",
    "get_function_stats",
    "memory_efficient_context",
    "monitor_function_memory",
    "reset_function_stats",
]

GroupBy = Literal["lineno", "filename", "package"]
_GROUP_BY: tuple[str, ...] = ("lineno", "filename", "package")
_DUMP_FORMATS = ("pickle", "json")
_UNKNOWN_PACKAGE = "<unknown>"

P = ParamSpec("P")
R = TypeVar("R")

_MEMWARDEN_DIR = os.path.dirname(os.path.abspath(__file__))
# Keep the profiler's own allocations (snapshot bookkeeping, registries) out of what users see.
_OWN_FRAMES = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, os.path.join(_MEMWARDEN_DIR, "*")),
)


def _check_group_by(group_by: object) -> GroupBy:
    if not isinstance(group_by, str):
        raise TypeError(f"group_by must be a str, got {type(group_by).__name__} {group_by!r}")
    if group_by not in _GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(_GROUP_BY)}, got {group_by!r}")
    return cast(GroupBy, group_by)


def _check_path(path: object) -> str:
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"path must be a non-empty text path, got {path!r}")
    return text


class _Tracing:
    """Process-wide reference count on tracemalloc.

    The first holder starts tracing unless it was already on; the last release
    stops it only if a holder started it, so tracing a user switched on
    themselves survives every memwarden start/stop pair.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs = 0
        self._started = False

    @property
    def refs(self) -> int:
        return self._refs

    def acquire(self, nframe: int = 1) -> None:
        with self._lock:
            if not tracemalloc.is_tracing():
                # Either the first holder, or someone stopped tracing behind our back.
                tracemalloc.start(nframe)
                self._started = True
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            if self._refs == 0:
                return
            self._refs -= 1
            if self._refs == 0:
                if self._started and tracemalloc.is_tracing():
                    tracemalloc.stop()
                self._started = False


_tracing = _Tracing()


def _process_memory() -> dict[str, int | None]:
    try:
        vms: int | None = int(psutil.Process().memory_info().vms)
    except (psutil.Error, OSError):
        vms = None
    return {"rss": process_rss(), "vms": vms}


def _rss_or_zero() -> int:
    return process_rss() or 0


@dataclass(frozen=True, eq=False)
class ProfileSnapshot:
    """A tracemalloc snapshot with its time and traced totals, memwarden's own frames removed.

    ``timestamp`` is wall-clock (``time.time()``), ``clock_time`` the
    profiler's clock (used for rates). ``traced_current``/``traced_peak`` are
    ``tracemalloc.get_traced_memory()`` at capture; ``tracemalloc_overhead`` is
    what tracemalloc itself used then. Immutable; safe to share between threads.
    """

    snapshot: tracemalloc.Snapshot
    timestamp: float
    clock_time: float
    traced_current: int
    traced_peak: int
    tracemalloc_overhead: int
    _groups: dict[str, dict[str, tuple[int, int]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def capture(cls, *, clock: Callable[[], float] = time.monotonic) -> ProfileSnapshot:
        """Take a snapshot now; ``RuntimeError`` when tracemalloc is not tracing."""
        if not tracemalloc.is_tracing():
            raise RuntimeError(
                "tracemalloc is not tracing: call MemoryProfiler.start_profiling() first"
            )
        current, peak = tracemalloc.get_traced_memory()
        raw = tracemalloc.take_snapshot()
        return cls(
            raw.filter_traces(_OWN_FRAMES),
            timestamp=time.time(),
            clock_time=clock(),
            traced_current=current,
            traced_peak=peak,
            tracemalloc_overhead=tracemalloc.get_tracemalloc_memory(),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProfileSnapshot:
        """Read a snapshot written by ``MemoryProfiler.dump(path)`` (or ``tracemalloc``'s own dump).

        The pickle format is tracemalloc's; only load files you trust. The
        timestamp is the file's modification time and the traced totals are
        the sum of the loaded traces. Raises ``TypeError`` for a bad path and
        ``OSError``/``pickle.UnpicklingError`` for unreadable files.
        """
        text = _check_path(path)
        raw = tracemalloc.Snapshot.load(text)
        total = sum(trace.size for trace in raw.traces)
        return cls(
            raw,
            timestamp=os.path.getmtime(text),
            clock_time=time.monotonic(),
            traced_current=total,
            traced_peak=total,
            tracemalloc_overhead=0,
        )

    @property
    def traceback_limit(self) -> int:
        """How many frames each trace kept (tracemalloc's ``nframe``)."""
        return int(self.snapshot.traceback_limit)

    def sizes(self, group_by: GroupBy = "lineno") -> dict[str, tuple[int, int]]:
        """``{location: (bytes, blocks)}`` for every site, grouped as asked (cached)."""
        key = _check_group_by(group_by)
        with self._lock:
            cached = self._groups.get(key)
        if cached is not None:
            return cached
        result: dict[str, tuple[int, int]] = {}
        if key == "package":
            for stat in self.snapshot.statistics("filename"):
                name = package_of(stat.traceback[0].filename) or _UNKNOWN_PACKAGE
                size, count = result.get(name, (0, 0))
                result[name] = (size + stat.size, count + stat.count)
        else:
            for stat in self.snapshot.statistics(key):
                frame = stat.traceback[0]
                if key == "filename":
                    result[frame.filename] = (stat.size, stat.count)
                else:
                    result[f"{frame.filename}:{frame.lineno}"] = (stat.size, stat.count)
        with self._lock:
            self._groups[key] = result
        return result

    @property
    def total_size(self) -> int:
        """Bytes traced in this snapshot after memwarden's own frames were removed."""
        return sum(size for size, _ in self.sizes("filename").values())

    def top(self, limit: int = 10, group_by: GroupBy = "lineno") -> list[dict[str, Any]]:
        """The ``limit`` largest sites: dicts with location, package, size (bytes), count.

        ``lineno`` rows add filename and lineno, ``filename`` rows add filename.
        Raises ``ValueError`` for ``limit < 1`` or an unknown ``group_by``.
        """
        check_int("limit", limit, minimum=1)
        key = _check_group_by(group_by)
        ranked = sorted(self.sizes(key).items(), key=lambda item: item[1][0], reverse=True)
        return [_site_row(key, location, size, count) for location, (size, count) in ranked[:limit]]

    def to_dict(self, *, limit: int = 10, group_by: GroupBy = "lineno") -> dict[str, Any]:
        """A JSON-able summary: time, totals, tracemalloc overhead and the top sites."""
        return {
            "timestamp": self.timestamp,
            "traced_current": self.traced_current,
            "traced_peak": self.traced_peak,
            "total_size": self.total_size,
            "tracemalloc_overhead": self.tracemalloc_overhead,
            "traceback_limit": self.traceback_limit,
            "group_by": group_by,
            "top_consumers": self.top(limit, group_by),
        }


def _site_row(group_by: str, location: str, size: int, count: int) -> dict[str, Any]:
    if group_by == "package":
        return {"location": location, "package": location, "size": size, "count": count}
    if group_by == "filename":
        filename = location
        row: dict[str, Any] = {"location": location, "filename": filename}
    else:
        filename, _, lineno = location.rpartition(":")
        row = {"location": location, "filename": filename, "lineno": int(lineno)}
    row["package"] = package_of(filename) or _UNKNOWN_PACKAGE
    row["size"] = size
    row["count"] = count
    return row


class MemoryProfiler:
    """Profile Python allocations with tracemalloc (seed 002's MemoryProfiler).

    ``start_profiling``/``stop_profiling`` nest: tracing stops after as many
    stops as starts, and never if tracemalloc was already tracing before the
    first start. ``history`` bounds the snapshots kept for trend analysis.
    Thread-safe.
    """

    def __init__(
        self,
        *,
        nframe: int = 1,
        history: int = 20,
        totals_history: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        probe: Probe | None = None,
        leak_detector: LeakDetector | None = None,
    ) -> None:
        self._nframe = check_int("nframe", nframe, minimum=1, maximum=65535)
        check_int("history", history, minimum=2)
        check_int("totals_history", totals_history, minimum=2)
        self._clock = clock
        self._probe = probe
        self._detector = leak_detector if leak_detector is not None else LeakDetector(min_samples=3)
        self._lock = threading.Lock()
        self._starts = 0
        self._snapshots: deque[ProfileSnapshot] = deque(maxlen=history)
        # Snapshots are heavy (every trace); the totals series is cheap, so it is kept
        # longer and gives the leak verdict enough samples to judge.
        self._totals: deque[tuple[float, float]] = deque(maxlen=max(totals_history, history))

    @property
    def is_profiling(self) -> bool:
        """Whether this profiler holds a start (and tracemalloc is tracing)."""
        return self._starts > 0 and tracemalloc.is_tracing()

    def start_profiling(self) -> None:
        """Start tracing (or join tracing already on); nests with ``stop_profiling``."""
        with self._lock:
            _tracing.acquire(self._nframe)
            self._starts += 1

    def stop_profiling(self) -> None:
        """Undo one ``start_profiling``; a no-op when this profiler is not started.

        Snapshots already taken stay available.
        """
        with self._lock:
            if self._starts == 0:
                return
            self._starts -= 1
            _tracing.release()

    def take_snapshot(self, *, record: bool = True) -> ProfileSnapshot:
        """Capture a :class:`ProfileSnapshot`; kept in the history unless ``record=False``.

        Raises ``RuntimeError`` when tracemalloc is not tracing.
        """
        snap = ProfileSnapshot.capture(clock=self._clock)
        if record:
            total = float(snap.total_size)
            with self._lock:
                self._snapshots.append(snap)
                self._totals.append((snap.clock_time, total))
        return snap

    def snapshots(self) -> list[ProfileSnapshot]:
        """The recorded snapshots, oldest first."""
        with self._lock:
            return list(self._snapshots)

    def clear_snapshots(self) -> None:
        """Forget every recorded snapshot and the totals series."""
        with self._lock:
            self._snapshots.clear()
            self._totals.clear()

    def _latest_or_new(self, snapshot: ProfileSnapshot | None) -> ProfileSnapshot:
        if snapshot is not None:
            return snapshot
        return self.take_snapshot(record=False)

    def top_consumers(
        self,
        limit: int = 10,
        group_by: GroupBy = "lineno",
        *,
        snapshot: ProfileSnapshot | None = None,
    ) -> list[dict[str, Any]]:
        """The largest allocation sites now (or in ``snapshot``), biggest first.

        Each row has location, package, size (bytes) and count (blocks);
        ``group_by="package"`` sums files by the top-level package that owns
        them. Raises ``ValueError`` for ``limit < 1`` or an unknown
        ``group_by`` and ``RuntimeError`` when a fresh snapshot is needed and
        tracemalloc is not tracing.
        """
        check_int("limit", limit, minimum=1)
        _check_group_by(group_by)
        return self._latest_or_new(snapshot).top(limit, group_by)

    def compare(
        self,
        older: ProfileSnapshot,
        newer: ProfileSnapshot,
        *,
        limit: int = 10,
        group_by: GroupBy = "lineno",
    ) -> list[dict[str, Any]]:
        """The sites that grew most from ``older`` to ``newer``, largest growth first.

        Rows are site rows (see :meth:`top_consumers`) plus ``size_diff`` and
        ``count_diff``; only sites that grew are listed. Raises ``TypeError``
        for non-snapshots and ``ValueError`` for a bad ``limit``/``group_by``.
        """
        for name, value in (("older", older), ("newer", newer)):
            if not isinstance(value, ProfileSnapshot):
                raise TypeError(
                    f"{name} must be a ProfileSnapshot, got {type(value).__name__} {value!r}"
                )
        check_int("limit", limit, minimum=1)
        key = _check_group_by(group_by)
        before = older.sizes(key)
        growing: list[tuple[int, str, int, int, int]] = []
        for location, (size, count) in newer.sizes(key).items():
            old_size, old_count = before.get(location, (0, 0))
            if size > old_size:
                growing.append((size - old_size, location, size, count, count - old_count))
        growing.sort(reverse=True)
        rows = []
        for diff, location, size, count, count_diff in growing[:limit]:
            row = _site_row(key, location, size, count)
            row["size_diff"] = diff
            row["count_diff"] = count_diff
            rows.append(row)
        return rows

    def analyze_memory_trends(
        self, *, limit: int = 10, group_by: GroupBy = "lineno"
    ) -> dict[str, Any]:
        """Growth over the profiler's history: overall trend, leak verdict and growing sites.

        The overall figures come from the totals series (one point per recorded
        snapshot, ``totals_history`` long); the per-site figures from the
        snapshots still kept (``history``). Keys: snapshots, samples, duration
        (s), total_growth (bytes), growth_rate (bytes/s), trend, leak
        (:class:`memwarden.leaks.LeakReport` fields), growing_sites (site rows
        plus first_size, last_size, growth, growth_rate, trend; largest growth
        first). Fewer than two points give zero growth and ``"stable"``.
        Raises ``ValueError`` for a bad ``limit``/``group_by``.
        """
        check_int("limit", limit, minimum=1)
        key = _check_group_by(group_by)
        with self._lock:
            snaps = list(self._snapshots)
            totals = list(self._totals)
        report = self._detector.analyze(totals)
        result: dict[str, Any] = {
            "snapshots": len(snaps),
            "samples": len(totals),
            "duration": 0.0,
            "total_growth": 0,
            "growth_rate": 0.0,
            "trend": analyze_memory_trend(totals),
            "leak": {
                "is_leak": report.is_leak,
                "score": report.score,
                "trend": report.trend,
                "growth_rate": report.growth_rate,
                "samples": report.samples,
            },
            "growing_sites": [],
        }
        if len(totals) >= 2:
            duration = totals[-1][0] - totals[0][0]
            growth = int(totals[-1][1] - totals[0][1])
            result["duration"] = duration
            result["total_growth"] = growth
            result["growth_rate"] = growth / duration if duration > 0 else 0.0
        if len(snaps) < 2:
            return result
        first, last = snaps[0], snaps[-1]
        duration = last.clock_time - first.clock_time
        first_sizes, last_sizes = first.sizes(key), last.sizes(key)
        ranked = sorted(
            (
                (size - first_sizes.get(location, (0, 0))[0], location)
                for location, (size, _) in last_sizes.items()
            ),
            reverse=True,
        )
        series_of = [s.sizes(key) for s in snaps]
        sites = []
        for site_growth, location in ranked[:limit]:
            if site_growth <= 0:
                break
            size, count = last_sizes[location]
            row = _site_row(key, location, size, count)
            series = [
                (s.clock_time, float(sizes.get(location, (0, 0))[0]))
                for s, sizes in zip(snaps, series_of, strict=True)
            ]
            row["first_size"] = first_sizes.get(location, (0, 0))[0]
            row["last_size"] = size
            row["growth"] = site_growth
            row["growth_rate"] = site_growth / duration if duration > 0 else 0.0
            row["trend"] = analyze_memory_trend(series)
            sites.append(row)
        result["growing_sites"] = sites
        return result

    def _system_memory(self) -> dict[str, float | int]:
        if self._probe is not None:
            sample = self._probe.sample()
            return {
                "total": sample.limit,
                "available": sample.available,
                "used": sample.used,
                "percentage": round(sample.fraction * 100.0, 2),
            }
        # The container's limit, not the host's RAM, and no reclaimable page cache in "used".
        with contextlib.closing(SystemProbe()) as system:
            sample = system.sample()
        return {
            "total": sample.limit,
            "available": sample.available,
            "used": sample.used,
            "percentage": round(sample.fraction * 100.0, 2),
        }

    def get_memory_report(self, *, limit: int = 10) -> dict[str, Any]:
        """Everything at once, as a JSON-able dict.

        Keys: timestamp, profiling, tracemalloc (tracing, traceback_limit,
        traced_current, traced_peak, overhead = tracemalloc's own memory),
        process_memory (rss, vms), system_memory (total, available, used,
        percentage; from the ``probe`` given, else a ``SystemProbe``, so a
        container reports its own limit), top_consumers (latest snapshot, else a fresh one while
        tracing, else empty), snapshot_count, memory_trends
        (:meth:`analyze_memory_trends`) and function_stats (the
        :func:`monitor_function_memory` registry).
        """
        check_int("limit", limit, minimum=1)
        tracing = tracemalloc.is_tracing()
        current, peak = tracemalloc.get_traced_memory() if tracing else (0, 0)
        snaps = self.snapshots()
        if snaps:
            top = snaps[-1].top(limit)
        elif tracing:
            top = self.take_snapshot(record=False).top(limit)
        else:
            top = []
        return {
            "timestamp": time.time(),
            "profiling": self.is_profiling,
            "tracemalloc": {
                "tracing": tracing,
                "traceback_limit": tracemalloc.get_traceback_limit() if tracing else 0,
                "traced_current": current,
                "traced_peak": peak,
                "overhead": tracemalloc.get_tracemalloc_memory(),
            },
            "process_memory": _process_memory(),
            "system_memory": self._system_memory(),
            "top_consumers": top,
            "snapshot_count": len(snaps),
            "memory_trends": self.analyze_memory_trends(limit=limit),
            "function_stats": {
                name: stats.to_dict() for name, stats in function_memory_stats().items()
            },
        }

    async def dump(
        self,
        path: str | os.PathLike[str],
        *,
        snapshot: ProfileSnapshot | None = None,
        format: Literal["pickle", "json"] = "pickle",
        limit: int = 50,
        group_by: GroupBy = "lineno",
    ) -> None:
        """Write a snapshot (given, else the latest recorded, else a fresh one) to ``path``.

        ``format="pickle"`` writes tracemalloc's own format (read it back
        with :meth:`ProfileSnapshot.load` or ``tracemalloc.Snapshot.load``);
        ``"json"`` writes :meth:`ProfileSnapshot.to_dict` with ``limit`` sites
        for people and dashboards. Serialisation runs in a worker thread and
        the file is written with aiofiles (anyio's file wrapper under trio), so
        the event loop is not blocked.
        Raises ``TypeError``/``ValueError`` for a bad path, format, limit or
        group_by and ``RuntimeError`` when a fresh snapshot is needed and
        tracemalloc is not tracing. The file is replaced atomically: a cancelled
        or failed dump leaves any previous file at ``path`` untouched.
        """
        text = _check_path(path)
        if format not in _DUMP_FORMATS:
            raise ValueError(f"format must be one of {', '.join(_DUMP_FORMATS)}, got {format!r}")
        check_int("limit", limit, minimum=1)
        _check_group_by(group_by)
        if snapshot is None:
            snaps = self.snapshots()
            snapshot = snaps[-1] if snaps else self.take_snapshot(record=False)
        chosen = snapshot
        if format == "pickle":
            data = await anyio.to_thread.run_sync(
                functools.partial(pickle.dumps, chosen.snapshot, pickle.HIGHEST_PROTOCOL)
            )
        else:
            data = await anyio.to_thread.run_sync(
                lambda: json.dumps(chosen.to_dict(limit=limit, group_by=group_by)).encode()
            )
        await _write_file(text, data)


def _temporary_name(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")


async def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically without blocking the event loop.

    The bytes go to a temporary file next to ``path`` that replaces it only
    when complete, so a cancelled or failed dump never leaves a torn file.
    aiofiles needs a running asyncio loop; under trio anyio's thread-backed
    file wrapper does the same job.
    """
    temporary = _temporary_name(path)
    try:
        backend = _backend.current_or_none()
        if backend is not None and backend.name == "asyncio":
            async with aiofiles.open(temporary, "wb") as handle:
                await handle.write(data)
        else:
            async with await anyio.open_file(temporary, "wb") as stream:
                await stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- per-function figures -------------------------------------------------------------


@dataclass(frozen=True)
class FunctionMemoryStats:
    """What :func:`monitor_function_memory` recorded for one function.

    Byte figures count only calls made while tracemalloc traced
    (``traced_calls``). ``peak`` is the highest traced memory above the
    call's starting level; when calls overlap (``overlapped_calls``), it also
    includes what the overlapping work allocated, so it is an upper bound.
    ``errors`` counts calls that raised, cancellation included.
    """

    name: str
    calls: int
    errors: int
    traced_calls: int
    overlapped_calls: int
    total_net: int
    max_net: int
    last_net: int | None
    total_peak: int
    max_peak: int
    last_peak: int | None
    total_duration: float
    max_duration: float
    last_duration: float

    @property
    def mean_peak(self) -> float:
        """Average peak bytes over traced calls (0.0 when none)."""
        return self.total_peak / self.traced_calls if self.traced_calls else 0.0

    @property
    def mean_net(self) -> float:
        """Average net bytes over traced calls (0.0 when none)."""
        return self.total_net / self.traced_calls if self.traced_calls else 0.0

    @property
    def mean_duration(self) -> float:
        """Average seconds per call (0.0 when none)."""
        return self.total_duration / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields and the means."""
        data = asdict(self)
        data["mean_peak"] = self.mean_peak
        data["mean_net"] = self.mean_net
        data["mean_duration"] = self.mean_duration
        return data


class _FunctionRecord:
    __slots__ = (
        "calls", "errors", "last_duration", "last_net", "last_peak", "max_duration", "max_net",
        "max_peak", "overlapped_calls", "total_duration", "total_net", "total_peak",
        "traced_calls",
    )  # fmt: skip

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.traced_calls = 0
        self.overlapped_calls = 0
        self.total_net = 0
        self.max_net = 0
        self.last_net: int | None = None
        self.total_peak = 0
        self.max_peak = 0
        self.last_peak: int | None = None
        self.total_duration = 0.0
        self.max_duration = 0.0
        self.last_duration = 0.0

    def freeze(self, name: str) -> FunctionMemoryStats:
        return FunctionMemoryStats(
            name=name, calls=self.calls, errors=self.errors, traced_calls=self.traced_calls,
            overlapped_calls=self.overlapped_calls, total_net=self.total_net,
            max_net=self.max_net, last_net=self.last_net, total_peak=self.total_peak,
            max_peak=self.max_peak, last_peak=self.last_peak,
            total_duration=self.total_duration, max_duration=self.max_duration,
            last_duration=self.last_duration,
        )  # fmt: skip


class _CallToken:
    __slots__ = ("overlapped", "start_current", "started", "traced", "tracing_ref")

    def __init__(self) -> None:
        self.overlapped = False
        self.start_current = 0
        self.started = 0.0
        self.traced = False
        self.tracing_ref = False


class _FunctionRegistry:
    """Per-function records plus the set of monitored calls in flight (for peak handling)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, _FunctionRecord] = {}
        self._active: set[_CallToken] = set()

    @property
    def active_calls(self) -> int:
        return len(self._active)

    def begin(self, trace: bool) -> _CallToken:
        token = _CallToken()
        if trace:
            _tracing.acquire()
            token.tracing_ref = True
        with self._lock:
            if tracemalloc.is_tracing():
                if self._active:
                    # Someone else's window is open: resetting the peak would corrupt theirs.
                    token.overlapped = True
                    for other in self._active:
                        other.overlapped = True
                else:
                    tracemalloc.reset_peak()
                token.traced = True
                token.start_current = tracemalloc.get_traced_memory()[0]
            self._active.add(token)
        return token

    def end(self, token: _CallToken, name: str, duration: float, failed: bool) -> None:
        net: int | None = None
        peak: int | None = None
        with self._lock:
            self._active.discard(token)
            if token.traced and tracemalloc.is_tracing():
                current, high = tracemalloc.get_traced_memory()
                net = current - token.start_current
                peak = max(high - token.start_current, net, 0)
            record = self._records.get(name)
            if record is None:
                record = self._records[name] = _FunctionRecord()
            record.calls += 1
            record.errors += failed
            record.total_duration += duration
            record.max_duration = max(record.max_duration, duration)
            record.last_duration = duration
            if net is not None and peak is not None:
                record.traced_calls += 1
                record.overlapped_calls += token.overlapped
                record.total_net += net
                record.max_net = net if record.traced_calls == 1 else max(record.max_net, net)
                record.last_net = net
                record.total_peak += peak
                record.max_peak = max(record.max_peak, peak)
                record.last_peak = peak
        if token.tracing_ref:
            _tracing.release()

    def get(self, name: str) -> FunctionMemoryStats | None:
        with self._lock:
            record = self._records.get(name)
            return None if record is None else record.freeze(name)

    def all(self) -> dict[str, FunctionMemoryStats]:
        with self._lock:
            return {name: record.freeze(name) for name, record in self._records.items()}

    def reset(self, name: str | None) -> None:
        with self._lock:
            if name is None:
                self._records.clear()
            else:
                self._records.pop(name, None)


_registry = _FunctionRegistry()


def function_memory_stats() -> dict[str, FunctionMemoryStats]:
    """Every monitored function's figures, keyed by its registry name. Thread-safe."""
    return _registry.all()


def get_function_stats(name: str) -> FunctionMemoryStats | None:
    """One function's figures (name as registered: ``module.qualname`` by default), or None."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    return _registry.get(name)


def reset_function_stats(name: str | None = None) -> None:
    """Forget the figures of ``name``, or of every function when ``name`` is None."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
    _registry.reset(name)


@overload
def monitor_function_memory(func: Callable[P, R]) -> Callable[P, R]: ...


@overload
def monitor_function_memory(
    func: None = None,
    *,
    name: str | None = None,
    trace: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def monitor_function_memory(
    func: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    trace: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function to record net/peak traced bytes and duration per call.

    Use bare (``@monitor_function_memory``) or with options
    (``@monitor_function_memory(name="parse", trace=False)``). Figures go to
    the registry under ``name`` (default ``module.qualname``). With
    ``trace=True`` tracemalloc is switched on for the call when it is off
    (shared reference count; switched off again after the last user), so
    each call is measured; with ``trace=False`` calls made while tracing is
    off record only their duration. The wrapper keeps the function's return
    value, exceptions and metadata (``functools.wraps``). Each call resets
    tracemalloc's peak when no other monitored call is in flight. Raises
    ``TypeError`` when ``func`` is not callable.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(trace, bool):
        raise TypeError(f"trace must be a bool, got {type(trace).__name__} {trace!r}")

    def decorate(target: Callable[P, R]) -> Callable[P, R]:
        if not callable(target):
            raise TypeError(f"func must be callable, got {type(target).__name__} {target!r}")
        key = name or f"{target.__module__}.{target.__qualname__}"
        # An object whose __call__ is a coroutine function (a memoized async
        # function, a class-based endpoint) is awaited like one.
        if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            type(target).__call__
        ):
            async_target = cast(Callable[P, Coroutine[Any, Any, Any]], target)

            @functools.wraps(target)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                token = _registry.begin(trace)
                started = clock()
                failed = True
                try:
                    result = await async_target(*args, **kwargs)
                    failed = False
                    return result
                finally:
                    _registry.end(token, key, clock() - started, failed)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(target)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token = _registry.begin(trace)
            started = clock()
            failed = True
            try:
                result = target(*args, **kwargs)
                failed = False
                return result
            finally:
                _registry.end(token, key, clock() - started, failed)

        return wrapper

    if func is None:
        return decorate
    return decorate(func)


# --- memory-efficient context ---------------------------------------------------------


@dataclass(frozen=True)
class ContextMemoryStats:
    """What a :func:`memory_efficient_context` block did, measured on exit.

    ``memory_*`` are process RSS bytes: at entry (after the entry collection),
    before and after the exit cleanup; ``memory_freed`` is what the exit
    cleanup returned (RSS can only shrink when the allocator hands pages back,
    hence ``trim``). ``traced_*`` are tracemalloc's figures when it traced, else
    None. ``duration`` covers the block, ``cleanup_duration`` the exit cleanup.
    """

    memory_at_enter: int
    memory_before: int
    memory_after: int
    traced_before: int | None
    traced_after: int | None
    objects_collected_on_enter: int
    objects_collected: int
    duration: float
    cleanup_duration: float
    trimmed: bool

    @property
    def memory_freed(self) -> int:
        """RSS bytes released by the exit cleanup (negative if RSS grew meanwhile)."""
        return self.memory_before - self.memory_after

    @property
    def traced_freed(self) -> int | None:
        """Traced bytes released by the exit collection, when tracemalloc traced."""
        if self.traced_before is None or self.traced_after is None:
            return None
        return self.traced_before - self.traced_after

    @property
    def growth(self) -> int:
        """RSS after the block and its cleanup minus RSS at entry."""
        return self.memory_after - self.memory_at_enter

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields and derived figures."""
        data = asdict(self)
        data["memory_freed"] = self.memory_freed
        data["traced_freed"] = self.traced_freed
        data["growth"] = self.growth
        return data


def _traced_now() -> int | None:
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None


class MemoryEfficientContext:
    """Sync and async context manager: collect on entry, collect (and trim) on exit, report.

    ``with memory_efficient_context() as ctx: ...`` then ``ctx.result``; the
    same object works with ``async with``. The cleanup is synchronous (a
    full collection holds the GIL either way), so it finishes even when the
    block is cancelled; exceptions from the block propagate unchanged.
    An instance can be reused but not nested (``RuntimeError``).
    """

    def __init__(
        self,
        *,
        generation: int = 2,
        trim: bool = True,
        rss: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._generation = check_int("generation", generation, minimum=0, maximum=2)
        if not isinstance(trim, bool):
            raise TypeError(f"trim must be a bool, got {type(trim).__name__} {trim!r}")
        self._trim = trim
        self._rss = rss if rss is not None else _rss_or_zero
        self._clock = clock
        self._inside = False
        self._entered_at = 0.0
        self._memory_at_enter = 0
        self._collected_on_enter = 0
        self._result: ContextMemoryStats | None = None

    @property
    def result(self) -> ContextMemoryStats:
        """The figures of the last completed block; ``RuntimeError`` before the first exit."""
        if self._result is None:
            raise RuntimeError("memory_efficient_context has not exited yet")
        return self._result

    def __enter__(self) -> MemoryEfficientContext:
        """Collect garbage, then note RSS; returns the context (read ``result`` after exit)."""
        if self._inside:
            raise RuntimeError("memory_efficient_context is already active; it cannot nest")
        self._collected_on_enter = gc.collect(self._generation)
        self._memory_at_enter = self._rss()
        self._inside = True
        self._entered_at = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Collect garbage (and trim the heap), then record :class:`ContextMemoryStats`."""
        ended = self._clock()
        memory_before = self._rss()
        traced_before = _traced_now()
        collected = gc.collect(self._generation)
        trimmed = malloc_trim() if self._trim else False
        traced_after = _traced_now()
        memory_after = self._rss()
        self._result = ContextMemoryStats(
            memory_at_enter=self._memory_at_enter,
            memory_before=memory_before,
            memory_after=memory_after,
            traced_before=traced_before,
            traced_after=traced_after,
            objects_collected_on_enter=self._collected_on_enter,
            objects_collected=collected,
            duration=ended - self._entered_at,
            cleanup_duration=self._clock() - ended,
            trimmed=trimmed,
        )
        self._inside = False

    async def __aenter__(self) -> MemoryEfficientContext:
        """Same as ``__enter__``, for ``async with``."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Same as ``__exit__``, for ``async with``."""
        self.__exit__(exc_type, exc, tb)


def memory_efficient_context(
    *,
    generation: int = 2,
    trim: bool = True,
    rss: Callable[[], int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> MemoryEfficientContext:
    """A sync/async context manager that collects garbage around a block and reports on exit.

    ``generation`` is the ``gc.collect`` generation (0..2); ``trim`` calls
    glibc's ``malloc_trim(0)`` after the exit collection where available so
    freed heap returns to the OS; ``rss`` overrides how RSS is read (default
    this process' RSS, 0 where it cannot be read). Raises
    ``TypeError``/``ValueError`` for bad arguments.
    """
    return MemoryEfficientContext(generation=generation, trim=trim, rss=rss, clock=clock)
