"""Linux PSI (pressure stall information) triggers, used to wake the sampler early.

Writing ``"some <stall µs> <window µs>"`` to ``/proc/pressure/memory`` or a
cgroup v2 ``memory.pressure`` file arms a trigger; the kernel then raises
``POLLPRI`` on that file descriptor when tasks stalled on memory for longer
than the stall time within the window (at most once per window).

Why a worker thread: asyncio's ``add_reader`` and trio's ``wait_readable``
watch for readability (``EPOLLIN``), not ``POLLPRI``, so the trigger is
watched with ``select.poll()`` in a worker thread, bounded by the caller's
timeout. The thread also polls the read end of a private pipe; cancelling
:meth:`PsiTrigger.wait` writes to that pipe so the thread returns at once:
no thread outlives a cancelled wait for longer than a system call, and file
descriptors are closed only when no thread is polling them.

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
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

__all__ = ["PsiTrigger", "candidate_paths"]

_log = logging.getLogger("memwarden.pressure")
_logged_fallback = False

# Unprivileged processes may only arm triggers whose window is a multiple of 2 s.
DEFAULT_STALL_US = 150_000
DEFAULT_WINDOW_US = 2_000_000

# Indirections so tests can make the kernel refuse a trigger without root tricks.
_os_open: Callable[..., int] = os.open
_os_write: Callable[[int, bytes], int] = os.write


def candidate_paths(cgroup_file: str | os.PathLike[str] = "/proc/self/cgroup") -> list[Path]:
    """Where a memory PSI trigger can be armed, best first.

    The process' own cgroup v2 ``memory.pressure`` (what a container's limit
    sees), then the system-wide ``/proc/pressure/memory``. Paths are returned
    whether or not they exist.
    """
    paths: list[Path] = []
    try:
        text = Path(cgroup_file).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "" and relative:
            paths.append(Path("/sys/fs/cgroup") / relative.lstrip("/") / "memory.pressure")
    paths.append(Path("/proc/pressure/memory"))
    return paths


def _is_kernel_pressure_file(fd: int) -> bool:
    # procfs and cgroupfs files are regular with size 0 and read as PSI lines;
    # anything else (an ordinary file, a device) would never raise POLLPRI.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != 0:
        return False
    return os.read(fd, 64).startswith(b"some avg10=")


_looks_like_psi: Callable[[int], bool] = _is_kernel_pressure_file


def _log_fallback(path: str | os.PathLike[str], reason: str) -> None:
    global _logged_fallback
    if not _logged_fallback:
        _logged_fallback = True
        _log.debug(
            "PSI trigger unavailable at %s (%s); sampling on the interval only", path, reason
        )


class PsiTrigger:
    """An armed PSI trigger: :meth:`wait` returns True when the kernel signals a stall.

    Use from one task at a time. :meth:`close` is idempotent and safe while a
    wait is in progress (the wait returns False).
    """

    def __init__(self, fd: int, path: str | os.PathLike[str]) -> None:
        self._fd = fd
        self.path = os.fspath(path)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._polling = False
        self._idle = threading.Event()  # set whenever no worker thread polls
        self._idle.set()
        self._closed = False
        self._fds_closed = False
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
            _log_fallback(path, errno.errorcode.get(exc.errno or 0, str(exc)))
            return None
        try:
            if not _looks_like_psi(fd):
                _log_fallback(path, "not a kernel pressure file")
                os.close(fd)
                return None
            _os_write(fd, f"{kind} {stall_us} {window_us}".encode())
        except OSError as exc:
            os.close(fd)
            _log_fallback(path, errno.errorcode.get(exc.errno or 0, str(exc)))
            return None
        return cls(fd, path)

    @classmethod
    def open_first(
        cls,
        paths: list[Path] | None = None,
        *,
        stall_us: int = DEFAULT_STALL_US,
        window_us: int = DEFAULT_WINDOW_US,
    ) -> PsiTrigger | None:
        """Arm a trigger on the first of ``paths`` that takes one (default: candidate_paths())."""
        for path in candidate_paths() if paths is None else paths:
            trigger = cls.open(path, stall_us=stall_us, window_us=window_us)
            if trigger is not None:
                return trigger
        return None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def polling(self) -> bool:
        """True while a worker thread is polling the trigger."""
        return self._polling

    # The timeout bounds the poll() in the worker thread; it is not a cancellation deadline.
    async def wait(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds (None: forever) for the trigger; True if it fired.

        Returns False on timeout, after :meth:`close`, and once the trigger is
        broken (the kernel reported an error on it; the caller should stop
        using it). Cancellation interrupts the worker thread at once.
        Raises ``RuntimeError`` if another wait is already in progress.
        """
        if self._closed or self.broken:
            await anyio.lowlevel.checkpoint()
            return False
        with self._lock:
            if self._polling:
                raise RuntimeError("another task is already waiting on this PSI trigger")
            self._polling = True
            self._idle.clear()
        timeout_ms = -1 if timeout is None or math.isinf(timeout) else math.ceil(timeout * 1000)
        try:
            fired = await anyio.to_thread.run_sync(
                self._poll, max(timeout_ms, -1), abandon_on_cancel=True
            )
        except BaseException:
            # Cancelled: the abandoned thread is still polling; wake it so it exits now.
            self._interrupt()
            raise
        if fired:
            self.fired += 1
        return fired

    def _interrupt(self) -> None:
        with self._lock:
            if self._polling and not self._fds_closed:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")

    def _poll(self, timeout_ms: int) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        try:
            events = poller.poll(timeout_ms)
        finally:
            with self._lock:
                self._polling = False
                self._idle.set()
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 64):
                        pass
                if self._closed:
                    self._close_fds_locked()
        fired = False
        for fd, mask in events:
            if fd != self._fd:
                continue
            if mask & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
                self.broken = True
            elif mask & select.POLLPRI:
                fired = True
        return fired and not self._closed

    def _close_fds_locked(self) -> None:
        if self._fds_closed:
            return
        self._fds_closed = True
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Disarm the trigger and release its file descriptors. Idempotent.

        If a worker thread is polling, it is woken and closes them as it exits.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._polling:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_w, b"x")
            else:
                self._close_fds_locked()

    def __repr__(self) -> str:
        return f"<PsiTrigger path={self.path!r} closed={self._closed} fired={self.fired}>"
