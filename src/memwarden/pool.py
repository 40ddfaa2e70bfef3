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
outside the core, and feeds the results back. anyio runs it on asyncio and trio.

Written here rather than taken from a library: asyncpg's pool is tied to its
driver, and anyio and trio offer capacity limiters, not pools of objects with
hooks, lifetimes and leak reports.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import sys
import sysconfig
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Hashable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import anyio
import sniffio

from ._pool_core import (
    _NO_ENTRY,
    GRANT_CREATE,
    GRANT_OBJECT,
    MISSING,
    PARK,
    Entry,
    PoolCore,
    Waiter,
    WaiterLike,
)
from ._validate import check_float, check_fraction, check_int, check_timeout
from .errors import PoolClosedError, PoolError, PoolExhaustedError

__all__ = ["MemoryPool", "ObjectPool", "PoolLease", "PoolStats"]

T = TypeVar("T")
R = TypeVar("R")

_log = logging.getLogger("memwarden.pool")

_NOTHING: Any = object()


def _no_count(obj: object) -> int:
    return 0


# ObjectPool.acquire() hands out its previous lease again once nothing else
# refers to it, which spares the allocation, and the instruction-cache misses
# of allocating and freeing, on every cycle. Whether anything else refers to it
# is read from the reference count, exact on CPython 3.11-3.13 with the GIL.
# Elsewhere (3.14 may borrow references from the stack; free-threaded builds
# defer counts) every acquire makes a new lease.
_RECYCLE_LEASES = (
    sys.implementation.name == "cpython"
    and sys.version_info < (3, 14)
    and not sysconfig.get_config_var("Py_GIL_DISABLED")
)
_getrefcount: Callable[[object], int] = sys.getrefcount if _RECYCLE_LEASES else _no_count


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


class _Parked(WaiterLike[T], Protocol):
    def wait(self) -> Awaitable[Any]: ...


# The C future type itself: asyncio.Task resumes on it without the generic
# attribute lookups and method calls it needs for a Future subclass.
_Future = asyncio.Future


class _FutureWaiter(Generic[T]):
    """A parked acquire on asyncio: the grant fields and a plain ``asyncio.Future``.

    ``anyio.Event`` on asyncio wraps an ``asyncio.Event`` that wraps futures;
    a contended pool parks once per acquire, and profiles showed those layers.
    The waiter holds the future rather than subclassing it: for a subclass,
    ``asyncio.Task`` falls back to generic attribute lookups and method calls
    on every park, which cost more than this small holder. Cancellation (anyio
    cancel scopes included) cancels the awaited future just as it would inside
    ``asyncio.Event.wait``.
    """

    __slots__ = ("create", "entry", "error", "fut")

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] = _Future()
        self.entry: Entry[T] | None = None
        self.create = False
        self.error: BaseException | None = None

    def wait(self) -> Awaitable[Any]:
        return self.fut

    def wake(self) -> None:
        # try is free when nothing is raised; contextlib.suppress is a call.
        try:  # noqa: SIM105
            self.fut.set_result(None)
        except asyncio.InvalidStateError:
            pass  # the wait was cancelled: the waiter hands its grant on itself


