"""The ``Warden`` facade: every memwarden component, wired together and supervised.

``async with Warden(config, probe=...) as warden:`` takes a first sample,
starts the pressure monitor's sampling loop under a :class:`Supervisor`, and
reacts to pressure for you:

- always: the budget admits by measured memory (what it reserved plus what the
  process and the container use outside it), byte-weighted caches and
  sessions are charged to it, and on glibc freed memory goes back to the kernel
  (``allocator_tuning``);
- HIGH: caches shrink by ``cache_shrink_fraction``, pools close idle objects
  beyond ``min_size``;
- CRITICAL: caches are cleared, the budget evicts evictable reservations, GC
  runs its emergency path (collect, cleanup callbacks, ``malloc_trim``), idle
  unleased sessions are expired (``expire_sessions_on_critical``), and pools
  create no new objects until the level drops (up to
  ``critical_create_timeout`` seconds, then ``PoolExhaustedError``).

Periodic supervised tasks sweep inactive sessions, reap idle pool objects,
expire TTL cache entries, check for leaks and (with ``state_dir``) persist
the sample history. Leaving the block cancels them, closes the pools, runs
resource cleanups and restores the GC settings.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar, cast

import anyio

from ._native import Trimmer, tune_allocator
from ._shared import open_for_cgroup
from ._validate import check_int
from .budget import MemoryManager
from .cache import CacheManager
from .config import WardenConfig
from .errors import PoolExhaustedError
from .gc import Aggressiveness, GCController, Upkeep
from .history import HistoryStore
from .leaks import LeakDetector, LeakEvent, LeakWatcher
from .modules import LazyLoader
from .pool import ObjectPool
from .pressure import PressureEvent, PressureLevel, PressureMonitor, Subscription
from .probes import MemorySample, Probe
from .profiler import MemoryProfiler
from .resources import ResourceManager
from .sessions import SessionManager
from .supervisor import Supervisor
from .units import format_size

__all__ = ["Warden"]

T = TypeVar("T")

logger = logging.getLogger("memwarden.warden")

_SERIES_KIND = "leak_series"
_FINDINGS_KIND = "leaks"
_POOL_CLOSE_TIMEOUT = 5.0


class Warden:
    """Memory governance for one service: monitor, budget, caches, pools, sessions and more.

    ``config`` defaults to ``WardenConfig.from_env()``; ``probe`` to a
    ``SystemProbe``. The budget's capacity is ``config.capacity`` or
    ``max_memory_percent`` of the probe's limit. ``clock`` and ``sleep`` are
    injectable for tests (see :class:`memwarden.testing.ManualClock`);
    ``wall_clock`` stamps leak histories so they line up across restarts.
    ``sessions_use_budget`` (default ``config.sessions_use_budget``, True)
    charges session bytes to the budget. ``ready`` is False at or above
    ``shed_level`` (config, default CRITICAL).

    Components are attributes: ``monitor``, ``manager``, ``sessions``,
    ``caches``, ``gc``, ``resources``, ``loader``, ``supervisor``,
    ``profiler``, ``leaks``, ``store`` (None without ``state_dir``) and
    ``pools`` (by name). Raises :class:`~memwarden.errors.ConfigError` (a
    ``ValueError``) for a bad config and ``TypeError`` for a wrong-typed
    argument. Use from one event loop.
    """

    def __init__(
        self,
        config: WardenConfig | None = None,
        *,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
        wall_clock: Callable[[], float] = time.time,
        sessions_use_budget: bool | None = None,
        loader: LazyLoader | None = None,
    ) -> None:
        if config is None:
            config = WardenConfig.from_env()
        elif not isinstance(config, WardenConfig):
            raise TypeError(f"config must be a WardenConfig, got {type(config).__name__}")
        if probe is not None and not callable(getattr(probe, "sample", None)):
            raise TypeError(f"probe must have a sample() method, got {type(probe).__name__}")
        if loader is not None and not isinstance(loader, LazyLoader):
            raise TypeError(f"loader must be a LazyLoader, got {type(loader).__name__}")
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self.monitor = PressureMonitor(
            probe,
            interval=config.monitor_interval,
            thresholds=config.thresholds,
            renotify_interval=config.renotify_interval,
            history=config.monitor_history,
            use_psi=config.monitor_use_psi,
            min_dwell=config.monitor_min_dwell,
            clock=clock,
            sleep=sleep,
        )
        self._owns_probe = probe is None
        self.monitor.sample_now()
        self.shed_level: PressureLevel = config.shed_level
        # Its gc.callbacks hook goes in when the Warden starts, so a Warden that is
        # built but never run leaves nothing behind in the interpreter.
        self.gc = GCController(
            cast(Aggressiveness, config.effective_gc_aggressiveness), track_pauses=False
        )
        self._upkeep = Upkeep.from_config(config, clock=clock)
        self._upkeeps = {"emergency": 0, "collect": 0}
        # capacity None: the measured room at the first sample (limit x critical - unmanaged).
        shared = None
        if config.share_reservations:
            shared = open_for_cgroup(getattr(self.monitor.probe, "cgroup_path", None))
        self.manager = MemoryManager(
            config.capacity,
            monitor=self.monitor,
            clock=clock,
            gc_controller=self.gc,
            shared=shared,
        )
        if sessions_use_budget is None:
            sessions_use_budget = config.sessions_use_budget
        self.sessions = SessionManager(
            timeout=config.session_timeout,
            max_session_bytes=config.max_session_bytes,
            budget=self.manager if sessions_use_budget else None,
            budget_priority=config.session_budget_priority,
            budget_timeout=config.session_budget_timeout,
            clock=clock,
        )
        self.caches = CacheManager(
            shrink_fraction=config.cache_shrink_fraction, clock=clock, budget=self.manager
        )
        self._trimmer: Trimmer | None = None
        self.resources = ResourceManager(clock=clock)
        self.loader = loader if loader is not None else LazyLoader(clock=clock)
        self.loader.set_pressure_level_provider(lambda: self.monitor.level)
        self.supervisor = Supervisor(name="memwarden", clock=clock, sleep=sleep)
        self.profiler = MemoryProfiler(clock=clock)
        self._detector = LeakDetector(
            growth_threshold=config.leak_growth_threshold,
            window=config.leak_window,
            min_samples=config.leak_min_samples,
        )
        self._wall_clock = wall_clock
        self.leaks = LeakWatcher(self._detector, clock=wall_clock)
        self.store = HistoryStore.from_config(config)
        if self.store is not None:
            self.store.keep = config.state_keep
        self.pools: dict[str, ObjectPool[Any]] = {}
        self._reactions: dict[str, int] = {level.label: 0 for level in PressureLevel}
        self._shed: dict[str, int] = {}
        self._figures_lock = threading.Lock()
        self._points: deque[dict[str, Any]] = deque(maxlen=config.monitor_history)
        first = self.monitor.last_sample
        if first is not None:
            self._record_point(first)
        self.monitor.add_sample_listener(self._record_point)
        self._stack: AsyncExitStack | None = None
        self._started_at: float | None = None
        self._restored = 0
        self._subscriptions: weakref.WeakSet[Subscription[PressureEvent]] = weakref.WeakSet()
        self._closed = False
        self.leaks.add_series("memory.used", self._used_bytes, kind="memory")
        self.leaks.add_series("sessions.bytes", self._session_bytes, kind="sessions")

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Warden:
        if self._stack is not None:
            raise RuntimeError("this Warden is already running")
        self._closed = False
        config = self.config
        async with AsyncExitStack() as stack:
            # Pushed first so it runs last: pools, cleanups and the final history
            # write happen after every supervised task has stopped.
            stack.push_async_callback(self._shutdown)
            if self.store is not None:
                self._restored = self.leaks.restore(await self.store.load(_SERIES_KIND))
            self.gc.install()
            if config.gc_optimization_enabled:
                self.gc.configure()
            if config.allocator_tuning:
                self._tune_allocator(stack)
            self._log_start()
            if config.profiling_enabled:
                self.profiler.start_profiling()
                stack.callback(self.profiler.stop_profiling)
            await stack.enter_async_context(self.supervisor)
            sup = self.supervisor
            sup.start("pressure-monitor", self.monitor.run)
            # Subscribed here, not in the task, so no event published after entry is missed;
            # the current level comes first, so a service started under pressure reacts.
            events = self.monitor.subscribe(include_current=True, buffer=64)
            stack.callback(events.close)
            sup.start("pressure-reactions", lambda: self._react_forever(events))
            periodic: list[tuple[str, Callable[[], object], float]] = [
                (
                    "session-cleanup",
                    self.sessions.cleanup_inactive_sessions,
                    config.session_cleanup_interval,
                ),
                ("pool-reaper", self._reap_pools, config.pool_reap_interval),
                ("cache-sweeper", self.caches.sweep_expired, config.cache_sweep_interval),
                ("leak-sample", self.sample_series, config.leak_sample_interval),
                ("leak-check", self.check_leaks, config.leak_check_interval),
            ]
            if self._upkeep.emergency_below or self._upkeep.proactive_at is not None:
                periodic.append(("memory-upkeep", self.upkeep, config.monitor_interval))
            if self.store is not None:
                periodic.append(
                    ("history-persist", self.persist_history, config.memory_snapshot_interval)
                )
            if config.profiling_enabled:
                periodic.append(
                    ("package-metrics", self.update_packages, config.memory_snapshot_interval)
                )
            for name, func, interval in periodic:
                sup.start_periodic(name, func, interval, run_immediately=False)
            self._started_at = self._clock()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    async def _shutdown(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()
        with anyio.CancelScope(shield=True):
            for pool in list(self.pools.values()):
                # The pool bounds its own wait for objects still out; the outer real-time
                # bound keeps shutdown finite even with an injected clock that never moves.
                with anyio.move_on_after(_POOL_CLOSE_TIMEOUT + 1.0) as scope:
                    try:
                        await pool.aclose(timeout=_POOL_CLOSE_TIMEOUT)
                    except Exception:
                        logger.exception("closing pool %r failed", pool.name)
                if scope.cancelled_caught:
                    logger.error("closing pool %r did not finish in time", pool.name)
            try:
                await self.resources.cleanup_resources()
            except Exception:
                logger.exception("resource cleanup reported errors")
            if self.store is not None:
                try:
                    await self.persist_history()
                except Exception:
                    logger.exception("persisting history at shutdown failed")
            self.gc.close()
            self.manager.close()
            if self._owns_probe:
                close = getattr(self.monitor.probe, "close", None)
                if callable(close):
                    close()

    @property
    def running(self) -> bool:
        """True between entering and leaving ``async with warden``."""
        return self._stack is not None

    def subscribe(self, **options: Any) -> Subscription[PressureEvent]:
        """A subscription to the monitor's pressure events that ends when the Warden closes.

        ``options`` are :meth:`PressureMonitor.subscribe`'s (``min_level``,
        ``buffer``, ``overflow``, ``include_current``) and raise what it
        raises. Leaving ``async with warden`` ends every such subscription's
        ``async for`` loop, so a long-lived reader (an event stream to a
        client) finishes cleanly at shutdown; one asked for after the Warden
        has closed ends at once.
        """
        subscription = self.monitor.subscribe(**options)
        if self._closed:
            subscription.close()
            return subscription
        self._subscriptions.add(subscription)
        return subscription

    @property
    def ready(self) -> bool:
        """False at or above the shedding level (``shed_level``): the replica should drain."""
        return self.monitor.level < self.shed_level

    def _tune_allocator(self, stack: AsyncExitStack) -> None:
        config = self.config
        tuned = tune_allocator(
            mmap_threshold=config.allocator_mmap_threshold,
            trim_threshold=config.allocator_trim_threshold,
        )
        if not tuned:
            logger.debug("allocator tuning unavailable (not glibc): skipped")
            return
        self._trimmer = Trimmer(
            threshold=config.allocator_trim_after_bytes,
            interval=config.allocator_trim_interval,
            clock=self._clock,
        )
        manager = self.manager
        last = [manager.current_usage]

        def after_sample(sample: MemorySample) -> None:
            # Bytes given back since the last sample; a large release is trimmed.
            usage = manager.current_usage
            dropped = last[0] - usage
            last[0] = usage
            if dropped > 0 and self._trimmer is not None:
                self._trimmer.released(dropped)

        stack.callback(self.monitor.add_sample_listener(after_sample))

    def _log_start(self) -> None:
        stats = self.manager.get_stats()
        sample = self.monitor.last_sample
        logger.info(
            "memwarden: limit %s (%s), budget %s, %s unmanaged, sheds at %s; wake-ups: %s",
            format_size(sample.limit) if sample is not None else "unknown",
            sample.source if sample is not None else "no sample",
            format_size(stats.total_allocated),
            format_size(stats.unmanaged or 0),
            self.shed_level.label,
            ", ".join(self.monitor.stats().event_sources) or "interval only",
        )

    # -- pressure reactions --------------------------------------------------------------

    async def _react_forever(self, events: Subscription[PressureEvent]) -> None:
        async for event in events:
            await self.react(event)

    async def react(self, event: PressureEvent) -> None:
        """Apply the reactions for ``event`` (the Warden calls this for every pressure event).

        Raises ``TypeError`` for a non-event. Each component's failure is
        logged and does not stop the others.
        """
        if not isinstance(event, PressureEvent):
            raise TypeError(f"event must be a PressureEvent, got {type(event).__name__}")
        self._reactions[event.level.label] += 1
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("caches", lambda: self.caches.react(event))
        ]
        if event.level >= PressureLevel.HIGH:
            steps.append(("pools", self._trim_pools))
        if event.level >= PressureLevel.CRITICAL:
            # Sessions first, so what they held is collected and trimmed in the same pass.
            if self.config.expire_sessions_on_critical:
                steps.append(("sessions", self._expire_sessions))
            steps.append(("gc", self.gc.emergency))
        for name, step in steps:
            try:
                await step()
            except Exception:
                logger.exception("pressure reaction %s failed at %s", name, event.level)

    async def upkeep(self) -> str | None:
        """Run seed 003's emergency cleanup or proactive collection if the newest sample asks.

        The emergency path (``gc.emergency()``) runs when available memory is
        below ``emergency_cleanup_threshold_mb``; a full collection when the
        used share reaches ``proactive_gc_threshold`` percent (with
        ``enable_proactive_gc``); each at most once per 5 s (see
        :class:`~memwarden.gc.Upkeep`). The Warden runs this every
        ``monitor_interval``. Returns the action taken, or None.
        """
        sample = self.monitor.last_sample
        action = None if sample is None else self._upkeep.due(sample)
        if sample is None or action is None:
            return None
        # DEBUG: under a steady load these repeat every few seconds; report() counts them.
        if action == "emergency":
            stats = await self.gc.emergency()
            logger.debug(
                "%s available: emergency cleanup collected %d objects, ran %d cleanups",
                format_size(sample.available),
                stats.collected,
                stats.cleanups,
            )
        else:
            stats = self.gc.collect_with_stats(2)
            logger.debug(
                "memory at %.0f%% of the limit: collected %d objects",
                sample.fraction * 100,
                stats.collected,
            )
        self._upkeeps[action] += 1
        return action

    async def _trim_pools(self) -> int:
        closed = 0
        for pool in list(self.pools.values()):
            closed += await pool.trim()
        return closed

    async def _expire_sessions(self) -> int:
        expired = await self.sessions.expire_idle(min_idle=self.config.critical_session_min_idle)
        if expired:
            logger.warning("critical memory pressure: expired %d idle sessions", expired)
        return expired

    async def _reap_pools(self) -> int:
        reaped = 0
        for pool in list(self.pools.values()):
            reaped += await pool.reap()
        return reaped

    async def _creation_gate(self) -> None:
        """Hold new pool objects back while pressure is CRITICAL (up to a timeout)."""
        if self.monitor.level < PressureLevel.CRITICAL:
            return
        timeout = self.config.critical_create_timeout
        with anyio.move_on_after(timeout):
            async with self.monitor.subscribe() as events:
                async for event in events:
                    if event.level < PressureLevel.CRITICAL:
                        return
        raise PoolExhaustedError(
            f"memory pressure stayed critical for {timeout:g} s; no new pool object was created"
        )

    # -- pools -------------------------------------------------------------------------

    def create_pool(
        self,
        name: str,
        factory: Callable[[], T | Awaitable[T]],
        max_size: int = 10,
        **kw: Any,
    ) -> ObjectPool[T]:
        """Create a named :class:`ObjectPool` the Warden reaps, trims and closes (seed 004).

        Extra keywords go to ``ObjectPool``. New objects wait while pressure
        is CRITICAL (see the module docs). Raises ``ValueError`` when a pool
        of that name exists (the existing pool is untouched).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if name in self.pools:
            raise ValueError(f"a pool named {name!r} already exists")
        kw.setdefault("creation_gate", self._creation_gate)
        kw.setdefault("clock", self._clock)
        pool: ObjectPool[T] = ObjectPool(factory, max_size=max_size, name=name, **kw)
        self.pools[name] = pool
        self.loader.register_stats_provider(f"pool:{name}", "pool", lambda: _pool_figures(pool))
        # Pool sizes count objects, not bytes: judge them against a per-object rate.
        self.leaks.add_series(
            f"pool.{name}.size",
            lambda: float(pool.stats().size),
            kind="pool",
            detector=LeakDetector(
                growth_threshold=0.01,
                window=self.config.leak_window,
                min_samples=self.config.leak_min_samples,
            ),
        )
        return pool

    def get_pool(self, name: str) -> ObjectPool[Any]:
        """The pool called ``name``; raises ``KeyError`` naming it when there is none."""
        try:
            return self.pools[name]
        except KeyError:
            raise KeyError(f"no pool named {name!r}") from None

    # -- leaks and history ----------------------------------------------------------------

    def _used_bytes(self) -> float:
        sample = self.monitor.last_sample
        return float(sample.used) if sample is not None else 0.0

    def _session_bytes(self) -> float:
        return float(self.sessions.stats().total_bytes)

    def _watch_new_caches(self) -> None:
        for name in self.caches.names():
            series = f"cache.{name}.nbytes"
            if not self.leaks.has_series(series):
                self.leaks.add_series(series, _cache_bytes(self.caches, name), kind="cache")
                self.loader.register_stats_provider(
                    f"cache:{name}", "cache", _cache_figures(self.caches, name)
                )

    def sample_series(self) -> int:
        """Sample every watched series once (memory, sessions, pools, caches); return how many.

        The Warden runs this every ``leak_sample_interval`` seconds.
        """
        self._watch_new_caches()
        return self.leaks.sample()

    async def check_leaks(self) -> list[LeakEvent]:
        """Judge every watched series now; return the changes (new leaks, leaks gone).

        The Warden runs this every ``leak_check_interval`` seconds. Changes are
        also published to ``warden.leaks.subscribe()`` subscribers, and with a
        ``state_dir`` the findings are written there.
        """
        self._watch_new_caches()
        events = await self.leaks.acheck(sample=False)
        for event in events:
            log = logger.warning if event.is_leak else logger.info
            log("leak watch: %s %s", event.series, "leaking" if event.is_leak else "recovered")
        if self.store is not None:
            findings = [{"series": n, **r.to_dict()} for n, r in self.leaks.findings().items()]
            await self.store.write_snapshot(_FINDINGS_KIND, findings)
        return events

    async def persist_history(self) -> int:
        """Append the samples taken since the last call to the state directory; return how many.

        A no-op returning 0 without ``state_dir``. Writes are atomic (see
        :class:`~memwarden.history.HistoryStore`).
        """
        if self.store is None:
            return 0
        records = self.leaks.take_records()
        if records:
            await self.store.append(_SERIES_KIND, records)
        return len(records)

    async def update_packages(self) -> int:
        """Attribute traced memory to tracked packages and feed each to the leak watch.

        Runs every ``memory_snapshot_interval`` seconds with
        ``profiling_enabled`` (the attribution walks every traced block, so it
        runs in a worker thread). Each package becomes the series
        ``package.<name>.bytes``, so a leaking package is reported like any
        other series. Returns how many packages were recorded; 0 when
        tracemalloc is not tracing.
        """
        result = await anyio.to_thread.run_sync(self.loader.update_all_memory_metrics)
        if not result.get("tracing"):
            return 0
        await anyio.to_thread.run_sync(self.profiler.take_snapshot)
        now = self._wall_clock()
        recorded = 0
        for name in self.loader.registered():
            info = self.loader.get_package_memory_info(name)
            current = None if info is None else info["memory_metrics"]["current_memory_usage"]
            if current is not None:
                self.leaks.record(f"package.{name}.bytes", now, float(current), kind="package")
                recorded += 1
        return recorded

    # -- reporting ----------------------------------------------------------------------

    def _record_point(self, sample: MemorySample) -> None:
        # A sample listener: the budget's own listener has already seen this
        # sample, so managed/unmanaged are the figures it decided with.
        stats = self.manager.get_stats()
        point = dict(sample.to_dict())
        point.update(
            managed=stats.managed,
            unmanaged=stats.unmanaged,
            cache=stats.evictable,
            capacity=stats.total_allocated,
        )
        with self._figures_lock:
            self._points.append(point)

    def memory_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The retained samples, oldest first, each with the budget's view of it.

        Each point holds the :class:`~memwarden.probes.MemorySample` fields
        (``to_dict()``) plus ``managed`` (reserved bytes), ``unmanaged``
        (measured use beyond them), ``cache`` (the evictable part of managed:
        the caches' reservations) and ``capacity``, so a chart can be drawn or
        backfilled. At most ``config.monitor_history`` points are kept;
        ``limit`` keeps the newest ``limit``. Raises ``TypeError``/``ValueError``
        for a ``limit`` that is not a positive int. Thread-safe.
        """
        if limit is not None:
            check_int("limit", limit, minimum=1)
        with self._figures_lock:
            points = list(self._points)
        return points if limit is None else points[-limit:]

    def record_shed(self, reason: str) -> None:
        """Count one request refused for ``reason`` (called by the ASGI middleware).

        Every :class:`~memwarden.asgi.MemoryGuardMiddleware` that finds this
        Warden reports here, so ``shed_counts()`` covers the whole service.
        Thread-safe.
        """
        with self._figures_lock:
            self._shed[reason] = self._shed.get(reason, 0) + 1

    def shed_counts(self) -> dict[str, int]:
        """Requests refused so far, by reason (``pressure``, ``timeout``, ``too_large``)."""
        with self._figures_lock:
            return dict(self._shed)

    def report(self) -> dict[str, Any]:
        """A JSON-able snapshot of everything the Warden governs."""
        sample = self.monitor.last_sample
        return {
            "timestamp": time.time(),
            "uptime": None if self._started_at is None else self._clock() - self._started_at,
            "level": self.monitor.level.label,
            "ready": self.ready,
            "shed_level": self.shed_level.label,
            "sample": None if sample is None else sample.to_dict(),
            "monitor": self.monitor.stats().to_dict(),
            "budget": self.manager.get_stats().to_dict(),
            "sessions": self.sessions.stats().to_dict(),
            "caches": self.caches.report(),
            "pools": {name: pool.stats().to_dict() for name, pool in self.pools.items()},
            "gc": self.gc.report(),
            "resources": self.resources.report(),
            "leaks": {name: r.to_dict() for name, r in self.leaks.findings().items()},
            "history": {
                "state_dir": None if self.store is None else str(self.store.directory),
                "restored_records": self._restored,
            },
            "supervisor": self.supervisor.to_dict(),
            "reactions": dict(self._reactions),
            "shed": self.shed_counts(),
            "upkeep": dict(self._upkeeps),
            "config": self.config.to_dict(),
        }


def _pool_figures(pool: ObjectPool[Any]) -> dict[str, float]:
    stats = pool.stats()
    return {
        "size": stats.size,
        "idle": stats.idle,
        "in_use_peak": stats.in_use_peak,
        "max_size": pool.max_size,
    }


def _cache_bytes(caches: CacheManager, name: str) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(caches.get_stats(name).nbytes)
        except Exception:
            return 0.0

    return read


def _cache_figures(caches: CacheManager, name: str) -> Callable[[], dict[str, float]]:
    def read() -> dict[str, float]:
        try:
            cache = caches.get_cache(name)
            stats = caches.get_stats(name)
        except Exception:
            return {"hit_rate": 0.0, "size": 0.0, "nbytes": 0.0, "capacity": 0.0}
        capacity = getattr(cache, "capacity", None)
        return {
            "hit_rate": stats.hit_rate,
            "size": float(stats.size),
            "nbytes": float(stats.nbytes),
            "capacity": float(capacity) if capacity is not None else float(stats.size),
        }

    return read
