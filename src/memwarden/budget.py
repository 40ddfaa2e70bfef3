"""The awaitable memory budget: reserve bytes before you use them.

A :class:`MemoryManager` holds a byte capacity. Tasks ask for bytes with
``acquire`` / ``reserve`` (waiting fairly when the budget is full),
``try_acquire`` (never waits) or the seed-compatible ``allocate``, and give
them back with ``release``. Waiters are served by priority, FIFO within a
priority, without letting small requests starve a large one; evictable
allocations of lower priority make room for higher-priority requests. With a
pressure monitor attached, grants also respect the memory the process (or its
container) really uses: reserved bytes are *managed*, whatever else the probe
measures is *unmanaged*, and a grant must fit ``limit * critical -
unmanaged_recent`` as well as the capacity (see ``memwarden._grants``).

Every decision is taken by the synchronous ledger in ``memwarden._grants``
under one lock; this module only parks waiters, applies timeouts, handles
cancellation and runs callbacks, in the shape of trio's and anyio's
``CapacityLimiter``: checkpoint, try the ledger's non-waiting grant, else park
until the ledger hands the grant over; on cancellation undo through the
ledger. ``release()`` is thread-safe and never blocks on the event loop.

``acquire`` / ``reserve`` are checkpoints, as in anyio and trio: a cancelled
scope is honoured even when the bytes are free, and other tasks get to run.
``MemoryManager(fast_acquire=True)`` opts out, like anyio's
``Lock(fast_acquire=True)``: an acquire that fits at once then neither yields
nor checks for cancellation (as ``asyncio.Semaphore``). ``try_acquire`` never
yields.
"""

from __future__ import annotations

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
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from . import _backend
from ._grants import HistoryRow, Ledger, Request
from ._rss import process_rss
from ._shared import ReservationTable
from ._validate import check_int, check_timeout
from .errors import AllocationTimeoutError, MemoryOptimizationError

if TYPE_CHECKING:
    from .config import WardenConfig
    from .gc import GCController
    from .pressure import PressureMonitor
    from .probes import MemorySample

__all__ = ["Allocation", "MemoryManager", "MemoryStats", "Priority"]

_log = logging.getLogger("memwarden.budget")


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
    With a monitor: ``managed`` is the reserved bytes (``current_usage``),
    ``unmanaged`` the largest recent measured use beyond them, ``limit`` the
    sample's limit and ``headroom`` the bytes grantable now under the measured
    rule; without one the last three are None. ``evictable`` is the part of
    ``managed`` held by evictable reservations (in a Warden: the caches).
    ``others_reserved`` is what the other processes sharing this budget's
    reservation table (workers of the same container) have reserved.
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
    managed: int = 0
    unmanaged: int | None = None
    limit: int | None = None
    evictable: int = 0
    others_reserved: int = 0

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
            managed=row.used,
            unmanaged=row.unmanaged,
            limit=row.limit,
            evictable=row.evictable,
            others_reserved=row.others,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


def _check_priority(name: str, priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"{name} must be an int, got {type(priority).__name__} {priority!r}")
    return int(priority)


def _timeout_error(nbytes: int, timeout: float | None) -> AllocationTimeoutError:
    return AllocationTimeoutError(f"nbytes={nbytes} could not be granted within timeout={timeout}s")


async def _run_on_evict(awaitable: Awaitable[object], allocation: Request) -> None:
    try:
        await awaitable
    except Exception:
        _log.exception("async on_evict callback for %r failed", allocation)


