"""Memory samples and the probes that take them.

A probe is anything with a cheap synchronous ``sample()`` returning a
:class:`MemorySample`. ``SystemProbe`` reads the machine or container,
``ProcessProbe`` one process' RSS, ``StaticProbe`` a value tests set by hand.

``SystemProbe`` and ``ProcessProbe`` read ``/proc`` and cgroup files with
``os.pread`` on descriptors opened once, instead of going through psutil on
every sample: psutil opens, reads and parses all of ``/proc/meminfo`` each
call and knows nothing of cgroup limits. psutil remains the fallback where
those files do not exist (macOS, Windows) and the source of child processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import psutil

from . import _cgroup
from ._cgroup import CgroupFormatError, join_root
from ._rss import process_rss, read_statm_rss
from ._validate import check_float, check_int

__all__ = [
    "MemorySample",
    "Probe",
    "ProcessProbe",
    "StaticProbe",
    "SystemProbe",
    "detect_memory_limit",
]

_log = logging.getLogger("memwarden.probes")


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading of memory use against a limit.

    ``used`` never counts reclaimable page cache; ``limit`` is the effective
    limit (the cgroup limit when it is lower than RAM).
    """

    timestamp: float
    used: int
    limit: int
    available: int
    rss: int | None
    source: str
    psi_some_avg10: float | None = None

    @property
    def fraction(self) -> float:
        """``used / limit`` (0.0 when the limit is unknown); may exceed 1.0."""
        return self.used / self.limit if self.limit > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of the fields plus ``fraction``."""
        return {
            "timestamp": self.timestamp,
            "used": self.used,
            "limit": self.limit,
            "available": self.available,
            "rss": self.rss,
            "source": self.source,
            "psi_some_avg10": self.psi_some_avg10,
            "fraction": self.fraction,
        }


@runtime_checkable
class Probe(Protocol):
    """Anything that can take a :class:`MemorySample` synchronously and cheaply."""

    def sample(self) -> MemorySample:
        """Take one sample; must not block for long (target < 20 µs)."""
        ...


class StaticProbe:
    """A probe that reports whatever was last ``set()``: for tests and demos.

    Thread-safe: ``set`` and ``sample`` may be called from any thread.
    """

    def __init__(self, used: int = 0, limit: int = 1 << 30, *, rss: int | None = None) -> None:
        check_int("used", used)
        check_int("limit", limit, minimum=1)
        if rss is not None:
            check_int("rss", rss)
        self._lock = threading.Lock()
        self._used = used
        self._limit = limit
        self._rss = rss
        self.samples_taken = 0

    def set(self, *, used: int | None = None, limit: int | None = None) -> None:
        """Change the reported figures; unspecified ones keep their value.

        Raises ``TypeError``/``ValueError`` (leaving both unchanged) for bad input.
        """
        if used is not None:
            check_int("used", used)
        if limit is not None:
            check_int("limit", limit, minimum=1)
        with self._lock:
            if used is not None:
                self._used = used
            if limit is not None:
                self._limit = limit

    def set_fraction(self, fraction: float) -> None:
        """Set ``used`` to ``fraction * limit`` (convenient for pressure tests).

        ``fraction`` may exceed 1.0 (use beyond the limit). Raises
        ``TypeError`` for a non-number (``bool`` included) and ``ValueError``
        for a negative, NaN or infinite one, leaving ``used`` unchanged.
        """
        fraction = check_float("fraction", fraction, minimum=0.0)
        with self._lock:
            self._used = round(fraction * self._limit)

    @property
    def used(self) -> int:
        """The ``used`` figure reported now."""
        return self._used

    @property
    def limit(self) -> int:
        """The ``limit`` figure reported now."""
        return self._limit

    def sample(self) -> MemorySample:
        """Return a sample of the figures last set."""
        with self._lock:
            used, limit = self._used, self._limit
            self.samples_taken += 1
        return MemorySample(
            timestamp=time.time(),
            used=used,
            limit=limit,
            available=max(limit - used, 0),
            rss=self._rss,
            source="static",
        )


# --------------------------------------------------------------------------
# Reading /proc and cgroup files.

_SMALL = 256  # limit, usage, statm and pressure files are a line or two
_LARGE = 4096  # meminfo and memory.stat are 1-3 KiB on current kernels
# The kernel recomputes PSI averages every 2 s; reading more often than this
# returns the same avg10.
_PSI_PERIOD = 1.0


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _pread(fd: int, size: int) -> bytes:
    # Kernel files are generated on read; a full buffer means there may be more.
    data = os.pread(fd, size, 0)
    while len(data) == size:
        size *= 4
        data = os.pread(fd, size, 0)
    return data


def _close_fds(fds: list[int]) -> None:
    while fds:
        fd = fds.pop()
        with contextlib.suppress(OSError):
            os.close(fd)


@dataclass(frozen=True)
class _KernelView:
    """Where a :class:`SystemProbe`'s last cgroup sample came from, for kernel wake-ups.

    ``directory`` is the cgroup whose usage was read (where the limit binds),
    ``limit`` its effective limit and ``reclaimable`` the page cache bytes the
    sample left out of ``used`` (so ``used + reclaimable`` is the kernel's
    usage counter). ``root`` is the probe's root, to find PSI files under.
    """

    version: int
    directory: str
    limit: int
    reclaimable: int
    root: str


@dataclass(frozen=True)
class _Level:
    directory: str
    limit_fd: int | None
    usage_fd: int | None
    stat_fd: int | None


class SystemProbe:
    """Memory of the whole machine, or of the container this process runs in.

    The limit is the lowest of RAM and every cgroup memory limit on the path
    from this process' own cgroup (found through ``/proc/self/cgroup`` and
    ``/proc/self/mountinfo``) up to the cgroup mount root: ``memory.max`` on
    cgroup v2, ``memory.limit_in_bytes`` on v1 (where ``hierarchical_memory_limit``
    in ``memory.stat`` also reveals ancestors above the mount root). A limit
    at or above RAM (v1 prints ``9223372036854771712`` for "unlimited") or
    ``max`` counts as none.

    ``used`` is measured at the cgroup that holds the effective limit (its
    siblings share that limit): ``memory.current`` (v2) or
    ``memory.usage_in_bytes`` (v1) minus ``inactive_file`` from its
    ``memory.stat`` (v1: ``total_inactive_file``). That is the kubelet's
    "working set": inactive page cache is the first thing the kernel reclaims,
    while active file pages and tmpfs/shmem (which cgroup v2 counts inside
    ``file``) are not reliably reclaimable before the OOM killer acts.
    ``reclaimable="file"`` subtracts all page cache except shmem instead
    (v2 ``file - shmem``, v1 ``total_cache - total_shmem``): more optimistic.

    Without a cgroup limit: ``used = MemTotal - MemAvailable`` and
    ``limit = MemTotal`` from ``/proc/meminfo`` (psutil where that file does
    not exist). ``rss`` is this process' resident set (``/proc/self/statm``);
    ``psi_some_avg10`` comes from the cgroup's ``memory.pressure`` (v2) or
    ``/proc/pressure/memory``, ``None`` when unavailable; the kernel updates
    it every 2 s, so it is re-read at most once a second.

    Usage is read on every sample. Limits change rarely (``docker update``,
    a resized pod), so they are re-read at most every ``limit_refresh``
    seconds (``0`` re-reads them on every sample).

    Files that vanish or hold text that cannot be parsed never produce a
    guess: the sample falls back to the system figures, a warning is logged
    once per reason on ``memwarden.probes`` and :attr:`fallback_reason` says
    why. ``root`` relocates every path (for tests and for reading a host's
    ``/proc`` mounted elsewhere).

    Thread-safe: ``pread`` keeps no file offset, and a lock orders
    ``sample()`` against ``close()``. Raises ``ValueError`` from ``sample()``
    after :meth:`close`; ``TypeError``/``ValueError`` for bad arguments.
    """

    def __init__(
        self,
        *,
        root: str = "/",
        psi: bool = True,
        reclaimable: Literal["inactive_file", "file"] = "inactive_file",
        limit_refresh: float = 1.0,
    ) -> None:
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, got {type(root).__name__} {root!r}")
        self._limit_refresh = check_float("limit_refresh", limit_refresh, minimum=0.0)
        if not isinstance(psi, bool):
            raise TypeError(f"psi must be a bool, got {type(psi).__name__} {psi!r}")
        if reclaimable not in ("inactive_file", "file"):
            raise ValueError(f"reclaimable must be 'inactive_file' or 'file', got {reclaimable!r}")
        root = os.fspath(root)
        self._root = root
        self._reclaimable_mode = reclaimable
        self._lock = threading.Lock()
        self._fds: list[int] = []
        # Registered before anything is opened so a failure below leaks nothing.
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)
        self._closed = False
        self._warned: set[str] = set()
        self.fallback_reason: str | None = None
        """Why the last sample used a less precise source, or ``None``."""

        self._meminfo_fd = self._track(_open(join_root(root, "/proc/meminfo")))
        # This process' RSS is read by memwarden._rss; a relocated root has its own statm.
        self._statm_fd = (
            None if root == "/" else self._track(_open(join_root(root, "/proc/self/statm")))
        )
        self._ram = self._read_ram()

        self._version: int | None = None
        self._cgroup_path: str | None = None
        self._levels: tuple[_Level, ...] = ()
        self._binding: tuple[int, _Level] | None = None
        self._limits_due = 0.0
        pressure_path = join_root(root, "/proc/pressure/memory")
        location = _cgroup.locate(root)
        if location is not None:
            self._version = location.version
            self._cgroup_path = location.path
            self._levels = tuple(
                _Level(
                    directory=level.directory,
                    limit_fd=self._track(_open(level.limit_path)),
                    usage_fd=self._track(_open(level.usage_path)),
                    stat_fd=self._track(_open(level.stat_path)),
                )
                for level in location.levels
            )
            if location.pressure_path is not None:
                pressure_path = location.pressure_path
        self._psi_fd = self._track(_open(pressure_path)) if psi else None
        self._view: _KernelView | None = None
        self._psi_value: float | None = None
        self._psi_due = 0.0

    def _track(self, fd: int | None) -> int | None:
        if fd is not None:
            self._fds.append(fd)
        return fd

    def _read_ram(self) -> int:
        if self._meminfo_fd is not None:
            try:
                return _cgroup.parse_meminfo(_pread(self._meminfo_fd, _LARGE))[0]
            except (OSError, CgroupFormatError) as exc:
                self._note(f"/proc/meminfo unusable ({exc}); using psutil")
        return int(psutil.virtual_memory().total)

    def _note(self, reason: str) -> None:
        self.fallback_reason = reason
        if reason not in self._warned:
            self._warned.add(reason)
            _log.warning("SystemProbe: %s", reason)

    @property
    def cgroup_version(self) -> int | None:
        """1 or 2 when this process' memory cgroup was found, else ``None``."""
        return self._version

    @property
    def cgroup_path(self) -> str | None:
        """This process' memory cgroup as ``/proc/self/cgroup`` names it, or ``None``."""
        return self._cgroup_path

    @property
    def ram(self) -> int:
        """Total RAM in bytes (``MemTotal``), read once at construction."""
        return self._ram

    @property
    def root(self) -> str:
        """The directory every ``/proc`` and cgroup path is read under (``"/"`` normally)."""
        return self._root

    def _kernel_view(self) -> _KernelView | None:
        # The pressure monitor arms kernel wake-ups (cgroup v1 usage thresholds,
        # cgroup v2 memory.events) from the cgroup behind the last sample.
        return self._view

    def describe(self) -> dict[str, object]:
        """A JSON-able account of where figures come from (for reports)."""
        return {
            "cgroup_version": self._version,
            "cgroup_path": self._cgroup_path,
            "cgroup_directories": [level.directory for level in self._levels],
            "ram": self._ram,
            "reclaimable": self._reclaimable_mode,
            "psi": self._psi_fd is not None,
            "fallback_reason": self.fallback_reason,
        }

    def sample(self) -> MemorySample:
        """Take one sample (a few ``pread`` calls; no allocation beyond the result).

        Raises ``ValueError`` if the probe is closed.
        """
        with self._lock:
            if self._closed:
                raise ValueError("SystemProbe is closed")
            rss = self._rss()
            psi = self._psi() if self._psi_fd is not None else None
            figures = self._cgroup_figures() if self._levels else None
            source = "cgroup"
            if figures is None:
                self._view = None
                figures = self._system_figures()
                source = "system"
            used, limit = figures
            return MemorySample(
                timestamp=time.time(),
                used=used,
                limit=limit,
                available=max(limit - used, 0),
                rss=rss,
                source=source,
                psi_some_avg10=psi,
            )

    def _rss(self) -> int | None:
        if self._root == "/":
            return process_rss()
        if self._statm_fd is None:
            return None
        try:
            return read_statm_rss(self._statm_fd)
        except OSError:
            return None

    def _psi(self) -> float | None:
        assert self._psi_fd is not None
        now = time.monotonic()
        if now < self._psi_due:
            return self._psi_value
        try:
            self._psi_value = _cgroup.parse_psi_some_avg10(_pread(self._psi_fd, _SMALL))
            self._psi_due = now + _PSI_PERIOD
            return self._psi_value
        except (OSError, CgroupFormatError) as exc:
            # PSI can be compiled in yet disabled (reads fail with
            # EOPNOTSUPP): stop paying for a read that never succeeds.
            self._note(f"memory pressure (PSI) unreadable ({exc}); psi_some_avg10 is None")
            fd, self._psi_fd = self._psi_fd, None
            if fd in self._fds:
                self._fds.remove(fd)
                os.close(fd)
            return None

    def _cgroup_figures(self) -> tuple[int, int] | None:
        try:
            now = time.monotonic()
            if now >= self._limits_due:
                self._limits_due = 0.0  # stays due if reading fails below
                self._binding = self._binding_limit()
                self._limits_due = now + self._limit_refresh
            if self._binding is None:
                return None
            best, binding = self._binding
            if binding.usage_fd is None:
                raise CgroupFormatError(f"no usage file in {binding.directory}")
            usage = _cgroup.parse_int(_pread(binding.usage_fd, _SMALL), binding.directory)
            stat = _pread(binding.stat_fd, _LARGE) if binding.stat_fd is not None else None
            reclaim = self._reclaimable(stat, binding.directory)
        except (OSError, CgroupFormatError) as exc:
            self._limits_due = 0.0
            self._note(f"cgroup figures unusable ({exc}); using system figures")
            return None
        view = self._view
        if (
            view is None
            or view.reclaimable != reclaim
            or view.limit != best
            or view.directory != binding.directory
        ):
            self._view = _KernelView(
                self._version or 0, binding.directory, best, reclaim, self._root
            )
        return max(usage - reclaim, 0), best

    def _binding_limit(self) -> tuple[int, _Level] | None:
        best: int | None = None
        binding: _Level | None = None
        for level in self._levels:
            if level.limit_fd is None:
                continue
            limit = _cgroup.parse_limit(_pread(level.limit_fd, _SMALL), level.directory)
            # Leaf first, so on equal limits the deepest level binds.
            if limit is None or limit >= self._ram:
                continue
            if best is None or limit < best:
                best, binding = limit, level
        if self._version == 1:
            # v1 reports limits of ancestors hidden above the mount root (a
            # container without a cgroup namespace) in its own memory.stat.
            leaf = self._levels[0]
            if leaf.stat_fd is not None:
                hierarchical = _cgroup.stat_value(
                    _pread(leaf.stat_fd, _LARGE), b"hierarchical_memory_limit"
                )
                if (
                    hierarchical is not None
                    and hierarchical < self._ram
                    and (best is None or hierarchical < best)
                ):
                    best, binding = hierarchical, leaf
        if best is None or binding is None:
            return None
        if binding.usage_fd is None:
            # Only the root cgroup lacks a usage file; our own is the
            # closest figure that exists.
            self._note(f"no usage file in {binding.directory}; using this cgroup's usage")
            binding = self._levels[0]
        return best, binding

    def _reclaimable(self, stat: bytes | None, directory: str) -> int:
        if stat is None:
            self._note(f"memory.stat unreadable in {directory}; page cache counts as used")
            return 0
        if self._reclaimable_mode == "inactive_file":
            value = None
            if self._version == 1:
                value = _cgroup.stat_value(stat, b"total_inactive_file")
            if value is None:
                value = _cgroup.stat_value(stat, b"inactive_file")
        else:
            if self._version == 1:
                cache = _cgroup.stat_value(stat, b"total_cache")
                shmem = _cgroup.stat_value(stat, b"total_shmem")
                if cache is None:
                    cache = _cgroup.stat_value(stat, b"cache")
                    shmem = _cgroup.stat_value(stat, b"shmem")
            else:
                cache = _cgroup.stat_value(stat, b"file")
                shmem = _cgroup.stat_value(stat, b"shmem")
            value = None if cache is None else max(cache - (shmem or 0), 0)
        if value is None:
            self._note(f"memory.stat in {directory} lacks page cache figures; counted as used")
            return 0
        return value

    def _system_figures(self) -> tuple[int, int]:
        if self._meminfo_fd is not None:
            try:
                total, available = _cgroup.parse_meminfo(_pread(self._meminfo_fd, _LARGE))
                return max(total - available, 0), total
            except (OSError, CgroupFormatError) as exc:
                self._note(f"/proc/meminfo unusable ({exc}); using psutil")
        vm = psutil.virtual_memory()
        return max(int(vm.total) - int(vm.available), 0), int(vm.total)

    def close(self) -> None:
        """Release the file descriptors; idempotent. Later samples raise ``ValueError``."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> SystemProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"cgroup v{self._version} {self._cgroup_path}" if self._version else "system"
        return f"<SystemProbe {where} root={self._root!r}>"


def detect_memory_limit(*, root: str = "/") -> int:
    """The effective memory limit in bytes: the lowest of RAM and the cgroup limits.

    This is the ``limit`` a :class:`SystemProbe` reports. Never raises for
    missing or malformed kernel files (it falls back to RAM, logging why).
    """
    with SystemProbe(root=root, psi=False) as probe:
        return probe.sample().limit


class ProcessProbe:
    """The resident set of one process (optionally with its descendants) against a limit.

    ``pid=None`` means this process. ``limit`` defaults to
    :func:`detect_memory_limit`. The process' own RSS is read from
    ``/proc/<pid>/statm`` through a descriptor opened once (which stays tied
    to that process even if the pid is later reused); children are found
    with psutil. Source ``"process"``.

    Raises ``ValueError`` naming the pid when no such process exists at
    construction, and ``ProcessLookupError`` from :meth:`sample` once it has
    exited. Thread-safe.
    """

    def __init__(
        self,
        pid: int | None = None,
        *,
        limit: int | None = None,
        include_children: bool = False,
        root: str = "/",
    ) -> None:
        if pid is not None:
            check_int("pid", pid, minimum=1)
        if limit is not None:
            check_int("limit", limit, minimum=1)
        if not isinstance(include_children, bool):
            raise TypeError(
                f"include_children must be a bool, got {type(include_children).__name__} "
                f"{include_children!r}"
            )
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, got {type(root).__name__} {root!r}")
        root = os.fspath(root)
        self._pid = os.getpid() if pid is None else pid
        self._include_children = include_children
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)
        self._closed = False
        fd = _open(join_root(root, f"/proc/{self._pid}/statm"))
        self._process: psutil.Process | None = None
        if fd is None:
            if os.path.isdir(join_root(root, "/proc")):
                raise ValueError(f"pid {self._pid!r}: no such process")
            try:  # no procfs (macOS, Windows): psutil does the reading
                self._process = psutil.Process(self._pid)
            except psutil.NoSuchProcess as exc:
                raise ValueError(f"pid {self._pid!r}: no such process") from exc
        else:
            self._fds.append(fd)
        self._statm_fd = fd
        self._limit = limit if limit is not None else detect_memory_limit(root=root)

    @property
    def pid(self) -> int:
        """The process measured."""
        return self._pid

    @property
    def limit(self) -> int:
        """The limit samples are measured against, in bytes."""
        return self._limit

    def sample(self) -> MemorySample:
        """RSS (plus descendants' when asked) against the limit.

        Raises ``ProcessLookupError`` naming the pid when the process has
        exited, ``ValueError`` if the probe is closed.
        """
        with self._lock:
            if self._closed:
                raise ValueError("ProcessProbe is closed")
            rss = self._own_rss()
            used = rss + self._children_rss() if self._include_children else rss
        return MemorySample(
            timestamp=time.time(),
            used=used,
            limit=self._limit,
            available=max(self._limit - used, 0),
            rss=rss,
            source="process",
        )

    def _own_rss(self) -> int:
        if self._statm_fd is not None:
            try:
                rss = read_statm_rss(self._statm_fd)
            except ProcessLookupError:
                rss = None
            except OSError as exc:
                raise ProcessLookupError(f"pid {self._pid}: cannot read statm ({exc})") from exc
            if rss is None:
                raise ProcessLookupError(f"pid {self._pid}: the process has exited")
            return rss
        try:
            return int(self._psutil_process().memory_info().rss)
        except psutil.NoSuchProcess as exc:
            raise ProcessLookupError(f"pid {self._pid}: the process has exited") from exc

    def _psutil_process(self) -> psutil.Process:
        if self._process is None:
            try:
                self._process = psutil.Process(self._pid)
            except psutil.NoSuchProcess as exc:
                raise ProcessLookupError(f"pid {self._pid}: the process has exited") from exc
        return self._process

    def _children_rss(self) -> int:
        try:
            children = self._psutil_process().children(recursive=True)
        except psutil.NoSuchProcess as exc:
            raise ProcessLookupError(f"pid {self._pid}: the process has exited") from exc
        total = 0
        for child in children:
            try:
                total += int(child.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between listing and reading: it holds nothing now
        return total

    def close(self) -> None:
        """Release the file descriptor; idempotent. Later samples raise ``ValueError``."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> ProcessProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ProcessProbe pid={self._pid} limit={self._limit}>"
