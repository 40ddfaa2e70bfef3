"""Per-package memory tracking: seed 001's lazy loader.

:class:`LazyLoader` imports packages on demand and keeps, per package, what
its import cost (traced bytes and RSS delta), how much traced memory its code
holds now, a bounded history of that figure, a leak verdict from
:class:`memwarden.leaks.LeakDetector`, and when it was last used. Its dicts
follow seed 001's JSON bodies (``memory_metrics``, ``leak_score``,
``memory_trend``, ``severity`` ...), so the HTTP layer returns them as they are.

Attribution: :meth:`LazyLoader.update_all_memory_metrics` takes one
tracemalloc snapshot, groups it by the file of each block's allocating
(innermost) frame, and gives each file to the registered package whose code
root contains it (the deepest one when registrations nest, so nothing is
counted twice). Memory a package's objects hold but that was allocated by
another package's code (the stdlib, C extensions without Python frames) is
counted where it was allocated; that is what tracemalloc can know.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
import sys
import threading
import time
import tracemalloc
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from ._native import malloc_trim
from ._packages import RootIndex, module_roots
from ._rss import process_rss
from ._validate import check_float, check_fraction, check_int
from .leaks import LeakDetector, calculate_memory_statistics
from .pressure import PressureLevel, PressureThresholds
from .probes import SystemProbe
from .profiler import _tracing
from .units import MiB

__all__ = ["LazyLoader", "get_lazy_loader"]

_log = logging.getLogger("memwarden.modules")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LEVEL_LABELS = ("low", "medium", "high", "critical")
_TRENDS = ("increasing", "decreasing", "stable")
_KINDS = ("cache", "pool")
_CACHE_KEYS = ("hit_rate", "size", "nbytes", "capacity")
_POOL_KEYS = ("size", "idle", "in_use_peak", "max_size")

StatsKind = Literal["cache", "pool"]


def _check_name(name: object, argument: str = "name") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a str, got {type(name).__name__} {name!r}")
    if not _NAME_RE.match(name):
        raise ValueError(f"{argument} must be a dotted module name, got {name!r}")
    return name


class _SystemPressure:
    """Default level provider: a SystemProbe (container-aware) classified with hysteresis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probe: SystemProbe | None = None
        self._thresholds = PressureThresholds()
        self._level: PressureLevel | None = None

    def __call__(self) -> PressureLevel:
        with self._lock:
            if self._probe is None:
                self._probe = SystemProbe()
            fraction = self._probe.sample().fraction
            self._level = self._thresholds.classify(fraction, self._level)
            return self._level


@dataclass
class _Package:
    """Mutable per-package state; only touched under the loader's lock."""

    name: str
    status: str = "registered"  # registered | loading | loaded | failed | unloaded
    module: ModuleType | None = None
    already_imported: bool = False
    error: str | None = None
    footprint: int | None = None
    import_rss_delta: int | None = None
    load_duration: float | None = None
    current: int | None = None
    peak: int | None = None
    check_count: int = 0
    last_check: float | None = None
    last_access: float | None = None
    growth_rate: float = 0.0
    leak_score: float = 0.0
    is_leak: bool = False
    trend: str = "stable"
    pressure_level: str = "low"
    average: float | None = None
    variance: float | None = None
    last_unload: dict[str, Any] | None = None
    history: deque[tuple[float, float]] | None = None


