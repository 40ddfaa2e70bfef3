"""The awaitable memory budget: reserve bytes before you use them.

A :class:`MemoryManager` holds a byte capacity. Tasks ask for bytes with
``acquire`` / ``reserve`` (waiting fairly when the budget is full),
``try_acquire`` (never waits) or the seed-compatible ``allocate``, and give
them back with ``release``. Waiters are served by priority, FIFO within a
priority, without letting small requests starve a large one; evictable
allocations of lower priority make room for higher-priority requests. With a
pressure monitor attached, grants also respect the memory the machine really
has left.

Every decision is taken by the synchronous ledger in ``memwarden._grants``
under one lock; this module only parks waiters, applies timeouts, handles
cancellation and runs callbacks. ``release()`` is thread-safe and never blocks
on the event loop.

The uncontended path of ``acquire`` / ``reserve`` does not yield to the event
loop (like ``asyncio.Semaphore``): a loop that only takes and gives back
budget never lets other tasks run. Await ``anyio.lowlevel.checkpoint()`` in
such a loop if others must progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import anyio

from ._grants import LIVE as _LIVE
from ._grants import QUEUED as _QUEUED
from ._grants import HistoryRow, Ledger, Request
from ._native import malloc_trim
from ._validate import check_int, check_timeout
from .errors import AllocationTimeoutError, MemoryAllocationError, MemoryOptimizationError

if TYPE_CHECKING:
    from .config import WardenConfig
    from .gc import GCController
    from .pressure import PressureEvent, PressureMonitor

try:
    import sniffio as _sniffio
except ImportError:  # pragma: no cover - trio depends on sniffio; plain asyncio may not
    _sniffio = None  # type: ignore[assignment]

__all__ = ["Allocation", "MemoryManager", "MemoryStats", "Priority"]

_log = logging.getLogger("memwarden.budget")

_get_ident = threading.get_ident


class Priority(enum.IntEnum):
    """Common request priorities; any ``int`` is accepted, higher is served first."""

    LOW = 0
    NORMAL = 50
    HIGH = 100


_NORMAL = Priority.NORMAL


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """A snapshot of a budget (seed 000's fields plus counters and peaks).

    ``total_allocated`` is the capacity; ``peak_usage`` is exact (tracked on
    every grant). ``waiters_peak`` is the most requests ever queued at once.
    """

    total_allocated: int
    available: int
    peak_usage: int
    current_usage: int
    timestamp: float
    allocations: int = 0
    waiters: int = 0
    evictions: int = 0
    timeouts: int = 0
    waiters_peak: int = 0
    granted: int = 0
    evicted_bytes: int = 0
    cancelled: int = 0
    headroom: int | None = None

    @classmethod
    def _from_row(cls, row: HistoryRow) -> MemoryStats:
        return cls(
            total_allocated=row.capacity,
            available=row.capacity - row.used,
            peak_usage=row.peak,
            current_usage=row.used,
            timestamp=row.timestamp,
            allocations=row.allocations,
            waiters=row.waiters,
            evictions=row.evictions,
            timeouts=row.timeouts,
            waiters_peak=row.waiters_peak,
            granted=row.granted,
            evicted_bytes=row.evicted_bytes,
            cancelled=row.cancelled,
            headroom=row.headroom,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


class _Loop:
    """The event loop a task runs on, with a thread-safe way to call into it."""

    __slots__ = ("native", "soon", "thread", "trio")

    def __init__(self, native: Any, trio: bool) -> None:
        self.native = native
        self.trio = trio
        self.thread = _get_ident()
        self.soon: Callable[..., object] = (
            native.run_sync_soon if trio else native.call_soon_threadsafe
        )

    def park(self) -> _AsyncioPark | _TrioPark:
        """A fresh one-shot wake-up for a task of this loop."""
        return _TrioPark(self) if self.trio else _AsyncioPark(self)

    def spawn(self, awaitable: Awaitable[object]) -> None:
        """Run ``awaitable`` as a background task of this loop (from any thread)."""
        if self.trio:
            import trio

            self.soon(trio.lowlevel.spawn_system_task, _guarded, awaitable)
        else:
            self.soon(_start_asyncio_task, self.native, awaitable)


# One cached _Loop per thread: parking happens on every contended acquire, and
# detecting the library and building the handle each time would dominate it.
_threads = threading.local()


def _running_loop() -> _Loop:
    """The calling task's loop; ``RuntimeError`` when no event loop runs here."""
    # sniffio's own first two questions, without its fallback probing: trio
    # (also in guest mode) announces itself there; anything else is asyncio.
    name = None
    if _sniffio is not None:
        name = _sniffio.thread_local.name or _sniffio.current_async_library_cvar.get()
    trio = name == "trio"
    if trio:
        import trio as trio_module

        native: Any = trio_module.lowlevel.current_trio_token()
    else:
        native = asyncio.get_running_loop()
    cached: _Loop | None = getattr(_threads, "loop", None)
    if cached is None or cached.native is not native:
        cached = _threads.loop = _Loop(native, trio)
    return cached


def _current_loop() -> _Loop | None:
    try:
        return _running_loop()
    except RuntimeError:  # no running loop in this thread (a sync caller)
        return None


_background: set[asyncio.Task[None]] = set()


def _start_asyncio_task(loop: asyncio.AbstractEventLoop, awaitable: Awaitable[object]) -> None:
    task = loop.create_task(_guarded(awaitable))
    _background.add(task)  # keep a reference until done (asyncio holds tasks weakly)
    task.add_done_callback(_background.discard)


async def _guarded(awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        _log.exception("on_evict callback failed")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have been cancelled meanwhile
        future.set_result(None)


class _AsyncioPark:
    """A parked asyncio task: a bare future, set from any thread without blocking."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: _Loop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.native.create_future()

    def wait(self) -> Awaitable[None]:
        return self.future

    def wake(self) -> None:
        if _get_ident() == self.loop.thread:
            _resolve(self.future)
        else:
            with contextlib.suppress(RuntimeError):  # that loop has finished: none to wake
                self.loop.soon(_resolve, self.future)


class _TrioPark:
    """A parked trio task: a trio.Event, set from any thread without blocking."""

    __slots__ = ("event", "loop")

    def __init__(self, loop: _Loop) -> None:
        import trio

        self.loop = loop
        self.event = trio.Event()

    def wait(self) -> Awaitable[None]:
        return self.event.wait()

    def wake(self) -> None:
        if _get_ident() == self.loop.thread:
            self.event.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop has finished: none to wake
                self.loop.soon(self.event.set)


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__} {priority!r}")
    return int(priority)


def _check_request(
    capacity: int,
    nbytes: object,
    key: object,
    priority: object,
    timeout: object,
    evictable: object,
    on_evict: object,
) -> tuple[int, int, float | None]:
    """Validate one request; return (nbytes, priority as int, timeout)."""
    if type(nbytes) is not int:
        nbytes = int(check_int("nbytes", nbytes))
    elif nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
    if nbytes > capacity:
        raise _too_large(nbytes, capacity)
    if priority is _NORMAL:
        priority = 50
    elif type(priority) is not int:
        priority = _check_priority(priority)
    if key is not None and type(key) is not str:
        raise TypeError(f"key must be a str or None, got {type(key).__name__} {key!r}")
    if timeout is not None:
        timeout = check_timeout("timeout", timeout)
    if evictable is not False and evictable is not True:
        raise TypeError(f"evictable must be a bool, got {type(evictable).__name__} {evictable!r}")
    if on_evict is not None:
        if not callable(on_evict):
            raise TypeError(f"on_evict must be callable, got {type(on_evict).__name__}")
        if not evictable:
            raise ValueError("on_evict was given but evictable=False: it could never be called")
    return nbytes, priority, timeout


def _too_large(nbytes: int, capacity: int) -> MemoryAllocationError:
    return MemoryAllocationError(
        f"nbytes={nbytes} exceeds the budget's capacity of {capacity} bytes: "
        "it can never be granted"
    )


def _timeout_error(nbytes: int, timeout: float | None) -> AllocationTimeoutError:
    return AllocationTimeoutError(f"nbytes={nbytes} could not be granted within timeout={timeout}s")


class Allocation(Request):
    """Bytes granted by a :class:`MemoryManager`, held until released.

    Read-only fields: ``key``, ``nbytes``, ``priority``, ``evictable``,
    ``released``. ``release()`` is idempotent and thread-safe; ``async with
    allocation:`` releases on exit (also on exception or cancellation).
    """

    __slots__ = ()

    async def __aenter__(self) -> Allocation:
        # A LIVE allocation (from acquire) is simply held for the block; a
        # PENDING one (from reserve) is acquired here.
        ledger = self._owner
        try:
            if ledger._order:
                # Others are queued (a hint read without the lock): skip the
                # fast attempt; _wait() grants or queues atomically.
                await _wait(self)
                return self
            if ledger.try_grant(self):
                return self
        except RuntimeError:  # not PENDING: already acquired, or used up
            if self._state == _LIVE:
                return self
            raise
        await _wait(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner.release(self)


async def _wait(allocation: Allocation) -> None:
    """Queue ``allocation`` and wait for its grant; leave no trace if that fails."""
    ledger = allocation._owner
    limit = allocation._timeout
    if limit is not None and limit <= 0:
        if ledger.try_grant(allocation):
            return
        ledger.count_timeout()
        raise _timeout_error(allocation._nbytes, limit)
    park = _running_loop().park()
    if ledger.enqueue(allocation, park.wake):
        return
    try:
        if limit is None or math.isinf(limit):
            await park.wait()
        else:
            sleep = cast("MemoryManager", ledger.owner)._sleep
            if sleep is anyio.sleep:
                with anyio.move_on_after(limit):
                    await park.wait()
            else:
                await _wait_with_sleep(park, limit, sleep)
    except BaseException:
        # Cancelled: leave the queue, or hand back a grant that raced us.
        ledger.cancel(allocation)
        raise
    # Only a grant moves a request out of QUEUED behind our back, so reading
    # the state without the lock is safe; settle() decides the timeout race.
    if allocation._state == _QUEUED and not ledger.settle(allocation):
        raise _timeout_error(allocation._nbytes, limit)


async def _wait_with_sleep(
    park: _AsyncioPark | _TrioPark, limit: float, sleep: Callable[[float], Awaitable[object]]
) -> None:
    # An injected sleep (a manual clock in tests) drives the timeout.
    async with anyio.create_task_group() as group:

        async def expire() -> None:
            await sleep(limit)
            group.cancel_scope.cancel()

        group.start_soon(expire)
        await park.wait()
        group.cancel_scope.cancel()


class MemoryManager:
    """An awaitable, fair, priority-aware byte budget (seed 000's MemoryManager).

    ``capacity`` is the number of bytes it may grant; ``None`` takes
    ``config.capacity`` or else ``detect_memory_limit() * max_memory_percent / 100``.
    ``monitor`` couples grants to memory pressure (anything with ``level``,
    ``last_sample`` and ``add_listener`` works); ``history`` bounds the stats
    history (0 disables it); ``clock`` and ``sleep`` drive the history and
    timeouts (tests pass a ManualClock); ``gc_controller`` is used by
    :meth:`optimize`. Raises ``TypeError``/``ValueError`` naming the argument
    for bad input.

    Thread-safety: ``release``, ``try_acquire``, ``deallocate`` and the
    properties may be called from any thread; ``acquire``/``reserve`` from any
    event loop (asyncio or trio, through anyio), including several loops in
    different threads.
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        monitor: PressureMonitor | None = None,
        history: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        config: WardenConfig | None = None,
        gc_controller: GCController | None = None,
    ) -> None:
        if config is not None:
            from .config import WardenConfig

            if not isinstance(config, WardenConfig):
                raise TypeError(f"config must be a WardenConfig, got {type(config).__name__}")
        if monitor is not None and not callable(getattr(monitor, "add_listener", None)):
            raise TypeError(
                f"monitor must be a PressureMonitor (it needs add_listener), got "
                f"{type(monitor).__name__}"
            )
        if gc_controller is not None and not (
            callable(getattr(gc_controller, "run_cleanup", None))
            and callable(getattr(gc_controller, "collect_with_stats", None))
        ):
            raise TypeError(
                "gc_controller must have run_cleanup() and collect_with_stats(), got "
                f"{type(gc_controller).__name__}"
            )
        check_int("history", history)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        if not callable(sleep):
            raise TypeError(f"sleep must be callable, got {type(sleep).__name__}")
        if capacity is None:
            capacity = _default_capacity(config)
        else:
            check_int("capacity", capacity, minimum=1)
        self._ledger = Ledger(
            capacity, clock=clock, history=history, on_evicted=self._evicted, owner=self
        )
        self._sleep = sleep
        self._gc_controller = gc_controller
        self._cleanups: list[Callable[[], object]] = []
        self._monitor = monitor
        self._detach: Callable[[], None] | None = None
        if monitor is not None:
            sample = monitor.last_sample
            self._ledger.set_pressure(
                int(monitor.level), sample.available if sample is not None else None
            )
            self._detach = monitor.add_listener(self._on_pressure)

    # ------------------------------------------------------------ acquiring

    async def acquire(
        self,
        nbytes: int,
        *,
        key: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the public contract
        evictable: bool = False,
        on_evict: Callable[[Allocation], object] | None = None,
    ) -> Allocation:
        """Wait until ``nbytes`` can be granted fairly, then return the Allocation.

        Raises ``MemoryAllocationError`` at once if ``nbytes > capacity``,
        ``AllocationTimeoutError`` after ``timeout`` seconds, ``ValueError`` for
        a negative size or a key already held. ``nbytes == 0`` is granted at
        once. Cancelled or timed out, it leaves nothing held and nothing queued.
        """
        ledger = self._ledger
        if (
            type(nbytes) is int
            and 0 <= nbytes <= ledger._capacity
            and priority is _NORMAL
            and key is None
            and timeout is None
            and evictable is False
            and on_evict is None
        ):
            allocation = Allocation(ledger, None, nbytes, 50)
        else:
            nbytes, priority, timeout = _check_request(
                ledger._capacity, nbytes, key, priority, timeout, evictable, on_evict
            )
            allocation = Allocation(ledger, key, nbytes, priority, evictable, on_evict, timeout)
            if on_evict is not None:
                allocation._loop = _current_loop()
        if not ledger.try_grant(allocation):
            await _wait(allocation)
        return allocation

    def try_acquire(
        self,
        nbytes: int,
        *,
        key: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        evictable: bool = False,
        on_evict: Callable[[Allocation], object] | None = None,
    ) -> Allocation | None:
        """Grant ``nbytes`` now or return None; never waits and never jumps the queue.

        Evicts lower-priority evictable allocations when that makes it fit.
        ``timeout`` is accepted for symmetry and ignored. Raises like
        :meth:`acquire`. Thread-safe.
        """
        ledger = self._ledger
        nbytes, priority, _ = _check_request(
            ledger._capacity, nbytes, key, priority, timeout, evictable, on_evict
        )
        allocation = Allocation(ledger, key, nbytes, priority, evictable, on_evict)
        if on_evict is not None:
            allocation._loop = _current_loop()
        return allocation if ledger.try_grant(allocation) else None

    def reserve(
        self,
        nbytes: int,
        *,
        key: str | None = None,
        priority: int = Priority.NORMAL,
        timeout: float | None = None,
        evictable: bool = False,
        on_evict: Callable[[Allocation], object] | None = None,
    ) -> AbstractAsyncContextManager[Allocation]:
        """``async with budget.reserve(n) as allocation:`` holds ``n`` bytes inside the block.

        Acquires like :meth:`acquire` on entry and releases on exit, also on
        exception or cancellation. Arguments (and ``nbytes <= capacity``) are
        checked here, at the call. The returned object is entered once.
        """
        ledger = self._ledger
        if (
            type(nbytes) is int
            and 0 <= nbytes <= ledger._capacity
            and priority is _NORMAL
            and key is None
            and timeout is None
            and evictable is False
            and on_evict is None
        ):
            return Allocation(ledger, None, nbytes, 50)
        nbytes, priority, timeout = _check_request(
            ledger._capacity, nbytes, key, priority, timeout, evictable, on_evict
        )
        allocation = Allocation(ledger, key, nbytes, priority, evictable, on_evict, timeout)
        if on_evict is not None:
            allocation._loop = _current_loop()  # None outside a loop: found at eviction
        return allocation

    # ------------------------------------------------------------ releasing

    def release(self, allocation_or_key: Allocation | str) -> bool:
        """Give bytes back by Allocation or key; False if already released or unknown.

        Idempotent and thread-safe; wakes waiters on their own event loops
        without blocking. Raises ``ValueError`` for an Allocation of another
        manager, ``TypeError`` for anything but an Allocation or a str.
        """
        if isinstance(allocation_or_key, Allocation):
            if allocation_or_key._owner is not self._ledger:
                raise ValueError(
                    f"allocation {allocation_or_key!r} belongs to another MemoryManager"
                )
            return self._ledger.release(allocation_or_key)
        if isinstance(allocation_or_key, str):
            return self._ledger.release_key(allocation_or_key)
        raise TypeError(
            "allocation_or_key must be an Allocation or a str, got "
            f"{type(allocation_or_key).__name__} {allocation_or_key!r}"
        )

    def _evicted(self, evicted: list[Request]) -> None:
        # Runs outside the ledger lock, in whichever thread caused the eviction.
        for allocation in evicted:
            callback = allocation._on_evict
            if callback is None:
                continue
            try:
                result = callback(allocation)
            except Exception:
                _log.exception("on_evict callback for %r failed", allocation)
                continue
            if inspect.isawaitable(result):
                loop = getattr(allocation, "_loop", None) or _current_loop()
                try:
                    if loop is None:
                        raise RuntimeError("no event loop to run it on")
                    loop.spawn(result)
                except RuntimeError as exc:
                    _log.error("async on_evict callback for %r not run: %s", allocation, exc)
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()

    # ------------------------------------------------------------- pressure

    def _on_pressure(self, event: PressureEvent) -> None:
        self._ledger.set_pressure(int(event.level), event.sample.available)

    def close(self) -> None:
        """Detach from the pressure monitor (idempotent); the budget keeps working without it.

        The last pressure level stops applying: headroom limits are lifted
        and waiters they held back are served.
        """
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()
            self._ledger.set_pressure(0, None)
        self._monitor = None

    # ---------------------------------------------------- seed 000 surface

    async def allocate(
        self,
        key: str,
        size: int,
        *,
        priority: int = Priority.NORMAL,
        evictable: bool = False,
        on_evict: Callable[[Allocation], object] | None = None,
    ) -> bool:
        """Seed 000: grant ``size`` bytes under ``key`` now, else optimize and retry once.

        Never waits for other holders. Returns False when it still does not
        fit. Raises ``MemoryAllocationError`` if ``size > capacity`` and
        ``ValueError`` if ``key`` is already held.
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} {key!r}")
        kwargs: dict[str, Any] = {
            "key": key,
            "priority": priority,
            "evictable": evictable,
            "on_evict": on_evict,
        }
        if self.try_acquire(size, **kwargs) is not None:
            return True
        await self.optimize()
        return self.try_acquire(size, **kwargs) is not None

    def deallocate(self, key: str) -> bool:
        """Seed 000: release the allocation named ``key``; False if none is live."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {type(key).__name__} {key!r}")
        return self._ledger.release_key(key)

    def register_cleanup_callback(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` (sync or async) in every :meth:`optimize`.

        An int it returns counts as bytes freed. Raises ``TypeError`` if not callable.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._cleanups.append(callback)

    async def optimize(self, *, below: int = Priority.NORMAL, needed: int | None = None) -> int:
        """Free memory; return the bytes freed.

        In order: evict every evictable allocation of priority ``< below``
        (seed 000's "low-priority items"), run cleanup callbacks (and the GC
        controller's), collect garbage, then ``malloc_trim(0)`` where glibc has
        it. Bytes freed = evicted bytes + what callbacks report + the drop of
        this process' RSS across collection and trim. Raises
        ``MemoryOptimizationError`` if ``needed`` is given and fewer bytes than
        that are available in the budget afterwards.
        """
        below = _check_priority(below)
        if needed is not None:
            check_int("needed", needed)
        freed = sum(a.nbytes for a in self._ledger.evict_below(below))
        for callback in list(self._cleanups):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                _log.exception("cleanup callback %r failed", callback)
                continue
            if isinstance(result, int) and not isinstance(result, bool) and result > 0:
                freed += result
        controller = self._gc_controller
        if controller is not None:
            try:
                reported = await controller.run_cleanup()
                if isinstance(reported, int) and reported > 0:
                    freed += reported
            except Exception:
                _log.exception("GC controller cleanup failed")
        before = _rss()
        if controller is not None:
            controller.collect_with_stats(2)
        else:
            gc.collect()
        malloc_trim()
        after = _rss()
        if before is not None and after is not None and before > after:
            freed += before - after
        if needed is not None and self.available_memory < needed:
            raise MemoryOptimizationError(
                f"optimize freed {freed} bytes but needed={needed} bytes are not available "
                f"(available: {self.available_memory})"
            )
        return freed

    def get_stats(self) -> MemoryStats:
        """A consistent snapshot of the budget now."""
        return MemoryStats._from_row(self._ledger.snapshot())

    def get_stats_history(self) -> list[MemoryStats]:
        """Recorded snapshots, oldest first: at most one per 10 ms, at most ``history``."""
        return [MemoryStats._from_row(row) for row in self._ledger.history()]

    def clear_stats_history(self) -> None:
        """Forget the recorded snapshots (peaks and counters are kept)."""
        self._ledger.clear_history()

    @property
    def current_usage(self) -> int:
        """Bytes granted now."""
        return self._ledger.used

    @property
    def available_memory(self) -> int:
        """Bytes not granted now (``capacity - current_usage``)."""
        return self._ledger.capacity - self._ledger.used

    @property
    def capacity(self) -> int:
        """Total bytes this budget may grant."""
        return self._ledger.capacity

    @property
    def waiters(self) -> int:
        """Requests queued now."""
        return self._ledger.waiting

    def __repr__(self) -> str:
        return (
            f"<MemoryManager used={self._ledger.used} capacity={self._ledger.capacity} "
            f"waiters={self._ledger.waiting}>"
        )


def _default_capacity(config: WardenConfig | None) -> int:
    if config is None:
        from .config import WardenConfig

        config = WardenConfig()
    if config.capacity is not None:
        return config.capacity
    from .probes import detect_memory_limit

    return max(int(detect_memory_limit() * config.max_memory_percent / 100), 1)


_process: Any = None


def _rss() -> int | None:
    global _process
    try:
        import psutil

        if _process is None:
            _process = psutil.Process()
        return int(_process.memory_info().rss)
    except Exception:  # psutil missing or the platform refuses: report no drop
        return None
