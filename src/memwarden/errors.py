"""Exception hierarchy shared by every memwarden module.

Every error derives from :class:`MemwardenError` and, where it fits, from the
builtin a caller would already catch (``TimeoutError``, ``KeyError``,
``ValueError``). Nothing here shadows :class:`builtins.MemoryError`.
"""

from __future__ import annotations

__all__ = [
    "AllocationTimeoutError",
    "CacheError",
    "ConfigError",
    "GCError",
    "InsufficientMemoryError",
    "MemoryAllocationError",
    "MemoryOptimizationError",
    "MemwardenError",
    "PoolClosedError",
    "PoolError",
    "PoolExhaustedError",
    "ResourceError",
    "SessionError",
    "SessionMemoryError",
    "SessionNotFoundError",
    "SupervisorError",
]


class MemwardenError(Exception):
    """Base class of every memwarden error."""


class ConfigError(MemwardenError, ValueError):
    """A setting or environment variable has a bad value; the message names it."""


class MemoryAllocationError(MemwardenError):
    """A memory budget cannot grant a request (for example ``nbytes > capacity``)."""


class AllocationTimeoutError(MemoryAllocationError, TimeoutError):
    """A budget request waited longer than its timeout."""


class InsufficientMemoryError(MemoryAllocationError):
    """``check_memory_available()`` found less memory than required."""


class MemoryOptimizationError(MemwardenError):
    """``optimize()`` could not free what was needed."""


class PoolError(MemwardenError):
    """Misuse of an object pool, such as releasing a foreign object."""


class PoolExhaustedError(PoolError, TimeoutError):
    """No pooled object became available within the acquire timeout."""


class PoolClosedError(PoolError):
    """The pool is closed (or closing) and hands out no more objects."""


class ResourceError(MemwardenError):
    """A tracked resource is unknown, or its cleanup failed."""


class SessionError(MemwardenError):
    """Base class of session errors."""


class SessionNotFoundError(SessionError, KeyError):
    """No live session has the given id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SessionMemoryError(SessionError):
    """A session update would exceed the per-session byte limit."""


class CacheError(MemwardenError):
    """Unknown cache name or kind, or a value that cannot be cached."""


class GCError(MemwardenError):
    """Garbage-collector control failed."""


class SupervisorError(MemwardenError):
    """A supervised task gave up (with ``on_give_up="raise"``) or was misused."""
