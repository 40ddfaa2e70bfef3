"""Prometheus exposition of a Warden's figures: the ``/metrics`` route.

Two modes, chosen when the app is created:

- **Single process** (the default): each app has its own
  :class:`~prometheus_client.CollectorRegistry` holding one custom collector
  that reads the Warden live at scrape time, so several apps (and Wardens)
  can live in one process and a scrape always sees current figures.
- **Multiprocess** (``PROMETHEUS_MULTIPROC_DIR`` set, as under gunicorn or
  ``uvicorn --workers``): prometheus-client cannot run custom collectors
  across processes, so every sample the Warden's monitor takes also writes
  ordinary gauges, counters and a histogram (gauges with an explicit
  ``multiprocess_mode``: ``livemax`` for container-wide figures every worker
  sees alike, ``livesum`` for what each worker holds), and ``/metrics``
  serves :class:`~prometheus_client.multiprocess.MultiProcessCollector`.
  The variable must be set before the process imports prometheus-client.

Names carry the ``memwarden_`` prefix and base units; labels come only from
names the user chose (cache, pool and leak-series names) or from small fixed
sets (levels, shed reasons, GC generations), never from request paths.
"""

from __future__ import annotations

import bisect
import gc as pygc
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._rss import process_rss
from ..pressure import PressureEvent, PressureLevel

if TYPE_CHECKING:
    from ..warden import Warden

__all__ = ["METRIC_NAMES", "MetricsExporter"]

_log = logging.getLogger("memwarden.http")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Every metric family the app exports (counters with their ``_total`` suffix).
METRIC_NAMES = (
    "memwarden_memory_used_bytes",
    "memwarden_memory_limit_bytes",
    "memwarden_memory_available_bytes",
    "memwarden_process_resident_bytes",
    "memwarden_pressure_level",
    "memwarden_pressure_transitions_total",
    "memwarden_budget_capacity_bytes",
    "memwarden_budget_reserved_bytes",
    "memwarden_budget_unmanaged_bytes",
    "memwarden_budget_waiters",
    "memwarden_budget_wait_seconds",
    "memwarden_budget_timeouts_total",
    "memwarden_budget_evictions_total",
    "memwarden_requests_shed_total",
    "memwarden_cache_bytes",
    "memwarden_cache_hits_total",
    "memwarden_cache_misses_total",
    "memwarden_cache_evictions_total",
    "memwarden_pool_in_use",
    "memwarden_pool_idle",
    "memwarden_sessions",
    "memwarden_gc_collections_total",
    "memwarden_leak_score",
    "memwarden_build_info",
)

#: Upper bounds (s) of the budget wait histogram's buckets.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
_SHED_REASONS = ("pressure", "timeout", "too_large")
_Mode = Literal["livemax", "livesum"]

_HELP = {
    "memwarden_memory_used_bytes": "Memory counted against the limit (page cache excluded).",
    "memwarden_memory_limit_bytes": "The effective memory limit (cgroup limit when lower).",
    "memwarden_memory_available_bytes": "Memory still usable before the limit.",
    "memwarden_process_resident_bytes": "This process' resident set size.",
    "memwarden_pressure_level": "Pressure level: 0 low, 1 medium, 2 high, 3 critical.",
    "memwarden_pressure_transitions": "Changes of pressure level, by the level entered.",
    "memwarden_budget_capacity_bytes": "The memory budget's capacity.",
    "memwarden_budget_reserved_bytes": "Bytes reserved from the budget (managed memory).",
    "memwarden_budget_unmanaged_bytes": "Measured memory use beyond the reserved bytes.",
    "memwarden_budget_waiters": "Requests waiting for budget bytes.",
    "memwarden_budget_wait_seconds": "Time requests waited for budget bytes.",
    "memwarden_budget_timeouts": "Budget requests that timed out.",
    "memwarden_budget_evictions": "Evictable reservations evicted by the budget.",
    "memwarden_requests_shed": "Requests refused by the memory guard, by reason.",
    "memwarden_cache_bytes": "Bytes held by a cache.",
    "memwarden_cache_hits": "Cache hits.",
    "memwarden_cache_misses": "Cache misses.",
    "memwarden_cache_evictions": "Cache entries evicted.",
    "memwarden_pool_in_use": "Pool objects leased out.",
    "memwarden_pool_idle": "Pool objects idle.",
    "memwarden_sessions": "Live sessions.",
    "memwarden_gc_collections": "Garbage collections, by generation.",
    "memwarden_leak_score": "Leak score (0..1) of a watched series.",
    "memwarden_build_info": "memwarden's version (always 1).",
}


