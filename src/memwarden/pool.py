"""Async object pools: :class:`ObjectPool` and the seed-compatible :class:`MemoryPool`.

``ObjectPool[T]`` keeps up to ``max_size`` expensive objects (connections,
buffers, parsers) and lends them out::

    pool = ObjectPool(make_connection, max_size=10, close=lambda c: c.close())
    async with pool.acquire() as conn:
        ...
    obj = await pool.acquire()
    await pool.release(obj)

Every bookkeeping decision lives in the synchronous core
(:mod:`memwarden._pool_core`); this module only waits, runs the user's hooks
outside the core, and feeds the results back. It has the shape of anyio's
``CapacityLimiter`` and trio's ``_sync.py``: an acquire checkpoints, asks the
core (``acquire_nowait``), and either takes what it was given or parks on
:mod:`memwarden._backend` until a release hands it something; a cancelled
waiter gives back what it was handed through the core. anyio runs it on
asyncio and trio.

Written here rather than taken from a library: asyncpg's pool is tied to its
driver, and anyio and trio offer capacity limiters, not pools of objects with
hooks, lifetimes and leak reports.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel

from . import _backend
from ._pool_core import (
    CHECK,
    CLOSE,
    CREATE,
    PARK,
    RETURNED,
    Entry,
    PoolCore,
    Waiter,
)
from ._validate import check_float, check_fraction, check_int, check_timeout
from .errors import PoolClosedError, PoolError, PoolExhaustedError

__all__ = ["MemoryPool", "ObjectPool", "PoolLease", "PoolStats"]

T = TypeVar("T")

_log = logging.getLogger("memwarden.pool")

# Frames of this file are dropped from leak stacks: users want their own code.
_THIS_FILE = __file__


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    """Run a sync or async hook; awaits the result when it is awaitable."""
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _check_callable(name: str, value: Any, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


def _optional_positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    return check_float(name, value, positive=True, allow_inf=True)


def _capture_stack() -> traceback.StackSummary:
    # lookup_lines=False defers reading source files until a leak is reported.
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back  # type: ignore[assignment]
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=24, lookup_lines=False
    )
    summary.reverse()
    return summary


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of an :class:`ObjectPool`'s state and counters.

    ``size`` counts objects that exist (idle, in use, being validated or
    reset); ``pending`` counts creations in progress; ``closing`` counts
    objects that left the pool and whose ``close`` hook still runs in the
    background. ``*_peak`` fields are high-water marks since the pool was
    made; use them to size ``max_size``. Times are seconds.
    """

    size: int
    idle: int
    in_use: int
    waiters: int
    created: int
    destroyed: int
    acquired: int
    timeouts: int
    wait_time_max: float
    leaks_suspected: int
    in_use_peak: int
    waiters_peak: int
    pending: int = 0
    released: int = 0
    create_failures: int = 0
    validation_failures: int = 0
    wait_time_avg: float = 0.0
    size_peak: int = 0
    max_size: int = 0
    min_size: int = 0
    closed: bool = False
    name: str | None = None
    closing: int = 0
    closing_peak: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class PoolLease(Generic[T]):
    """What :meth:`ObjectPool.acquire` returns: await it, or use it with ``async with``.

    ``obj = await pool.acquire()`` hands you the object (release it yourself);
    ``async with pool.acquire() as obj:`` releases it on exit, even when the
    body raises or is cancelled. A lease is single-use: awaiting or entering
    it a second time raises ``PoolError``. Raises what
    :meth:`ObjectPool.acquire` documents.
    """

    __slots__ = ("_obj", "_pool", "_stack", "_timeout", "_used")

    def __init__(self, pool: ObjectPool[T], timeout: float | None, stack: object) -> None:
        self._pool = pool
        self._timeout = timeout
        self._stack = stack
        self._used = False
        self._obj: T | None = None

    def _start(self) -> Coroutine[Any, Any, T]:
        if self._used:
            raise PoolError("this lease was already used; call pool.acquire() for each acquire")
        self._used = True
        limit = self._timeout
        if limit is None or limit == math.inf:
            return self._pool._acquire(self._stack, checkpoint=True)
        return self._pool._acquire_within(limit, self._stack)

    def __await__(self) -> Generator[Any, None, T]:
        """Acquire the object; you must :meth:`ObjectPool.release` it."""
        return self._start().__await__()

    async def __aenter__(self) -> T:
        """Acquire the object for the ``async with`` block."""
        obj = self._obj = await self._start()
        return obj

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        """Release the object back to the pool: returns :meth:`ObjectPool.release`'s awaitable."""
        obj = cast(T, self._obj)
        self._obj = None
        return self._pool.release(obj)


