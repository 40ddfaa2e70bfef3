"""Make glibc give freed memory back to the kernel: ``mallopt`` and ``malloc_trim``.

CPython's allocator and glibc keep freed arenas mapped. glibc also raises its
mmap threshold each time a large mmapped block is freed (up to 32 MiB on 64-bit),
so after the first large request, blocks below that size come from the heap and
stay charged to the container after ``free()``. A governed service wants the
opposite: what it frees under a burst must leave the cgroup's count. Two knobs
do that. ``mallopt(M_MMAP_THRESHOLD, n)`` fixes the threshold (large blocks are
always mmapped, so ``free()`` unmaps them) and ``mallopt(M_TRIM_THRESHOLD, n)``
returns the heap's free top sooner; ``malloc_trim(0)`` after a large release
hands back free pages inside the heap as well. No library offers these calls,
so they are made with ctypes, once, lazily; other C libraries (musl) lack them
and every function here then reports that it did nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

__all__: list[str] = []

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_mallopt: Callable[[int, int], int] | None = None
_resolved = False


def _resolve() -> Callable[[int], int] | None:
    global _trim, _mallopt, _resolved
    with _lock:
        if not _resolved:
            _resolved = True
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                except OSError:
                    return None
                try:
                    func = libc.malloc_trim
                    func.argtypes = [ctypes.c_size_t]
                    func.restype = ctypes.c_int
                    _trim = func
                except AttributeError:
                    _trim = None  # musl and other libcs have no malloc_trim
                try:
                    opt = libc.mallopt
                    opt.argtypes = [ctypes.c_int, ctypes.c_int]
                    opt.restype = ctypes.c_int
                    # musl exports a mallopt that does nothing; only glibc has malloc_trim.
                    _mallopt = opt if _trim is not None else None
                except AttributeError:
                    _mallopt = None
        return _trim


def malloc_trim_available() -> bool:
    """Whether this process' C library offers ``malloc_trim``."""
    return _resolve() is not None


def malloc_trim() -> bool:
    """Call ``malloc_trim(0)``; True when memory was returned to the OS.

    Returns False where glibc's ``malloc_trim`` is not available.
    """
    func = _resolve()
    return bool(func(0)) if func is not None else False


def mallopt(param: int, value: int) -> bool:
    """Call glibc's ``mallopt(param, value)``; True when glibc accepted it.

    Returns False where glibc is not the C library. Values must fit a C int.
    """
    _resolve()
    if _mallopt is None:
        return False
    return bool(_mallopt(param, value))


def tune_allocator(*, mmap_threshold: int, trim_threshold: int) -> bool:
    """Fix glibc's mmap and trim thresholds so freed large blocks leave the process.

    Returns True when glibc accepted both. Process-wide and idempotent.
    """
    mmap_ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    trim_ok = mallopt(M_TRIM_THRESHOLD, trim_threshold)
    return mmap_ok and trim_ok


class Trimmer:
    """Calls ``malloc_trim(0)`` after large releases, at most once per ``interval``.

    ``released(nbytes)`` adds to the bytes given back since the last trim;
    once they reach ``threshold`` and ``interval`` seconds have passed since
    the last trim, it trims and returns True. Thread-safe; the trim itself runs
    in the calling thread, outside the lock.
    """

    def __init__(
        self,
        *,
        threshold: int,
        interval: float,
        clock: Callable[[], float],
        trim: Callable[[], bool] = malloc_trim,
    ) -> None:
        self.threshold = threshold
        self.interval = interval
        self._clock = clock
        self._trim = trim
        self._lock = threading.Lock()
        self._pending = 0
        self._last = -float("inf")
        self.trims = 0

    def released(self, nbytes: int) -> bool:
        """Count ``nbytes`` given back; trim when enough was and the interval allows."""
        with self._lock:
            self._pending += nbytes
            now = self._clock()
            if self._pending < self.threshold or now - self._last < self.interval:
                return False
            self._pending = 0
            self._last = now
            self.trims += 1
        self._trim()
        return True