def _version() -> str:
    from .. import __version__

    return str(__version__)


class TransitionCounter:
    """Counts pressure level changes by the level entered (a monitor listener)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys((level.label for level in PressureLevel), 0)

    def __call__(self, event: PressureEvent) -> None:
        """Count ``event`` when it changes the level (re-notifications are not changes)."""
        if event.level != event.previous:
            with self._lock:
                self._counts[event.level.label] += 1

    def counts(self) -> dict[str, int]:
        """Changes so far, by the label of the level entered."""
        with self._lock:
            return dict(self._counts)


@dataclass
class Snapshot:
    """Everything ``/metrics`` reports, read from a Warden at one moment."""

    used: int = 0
    limit: int = 0
    available: int = 0
    resident: int | None = None
    level: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    capacity: int = 0
    reserved: int = 0
    unmanaged: int = 0
    waiters: int = 0
    timeouts: int = 0
    evictions: int = 0
    shed: dict[str, int] = field(default_factory=dict)
    caches: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)
    sessions: int = 0
    collections: list[int] = field(default_factory=list)
    leak_scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, warden: Warden, transitions: TransitionCounter) -> Snapshot:
        """Read every figure (cheap: counters and stats snapshots, no walk of memory)."""
        snap = cls()
        sample = warden.monitor.last_sample
        if sample is not None:
            snap.used, snap.limit, snap.available = sample.used, sample.limit, sample.available
            snap.resident = sample.rss
        if snap.resident is None:
            snap.resident = process_rss()
        snap.level = int(warden.monitor.level)
        snap.transitions = transitions.counts()
        stats = warden.manager.get_stats()
        snap.capacity = stats.total_allocated
        snap.reserved = stats.current_usage
        snap.unmanaged = stats.unmanaged or 0
        snap.waiters = stats.waiters
        snap.timeouts = stats.timeouts
        snap.evictions = stats.evictions
        snap.shed = dict.fromkeys(_SHED_REASONS, 0) | warden.shed_counts()
        caches: Any = warden.caches.report().get("caches", {})
        for name, figures in caches.items():
            snap.caches[str(name)] = (
                int(figures.get("nbytes", 0)),
                int(figures.get("hits", 0)),
                int(figures.get("misses", 0)),
                int(figures.get("evictions", 0)),
            )
        for name, pool in list(warden.pools.items()):
            pool_stats = pool.stats()
            snap.pools[name] = (pool_stats.in_use, pool_stats.idle)
        snap.sessions = warden.sessions.stats().sessions
        snap.collections = [int(g["collections"]) for g in pygc.get_stats()]
        snap.leak_scores = {n: float(r.score) for n, r in warden.leaks.findings().items()}
        return snap


class _WaitHistogram:
    """Cumulative bucket counts of budget waits, fed by the budget's wait listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(WAIT_BUCKETS) + 1)
        self._sum = 0.0

    def observe(self, seconds: float, _granted: bool = True) -> None:
        index = bisect.bisect_left(WAIT_BUCKETS, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = list(itertools.accumulate(counts))
        bounds = [repr(b) for b in WAIT_BUCKETS] + ["+Inf"]
        return HistogramMetricFamily(
            "memwarden_budget_wait_seconds",
            _HELP["memwarden_budget_wait_seconds"],
            buckets=list(zip(bounds, map(float, cumulative), strict=True)),
            sum_value=total,
        )


class _LiveCollector:
    """A custom collector that reads the Warden at every scrape (single-process mode)."""

    def __init__(self, read: Callable[[], Snapshot], waits: _WaitHistogram) -> None:
        self._read = read
        self._waits = waits
        self._version = _version()

    def collect(self) -> Iterable[Metric]:
        snap = self._read()

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, _HELP[name], value=value)

        def counter(name: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, _HELP[name], value=value)

        def labelled(
            kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
            name: str,
            label: str,
            values: Iterable[tuple[str, float]],
        ) -> Metric:
            family = kind(name, _HELP[name], labels=[label])
            for key, value in values:
                family.add_metric([key], value)
            return family

        yield gauge("memwarden_memory_used_bytes", snap.used)
        yield gauge("memwarden_memory_limit_bytes", snap.limit)
        yield gauge("memwarden_memory_available_bytes", snap.available)
        if snap.resident is not None:
            yield gauge("memwarden_process_resident_bytes", snap.resident)
        yield gauge("memwarden_pressure_level", snap.level)
        yield labelled(
            CounterMetricFamily,
            "memwarden_pressure_transitions",
            "to",
            snap.transitions.items(),
        )
        yield gauge("memwarden_budget_capacity_bytes", snap.capacity)
        yield gauge("memwarden_budget_reserved_bytes", snap.reserved)
        yield gauge("memwarden_budget_unmanaged_bytes", snap.unmanaged)
        yield gauge("memwarden_budget_waiters", snap.waiters)
        yield self._waits.family()
        yield counter("memwarden_budget_timeouts", snap.timeouts)
        yield counter("memwarden_budget_evictions", snap.evictions)
        yield labelled(CounterMetricFamily, "memwarden_requests_shed", "reason", snap.shed.items())
        caches = snap.caches.items()
        yield labelled(GaugeMetricFamily, "memwarden_cache_bytes", "cache", _pick(caches, 0))
        yield labelled(CounterMetricFamily, "memwarden_cache_hits", "cache", _pick(caches, 1))
        yield labelled(CounterMetricFamily, "memwarden_cache_misses", "cache", _pick(caches, 2))
        yield labelled(CounterMetricFamily, "memwarden_cache_evictions", "cache", _pick(caches, 3))
        pools = snap.pools.items()
        yield labelled(GaugeMetricFamily, "memwarden_pool_in_use", "pool", _pick(pools, 0))
        yield labelled(GaugeMetricFamily, "memwarden_pool_idle", "pool", _pick(pools, 1))
        yield gauge("memwarden_sessions", snap.sessions)
        yield labelled(
            CounterMetricFamily,
            "memwarden_gc_collections",
            "generation",
            ((str(g), n) for g, n in enumerate(snap.collections)),
        )
        yield labelled(
            GaugeMetricFamily, "memwarden_leak_score", "series", snap.leak_scores.items()
        )
        yield labelled(GaugeMetricFamily, "memwarden_build_info", "version", [(self._version, 1.0)])


