"""Linux PSI (pressure stall information) triggers, used to wake the sampler early.

Writing ``"some <stall µs> <window µs>"`` to ``/proc/pressure/memory`` or a
cgroup v2 ``memory.pressure`` file arms a trigger; the kernel then raises
``POLLPRI`` on that file descriptor when tasks stalled on memory for longer
than the stall time within the window (at most once per window).

Why an epoll set: asyncio's ``add_reader`` and trio's ``wait_readable``
watch for readability, not ``POLLPRI``. The trigger is therefore registered
for ``EPOLLPRI`` in a private epoll instance, and the epoll descriptor, which
becomes *readable* whenever one of its members is ready, is awaited with
``anyio.wait_readable``. No worker thread is involved, so cancellation is an
ordinary anyio cancellation and nothing outlives a cancelled wait.

On a cgroup v1 memory hierarchy, which has no PSI files, the older
``memory.pressure_level`` notification is used instead: an eventfd that the
kernel signals when reclaim in the cgroup reaches "medium" pressure.

Many kernels and sandboxes refuse triggers (``EINVAL``, ``EPERM``,
``EOPNOTSUPP``, read-only mounts, no PSI at all): :meth:`PsiTrigger.open`
then returns ``None``, logs once at debug level, and the caller sleeps for
its plain interval instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import stat
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel

from ._cgroup import join_root, locate

__all__ = ["PsiTrigger", "candidate_paths", "cgroup_v1_directory"]

_V1_LEVELS = ("low", "medium", "critical")

_log = logging.getLogger("memwarden.pressure")
_logged_fallback = False

# Unprivileged processes may only arm triggers whose window is a multiple of 2 s.
DEFAULT_STALL_US = 150_000
DEFAULT_WINDOW_US = 2_000_000

# Indirections so tests can make the kernel refuse a trigger without root tricks.
_os_open: Callable[..., int] = os.open
_os_write: Callable[[int, bytes], int] = os.write


def candidate_paths(root: str = "/") -> list[Path]:
    """Where a memory PSI trigger can be armed, best first.

    The process' own cgroup v2 ``memory.pressure`` (what a container's limit
    sees) when it exists, then the system-wide ``/proc/pressure/memory``
    (returned whether or not it exists). ``root`` relocates every path.
    """
    paths: list[Path] = []
    location = locate(root)
    if location is not None and location.version == 2 and location.pressure_path:
        paths.append(Path(location.pressure_path))
    paths.append(Path(join_root(root, "/proc/pressure/memory")))
    return paths


def cgroup_v1_directory(root: str = "/") -> Path | None:
    """This process' cgroup v1 memory directory (for ``memory.pressure_level``), if any."""
    location = locate(root)
    if location is None or location.version != 1:
        return None
    return Path(location.levels[0].directory)


def _is_kernel_pressure_file(fd: int) -> bool:
    # procfs and cgroupfs files are regular with size 0 and read as PSI lines;
    # anything else (an ordinary file, a device) would never raise POLLPRI.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != 0:
        return False
    return os.read(fd, 64).startswith(b"some avg10=")


_looks_like_psi: Callable[[int], bool] = _is_kernel_pressure_file


def _is_kernel_events_file(fd: int) -> bool:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != 0:
        return False
    return os.pread(fd, 64, 0).startswith(b"low ")


def _pread_events(fd: int) -> None:
    os.pread(fd, 4096, 0)


_looks_like_events: Callable[[int], bool] = _is_kernel_events_file
_drain_kernfs: Callable[[int], None] = _pread_events


def _log_fallback(path: str | os.PathLike[str], reason: str | OSError) -> None:
    """Log once why a kernel wake-up is unavailable (``reason``: words, or the OSError)."""
    global _logged_fallback
    if isinstance(reason, OSError):
        reason = errno.errorcode.get(reason.errno or 0, str(reason))
    if not _logged_fallback:
        _logged_fallback = True
        _log.debug(
            "PSI trigger unavailable at %s (%s); sampling on the interval only", path, reason
        )


