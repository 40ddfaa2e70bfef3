"""The budget's bookkeeping: a synchronous state machine behind one lock.

:class:`Ledger` decides every grant, eviction and hand-back of a
:class:`~memwarden.budget.MemoryManager`; the async layer in ``budget.py`` only
parks waiters, applies timeouts and runs hooks. Nothing here awaits, so every
method is fast, thread-safe and testable directly.

A :class:`Request` is one ask for bytes through its whole life: PENDING (made,
not yet submitted), QUEUED (waiting), LIVE (granted, holding bytes), RELEASED
(given back or evicted) or ABANDONED (left the queue without a grant). The
public ``Allocation`` is a subclass, so the uncontended path creates one object.

Fairness follows Go's ``semaphore.Weighted``, extended with priorities:
waiters are served highest priority first and FIFO within a priority; the head
of the queue is never overtaken by a later request of the same or lower
priority, however small. A new request is granted at once only when no waiter
of equal or higher priority is queued (no barging). Zero-byte requests take
nothing from anyone and are granted at once.

Measured memory (Dask's managed/unmanaged model): when a pressure monitor
feeds samples through :meth:`Ledger.observe`, ``unmanaged = max(0, measured
used - reserved)`` and a grant must also fit ``limit * critical -
unmanaged_recent``, where ``unmanaged_recent`` is the largest unmanaged value
seen over the last :data:`RECENT_WINDOW` seconds (and at least the last
:data:`RECENT_SAMPLES` samples). The two bounds fold into one ceiling, so the
grant decision costs the same with or without a monitor.

Several processes (``shared=``, a :class:`~memwarden._shared.ReservationTable`):
the other processes' reserved bytes count as reserved here too, in both
``unmanaged`` and the room. The ledger's lock then also takes the table's
cross-process lock, reads the others' figure on entry and publishes this
ledger's reserved bytes on exit, so every decision sees what every process
has granted.

Side effects that may run user code (waking a parked task, ``on_evict``) never
run under the lock: each mutating method collects them and runs them after the
lock is released.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import MemoryAllocationError

if TYPE_CHECKING:
    from ._shared import ReservationTable

__all__ = ["HistoryRow", "Ledger", "Request"]

# Pressure levels as plain ints, so the core does not depend on the monitor.
_CRITICAL = 3

#: What :meth:`Ledger._admit` returns when it evicted nobody (shared, never mutated).
_NOBODY: tuple[Request, ...] = ()

PENDING = 0
QUEUED = 1
LIVE = 2
RELEASED = 3
ABANDONED = 4

#: Stats history keeps at most one entry per this many seconds (of ``clock``).
HISTORY_INTERVAL = 0.01

#: ``unmanaged_recent`` is the largest unmanaged value over this many seconds...
RECENT_WINDOW = 2.0
#: ...and over at least this many of the latest samples.
RECENT_SAMPLES = 3
#: A sample taken while at most this share of the limit can be granted but not
#: yet touched measures unmanaged memory nearly exactly; its value is kept as a
#: floor for ``unmanaged_recent`` (see :meth:`Ledger.observe`).
SETTLED_SHARE = 0.05
#: A sample older than this (seconds of ``clock``) is re-taken before a grant
#: that would end above the HIGH line.
STALE_AFTER = 0.05


class Request:
    """One ask for bytes, from submission to release (see the module docstring).

    Fields are read through properties: the ledger's accounting depends on them.
    """

    __slots__ = (
        "__weakref__",
        "_evictable",
        "_home",
        "_key",
        "_nbytes",
        "_on_evict",
        "_owner",
        "_priority",
        "_state",
        "_timeout",
        "_wake",
    )

    _home: Any  # the event loop backend that runs an async on_evict (set when needed)
    _wake: Callable[[], None]  # set when the request parks

    def __init__(
        self,
        owner: Ledger,
        key: str | None,
        nbytes: int,
        priority: int,
        evictable: bool = False,
        on_evict: Callable[[Any], object] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._owner = owner
        self._key = key
        self._nbytes = nbytes
        self._priority = priority
        self._evictable = evictable
        self._on_evict = on_evict
        self._timeout = timeout
        self._state = PENDING
        # _home and _wake stay unset until the request needs a loop or parks.

    @property
    def key(self) -> str:
        """The allocation's key; generated on first access when none was given."""
        key = self._key
        return key if key is not None else self._owner.name(self)

    @property
    def nbytes(self) -> int:
        """How many bytes this allocation holds (or held, or asks for)."""
        return self._nbytes

    @property
    def priority(self) -> int:
        """The priority the bytes were requested with."""
        return self._priority

    @property
    def evictable(self) -> bool:
        """Whether the manager may evict this allocation for higher-priority requests."""
        return self._evictable

    @property
    def released(self) -> bool:
        """True once it holds no bytes and never will again (released, evicted, abandoned)."""
        return self._state >= RELEASED

    @property
    def on_evict(self) -> Callable[[Any], object] | None:
        """The callback run when this allocation is evicted, if any."""
        return self._on_evict

    def release(self) -> bool:
        """Give the bytes back; False if not held (already released, evicted). Thread-safe."""
        return self._owner.release(self)

    def __repr__(self) -> str:
        key = self._key if self._key is not None else "<unnamed>"
        state = ("pending", "queued", "live", "released", "abandoned")[self._state]
        return (
            f"<{type(self).__name__} key={key!r} nbytes={self._nbytes} "
            f"priority={self._priority}{' evictable' if self._evictable else ''} {state}>"
        )


