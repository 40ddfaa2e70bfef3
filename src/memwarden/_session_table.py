"""The synchronous core of :class:`memwarden.sessions.SessionManager`.

A plain state machine with no ``await``: the table of live sessions kept in
least-recently-used order, their byte totals, leases and counters, and the
bounded table of user keys (``get_or_create``) with the creations in flight.
The async shell decides nothing the table decides; it only waits for budget
bytes or for another task's creation, and runs under the event loop. Every
method is O(1) except the sweeps, which are O(sessions they remove + leased
sessions they skip).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

__all__: list[str] = []


class _Entry:
    """One live session: its data, timestamps, size, leases and budget charge."""

    __slots__ = (
        "allocations",
        "busy",
        "created_at",
        "data",
        "ended",
        "key",
        "last_access",
        "leases",
        "lock",
        "nbytes",
        "session_id",
    )

    def __init__(self, session_id: str, data: dict[str, Any], nbytes: int, now: float) -> None:
        self.session_id = session_id
        self.data = data
        self.nbytes = nbytes
        self.created_at = now
        self.last_access = now
        self.leases = 0  # user leases (SessionManager.acquire)
        self.busy = 0  # in-flight updates; they pin the session like a lease
        self.ended = False
        self.allocations: list[Any] = []  # budget Allocations charged for this session
        self.lock: Any = None  # anyio.Lock, created by the shell on first update
        self.key: str | None = None  # the user key naming this session, while it does

    @property
    def pinned(self) -> bool:
        return self.leases > 0 or self.busy > 0

    @property
    def accounted(self) -> int:
        return sum(a.nbytes for a in self.allocations)


class _SessionTable:
    """Live sessions in LRU order (oldest access first) with exact totals and peaks.

    Also maps user keys to sessions, at most ``max_keys`` of them in LRU order
    (oldest lookup first). Binding a key to a full table forgets the least
    recently used key; its session lives on, reachable by id. Removing a
    session forgets its key.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Entry] = OrderedDict()
        self._creating: dict[str, Any] = {}  # key -> the creator's token, while it creates
        self.keys_evicted = 0
        self.peak_keys = 0
        self.total_bytes = 0
        self.leased = 0  # sessions with at least one user lease
        self.created = 0
        self.expired = 0
        self.ended = 0
        self.rejected_updates = 0
        self.peak_sessions = 0
        self.peak_bytes = 0
        self.peak_session_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def __iter__(self) -> Iterator[_Entry]:
        return iter(self._entries.values())

    def get(self, session_id: str) -> _Entry | None:
        return self._entries.get(session_id)

    def add(self, entry: _Entry) -> None:
        if entry.session_id in self._entries:
            raise AssertionError(f"duplicate session id {entry.session_id!r}")
        self._entries[entry.session_id] = entry
        self.created += 1
        self.total_bytes += entry.nbytes
        self._peaks(entry.nbytes)

    def touch(self, entry: _Entry, now: float) -> None:
        # Times only move forward, so appending keeps the order sorted by last_access.
        entry.last_access = max(entry.last_access, now)
        self._entries.move_to_end(entry.session_id)

    def resize(self, entry: _Entry, data: dict[str, Any], nbytes: int) -> None:
        self.total_bytes += nbytes - entry.nbytes
        entry.data = data
        entry.nbytes = nbytes
        self._peaks(nbytes)

    def lease(self, entry: _Entry) -> None:
        if entry.leases == 0:
            self.leased += 1
        entry.leases += 1

    def unlease(self, entry: _Entry) -> None:
        if entry.leases <= 0:
            raise AssertionError(f"session {entry.session_id!r} is not leased")
        entry.leases -= 1
        if entry.leases == 0 and not entry.ended:
            self.leased -= 1

    def pin(self, entry: _Entry) -> None:
        """An update is in flight: the session must not expire until :meth:`unpin`."""
        entry.busy += 1

    def unpin(self, entry: _Entry, now: float) -> None:
        """The update finished (or failed): idle time starts again from ``now``."""
        if entry.busy <= 0:
            raise AssertionError(f"session {entry.session_id!r} is not pinned")
        entry.busy -= 1
        if not entry.ended:
            self.touch(entry, now)

    def reject(self) -> None:
        """Count a create or update refused for its size."""
        self.rejected_updates += 1

    @property
    def keys(self) -> int:
        """User keys that name a live session now."""
        return len(self._keys)

    def find_key(self, key: str) -> _Entry | None:
        """The session ``key`` names, marked as the most recently used key; or None."""
        entry = self._keys.get(key)
        if entry is not None:
            self._keys.move_to_end(key)
        return entry

    def claim_key(self, key: str, token: Any) -> Any:
        """Start creating ``key``'s session: None if the caller may, else the creator's token.

        The caller that gets None must call :meth:`settle_key` with its token
        whether the creation succeeds or fails.
        """
        current = self._creating.get(key)
        if current is not None:
            return current
        self._creating[key] = token
        return None

    def settle_key(self, key: str, token: Any) -> None:
        """The creation claimed with ``token`` is over (created, failed or cancelled)."""
        if self._creating.get(key) is token:
            del self._creating[key]

    def creating(self, key: str) -> bool:
        """Whether a creation for ``key`` is in flight."""
        return key in self._creating

    def bind_key(self, key: str, entry: _Entry) -> _Entry | None:
        """Name the live ``entry`` by ``key``; return the session whose key was forgotten.

        ``key`` must not name a session already, and ``entry`` must be live and
        unnamed. When the table holds ``max_keys`` keys, the least recently
        used one is forgotten first (its session is not touched).
        """
        if key in self._keys or entry.key is not None or entry.ended:
            raise AssertionError(f"cannot bind key {key!r} to session {entry.session_id!r}")
        evicted = None
        if len(self._keys) >= self.max_keys:
            _, evicted = self._keys.popitem(last=False)
            evicted.key = None
            self.keys_evicted += 1
        self._keys[key] = entry
        entry.key = key
        if len(self._keys) > self.peak_keys:
            self.peak_keys = len(self._keys)
        return evicted

    def remove(self, entry: _Entry, *, expired: bool) -> None:
        del self._entries[entry.session_id]
        if entry.key is not None:
            del self._keys[entry.key]
            entry.key = None
        entry.ended = True
        self.total_bytes -= entry.nbytes
        if entry.leases > 0:
            self.leased -= 1
        if expired:
            self.expired += 1
        else:
            self.ended += 1

    def is_idle(self, entry: _Entry, now: float, idle: float) -> bool:
        return not entry.pinned and now - entry.last_access >= idle

    def idle_entries(self, now: float, min_idle: float, max_count: int | None) -> list[_Entry]:
        """Unpinned entries idle for at least ``min_idle``, least recently used first."""
        found: list[_Entry] = []
        if max_count == 0:
            return found
        for entry in self._entries.values():
            if now - entry.last_access < min_idle:
                break  # every later entry was accessed more recently
            if entry.pinned:
                continue
            found.append(entry)
            if max_count is not None and len(found) >= max_count:
                break
        return found

    def _peaks(self, nbytes: int) -> None:
        count = len(self._entries)
        if count > self.peak_sessions:
            self.peak_sessions = count
        if self.total_bytes > self.peak_bytes:
            self.peak_bytes = self.total_bytes
        if nbytes > self.peak_session_bytes:
            self.peak_session_bytes = nbytes