class _EventWaiter(Waiter[T]):
    """A parked acquire on any other backend (trio): waits on an ``anyio.Event``."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(anyio.Event(), 0.0)

    def wait(self) -> Awaitable[Any]:
        return cast(anyio.Event, self.event).wait()


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of an :class:`ObjectPool`'s state and counters.

    ``size`` counts objects that exist (idle, in use, being validated or
    reset); ``pending`` counts creations in progress. ``*_peak`` fields are
    high-water marks since the pool was made; use them to size ``max_size``.
    Times are seconds.
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

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class _Spent:
    """Stands in for the pool in a lease that was used: acquiring through it raises."""

    _fast_idle: ClassVar[deque[Any]] = deque()  # always empty: no fast path
    _take: ClassVar[None] = None
    _acquire_timeout: ClassVar[None] = None

    async def _acquire_inner(self, stack: Any) -> Any:
        raise PoolError("this lease was already used; call pool.acquire() for each acquire")

    async def _acquire_slow(self, limit: float | None, stack: Any) -> Any:
        return await self._acquire_inner(stack)


_SPENT: Any = _Spent()


class PoolLease(Generic[T]):
    """What :meth:`ObjectPool.acquire` returns: await it, or use it with ``async with``.

    ``obj = await pool.acquire()`` hands you the object (release it yourself);
    ``async with pool.acquire() as obj:`` releases it on exit, even when the
    body raises or is cancelled. A lease is single-use: using it again raises
    ``PoolError``. The pool may hand the same lease object out again once
    nothing refers to it. Raises what :meth:`ObjectPool.acquire` documents.
    """

    # No __init__: ObjectPool.acquire() fills the slots, which keeps creation
    # cheap. Using the lease swaps ``_pool`` for _SPENT, so a spent lease, the
    # one the pool keeps for reuse included, holds no reference to the pool.
    __slots__ = ("_obj", "_opts", "_pool")

    _pool: ObjectPool[T]
    _opts: tuple[float | None, Any] | None
    _obj: T

    def _slow(self, pool: ObjectPool[T]) -> Awaitable[T]:
        opts = self._opts
        if opts is None:
            if pool._acquire_timeout is None:
                return pool._acquire_inner(None)
            return pool._acquire_slow(None, None)
        return pool._acquire_slow(*opts)

    def __await__(self) -> Generator[Any, None, T]:
        """Acquire the object; you must :meth:`ObjectPool.release` it."""
        pool = self._pool
        self._pool = _SPENT
        idle = pool._fast_idle
        if idle:
            # PoolCore.take_idle_nowait, inlined (see there): this and the
            # matching branch of ObjectPool.release are the whole uncontended
            # cycle, and calling the core for both cost an eighth of it.
            core = pool._core
            entry = core.last = idle.pop()
            entry.held = True
            in_use = core.in_use = core.in_use + 1
            if in_use > core.in_use_peak:
                core.in_use_peak = in_use
            return entry.obj
        if pool._take is not None and self._opts is None and pool._acquire_timeout is None:
            return (yield from pool._acquire_waiting().__await__())
        return (yield from self._slow(pool).__await__())

    async def __aenter__(self) -> T:
        """Acquire the object for the ``async with`` block."""
        if self._obj is not _NOTHING:
            raise PoolError("this lease is already in use; call pool.acquire() again")
        pool = self._pool
        take = pool._take
        if take is not None:
            obj: T = take()
            if obj is not MISSING:
                self._obj = obj
                return obj
        try:
            if self._opts is None and pool._acquire_timeout is None:
                if take is not None:
                    obj = await pool._acquire_waiting()
                else:
                    obj = await pool._acquire_inner(None)
            else:
                obj = await self._slow(pool)
        except BaseException:
            self._pool = _SPENT
            raise
        self._obj = obj
        return obj

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        """Release the object back to the pool: returns :meth:`ObjectPool.release`'s awaitable."""
        # A plain method handing back release()'s coroutine, which ``async with``
        # awaits directly: one coroutine per exit rather than two.
        obj, self._obj = self._obj, _NOTHING
        pool, self._pool = self._pool, _SPENT
        return pool.release(obj)


