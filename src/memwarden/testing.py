"""Helpers for testing code that uses memwarden (as ``trio.testing`` is for trio).

- :class:`StaticProbe`: a probe whose figures you set.
- :class:`ManualClock`: a clock you advance by hand, with an awaitable
  ``sleep`` that wakes only when the clock passes its deadline, so tests never
  wait on real time.
"""

from __future__ import annotations

import heapq
import itertools

import anyio
import anyio.lowlevel

from ._validate import check_float
from .probes import StaticProbe

__all__ = ["ManualClock", "StaticProbe"]


class ManualClock:
    """A monotonic clock that only moves when :meth:`advance` is called.

    Pass the instance as ``clock=`` (it is callable) and its :meth:`sleep` as
    ``sleep=`` wherever memwarden accepts them. Use from one event loop.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = check_float("start", start)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()
        # Tasks in wait_for_sleepers(), woken whenever a sleeper parks.
        self._watchers: list[anyio.Event] = []

    def __call__(self) -> float:
        """Return the current time."""
        return self._now

    def time(self) -> float:
        """Return the current time (same as calling the clock)."""
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in :meth:`sleep` right now."""
        return sum(1 for _, _, ev in self._sleepers if not ev.is_set())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed.

        Raises ``ValueError`` for a negative or NaN ``seconds``.
        """
        self._now += check_float("seconds", seconds, minimum=0.0)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()

    def set(self, now: float) -> None:
        """Jump to ``now`` (must not go backwards)."""
        now = check_float("now", now)
        if now < self._now:
            raise ValueError(f"now must be >= the current time {self._now}, got {now!r}")
        self.advance(now - self._now)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``; cancellable."""
        seconds = check_float("seconds", seconds, minimum=0.0, allow_inf=True)
        if seconds == 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._now + seconds, next(self._counter), event)
        heapq.heappush(self._sleepers, entry)
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.set()
        try:
            await event.wait()
        finally:
            if not event.is_set():
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least ``count`` tasks are parked in :meth:`sleep`."""
        await anyio.lowlevel.checkpoint()
        while self.sleepers < count:
            watcher = anyio.Event()
            self._watchers.append(watcher)
            try:
                await watcher.wait()
            finally:
                if watcher in self._watchers:  # cancelled before a sleeper parked
                    self._watchers.remove(watcher)

    async def advance_when_parked(self, seconds: float, sleepers: int = 1) -> None:
        """Wait for ``sleepers`` parked tasks, then :meth:`advance` by ``seconds``."""
        await self.wait_for_sleepers(sleepers)
        self.advance(seconds)
