"""User sessions with an inactivity timeout, a per-session byte limit and leases.

:class:`SessionManager` keeps each session's data in memory, measures it with
:func:`~memwarden.sizeof.deep_sizeof` after every update, refuses updates
that would take a session past ``max_session_bytes`` (the old data stays),
and optionally charges the bytes to a :class:`~memwarden.budget.MemoryManager`
so sessions compete fairly with the rest of the service for memory. Session
charges are non-evictable reservations at ``budget_priority`` (75 by default,
above NORMAL requests: storing a finished result is not starved by new work)
and wait at most ``budget_timeout`` seconds.

:meth:`SessionManager.get_or_create` keeps one session per user key. The key
table is bounded (``max_keys``, least recently used key forgotten first; its
session lives on until it ends or expires) and forgets the key of every
session that ends or expires. Concurrent calls for one key create one session.

Sessions expire after ``timeout`` seconds without access. A session that is
*leased* (``async with manager.acquire(session_id)``) or being updated never
expires; its idle time starts again when the last lease is released.

The table of sessions is a synchronous core (``memwarden._session_table``):
no ``await`` happens while it is inspected or changed, so it is consistent at
every checkpoint. Updates to one session are serialized by a per-session lock;
updates to different sessions run concurrently. All methods must be called
from one event loop (asyncio or trio, through anyio).

Session ids are secrets (192 random bits from :mod:`secrets`); log lines and
error messages show only their first 8 characters.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from ._session_table import _Entry, _SessionTable
from ._validate import check_float, check_int, check_name, check_timeout
from .errors import SessionMemoryError, SessionNotFoundError
from .sizeof import deep_sizeof
from .units import GiB, format_size

__all__ = ["SessionData", "SessionManager", "SessionStats"]

logger = logging.getLogger("memwarden.sessions")

# Past this many budget allocations for one session, try to merge them into one.
_MAX_CHUNKS = 4

# Above Priority.NORMAL (50): a finished result waits for bytes ahead of new requests.
_SESSION_PRIORITY = 75


class _Budget(Protocol):
    """The part of :class:`memwarden.budget.MemoryManager` sessions use."""

    def acquire(
        self,
        nbytes: int,
        *,
        key: str | None = ...,
        priority: int = ...,
        timeout: float | None = ...,
        evictable: bool = ...,
    ) -> Awaitable[Any]: ...

    def try_acquire(
        self, nbytes: int, *, key: str | None = ..., priority: int = ..., evictable: bool = ...
    ) -> Any: ...

    def release(self, allocation_or_key: Any) -> bool: ...

    def split(
        self,
        allocation: Any,
        nbytes: int,
        *,
        key: str | None = ...,
        priority: int = ...,
        evictable: bool = ...,
    ) -> Any: ...


@dataclass
class SessionData:
    """A snapshot of one session: its id, a copy of its data, timestamps and size.

    ``data`` is a shallow copy; change a session through
    :meth:`SessionManager.update_session` so its size is re-measured.
    Timestamps come from the manager's clock (``time.monotonic`` by default).
    """

    session_id: str
    data: dict[str, Any]
    created_at: float
    last_access: float
    nbytes: int


@dataclass(frozen=True)
class SessionStats:
    """Counters and gauges of a :class:`SessionManager`, with high-water marks."""

    sessions: int
    """Live sessions now."""
    leased: int
    """Live sessions with at least one lease."""
    total_bytes: int
    """Sum of the live sessions' measured sizes."""
    created: int
    expired: int
    """Sessions removed for inactivity (sweeps, lookups and ``expire_idle``)."""
    ended: int
    """Sessions removed by ``end_session``."""
    rejected_updates: int
    """Creates and updates refused for exceeding ``max_session_bytes``."""
    peak_sessions: int
    peak_bytes: int
    """Highest ``total_bytes`` seen."""
    peak_session_bytes: int
    """Largest single session size seen."""
    budget_bytes: int = 0
    """Bytes currently charged to the budget (>= ``total_bytes`` when a budget is set)."""
    keys: int = 0
    """User keys (``get_or_create``) that name a live session now."""
    peak_keys: int = 0
    """Most keys held at once."""
    keys_evicted: int = 0
    """Keys forgotten because the key table was full (their sessions lived on)."""

    def to_dict(self) -> dict[str, int]:
        """The figures as a JSON-able dict."""
        return asdict(self)


