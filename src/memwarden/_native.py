"""Return freed heap to the OS with glibc's ``malloc_trim(0)`` where it exists.

CPython's allocator and glibc keep freed arenas mapped; after a large burst is
released, RSS stays high until ``malloc_trim`` hands the pages back. There is
no library for this one call, so it is done with ctypes, once, lazily.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

__all__: list[str] = []

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_resolved = False


def _resolve() -> Callable[[int], int] | None:
    global _trim, _resolved
    with _lock:
        if not _resolved:
            _resolved = True
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                    func = libc.malloc_trim
                    func.argtypes = [ctypes.c_size_t]
                    func.restype = ctypes.c_int
                    _trim = func
                except (OSError, AttributeError):
                    _trim = None  # musl and other libcs have no malloc_trim
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
