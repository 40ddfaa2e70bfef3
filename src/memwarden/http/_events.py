"""Server-Sent Events of pressure changes: the responder behind ``GET /api/memory/events``.

Written by hand, as a small pure-ASGI responder on anyio, instead of using
sse-starlette: that package patches uvicorn's exit handler and keeps
module-level state shared by every app in the process, which hangs or races
shutdown when several apps or servers live in one process. This one keeps its
state on the app (:class:`EventStreams`) and ends each stream in one of three
clear ways: the client goes (``http.disconnect`` from ``receive``), the Warden
closes (its subscriptions end), or :meth:`EventStreams.close` is called (a
server's shutdown hook).

Each message is::

    event: pressure
    id: <n, counting from 1 per stream>
    retry: <ms>
    data: <one JSON PressureEvent, levels as labels>

and a ``: ping`` comment goes out after ``ping_interval`` seconds without an
event, so proxies keep the connection and clients notice a dead one. Each
stream reads a bounded subscription (``overflow="drop_oldest"``): a slow
client loses its oldest undelivered events and never slows the monitor.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import anyio
import anyio.lowlevel

from .._envelope import send_error

if TYPE_CHECKING:
    from ..pressure import PressureEvent, Subscription
    from ..warden import Warden

__all__ = ["EventStreams"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_PING = b": ping\n\n"


def format_event(event: PressureEvent, event_id: int, retry_ms: int) -> bytes:
    """One SSE message for ``event``."""
    data = json.dumps(event.to_dict(), separators=(",", ":"))
    return f"event: pressure\nid: {event_id}\nretry: {retry_ms}\ndata: {data}\n\n".encode()


class EventStreams:
    """The open event streams of one app, and the ASGI responder that opens them.

    ``ping_interval`` (s) is the quiet time after which a ``: ping`` comment
    is sent; ``buffer`` bounds each client's undelivered events; ``retry``
    (s) is the reconnection delay suggested to clients. :meth:`close` ends
    every open stream and refuses new ones (503), for a server's shutdown:
    uvicorn waits for open responses before it shuts down. Thread-safe
    counters; :meth:`close` may be called from a signal handler.
    """

    def __init__(
        self, warden: Warden, *, ping_interval: float, buffer: int, retry: float = 3.0
    ) -> None:
        self._warden = warden
        self._ping_interval = ping_interval
        self._buffer = buffer
        self._retry_ms = max(0, round(retry * 1000))
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription[PressureEvent]] = set()
        self._closed = False
        self._opened = 0
        self._sent = 0
        self._dropped = 0
        self._idle_waiters: list[Callable[[], None]] = []

    @property
    def open(self) -> int:
        """How many streams are open now."""
        with self._lock:
            return len(self._subscriptions)

    def stats(self) -> dict[str, int]:
        """Counters: ``open`` now, ``opened`` and events ``sent`` in all, events ``dropped``."""
        with self._lock:
            dropped = self._dropped + sum(s.dropped for s in self._subscriptions)
            return {
                "open": len(self._subscriptions),
                "opened": self._opened,
                "sent": self._sent,
                "dropped": dropped,
            }

    def close(self) -> None:
        """End every open stream (each sends its last chunk) and refuse new ones. Idempotent."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    async def wait_idle(self) -> None:
        """Return once no stream is open (at once when none is).

        A checkpoint; cancelled or timed out, it leaves nothing registered.
        """
        await anyio.lowlevel.checkpoint()
        event = anyio.Event()
        with self._lock:
            if not self._subscriptions:
                return
            self._idle_waiters.append(event.set)
        try:
            await event.wait()
        finally:
            with self._lock:
                if event.set in self._idle_waiters:
                    self._idle_waiters.remove(event.set)

    def _forget(self, subscription: Subscription[PressureEvent]) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)
            self._dropped += subscription.dropped
            wake = self._idle_waiters if not self._subscriptions else []
            if wake:
                self._idle_waiters = []
        for set_event in wake:
            set_event()

    def _subscribe(self) -> Subscription[PressureEvent] | None:
        warden = self._warden
        with self._lock:
            if self._closed or not warden.running:
                return None
        subscription = warden.subscribe(
            buffer=self._buffer, overflow="drop_oldest", include_current=True
        )
        # Warden.running turns False before the Warden ends its subscriptions,
        # so a subscription taken while it still runs is always ended by it.
        with self._lock:
            if self._closed or not warden.running:
                subscription.close()
                return None
            self._subscriptions.add(subscription)
            self._opened += 1
        return subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one event stream until the client goes or the stream is ended."""
        query = scope.get("query_string", b"").decode("latin-1")
        for name, _ in parse_qsl(query, keep_blank_values=True):
            await send_error(
                send,
                400,
                "bad_parameter",
                f"unknown query parameter {name!r} (this route accepts: none)",
            )
            return
        subscription = self._subscribe()
        if subscription is None:
            await send_error(
                send,
                503,
                "unavailable",
                "the event stream is closed: the Warden is not running or the server is "
                "shutting down",
                headers=[("Retry-After", str(max(1, self._retry_ms // 1000)))],
            )
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with anyio.create_task_group() as group:
                group.start_soon(_watch_disconnect, receive, group.cancel_scope)
                await self._pump(subscription, send)
                # Ended by us (the Warden or close()): finish the response.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went while we were writing; nothing is left to tell it
        finally:
            subscription.close()
            self._forget(subscription)

    async def _pump(self, subscription: Subscription[PressureEvent], send: Send) -> None:
        event_id = 0
        while True:
            event: PressureEvent | None = None
            with anyio.move_on_after(self._ping_interval):
                try:
                    event = await subscription.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
            if event is None:
                await send({"type": "http.response.body", "body": _PING, "more_body": True})
                continue
            event_id += 1
            body = format_event(event, event_id, self._retry_ms)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            with self._lock:
                self._sent += 1


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Read ``receive`` until the client disconnects, then cancel the stream."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            scope.cancel()
            return