class HistoryRow(NamedTuple):
    """A snapshot of every ledger counter (a stats-history entry)."""

    timestamp: float
    capacity: int
    used: int
    peak: int
    allocations: int
    waiters: int
    waiters_peak: int
    granted: int
    evictions: int
    evicted_bytes: int
    timeouts: int
    cancelled: int
    headroom: int | None
    level: int
    unmanaged: int | None
    limit: int | None
    evictable: int = 0
    others: int = 0


class Ledger:
    """Used bytes, live allocations and per-priority FIFO waiter queues, under one lock.

    Raises ``MemoryAllocationError`` when a request exceeds the capacity and
    ``ValueError`` for a duplicate live (or queued) key. Thread-safe.
    """

    def __init__(
        self,
        capacity: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        history: int = 1000,
        on_evicted: Callable[[list[Request]], None] | None = None,
        owner: Any = None,
        shared: ReservationTable | None = None,
    ) -> None:
        self.owner: Any = owner  # the MemoryManager this ledger keeps the books of
        self._shared = shared
        self._others = 0  # other processes' reserved bytes (shared tables only)
        self._lock: threading.Lock | _SharedLock = (
            threading.Lock() if shared is None else _SharedLock(shared, self)
        )
        self._capacity = capacity
        # What grants are checked against: the capacity, lowered to the measured
        # room while samples come in (see observe()).
        self._ceiling = capacity
        self._clock = clock
        self._on_evicted = on_evicted
        self._used = 0
        self._peak = 0
        self._dropped = 0  # released or evicted; live allocations = granted - dropped
        # Only keyed requests are indexed by key, and only evictable ones in
        # _evictable: anonymous plain grants need nothing beyond the counters.
        self._keys: dict[str, Request] = {}
        self._evictable: dict[Request, None] = {}
        self._evictable_bytes = 0
        self._queues: dict[int, OrderedDict[Request, None]] = {}
        self._order: list[int] = []  # priorities with waiters, highest first
        self._nwaiting = 0
        self._waiters_peak = 0
        self._level = 0
        # The measured view (see observe()); _limit is None until a sample comes.
        self._limit: int | None = None
        self._critical = 0.95
        self._high = 0.85
        self._critical_line = 0
        self._high_line = 0
        self._unmanaged_recent = 0
        self._unmanaged_floor = 0
        # (time, bytes ever granted, others' reserved) at each sample of the window.
        self._marks: deque[tuple[float, int, int]] = deque()
        self._granted_bytes = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._sampled_at = -float("inf")
        self._auto_capacity = False
        self._serial = itertools.count(1)
        self._granted = 0
        self._evictions = 0
        self._evicted_bytes = 0
        self._timeouts = 0
        self._cancelled = 0
        self._history: deque[HistoryRow] = deque(maxlen=max(history, 1))
        self._history_enabled = history > 0
        self._next_history = -float("inf") if history > 0 else float("inf")
        self._recorded_changes = 0  # granted + dropped when history last recorded

    # ----------------------------------------------------------------- reads

    @property
    def capacity(self) -> int:
        """Total bytes the ledger may grant."""
        return self._capacity

    @property
    def used(self) -> int:
        """Bytes currently granted."""
        return self._used

    @property
    def peak(self) -> int:
        """Highest ``used`` ever reached (exact: updated on every grant)."""
        return self._peak

    @property
    def waiting(self) -> int:
        """Requests queued now."""
        return self._nwaiting

    @property
    def headroom(self) -> int | None:
        """Bytes grantable now under the measured rule (None without samples)."""
        if self._limit is None:
            return None
        return max(self._ceiling - self._used, 0)

    @property
    def level(self) -> int:
        """The pressure level reported with the last :meth:`observe`."""
        return self._level

    @property
    def unmanaged(self) -> int | None:
        """``unmanaged_recent``: the largest recent unmanaged value (None without samples)."""
        return self._unmanaged_recent if self._limit is not None else None

    @property
    def limit(self) -> int | None:
        """The limit of the last sample observed (None without samples)."""
        return self._limit

    def snapshot(self) -> HistoryRow:
        """A consistent snapshot of every counter, stamped with ``time.time()``."""
        with self._lock:
            return self._row()

    def indexed(self) -> list[Request]:
        """Keyed or evictable live requests (anonymous plain ones are not indexed)."""
        with self._lock:
            found = dict.fromkeys(r for r in self._keys.values() if r._state == LIVE)
            found.update(self._evictable)
            return list(found)

    def queued(self) -> list[Request]:
        """Queued requests in service order."""
        with self._lock:
            return [r for p in self._order for r in self._queues[p]]

    def history(self) -> list[HistoryRow]:
        """Recorded rows, oldest first; includes the latest state if it changed since."""
        with self._lock:
            if self._history_enabled and self._granted + self._dropped != self._recorded_changes:
                now = self._clock()
                if now < self._next_history and self._history:
                    self._history.pop()  # same 10 ms window: keep its latest state
                self._record(now)
            return list(self._history)

    def clear_history(self) -> None:
        """Forget every recorded row."""
        with self._lock:
            self._history.clear()
            self._recorded_changes = self._granted + self._dropped
            if self._history_enabled:
                self._next_history = -float("inf")

    # ------------------------------------------------------------- requests

    def check_size(self, nbytes: int, name: str = "nbytes") -> None:
        """Raise ``MemoryAllocationError`` if ``nbytes`` exceeds the capacity.

        Such a request could never be granted; ``name`` is the argument the
        caller passed it as.
        """
        if nbytes > self._capacity:
            raise _too_large(name, nbytes, self._capacity)

    def held(self, request: Request) -> bool:
        """Whether ``request`` holds bytes now (granted, not yet released or evicted)."""
        return request._state == LIVE

    def try_grant(self, request: Request) -> bool:
        """Grant a PENDING request now if fair and possible (evicting if needed).

        The non-waiting form of :meth:`enqueue`: returns False and leaves it
        PENDING when it would have to wait. Raises ``MemoryAllocationError``
        for ``nbytes > capacity``, ``ValueError`` for a key already live or
        queued, ``RuntimeError`` if not PENDING.
        """
        lock = self._lock
        # acquire/release rather than `with`: it is measurably cheaper on this hot path.
        lock.acquire()
        try:
            self._check_new(request)
            evicted = self._admit(request)
            if evicted is None:
                return False
            self._grant(request)
            if not evicted:
                return True
            # Eviction may free more than this request needed: serve the queue.
            granted, more = self._pump()
        finally:
            lock.release()
        self._after(granted, [*evicted, *more])
        return True

    def enqueue(self, request: Request, wake: Callable[[], None]) -> bool:
        """Grant a PENDING request now if :meth:`try_grant` would, else queue it.

        Returns True if granted. Atomic: no release can slip between the check
        and the queueing. ``wake`` is called (outside the lock, from whichever
        thread grants it) once a queued request is granted. Raises like
        :meth:`try_grant`.
        """
        lock = self._lock
        lock.acquire()
        try:
            self._check_new(request)
            evicted = self._admit(request)
            if evicted is None:
                self._queue(request, wake)
                return False
            self._grant(request)
            if not evicted:
                return True
            granted, more = self._pump()
        finally:
            lock.release()
        self._after(granted, [*evicted, *more])
        return True

    def cancel(self, request: Request) -> None:
        """Its task was cancelled: dequeue it, or hand back the grant that raced it.

        Either way the next waiters are served with whatever that frees.
        Idempotent; does nothing to a request already released or abandoned.
        """
        with self._lock:
            state = request._state
            if state == QUEUED:
                self._dequeue(request)
            elif state == LIVE:
                self._drop(request)
            else:
                return
            self._cancelled += 1
            granted, evicted = self._pump()
        self._after(granted, evicted)

    def settle(self, request: Request) -> bool:
        """Its wait ended without cancellation (its timeout expired, or it was woken).

        Returns True if it was granted (the grant won any race with the
        timeout); otherwise dequeues it, counts a timeout and returns False.
        """
        with self._lock:
            state = request._state
            if state != QUEUED:
                # LIVE, or RELEASED when evicted right after its grant: it was granted.
                return state != ABANDONED
            self._dequeue(request)
            self._timeouts += 1
            granted, evicted = self._pump()
        self._after(granted, evicted)
        return False

    def count_timeout(self) -> None:
        """Count a request that timed out without ever queueing (``timeout=0``)."""
        with self._lock:
            self._timeouts += 1

    # -------------------------------------------------------------- releases

    def release(self, request: Request) -> bool:
        """Return a LIVE request's bytes; False if it holds none (released, evicted...)."""
        lock = self._lock
        lock.acquire()
        try:
            if request._state != LIVE:
                return False
            self._drop(request)
            if not self._order:
                return True
            granted, evicted = self._pump()
        finally:
            lock.release()
        self._after(granted, evicted)
        return True

    def release_key(self, key: str) -> bool:
        """Release the live request named ``key``; False when there is none."""
        with self._lock:
            request = self._keys.get(key)
            if request is None or request._state != LIVE:
                return False
            self._drop(request)
            if not self._order:
                return True
            granted, evicted = self._pump()
        self._after(granted, evicted)
        return True

    def name(self, request: Request) -> str:
        """Give an anonymous request its key on first use (indexed while live or queued)."""
        with self._lock:
            key = request._key
            if key is None:
                key = f"alloc-{next(self._serial)}"
                while key in self._keys:
                    key = f"alloc-{next(self._serial)}"
                request._key = key
                if request._state in (QUEUED, LIVE):
                    self._keys[key] = request
            return key

    # ------------------------------------------------------------- resizing

    def resize(self, request: Request, nbytes: int) -> bool:
        """Change a LIVE request's bytes to ``nbytes``; False if refused or not held.

        Shrinking always succeeds and serves waiters with what it frees.
        Growing succeeds only when the extra bytes could be granted now to a
        new request of the same priority (no barging past a queued equal or
        higher priority; lower-priority evictables may be evicted); otherwise
        nothing changes. Raises ``MemoryAllocationError`` for ``nbytes >
        capacity``.
        """
        with self._lock:
            if nbytes > self._capacity:
                raise _too_large("nbytes", nbytes, self._capacity)
            if request._state != LIVE:
                return False
            extra = nbytes - request._nbytes
            if not extra:
                return True
            evicted: list[Request] | tuple[Request, ...] = _NOBODY
            if extra > 0:
                order = self._order
                if order and order[0] >= request._priority:
                    return False
                if self._used + extra > self._ceiling:
                    victims = self._evict_for(extra, request._priority)
                    if victims is None:
                        return False
                    evicted = victims
            request._nbytes = nbytes
            used = self._used = self._used + extra
            if extra > 0:
                self._granted_bytes += extra
            if used > self._peak:
                self._peak = used
            if request._evictable:
                self._evictable_bytes += extra
            now = self._clock()
            if now >= self._next_history:
                self._record(now)
            if extra > 0 and not evicted:
                return True
            granted, more = self._pump() if self._order else ([], [])
        self._after(granted, [*evicted, *more])
        return True

    def split(self, source: Request, target: Request) -> bool:
        """Move ``target.nbytes`` of a LIVE ``source`` into the PENDING ``target``, granting it.

        Nothing waits and the reserved total does not change, so no rule is
        consulted beyond the target's key and size. False (nothing changed)
        when ``source`` is not held or holds fewer bytes. Raises like
        :meth:`try_grant` for the target (key held, size over capacity, not
        PENDING).
        """
        with self._lock:
            self._check_new(target)
            nbytes = target._nbytes
            if source._state != LIVE or source._nbytes < nbytes:
                return False
            source._nbytes -= nbytes
            if source._evictable:
                self._evictable_bytes -= nbytes
            self._used -= nbytes
            self._granted_bytes -= nbytes  # moved, not newly granted: already touched
            self._grant(target)
        return True

    # ------------------------------------------------------ measured, evict

    def observe(
        self,
        used: int,
        limit: int,
        level: int,
        *,
        critical: float,
        high: float,
    ) -> list[Request]:
        """Take a memory sample into account; return what it evicted.

        ``used`` and ``limit`` are the sample's; ``critical`` and ``high`` the
        monitor's thresholds (fractions of ``limit``). Updates
        ``unmanaged_recent`` and the measured room, then serves the queue, so
        waiters wake when unmanaged memory falls. At ``level`` CRITICAL every
        evictable allocation is evicted first, lowest priority first. With an
        automatic capacity (:meth:`follow_samples`), the capacity is set to
        ``limit * critical - unmanaged`` (at least 1) at the first sample and
        whenever ``limit`` changes.
        """
        with self._lock:
            now = self._clock()
            unmanaged = used - self._used - self._others
            if unmanaged < 0:
                unmanaged = 0
            recent = self._recent
            recent.append((now, unmanaged))
            horizon = now - RECENT_WINDOW
            while len(recent) > RECENT_SAMPLES and recent[0][0] < horizon:
                recent.popleft()
            # used - reserved undercounts unmanaged by whatever was granted but not yet
            # touched, which during a long burst is always a lot. What may be untouched
            # is at most what was granted within the window (here, and the growth of
            # the others' figure); a sample where that is small measures unmanaged
            # nearly exactly, and its figure is kept as a floor until the next such one.
            marks = self._marks
            marks.append((now, self._granted_bytes, self._others))
            while len(marks) > 1 and marks[1][0] <= horizon:
                marks.popleft()
            fresh = min(self._used, self._granted_bytes - marks[0][1])
            fresh += max(0, self._others - min(o for _, _, o in marks))
            if self._limit is None or fresh <= limit * SETTLED_SHARE:
                self._unmanaged_floor = unmanaged
            self._unmanaged_recent = max(max(u for _, u in recent), self._unmanaged_floor)
            self._sampled_at = now
            self._level = level
            self._critical = critical
            self._high = high
            if limit != self._limit:
                self._limit = limit
                if self._auto_capacity:
                    self._capacity = max(int(limit * critical) - unmanaged, 1)
            self._critical_line = int(limit * critical)
            self._high_line = int(limit * high)
            self._set_ceiling()
            evicted: list[Request] = []
            if level >= _CRITICAL and self._evictable:
                victims = sorted(self._evictable, key=_eviction_order)
                for request in victims:
                    self._drop(request)
                self._count_evictions(victims)
                evicted.extend(victims)
            granted: list[Request] = []
            if self._order:
                granted, more = self._pump()
                evicted.extend(more)
        self._after(granted, evicted)
        return evicted

    def follow_samples(self) -> None:
        """Let the first sample (and every change of its limit) set the capacity."""
        with self._lock:
            self._auto_capacity = True

    def forget_samples(self) -> None:
        """Stop applying the measured room (the monitor went away); serve the queue."""
        with self._lock:
            self._limit = None
            self._level = 0
            self._recent.clear()
            self._marks.clear()
            self._unmanaged_recent = 0
            self._unmanaged_floor = 0
            self._sampled_at = -float("inf")
            self._auto_capacity = False
            self._ceiling = self._capacity
            granted, evicted = self._pump() if self._order else ([], [])
        self._after(granted, evicted)

    def needs_sample(self, nbytes: int) -> bool:
        """Whether a fresh sample should be taken before granting ``nbytes`` more.

        True when samples are observed, the newest is older than
        :data:`STALE_AFTER` seconds and the grant would end above the HIGH line
        (``unmanaged_recent + reserved + nbytes > limit * high``).
        """
        if self._limit is None or nbytes <= 0:
            return False
        return (
            self._unmanaged_recent + self._used + self._others + nbytes > self._high_line
            and self._clock() - self._sampled_at > STALE_AFTER
        )

    def evict_below(self, priority: int) -> list[Request]:
        """Evict every evictable allocation of priority ``< priority``; return them all."""
        with self._lock:
            victims = sorted(
                (r for r in self._evictable if r._priority < priority), key=_eviction_order
            )
            for request in victims:
                self._drop(request)
            self._count_evictions(victims)
            granted, more = self._pump() if self._order else ([], [])
        evicted = victims + more
        self._after(granted, evicted)
        return evicted

    @property
    def others(self) -> int:
        """Other processes' reserved bytes as last read (0 without a shared table)."""
        return self._others

    def close_shared(self) -> None:
        """Give up this process' slot in the shared table (idempotent); stop sharing."""
        with self._lock:
            table, self._shared = self._shared, None
            self._others = 0
            self._set_ceiling()
        if table is not None:
            table.close()  # the lock stays a _SharedLock; a closed table makes it a plain one

    # -------------------------------------------------------------- private

    def _set_ceiling(self) -> None:
        """Recompute the ceiling: the capacity, lowered to the measured room (if sampled)."""
        if self._limit is None:
            self._ceiling = self._capacity
        else:
            room = self._critical_line - self._unmanaged_recent - self._others
            self._ceiling = min(self._capacity, room)

    def _saw_others(self, others: int) -> None:
        # Called by _SharedLock right after it takes the cross-process lock.
        if others != self._others:
            self._others = others
            self._set_ceiling()

    def _check_new(self, request: Request) -> None:
        if request._state:
            raise _not_pending(request)
        key = request._key
        if key is not None and key in self._keys:
            raise _duplicate(key)
        if request._nbytes > self._capacity:
            raise _too_large("nbytes", request._nbytes, self._capacity)

    def _admit(self, request: Request) -> Sequence[Request] | None:
        """The one grant decision for a new request: may it be granted now?

        Returns None when it must wait, else the allocations evicted to make it
        fit (usually none). Zero bytes take nothing and are always admitted;
        otherwise no barging past a queued equal or higher priority, and it
        must fit the ceiling (the capacity, lowered to the measured room).
        """
        nbytes = request._nbytes
        if not nbytes:
            return _NOBODY
        order = self._order
        if order and order[0] >= request._priority:
            return None
        if self._used + nbytes <= self._ceiling:
            return _NOBODY
        return self._evict_for(nbytes, request._priority)

    def _queue(self, request: Request, wake: Callable[[], None]) -> None:
        request._wake = wake
        request._state = QUEUED
        priority = request._priority
        queue = self._queues.get(priority)
        if queue is None:
            queue = self._queues[priority] = OrderedDict()
            self._insert_priority(priority)
        queue[request] = None
        if request._key is not None:
            self._keys[request._key] = request
        waiting = self._nwaiting = self._nwaiting + 1
        if waiting > self._waiters_peak:
            self._waiters_peak = waiting

    def _grant(self, request: Request) -> None:
        nbytes = request._nbytes
        self._granted_bytes += nbytes
        request._state = LIVE
        used = self._used = self._used + nbytes
        if used > self._peak:
            self._peak = used
        self._granted += 1
        if request._key is not None:
            self._keys[request._key] = request
        if request._evictable:
            self._evictable[request] = None
            self._evictable_bytes += nbytes
        now = self._clock()
        if now >= self._next_history:
            self._record(now)

    def _drop(self, request: Request) -> None:
        request._state = RELEASED
        nbytes = request._nbytes
        self._used -= nbytes
        self._dropped += 1
        key = request._key
        if key is not None and self._keys.get(key) is request:
            del self._keys[key]
        if request._evictable:
            del self._evictable[request]
            self._evictable_bytes -= nbytes
        now = self._clock()
        if now >= self._next_history:
            self._record(now)

    def _row(self) -> HistoryRow:
        return HistoryRow(
            time.time(),
            self._capacity,
            self._used,
            self._peak,
            self._granted - self._dropped,
            self._nwaiting,
            self._waiters_peak,
            self._granted,
            self._evictions,
            self._evicted_bytes,
            self._timeouts,
            self._cancelled,
            self.headroom,
            self._level,
            self.unmanaged,
            self._limit,
            self._evictable_bytes,
            self._others,
        )

    def _record(self, now: float) -> None:
        if not self._history_enabled:
            return
        self._history.append(self._row())
        self._next_history = now + HISTORY_INTERVAL
        self._recorded_changes = self._granted + self._dropped

    def _evict_for(self, nbytes: int, priority: int) -> list[Request] | None:
        """Evict the fewest lower-priority evictables (in eviction order) that make it fit.

        Evicts nothing and returns None when evicting all of them would not do.
        """
        need = self._used + nbytes - self._ceiling
        if self._evictable_bytes < need:
            return None
        eligible = [r for r in self._evictable if r._priority < priority and r._nbytes]
        if sum(r._nbytes for r in eligible) < need:
            return None
        eligible.sort(key=_eviction_order)
        victims: list[Request] = []
        for request in eligible:
            victims.append(request)
            need -= request._nbytes
            if need <= 0:
                break
        for request in victims:
            self._drop(request)
        self._count_evictions(victims)
        return victims

    def _count_evictions(self, victims: list[Request]) -> None:
        self._evictions += len(victims)
        self._evicted_bytes += sum(r._nbytes for r in victims)

    def _insert_priority(self, priority: int) -> None:
        order = self._order
        index = 0
        while index < len(order) and order[index] > priority:
            index += 1
        order.insert(index, priority)

    def _dequeue(self, request: Request) -> None:
        priority = request._priority
        queue = self._queues[priority]
        del queue[request]
        if not queue:
            del self._queues[priority]
            self._order.remove(priority)
        key = request._key
        if key is not None and self._keys.get(key) is request:
            del self._keys[key]
        self._nwaiting -= 1
        request._state = ABANDONED

    def _pump(self) -> tuple[list[Request], list[Request]]:
        """Grant queued requests from the head while they fit (evicting if allowed)."""
        granted: list[Request] = []
        evicted: list[Request] = []
        order = self._order
        while order:
            priority = order[0]
            queue = self._queues[priority]
            request = next(iter(queue))
            nbytes = request._nbytes
            need = self._used + nbytes - self._ceiling
            if need > 0:
                if self._evictable_bytes < need:
                    break  # the usual case, decided without a call
                victims = self._evict_for(nbytes, priority)
                if victims is None:
                    break
                evicted.extend(victims)
            queue.popitem(last=False)
            if not queue:
                del self._queues[priority]
                order.pop(0)
            self._nwaiting -= 1
            self._grant(request)
            granted.append(request)
        return granted, evicted

    def _after(self, granted: list[Request] | tuple[()], evicted: list[Request]) -> None:
        for request in granted:
            request._wake()
        if evicted and self._on_evicted is not None:
            self._on_evicted(evicted)


