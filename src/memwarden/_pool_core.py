"""The object pool's bookkeeping: a synchronous state machine with no ``await``.

:class:`~memwarden.pool.ObjectPool` asks this core what to do ("hand idle
object X", "create a new one", "park") and feeds back what happened (the
factory returned, validation failed, the waiter was cancelled). Keeping every
decision here, in plain methods that never suspend, makes them atomic on the
event loop and lets a hypothesis state machine check them directly
(``tests/test_pool_state.py``). This mirrors httpcore's
``_assign_requests_to_connections`` and anyio's ``CapacityLimiter`` hand-off.

Every object the pool owns is in exactly one state::

    idle      -- deque, coldest on the left, the next to hand out on the right (LIFO,
                 so a small working set stays warm and the rest ages out)
    checking  -- handed to an acquirer that has not resumed or is validating it
    in_use    -- held by user code: its entry's ``held`` flag is set
    returning -- released, its ``reset`` hook running
    pending   -- a count of creations in progress (slots reserved for the factory)

``entries`` registers every object that exists, keyed by ``id(obj)`` (objects
may be unhashable), from its creation until it is destroyed. Lending and
taking back flip ``held`` and a counter instead of inserting into and deleting
from a table: that is the whole uncontended cycle, and the dict churn was most
of its cost. Registered objects are alive, so an id found there identifies
the object; a live foreign object cannot share it.

``idle + checking + in_use + returning + pending <= max_size`` always holds.
Waiters are served strictly FIFO and are handed what frees up directly, so a
newcomer never overtakes a parked task (no barging).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .errors import PoolClosedError, PoolError

__all__: list[str] = []

T = TypeVar("T")
W = TypeVar("W", bound="WaiterLike[Any]")

MISSING: Any = object()
"""Returned by the fast path when it cannot serve (objects themselves may be None)."""

# Shared "nothing expired" answer: without max_lifetime nothing is ever appended to it.
_NONE_EXPIRED: list[Any] = []

# Kinds of decision returned by PoolCore.acquire / after_discard.
GRANT_OBJECT = 0
GRANT_CREATE = 1
PARK = 2


class _Wakeable(Protocol):
    def set(self) -> None: ...


class Entry(Generic[T]):
    """One pooled object and its timestamps."""

    __slots__ = (
        "acquired_at",
        "created_at",
        "expires_at",
        "held",
        "idle_since",
        "key",
        "leak_reported",
        "obj",
        "stack",
    )

    def __init__(self, obj: T, created_at: float, expires_at: float | None) -> None:
        self.obj = obj
        self.key = id(obj)
        self.created_at = created_at
        self.expires_at = expires_at
        self.idle_since = created_at
        self.held = False
        self.acquired_at = 0.0
        self.stack: object = None
        self.leak_reported = False


_NO_ENTRY: Entry[Any] = Entry(MISSING, 0.0, None)
"""``PoolCore.last`` when no object was lent since the last one was destroyed."""


class WaiterLike(Protocol[T]):
    """A parked acquire: the core fills in exactly one grant, then calls ``wake()``.

    ``wake()`` may be called on a waiter whose wait was already cancelled; it
    must then do nothing (the cancelled task hands the grant on itself).
    """

    entry: Entry[T] | None
    create: bool
    error: BaseException | None

    def wake(self) -> None: ...


class Waiter(Generic[T]):
    """The portable waiter: wakes an event (``anyio.Event`` or any object with ``set``)."""

    __slots__ = ("create", "entry", "error", "event", "queued_at")

    def __init__(self, event: _Wakeable, queued_at: float) -> None:
        self.event = event
        self.queued_at = queued_at
        self.entry: Entry[T] | None = None
        self.create = False
        self.error: BaseException | None = None

    def wake(self) -> None:
        self.event.set()


class PoolCore(Generic[T]):
    """The pool's state and every decision about it; not thread-safe (one event loop)."""

    def __init__(
        self,
        max_size: int,
        min_size: int = 0,
        *,
        max_idle_time: float | None = None,
        max_lifetime: float | None = None,
        lifetime_jitter: float = 0.0,
        leak_threshold: float | None = None,
        rng: random.Random | None = None,
        claim_needed: bool = True,
    ) -> None:
        self.max_size = max_size
        self.min_size = min_size
        self.max_idle_time = max_idle_time
        self.max_lifetime = max_lifetime
        self.lifetime_jitter = lifetime_jitter
        self.leak_threshold = leak_threshold
        self._rng = rng or random.Random()
        self.claim_needed = claim_needed
        self.idle: deque[Entry[T]] = deque()
        self.entries: dict[int, Entry[T]] = {}
        # The entry the fast path lent last. Releasing that object, the usual
        # case, is recognised by identity without the id() lookup in entries;
        # it never refers to a destroyed entry, so it keeps nothing alive.
        self.last: Entry[T] = _NO_ENTRY
        self.checking: dict[int, Entry[T]] = {}
        self.in_use = 0
        self.returning: dict[int, Entry[T]] = {}
        self.pending = 0
        # A deque, as asyncio's own queues and locks use: appending and popping
        # from the front are what every contended acquire does, and an
        # OrderedDict churned by new keys costs several times more per park.
        # Only a cancelled wait pays a linear removal.
        self.waiters: deque[WaiterLike[T]] = deque()
        self.closed = False
        self.force_closed: dict[int, object] = {}
        self.drained: _Wakeable | None = None
        # counters
        self.created = 0
        self.destroyed = 0
        self.released = 0
        self.timeouts = 0
        self.create_failures = 0
        self.validation_failures = 0
        self.leaks_suspected = 0
        self.wait_time_max = 0.0
        self.wait_time_total = 0.0
        self.waits = 0
        self.in_use_peak = 0
        self.waiters_peak = 0
        self.size_peak = 0

    # -- sizes ---------------------------------------------------------------

    @property
    def size(self) -> int:
        """Objects that exist: idle, being checked, in use or being reset."""
        return len(self.entries)

    @property
    def acquired(self) -> int:
        """Acquires completed: every release (or force-close) follows one."""
        return self.released + self.in_use

    @property
    def outstanding(self) -> int:
        """Objects and creations not yet back in the idle set."""
        return len(self.checking) + self.in_use + len(self.returning) + self.pending

    def owns(self, obj: object) -> bool:
        """Whether ``obj`` (by identity) is anywhere in this pool."""
        entry = self.entries.get(id(obj))
        return entry is not None and entry.obj is obj

    def held_entries(self) -> list[Entry[T]]:
        """The entries of the objects user code holds (in use)."""
        return [e for e in self.entries.values() if e.held]

    def _hold(self, entry: Entry[T]) -> None:
        entry.held = True
        in_use = self.in_use = self.in_use + 1
        if in_use > self.in_use_peak:
            self.in_use_peak = in_use

    def _unhold(self, entry: Entry[T]) -> None:
        entry.held = False
        self.in_use -= 1

    def _forget(self, entry: Entry[T]) -> None:
        del self.entries[entry.key]
        self.destroyed += 1
        if self.last is entry:
            self.last = _NO_ENTRY

    # -- acquire ---------------------------------------------------------------

    def take_idle_nowait(self) -> T | Any:
        """Fast path: the newest idle object straight into ``in_use``, else ``MISSING``.

        Only valid when the pool needs no per-object checks (no validate, no
        lifetime, no leak tracking); the caller guarantees that.
        ``PoolLease.__await__`` inlines this (the whole uncontended acquire).
        """
        # No waiter check: objects are only idle while nobody waits (what frees
        # up goes to the longest waiter first), so a non-empty idle set implies
        # an empty queue and taking from it never overtakes a parked task.
        idle = self.idle
        if idle:
            entry = self.last = idle.pop()
            entry.held = True
            in_use = self.in_use = self.in_use + 1
            if in_use > self.in_use_peak:
                self.in_use_peak = in_use
            return entry.obj
        return MISSING

    def acquire(self, now: float) -> tuple[int, Entry[T] | None, list[Entry[T]]]:
        """Decide an acquire: ``(GRANT_OBJECT, entry, expired)``, ``(GRANT_CREATE, None,
        expired)`` or ``(PARK, None, expired)``.

        A granted object is placed in ``checking``; the caller must ``claim`` it
        (or ``reject``/``unclaim`` it). A granted creation holds a reserved slot
        until ``created``/``creation_failed``/``creation_aborted``. On PARK the
        caller queues a waiter with ``park`` before anything else runs.
        ``expired`` lists idle objects found past their lifetime, already
        removed: the caller closes them. Raises ``PoolClosedError`` when closed.
        """
        if self.closed:
            raise PoolClosedError("the pool is closed")
        expired: list[Entry[T]] = _NONE_EXPIRED
        if not self.waiters:
            if self.max_lifetime is not None:
                expired = []
            entry = self._pop_live_idle(now, expired)
            if entry is not None:
                self.checking[entry.key] = entry
                return GRANT_OBJECT, entry, expired
            if self.size + self.pending < self.max_size:
                self.pending += 1
                return GRANT_CREATE, None, expired
        return PARK, None, expired

    def park_if_busy(self, make_waiter: Callable[[], W]) -> W | None:
        """Contended fast path: park a new waiter if this acquire must wait, else None.

        Waits when others already wait (FIFO, no barging) or when nothing is idle
        and no slot is free. None means the caller takes the general path (an
        idle object, a free slot, or a closed pool). Only valid when the pool
        needs no per-object checks, like :meth:`take_idle_nowait`.
        """
        waiters = self.waiters
        if self.closed or (not waiters and (self.idle or self.size + self.pending < self.max_size)):
            return None
        waiter = make_waiter()
        waiters.append(waiter)
        if len(waiters) > self.waiters_peak:
            self.waiters_peak = len(waiters)
        return waiter

    def park(self, waiter: WaiterLike[T]) -> None:
        """Queue ``waiter`` (FIFO) until something is handed to it."""
        self.waiters.append(waiter)
        if len(self.waiters) > self.waiters_peak:
            self.waiters_peak = len(self.waiters)

    def _pop_live_idle(self, now: float, expired: list[Entry[T]]) -> Entry[T] | None:
        idle = self.idle
        while idle:
            entry = idle.pop()
            if entry.expires_at is not None and now >= entry.expires_at:
                self._forget(entry)
                expired.append(entry)
                continue
            return entry
        return None

    def claim(self, entry: Entry[T], now: float) -> None:
        """Move a granted (and validated) object from ``checking`` to ``in_use``.

        Raises ``PoolClosedError`` if the pool was force-closed meanwhile.
        """
        if self.checking.pop(entry.key, None) is None:
            raise PoolClosedError("the pool was closed")
        self._hold(entry)
        entry.acquired_at = now
        entry.leak_reported = False

    def unclaim(self, entry: Entry[T], now: float) -> Entry[T] | None:
        """Give back a granted object its acquirer no longer wants (it was cancelled).

        Returns the entry if the caller must close it (expired, or the pool closed).
        """
        if self.claim_needed:
            if self.checking.pop(entry.key, None) is None:
                return None  # force-closed by aclose(): already handled
        elif entry.held:
            self._unhold(entry)
        else:
            return None  # force-closed by aclose(): already handled
        return self._put_back(entry, now)

    def reject(self, entry: Entry[T], now: float) -> tuple[int, Entry[T] | None, list[Entry[T]]]:
        """Validation failed: drop ``entry`` and serve the same acquirer again.

        The acquirer keeps the capacity it held, so it takes the next idle object
        or a creation slot without queueing behind waiters. Never returns PARK.
        Raises ``PoolClosedError`` when the pool is closed.
        """
        self.validation_failures += 1
        if self.checking.pop(entry.key, None) is not None:
            self._forget(entry)
        if self.closed:
            self._maybe_drained()
            raise PoolClosedError("the pool is closed")
        expired: list[Entry[T]] = [] if self.max_lifetime is not None else _NONE_EXPIRED
        nxt = self._pop_live_idle(now, expired)
        if nxt is not None:
            self.checking[nxt.key] = nxt
            return GRANT_OBJECT, nxt, expired
        self.pending += 1
        return GRANT_CREATE, None, expired

    def cancel_waiter(self, waiter: WaiterLike[T], now: float) -> Entry[T] | None:
        """Withdraw a parked acquire; whatever it was granted passes to the next one.

        Returns an entry the caller must close (the grant expired or the pool closed).
        """
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            return None
        if waiter.entry is not None:
            entry, waiter.entry = waiter.entry, None
            return self.unclaim(entry, now)
        if waiter.create:
            waiter.create = False
            self.creation_aborted()
        return None

    def late_leak(self, obj: object, now: float) -> Entry[T] | None:
        """On release: the entry if it was held past ``leak_threshold`` and not yet reported."""
        if self.leak_threshold is None:
            return None
        entry = self.entries.get(id(obj))
        if entry is None or entry.obj is not obj or not entry.held or entry.leak_reported:
            return None
        if now - entry.acquired_at < self.leak_threshold:
            return None
        entry.leak_reported = True
        self.leaks_suspected += 1
        return entry

    def record_wait(self, seconds: float) -> None:
        """Account one completed wait of ``seconds``."""
        self.waits += 1
        self.wait_time_total += seconds
        if seconds > self.wait_time_max:
            self.wait_time_max = seconds

    # -- creation ----------------------------------------------------------------

    def reserve_fill(self) -> bool:
        """Reserve a slot for a background creation if the pool is below ``min_size``."""
        if self.closed or self.size + self.pending >= min(self.min_size, self.max_size):
            return False
        self.pending += 1
        return True

    def _new_entry(self, obj: T, now: float) -> Entry[T]:
        expires_at = None
        if self.max_lifetime is not None:
            # Spread expiry so objects made together are not all retired together
            # (HikariCP subtracts up to 2.5 % of maxLifetime).
            lifetime = self.max_lifetime * (1.0 - self._rng.random() * self.lifetime_jitter)
            expires_at = now + lifetime
        entry = Entry(obj, now, expires_at)
        self.entries[entry.key] = entry
        return entry

    def add_created(self, obj: T, now: float) -> Entry[T] | None:
        """The factory returned ``obj`` for an acquirer: register it in ``checking``.

        Returns None when the pool closed meanwhile (the caller closes ``obj``).
        Raises ``PoolError`` if the factory returned an object the pool already holds.
        """
        self.pending -= 1
        if self.owns(obj):
            self._hand_capacity()
            raise PoolError(f"factory returned an object already in the pool: {obj!r}")
        self.created += 1
        if self.closed:
            self.destroyed += 1
            self._maybe_drained()
            return None
        entry = self._new_entry(obj, now)
        self.checking[entry.key] = entry
        self._note_size()
        return entry

    def add_created_idle(self, obj: T, now: float) -> bool:
        """A background creation (fill) finished: hand ``obj`` to a waiter or the idle set.

        Returns False when the pool closed meanwhile (the caller closes ``obj``).
        """
        self.pending -= 1
        if self.owns(obj):
            self._hand_capacity()
            raise PoolError(f"factory returned an object already in the pool: {obj!r}")
        self.created += 1
        if self.closed:
            self.destroyed += 1
            self._maybe_drained()
            return False
        self._hand_entry(self._new_entry(obj, now), now)
        self._note_size()
        return True

    def creation_failed(self) -> None:
        """The factory raised: free the slot so the next waiter can try again."""
        self.create_failures += 1
        self.creation_aborted()

    def creation_aborted(self) -> None:
        """A creation was cancelled before it produced an object: free its slot."""
        self.pending -= 1
        if self.closed:
            self._maybe_drained()
        else:
            self._hand_capacity()

    # -- release -------------------------------------------------------------------

    def _lookup_in_use(self, obj: object) -> Entry[T]:
        entry = self.entries.get(id(obj))
        if entry is None or entry.obj is not obj:
            raise PoolError(f"object {obj!r} was not acquired from this pool")
        if not entry.held:
            raise PoolError(f"object {obj!r} is not in use: it was already released")
        return entry

    def release(self, obj: object, now: float) -> Entry[T] | None:
        """Take back ``obj`` (no reset step). Returns the entry if the caller must close it.

        Raises ``PoolError`` for an object not in use from this pool.
        """
        if self._forget_force_closed(obj):
            return None
        entry = self._lookup_in_use(obj)
        self._unhold(entry)
        self.released += 1
        return self._put_back(entry, now)

    def hand_back(self, entry: Entry[T]) -> None:
        """Fast path: a held ``entry`` goes to the longest waiter, else to the idle set.

        Only valid when no per-object step applies (no reset, lifetime, idle-time
        or leak tracking) and the pool is open; the caller looked the entry up
        in ``entries`` (or found it as ``last``) and checked ``held``.
        ``ObjectPool.release`` inlines the idle branch (the whole uncontended
        release).
        """
        self.released += 1
        waiters = self.waiters
        if not waiters:
            entry.held = False
            self.in_use -= 1
            self.idle.append(entry)
            return
        # _grant, inlined: this is the hand-off of every contended release.
        waiter = waiters.popleft()
        waiter.entry = entry
        if self.claim_needed:
            entry.held = False
            self.in_use -= 1
            self.checking[entry.key] = entry
        # Otherwise the entry stays held, now by the waiter: the count, and so
        # the peak, do not change.
        waiter.wake()

    def begin_return(self, obj: object) -> Entry[T] | None:
        """Move ``obj`` from ``in_use`` to ``returning`` while its reset hook runs.

        Returns None for an object aclose() already closed (nothing left to do).
        """
        if self._forget_force_closed(obj):
            return None
        entry = self._lookup_in_use(obj)
        self._unhold(entry)
        self.returning[entry.key] = entry
        self.released += 1
        return entry

    def finish_return(self, entry: Entry[T], now: float) -> Entry[T] | None:
        """Reset succeeded: hand the object on. Returns the entry if it must be closed."""
        if self.returning.pop(entry.key, None) is None:
            return None  # force-closed by aclose() while resetting
        return self._put_back(entry, now)

    def _forget_force_closed(self, obj: object) -> bool:
        if not self.force_closed:
            return False
        held = self.force_closed.get(id(obj))
        if held is obj:
            del self.force_closed[id(obj)]
            return True
        return False

    def _put_back(self, entry: Entry[T], now: float) -> Entry[T] | None:
        if self.closed or (entry.expires_at is not None and now >= entry.expires_at):
            self._forget(entry)
            if self.closed:
                self._maybe_drained()
            else:
                self._hand_capacity()
            return entry
        self._hand_entry(entry, now)
        return None

    def discard(self, entry: Entry[T]) -> bool:
        """Drop an object being checked or returned (a hook failed); frees its slot.

        Returns True if the caller must close it, False if aclose() already did.
        """
        key = entry.key
        if self.checking.pop(key, None) is None and self.returning.pop(key, None) is None:
            return False
        self._forget(entry)
        if self.closed:
            self._maybe_drained()
        else:
            self._hand_capacity()
        return True

    # -- hand-off ----------------------------------------------------------------------

    def _hand_entry(self, entry: Entry[T], now: float) -> None:
        if self.waiters:
            self._grant(entry)
        else:
            entry.idle_since = now
            self.idle.append(entry)

    def _grant(self, entry: Entry[T]) -> None:
        waiter = self.waiters.popleft()
        waiter.entry = entry
        if self.claim_needed:
            self.checking[entry.key] = entry
        else:
            # Nothing to check before use: the object is the waiter's from now on.
            self._hold(entry)
        waiter.wake()

    def _hand_capacity(self) -> None:
        if self.waiters and self.size + self.pending < self.max_size:
            waiter = self.waiters.popleft()
            waiter.create = True
            self.pending += 1
            waiter.wake()

    def _note_size(self) -> None:
        size = self.size
        if size > self.size_peak:
            self.size_peak = size

    def _maybe_drained(self) -> None:
        if self.closed and self.drained is not None and self.outstanding == 0:
            self.drained.set()

    # -- maintenance -------------------------------------------------------------------

    def trim(self, keep: int) -> list[Entry[T]]:
        """Remove idle objects, coldest first, until at most ``keep`` objects exist."""
        removed: list[Entry[T]] = []
        while self.idle and self.size > keep:
            entry = self.idle.popleft()
            self._forget(entry)
            removed.append(entry)
        return removed

    def reapable(self, now: float) -> list[Entry[T]]:
        """Remove idle objects past their lifetime, and those idle longer than
        ``max_idle_time`` while more than ``min_size`` objects exist."""
        removed: list[Entry[T]] = []
        kept: deque[Entry[T]] = deque()
        size = self.size
        for entry in self.idle:  # coldest first
            expired = entry.expires_at is not None and now >= entry.expires_at
            stale = (
                self.max_idle_time is not None
                and now - entry.idle_since >= self.max_idle_time
                and size > self.min_size
            )
            if expired or stale:
                self._forget(entry)
                removed.append(entry)
                size -= 1
            else:
                kept.append(entry)
        # In place: the pool's fast path keeps a reference to this deque.
        self.idle.clear()
        self.idle.extend(kept)
        return removed

    def find_leaks(self, now: float) -> list[Entry[T]]:
        """In-use objects held past ``leak_threshold`` and not yet reported (marks them)."""
        if self.leak_threshold is None:
            return []
        found = []
        for entry in self.held_entries():
            if not entry.leak_reported and now - entry.acquired_at >= self.leak_threshold:
                entry.leak_reported = True
                found.append(entry)
        self.leaks_suspected += len(found)
        return found

    # -- closing -------------------------------------------------------------------------

    def close(self) -> list[Entry[T]]:
        """Stop handing out objects: fail every waiter and return the idle objects to close."""
        if self.closed:
            return []
        self.closed = True
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.error = PoolClosedError("the pool was closed while waiting")
            waiter.wake()
        removed = list(self.idle)
        self.idle.clear()
        for entry in removed:
            self._forget(entry)
        self._maybe_drained()
        return removed

    def force_close(self) -> list[Entry[T]]:
        """After the close timeout: take every object still out, to be closed."""
        held = self.held_entries()
        removed = [*self.checking.values(), *held, *self.returning.values()]
        self.released += self.in_use
        # Remember what users still hold so their late release() is a quiet no-op.
        for entry in held:
            entry.held = False
            self.force_closed[entry.key] = entry.obj
        self.in_use = 0
        self.checking.clear()
        self.returning.clear()
        for entry in removed:
            self._forget(entry)
        return removed