class PsiTrigger:
    """An armed kernel memory-pressure trigger: :meth:`wait` returns True when it fires.

    Two kernel sources: a PSI trigger (``POLLPRI`` on a pressure file, see
    :meth:`open`) and a cgroup v1 ``memory.pressure_level`` notification (an
    eventfd that becomes readable, see :meth:`open_cgroup_v1`).
    Use from one task at a time. :meth:`close` is idempotent and safe while a
    wait is in progress (the wait returns False).
    """

    def __init__(
        self,
        fd: int,
        path: str | os.PathLike[str],
        *,
        events: int = select.EPOLLPRI,
        keep: tuple[int, ...] = (),
        eventfd: bool = False,
        kernfs: bool = False,
    ) -> None:
        self._fd = fd
        self.path = os.fspath(path)
        self._keep = keep  # descriptors that must stay open while the trigger is armed
        self._eventfd = eventfd
        self._kernfs = kernfs
        self._epoll = select.epoll()
        try:
            self._epoll.register(fd, events)
        except OSError:
            self._epoll.close()
            raise
        self._waiting = False
        self._closed = False
        self.broken = False
        self.fired = 0

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        stall_us: int = DEFAULT_STALL_US,
        window_us: int = DEFAULT_WINDOW_US,
        kind: str = "some",
    ) -> PsiTrigger | None:
        """Arm a trigger on ``path``; ``None`` if the file or the kernel refuses one.

        Refusals (missing file, not a kernel pressure file, ``EINVAL``,
        ``EPERM``, ``EOPNOTSUPP``, read-only) are logged once at debug level.
        Raises ``ValueError`` for a bad ``kind``, ``stall_us`` or ``window_us``.
        """
        if kind not in ("some", "full"):
            raise ValueError(f"kind must be 'some' or 'full', got {kind!r}")
        if isinstance(stall_us, bool) or not isinstance(stall_us, int) or stall_us <= 0:
            raise ValueError(f"stall_us must be a positive int, got {stall_us!r}")
        if isinstance(window_us, bool) or not isinstance(window_us, int) or window_us < stall_us:
            raise ValueError(f"window_us must be an int >= stall_us, got {window_us!r}")
        try:
            fd = _os_open(os.fspath(path), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            _log_fallback(path, exc)
            return None
        try:
            if not _looks_like_psi(fd):
                _log_fallback(path, "not a kernel pressure file")
                os.close(fd)
                return None
            _os_write(fd, f"{kind} {stall_us} {window_us}".encode())
        except OSError as exc:
            os.close(fd)
            _log_fallback(path, exc)
            return None
        return cls(fd, path)

    @classmethod
    def open_cgroup_v1(
        cls, directory: str | os.PathLike[str], *, level: str = "medium"
    ) -> PsiTrigger | None:
        """Register for cgroup v1 ``memory.pressure_level`` notifications in ``directory``.

        The kernel signals an eventfd when reclaim in that cgroup reaches
        ``level`` (``"low"``, ``"medium"`` or ``"critical"``). ``None`` (logged
        once at debug level) when the files are missing or the kernel refuses.
        Raises ``ValueError`` for an unknown ``level``.
        """
        if level not in _V1_LEVELS:
            raise ValueError(f"level must be one of {_V1_LEVELS}, got {level!r}")
        return cls._open_v1_event(directory, "memory.pressure_level", [level])

    @classmethod
    def open_cgroup_v1_thresholds(
        cls, directory: str | os.PathLike[str], thresholds: list[int]
    ) -> PsiTrigger | None:
        """Register cgroup v1 memory thresholds on ``memory.usage_in_bytes`` in ``directory``.

        The kernel signals one eventfd whenever the cgroup's usage crosses any
        of ``thresholds`` (bytes), going up or going down, within a page or so
        of the crossing: much sooner than a sampling interval. Usage there
        includes page cache, so callers add the reclaimable bytes they exclude
        elsewhere. To move the thresholds, :meth:`close` this trigger and open
        another (closing the eventfd unregisters every threshold on it).
        ``None`` (logged once at debug level) when the files are missing or the
        kernel refuses. Raises ``ValueError`` for an empty list or a threshold
        that is not a positive int.
        """
        if not thresholds:
            raise ValueError("thresholds must name at least one byte count, got []")
        for value in thresholds:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"thresholds must be positive ints, got {value!r}")
        return cls._open_v1_event(
            directory, "memory.usage_in_bytes", [str(v) for v in sorted(set(thresholds))]
        )

    @classmethod
    def _open_v1_event(
        cls, directory: str | os.PathLike[str], watched: str, arguments: list[str]
    ) -> PsiTrigger | None:
        """Register one eventfd per ``cgroup.event_control`` line on ``watched``.

        Each of ``arguments`` becomes a line ``"<eventfd> <watched fd> <argument>"``.
        ``None`` (logged once at debug level) when a file is missing or the
        kernel refuses.
        """
        directory = os.fspath(directory)
        path = os.path.join(directory, watched)
        opened: list[int] = []
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            opened.append(efd)
            target = _os_open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened.append(target)
            control = _os_open(
                os.path.join(directory, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC
            )
            try:
                for argument in arguments:
                    _os_write(control, f"{efd} {target} {argument}".encode())
            finally:
                os.close(control)
        except OSError as exc:
            for fd in opened:
                os.close(fd)
            _log_fallback(directory, exc)
            return None
        return cls(efd, path, events=select.EPOLLIN, keep=(target,), eventfd=True)

    @classmethod
    def open_memory_events(cls, directory: str | os.PathLike[str]) -> PsiTrigger | None:
        """Wake when cgroup v2 ``memory.events`` in ``directory`` changes.

        The kernel bumps the ``high``, ``max``, ``oom`` and ``oom_kill`` counters
        there as the cgroup hits its limits and notifies pollers of the file
        (``EPOLLPRI | EPOLLERR`` until the file is read again). ``None`` (logged
        once at debug level) when the file is missing, is not a kernel file or
        cannot be polled.
        """
        path = os.path.join(os.fspath(directory), "memory.events")
        try:
            fd = _os_open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            _log_fallback(path, exc)
            return None
        try:
            if not _looks_like_events(fd):
                _log_fallback(path, "not a kernel memory.events file")
                os.close(fd)
                return None
            # The first read sets the baseline: only later changes wake the waiter.
            _drain_kernfs(fd)
            return cls(fd, path, events=select.EPOLLPRI | select.EPOLLERR, kernfs=True)
        except OSError as exc:
            os.close(fd)
            _log_fallback(path, exc)
            return None

    @classmethod
    def open_first(
        cls,
        paths: list[Path] | None = None,
        *,
        root: str = "/",
        stall_us: int = DEFAULT_STALL_US,
        window_us: int = DEFAULT_WINDOW_US,
    ) -> PsiTrigger | None:
        """Arm the best trigger this system offers, or ``None``.

        Tries a PSI trigger on each of ``paths`` (default:
        :func:`candidate_paths`), then, when ``paths`` is not given and the
        process sits in a cgroup v1 memory hierarchy, a ``memory.pressure_level``
        notification at ``"medium"``.
        """
        for path in candidate_paths(root) if paths is None else paths:
            trigger = cls.open(path, stall_us=stall_us, window_us=window_us)
            if trigger is not None:
                return trigger
        if paths is None:
            directory = cgroup_v1_directory(root)
            if directory is not None:
                return cls.open_cgroup_v1(directory)
        return None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def waiting(self) -> bool:
        """True while a task is inside :meth:`wait`."""
        return self._waiting

    # The timeout bounds the wait for the kernel; it is not a cancellation deadline.
    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds (None: forever) for the trigger; True if it fired.

        Returns False on timeout, when :meth:`close` is called meanwhile or
        was called before, and once the trigger is broken (the kernel reported
        an error on it; the caller should stop using it). Cancellable like any
        anyio wait. Raises ``RuntimeError`` if another task is already waiting.
        """
        if self._closed or self.broken:
            await anyio.lowlevel.checkpoint()
            return False
        if self._waiting:
            raise RuntimeError("another task is already waiting on this PSI trigger")
        self._waiting = True
        woke = False
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await anyio.wait_readable(self._epoll.fileno())
                woke = True
        except anyio.ClosedResourceError:
            return False
        finally:
            self._waiting = False
        if not woke or self._closed:
            return False
        # Polling the epoll set also consumes the PSI event, so it does not repeat.
        # A kernfs file reports a change as EPOLLPRI together with EPOLLERR.
        failure = select.EPOLLHUP if self._kernfs else select.EPOLLERR | select.EPOLLHUP
        for _fd, mask in self._epoll.poll(0):
            if mask & failure:
                self.broken = True
        if self.broken:
            return False
        if self._kernfs:
            # Reading the file is what tells kernfs this change was seen.
            with contextlib.suppress(OSError):
                _drain_kernfs(self._fd)
        elif self._eventfd:
            # Reset the counter, or the eventfd stays readable and every wait returns at once.
            with contextlib.suppress(BlockingIOError):
                os.read(self._fd, 8)
        self.fired += 1
        return True

    def close(self) -> None:
        """Disarm the trigger and release its file descriptors. Idempotent.

        A task inside :meth:`wait` is woken and its wait returns False; call
        from the event loop thread when a wait may be in progress.
        """
        if self._closed:
            return
        self._closed = True
        if self._waiting:
            anyio.notify_closing(self._epoll.fileno())
        self._epoll.close()
        for fd in (self._fd, *self._keep):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"<PsiTrigger path={self.path!r} closed={self._closed} fired={self.fired}>"