class _SharedLock:
    """The ledger's lock plus the shared table's: decisions see every process' grants."""

    __slots__ = ("_ledger", "_lock", "_table")

    def __init__(self, table: ReservationTable, ledger: Ledger) -> None:
        self._lock = threading.Lock()
        self._table = table
        self._ledger = ledger

    def acquire(self) -> bool:
        self._lock.acquire()
        table = self._table
        if table.closed:
            return True
        try:
            table.lock()
        except BaseException:
            self._lock.release()
            raise
        self._ledger._saw_others(table.others)
        return True

    def release(self) -> None:
        table = self._table
        try:
            if not table.closed:
                table.unlock(self._ledger._used)
        finally:
            self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _eviction_order(request: Request) -> tuple[int, int]:
    # Lowest priority first; within a priority the smallest (ties: oldest first,
    # as the sort is stable over insertion order).
    return (request._priority, request._nbytes)


def _too_large(name: str, nbytes: int, capacity: int) -> MemoryAllocationError:
    return MemoryAllocationError(
        f"{name}={nbytes} exceeds the budget's capacity of {capacity} bytes: "
        "it can never be granted"
    )


def _duplicate(key: str) -> ValueError:
    return ValueError(f"key={key!r} is already held (or requested) in this budget")


def _not_pending(request: Request) -> RuntimeError:
    return RuntimeError(f"{request!r} was already submitted; a reservation is entered once")
