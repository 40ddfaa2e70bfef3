"""Reserved bytes of every process governing one memory cgroup, in one small shared file.

Several worker processes in one container (``uvicorn --workers 2``, gunicorn)
see each other's *used* memory through the cgroup, but not each other's
granted-but-untouched reservations: two workers could each grant the last
200 MB and then both touch it. A :class:`ReservationTable` closes that gap.
Each process owns one slot (pid, start time, reserved bytes) in a file mapped
by every process of the cgroup; a budget attached to it counts the other live
slots' reserved bytes as reserved too, and holds an exclusive ``flock`` from
reading them to publishing its own new figure, so two grants in different
processes cannot both take the same room.

Written by hand because no maintained library offers a cross-process byte
ledger keyed by cgroup; it uses only ``mmap``, ``fcntl.flock`` and ``/proc``.

A slot whose process is gone (killed, or its pid reused by a process started
later) is reclaimed: liveness is checked against the pid's start time in
``/proc/PID/stat`` every :data:`REAP_INTERVAL` seconds and when a slot is
claimed. A process forked with a table re-opens the file and claims its own
slot on first use (a ``flock`` is shared by a parent and child holding the
same open file, so the child must not reuse the parent's). The last process to
close the table removes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["REAP_INTERVAL", "ReservationTable", "default_table_path"]

_log = logging.getLogger("memwarden.budget")

_MAGIC = b"MWRT0001"
#: Slots in one table: more worker processes than this in one cgroup share nothing.
SLOTS = 256
_SLOT = struct.Struct("=qqq")  # pid, start time (clock ticks since boot), reserved bytes
_HEADER = struct.Struct("=8sq")  # magic, slots in use (highest claimed index + 1)
_SIZE = _HEADER.size + SLOTS * _SLOT.size

#: Seconds between liveness checks of the other slots' processes.
REAP_INTERVAL = 1.0


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def default_table_path(cgroup_path: str) -> Path:
    """Where the table of the memory cgroup ``cgroup_path`` lives (``/dev/shm`` if usable).

    Workers of one container share ``/dev/shm`` and name their cgroup the
    same way, so they find the same file; other containers have their own.
    """
    import hashlib  # deferred: it loads OpenSSL, which `import memwarden` should not

    digest = hashlib.sha256(cgroup_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"memwarden-{digest}.reservations"


class ReservationTable:
    """One process' view of a shared table of reserved bytes (see the module docstring).

    ``path`` is the file (created if missing). ``identity`` returns this
    process' ``(pid, start_time)`` and ``start_time_of(pid)`` another's (None
    when it is gone); both default to ``/proc`` and exist for tests. Raises
    ``OSError`` when the file cannot be opened or mapped. Thread-safe for use
    under its owner's lock (the budget's ledger lock).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        identity: Callable[[], tuple[int, int]] | None = None,
        start_time_of: Callable[[int], int | None] = _start_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._identity = identity if identity is not None else _own_identity
        self._start_time_of = start_time_of
        self._clock = clock
        self._guard = threading.Lock()
        self._fd = -1
        self._opened_by = 0
        self._map: mmap.mmap | None = None
        self._words: memoryview | None = None
        self._slot = -1
        self._ident: tuple[int, int] = (0, 0)
        self._next_reap = -float("inf")
        self._others = 0
        self._open()

    # ------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _SIZE:
                    os.ftruncate(fd, _SIZE)
                mapped = mmap.mmap(fd, _SIZE)
                magic, _ = _HEADER.unpack_from(mapped, 0)
                if magic != _MAGIC:
                    mapped[:_SIZE] = bytes(_SIZE)
                    _HEADER.pack_into(mapped, 0, _MAGIC, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._opened_by = os.getpid()
        self._map = mapped
        self._words = memoryview(mapped)[_HEADER.size :].cast("q")
        self._slot = -1
        self._ident = self._identity()

    def close(self) -> None:
        """Free this process' slot and unmap the file (idempotent)."""
        with self._guard:
            if self._map is None:
                return
            if self._slot >= 0 and self._opened_by == os.getpid():
                with self._flocked():
                    self._write_slot(0, 0, 0)
                    self._reap()
                    words = self._words
                    assert words is not None
                    if not any(words[i * 3] for i in range(self._in_use())):
                        # The last one out removes the file (an opener racing this
                        # notices the unlinked file at its next lock and re-opens).
                        with contextlib.suppress(OSError):
                            os.unlink(self.path)
            self._release_map()

    def _release_map(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._map is None

    # ------------------------------------------------------------ the lock

    def _flocked(self) -> _Flock:
        return _Flock(self._fd)

    def lock(self) -> None:
        """Take the cross-process lock and read the other processes' reserved bytes."""
        if self._opened_by != os.getpid() or (
            self._clock() >= self._next_reap and os.fstat(self._fd).st_nlink == 0
        ):
            # Forked: re-open so this process' flock is its own, and claim a fresh
            # slot. Unlinked by the last process leaving: re-open the live file.
            if self._words is not None:
                self._words.release()
                self._words = None
            if self._map is not None:
                self._map.close()
            os.close(self._fd)
            self._open()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self._slot < 0:
                self._claim()
            now = self._clock()
            if now >= self._next_reap:
                self._next_reap = now + REAP_INTERVAL
                self._reap()
            self._others = self._sum_others()
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise

    def unlock(self, reserved: int) -> None:
        """Publish this process' ``reserved`` bytes and release the cross-process lock."""
        try:
            if self._slot >= 0 and self._words is not None:
                self._words[self._slot * 3 + 2] = reserved
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    @property
    def others(self) -> int:
        """The other live processes' reserved bytes, as read by the last :meth:`lock`."""
        return self._others

    def processes(self) -> int:
        """How many processes (this one included) hold a slot now."""
        with self._guard, self._flocked():
            words = self._words
            assert words is not None
            used = self._in_use()
            return sum(1 for i in range(used) if words[i * 3])

    # ------------------------------------------------------------- private

    def _in_use(self) -> int:
        assert self._map is not None
        return int(_HEADER.unpack_from(self._map, 0)[1])

    def _sum_others(self) -> int:
        words = self._words
        assert words is not None
        mine = self._slot
        total = 0
        for i in range(self._in_use()):
            if i != mine and words[i * 3]:
                total += words[i * 3 + 2]
        return total

    def _write_slot(self, pid: int, start: int, reserved: int) -> None:
        words = self._words
        assert words is not None
        words[self._slot * 3] = pid
        words[self._slot * 3 + 1] = start
        words[self._slot * 3 + 2] = reserved

    def _claim(self) -> None:
        self._reap()
        words = self._words
        assert words is not None and self._map is not None
        used = self._in_use()
        free = next((i for i in range(used) if not words[i * 3]), used)
        if free >= SLOTS:
            raise OSError(f"the reservation table {self.path} has no free slot")
        self._slot = free
        pid, start = self._ident
        self._write_slot(pid, start, 0)
        if free >= used:
            _HEADER.pack_into(self._map, 0, _MAGIC, free + 1)

    def _reap(self) -> None:
        """Free the slots of processes that are gone (or whose pid now names another)."""
        words = self._words
        assert words is not None
        for i in range(self._in_use()):
            if i == self._slot:
                continue
            pid = words[i * 3]
            if pid and self._start_time_of(pid) != words[i * 3 + 1]:
                words[i * 3] = words[i * 3 + 1] = words[i * 3 + 2] = 0

    def __repr__(self) -> str:
        return f"<ReservationTable {self.path} slot={self._slot} others={self._others}>"


class _Flock:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _own_identity() -> tuple[int, int]:
    pid = os.getpid()
    start = _start_time(pid)
    if start is None:  # pragma: no cover - /proc is always there on Linux
        raise OSError("cannot read this process' start time from /proc")
    return pid, start


def open_for_cgroup(cgroup_path: str | None) -> ReservationTable | None:
    """The table of ``cgroup_path``, or None (no cgroup, or the file is unusable: logged)."""
    if not cgroup_path:
        return None
    path = default_table_path(cgroup_path)
    try:
        return ReservationTable(path)
    except OSError as exc:
        _log.warning("reservations not shared with other processes (%s): %s", path, exc)
        return None
