"""Named resources with usage statistics, weakly tracked objects, and shutdown cleanup.

:class:`ResourceManager` does two jobs (seeds 002 and 004):

- **Named resources.** ``register_resource(name, resource, cleanup)`` keeps a
  resource (a connection, a client, a model) under a name.
  ``async with manager.acquire_resource(name, kind) as resource:`` hands it out
  with bounded concurrency (``max_concurrent``, 1 = exclusive) and records
  acquisitions, wait and hold times. ``kind`` is a label ("database",
  "model") that groups statistics in :meth:`~ResourceManager.report`.
- **Tracked objects.** ``track_resource(obj, cleanup)`` watches an object
  through :func:`weakref.finalize`: ``cleanup`` runs exactly once, either when
  the object is garbage collected or at :meth:`~ResourceManager.cleanup_resources`,
  whichever comes first. The tracker never keeps the object alive.

:meth:`~ResourceManager.cleanup_resources` runs every cleanup in reverse order
of registration (last registered, first cleaned, like
:class:`contextlib.ExitStack`), shielded from cancellation, each one bounded by
``cleanup_timeout``. A failing cleanup does not stop the others; failures are
raised together afterwards as an :class:`ExceptionGroup` of
:class:`~memwarden.errors.ResourceError`, each chained (``__cause__``) to
the original exception.

Cleanups may be sync or async. Registry methods are thread-safe; the async
methods belong to one event loop.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import anyio

from ._validate import check_int, check_name, check_timeout
from .errors import ResourceError

__all__ = ["ResourceManager", "ResourceManagerStats", "ResourceStats"]

logger = logging.getLogger("memwarden.resources")


@dataclass(frozen=True)
class ResourceStats:
    """Usage of one named resource. Durations are seconds of the manager's clock."""

    name: str
    kind: str | None
    acquisitions: int
    in_use: int
    waiting: int
    timeouts: int
    total_hold: float
    max_hold: float
    total_wait: float
    max_wait: float
    peak_in_use: int
    max_concurrent: int

    @property
    def mean_hold(self) -> float:
        """Average hold time of completed acquisitions (0.0 if none)."""
        done = self.acquisitions - self.in_use
        return self.total_hold / done if done > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field plus ``mean_hold``."""
        return {**asdict(self), "mean_hold": self.mean_hold}


@dataclass(frozen=True)
class ResourceManagerStats:
    """Totals of a :class:`ResourceManager`, with high-water marks."""

    registered: int
    tracked: int
    in_use: int
    acquisitions: int
    cleanups_run: int
    """Cleanups that completed (at cleanup_resources, unregister or collection)."""
    cleanup_failures: int
    """Cleanups that raised or timed out."""
    collected: int
    """Tracked objects garbage collected before cleanup_resources."""
    peak_registered: int
    peak_tracked: int
    peak_in_use: int

    def to_dict(self) -> dict[str, int]:
        """A JSON-able dict of every field."""
        return asdict(self)


class _Registered:
    __slots__ = (
        "acquisitions",
        "cleanup",
        "closing",
        "idle",
        "in_use",
        "kind",
        "limiter",
        "max_concurrent",
        "max_hold",
        "max_wait",
        "name",
        "peak_in_use",
        "resource",
        "seq",
        "timeouts",
        "total_hold",
        "total_wait",
        "waiting",
    )

    def __init__(
        self,
        seq: int,
        name: str,
        resource: object,
        cleanup: Callable[..., object] | None,
        kind: str | None,
        max_concurrent: int,
    ) -> None:
        self.seq = seq
        self.name = name
        self.resource = resource
        self.cleanup = cleanup
        self.kind = kind
        self.max_concurrent = max_concurrent
        self.limiter = anyio.Semaphore(max_concurrent)
        self.closing = False
        self.idle: anyio.Event | None = None
        self.acquisitions = 0
        self.in_use = 0
        self.waiting = 0
        self.timeouts = 0
        self.total_hold = 0.0
        self.max_hold = 0.0
        self.total_wait = 0.0
        self.max_wait = 0.0
        self.peak_in_use = 0

    def snapshot(self) -> ResourceStats:
        return ResourceStats(
            name=self.name,
            kind=self.kind,
            acquisitions=self.acquisitions,
            in_use=self.in_use,
            waiting=self.waiting,
            timeouts=self.timeouts,
            total_hold=self.total_hold,
            max_hold=self.max_hold,
            total_wait=self.total_wait,
            max_wait=self.max_wait,
            peak_in_use=self.peak_in_use,
            max_concurrent=self.max_concurrent,
        )


class _Tracked:
    __slots__ = ("cleanup", "finalizer", "label", "method", "seq")

    def __init__(
        self,
        seq: int,
        label: str,
        cleanup: Callable[[], object] | None,
        method: weakref.WeakMethod[Callable[[], object]] | None,
    ) -> None:
        self.seq = seq
        self.label = label
        self.cleanup = cleanup  # strong, must not reference the object
        self.method = method  # the object's own close method, held weakly
        self.finalizer: weakref.finalize[Any, Any] | None = None


def _default_cleanup(resource: object) -> Callable[[], object] | None:
    for attr in ("aclose", "close"):
        method = getattr(resource, attr, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    return None


class _Acquired:
    """``async with manager.acquire_resource(name, kind) as resource``."""

    __slots__ = ("_entry", "_kind", "_manager", "_name", "_start", "_timeout")

    def __init__(
        self, manager: ResourceManager, name: str, kind: str | None, timeout: float | None
    ) -> None:
        self._manager = manager
        self._name = name
        self._kind = kind
        self._timeout = timeout
        self._entry: _Registered | None = None
        self._start = 0.0

    async def __aenter__(self) -> Any:
        if self._entry is not None:
            raise RuntimeError("this acquisition is already held; call acquire_resource() again")
        manager = self._manager
        entry = manager._usable(self._name, self._kind)
        clock = manager._clock
        began = clock()
        try:
            # A free slot is taken without a checkpoint, so timeout=0 means "only if free".
            entry.limiter.acquire_nowait()
        except anyio.WouldBlock:
            entry.waiting += 1
            try:
                with anyio.fail_after(self._timeout if self._timeout is not None else math.inf):
                    await entry.limiter.acquire()
            except TimeoutError:
                entry.timeouts += 1
                raise TimeoutError(
                    f"resource {self._name!r} not available within timeout={self._timeout}s "
                    f"({entry.in_use} of {entry.max_concurrent} in use)"
                ) from None
            finally:
                entry.waiting -= 1
        if entry.closing or manager._registered.get(self._name) is not entry:
            entry.limiter.release()
            raise ResourceError(f"resource {self._name!r} was unregistered while waiting")
        now = clock()
        waited = now - began
        entry.total_wait += waited
        entry.max_wait = max(entry.max_wait, waited)
        entry.acquisitions += 1
        entry.in_use += 1
        entry.peak_in_use = max(entry.peak_in_use, entry.in_use)
        manager._acquired(1)
        self._entry = entry
        self._start = now
        return entry.resource

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        held = self._manager._clock() - self._start
        entry.total_hold += held
        entry.max_hold = max(entry.max_hold, held)
        entry.in_use -= 1
        self._manager._acquired(-1)
        entry.limiter.release()
        if entry.in_use == 0 and entry.idle is not None:
            entry.idle.set()


class ResourceManager:
    """Named resources with usage stats, weakly tracked objects, LIFO shielded cleanup.

    ``cleanup_timeout`` bounds each async cleanup (``None``: unbounded; sync
    cleanups cannot be interrupted and should be quick). ``clock`` measures
    wait and hold times. Raises ``TypeError``/``ValueError`` naming a bad
    argument.
    """

    def __init__(
        self,
        *,
        cleanup_timeout: float | None = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cleanup_timeout = check_timeout("cleanup_timeout", cleanup_timeout)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        self._clock = clock
        # Reentrant: a tracked object's finalizer may fire (inside the garbage
        # collector) while this thread already holds the lock.
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._registered: dict[str, _Registered] = {}
        self._tracked: dict[int, _Tracked] = {}
        self._in_use = 0
        self._acquisitions = 0
        self._cleanups_run = 0
        self._cleanup_failures = 0
        self._collected = 0
        self._peak_registered = 0
        self._peak_tracked = 0
        self._peak_in_use = 0

    # -- named resources --------------------------------------------------------------------

    def register_resource(
        self,
        name: str,
        resource: object,
        cleanup: Callable[[Any], object | Awaitable[object]] | None = None,
        *,
        kind: str | None = None,
        max_concurrent: int = 1,
    ) -> None:
        """Keep ``resource`` under ``name``; ``cleanup(resource)`` runs at cleanup or unregister.

        ``cleanup`` may be sync or async; ``None`` calls the resource's own
        ``aclose()`` or ``close()`` if it has one. ``max_concurrent`` is how
        many ``acquire_resource`` blocks may hold it at once (1: exclusive).
        Raises ``ValueError`` for a name already registered, ``TypeError``
        for a non-str name, a non-callable cleanup or a bad ``max_concurrent``.
        """
        check_name("name", name)
        if cleanup is not None and not callable(cleanup):
            raise TypeError(f"cleanup must be callable, got {type(cleanup).__name__} {cleanup!r}")
        if kind is not None:
            _check_kind(kind)
        check_int("max_concurrent", max_concurrent, minimum=1)
        with self._lock:
            if name in self._registered:
                raise ValueError(f"name {name!r} is already registered; unregister it first")
            entry = _Registered(next(self._seq), name, resource, cleanup, kind, max_concurrent)
            self._registered[name] = entry
            self._peak_registered = max(self._peak_registered, len(self._registered))

    def acquire_resource(
        self, name: str, kind: str | None = None, *, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Any]:
        """``async with manager.acquire_resource(name, kind) as resource:`` use it, counted.

        Waits while ``max_concurrent`` holders have it (``timeout`` seconds at
        most, then ``TimeoutError``). ``kind`` labels the resource for
        statistics: the first kind given (here or at registration) sticks, and
        a different one raises :class:`ResourceError`, as does an unknown
        name. Cancelled while waiting, it holds nothing.
        """
        check_name("name", name)
        if kind is not None:
            _check_kind(kind)
        return _Acquired(self, name, kind, check_timeout("timeout", timeout))

    async def unregister_resource(self, name: str, *, cleanup: bool = True) -> Any:
        """Remove ``name`` and return its resource, running its cleanup unless ``cleanup=False``.

        New acquisitions fail at once; current holders are waited for first.
        If that wait is cancelled the resource stays registered. The cleanup
        runs shielded and bounded like :meth:`cleanup_resources`; if it fails,
        the resource is unregistered anyway and :class:`ResourceError` is
        raised from the cause. Unknown name: :class:`ResourceError`.
        """
        check_name("name", name)
        entry = self._registered.get(name)
        if entry is None or entry.closing:
            raise ResourceError(f"no registered resource named {name!r}")
        entry.closing = True
        try:
            while entry.in_use > 0:
                entry.idle = anyio.Event()
                await entry.idle.wait()
        except BaseException:
            entry.closing = False
            entry.idle = None
            raise
        with self._lock:
            del self._registered[name]
        if cleanup:
            errors = await self._run_all([entry])
            if errors:
                raise errors[0]
        return entry.resource

    def get_resource_stats(self, name: str) -> ResourceStats:
        """Usage statistics of one resource; :class:`ResourceError` for an unknown name."""
        check_name("name", name)
        entry = self._registered.get(name)
        if entry is None:
            raise ResourceError(f"no registered resource named {name!r}")
        return entry.snapshot()

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a registered resource."""
        return name in self._registered

    def __len__(self) -> int:
        """Number of registered resources (tracked objects not included)."""
        return len(self._registered)

    # -- tracked objects --------------------------------------------------------------------

    def track_resource(
        self, obj: object, cleanup: Callable[[], object | Awaitable[object]] | None = None
    ) -> None:
        """Run ``cleanup()`` once: when ``obj`` is collected or at cleanup_resources.

        ``cleanup`` takes no argument and must not reference ``obj`` (that
        would keep it alive); a bound method of ``obj`` itself (``obj.close``)
        is recognised and held weakly, and so is the default, ``obj``'s
        ``aclose``/``close``; such methods run only at cleanup_resources,
        since a collected object has nothing left to close. A cleanup that
        runs at collection time must be sync (an async one is skipped with a
        warning: there is no event loop to run it in a finalizer). Raises
        ``TypeError`` if ``obj`` cannot be weakly referenced or ``cleanup``
        is not callable, ``ValueError`` if ``obj`` is already tracked.
        """
        if cleanup is not None and not callable(cleanup):
            raise TypeError(f"cleanup must be callable, got {type(cleanup).__name__} {cleanup!r}")
        try:
            weakref.ref(obj)
        except TypeError:
            raise TypeError(
                f"obj must support weak references, got {type(obj).__name__} {obj!r}"
            ) from None
        strong: Callable[[], object] | None = cleanup
        method: weakref.WeakMethod[Callable[[], object]] | None = None
        if cleanup is None:
            strong = None
            own = _default_cleanup(obj)
            if own is not None and getattr(own, "__self__", None) is obj:
                method = weakref.WeakMethod(own)
        elif getattr(cleanup, "__self__", None) is obj:
            method = weakref.WeakMethod(cleanup)
            strong = None
        key = id(obj)
        with self._lock:
            existing = self._tracked.get(key)
            # An alive finalizer under this id can only belong to this very object.
            if existing is not None and existing.finalizer is not None and existing.finalizer.alive:
                raise ValueError(f"obj {type(obj).__name__} is already tracked")
            entry = _Tracked(next(self._seq), f"{type(obj).__name__}@{key:#x}", strong, method)
            entry.finalizer = weakref.finalize(obj, self._on_collected, key, entry)
            entry.finalizer.atexit = False
            self._tracked[key] = entry
            self._peak_tracked = max(self._peak_tracked, len(self._tracked))

    def untrack_resource(self, obj: object) -> bool:
        """Stop tracking ``obj`` without running its cleanup; False if it was not tracked."""
        with self._lock:
            entry = self._tracked.get(id(obj))
            if entry is None or entry.finalizer is None or not entry.finalizer.alive:
                return False
            del self._tracked[id(obj)]
            entry.finalizer.detach()
            return True

    def _on_collected(self, key: int, entry: _Tracked) -> None:
        # Runs inside the garbage collector, in whatever thread triggered it.
        with self._lock:
            if self._tracked.get(key) is entry:
                del self._tracked[key]
            self._collected += 1
        if entry.cleanup is None:
            return
        try:
            result = entry.cleanup()
        except Exception:
            self._cleanup_failures += 1
            logger.exception("cleanup of collected resource %s failed", entry.label)
            return
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if callable(close):
                close()  # a never-awaited coroutine would warn; it cannot run here
            self._cleanup_failures += 1
            logger.warning(
                "async cleanup of collected resource %s skipped: it can only run at "
                "cleanup_resources()",
                entry.label,
            )
            return
        self._cleanups_run += 1

    # -- cleanup ----------------------------------------------------------------------------

    async def cleanup_resources(self) -> int:
        """Run every cleanup, last registered first; return how many succeeded.

        Registered resources are unregistered and tracked objects untracked as
        part of this. The whole run is shielded from cancellation (a cancelled
        caller still gets every cleanup run, and sees the cancellation after);
        each async cleanup is bounded by ``cleanup_timeout``. Failures do not
        stop the others and are raised together afterwards as an
        ``ExceptionGroup`` of :class:`ResourceError` (each chained to its cause).
        Resources still held by ``acquire_resource`` blocks are cleaned anyway.
        """
        with self._lock:
            registered = list(self._registered.values())
            for entry in registered:
                entry.closing = True
            entries: list[_Registered | _Tracked] = [*registered]
            self._registered.clear()
            for tracked in list(self._tracked.values()):
                # detach() makes the finalizer never fire: each cleanup runs exactly once.
                if tracked.finalizer is not None and tracked.finalizer.detach() is not None:
                    entries.append(tracked)
            self._tracked.clear()
        entries.sort(key=lambda e: e.seq, reverse=True)
        errors = await self._run_all(entries)
        if errors:
            raise ExceptionGroup(
                f"{len(errors)} of {len(entries)} resource cleanups failed", errors
            )
        return len(entries)

    async def _run_all(self, entries: list[_Registered | _Tracked]) -> list[ResourceError]:
        errors: list[ResourceError] = []
        timeout = self._cleanup_timeout if self._cleanup_timeout is not None else math.inf
        with anyio.CancelScope(shield=True):
            for entry in entries:
                label = entry.name if isinstance(entry, _Registered) else entry.label
                error: ResourceError | None = None
                with anyio.move_on_after(timeout) as scope:
                    try:
                        result = self._call_cleanup(entry)
                        if inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        error = ResourceError(f"cleanup of resource {label!r} failed: {exc!r}")
                        error.__cause__ = exc
                if scope.cancelled_caught:
                    error = ResourceError(
                        f"cleanup of resource {label!r} timed out after {self._cleanup_timeout}s"
                    )
                if error is None:
                    self._cleanups_run += 1
                else:
                    self._cleanup_failures += 1
                    logger.error("%s", error)
                    errors.append(error)
        return errors

    @staticmethod
    def _call_cleanup(entry: _Registered | _Tracked) -> object:
        if isinstance(entry, _Registered):
            if entry.cleanup is not None:
                return entry.cleanup(entry.resource)
            own = _default_cleanup(entry.resource)
            return own() if own is not None else None
        if entry.cleanup is not None:
            return entry.cleanup()
        if entry.method is not None:
            bound = entry.method()
            if bound is not None:
                return bound()
        return None

    # -- statistics -------------------------------------------------------------------------

    def _usable(self, name: str, kind: str | None) -> _Registered:
        entry = self._registered.get(name)
        if entry is None or entry.closing:
            raise ResourceError(f"no registered resource named {name!r}")
        if kind is not None:
            if entry.kind is None:
                entry.kind = kind
            elif entry.kind != kind:
                raise ResourceError(
                    f"resource {name!r} is of kind {entry.kind!r}, not kind={kind!r}"
                )
        return entry

    def _acquired(self, delta: int) -> None:
        self._in_use += delta
        if delta > 0:
            self._acquisitions += delta
            self._peak_in_use = max(self._peak_in_use, self._in_use)

    def stats(self) -> ResourceManagerStats:
        """Totals and high-water marks."""
        return ResourceManagerStats(
            registered=len(self._registered),
            tracked=len(self._tracked),
            in_use=self._in_use,
            acquisitions=self._acquisitions,
            cleanups_run=self._cleanups_run,
            cleanup_failures=self._cleanup_failures,
            collected=self._collected,
            peak_registered=self._peak_registered,
            peak_tracked=self._peak_tracked,
            peak_in_use=self._peak_in_use,
        )

    def report(self) -> dict[str, Any]:
        """A JSON-able report: totals, each resource's stats, and totals per kind."""
        resources = {name: e.snapshot().to_dict() for name, e in list(self._registered.items())}
        kinds: dict[str, dict[str, Any]] = {}
        for item in resources.values():
            kind = item["kind"] or "unspecified"
            agg = kinds.setdefault(
                kind, {"resources": 0, "acquisitions": 0, "in_use": 0, "max_hold": 0.0}
            )
            agg["resources"] += 1
            agg["acquisitions"] += item["acquisitions"]
            agg["in_use"] += item["in_use"]
            agg["max_hold"] = max(agg["max_hold"], item["max_hold"])
        return {"stats": self.stats().to_dict(), "resources": resources, "kinds": kinds}


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str or None, got {type(kind).__name__} {kind!r}")
    return kind