class ObjectPool(Generic[T]):
    """An async pool of reusable objects made by ``factory`` (sync or async).

    Acquires are served FIFO: a released object, or the capacity a discarded
    object frees, goes straight to the longest waiter. Hooks (``factory``,
    ``validate``, ``reset``, ``close``, ``creation_gate``) may be sync or
    async; sync hooks run on the event loop thread, so wrap blocking work in
    ``anyio.to_thread.run_sync``. Use a pool from one event loop at a time
    (like ``asyncio.Queue``); it is not thread-safe.

    Failure behaviour:

    - ``factory`` raises: the error goes to the acquire that asked for the
      object; its reserved slot passes to the next waiter, which tries the
      factory itself. Capacity is never lost and no waiter hangs.
    - ``validate`` returns false or raises (logged): the object is closed and
      the same acquire takes the next idle object or creates a new one.
    - ``reset`` raises, runs past ``hook_timeout`` (logged) or is cancelled:
      the object is closed instead of being reused and its slot is freed.
    - ``close`` raises or runs past ``hook_timeout``: logged; the object is
      dropped anyway. Objects discarded by an acquire or a release are closed
      in the background (``PoolStats.closing``), so a slow ``close`` never
      holds up the caller.

    ``reset`` and ``close`` run shielded from cancellation, each bounded by
    ``hook_timeout`` seconds (default 10), so a cancelled or timed-out caller
    is never held more than ``hook_timeout`` past its deadline.

    ``clock`` (default ``time.monotonic``) measures lifetimes, idle times,
    wait times and leak ages; timeouts always run on the event loop's clock.
    ``fast_acquire=True`` makes an acquire that finds an idle object complete
    without yielding to other tasks (like anyio's ``Lock(fast_acquire=True)``);
    by default every acquire is a checkpoint. ``sleep`` is accepted for
    compatibility and ignored, with a ``DeprecationWarning``.

    Raises ``TypeError``/``ValueError`` for bad arguments (the message names
    the argument and its value).
    """

    def __init__(
        self,
        factory: Callable[[], T | Awaitable[T]],
        *,
        max_size: int = 10,
        min_size: int = 0,
        acquire_timeout: float | None = None,
        max_idle_time: float | None = None,
        max_lifetime: float | None = None,
        validate: Callable[[T], bool | Awaitable[bool]] | None = None,
        reset: Callable[[T], object] | None = None,
        close: Callable[[T], object] | None = None,
        leak_threshold: float | None = None,
        name: str | None = None,
        lifetime_jitter: float = 0.025,
        creation_gate: Callable[[], Awaitable[None]] | None = None,
        hook_timeout: float = 10.0,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        fast_acquire: bool = False,
        sleep: object = None,
    ) -> None:
        _check_callable("factory", factory, optional=False)
        max_size = check_int("max_size", max_size, minimum=1)
        min_size = check_int("min_size", min_size, minimum=0)
        if min_size > max_size:
            raise ValueError(f"min_size must be <= max_size ({max_size}), got {min_size!r}")
        acquire_timeout = check_timeout("acquire_timeout", acquire_timeout)
        max_idle_time = _optional_positive("max_idle_time", max_idle_time)
        max_lifetime = _optional_positive("max_lifetime", max_lifetime)
        leak_threshold = _optional_positive("leak_threshold", leak_threshold)
        lifetime_jitter = check_fraction("lifetime_jitter", lifetime_jitter)
        hook_timeout = check_float("hook_timeout", hook_timeout, positive=True)
        close_timeout = check_float("close_timeout", close_timeout, minimum=0.0)
        validate = _check_callable("validate", validate)
        reset = _check_callable("reset", reset)
        close = _check_callable("close", close)
        creation_gate = _check_callable("creation_gate", creation_gate)
        clock = _check_callable("clock", clock, optional=False)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
        if not isinstance(fast_acquire, bool):
            raise TypeError(
                f"fast_acquire must be a bool, got {type(fast_acquire).__name__} {fast_acquire!r}"
            )
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(
                f"rng must be a random.Random or None, got {type(rng).__name__} {rng!r}"
            )
        if sleep is not None:
            warnings.warn(
                "ObjectPool(sleep=...) is ignored: pool timeouts run on the event loop's "
                "clock (use trio.testing.MockClock to control time in tests)",
                DeprecationWarning,
                stacklevel=2,
            )
        self.name = name
        self._factory = factory
        self._acquire_timeout = acquire_timeout
        self._hook_timeout = hook_timeout
        self._close_timeout = close_timeout
        self._validate = validate
        self._reset = reset
        self._close = close
        self._gate = creation_gate
        self._clock = clock
        self._fast_acquire = fast_acquire
        self._core: PoolCore[T] = PoolCore(
            max_size,
            min_size,
            max_idle_time=max_idle_time,
            max_lifetime=max_lifetime,
            lifetime_jitter=lifetime_jitter,
            leak_threshold=leak_threshold,
            rng=rng,
            validates=validate is not None,
            resets=reset is not None,
        )
        self._filled = min_size == 0
        self._closing: anyio.Event | None = None

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<ObjectPool {self.name or hex(id(self))} size={core.size}/{core.max_size} "
            f"idle={len(core.idle)} in_use={core.in_use} waiters={len(core.waiters)}"
            f"{' closed' if core.closed else ''}>"
        )

    @property
    def max_size(self) -> int:
        """The most objects that may exist at once."""
        return self._core.max_size

    @property
    def min_size(self) -> int:
        """The number of objects :meth:`fill` keeps ready."""
        return self._core.min_size

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has begun."""
        return self._core.closed

    # -- acquire ------------------------------------------------------------------------

    def acquire(self, *, timeout: float | None = None) -> PoolLease[T]:
        """Lend an object: ``await pool.acquire()`` or ``async with pool.acquire() as obj``.

        Takes an idle object, else creates one while fewer than ``max_size``
        exist, else waits (FIFO) for one to be released. ``timeout`` (default
        the pool's ``acquire_timeout``; ``math.inf`` always waits) bounds the
        whole acquire, creation and validation included; ``timeout=0`` takes
        an idle object if there is one and fails otherwise. Acquiring is a
        checkpoint (a cancelled scope is honoured and other tasks run first)
        unless the pool was made with ``fast_acquire=True``.

        Raises ``PoolExhaustedError`` (a ``TimeoutError``) on timeout,
        ``PoolClosedError`` once the pool is closing, and whatever ``factory``
        raised for the creation it asked for. A cancelled or timed-out acquire
        holds nothing and leaves no waiter queued.
        """
        timeout = self._acquire_timeout if timeout is None else check_timeout("timeout", timeout)
        stack = _capture_stack() if self._core.leak_threshold is not None else None
        return PoolLease(self, timeout, stack)

    async def _acquire_within(self, limit: float, stack: object) -> T:
        # The checkpoint comes before the deadline starts: timeout=0 still
        # takes an idle object.
        if not self._fast_acquire:
            await _backend.current().checkpoint()
        with anyio.move_on_after(limit):
            return await self._acquire(stack, checkpoint=False)
        core = self._core
        core.record_timeout()
        label = f" {self.name!r}" if self.name else ""
        raise PoolExhaustedError(
            f"no object available from pool{label} within {limit:g} s "
            f"(max_size={core.max_size}, in_use={core.in_use}, "
            f"waiters={len(core.waiters)})"
        )

    async def _acquire(self, stack: object, *, checkpoint: bool) -> T:
        """Ask the core; take what it gives, or park until a release hands it over.

        As in trio's ``_sync.py``: parking is the checkpoint of a contended
        acquire; one that is served at once checkpoints afterwards and, if
        that raises, gives the grant back through the core.
        """
        core = self._core
        if not self._filled:
            await self._fill(raise_errors=False)
        kind, entry, expired = core.acquire_nowait(self._clock())
        if expired:
            self._close_later(expired)
        if kind == PARK:
            kind, entry = await self._park()
        elif checkpoint and not self._fast_acquire:
            try:
                await _backend.current().checkpoint()
            except BaseException:
                leftover = core.give_back(kind, entry, self._clock())
                if leftover is not None:
                    self._close_later([leftover])
                raise
        while kind == CHECK:
            assert entry is not None
            if await self._check(entry):
                core.claim(entry, self._clock())
                break
            if core.reject(entry):
                self._close_later([entry])
            kind, entry, expired = core.retry(self._clock())
            if expired:
                self._close_later(expired)
        if kind == CREATE:
            return await self._create_granted(stack)
        assert entry is not None  # LENT, or CHECK claimed
        entry.stack = stack
        return entry.obj

    async def _park(self) -> tuple[int, Entry[T] | None]:
        """Wait until the core hands this acquire an object or a creation slot."""
        core = self._core
        parking = _backend.current().park()
        waiter: Waiter[T] = Waiter(parking.wake)
        queued_at = self._clock()  # read first: once parked, nothing may raise before the wait
        core.park(waiter)
        try:
            await parking.wait()
        except BaseException:
            leftover = core.cancel_waiter(waiter, self._clock())
            if leftover is not None:
                self._close_later([leftover])
            raise
        core.record_wait(self._clock() - queued_at)
        if waiter.error is not None:
            raise waiter.error
        return waiter.kind, waiter.entry

    async def _create_granted(self, stack: object) -> T:
        """Create an object in the slot the core reserved for this acquire; it is lent."""
        obj = await self._create()
        entry = self._core.add_created(obj, self._clock())
        if entry is None:
            self._close_objects_later([obj])
            raise PoolClosedError("the pool was closed while an object was being created")
        entry.stack = stack
        return obj

    async def _create(self) -> T:
        """Run the gate and the factory for a reserved slot; frees the slot on failure."""
        core = self._core
        try:
            if self._gate is not None:
                try:
                    await self._gate()
                except TimeoutError as exc:
                    if isinstance(exc, PoolError):
                        raise
                    raise PoolExhaustedError(
                        f"object creation for pool {self.name!r} was held back too long "
                        f"by the creation gate: {exc}"
                    ) from exc
            obj = cast(T, await _call(self._factory))
        except Exception:
            core.creation_failed()
            raise
        except BaseException:
            core.creation_aborted()
            raise
        return obj

    async def _check(self, entry: Entry[T]) -> bool:
        """Validate a granted object; False (the caller rejects it) when it fails."""
        assert self._validate is not None
        try:
            ok = bool(await _call(self._validate, entry.obj))
        except Exception:
            _log.warning(
                "pool %s: validate raised for %r; discarding it",
                self._label,
                entry.obj,
                exc_info=True,
            )
            ok = False
        except BaseException:
            # Interrupted mid-validation: the object's state is unknown, so drop it.
            if self._core.discard(entry):
                self._close_later([entry])
            raise
        return ok

    # -- release ------------------------------------------------------------------------

    async def release(self, obj: T) -> None:
        """Give ``obj`` back to the pool (runs ``reset``, then hands it to the next waiter).

        Raises ``PoolError`` if ``obj`` did not come from this pool or was
        already released. The return completes even if the caller is cancelled
        meanwhile: ``reset`` runs shielded, bounded by ``hook_timeout``; a
        cancellation that still reaches it (``task.cancel()`` on asyncio)
        discards the object and frees its slot. An object whose ``reset``
        fails, whose lifetime has passed, or that comes back to a closing pool
        is closed in the background instead. Releasing an object that
        :meth:`aclose` force-closed is a no-op.
        """
        core = self._core
        now = self._clock()
        if core.leak_threshold is not None:
            late = core.late_leak(obj, now)
            if late is not None:
                self._log_leak(late, now)
        kind, entry = core.release_nowait(obj, now)
        if kind == RETURNED:
            return
        assert entry is not None
        if kind == CLOSE:
            self._close_later([entry])
            return
        await self._reset_returned(entry)

    async def _reset_returned(self, entry: Entry[T]) -> None:
        """Run ``reset`` on a returned object, then hand it on or discard it; never loses it."""
        core = self._core
        assert self._reset is not None
        ok = False
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._hook_timeout) as scope:
                try:
                    await _call(self._reset, entry.obj)
                    ok = True
                except Exception:
                    _log.warning(
                        "pool %s: reset raised for %r; closing it",
                        self._label,
                        entry.obj,
                        exc_info=True,
                    )
            if scope.cancelled_caught:
                _log.warning(
                    "pool %s: reset of %r took longer than hook_timeout (%g s); closing it",
                    self._label,
                    entry.obj,
                    self._hook_timeout,
                )
        finally:
            # Also on a cancellation the shield cannot stop (asyncio's task.cancel()):
            # the object goes back or is discarded, its slot freed either way.
            if ok:
                leftover = core.finish_return(entry, self._clock())
            else:
                leftover = entry if core.discard(entry) else None
            if leftover is not None:
                self._close_later([leftover])

    # -- closing objects ------------------------------------------------------------------

    def _close_later(self, entries: list[Entry[T]]) -> None:
        """Close objects that left the pool in background tasks, bounded by ``hook_timeout``."""
        self._close_objects_later([e.obj for e in entries])

    def _close_objects_later(self, objs: list[T]) -> None:
        if self._close is None:
            return
        core = self._core
        backend = _backend.current()
        for obj in objs:
            core.closing_started()
            try:
                backend.spawn(self._close_in_background, obj)
            except BaseException:
                core.closing_finished()
                raise

    async def _close_in_background(self, obj: T) -> None:
        try:
            await self._close_one(obj)
        finally:
            self._core.closing_finished()

    async def _close_one(self, obj: T) -> None:
        """Run the close hook on one object within ``hook_timeout``; errors are logged."""
        assert self._close is not None
        with anyio.move_on_after(self._hook_timeout) as scope:
            try:
                await _call(self._close, obj)
            except Exception:
                _log.warning("pool %s: close raised for %r", self._label, obj, exc_info=True)
        if scope.cancelled_caught:
            _log.warning(
                "pool %s: close of %r took longer than hook_timeout (%g s); dropped it",
                self._label,
                obj,
                self._hook_timeout,
            )

    async def _close_now(self, objs: list[T]) -> None:
        """Close objects concurrently, shielded, within ``hook_timeout``; errors are logged."""
        if self._close is None or not objs:
            return
        with anyio.CancelScope(shield=True):
            if len(objs) == 1:
                await self._close_one(objs[0])
                return
            async with anyio.create_task_group() as tg:
                for obj in objs:
                    tg.start_soon(self._close_one, obj)

    # -- maintenance --------------------------------------------------------------------

    async def fill(self) -> int:
        """Create objects until ``min_size`` exist; returns how many were made.

        Creations run concurrently and each passes the ``creation_gate``. New
        objects go to waiters first, else to the idle set. If a factory call
        fails, the others still finish and the first error is raised after.
        Raises ``PoolClosedError`` on a closed pool.
        """
        if self._core.closed:
            raise PoolClosedError("the pool is closed")
        return await self._fill(raise_errors=True)

    async def _fill(self, *, raise_errors: bool) -> int:
        self._filled = True
        core = self._core
        made: list[T] = []
        errors: list[Exception] = []

        async def create_one() -> None:
            try:
                obj = await self._create()
            except Exception as exc:
                errors.append(exc)
                return
            if core.add_created_idle(obj, self._clock()):
                made.append(obj)
            else:
                self._close_objects_later([obj])

        async with anyio.create_task_group() as tg:
            while core.reserve_fill():
                tg.start_soon(create_one)
        if errors:
            if raise_errors:
                raise errors[0]
            _log.warning(
                "pool %s: %d of %d creations failed while filling to min_size",
                self._label,
                len(errors),
                len(errors) + len(made),
                exc_info=errors[0],
            )
        return len(made)

    async def trim(self, keep: int | None = None) -> int:
        """Close idle objects, coldest first, until at most ``keep`` objects exist.

        ``keep`` defaults to ``min_size``; objects in use are never touched.
        Returns how many were closed. The close hooks run concurrently and
        shielded, within ``hook_timeout``. Raises ``TypeError``/``ValueError``
        for a bad ``keep``.
        """
        if keep is None:
            keep = self._core.min_size
        keep = check_int("keep", keep, minimum=0)
        removed = self._core.trim(keep)
        await self._close_now([e.obj for e in removed])
        return len(removed)

    async def reap(self) -> int:
        """Close idle objects past ``max_idle_time`` or their (jittered) ``max_lifetime``.

        Keeps at least ``min_size`` objects (re-creating retired ones), reports
        objects held past ``leak_threshold``, and returns how many were closed.
        Meant to run periodically (the Warden's supervisor does). Returns 0 on
        a closed pool.
        """
        core = self._core
        if core.closed:
            return 0
        now = self._clock()
        removed = core.reapable(now)
        self._report_leaks(now)
        await self._close_now([e.obj for e in removed])
        if not core.closed and core.size + core.pending < core.min_size:
            await self._fill(raise_errors=False)
        return len(removed)

    def _report_leaks(self, now: float) -> None:
        for entry in self._core.find_leaks(now):
            self._log_leak(entry, now)

    def _log_leak(self, entry: Entry[T], now: float) -> None:
        stack = entry.stack
        where = "".join(stack.format()) if isinstance(stack, traceback.StackSummary) else ""
        _log.warning(
            "pool %s: object %r held for %.3f s (leak_threshold %.3f s); acquired at:\n%s",
            self._label,
            entry.obj,
            now - entry.acquired_at,
            self._core.leak_threshold,
            where.rstrip() or "  (stack unavailable)",
        )

    @property
    def _label(self) -> str:
        return repr(self.name) if self.name else hex(id(self))

    def stats(self) -> PoolStats:
        """A snapshot of sizes, counters and peaks (also reports newly suspected leaks)."""
        core = self._core
        if core.leak_threshold is not None and not core.closed:
            self._report_leaks(self._clock())
        return PoolStats(
            size=core.size,
            idle=len(core.idle),
            in_use=core.in_use,
            waiters=len(core.waiters),
            created=core.created,
            destroyed=core.destroyed,
            acquired=core.acquired,
            timeouts=core.timeouts,
            wait_time_max=core.wait_time_max,
            leaks_suspected=core.leaks_suspected,
            in_use_peak=core.in_use_peak,
            waiters_peak=core.waiters_peak,
            pending=core.pending,
            released=core.released,
            create_failures=core.create_failures,
            validation_failures=core.validation_failures,
            wait_time_avg=core.wait_time_total / core.waits if core.waits else 0.0,
            size_peak=core.size_peak,
            max_size=core.max_size,
            min_size=core.min_size,
            closed=core.closed,
            name=self.name,
            closing=core.closing,
            closing_peak=core.closing_peak,
        )

    # -- shutdown -----------------------------------------------------------------------

    async def aclose(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (API.md)
        """Close the pool: no new acquires, then close every object.

        Waiting acquires get ``PoolClosedError`` at once and idle objects are
        closed. Objects still in use are closed as they come back; after
        ``timeout`` seconds (default the pool's ``close_timeout``, 10 s) the
        rest are closed where they are (a later ``release`` of one is a no-op).
        Idempotent; concurrent calls all wait for the first to finish. Returns
        within ``timeout`` plus ``hook_timeout``. Raises ``TypeError`` or
        ``ValueError`` for a bad ``timeout``.
        """
        timeout = self._close_timeout if timeout is None else check_timeout("timeout", timeout)
        assert timeout is not None
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = done = anyio.Event()
        core = self._core
        try:
            self._close_later(core.close())
            drained = anyio.Event()
            if not core.notify_when_drained(drained):
                with anyio.move_on_after(timeout):
                    await drained.wait()
            leftovers = core.force_close()
            if leftovers:
                _log.warning(
                    "pool %s: closing %d object(s) still in use after %g s",
                    self._label,
                    len(leftovers),
                    timeout,
                )
                await self._close_now([e.obj for e in leftovers])
        finally:
            done.set()

    async def __aenter__(self) -> ObjectPool[T]:
        """Fill the pool to ``min_size`` (raising the first factory error) and return it."""
        if self._core.min_size:
            await self.fill()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the pool (see :meth:`aclose`)."""
        await self.aclose()


class MemoryPool(Generic[T]):
    """Seed 002's keyed free-list: ``put(key, obj)`` parks an object, ``get(key)`` reuses it.

    Holds at most ``max_size`` objects across all keys; a ``put`` beyond that
    is refused (returns False) and the object is not kept. ``get`` returns the
    most recently put object for the key, or None. Synchronous and
    thread-safe (one lock). For lending with waiting, validation and
    lifetimes use :class:`ObjectPool`.

    Raises ``TypeError``/``ValueError`` for a bad ``max_size``.
    """

    def __init__(self, max_size: int = 1000) -> None:
        self._max_size = check_int("max_size", max_size, minimum=1)
        self._lock = threading.Lock()
        self._free: dict[Hashable, list[T]] = {}
        self._held: set[int] = set()
        self._hits = 0
        self._misses = 0
        self._puts = 0
        self._rejected = 0
        self._peak = 0

    @property
    def max_size(self) -> int:
        """The most objects held at once, across all keys."""
        return self._max_size

    def __len__(self) -> int:
        """Objects held, across all keys."""
        return len(self._held)

    def put(self, key: Hashable, obj: T) -> bool:
        """Keep ``obj`` for reuse under ``key``; False (not kept) when the pool is full.

        Raises ``TypeError`` for an unhashable key and ``PoolError`` if this
        very object is already in the pool.
        """
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"key must be hashable, got {type(key).__name__} {key!r}") from None
        with self._lock:
            if id(obj) in self._held:
                raise PoolError(f"object {obj!r} is already in the pool")
            if len(self._held) >= self._max_size:
                self._rejected += 1
                return False
            self._free.setdefault(key, []).append(obj)
            self._held.add(id(obj))
            self._puts += 1
            if len(self._held) > self._peak:
                self._peak = len(self._held)
            return True

    def get(self, key: Hashable) -> T | None:
        """Take the most recently put object for ``key``, or None if there is none."""
        with self._lock:
            free = self._free.get(key)
            if not free:
                self._misses += 1
                return None
            obj = free.pop()
            if not free:
                del self._free[key]
            self._held.discard(id(obj))
            self._hits += 1
            return obj

    def clear(self, key: Hashable | None = None) -> int:
        """Drop every object (or those of ``key``); returns how many were dropped."""
        with self._lock:
            keys = list(self._free) if key is None else [key]
            dropped = 0
            for k in keys:
                for obj in self._free.pop(k, ()):
                    self._held.discard(id(obj))
                    dropped += 1
            return dropped

    def get_stats(self) -> dict[str, Any]:
        """Seed-style statistics: sizes per key, hits, misses, puts, refusals, hit rate."""
        with self._lock:
            lookups = self._hits + self._misses
            return {
                "max_size": self._max_size,
                "total_objects": len(self._held),
                "peak_objects": self._peak,
                "utilization": len(self._held) / self._max_size,
                "pools": {str(k): len(v) for k, v in self._free.items()},
                "hits": self._hits,
                "misses": self._misses,
                "hit_rate": self._hits / lookups if lookups else 0.0,
                "puts": self._puts,
                "rejected": self._rejected,
            }