def _pick(items: Iterable[tuple[str, tuple[int, ...]]], index: int) -> Iterator[tuple[str, float]]:
    for name, figures in items:
        yield name, float(figures[index])


class _ProcessWriter:
    """Writes a Warden's figures into prometheus-client's multiprocess files.

    Gauges take the value of each snapshot; counters grow by the difference
    from the last snapshot this process wrote, so they add up across workers
    and survive a worker's exit as prometheus-client's multiprocess counters do.
    Metric objects are created unregistered (``registry=None``): the files are
    what ``MultiProcessCollector`` reads.
    """

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

        def gauge(name: str, mode: _Mode, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, _HELP[name], labels, registry=None, multiprocess_mode=mode)

        def counter(name: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, _HELP[name], labels, registry=None)

        # Container-wide figures every worker sees alike: the largest live value.
        self.used = gauge("memwarden_memory_used_bytes", "livemax")
        self.limit = gauge("memwarden_memory_limit_bytes", "livemax")
        self.available = gauge("memwarden_memory_available_bytes", "livemax")
        self.level = gauge("memwarden_pressure_level", "livemax")
        self.unmanaged = gauge("memwarden_budget_unmanaged_bytes", "livemax")
        self.leak_score = gauge("memwarden_leak_score", "livemax", ("series",))
        self.build_info = gauge("memwarden_build_info", "livemax", ("version",))
        # What each worker holds: summed over live workers.
        self.resident = gauge("memwarden_process_resident_bytes", "livesum")
        self.capacity = gauge("memwarden_budget_capacity_bytes", "livesum")
        self.reserved = gauge("memwarden_budget_reserved_bytes", "livesum")
        self.waiters = gauge("memwarden_budget_waiters", "livesum")
        self.cache_bytes = gauge("memwarden_cache_bytes", "livesum", ("cache",))
        self.pool_in_use = gauge("memwarden_pool_in_use", "livesum", ("pool",))
        self.pool_idle = gauge("memwarden_pool_idle", "livesum", ("pool",))
        self.sessions = gauge("memwarden_sessions", "livesum")
        self.transitions = counter("memwarden_pressure_transitions", ("to",))
        self.timeouts = counter("memwarden_budget_timeouts")
        self.evictions = counter("memwarden_budget_evictions")
        self.shed = counter("memwarden_requests_shed", ("reason",))
        self.cache_hits = counter("memwarden_cache_hits", ("cache",))
        self.cache_misses = counter("memwarden_cache_misses", ("cache",))
        self.cache_evictions = counter("memwarden_cache_evictions", ("cache",))
        self.collections = counter("memwarden_gc_collections", ("generation",))
        self.wait = Histogram(
            "memwarden_budget_wait_seconds",
            _HELP["memwarden_budget_wait_seconds"],
            buckets=WAIT_BUCKETS,
            registry=None,
        )
        self.build_info.labels(_version()).set(1)

    def _grow(self, counter: Counter, key: str, value: float, *labels: str) -> None:
        # Under self._lock.
        last = self._last.get((key, "\x00".join(labels)))
        delta = value if last is None else value - last
        self._last[(key, "\x00".join(labels))] = value
        # The child is made even at 0, so the series shows from the first write.
        child = counter.labels(*labels) if labels else counter
        if delta > 0:
            child.inc(delta)

    def write(self) -> None:
        """Write the current figures; failures are logged, never raised."""
        try:
            snap = self._read()
        except Exception:
            _log.exception("reading the Warden's figures for the metrics files failed")
            return
        with self._lock:
            self.used.set(snap.used)
            self.limit.set(snap.limit)
            self.available.set(snap.available)
            if snap.resident is not None:
                self.resident.set(snap.resident)
            self.level.set(snap.level)
            self.capacity.set(snap.capacity)
            self.reserved.set(snap.reserved)
            self.unmanaged.set(snap.unmanaged)
            self.waiters.set(snap.waiters)
            self.sessions.set(snap.sessions)
            for name, (nbytes, hits, misses, evictions) in snap.caches.items():
                self.cache_bytes.labels(name).set(nbytes)
                self._grow(self.cache_hits, "hits", hits, name)
                self._grow(self.cache_misses, "misses", misses, name)
                self._grow(self.cache_evictions, "evictions", evictions, name)
            for name, (in_use, idle) in snap.pools.items():
                self.pool_in_use.labels(name).set(in_use)
                self.pool_idle.labels(name).set(idle)
            for name, score in snap.leak_scores.items():
                self.leak_score.labels(name).set(score)
            for level, count in snap.transitions.items():
                self._grow(self.transitions, "to", count, level)
            for reason, count in snap.shed.items():
                self._grow(self.shed, "shed", count, reason)
            for generation, count in enumerate(snap.collections):
                self._grow(self.collections, "gc", count, str(generation))
            self._grow(self.timeouts, "timeouts", snap.timeouts)
            self._grow(self.evictions, "evictions", snap.evictions)


