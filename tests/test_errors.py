"""The error hierarchy of API.md."""

from __future__ import annotations

import builtins

import pytest

import memwarden
from memwarden import errors


@pytest.mark.parametrize(
    ("child", "parents"),
    [
        (errors.ConfigError, (errors.MemwardenError, ValueError)),
        (errors.AllocationTimeoutError, (errors.MemoryAllocationError, TimeoutError)),
        (errors.InsufficientMemoryError, (errors.MemoryAllocationError,)),
        (errors.PoolExhaustedError, (errors.PoolError, TimeoutError)),
        (errors.PoolClosedError, (errors.PoolError,)),
        (errors.SessionNotFoundError, (errors.SessionError, KeyError)),
        (errors.SessionMemoryError, (errors.SessionError,)),
        (errors.CacheError, (errors.MemwardenError,)),
        (errors.GCError, (errors.MemwardenError,)),
        (errors.SupervisorError, (errors.MemwardenError,)),
        (errors.ResourceError, (errors.MemwardenError,)),
        (errors.MemoryOptimizationError, (errors.MemwardenError,)),
    ],
)
def test_hierarchy(child: type[Exception], parents: tuple[type[Exception], ...]) -> None:
    for parent in parents:
        assert issubclass(child, parent)
    assert getattr(memwarden, child.__name__) is child


def test_memory_error_builtin_is_not_shadowed() -> None:
    assert not hasattr(memwarden, "MemoryError")
    assert not issubclass(errors.MemwardenError, builtins.MemoryError)


def test_session_not_found_message_is_not_quoted() -> None:
    assert str(errors.SessionNotFoundError("no session 'x'")) == "no session 'x'"
