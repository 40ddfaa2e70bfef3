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

The backend is chosen once per event loop and looked up on every call, so an
object created under one loop and later used under another (asyncio, then
trio) finds the right backend each time. The lookup sits on every acquire, so
it must cost less than the acquire: each thread remembers the backend of the
loop it last ran, and checks it against the running loop. Inside an asyncio
task that check is ``asyncio.current_task()`` and ``get_running_loop()``, two C
calls; anywhere else (trio, including trio's guest mode on top of an asyncio
loop, where no asyncio task runs) sniffio names the library and trio's token
is compared. ``anyio.lowlevel.RunVar`` and ``sniffio.current_async_library()``
each cost about as much as a whole ``sleep(0)`` checkpoint on asyncio (sniffio
imports ``current_task`` on every call), which made an uncontended pool
acquire twice as slow as an ``asyncio.Queue`` pool that checkpoints.

``Backend.checkpoint()`` is what ``anyio.lowlevel.checkpoint()`` does on that
loop (``asyncio.sleep(0)``, ``trio.lowlevel.checkpoint()``) without finding
the library again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

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

    def checkpoint(self) -> Awaitable[None]:
        """Honour a cancelled scope and let other tasks run, as ``anyio.lowlevel.checkpoint()``."""
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

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        # asyncio holds tasks weakly: keep background tasks until they finish.
        self.tasks: set[asyncio.Task[None]] = set()

    def park(self) -> Parking:
        return _AsyncioParking(self)

    def checkpoint(self) -> Awaitable[None]:
        return asyncio.sleep(0)

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

    def __init__(self, token: Any) -> None:
        super().__init__()
        self.token = token

    def park(self) -> Parking:
        return _TrioParking(self)

    async def checkpoint(self) -> None:
        import trio

        await trio.lowlevel.checkpoint()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self.token.run_sync_soon(fn, *args)

    def _start(self, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]) -> None:
        import trio

        trio.lowlevel.spawn_system_task(_guarded, fn, *args)


_local = threading.local()


def current() -> Backend:
    """The running event loop's backend; ``RuntimeError`` when no event loop runs here."""
    local = _local
    try:
        in_task = asyncio.current_task() is not None
    except RuntimeError:  # no asyncio loop runs in this thread
        in_task = False
    if in_task:
        loop = asyncio.get_running_loop()
        mine: _Asyncio | None = getattr(local, "asyncio", None)
        if mine is None or mine.loop is not loop:
            mine = local.asyncio = _Asyncio(loop)
        return mine
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        theirs: _Trio | None = getattr(local, "trio", None)
        if theirs is None or theirs.token is not token:
            theirs = local.trio = _Trio(token)
        return theirs
    if library == "asyncio":  # a callback of the loop, outside any task
        return _Asyncio(asyncio.get_running_loop())
    raise RuntimeError(f"unsupported async library {library!r}")  # pragma: no cover


def current_or_none() -> Backend | None:
    """The running event loop's backend, or None in a thread with no running event loop."""
    try:
        return current()
    except RuntimeError:  # sniffio.AsyncLibraryNotFoundError is one
        return None