class LazyLoader:
    """Import packages on demand and track each one's memory (seed 001).

    ``pressure_level`` supplies the system level for summaries and
    suggestions (default: a :class:`~memwarden.probes.SystemProbe`, which sees
    a container's own limit, classified by the default thresholds).
    ``footprint_threshold`` (bytes) and ``idle_after`` (s) drive the
    high-footprint suggestion; ``leak_threshold`` is the score from
    which a package counts as leaking in summaries and suggestions;
    ``history`` bounds each package's samples. ``trace_imports`` switches
    tracemalloc on for the duration of an import when it is off, so the
    footprint is measured. Thread-safe: state changes happen under one lock;
    imports and snapshots run outside it.
    """

    def __init__(
        self,
        *,
        pressure_level: Callable[[], PressureLevel] | None = None,
        footprint_threshold: int = 100 * MiB,
        idle_after: float = 300.0,
        leak_threshold: float = 0.1,
        history: int = 100,
        leak_detector: LeakDetector | None = None,
        cache_min_hit_rate: float = 0.5,
        trace_imports: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rss: Callable[[], int | None] | None = None,
    ) -> None:
        check_int("footprint_threshold", footprint_threshold, minimum=0)
        check_float("idle_after", idle_after, minimum=0.0)
        check_fraction("leak_threshold", leak_threshold)
        check_int("history", history, minimum=2)
        check_fraction("cache_min_hit_rate", cache_min_hit_rate)
        if pressure_level is not None and not callable(pressure_level):
            raise TypeError(f"pressure_level must be callable, got {pressure_level!r}")
        if not isinstance(trace_imports, bool):
            raise TypeError(f"trace_imports must be a bool, got {trace_imports!r}")
        self._pressure_level = pressure_level or _SystemPressure()
        self._footprint_threshold = footprint_threshold
        self._idle_after = float(idle_after)
        self._leak_threshold = float(leak_threshold)
        self._history = history
        self._detector = leak_detector if leak_detector is not None else LeakDetector()
        self._cache_min_hit_rate = float(cache_min_hit_rate)
        self._trace_imports = trace_imports
        self._clock = clock
        self._rss_reader = rss if rss is not None else process_rss
        self._lock = threading.RLock()
        self._packages: dict[str, _Package] = {}
        self._providers: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}
        self._tracking = 0

    # --- registration and loading ----------------------------------------------------

    def register(self, name: str) -> None:
        """Track ``name`` (a dotted module name) without importing it; idempotent.

        Raises ``TypeError``/``ValueError`` for a name that is not a module name.
        """
        _check_name(name)
        with self._lock:
            self._ensure(name)

    def _ensure(self, name: str) -> _Package:
        package = self._packages.get(name)
        if package is None:
            package = _Package(name=name, history=deque(maxlen=self._history))
            self._packages[name] = package
        return package

    def registered(self) -> list[str]:
        """Names of every registered package, in registration order."""
        with self._lock:
            return list(self._packages)

    def load(self, name: str) -> ModuleType:
        """Import ``name`` (registering it if needed) and return the module.

        A first import is measured: traced bytes still held after the import
        (``memory_footprint``) and the RSS delta. A module imported before is
        returned as it is and reported as ``already_imported`` with no
        footprint. Every call counts as a use of the package. Import errors
        propagate after the package is marked ``failed``. Raises
        ``TypeError``/``ValueError`` for a bad name.
        """
        _check_name(name)
        now = self._clock()
        with self._lock:
            package = self._ensure(name)
            package.last_access = now
            if package.status == "loaded" and package.module is not None:
                if sys.modules.get(name) is package.module:
                    return package.module
                package.status = "unloaded"  # removed from sys.modules behind our back
            # Another thread is importing it: importlib's module lock makes us wait for the
            # finished module (sys.modules may already hold a half-initialised one).
            measure = package.status != "loading"
            existing = sys.modules.get(name) if measure else None
            if existing is not None:
                package.module = existing
                package.status = "loaded"
                package.error = None
                if package.footprint is None:
                    package.already_imported = True
                return existing
            if measure:
                package.status = "loading"
        if not measure:
            return importlib.import_module(name)
        return self._import_measured(package)

    def _rss(self) -> int:
        # 0 where RSS cannot be read, so deltas stay numbers.
        return self._rss_reader() or 0

    def _import_measured(self, package: _Package) -> ModuleType:
        traced_ref = False
        if self._trace_imports:
            _tracing.acquire()
            traced_ref = True
        try:
            rss_before = self._rss()
            traced_before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
            started = self._clock()
            try:
                module = importlib.import_module(package.name)
            except BaseException as exc:
                with self._lock:
                    package.status = "failed"
                    package.error = f"{type(exc).__name__}: {exc}"
                    package.module = None
                raise
            duration = self._clock() - started
            traced_after = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
            rss_after = self._rss()
        finally:
            if traced_ref:
                _tracing.release()
        with self._lock:
            package.module = module
            package.status = "loaded"
            package.error = None
            package.already_imported = False
            package.load_duration = duration
            package.import_rss_delta = rss_after - rss_before
            if traced_before is not None and traced_after is not None:
                package.footprint = max(traced_after - traced_before, 0)
            else:
                package.footprint = None
        return module

    def is_loaded(self, name: str) -> bool:
        """Whether ``name`` was loaded through this loader and is still imported."""
        _check_name(name)
        with self._lock:
            package = self._packages.get(name)
            return (
                package is not None
                and package.status == "loaded"
                and sys.modules.get(name) is package.module
            )

    def unload(self, name: str) -> bool:
        """Best-effort unload: drop ``name`` and its submodules from ``sys.modules`` and the loader.

        Returns True when something was removed. Python cannot force a module
        out of memory while anything references it; the package's
        ``last_unload`` record says honestly what happened: modules removed,
        RSS and traced bytes freed by the following collection, and whether
        the module object is still alive (``still_referenced``). Raises
        ``TypeError``/``ValueError`` for a bad name.
        """
        _check_name(name)
        with self._lock:
            package = self._packages.get(name)
            if package is None or package.status != "loaded":
                return False
            module = package.module
            prefix = name + "."
            doomed = [m for m in list(sys.modules) if m == name or m.startswith(prefix)]
            rss_before = self._rss()
            traced_before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
            for module_name in doomed:
                sys.modules.pop(module_name, None)
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name) if parent_name else None
            if parent is not None and module is not None and getattr(parent, child, None) is module:
                # The parent package's attribute would otherwise keep the submodule alive.
                delattr(parent, child)
            package.module = None
            package.status = "unloaded"
            alive = weakref.ref(module) if module is not None else None
            del module
        collected = gc.collect()
        malloc_trim()
        traced_after = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        rss_after = self._rss()
        still_referenced = alive is not None and alive() is not None
        with self._lock:
            package.last_unload = {
                "modules_removed": len(doomed),
                "objects_collected": collected,
                "memory_freed": rss_before - rss_after,
                "traced_freed": (
                    traced_before - traced_after
                    if traced_before is not None and traced_after is not None
                    else None
                ),
                "still_referenced": still_referenced,
                "unload_time": time.time(),
            }
        return bool(doomed)

    # --- tracking --------------------------------------------------------------------

    def start_tracking(self, *, nframe: int = 1) -> None:
        """Switch tracemalloc on (shared reference count) so metrics can be attributed.

        Nests with :meth:`stop_tracking`; tracing that was on before is left on.
        """
        check_int("nframe", nframe, minimum=1, maximum=65535)
        with self._lock:
            _tracing.acquire(nframe)
            self._tracking += 1

    def stop_tracking(self) -> None:
        """Undo one :meth:`start_tracking`; a no-op when not tracking."""
        with self._lock:
            if self._tracking == 0:
                return
            self._tracking -= 1
            _tracing.release()

    def _roots(self) -> RootIndex:
        roots: dict[str, list[str]] = {}
        for name in self._packages:
            module = sys.modules.get(name)
            if module is not None:
                roots[name] = module_roots(module)
        return RootIndex(roots)

    def _level(self) -> PressureLevel:
        try:
            return PressureLevel.parse(self._pressure_level())
        except Exception:  # a broken provider must not break reporting
            _log.exception("pressure_level provider failed; assuming LOW")
            return PressureLevel.LOW

    def update_all_memory_metrics(self) -> dict[str, Any]:
        """Attribute current traced memory to the registered packages and extend their history.

        Returns seed 001's update-metrics body: message, update_time, plus
        packages (how many were updated) and tracing. When tracemalloc is not
        tracing nothing is attributed (``tracing`` is False and the message
        says so); nothing is invented.
        """
        update_time = time.time()
        if not tracemalloc.is_tracing():
            return {
                "message": "tracemalloc is not tracing; per-package memory was not updated "
                "(call start_tracking() or MemoryProfiler.start_profiling())",
                "update_time": update_time,
                "packages": 0,
                "tracing": False,
            }
        stats = tracemalloc.take_snapshot().statistics("filename")
        level = self._level().label
        now = self._clock()
        with self._lock:
            index = self._roots()
            usage = dict.fromkeys(self._packages, 0)
            for stat in stats:
                owner = index.owner(stat.traceback[0].filename)
                if owner is not None:
                    usage[owner] += stat.size
            for name, package in self._packages.items():
                self._record(package, usage[name], now, update_time, level)
            count = len(self._packages)
        return {
            "message": "Memory metrics updated for all packages",
            "update_time": update_time,
            "packages": count,
            "tracing": True,
        }

    def _record(self, package: _Package, current: int, now: float, wall: float, level: str) -> None:
        assert package.history is not None
        package.current = current
        package.peak = current if package.peak is None else max(package.peak, current)
        package.history.append((now, float(current)))
        package.check_count += 1
        package.last_check = wall
        package.pressure_level = level
        history = list(package.history)
        report = self._detector.analyze(history)
        package.leak_score = float(report.score)
        package.is_leak = bool(report.is_leak)
        package.trend = str(report.trend)
        package.growth_rate = float(report.growth_rate)
        figures = calculate_memory_statistics(history)
        package.average = figures.get("average")
        package.variance = figures.get("variance")

    # --- reports ---------------------------------------------------------------------

    @staticmethod
    def _metrics(package: _Package) -> dict[str, Any]:
        assert package.history is not None
        return {
            "current_memory_usage": package.current,
            "peak_memory_usage": package.peak,
            "memory_footprint": package.footprint,
            "memory_leak_score": package.leak_score,
            "memory_trend": package.trend,
            "memory_pressure_level": package.pressure_level,
            "memory_growth_rate": package.growth_rate,
            "average_memory_usage": package.average,
            "memory_variance": package.variance,
            "memory_check_count": package.check_count,
            "last_memory_check": package.last_check,
            "memory_history_length": len(package.history),
            "import_rss_delta": package.import_rss_delta,
            "load_duration": package.load_duration,
        }

    def _is_loaded(self, package: _Package) -> bool:
        return package.status == "loaded" and sys.modules.get(package.name) is package.module

    def get_package_memory_info(self, name: str) -> dict[str, Any] | None:
        """Seed 001's package body (package_name, memory_metrics, is_loaded, status), or None.

        Adds already_imported, last_access (loader clock), error and
        last_unload. Raises ``TypeError``/``ValueError`` for a bad name.
        """
        _check_name(name)
        with self._lock:
            package = self._packages.get(name)
            if package is None:
                return None
            return {
                "package_name": package.name,
                "memory_metrics": self._metrics(package),
                "is_loaded": self._is_loaded(package),
                "status": package.status,
                "already_imported": package.already_imported,
                "last_access": package.last_access,
                "error": package.error,
                "last_unload": dict(package.last_unload) if package.last_unload else None,
            }

    def get_memory_usage_summary(self) -> dict[str, Any]:
        """Seed 001's summary body: totals, leaking packages, trend and level counts.

        Totals sum the known figures (packages never measured add nothing);
        ``packages_with_leaks`` lists packages at or above the loader's
        ``leak_threshold``. Adds ``tracing``.
        """
        system = self._level().label
        with self._lock:
            packages = list(self._packages.values())
            trends = dict.fromkeys(_TRENDS, 0)
            levels = dict.fromkeys(_LEVEL_LABELS, 0)
            leaking = []
            for package in packages:
                trends[package.trend] = trends.get(package.trend, 0) + 1
                levels[package.pressure_level] = levels.get(package.pressure_level, 0) + 1
                if self._leaking(package, self._leak_threshold):
                    leaking.append(
                        {
                            "package_name": package.name,
                            "leak_score": package.leak_score,
                            "trend": package.trend,
                            "growth_rate": package.growth_rate,
                        }
                    )
            return {
                "total_current_memory": sum(p.current or 0 for p in packages),
                "total_peak_memory": sum(p.peak or 0 for p in packages),
                "total_memory_footprint": sum(p.footprint or 0 for p in packages),
                "packages_with_leaks": leaking,
                "memory_trends": trends,
                "memory_pressure_levels": levels,
                "system_memory_pressure": system,
                "total_packages": len(packages),
                "loaded_packages": sum(1 for p in packages if self._is_loaded(p)),
                "tracing": tracemalloc.is_tracing(),
            }

    @staticmethod
    def _leaking(package: _Package, threshold: float) -> bool:
        return package.leak_score > 0.0 and package.leak_score >= threshold

    def detect_memory_leaks(self, threshold: float = 0.1) -> list[dict[str, Any]]:
        """Packages whose leak score is above zero and at least ``threshold``, worst first.

        Each dict has seed 001's leak keys. Raises ``ValueError``/``TypeError``
        for a threshold outside [0, 1].
        """
        limit = check_fraction("threshold", threshold)
        with self._lock:
            found = [p for p in self._packages.values() if self._leaking(p, limit)]
            found.sort(key=lambda p: p.leak_score, reverse=True)
            return [
                {
                    "package_name": p.name,
                    "leak_score": p.leak_score,
                    "memory_trend": p.trend,
                    "memory_growth_rate": p.growth_rate,
                    "current_memory_usage": p.current,
                    "peak_memory_usage": p.peak,
                    "memory_footprint": p.footprint,
                    "memory_check_count": p.check_count,
                    "last_memory_check": p.last_check,
                }
                for p in found
            ]

    def get_leak_report(self, threshold: float = 0.1) -> dict[str, Any]:
        """Seed 001's leaks body: leaks, total_leaks, threshold, detection_time."""
        leaks = self.detect_memory_leaks(threshold)
        return {
            "leaks": leaks,
            "total_leaks": len(leaks),
            "threshold": float(threshold),
            "detection_time": time.time(),
        }

    # --- suggestions -----------------------------------------------------------------

    def register_stats_provider(
        self, name: str, kind: StatsKind, provider: Callable[[], Mapping[str, float]]
    ) -> None:
        """Let suggestions look at a cache or pool: ``provider()`` returns its current figures.

        A cache provider returns at least hit_rate, size, nbytes, capacity; a
        pool provider size, idle, in_use_peak, max_size. Registering a name
        again replaces it. Raises ``TypeError``/``ValueError`` for a bad
        name, an unknown ``kind`` or a non-callable provider.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a non-empty str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if not callable(provider):
            raise TypeError(
                f"provider must be callable, got {type(provider).__name__} {provider!r}"
            )
        with self._lock:
            self._providers[name] = (kind, provider)

    def unregister_stats_provider(self, name: str) -> bool:
        """Forget a stats provider; True when it was registered."""
        with self._lock:
            return self._providers.pop(name, None) is not None

    def set_pressure_level_provider(self, provider: Callable[[], PressureLevel]) -> None:
        """Replace where the system pressure level comes from (the Warden wires its monitor)."""
        if not callable(provider):
            raise TypeError(
                f"provider must be callable, got {type(provider).__name__} {provider!r}"
            )
        with self._lock:
            self._pressure_level = provider

    def get_memory_optimization_suggestions(self) -> list[dict[str, Any]]:
        """What to do about memory, as dicts with seed 001's suggestion keys.

        Keys: type, package_name, severity, message, recommendation, value.

        Types: ``memory_leak`` (score at or above ``leak_threshold``),
        ``high_memory_footprint`` (over ``footprint_threshold`` and unused for
        ``idle_after`` seconds), ``high_pressure`` (system level HIGH or
        worse; package_name None), ``oversized_cache`` (a registered cache
        that is mostly full but mostly misses) and ``oversized_pool`` (a pool
        holding more objects than its peak use). Highest severity first. A
        provider that raises or lacks keys is skipped and logged.
        """
        suggestions: list[dict[str, Any]] = []
        level = self._level()
        now = self._clock()
        with self._lock:
            packages = list(self._packages.values())
            providers = list(self._providers.items())
            for package in packages:
                if self._leaking(package, self._leak_threshold):
                    suggestions.append(self._leak_suggestion(package))
                size = max(package.footprint or 0, package.current or 0)
                idle = package.last_access is None or now - package.last_access >= self._idle_after
                if self._is_loaded(package) and size > self._footprint_threshold and idle:
                    severity = "high" if size > 4 * self._footprint_threshold else "medium"
                    suggestions.append(
                        _suggestion(
                            "high_memory_footprint", package.name, severity,
                            f"Package '{package.name}' has high memory footprint: "
                            f"{size / MiB:.1f}MB",
                            "Consider unloading if not frequently used", size,
                        )
                    )  # fmt: skip
        if level >= PressureLevel.HIGH:
            suggestions.append(
                _suggestion(
                    "high_pressure", None, "high",
                    f"System memory pressure is {level.label}",
                    "Unload idle packages, shrink caches and pools, and run garbage collection",
                    level.label,
                )
            )  # fmt: skip
        for name, (kind, provider) in providers:
            figures = self._read_provider(name, kind, provider)
            if figures is None:
                continue
            found = self._cache_suggestion(name, figures) if kind == "cache" else None
            if kind == "pool":
                found = _pool_suggestion(name, figures)
            if found is not None:
                suggestions.append(found)
        rank = {"high": 0, "medium": 1, "low": 2}
        suggestions.sort(key=lambda s: rank[s["severity"]])
        return suggestions

    @staticmethod
    def _leak_suggestion(package: _Package) -> dict[str, Any]:
        score = package.leak_score
        severity = "high" if score >= 0.3 else "medium" if score >= 0.2 else "low"
        return _suggestion(
            "memory_leak", package.name, severity,
            f"Package '{package.name}' shows signs of memory leak (score: {score:.2f})",
            "Investigate memory usage patterns and consider reloading", score,
        )  # fmt: skip

    @staticmethod
    def _read_provider(
        name: str, kind: str, provider: Callable[[], Mapping[str, float]]
    ) -> dict[str, float] | None:
        try:
            raw = provider()
            keys = _CACHE_KEYS if kind == "cache" else _POOL_KEYS
            return {key: float(raw[key]) for key in keys}
        except Exception:
            _log.exception("stats provider %r (%s) failed; skipped", name, kind)
            return None

    def _cache_suggestion(self, name: str, figures: Mapping[str, float]) -> dict[str, Any] | None:
        hit_rate, size, nbytes, capacity = (figures[k] for k in _CACHE_KEYS)
        if size <= 0 or hit_rate >= self._cache_min_hit_rate:
            return None
        mostly_full = capacity <= 0 or size >= 0.5 * capacity
        if not mostly_full:
            return None
        severity = "high" if hit_rate < 0.1 and nbytes > self._footprint_threshold else "medium"
        return _suggestion(
            "oversized_cache", name, severity,
            f"Cache '{name}' holds {nbytes / MiB:.1f}MB in {int(size)} entries "
            f"with a hit rate of {hit_rate:.0%}",
            "Lower its capacity or TTL: most lookups miss, so most entries are never reused",
            int(nbytes),
        )  # fmt: skip

    def get_suggestion_report(self) -> dict[str, Any]:
        """Seed 001's suggestions body: suggestions, counts per severity, generation_time."""
        suggestions = self.get_memory_optimization_suggestions()
        return {
            "suggestions": suggestions,
            "total_suggestions": len(suggestions),
            "high_severity": sum(1 for s in suggestions if s["severity"] == "high"),
            "medium_severity": sum(1 for s in suggestions if s["severity"] == "medium"),
            "low_severity": sum(1 for s in suggestions if s["severity"] == "low"),
            "generation_time": time.time(),
        }

    def force_garbage_collection(self) -> dict[str, Any]:
        """Run a full collection and trim; seed 001's garbage-collection body.

        Keys: memory_before, memory_after, memory_freed (RSS bytes),
        objects_collected, garbage_collection_time (wall clock), plus
        duration (s). Runs synchronously; call it from a worker thread if the
        heap is large.
        """
        started = time.perf_counter()
        before = self._rss()
        collected = gc.collect()
        malloc_trim()
        after = self._rss()
        return {
            "memory_before": before,
            "memory_after": after,
            "memory_freed": before - after,
            "objects_collected": collected,
            "garbage_collection_time": time.time(),
            "duration": time.perf_counter() - started,
        }