class MetricsExporter:
    """The ``/metrics`` body for one app: live collector or multiprocess files (see above).

    Creating it adds a listener to the Warden's monitor (level changes are
    counted; in multiprocess mode every sample also writes the files).
    """

    def __init__(self, warden: Warden) -> None:
        self._transitions = TransitionCounter()
        warden.monitor.add_listener(self._transitions)
        transitions = self._transitions

        def read() -> Snapshot:
            return Snapshot.read(warden, transitions)

        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self._writer: _ProcessWriter | None = None
        if self.multiprocess_dir is None:
            waits = _WaitHistogram()
            self.registry.register(_LiveCollector(read, waits))
            self._stop_waits = warden.manager.add_wait_listener(waits.observe)
            return
        from prometheus_client.multiprocess import MultiProcessCollector

        writer = _ProcessWriter(read)
        self._writer = writer
        self._stop_waits = warden.manager.add_wait_listener(
            lambda seconds, _granted: writer.wait.observe(seconds)
        )
        MultiProcessCollector(self.registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]

        def on_sample(_sample: object) -> None:
            writer.write()

        warden.monitor.add_sample_listener(on_sample)

    @property
    def multiprocess(self) -> bool:
        """True when the figures go through ``PROMETHEUS_MULTIPROC_DIR``."""
        return self._writer is not None

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type for a request's ``Accept`` header."""
        if self._writer is not None:
            self._writer.write()  # this worker's own figures are fresh, whatever the interval
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
