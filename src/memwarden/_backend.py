"""What differs between asyncio and trio, in one place: park, wake, spawn.

Every waiting primitive in memwarden (the budget, the pool, sessions, memoize,
the broadcaster) parks a task until a synchronous core hands it a grant, and
that grant may come from another thread (``MemoryManager.release()`` is
thread-safe). anyio has no non-blocking, thread-safe way to wake a parked
task: ``anyio.from_thread`` blocks the calling thread until the loop answers,
which a ``release()`` called from a worker thread, or from a loop that is
shutting down, must never do. So this module uses each library's own public
wake-up, ``loop.call_soon_threadsafe`` on asyncio and ``TrioToken.run_sync_soon``
on trio, and anyio for everything else.

The backend is chosen once per event loop and kept in an
``anyio.lowlevel.RunVar``, so an object created under one loop and later used
under another (asyncio, then trio) finds the right backend each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.lowlevel
import sniffio

__all__ = ["Backend", "Parking", "current", "current_or_none"]

_log = logging.getLogger("memwarden")


class Parking(Protocol):
    """A one-shot wake-up for one parked task."""

    def wait(self) -> Awaitable[None]:
        """Await until :meth:`wake` is called; cancellable."""

    def wake(self) -> None:
        """Wake the parked task; thread-safe, never blocks, harmless when repeated or late."""


class Backend:
    """One event loop: how to park a task on it and how to call into it from anywhere."""

    __slots__ = ("thread",)

    name = "?"

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def park(self) -> Parking:
        """A fresh one-shot wake-up for a task of this loop (call from the loop's thread)."""
        raise NotImplementedError

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon; from any thread.

        Raises ``RuntimeError`` when the loop has finished.
        """
        raise NotImplementedError

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``await fn(*args)`` as a background task of this loop; from any thread.

        An exception it raises is logged, never propagated. Raises
        ``RuntimeError`` when the loop has finished.
        """
        if threading.get_ident() == self.thread:
            self._start(fn, args)
        else:
            self.call_soon(self._start, fn, args)

    def _start(self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
        raise NotImplementedError


async def _guarded(fn: Callable[..., Awaitable[object]], *args: Any) -> None:
    try:
        await fn(*args)
    except Exception:
        _log.exception("background task %r failed", fn)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # it may have been cancelled meanwhile
        future.set_result(None)


class _AsyncioParking:
    __slots__ = ("backend", "future")

    def __init__(self, backend: _Asyncio) -> None:
        self.backend = backend
        self.future: asyncio.Future[None] = backend.loop.create_future()

    def wait(self) -> Awaitable[None]:
        return self.future

    def wake(self) -> None:
        backend = self.backend
        if threading.get_ident() == backend.thread:
            _resolve(self.future)
        else:
            # RuntimeError: that loop has finished, so nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                backend.loop.call_soon_threadsafe(_resolve, self.future)


class _Asyncio(Backend):
    __slots__ = ("loop", "tasks")

    name = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        # asyncio holds tasks weakly: keep background tasks until they finish.
        self.tasks: set[asyncio.Task[None]] = set()

    def park(self) -> Parking:
        return _AsyncioParking(self)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def _start(self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
        task = self.loop.create_task(_guarded(fn, *args))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _TrioParking:
    __slots__ = ("backend", "event")

    def __init__(self, backend: _Trio) -> None:
        import trio

        self.backend = backend
        self.event = trio.Event()

    def wait(self) -> Awaitable[None]:
        return self.event.wait()

    def wake(self) -> None:
        backend = self.backend
        if threading.get_ident() == backend.thread:
            self.event.set()
        else:
            # trio.RunFinishedError (a RuntimeError): nobody is left to wake.
            with contextlib.suppress(RuntimeError):
                backend.token.run_sync_soon(self.event.set)


class _Trio(Backend):
    __slots__ = ("token",)

    name = "trio"

    def __init__(self) -> None:
        import trio

        super().__init__()
        self.token = trio.lowlevel.current_trio_token()

    def park(self) -> Parking:
        return _TrioParking(self)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self.token.run_sync_soon(fn, *args)

    def _start(self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
        import trio

        trio.lowlevel.spawn_system_task(_guarded, fn, *args)


_backend: anyio.lowlevel.RunVar[Backend] = anyio.lowlevel.RunVar("memwarden_backend")


def current() -> Backend:
    """The running event loop's backend; ``RuntimeError`` when no event loop runs here."""
    found = _backend.get(None)
    if found is None:
        library = sniffio.current_async_library()
        if library == "trio":
            found = _Trio()
        elif library == "asyncio":
            found = _Asyncio()
        else:  # pragma: no cover - anyio supports only these two
            raise RuntimeError(f"unsupported async library {library!r}")
        _backend.set(found)
    return found


def current_or_none() -> Backend | None:
    """The running event loop's backend, or None in a thread with no running event loop."""
    try:
        return current()
    except RuntimeError:  # sniffio.AsyncLibraryNotFoundError is one
        return None
