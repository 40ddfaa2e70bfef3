"""Memory samples and the probes that take them.

A probe is anything with a cheap synchronous ``sample()`` returning a
:class:`MemorySample`. ``SystemProbe`` reads the machine or container,
``ProcessProbe`` one process' RSS, ``StaticProbe`` a value tests set by hand.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._validate import check_int

__all__ = [
    "MemorySample",
    "Probe",
    "StaticProbe",
]


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
        """Set ``used`` to ``fraction * limit`` (convenient for pressure tests)."""
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