class Allocation(Request):
    """Bytes granted by a :class:`MemoryManager`, held until released.

    Read-only fields: ``key``, ``nbytes``, ``priority``, ``evictable``,
    ``released``. ``release()`` is idempotent and thread-safe; ``async with
    allocation:`` releases on exit (also on exception or cancellation).
    """

    __slots__ = ()

    async def __aenter__(self) -> Allocation:
        # An allocation from acquire() already holds its bytes: the block just
        # holds them. A reservation from reserve() is acquired here.
        ledger = self._owner
        if not ledger.held(self):
            await ledger.owner._acquire(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner.release(self)


class MemoryManager:
    """An awaitable, fair, priority-aware byte budget (seed 000's MemoryManager).

    ``capacity`` is the number of bytes it may grant; ``None`` takes
    ``config.capacity``, else with a monitor ``limit * critical - unmanaged``
    from the first sample (recomputed only when the limit changes), else
    ``detect_memory_limit() * max_memory_percent / 100``. ``monitor`` couples
    grants to measured memory (a :class:`~memwarden.pressure.PressureMonitor`:
    every sample updates the measured room and wakes waiters it now admits; a
    CRITICAL level evicts evictable allocations); ``history`` bounds the stats
    history (0 disables it) and ``clock`` stamps it (tests pass a ManualClock);
    ``fast_acquire=True`` makes an acquire that fits at once skip its
    checkpoint; ``gc_controller`` is used by :meth:`optimize`; ``shared`` (a
    reservation table of the memory cgroup, which a Warden opens itself) makes
    the other processes' reserved bytes count here too. Timeouts follow
    the event loop's clock. Raises ``TypeError``/``ValueError`` naming the
    argument for bad input, and what the probe raises when the monitor has no
    sample yet and taking one fails.

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
        fast_acquire: bool = False,
        config: WardenConfig | None = None,
        gc_controller: GCController | None = None,
        shared: ReservationTable | None = None,
    ) -> None:
        if config is not None:
            from .config import WardenConfig

            if not isinstance(config, WardenConfig):
                raise TypeError(
                    f"config must be a WardenConfig, got {type(config).__name__} {config!r}"
                )
        if monitor is not None and not callable(getattr(monitor, "add_sample_listener", None)):
            raise TypeError(
                f"monitor must be a PressureMonitor (it needs add_sample_listener), got "
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
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        if fast_acquire is not False and fast_acquire is not True:
            raise TypeError(
                f"fast_acquire must be a bool, got {type(fast_acquire).__name__} {fast_acquire!r}"
            )
        follow = False
        if capacity is None:
            if monitor is not None and (config is None or config.capacity is None):
                follow = True
                capacity = 1  # set by the first sample, below
            else:
                capacity = _default_capacity(config)
        else:
            check_int("capacity", capacity, minimum=1)
        if shared is not None and not isinstance(shared, ReservationTable):
            raise TypeError(
                f"shared must be a ReservationTable, got {type(shared).__name__} {shared!r}"
            )
        self._ledger = Ledger(
            capacity,
            clock=clock,
            history=history,
            on_evicted=self._evicted,
            owner=self,
            shared=shared,
        )
        self._fast_acquire = fast_acquire
        self._clock = clock
        self._wait_listeners: list[Callable[[float, bool], object]] = []
        self._gc_controller = gc_controller
        self._cleanups: list[Callable[[], object]] = []
        self._monitor = monitor
        self._detach: Callable[[], None] | None = None
        # Set while this thread runs the sample listener: a grant made from an
        # on_evict callback there must not sample again (the monitor's lock is held).
        self._observing = threading.local()
        if monitor is not None:
            if follow:
                self._ledger.follow_samples()
            thresholds = monitor.thresholds
            self._critical = float(thresholds.critical)
            self._high = float(thresholds.high)
            self._detach = monitor.add_sample_listener(self._on_sample)
            sample = monitor.last_sample
            if sample is None:
                monitor.sample_now()  # calls _on_sample
            else:
                self._on_sample(sample)

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

        A checkpoint (unless ``fast_acquire``): a cancelled scope raises here
        even when the bytes are free. Raises ``MemoryAllocationError`` at once
        if ``nbytes > capacity``, ``AllocationTimeoutError`` after ``timeout``
        seconds, ``ValueError`` for a negative size or a key already held.
        ``nbytes == 0`` is granted without waiting. Cancelled or timed out, it
        leaves nothing held and nothing queued.
        """
        allocation = self._request(nbytes, key, priority, timeout, evictable, on_evict)
        await self._acquire(allocation)
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
        """Grant ``nbytes`` now or return None; never waits, never yields, never jumps the queue.

        Evicts lower-priority evictable allocations when that makes it fit.
        ``timeout`` is accepted for symmetry and ignored. Raises like
        :meth:`acquire`. Thread-safe.
        """
        allocation = self._request(nbytes, key, priority, timeout, evictable, on_evict)
        if self._monitor is not None:
            self._refresh(nbytes)
        return allocation if self._ledger.try_grant(allocation) else None

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

        Acquires like :meth:`acquire` on entry (a checkpoint) and releases on
        exit, also on exception or cancellation. Arguments (and ``nbytes <=
        capacity``) are checked here, at the call. The returned object is
        entered once.
        """
        return self._request(nbytes, key, priority, timeout, evictable, on_evict)

    def _request(
        self,
        nbytes: int,
        key: str | None,
        priority: int,
        timeout: float | None,
        evictable: bool,
        on_evict: Callable[[Allocation], object] | None,
        size: str = "nbytes",
    ) -> Allocation:
        """Validate one request and make its (PENDING) Allocation; ``size`` names ``nbytes``."""
        if type(nbytes) is not int or nbytes < 0:
            check_int(size, nbytes)
        self._ledger.check_size(nbytes, size)
        if priority is _NORMAL:
            priority = 50
        elif type(priority) is not int:
            priority = _check_priority("priority", priority)
        if key is not None and type(key) is not str:
            raise TypeError(f"key must be a str or None, got {type(key).__name__} {key!r}")
        if timeout is not None:
            timeout = check_timeout("timeout", timeout)
        if evictable is not False and evictable is not True:
            raise TypeError(
                f"evictable must be a bool, got {type(evictable).__name__} {evictable!r}"
            )
        if on_evict is None:
            return Allocation(self._ledger, key, nbytes, priority, evictable, None, timeout)
        if not callable(on_evict):
            raise TypeError(
                f"on_evict must be callable, got {type(on_evict).__name__} {on_evict!r}"
            )
        if not evictable:
            raise ValueError(
                f"on_evict={on_evict!r} was given but evictable=False: it could never be called"
            )
        allocation = Allocation(self._ledger, key, nbytes, priority, evictable, on_evict, timeout)
        # An async on_evict runs on the loop that asked (None outside one: found at eviction).
        allocation._home = _backend.current_or_none()
        return allocation

    def add_wait_listener(self, callback: Callable[[float, bool], object]) -> Callable[[], None]:
        """Call ``callback(seconds, granted)`` when each ``acquire``/``reserve`` ends.

        ``seconds`` is how long it waited for its bytes (0.0 when granted at
        once; by the manager's ``clock``), ``granted`` whether it got them
        (False after a timeout or a cancellation). Runs on the acquiring task,
        outside every lock; a callback that raises is logged and removed.
        Returns a function that removes it (idempotent). Raises ``TypeError``
        for a non-callable.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        listeners = self._wait_listeners
        listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(callback)

        return remove

    def _waited(self, seconds: float, granted: bool) -> None:
        for callback in list(self._wait_listeners):
            try:
                callback(seconds, granted)
            except Exception:
                _log.exception("budget wait listener %r failed; removed", callback)
                with contextlib.suppress(ValueError):
                    self._wait_listeners.remove(callback)

    async def _acquire(self, allocation: Allocation) -> None:
        """Try the ledger's grant, then checkpoint; else park until it hands one over."""
        if not self._wait_listeners:
            await self._acquire_once(allocation)
            return
        started = self._clock()
        try:
            await self._acquire_once(allocation)
        except BaseException:
            self._waited(self._clock() - started, False)
            raise
        self._waited(self._clock() - started, True)

    async def _acquire_once(self, allocation: Allocation) -> None:
        ledger = self._ledger
        backend = _backend.current()
        if self._monitor is not None:
            self._refresh(allocation._nbytes)
        if ledger.try_grant(allocation):
            if not self._fast_acquire:
                # The checkpoint after the grant, as trio's _sync.py: a cancelled
                # scope raises here and the bytes go back through the ledger.
                try:
                    await backend.checkpoint()
                except BaseException:
                    ledger.cancel(allocation)
                    raise
            return
        limit = allocation._timeout
        if limit is not None and limit <= 0:  # timeout=0: only what can be granted now
            ledger.count_timeout()
            raise _timeout_error(allocation.nbytes, limit)
        # Parking is the checkpoint of a contended acquire.
        parking = backend.park()
        if ledger.enqueue(allocation, parking.wake):
            return
        try:
            if limit is None or math.isinf(limit):
                await parking.wait()  # only a grant wakes it
                return
            with anyio.move_on_after(limit):
                await parking.wait()
        except BaseException:
            # Cancelled: leave the queue, or hand a grant that raced us to the next waiter.
            ledger.cancel(allocation)
            raise
        # Woken, or out of time: the ledger decides which won.
        if not ledger.settle(allocation):
            raise _timeout_error(allocation.nbytes, limit)

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
                    f"allocation_or_key={allocation_or_key!r} belongs to another MemoryManager"
                )
            return self._ledger.release(allocation_or_key)
        if isinstance(allocation_or_key, str):
            return self._ledger.release_key(allocation_or_key)
        raise TypeError(
            "allocation_or_key must be an Allocation or a str, got "
            f"{type(allocation_or_key).__name__} {allocation_or_key!r}"
        )

    def split(
        self,
        allocation: Allocation,
        nbytes: int,
        *,
        key: str | None = None,
        priority: int = Priority.NORMAL,
        evictable: bool = False,
        on_evict: Callable[[Allocation], object] | None = None,
    ) -> Allocation | None:
        """Move ``nbytes`` of a held allocation into a new one, at once, without waiting.

        The reserved total does not change, so this never waits and never
        fails for lack of room: a request that reserved its result's bytes up
        front can hand them to whatever keeps the result (a session, a cache).
        Returns the new Allocation, or None (nothing changed) when
        ``allocation`` is no longer held or holds fewer than ``nbytes``.
        Raises ``TypeError``/``ValueError`` naming the argument for a bad size,
        key or priority, ``ValueError`` for a key already held or an allocation
        of another manager. Thread-safe.
        """
        if not isinstance(allocation, Allocation):
            raise TypeError(
                f"allocation must be an Allocation, got {type(allocation).__name__} {allocation!r}"
            )
        if allocation._owner is not self._ledger:
            raise ValueError(f"allocation={allocation!r} belongs to another MemoryManager")
        target = self._request(nbytes, key, priority, None, evictable, on_evict)
        return target if self._ledger.split(allocation, target) else None

    def resize(self, allocation: Allocation, nbytes: int) -> bool:
        """Make a held allocation hold ``nbytes``; return whether it does now.

        Shrinking always succeeds and serves waiters with the bytes it frees.
        Growing succeeds only when the extra bytes fit now, fairly, as for
        :meth:`try_acquire` (never past a queued waiter of equal or higher
        priority; lower-priority evictable allocations may be evicted);
        otherwise it returns False and changes nothing. False too for an
        allocation no longer held (released or evicted). Raises ``TypeError`` /
        ``ValueError`` naming ``nbytes`` for a bad size,
        ``MemoryAllocationError`` for ``nbytes > capacity`` and ``ValueError``
        for an allocation of another manager. Thread-safe; never waits.
        """
        if not isinstance(allocation, Allocation):
            raise TypeError(
                f"allocation must be an Allocation, got {type(allocation).__name__} {allocation!r}"
            )
        if allocation._owner is not self._ledger:
            raise ValueError(f"allocation={allocation!r} belongs to another MemoryManager")
        check_int("nbytes", nbytes)
        if self._monitor is not None:
            self._refresh(nbytes - allocation._nbytes)
        return self._ledger.resize(allocation, nbytes)

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
                home = getattr(allocation, "_home", None) or _backend.current_or_none()
                try:
                    if home is None:
                        raise RuntimeError("no event loop to run it on")
                    home.spawn(_run_on_evict, result, allocation)
                except RuntimeError as exc:
                    _log.error("async on_evict callback for %r not run: %s", allocation, exc)
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()

    # ------------------------------------------------------------- pressure

    def _on_sample(self, sample: MemorySample) -> None:
        # Runs inside monitor.sample_now(), under the monitor's lock.
        monitor = self._monitor
        if monitor is None:
            return
        observing = self._observing
        observing.active = True
        try:
            self._ledger.observe(
                sample.used,
                sample.limit,
                int(monitor.level),
                critical=self._critical,
                high=self._high,
            )
        finally:
            observing.active = False

    def _refresh(self, nbytes: int) -> None:
        """Sample again first if the ledger says the newest sample is too old for this grant."""
        monitor = self._monitor
        if (
            monitor is None
            or not self._ledger.needs_sample(nbytes)
            or getattr(self._observing, "active", False)
        ):
            return
        try:
            monitor.sample_now()  # its listener updates the ledger
        except Exception:
            _log.warning("re-sampling memory before a grant failed", exc_info=True)

    def close(self) -> None:
        """Detach from the pressure monitor (idempotent); the budget keeps working without it.

        The measured rule stops applying: only the capacity (as it stands)
        limits grants, and waiters the measured room held back are served.
        """
        detach, self._detach = self._detach, None
        self._monitor = None
        if detach is not None:
            detach()
            self._ledger.forget_samples()
        self._ledger.close_shared()

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
        allocation = self._request(size, key, priority, None, evictable, on_evict, size="size")
        if self._monitor is not None:
            self._refresh(size)
        if self._ledger.try_grant(allocation):
            return True
        await self.optimize()
        return self._ledger.try_grant(allocation)

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
            raise TypeError(
                f"callback must be callable, got {type(callback).__name__} {callback!r}"
            )
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
        below = _check_priority("below", below)
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
        before = process_rss()
        if controller is not None:
            controller.collect_with_stats(2)
        else:
            gc.collect()
        from ._native import malloc_trim  # deferred: ctypes is a cost of first use

        malloc_trim()
        after = process_rss()
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