class ObjectPool(Generic[T]):
    """An async pool of reusable objects made by ``factory`` (sync or async).

    Acquires are served FIFO: a released object, or the capacity a discarded
    object frees, goes straight to the longest waiter. Hooks (``factory``,
    ``validate``, ``reset``, ``close``, ``creation_gate``) may be sync or
    async; sync hooks run on the event loop thread, so wrap blocking work in
    ``anyio.to_thread.run_sync``. Use a pool from one event loop (like
    ``asyncio.Queue``); it is not thread-safe.

    Failure behaviour:

    - ``factory`` raises: the error goes to the acquire that asked for the
      object; its reserved slot passes to the next waiter, which tries the
      factory itself. Capacity is never lost and no waiter hangs.
    - ``validate`` returns false or raises (logged): the object is closed and
      the same acquire takes the next idle object or creates a new one.
    - ``reset`` raises (logged) or is cancelled: the object is closed instead
      of being reused and its slot is freed.
    - ``close`` raises: logged; the object is dropped anyway.

    Raises ``TypeError``/``ValueError`` for bad arguments (the message names
    the argument).
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
        hook_timeout: float | None = None,
        close_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        _check_callable("factory", factory, optional=False)
        max_size = check_int("max_size", max_size, minimum=1)
        min_size = check_int("min_size", min_size, minimum=0)
        if min_size > max_size:
            raise ValueError(f"min_size must be <= max_size ({max_size}), got {min_size!r}")
        self._acquire_timeout = check_timeout("acquire_timeout", acquire_timeout)
        max_idle_time = _optional_positive("max_idle_time", max_idle_time)
        max_lifetime = _optional_positive("max_lifetime", max_lifetime)
        leak_threshold = _optional_positive("leak_threshold", leak_threshold)
        lifetime_jitter = check_fraction("lifetime_jitter", lifetime_jitter)
        self._hook_timeout = _optional_positive("hook_timeout", hook_timeout)
        self._close_timeout = check_float("close_timeout", close_timeout, minimum=0.0)
        self._validate = _check_callable("validate", validate)
        self._reset = _check_callable("reset", reset)
        self._close = _check_callable("close", close)
        self._gate = _check_callable("creation_gate", creation_gate)
        self._clock = _check_callable("clock", clock, optional=False)
        self._sleep = _check_callable("sleep", sleep, optional=False)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
        self.name = name
        self._factory = factory
        self._core: PoolCore[T] = PoolCore(
            max_size,
            min_size,
            max_idle_time=max_idle_time,
            max_lifetime=max_lifetime,
            lifetime_jitter=lifetime_jitter,
            leak_threshold=leak_threshold,
            rng=rng,
            claim_needed=validate is not None or leak_threshold is not None,
        )
        self._track_leaks = leak_threshold is not None
        self._filled = min_size == 0
        self._closing: anyio.Event | None = None
        self._waiter_factory: Callable[[], _Parked[T]] | None = None
        # Fast paths skip the general machinery when no per-object check applies.
        simple_acquire = validate is None and max_lifetime is None and not self._track_leaks
        self._simple_take = self._core.take_idle_nowait if simple_acquire else None
        self._take = self._simple_take if self._filled else None
        simple_release = reset is None and max_lifetime is None and max_idle_time is None
        simple_release = simple_release and not self._track_leaks
        # The fast acquire reads the core's own idle deque, or an empty stand-in
        # that sends every acquire down the general path.
        self._fast_idle: deque[Entry[T]] = self._core.idle if self._take is not None else deque()
        # False once the pool closes, so the fast release needs no closed check.
        self._fast_release = simple_release
        self._spare: PoolLease[T] = PoolLease()
        self._spare._pool = _SPENT
        self._plain_release = reset is None and not self._track_leaks

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
        whole acquire, creation included. When an idle object is ready and nobody
        waits, this completes without suspending (like ``asyncio.Queue.get``).

        Raises ``PoolExhaustedError`` (a ``TimeoutError``) on timeout,
        ``PoolClosedError`` once the pool is closing, and whatever ``factory``
        raised for the creation it asked for. A cancelled or timed-out acquire
        holds nothing and leaves no waiter queued.
        """
        if timeout is None and not self._track_leaks:
            opts = None
        else:
            if timeout is not None:
                timeout = check_timeout("timeout", timeout)
            opts = (timeout, _capture_stack() if self._track_leaks else None)
        lease = self._spare
        # Three references: self._spare, ``lease`` and getrefcount's argument.
        # Any more and someone still holds it (a caller, an ``async with``, a
        # suspended await, a traceback): make a new one, without __init__, as
        # this is on every acquire's hot path.
        if _getrefcount(lease) != 3:
            lease = self._spare = PoolLease()
        lease._pool = self
        lease._obj = _NOTHING
        lease._opts = opts
        return lease

    async def _acquire_slow(self, limit: float | None, stack: Any) -> T:
        timeout = self._acquire_timeout if limit is None else limit
        if timeout is None or math.isinf(timeout):
            return await self._acquire_inner(stack)
        done, value = await self._within(timeout, lambda: self._acquire_inner(stack))
        if done:
            return cast(T, value)
        core = self._core
        core.timeouts += 1
        label = f" {self.name!r}" if self.name else ""
        raise PoolExhaustedError(
            f"no object available from pool{label} within {timeout:g} s "
            f"(max_size={core.max_size}, in_use={core.in_use}, "
            f"waiters={len(core.waiters)})"
        )

    async def _within(self, limit: float, fn: Callable[[], Awaitable[R]]) -> tuple[bool, R | None]:
        """Run ``fn`` until ``limit`` seconds pass on this pool's clock: (finished, result)."""
        if self._sleep is anyio.sleep:
            with anyio.move_on_after(limit):
                return True, await fn()
            return False, None
        # An injected sleep (a manual clock in tests) cannot drive move_on_after,
        # so a timer task cancels the wait instead.
        result: list[R] = []
        error: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self._sleep(limit)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            try:
                result.append(await fn())
            except Exception as exc:
                error.append(exc)
            finally:
                tg.cancel_scope.cancel()
        if error:
            raise error[0]
        if result:
            return True, result[0]
        return False, None

    async def _acquire_inner(self, stack: Any) -> T:
        core = self._core
        if not self._filled:
            await self._fill(raise_errors=False)
        now = self._clock()
        kind, entry, expired = core.acquire(now)
        waiter: _Parked[T] | None = None
        if kind == PARK:
            # Queue before any await, so a release meanwhile finds this waiter.
            waiter = (self._waiter_factory or self._waiter_kind())()
            core.park(waiter)
        while True:
            if expired:
                # Shielded, so no cancellation lands while a grant is held unrecorded.
                await self._close_objects([e.obj for e in expired])
                expired = []
            if waiter is not None:
                try:
                    await waiter.wait()
                except BaseException:
                    leftover = core.cancel_waiter(waiter, self._clock())
                    if leftover is not None:
                        await self._close_objects([leftover.obj])
                    raise
                queued_at, now = now, self._clock()
                core.record_wait(now - queued_at)
                if waiter.error is not None:
                    raise waiter.error
                entry = waiter.entry
                if entry is not None and not core.claim_needed:
                    return entry.obj  # the core already moved it to in_use
                kind = GRANT_CREATE if entry is None else GRANT_OBJECT
                waiter = None
            if kind == GRANT_OBJECT:
                assert entry is not None
                if self._validate is not None and not await self._check(entry):
                    bad = entry
                    owned = core.checking.get(bad.key) is bad
                    try:
                        kind, entry, expired = core.reject(bad, self._clock())
                    finally:
                        if owned:
                            await self._close_objects([bad.obj])
                    continue
                core.claim(entry, self._clock() if self._track_leaks else 0.0)
                entry.stack = stack
                return entry.obj
            # GRANT_CREATE: this task holds a reserved slot until it reports back.
            return await self._create_granted(stack)

    async def _create_granted(self, stack: Any) -> T:
        """Create an object in the slot the core reserved for this acquire, and claim it."""
        core = self._core
        obj = await self._create()
        now = self._clock()
        entry = core.add_created(obj, now)
        if entry is None:
            await self._close_objects([obj])
            raise PoolClosedError("the pool was closed while an object was being created")
        core.claim(entry, now)
        entry.stack = stack
        return obj

    async def _acquire_waiting(self) -> T:
        """The contended acquire of a pool with no per-object checks (``_take`` is set).

        The core parks the waiter in the same call that decides it must wait;
        the release that frees an object hands it over already in ``in_use``,
        so waking is the whole acquire. Anything else takes the general path.
        """
        core = self._core
        queued_at = self._clock()  # read first: once parked, nothing may raise before the wait
        waiter = core.park_if_busy(self._waiter_factory or self._waiter_kind())
        if waiter is None:
            return await self._acquire_inner(None)
        try:
            await waiter.wait()
        except BaseException:
            leftover = core.cancel_waiter(waiter, self._clock())
            if leftover is not None:
                await self._close_objects([leftover.obj])
            raise
        core.record_wait(self._clock() - queued_at)
        if waiter.error is not None:
            raise waiter.error
        entry = waiter.entry
        if entry is not None:
            return entry.obj
        return await self._create_granted(None)

    def _waiter_kind(self) -> Callable[[], _Parked[T]]:
        # Decided once: a pool lives on one event loop.
        if sniffio.current_async_library() == "asyncio":
            factory: Callable[[], _Parked[T]] = _FutureWaiter
        else:
            factory = _EventWaiter
        self._waiter_factory = factory
        return factory

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
        """Validate a granted object; False (object discarded by the caller) when it fails."""
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
                await self._close_objects([entry.obj])
            raise
        return ok

    # -- release ------------------------------------------------------------------------

    async def release(self, obj: T) -> None:
        """Give ``obj`` back to the pool (runs ``reset``, then hands it to the next waiter).

        Raises ``PoolError`` if ``obj`` did not come from this pool or was
        already released. The return completes even if the caller is cancelled
        meanwhile (the reset runs shielded). An object whose ``reset`` fails,
        whose lifetime has passed, or that comes back to a closing pool is
        closed instead. Releasing an object that :meth:`aclose` force-closed is
        a no-op.
        """
        core = self._core
        if self._fast_release:
            entry = core.last
            if entry.obj is not obj:
                # No identity check needed: ``obj`` and every registered object
                # are alive, and live objects never share an id.
                entry = core.entries.get(id(obj), _NO_ENTRY)
            if entry.held:
                if core.waiters:
                    core.hand_back(entry)
                    return
                # PoolCore.hand_back's idle branch, inlined (see there).
                core.released += 1
                entry.held = False
                core.in_use -= 1
                core.idle.append(entry)
                return
        if self._plain_release:
            # No hook to run: the hand-off to a waiter is synchronous bookkeeping.
            leftover = self._core.release(obj, self._clock())
            if leftover is not None:
                await self._close_objects([leftover.obj])
            return
        await self._release_slow(obj)

    async def _release_slow(self, obj: T) -> None:
        core = self._core
        now = self._clock()
        if self._track_leaks:
            late = core.late_leak(obj, now)
            if late is not None:
                self._log_leak(late, now)
        if self._reset is None:
            leftover = core.release(obj, now)
            if leftover is not None:
                await self._close_objects([leftover.obj])
            return
        entry = core.begin_return(obj)
        if entry is None:
            return
        ok = False
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._hook_limit()) as scope:
                try:
                    await _call(self._reset, obj)
                    ok = True
                except Exception:
                    _log.warning(
                        "pool %s: reset raised for %r; closing it",
                        self._label,
                        obj,
                        exc_info=True,
                    )
            if scope.cancelled_caught:
                _log.warning("pool %s: reset of %r timed out; closing it", self._label, obj)
            if ok:
                leftover = core.finish_return(entry, self._clock())
            else:
                leftover = entry if core.discard(entry) else None
            if leftover is not None:
                await self._close_objects([leftover.obj])

    # -- closing objects ------------------------------------------------------------------

    def _hook_limit(self) -> float:
        return math.inf if self._hook_timeout is None else self._hook_timeout

    async def _close_objects(self, objs: list[T], limit: float | None = None) -> None:
        """Run the close hook on each object, shielded; errors are logged, never raised."""
        if self._close is None or not objs:
            return
        limit = self._hook_limit() if limit is None else limit
        with anyio.CancelScope(shield=True):
            for obj in objs:
                with anyio.move_on_after(limit) as scope:
                    try:
                        await _call(self._close, obj)
                    except Exception:
                        _log.warning(
                            "pool %s: close raised for %r", self._label, obj, exc_info=True
                        )
                if scope.cancelled_caught:
                    _log.warning("pool %s: close of %r timed out", self._label, obj)

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
        self._take = self._simple_take
        if self._take is not None:
            self._fast_idle = self._core.idle
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
                await self._close_objects([obj])

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
        Returns how many were closed. Raises ``TypeError``/``ValueError`` for a
        bad ``keep``.
        """
        if keep is None:
            keep = self._core.min_size
        keep = check_int("keep", keep, minimum=0)
        removed = self._core.trim(keep)
        await self._close_objects([e.obj for e in removed])
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
        await self._close_objects([e.obj for e in removed])
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
        if self._track_leaks and not core.closed:
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
        )

    # -- shutdown -----------------------------------------------------------------------

    async def aclose(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (API.md)
        """Close the pool: no new acquires, then close every object.

        Waiting acquires get ``PoolClosedError`` at once and idle objects are
        closed. Objects still in use are closed as they come back; after
        ``timeout`` seconds (default the pool's ``close_timeout``, 10 s) the
        rest are closed where they are (a later ``release`` of one is a no-op).
        Idempotent; concurrent calls all wait for the first to finish. Never
        hangs longer than ``timeout`` plus the close hooks (each bounded by
        ``hook_timeout``, else by ``timeout``).
        """
        timeout = self._close_timeout if timeout is None else check_timeout("timeout", timeout)
        assert timeout is not None
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = done = anyio.Event()
        core = self._core
        limit = self._hook_timeout if self._hook_timeout is not None else max(timeout, 0.001)
        try:
            self._fast_release = False  # a closing pool closes what comes back
            idle = core.close()
            await self._close_objects([e.obj for e in idle], limit)
            if core.outstanding:
                drained = anyio.Event()
                core.drained = drained
                if core.outstanding:
                    await self._within(timeout, drained.wait)
            if core.outstanding:
                leftovers = core.force_close()
                if leftovers:
                    _log.warning(
                        "pool %s: closing %d object(s) still in use after %g s",
                        self._label,
                        len(leftovers),
                        timeout,
                    )
                await self._close_objects([e.obj for e in leftovers], limit)
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
