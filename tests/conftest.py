"""Shared fixtures: a manual clock and a settable probe; hypothesis profiles."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from memwarden.testing import ManualClock, StaticProbe

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting at 1000.0."""
    return ManualClock(1000.0)


@pytest.fixture
def probe() -> StaticProbe:
    """A static probe at 0 of 1 GiB."""
    return StaticProbe(used=0, limit=1 << 30)


@pytest.fixture
def oob() -> Iterator[tuple[socket.socket, socket.socket]]:
    """An AF_UNIX pair: MSG_OOB data raises POLLPRI, as PSI or a memory.events change does."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a.send(b"!", socket.MSG_OOB)
        b.recv(1, socket.MSG_OOB)
    except OSError:
        a.close()
        b.close()
        pytest.skip("this kernel has no MSG_OOB on AF_UNIX sockets (Linux < 5.15)")
    yield a, b
    a.close()
    b.close()
