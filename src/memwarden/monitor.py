"""MemoryMonitor: the seed systems' synchronous memory monitor (seeds 001 and 003).

Seed 003 asked for current metrics in MB and an admission check
(``check_memory_available``); seed 001 for process usage, a pressure label,
module footprints and trend/leak analysis of ``(t, bytes)`` histories. Both
surfaces live here, on top of a :class:`~memwarden.probes.Probe` (the machine
or container by default) and :mod:`memwarden.leaks`.

MB here means MiB (2**20 bytes), as the seeds computed it (``bytes / 1024 / 1024``).
Everything is synchronous and cheap (one probe sample per call); the monitor
may be shared between threads. With ``enable_background_monitoring`` (seed
003's switch) it also runs its own periodic check in a daemon thread:
classify the level, and carry out seed 003's emergency cleanup and proactive
collection as :class:`~memwarden.gc.Upkeep` decides. A Warden does not need
this: it always monitors, asynchronously.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import tracemalloc
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

from ._native import malloc_trim
from ._rss import process_rss
from ._validate import check_float
from .config import WardenConfig
from .errors import InsufficientMemoryError
from .gc import Upkeep
from .leaks import LeakDetector, analyze_memory_trend, calculate_memory_statistics
from .pressure import PressureLevel
from .probes import MemorySample, Probe
from .sizeof import deep_sizeof
from .units import MiB

__all__ = ["MemoryMetrics", "MemoryMonitor"]

logger = logging.getLogger("memwarden.monitor")


@dataclass(frozen=True)
class MemoryMetrics:
    """Memory of the machine or container in MB (MiB), as seed 003's ``get_current_metrics``.

    Supports ``metrics.used_mb`` and, for code written against a dict,
    ``metrics["used_mb"]``, ``"used_mb" in metrics``, ``metrics.keys()`` and
    ``dict(metrics)``.
    """

    total_mb: float
    available_mb: float
    used_mb: float
    percent_used: float
    timestamp: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-able dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def keys(self) -> list[str]:
        """Field names, so ``dict(metrics)`` works."""
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str) -> float:
        if key not in self.keys():
            raise KeyError(key)
        value: float = getattr(self, key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def _module_files(module: types.ModuleType) -> list[str]:
    """Path patterns (for tracemalloc filters) of the files a module was loaded from."""
    path = getattr(module, "__file__", None)
    if not path:
        return []
    if os.path.basename(path).startswith("__init__."):
        return [os.path.join(os.path.dirname(path), "*")]
    return [path]


def _owned(value: object, names: set[str]) -> bool:
    """Whether a function or class was defined in one of the modules ``names``."""
    return getattr(value, "__module__", None) in names


def _namespace_bytes(modules: list[types.ModuleType]) -> int:
    """Bytes held by the modules' namespaces: their objects, functions and classes.

    Imported names (other modules, and functions or classes defined elsewhere)
    are not counted: they belong to the module that defined them.
    """
    names = {m.__name__ for m in modules}
    seen: set[int] = set()
    total = 0
    for module in modules:
        total += sys.getsizeof(module) + sys.getsizeof(vars(module))
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType) or id(value) in seen:
                continue
            if isinstance(value, types.FunctionType | type):
                if not _owned(value, names):
                    continue
                seen.add(id(value))
                total += sys.getsizeof(value)
                members = vars(value).values() if isinstance(value, type) else [value]
                if isinstance(value, type):
                    total += sys.getsizeof(vars(value))
                for member in members:
                    code = getattr(member, "__code__", None)
                    if code is not None and id(code) not in seen:
                        seen.add(id(code))
                        total += sys.getsizeof(code) + sys.getsizeof(code.co_code)
                continue
            total += deep_sizeof(value, seen=seen)
    return total


class MemoryMonitor:
    """Seeds 001 and 003's memory monitor over a probe and the leak detector.

    ``probe=None`` uses :class:`~memwarden.probes.SystemProbe` (the machine or
    container). ``detector`` (keyword) judges histories for
    :meth:`detect_memory_leak`; default ``LeakDetector()``. With
    ``config.enable_background_monitoring`` the constructor starts the
    background check (:meth:`start`); :meth:`stop` or ``with monitor:`` ends
    it. Thread-safe.
    """

    def __init__(
        self,
        config: WardenConfig | None = None,
        *,
        probe: Probe | None = None,
        detector: LeakDetector | None = None,
    ) -> None:
        if config is not None and not isinstance(config, WardenConfig):
            raise TypeError(f"config must be a WardenConfig, got {config!r}")
        if probe is not None and not callable(getattr(probe, "sample", None)):
            raise TypeError(f"probe must have a sample() method, got {probe!r}")
        if detector is not None and not isinstance(detector, LeakDetector):
            raise TypeError(f"detector must be a LeakDetector, got {detector!r}")
        self.config = config if config is not None else WardenConfig()
        if probe is None:
            from .probes import SystemProbe  # deferred: it reads /proc and cgroup files

            probe = SystemProbe()
        self.probe: Probe = probe
        self.detector = detector if detector is not None else LeakDetector()
        self._thresholds = self.config.thresholds
        self._level: PressureLevel | None = None
        self._lock = threading.Lock()
        self.upkeep = Upkeep.from_config(self.config)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.checks = 0
        if self.config.enable_background_monitoring:
            self.start()

    # -- the background check (seed 003's enable_background_monitoring) ---------------------

    def check(self) -> str | None:
        """One background check: classify the level, then run the upkeep action due.

        Returns ``"emergency"`` (a full collection and ``malloc_trim``),
        ``"collect"`` (a full collection) or None. Logs level changes.
        """
        sample = self.probe.sample()
        with self._lock:
            previous = self._level
            self._level = self._thresholds.classify(sample.fraction, previous)
            level = self._level
            self.checks += 1
        if level != previous and previous is not None:
            logger.info("memory pressure %s -> %s", previous.label, level.label)
        action = self.upkeep.due(sample)
        if action is not None:
            gc.collect()
            if action == "emergency":
                malloc_trim()
        return action

    def start(self) -> None:
        """Start the background check every ``config.monitor_interval`` seconds (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="memwarden-memory-monitor", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background check and wait up to ``timeout`` s for it (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the background check is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        interval = self.config.monitor_interval
        while not self._stopping.is_set():
            try:
                self.check()
            except Exception:
                logger.exception("background memory check failed")
            self._stopping.wait(interval)

    def __enter__(self) -> MemoryMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def sample(self) -> MemorySample:
        """Take one sample from the probe."""
        return self.probe.sample()

    def get_current_metrics(self) -> MemoryMetrics:
        """Total, available and used memory (MB) and the percent used, from one sample."""
        s = self.probe.sample()
        return MemoryMetrics(
            total_mb=s.limit / MiB,
            available_mb=s.available / MiB,
            used_mb=s.used / MiB,
            percent_used=s.fraction * 100.0,
            timestamp=s.timestamp,
        )

    def check_memory_available(self, required_mb: float) -> bool:
        """True if ``required_mb`` fits under ``config.max_memory_percent`` of the limit.

        The room is ``limit * max_memory_percent / 100 - used`` (never more than
        what the probe reports available). Raises
        :class:`~memwarden.errors.InsufficientMemoryError` with the required,
        available and limit figures when it does not fit, and
        ``ValueError``/``TypeError`` for a negative, NaN or non-number
        ``required_mb``.
        """
        required_mb = check_float("required_mb", required_mb, minimum=0.0)
        s = self.probe.sample()
        percent = self.config.max_memory_percent
        allowed = s.limit * percent / 100.0
        room = max(0.0, min(allowed - s.used, float(s.available)))
        if required_mb * MiB <= room:
            return True
        raise InsufficientMemoryError(
            f"required {required_mb:.1f} MB but only {room / MiB:.1f} MB is available "
            f"under max_memory_percent={percent:g}% of the {s.limit / MiB:.1f} MB limit "
            f"({s.used / MiB:.1f} MB used)"
        )

    def get_current_memory_usage(self) -> float:
        """This process' resident memory (RSS) in MB, as seed 001 measured it.

        Uses the probe's ``rss`` when it reports one, else reads it; 0.0 where
        it cannot be read.
        """
        rss = self.probe.sample().rss
        if rss is None:
            rss = process_rss() or 0
        return rss / MiB

    def get_memory_pressure_level(self) -> str:
        """``"low"``, ``"medium"``, ``"high"`` or ``"critical"`` for the current sample.

        Classified with the config's thresholds and hysteresis, against the
        level this monitor returned last time.
        """
        fraction = self.probe.sample().fraction
        with self._lock:
            self._level = self._thresholds.classify(fraction, self._level)
            return self._level.label

    def detect_memory_leak(self, history: Sequence[tuple[float, float]]) -> tuple[bool, float]:
        """``(is_leak, score)`` of a ``(t_seconds, bytes)`` history, by :class:`LeakDetector`.

        Raises ``TypeError``/``ValueError`` for a malformed history.
        """
        report = self.detector.analyze(history)
        return report.is_leak, report.score

    def analyze_memory_trend(self, history: Sequence[tuple[float, float]]) -> str:
        """``"increasing"``, ``"decreasing"`` or ``"stable"``; see :func:`analyze_memory_trend`."""
        return analyze_memory_trend(history)

    def calculate_memory_statistics(
        self, history: Sequence[tuple[float, float]]
    ) -> dict[str, float]:
        """Average, variance, min, max, growth_rate, samples of a ``(t, bytes)`` history."""
        return calculate_memory_statistics(history)

    def get_memory_footprint(self, module_name: str) -> float:
        """Memory (MB) attributable to an imported module or package; 0.0 if not imported.

        While :mod:`tracemalloc` is tracing, this is the size of the live
        allocations made by code in the module's files (for a package, every
        file under its directory), which includes what its import built. Without
        tracing it is an estimate: the module objects of the package and its
        loaded submodules, their functions (with code) and classes, and a deep
        size of every other object their namespaces hold, each counted once.
        Raises ``TypeError`` for a non-str ``module_name``.
        """
        if not isinstance(module_name, str):
            raise TypeError(
                f"module_name must be a str, got {type(module_name).__name__} {module_name!r}"
            )
        module = sys.modules.get(module_name)
        if module is None:
            return 0.0
        prefix = module_name + "."
        modules = [module] + [
            m
            for name, m in list(sys.modules.items())
            if name.startswith(prefix) and isinstance(m, types.ModuleType)
        ]
        if tracemalloc.is_tracing():
            patterns = sorted({p for m in modules for p in _module_files(m)})
            if patterns:
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(True, pattern) for pattern in patterns]
                )
                return sum(stat.size for stat in snapshot.statistics("filename")) / MiB
        return _namespace_bytes(modules) / MiB

    def __repr__(self) -> str:
        return f"MemoryMonitor(probe={self.probe!r})"
