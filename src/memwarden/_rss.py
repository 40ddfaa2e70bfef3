"""This process' resident set size, read in one place.

Every module that reports what an operation freed (the budget's ``optimize``,
GC statistics, package footprints, the profiler) and the probes read RSS here.
On Linux it is ``/proc/self/statm`` through a descriptor opened once and read
with ``pread`` (about a microsecond); elsewhere psutil.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

__all__ = ["process_rss", "read_statm_rss"]

_SMALL = 256  # statm is one short line


def _page_size() -> int:
    try:
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 4096
    return size if size > 0 else 4096


PAGE_SIZE = _page_size()


def read_statm_rss(fd: int) -> int | None:
    """Resident bytes from an open ``statm`` descriptor; None if it cannot be parsed.

    Raises ``OSError`` (``ProcessLookupError`` for a process that exited) from
    the read itself.
    """
    fields = os.pread(fd, _SMALL, 0).split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]) * PAGE_SIZE


_lock = threading.Lock()
_statm: int | None = None
_tried = False
_psutil_process: Any = None


def _open_statm() -> int | None:
    try:
        return os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def process_rss() -> int | None:
    """This process' resident set size in bytes, or None where it cannot be read.

    Thread-safe. A process that forks gets its own reading: the descriptor
    names ``/proc/self`` as it was opened, so it is reopened in the child.
    """
    global _statm, _tried, _psutil_process
    if not _tried:
        with _lock:
            if not _tried:
                _statm = _open_statm()
                _tried = True
    if _statm is not None:
        try:
            value = read_statm_rss(_statm)
        except OSError:
            value = None
        if value is not None:
            return value
    try:
        if _psutil_process is None:
            import psutil

            _psutil_process = psutil.Process()
        return int(_psutil_process.memory_info().rss)
    except Exception:  # psutil missing, or the platform refuses: no reading
        return None


def _after_fork() -> None:
    global _statm, _tried, _psutil_process
    if _statm is not None:
        with contextlib.suppress(OSError):
            os.close(_statm)
    _statm, _tried, _psutil_process = None, False, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