def _label(session_id: str) -> str:
    return f"{session_id[:8]}…" if len(session_id) > 8 else session_id


def _check_id(session_id: object) -> str:
    if not isinstance(session_id, str):
        raise TypeError(f"session_id must be a str, got {type(session_id).__name__} {session_id!r}")
    return session_id


class _Lease:
    """``async with manager.acquire(id) as session``: pins the session while held."""

    __slots__ = ("_entry", "_manager", "_session_id")

    def __init__(self, manager: SessionManager, session_id: str) -> None:
        self._manager = manager
        self._session_id = session_id
        self._entry: _Entry | None = None

    async def __aenter__(self) -> SessionData:
        if self._entry is not None:
            raise RuntimeError("this lease is already held; call acquire() again")
        await anyio.lowlevel.checkpoint()
        manager = self._manager
        entry = manager._live(self._session_id)
        if entry is None:
            raise SessionNotFoundError(f"no live session {_label(self._session_id)}")
        manager._table.lease(entry)
        manager._table.touch(entry, manager._clock())
        self._entry = entry
        return manager._snapshot(entry)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        table = self._manager._table
        table.unlease(entry)
        if not entry.ended:
            # Idle time counts from the release, not from when the lease began.
            table.touch(entry, self._manager._clock())


class SessionManager:
    """Sessions with an inactivity timeout, a per-session byte limit and budget accounting.

    ``timeout`` is seconds of inactivity before a session expires (``inf``:
    never). ``max_session_bytes`` bounds each session's measured size.
    ``budget`` (a :class:`~memwarden.budget.MemoryManager`, optional) is charged
    each session's bytes as non-evictable reservations at ``budget_priority``
    (default 75, above NORMAL requests); ``budget_timeout`` bounds how long a
    create or update waits for them (default 30 s, ``None``: as long as it
    takes; wrap the call in ``anyio.fail_after`` for a per-call bound), then
    :class:`~memwarden.errors.AllocationTimeoutError`. ``max_keys`` bounds the
    key table of :meth:`get_or_create`. ``sizeof`` measures a session's data
    dict. Raises ``TypeError``/``ValueError`` naming a bad argument. Use from
    one event loop; not thread-safe.
    """

    def __init__(
        self,
        *,
        timeout: float = 1800.0,
        max_session_bytes: int = 2 * GiB,
        budget: _Budget | None = None,
        sizeof: Callable[[Any], int] = deep_sizeof,
        clock: Callable[[], float] = time.monotonic,
        budget_timeout: float | None = 30.0,
        budget_priority: int = _SESSION_PRIORITY,
        max_keys: int = 100_000,
    ) -> None:
        self._timeout = check_float("timeout", timeout, positive=True, allow_inf=True)
        self._max_bytes = check_int("max_session_bytes", max_session_bytes, minimum=1)
        if budget is not None:
            missing = [
                name
                for name in ("acquire", "try_acquire", "release")
                if not callable(getattr(budget, name, None))
            ]
            if missing:
                raise TypeError(
                    f"budget must be a MemoryManager (acquire/try_acquire/release), "
                    f"got {type(budget).__name__} {budget!r} lacking {', '.join(missing)}"
                )
        if not callable(sizeof):
            raise TypeError(f"sizeof must be callable, got {type(sizeof).__name__} {sizeof!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        self._budget_timeout = check_timeout("budget_timeout", budget_timeout)
        self._budget_priority = check_int("budget_priority", budget_priority, minimum=None)
        self._budget = budget
        self._sizeof = sizeof
        self._clock = clock
        self._table = _SessionTable(check_int("max_keys", max_keys, minimum=1))
        self._key_counter = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """Seconds of inactivity after which a session expires."""
        return self._timeout

    @property
    def max_session_bytes(self) -> int:
        """The per-session byte limit."""
        return self._max_bytes

    @property
    def budget_priority(self) -> int:
        """Budget priority of the sessions' charges."""
        return self._budget_priority

    @property
    def budget_timeout(self) -> float | None:
        """Seconds a create or update waits for budget bytes (None: no bound)."""
        return self._budget_timeout

    @property
    def max_keys(self) -> int:
        """How many user keys :meth:`get_or_create` remembers at most."""
        return self._table.max_keys

    def __len__(self) -> int:
        """Number of live sessions (including idle ones not yet swept)."""
        return len(self._table)

    def __contains__(self, session_id: object) -> bool:
        """Whether ``session_id`` names a live session; does not count as an access."""
        return session_id in self._table

    # -- public API -------------------------------------------------------------------------

    async def create_session(self, *, charge_from: Any = None, **data: Any) -> str:
        """Create a session holding ``data`` and return its id (192 random bits).

        Raises :class:`SessionMemoryError` if ``data`` measures more than
        ``max_session_bytes``. With a budget, waits for the bytes; a
        cancellation or budget timeout there creates nothing and holds nothing.
        ``charge_from`` (an :class:`~memwarden.budget.Allocation` of the same
        budget, such as the request's reservation) pays for the bytes when it
        holds enough, without waiting (see :meth:`MemoryManager.split`).
        """
        source = self._source(charge_from)
        await anyio.lowlevel.checkpoint()
        return (await self._create(data, source)).session_id

    async def get_or_create(self, key: str, *, charge_from: Any = None, **data: Any) -> SessionData:
        """Return a snapshot of the session named by the user ``key``, creating it if needed.

        Like ``dict.setdefault``: ``data`` is stored only when the session is
        created here; when ``key`` already names a live session it is returned
        (and marked accessed) unchanged. Concurrent calls for one key create
        exactly one session: the others wait for that creation and return its
        session. If the creation fails (too big, budget timeout, cancelled), it
        leaves no session, no key and no bytes, and a waiting call creates the
        session itself with its own ``data``.

        The key table holds at most ``max_keys`` keys; when it is full the
        least recently used key is forgotten (its session lives on until it is
        ended or expires, reachable by id). A key is forgotten when its session
        ends or expires, so the next call creates a new session.

        ``charge_from`` is :meth:`create_session`'s. Raises
        ``TypeError``/``ValueError`` naming ``key`` for a non-str or empty key,
        and what :meth:`create_session` raises.
        """
        check_name("key", key)
        source = self._source(charge_from)
        await anyio.lowlevel.checkpoint()
        table = self._table
        while True:
            entry = table.find_key(key)
            if entry is not None:
                now = self._clock()
                if not table.is_idle(entry, now, self._timeout):
                    table.touch(entry, now)
                    return self._snapshot(entry)
                self._remove(entry, expired=True, now=now)  # forgets the key too
            token = anyio.Event()
            creator = table.claim_key(key, token)
            if creator is None:
                break
            await creator.wait()
        try:
            entry = await self._create(data, source)
            table.bind_key(key, entry)  # no await since add(): the key names a live session
        finally:
            table.settle_key(key, token)
            token.set()
        return self._snapshot(entry)

    async def update_session(
        self, session_id: str, *, charge_from: Any = None, **data: Any
    ) -> None:
        """Merge ``data`` into the session's data, re-measure it and account the change.

        Raises :class:`SessionNotFoundError` for an unknown, ended or expired
        id, and :class:`SessionMemoryError` (naming the session, the bytes and
        the limit) when the merged data would exceed ``max_session_bytes``;
        the old data is then left intact. With a budget, growth waits for the
        extra bytes: a cancellation or timeout leaves the old data and the old
        charge intact. ``charge_from`` pays for growth from a held allocation
        without waiting, as for :meth:`create_session`. Concurrent updates of
        one session run one at a time.
        """
        _check_id(session_id)
        source = self._source(charge_from)
        await anyio.lowlevel.checkpoint()
        entry = self._live(session_id)
        if entry is None:
            raise SessionNotFoundError(f"no live session {_label(session_id)}")
        self._table.pin(entry)  # an in-flight update pins the session against expiry
        try:
            if entry.lock is None:
                entry.lock = anyio.Lock()
            async with entry.lock:
                if entry.ended:
                    raise SessionNotFoundError(f"session {_label(session_id)} ended")
                merged = {**entry.data, **data}
                nbytes = self._measure(merged)
                if nbytes > self._max_bytes:
                    self._table.reject()
                    raise SessionMemoryError(
                        f"session {_label(session_id)}: update to {nbytes} bytes "
                        f"({format_size(nbytes)}) exceeds max_session_bytes="
                        f"{self._max_bytes} ({format_size(self._max_bytes)}); "
                        f"the session keeps its previous {entry.nbytes} bytes"
                    )
                if self._budget is not None:
                    await self._charge(entry, nbytes, source)
                self._table.resize(entry, merged, nbytes)
        finally:
            self._table.unpin(entry, self._clock())

    def get_session(self, session_id: str) -> SessionData | None:
        """Return a snapshot of the session and mark it accessed, or ``None``.

        A session idle past the timeout (and not leased) is expired here and
        ``None`` is returned. Raises ``TypeError`` for a non-str id.
        """
        _check_id(session_id)
        entry = self._live(session_id)
        if entry is None:
            return None
        self._table.touch(entry, self._clock())
        return self._snapshot(entry)

    def acquire(self, session_id: str) -> AbstractAsyncContextManager[SessionData]:
        """Lease a session: ``async with manager.acquire(id) as session: ...``.

        While any lease is held the session never expires (cleanup, lookups
        and :meth:`expire_idle` skip it); leases nest and count. Entering
        raises :class:`SessionNotFoundError` for an unknown or expired id.
        :meth:`end_session` still ends a leased session; the lease's exit is
        then a no-op.
        """
        return _Lease(self, _check_id(session_id))

    async def end_session(self, session_id: str) -> bool:
        """End a session now and return its budget bytes; False if it was not live."""
        _check_id(session_id)
        await anyio.lowlevel.checkpoint()
        entry = self._live(session_id)
        if entry is None:
            return False
        self._remove(entry, expired=False)
        return True

    async def cleanup_inactive_sessions(self) -> int:
        """Expire every unleased session idle for ``timeout`` seconds; return how many.

        Meant to run periodically (the Warden's supervisor does). Cost is
        proportional to the sessions removed plus the leased ones skipped.
        """
        await anyio.lowlevel.checkpoint()
        now = self._clock()
        expired = self._table.idle_entries(now, self._timeout, None)
        for entry in expired:
            self._remove(entry, expired=True, now=now)
        if expired:
            logger.info("expired %d inactive sessions", len(expired))
        return len(expired)

    async def expire_idle(self, *, max_count: int | None = None, min_idle: float = 0.0) -> int:
        """Expire least-recently-used unleased sessions idle for ``min_idle`` seconds or more.

        At most ``max_count`` are expired (``None``: all that qualify); leased
        sessions and sessions being updated are skipped. Used under CRITICAL
        pressure to shed memory. Returns how many were expired; each is logged.
        Raises ``TypeError``/``ValueError`` for bad arguments.
        """
        if max_count is not None:
            check_int("max_count", max_count)
        min_idle = check_float("min_idle", min_idle, minimum=0.0)
        await anyio.lowlevel.checkpoint()
        now = self._clock()
        victims = self._table.idle_entries(now, min_idle, max_count)
        for entry in victims:
            logger.warning(
                "expiring session %s under memory pressure (idle %.1fs, %d bytes)",
                _label(entry.session_id),
                now - entry.last_access,
                entry.nbytes,
            )
            self._remove(entry, expired=True, now=now, log=False)
        return len(victims)

    def stats(self) -> SessionStats:
        """Current figures and high-water marks."""
        table = self._table
        return SessionStats(
            sessions=len(table),
            leased=table.leased,
            total_bytes=table.total_bytes,
            created=table.created,
            expired=table.expired,
            ended=table.ended,
            rejected_updates=table.rejected_updates,
            peak_sessions=table.peak_sessions,
            peak_bytes=table.peak_bytes,
            peak_session_bytes=table.peak_session_bytes,
            budget_bytes=sum(entry.accounted for entry in table),
            keys=table.keys,
            peak_keys=table.peak_keys,
            keys_evicted=table.keys_evicted,
        )

    # -- internals --------------------------------------------------------------------------

    def _source(self, charge_from: Any) -> Any:
        """Check ``charge_from``: None, or an Allocation of this manager's budget."""
        if charge_from is None:
            return None
        from .budget import Allocation

        if not isinstance(charge_from, Allocation):
            raise TypeError(
                "charge_from must be an Allocation or None, got "
                f"{type(charge_from).__name__} {charge_from!r}"
            )
        if self._budget is None:
            raise ValueError(f"charge_from={charge_from!r} given, but sessions have no budget")
        return charge_from

    async def _create(self, data: dict[str, Any], source: Any = None) -> _Entry:
        """Measure ``data``, wait for its budget bytes and add the session; raise adding none."""
        nbytes = self._measure(data)
        if nbytes > self._max_bytes:
            self._table.reject()
            raise SessionMemoryError(
                f"new session: data of {nbytes} bytes ({format_size(nbytes)}) exceeds "
                f"max_session_bytes={self._max_bytes} ({format_size(self._max_bytes)})"
            )
        session_id = secrets.token_urlsafe(24)
        while session_id in self._table:  # 2**-192 odds; keeps ids unique by construction
            session_id = secrets.token_urlsafe(24)
        entry = _Entry(session_id, data, nbytes, self._clock())
        if self._budget is not None:
            # No await between the grant and add(): the grant cannot be lost.
            entry.allocations.append(await self._acquire(entry, nbytes, source))
            entry.created_at = entry.last_access = self._clock()
        self._table.add(entry)
        return entry

    def _measure(self, data: dict[str, Any]) -> int:
        nbytes = self._sizeof(data)
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise TypeError(
                f"sizeof must return an int >= 0, got {type(nbytes).__name__} {nbytes!r}"
            )
        return nbytes

    def _snapshot(self, entry: _Entry) -> SessionData:
        return SessionData(
            entry.session_id, dict(entry.data), entry.created_at, entry.last_access, entry.nbytes
        )

    def _live(self, session_id: str) -> _Entry | None:
        entry = self._table.get(session_id)
        if entry is None:
            return None
        now = self._clock()
        if self._table.is_idle(entry, now, self._timeout):
            self._remove(entry, expired=True, now=now)
            return None
        return entry

    def _remove(
        self, entry: _Entry, *, expired: bool, now: float | None = None, log: bool = True
    ) -> None:
        self._table.remove(entry, expired=expired)
        allocations, entry.allocations = entry.allocations, []
        if self._budget is not None:
            for allocation in allocations:
                self._budget.release(allocation)
        if expired and log:
            # One line per session at DEBUG; sweeps summarise at INFO.
            idle = (self._clock() if now is None else now) - entry.last_access
            logger.debug(
                "session %s expired after %.1fs idle (%d bytes)",
                _label(entry.session_id),
                idle,
                entry.nbytes,
            )

    def _key(self, entry: _Entry) -> str:
        self._key_counter += 1
        return f"session:{entry.session_id[:8]}:{self._key_counter}"

    async def _acquire(self, entry: _Entry, nbytes: int, source: Any = None) -> Any:
        assert self._budget is not None
        if source is not None:
            try:
                grant = self._budget.split(
                    source,
                    nbytes,
                    key=self._key(entry),
                    priority=self._budget_priority,
                    evictable=False,
                )
            except ValueError as exc:  # an allocation of another budget
                raise ValueError(f"charge_from: {exc}") from None
            if grant is not None:
                return grant
        return await self._budget.acquire(
            nbytes,
            key=self._key(entry),
            priority=self._budget_priority,
            timeout=self._budget_timeout,
            evictable=False,
        )

    async def _charge(self, entry: _Entry, nbytes: int, source: Any = None) -> None:
        """Make the budget charge for ``entry`` cover ``nbytes``; raise leaving it unchanged."""
        budget = self._budget
        assert budget is not None
        accounted = entry.accounted
        if nbytes > accounted:
            grant = await self._acquire(entry, nbytes - accounted, source)
            if entry.ended:  # ended while we waited: the new bytes are not needed
                budget.release(grant)
                raise SessionNotFoundError(f"session {_label(entry.session_id)} ended")
            entry.allocations.append(grant)
            if len(entry.allocations) > _MAX_CHUNKS:
                self._rebase(entry, nbytes)
        elif nbytes < accounted and not self._rebase(entry, nbytes):
            # Could not swap for one exact grant without waiting: return whole
            # allocations that the smaller size no longer needs, largest first.
            surplus = accounted - nbytes
            kept = []
            for allocation in sorted(entry.allocations, key=lambda a: a.nbytes, reverse=True):
                if allocation.nbytes <= surplus:
                    budget.release(allocation)
                    surplus -= allocation.nbytes
                else:
                    kept.append(allocation)
            entry.allocations = kept

    def _rebase(self, entry: _Entry, nbytes: int) -> bool:
        """Replace the session's allocations by one of exactly ``nbytes``, if granted now."""
        budget = self._budget
        assert budget is not None
        if nbytes == 0:
            replacement = []
        else:
            grant = budget.try_acquire(
                nbytes, key=self._key(entry), priority=self._budget_priority, evictable=False
            )
            if grant is None:
                return False
            replacement = [grant]
        old, entry.allocations = entry.allocations, replacement
        for allocation in old:
            budget.release(allocation)
        return True