def _suggestion(
    kind: str,
    package_name: str | None,
    severity: str,
    message: str,
    recommendation: str,
    value: float | int | str,
) -> dict[str, Any]:
    return {
        "type": kind,
        "package_name": package_name,
        "severity": severity,
        "message": message,
        "recommendation": recommendation,
        "value": value,
    }


def _pool_suggestion(name: str, figures: Mapping[str, float]) -> dict[str, Any] | None:
    size, idle, peak, max_size = (figures[k] for k in _POOL_KEYS)
    surplus = int(size - max(peak, 0))
    if size < 2 or surplus <= 0 or idle < surplus:
        return None
    severity = "medium" if surplus * 2 >= size else "low"
    return _suggestion(
        "oversized_pool", name, severity,
        f"Pool '{name}' holds {int(size)} objects ({int(idle)} idle) "
        f"but its peak use was {int(peak)} (max_size {int(max_size)})",
        f"Trim idle objects or lower max_size towards {max(int(peak), 1)}",
        surplus,
    )  # fmt: skip


_singleton: LazyLoader | None = None
_singleton_lock = threading.Lock()


def get_lazy_loader() -> LazyLoader:
    """The process-wide :class:`LazyLoader`, created with defaults on first use. Thread-safe."""
    global _singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = LazyLoader()
        return _singleton
