"""The object pool's bookkeeping: a synchronous state machine with no ``await``.

:class:`~memwarden.pool.ObjectPool` asks this core what to do ("lend idle
object X", "validate X first", "create a new one", "park") and feeds back what
happened (the factory returned, validation failed, the waiter was cancelled).
Keeping every decision here, in plain methods that never suspend, makes them
atomic on the event loop and lets a hypothesis state machine check them
directly (``tests/test_pool_state.py``). This mirrors httpcore's
``_assign_requests_to_connections`` and the ``*_nowait`` methods of trio's
``_sync.py`` and anyio's ``CapacityLimiter``.

Every object the pool owns is in exactly one state::

    idle      -- deque, coldest on the left, the next to hand out on the right (LIFO,
                 so a small working set stays warm and the rest ages out)
    checking  -- granted to an acquirer that is validating it
    in_use    -- held by user code (or granted to a waiter about to resume):
                 its entry's ``held`` flag is set
    returning -- released, its ``reset`` hook running
    pending   -- a count of creations in progress (slots reserved for the factory)

``entries`` registers every object that exists, keyed by ``id(obj)`` (objects
may be unhashable), from its creation until it is destroyed. Registered
objects are alive, so an id found there identifies the object once its
identity is checked.

``idle + checking + in_use + returning + pending <= max_size`` always holds.
Waiters are served strictly FIFO and are handed what frees up directly, so a
newcomer never overtakes a parked task (no barging). Objects being closed in
the background (``closing``) no longer count against ``max_size``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .errors import PoolClosedError, PoolError

__all__: list[str] = []

T = TypeVar("T")

# Shared "nothing expired" answer: without max_lifetime nothing is ever appended to it.
_NONE_EXPIRED: list[Any] = []

# What an acquire gets (PoolCore.acquire_nowait, retry, and a woken waiter's ``kind``).
LENT = 0  # the object is the caller's: it is in use
CHECK = 1  # the object is in ``checking``: validate it, then claim() or reject()
CREATE = 2  # a slot is reserved: create an object, then add_created()
PARK = 3  # nothing to give: park a waiter

# What a release must still do (PoolCore.release_nowait).
RETURNED = 0  # nothing: the object is idle again or handed to a waiter
RESET = 1  # run the reset hook, then finish_return() or discard()
CLOSE = 2  # the object left the pool (closed pool, lifetime over): close it


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


class Waiter(Generic[T]):
    """A parked acquire: the core fills in one grant (``kind`` and ``entry``, or
    ``error``), then calls ``wake()``.

    ``wake()`` may be called on a waiter whose wait was already cancelled; it
    must then do nothing (the cancelled task gives the grant back through
    :meth:`PoolCore.cancel_waiter`).
    """

    __slots__ = ("entry", "error", "kind", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.kind = PARK
        self.entry: Entry[T] | None = None
        self.error: BaseException | None = None


class PoolCore(Generic[T]):
    """The pool's state and every decision about it; not thread-safe (one event loop).

    ``validates``: granted objects go to ``checking`` for the validate hook
    before they are lent. ``resets``: released objects go to ``returning`` for
    the reset hook before they are reused.
    """

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
        validates: bool = False,
        resets: bool = False,
    ) -> None:
        self.max_size = max_size
        self.min_size = min_size
        self.max_idle_time = max_idle_time
        self.max_lifetime = max_lifetime
        self.lifetime_jitter = lifetime_jitter
        self.leak_threshold = leak_threshold
        self.validates = validates
        self.resets = resets
        self._rng = rng or random.Random()
        self.idle: deque[Entry[T]] = deque()
        self.entries: dict[int, Entry[T]] = {}
        self.checking: dict[int, Entry[T]] = {}
        self.in_use = 0
        self.returning: dict[int, Entry[T]] = {}
        self.pending = 0
        self.closing = 0
        # A deque, as asyncio's own queues and locks use: appending and popping
        # from the front are what every contended acquire does. Only a
        # cancelled wait pays a linear removal.
        self.waiters: deque[Waiter[T]] = deque()
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
        self.closing_peak = 0

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
        """Objects, creations and background closes not yet finished with."""
        return len(self.checking) + self.in_use + len(self.returning) + self.pending + self.closing

    def owns(self, obj: object) -> bool:
        """Whether ``obj`` (by identity) is anywhere in this pool."""
        entry = self.entries.get(id(obj))
        return entry is not None and entry.obj is obj

    def held_entries(self) -> list[Entry[T]]:
        """The entries of the objects user code holds (in use)."""
        return [e for e in self.entries.values() if e.held]

    def _hold(self, entry: Entry[T], now: float) -> None:
        entry.held = True
        entry.acquired_at = now
        entry.leak_reported = False
        in_use = self.in_use = self.in_use + 1
        if in_use > self.in_use_peak:
            self.in_use_peak = in_use

    def _unhold(self, entry: Entry[T]) -> None:
        entry.held = False
        self.in_use -= 1

    def _forget(self, entry: Entry[T]) -> None:
        del self.entries[entry.key]
        self.destroyed += 1

    def _lend(self, entry: Entry[T], now: float) -> int:
        """Give ``entry`` to an acquirer: into ``checking`` (CHECK) or in use (LENT)."""
        if self.validates:
            self.checking[entry.key] = entry
            return CHECK
        self._hold(entry, now)
        return LENT

    # -- acquire ---------------------------------------------------------------

    def acquire_nowait(self, now: float) -> tuple[int, Entry[T] | None, list[Entry[T]]]:
        """Decide an acquire: ``(kind, entry, expired)``.

        ``kind`` is LENT (``entry`` is in use, the caller's), CHECK (``entry``
        is in ``checking``: validate it, then :meth:`claim` or :meth:`reject`
        it), CREATE (a slot is reserved until :meth:`add_created`,
        :meth:`creation_failed` or :meth:`creation_aborted`) or PARK (queue a
        waiter with :meth:`park` before anything else runs). ``expired`` lists
        idle objects found past their lifetime, already removed: the caller
        closes them. Raises ``PoolClosedError`` when closed.
        """
        if self.closed:
            raise PoolClosedError("the pool is closed")
        if self.waiters:  # FIFO: a newcomer never overtakes a parked task
            return PARK, None, _NONE_EXPIRED
        return self._serve(now)

    def _serve(self, now: float) -> tuple[int, Entry[T] | None, list[Entry[T]]]:
        expired: list[Entry[T]] = [] if self.max_lifetime is not None else _NONE_EXPIRED
        idle = self.idle
        while idle:
            entry = idle.pop()
            if entry.expires_at is not None and now >= entry.expires_at:
                self._forget(entry)
                expired.append(entry)
                continue
            return self._lend(entry, now), entry, expired
        if self.size + self.pending < self.max_size:
            self.pending += 1
            return CREATE, None, expired
        return PARK, None, expired

    def park(self, waiter: Waiter[T]) -> None:
        """Queue ``waiter`` (FIFO) until something is handed to it."""
        waiters = self.waiters
        waiters.append(waiter)
        if len(waiters) > self.waiters_peak:
            self.waiters_peak = len(waiters)

    def claim(self, entry: Entry[T], now: float) -> None:
        """Lend a validated object: from ``checking`` to in use.

        Raises ``PoolClosedError`` if the pool was force-closed meanwhile.
        """
        if self.checking.pop(entry.key, None) is None:
            raise PoolClosedError("the pool was closed")
        self._hold(entry, now)

    def reject(self, entry: Entry[T]) -> bool:
        """Validation failed: drop ``entry``. True if the caller must close it.

        The acquirer keeps the capacity it held: it calls :meth:`retry` next,
        without queueing behind waiters.
        """
        self.validation_failures += 1
        if self.checking.pop(entry.key, None) is None:
            return False  # force-closed by aclose(): already handled
        self._forget(entry)
        return True

    def retry(self, now: float) -> tuple[int, Entry[T] | None, list[Entry[T]]]:
        """After :meth:`reject`: serve the same acquirer again; never PARK.

        Raises ``PoolClosedError`` when the pool is closed.
        """
        if self.closed:
            self._maybe_drained()
            raise PoolClosedError("the pool is closed")
        kind, entry, expired = self._serve(now)
        if kind == PARK:  # only when force_close took everything: nothing to give back
            raise PoolClosedError("the pool was closed")
        return kind, entry, expired

    def unclaim(self, entry: Entry[T], now: float) -> Entry[T] | None:
        """Give back a granted object its acquirer no longer wants (it was cancelled).

        Returns the entry if the caller must close it (expired, or the pool closed).
        """
        if self.checking.pop(entry.key, None) is None:
            if not entry.held or self.entries.get(entry.key) is not entry:
                # force-closed by aclose(): already handled
                self._forget_force_closed(entry.obj)
                return None
            self._unhold(entry)
        return self._put_back(entry, now)

    def cancel_waiter(self, waiter: Waiter[T], now: float) -> Entry[T] | None:
        """Withdraw a parked acquire; whatever it was granted passes to the next one.

        Returns an entry the caller must close (the grant expired or the pool
        closed). Calling it again for the same waiter does nothing.
        """
        kind, entry = waiter.kind, waiter.entry
        waiter.kind, waiter.entry = PARK, None
        if kind == PARK:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            return None
        return self.give_back(kind, entry, now)

    def give_back(self, kind: int, entry: Entry[T] | None, now: float) -> Entry[T] | None:
        """Undo a grant (``kind``, ``entry``) its acquirer was cancelled before using.

        The object or the creation slot passes to the next waiter. Returns an
        entry the caller must close (it expired, or the pool closed).
        """
        if kind == CREATE:
            self.creation_aborted()
            return None
        assert entry is not None
        return self.unclaim(entry, now)

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

    def record_timeout(self) -> None:
        """Account one acquire that gave up at its timeout."""
        self.timeouts += 1

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
        size = len(self.entries)
        if size > self.size_peak:
            self.size_peak = size
        return entry

    def _created(self, obj: T) -> bool:
        """Account a finished creation; False when the pool closed meanwhile."""
        self.pending -= 1
        if self.owns(obj):
            self._hand_capacity()
            raise PoolError(f"factory returned an object already in the pool: {obj!r}")
        self.created += 1
        if self.closed:
            self.destroyed += 1
            self._maybe_drained()
            return False
        return True

    def add_created(self, obj: T, now: float) -> Entry[T] | None:
        """The factory returned ``obj`` for an acquirer: it is in use, the acquirer's.

        Returns None when the pool closed meanwhile (the caller closes ``obj``).
        Raises ``PoolError`` if the factory returned an object the pool already holds.
        """
        if not self._created(obj):
            return None
        entry = self._new_entry(obj, now)
        self._hold(entry, now)
        return entry

    def add_created_idle(self, obj: T, now: float) -> bool:
        """A background creation (fill) finished: hand ``obj`` to a waiter or the idle set.

        Returns False when the pool closed meanwhile (the caller closes ``obj``).
        """
        if not self._created(obj):
            return False
        self._hand_entry(self._new_entry(obj, now), now)
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

    def release_nowait(self, obj: object, now: float) -> tuple[int, Entry[T] | None]:
        """Take back ``obj``: ``(RETURNED, None)``, ``(RESET, entry)`` or ``(CLOSE, entry)``.

        RESET: the object is in ``returning``; run the reset hook, then
        :meth:`finish_return` or :meth:`discard`. CLOSE: the object left the
        pool (it is closing, or the object outlived ``max_lifetime``) and its
        slot is free; the caller closes it. Releasing an object that
        :meth:`force_close` took is a quiet ``RETURNED``. Raises ``PoolError``
        for an object that is not in use from this pool.
        """
        if self.force_closed and self._forget_force_closed(obj):
            return RETURNED, None
        entry = self.entries.get(id(obj))
        if entry is None or entry.obj is not obj:
            raise PoolError(f"object {obj!r} was not acquired from this pool")
        if not entry.held:
            raise PoolError(f"object {obj!r} is not in use: it was already released")
        self._unhold(entry)
        self.released += 1
        if self._leaving(entry, now):
            self._put_back(entry, now)
            return CLOSE, entry
        if self.resets:
            self.returning[entry.key] = entry
            return RESET, entry
        self._hand_entry(entry, now)
        return RETURNED, None

    def finish_return(self, entry: Entry[T], now: float) -> Entry[T] | None:
        """Reset succeeded: hand the object on. Returns the entry if it must be closed."""
        if self.returning.pop(entry.key, None) is None:
            return None  # force-closed by aclose() while resetting
        return self._put_back(entry, now)

    def _forget_force_closed(self, obj: object) -> bool:
        held = self.force_closed.get(id(obj))
        if held is obj:
            del self.force_closed[id(obj)]
            return True
        return False

    def _leaving(self, entry: Entry[T], now: float) -> bool:
        expires_at = entry.expires_at
        return self.closed or (expires_at is not None and now >= expires_at)

    def _put_back(self, entry: Entry[T], now: float) -> Entry[T] | None:
        if self._leaving(entry, now):
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

    # -- background closes --------------------------------------------------------------

    def closing_started(self, count: int = 1) -> None:
        """``count`` objects that left the pool are being closed in the background."""
        self.closing += count
        if self.closing > self.closing_peak:
            self.closing_peak = self.closing

    def closing_finished(self) -> None:
        """One background close finished (or gave up)."""
        self.closing -= 1
        self._maybe_drained()

    # -- hand-off ----------------------------------------------------------------------

    def _hand_entry(self, entry: Entry[T], now: float) -> None:
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.entry = entry
            waiter.kind = self._lend(entry, now)
            waiter.wake()
        else:
            entry.idle_since = now
            self.idle.append(entry)

    def _hand_capacity(self) -> None:
        if self.waiters and self.size + self.pending < self.max_size:
            waiter = self.waiters.popleft()
            waiter.kind = CREATE
            self.pending += 1
            waiter.wake()

    def notify_when_drained(self, event: _Wakeable) -> bool:
        """Set ``event`` once nothing is outstanding; True if that is already so."""
        if self.outstanding == 0:
            return True
        self.drained = event
        return False

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
        self.idle = kept
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
