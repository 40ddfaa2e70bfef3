"""Garbage-collector control: threshold profiles, measured collections, pauses, cleanups.

:class:`GCController` wraps the standard :mod:`gc` module with what a service
needs around it:

- **Profiles.** ``aggressiveness`` picks the collection thresholds
  (``gc.set_threshold``): ``"low"`` = ``(2000, 20, 20)``, ``"moderate"`` =
  ``(700, 10, 10)`` (CPython's default), ``"high"`` = ``(300, 5, 5)``. Generation 0
  is collected once allocations minus deallocations of container objects pass
  the first number; the other two say how many younger collections trigger an
  older one. ``low`` roughly thirds the number of collections (less CPU, cyclic
  garbage lives longer); ``high`` more than doubles it (less memory held by
  cycles, more frequent pauses). :meth:`~GCController.configure` applies them
  and :meth:`~GCController.restore` puts back what was there before.
- **Measured collections.** :meth:`~GCController.collect_with_stats` returns
  objects collected, uncollectable, duration and process RSS before and after.
- **Pauses.** :meth:`~GCController.paused` disables automatic collection inside
  a ``with`` or ``async with`` block. It is process-wide and nesting-safe: a
  counter shared by every controller and thread re-enables the collector only
  when the outermost block exits, and only if it was enabled when that block
  entered.
- **Cleanup callbacks.** Sync or async callables run by
  :meth:`~GCController.run_cleanup`, which the budget's ``optimize()`` and the
  Warden's CRITICAL path call; a callback may return the bytes it freed. One
  failing callback is logged and skipped.
- **Pause statistics.** A ``gc.callbacks`` hook records how often each
  generation is collected and how long it stops the world. It is installed
  when the controller is created (``track_pauses=True``) and removed by
  :meth:`~GCController.uninstall`, :meth:`~GCController.close`, or when the
  controller is garbage collected.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any, Literal

import anyio

from ._native import malloc_trim
from ._rss import process_rss
from ._validate import check_float, check_int, check_timeout
from .errors import GCError

__all__ = [
    "PROFILES",
    "Aggressiveness",
    "GCController",
    "GCPauseStats",
    "GCStats",
    "GarbageCollectionManager",
    "GarbageCollectionOptimizer",
    "Upkeep",
    "pause_depth",
]

logger = logging.getLogger("memwarden.gc")

Aggressiveness = Literal["low", "moderate", "high"]
"""The profile names accepted by :class:`GCController` (a type alias)."""

PROFILES: dict[str, tuple[int, int, int]] = {
    "low": (2000, 20, 20),
    "moderate": (700, 10, 10),
    "high": (300, 5, 5),
}
"""Collection thresholds of each aggressiveness profile (see the module docstring)."""


@dataclass(frozen=True)
class GCStats:
    """What one collection did; also readable as a dict (``stats["collected"]``).

    ``memory_before``/``memory_after`` are the process RSS in bytes (0 when
    unknown). ``cleanups``, ``cleanup_bytes`` and ``trimmed`` are filled by
    :meth:`GCController.emergency` only.
    """

    collected: int
    uncollectable: int
    duration_ms: float
    generation: int
    memory_before: int
    memory_after: int
    cleanups: int = 0
    cleanup_bytes: int = 0
    trimmed: bool = False

    @property
    def freed(self) -> int:
        """``memory_before - memory_after``; negative when RSS grew meanwhile."""
        return self.memory_before - self.memory_after

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field plus ``freed``."""
        return {**asdict(self), "freed": self.freed}

    def __getitem__(self, key: str) -> Any:
        """Seed-style access: ``stats["collected"]``; raises ``KeyError`` for unknown keys."""
        data = self.to_dict()
        if key not in data:
            raise KeyError(key)
        return data[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``stats[key]`` or ``default``."""
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:
        """The names usable with ``stats[key]``."""
        return list(self.to_dict())


@dataclass(frozen=True)
class GCPauseStats:
    """Collector pauses seen through ``gc.callbacks``, per generation (index 0, 1, 2)."""

    count: tuple[int, int, int]
    total_ms: tuple[float, float, float]
    max_ms: tuple[float, float, float]
    collected: int = 0
    uncollectable: int = 0

    @property
    def total_count(self) -> int:
        """Collections of every generation."""
        return sum(self.count)

    @property
    def longest_ms(self) -> float:
        """The longest single pause of any generation."""
        return max(self.max_ms)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: one entry per generation plus totals."""
        return {
            "generations": [
                {
                    "generation": gen,
                    "count": self.count[gen],
                    "total_ms": self.total_ms[gen],
                    "max_ms": self.max_ms[gen],
                }
                for gen in range(3)
            ],
            "total_count": self.total_count,
            "longest_ms": self.longest_ms,
            "collected": self.collected,
            "uncollectable": self.uncollectable,
        }


class _PauseRecorder:
    """The ``gc.callbacks`` hook: must be cheap and must never raise."""

    __slots__ = ("collected", "count", "max_ms", "start", "total_ms", "uncollectable")

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.collected = 0
        self.uncollectable = 0
        self.start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.start = time.perf_counter()
            return
        elapsed = (time.perf_counter() - self.start) * 1000.0
        gen = info.get("generation", 2)
        if not 0 <= gen <= 2:
            gen = 2
        self.count[gen] += 1
        self.total_ms[gen] += elapsed
        if elapsed > self.max_ms[gen]:
            self.max_ms[gen] = elapsed
        self.collected += info.get("collected", 0)
        self.uncollectable += info.get("uncollectable", 0)

    def snapshot(self) -> GCPauseStats:
        c, t, m = self.count, self.total_ms, self.max_ms
        return GCPauseStats(
            (c[0], c[1], c[2]), (t[0], t[1], t[2]), (m[0], m[1], m[2]),
            self.collected, self.uncollectable,
        )  # fmt: skip


def _remove_callback(recorder: _PauseRecorder) -> None:
    with contextlib.suppress(ValueError):
        gc.callbacks.remove(recorder)


# Process-wide pause bookkeeping: the collector is one per process, so is the counter.
_pause_lock = threading.Lock()
_pause_depth = 0
_pause_was_enabled = False


def _pause_enter() -> None:
    global _pause_depth, _pause_was_enabled
    with _pause_lock:
        if _pause_depth == 0:
            _pause_was_enabled = gc.isenabled()
            gc.disable()
        _pause_depth += 1


def _pause_exit() -> None:
    global _pause_depth
    with _pause_lock:
        _pause_depth -= 1
        if _pause_depth == 0 and _pause_was_enabled:
            gc.enable()


def pause_depth() -> int:
    """How many :meth:`GCController.paused` blocks are open in this process."""
    return _pause_depth


class _Paused:
    """Both ``with`` and ``async with``: automatic GC is off inside."""

    __slots__ = ("_entered",)

    def __init__(self) -> None:
        self._entered = False

    def _enter(self) -> None:
        if self._entered:
            raise RuntimeError("this paused() block is already entered; call paused() again")
        _pause_enter()
        self._entered = True

    def _exit(self) -> None:
        if self._entered:
            self._entered = False
            _pause_exit()

    def __enter__(self) -> None:
        self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    async def __aenter__(self) -> None:
        self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()


CleanupCallback = Callable[[], object | Awaitable[object]]


class GCController:
    """Collector thresholds, measured collections, pauses, cleanup callbacks and pause stats.

    ``aggressiveness`` picks a profile from :data:`PROFILES`; ``thresholds``
    (alias ``gc_threshold``, seed 004's name) overrides it with explicit
    ``(gen0, gen1, gen2)`` numbers. Nothing changes until :meth:`configure`.
    ``cleanup_timeout`` bounds each async cleanup callback (``None``: unbounded).
    ``track_pauses`` installs the ``gc.callbacks`` hook behind
    :meth:`pause_stats`. Raises ``ValueError``/``TypeError`` naming a bad argument.
    Methods may be called from any thread except the async ones, which belong
    to one event loop.
    """

    def __init__(
        self,
        aggressiveness: Aggressiveness = "moderate",
        *,
        thresholds: Sequence[int] | None = None,
        gc_threshold: Sequence[int] | None = None,
        cleanup_timeout: float | None = 30.0,
        track_pauses: bool = True,
    ) -> None:
        if not isinstance(aggressiveness, str):
            raise TypeError(
                f"aggressiveness must be a str, got {type(aggressiveness).__name__} "
                f"{aggressiveness!r}"
            )
        if aggressiveness not in PROFILES:
            raise ValueError(
                f"aggressiveness must be one of {', '.join(PROFILES)}, got {aggressiveness!r}"
            )
        given = _check_thresholds("thresholds", thresholds) if thresholds is not None else None
        alias = (
            _check_thresholds("gc_threshold", gc_threshold) if gc_threshold is not None else None
        )
        if given is not None and alias is not None and given != alias:
            raise ValueError(
                f"thresholds={given!r} and gc_threshold={alias!r} disagree; pass one of them"
            )
        self._aggressiveness: str = aggressiveness
        self._thresholds = given or alias or PROFILES[aggressiveness]
        self._cleanup_timeout = check_timeout("cleanup_timeout", cleanup_timeout)
        if not isinstance(track_pauses, bool):
            raise TypeError(
                f"track_pauses must be a bool, got {type(track_pauses).__name__} {track_pauses!r}"
            )
        self._saved: tuple[int, int, int] | None = None
        self._callbacks: list[CleanupCallback] = []
        self._monitored: dict[str, weakref.ref[Any]] = {}
        self._recorder = _PauseRecorder()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if track_pauses:
            self.install()

    # -- thresholds -------------------------------------------------------------------------

    @property
    def aggressiveness(self) -> str:
        """The profile name given at construction."""
        return self._aggressiveness

    @property
    def thresholds(self) -> tuple[int, int, int]:
        """The thresholds :meth:`configure` applies."""
        return self._thresholds

    def configure(self) -> tuple[int, int, int]:
        """Apply this controller's thresholds with ``gc.set_threshold`` and return them.

        The thresholds in force before the first ``configure()`` are remembered
        for :meth:`restore`. Process-wide, like the collector itself.
        """
        if self._saved is None:
            current = gc.get_threshold()
            self._saved = (current[0], current[1], current[2])
        gc.set_threshold(*self._thresholds)
        logger.debug("gc thresholds set to %s (%s)", self._thresholds, self._aggressiveness)
        return self._thresholds

    def restore(self) -> tuple[int, int, int]:
        """Put back the thresholds that were in force before :meth:`configure`; return them.

        A no-op returning the current thresholds if ``configure()`` was never called.
        """
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        current = gc.get_threshold()
        return (current[0], current[1], current[2])

    def configure_gc(self) -> tuple[int, int, int]:
        """Seed 003's name for :meth:`configure`."""
        return self.configure()

    def optimize_gc_settings(self) -> tuple[int, int, int]:
        """Seed 002's name for :meth:`configure`."""
        return self.configure()

    # -- collections ------------------------------------------------------------------------

    def collect_with_stats(self, generation: int = 2) -> GCStats:
        """Run ``gc.collect(generation)`` and report what it did and how long it took.

        Raises ``TypeError``/``ValueError`` for a generation that is not 0, 1 or 2,
        and :class:`GCError` if the collector itself fails.
        """
        check_int("generation", generation, minimum=0, maximum=2)
        before_stats = gc.get_stats()[generation]
        memory_before = process_rss() or 0
        start = time.perf_counter()
        try:
            found = gc.collect(generation)
        except Exception as exc:  # a finalizer that raises surfaces here
            raise GCError(f"gc.collect({generation}) failed: {exc!r}") from exc
        duration_ms = (time.perf_counter() - start) * 1000.0
        memory_after = process_rss() or 0
        after_stats = gc.get_stats()[generation]
        uncollectable = max(0, after_stats["uncollectable"] - before_stats["uncollectable"])
        return GCStats(
            collected=max(0, found - uncollectable),
            uncollectable=uncollectable,
            duration_ms=duration_ms,
            generation=generation,
            memory_before=memory_before,
            memory_after=memory_after,
        )

    def perform_optimized_collection(self) -> dict[str, Any]:
        """Seed 002's name: a full collection, returned as a dict (see :class:`GCStats`)."""
        return self.collect_with_stats(2).to_dict()

    def paused(self) -> _Paused:
        """Disable automatic collection inside ``with`` / ``async with``; restore on exit.

        Nesting-safe and process-wide: the collector is re-enabled when the
        outermost block exits (even through an exception), and only if it was
        enabled when that block entered. Keep async blocks short: every task
        and thread runs without automatic collection meanwhile.
        """
        return _Paused()

    def disable_gc_temporarily(self) -> _Paused:
        """Seed 002's name for :meth:`paused`."""
        return self.paused()

    # -- cleanup callbacks ------------------------------------------------------------------

    def register_cleanup_callback(self, callback: CleanupCallback) -> None:
        """Add a sync or async callable run by :meth:`run_cleanup` (in registration order).

        It may return the number of bytes it freed (an ``int``); see :meth:`run_cleanup`.

        Raises ``TypeError`` if ``callback`` is not callable.
        """
        if not callable(callback):
            raise TypeError(
                f"callback must be callable, got {type(callback).__name__} {callback!r}"
            )
        self._callbacks.append(callback)

    def unregister_cleanup_callback(self, callback: CleanupCallback) -> bool:
        """Remove a callback; False if it was not registered."""
        try:
            self._callbacks.remove(callback)
        except ValueError:
            return False
        return True

    async def run_cleanup(self) -> int:
        """Run every cleanup callback once; return the bytes they report freeing.

        A callback reports bytes by returning a non-negative ``int`` (or an
        awaitable of one); anything else reports 0. This matches the budget's
        own cleanup callbacks, so ``MemoryManager.optimize()`` can add the
        figure to what it freed. A callback that raises (or, if async, outlives
        ``cleanup_timeout``) is logged and skipped; the others still run.
        Cancellation of the caller propagates (later callbacks do not run).
        """
        _, reported = await self._run_callbacks()
        return reported

    async def _run_callbacks(self) -> tuple[int, int]:
        """(callbacks that completed, bytes they reported)."""
        succeeded = 0
        reported = 0
        timeout = self._cleanup_timeout if self._cleanup_timeout is not None else math.inf
        for callback in list(self._callbacks):
            name = getattr(callback, "__qualname__", repr(callback))
            try:
                result = callback()
                if inspect.isawaitable(result):
                    with anyio.move_on_after(timeout) as scope:
                        result = await result
                    if scope.cancelled_caught:
                        logger.warning(
                            "gc cleanup callback %s timed out after %ss",
                            name,
                            self._cleanup_timeout,
                        )
                        continue
            except Exception:
                logger.exception("gc cleanup callback %s failed", name)
                continue
            succeeded += 1
            if isinstance(result, int) and not isinstance(result, bool) and result > 0:
                reported += result
        return succeeded, reported

    async def emergency(self) -> GCStats:
        """The CRITICAL-pressure sequence: full collection, cleanup callbacks, ``malloc_trim``.

        Returns the collection's :class:`GCStats` with ``cleanups`` (callbacks
        that completed), ``cleanup_bytes`` (bytes they reported freeing),
        ``trimmed`` (whether glibc returned memory to the OS) and
        ``memory_after`` measured after all three steps.
        """
        stats = self.collect_with_stats(2)
        cleanups, cleanup_bytes = await self._run_callbacks()
        trimmed = malloc_trim()
        return replace(
            stats,
            cleanups=cleanups,
            cleanup_bytes=cleanup_bytes,
            trimmed=trimmed,
            memory_after=(process_rss() or 0),
        )

    # -- lifecycle monitoring ---------------------------------------------------------------

    def monitor_object_lifecycle(self, obj: object, name: str) -> weakref.ref[Any]:
        """Watch ``obj`` under ``name`` until it is collected; return the weak reference.

        :meth:`alive_objects` lists names whose object is still alive; a
        collected object's name disappears (and a debug line is logged).
        Monitoring a name again replaces the previous object. Raises
        ``TypeError`` if ``name`` is not a str or ``obj`` cannot be weakly referenced.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        monitored = self._monitored

        def forget(ref: weakref.ref[Any]) -> None:
            if monitored.get(name) is ref:
                del monitored[name]
            logger.debug("monitored object %r was collected", name)

        try:
            ref = weakref.ref(obj, forget)
        except TypeError:
            raise TypeError(
                f"obj must support weak references, got {type(obj).__name__} for name {name!r}"
            ) from None
        monitored[name] = ref
        return ref

    def alive_objects(self) -> list[str]:
        """Names of monitored objects that are still alive, sorted."""
        return sorted(name for name, ref in list(self._monitored.items()) if ref() is not None)

    # -- pause statistics -------------------------------------------------------------------

    def install(self) -> None:
        """Add the pause-recording hook to ``gc.callbacks`` (idempotent)."""
        if self._recorder not in gc.callbacks:
            gc.callbacks.append(self._recorder)
        if self._finalizer is None or not self._finalizer.alive:
            # Removes the hook when the controller is collected or at exit.
            self._finalizer = weakref.finalize(self, _remove_callback, self._recorder)

    def uninstall(self) -> None:
        """Remove the pause-recording hook from ``gc.callbacks`` (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        _remove_callback(self._recorder)

    @property
    def installed(self) -> bool:
        """Whether the pause-recording hook is in ``gc.callbacks``."""
        return self._recorder in gc.callbacks

    def pause_stats(self) -> GCPauseStats:
        """Collections and pause times per generation recorded since :meth:`install`."""
        return self._recorder.snapshot()

    def close(self) -> None:
        """Uninstall the hook and :meth:`restore` the thresholds."""
        self.uninstall()
        self.restore()

    def __enter__(self) -> GCController:
        """``with GCController(...) as ctl``: :meth:`close` on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the controller."""
        self.close()

    def report(self) -> dict[str, Any]:
        """A JSON-able summary: profile, thresholds, collector state, pauses, callbacks."""
        threshold = gc.get_threshold()
        return {
            "aggressiveness": self._aggressiveness,
            "thresholds": list(self._thresholds),
            "current_thresholds": list(threshold),
            "enabled": gc.isenabled(),
            "paused_depth": _pause_depth,
            "counts": list(gc.get_count()),
            "cleanup_callbacks": len(self._callbacks),
            "monitored_alive": self.alive_objects(),
            "pauses": self.pause_stats().to_dict(),
        }


GarbageCollectionManager = GCController
"""Seed 003's name for :class:`GCController`."""
GarbageCollectionOptimizer = GCController
"""Seed 002's name for :class:`GCController`."""


def _check_thresholds(name: str, value: object) -> tuple[int, int, int]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence of 1 to 3 ints, got {type(value).__name__} {value!r}"
        )
    if not 1 <= len(value) <= 3:
        raise ValueError(f"{name} must have 1 to 3 numbers, got {value!r}")
    numbers = [check_int(f"{name}[{i}]", item, minimum=0) for i, item in enumerate(value)]
    defaults = PROFILES["moderate"]
    padded = (*numbers, *defaults[len(numbers) :])
    return (padded[0], padded[1], padded[2])


UpkeepAction = Literal["emergency", "collect"]


class Upkeep:
    """Seed 003's emergency cleanup and proactive collection, decided on one sample.

    ``emergency_below`` (bytes; 0 disables) asks for the emergency path
    (full collection, cleanup callbacks, ``malloc_trim``) when the sample's
    available memory falls below it; ``proactive_at`` (a fraction of the
    limit, or None) asks for a full collection when the used share reaches
    it. Each action runs at most once per ``cooldown`` seconds of ``clock``,
    and the emergency path counts as a collection. The decision is all here;
    a Warden's periodic task and :class:`~memwarden.monitor.MemoryMonitor`'s
    background thread only carry it out. Raises ``TypeError``/``ValueError``
    naming the argument for bad input. Thread-safe.
    """

    def __init__(
        self,
        *,
        emergency_below: int = 0,
        proactive_at: float | None = None,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emergency_below = check_int("emergency_below", emergency_below)
        if proactive_at is not None:
            if isinstance(proactive_at, bool) or not isinstance(proactive_at, int | float):
                raise TypeError(
                    f"proactive_at must be a number or None, got "
                    f"{type(proactive_at).__name__} {proactive_at!r}"
                )
            if not 0 < proactive_at <= 1:  # NaN fails too
                raise ValueError(f"proactive_at must be in (0, 1], got {proactive_at!r}")
        self.proactive_at = proactive_at
        self.cooldown = check_float("cooldown", cooldown, minimum=0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def due(self, sample: Any) -> UpkeepAction | None:
        """The action ``sample`` (a MemorySample) calls for now, if any; records it as run."""
        emergency = self.emergency_below > 0 and sample.available < self.emergency_below
        collect = self.proactive_at is not None and sample.fraction >= self.proactive_at
        if not (emergency or collect):
            return None
        action: UpkeepAction = "emergency" if emergency else "collect"
        now = self._clock()
        with self._lock:
            last = self._last.get(action, -math.inf)
            if now - last < self.cooldown:
                return None
            self._last[action] = now
            if emergency:
                self._last["collect"] = now  # the emergency path collected too
        return action

    @classmethod
    def from_config(cls, config: Any, *, clock: Callable[[], float] = time.monotonic) -> Upkeep:
        """The upkeep a :class:`~memwarden.config.WardenConfig` describes."""
        return cls(
            emergency_below=int(config.emergency_cleanup_threshold_mb * 2**20),
            proactive_at=(
                config.proactive_gc_threshold / 100.0 if config.enable_proactive_gc else None
            ),
            clock=clock,
        )
