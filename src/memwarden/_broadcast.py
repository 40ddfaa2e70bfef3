"""One publisher, many subscribers, each with its own bounded buffer.

anyio's memory object streams deliver each item to *one* receiver and apply
back-pressure to the sender; a pressure or leak event stream needs the
opposite: every subscriber sees every item, and the publisher never waits for
anyone. No well-kept library offers that on anyio, so it is written here.

Design:

- ``publish()`` is synchronous. For each live subscription it applies the
  subscription's ``accept`` filter, appends the item to a bounded deque
  (dropping the oldest undelivered item when full and counting it in
  ``dropped``) and wakes the receiver parked on that subscription, if any.
- Subscriptions are held weakly: one that is garbage-collected disappears
  from the broadcaster without anyone calling ``close()``.
- ``receive()`` has the shape of every waiting primitive here: a checkpoint,
  then ``receive_nowait()``, else park until a publish (or a close) wakes it
  and try again. It pops from the deque only after it wakes, so a receiver
  cancelled at the moment an item arrives leaves the item in the buffer for
  the next receive (trio's rule: complete, or raise leaving state unchanged).

Threads: all buffer state sits behind one ``threading.Lock`` per broadcaster,
so ``publish()`` may be called from any thread without corrupting anything.
Receivers park on ``memwarden._backend``'s one-shot wake-ups, which are
thread-safe and never block the publisher.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Literal, TypeVar

import anyio
import anyio.lowlevel

from . import _backend
from ._validate import check_int

__all__ = ["BroadcastStatistics", "Broadcaster", "Overflow", "Subscription"]

T = TypeVar("T")

Overflow = Literal["drop_oldest", "latest"]
_OVERFLOWS: tuple[str, ...] = ("drop_oldest", "latest")

_log = logging.getLogger("memwarden.broadcast")

_Wakeups = list[_backend.Parking]


def check_overflow(value: object) -> Overflow:
    """Return ``value`` if it is ``"drop_oldest"`` or ``"latest"``; ``ValueError`` otherwise."""
    if value == "drop_oldest":
        return "drop_oldest"
    if value == "latest":
        return "latest"
    raise ValueError(f"overflow must be one of {_OVERFLOWS}, got {value!r}")


@dataclass(frozen=True)
class BroadcastStatistics:
    """A snapshot of a :class:`Broadcaster`.

    ``peak_subscribers`` and ``max_dropped`` are high-water marks since
    creation; ``max_dropped`` is the most items any one subscription lost.
    """

    subscribers: int
    peak_subscribers: int
    published: int
    dropped: int
    max_dropped: int
    closed: bool


class Subscription(Generic[T]):
    """One subscriber's view of a broadcast: an async iterator and async context manager.

    ``async with broadcaster.subscribe() as items: async for item in items: ...``.
    Iteration ends when the subscription or its broadcaster is closed (items
    already buffered are delivered first). ``dropped`` counts items lost to
    overflow. Receive from one event loop; several tasks may receive from the
    same subscription, each item goes to one of them.
    """

    __slots__ = (
        "__weakref__",
        "_accept",
        "_buffer",
        "_capacity",
        "_closed",
        "_ended",
        "_error",
        "_key",
        "_lock",
        "_owner",
        "_parked",
        "_waiting",
        "dropped",
        "peak_pending",
    )

    def __init__(
        self,
        owner: Broadcaster[T] | None,
        lock: threading.Lock,
        capacity: int,
        accept: Callable[[T], bool] | None,
    ) -> None:
        self._owner = owner
        self._lock = lock
        self._capacity = capacity
        self._accept = accept
        # maxlen makes a full buffer drop its oldest item inside append(), atomically.
        self._buffer: deque[T] = deque(maxlen=capacity)
        # One wake-up per parked receiver, taken (and woken) by the next push or end.
        self._parked: _Wakeups = []
        self._waiting = 0
        self._ended = False  # no more items will arrive
        self._closed = False  # closed by its own holder
        self._error: BaseException | None = None
        self._key = -1
        self.dropped = 0
        self.peak_pending = 0

    # -- state queries -------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items buffered and not yet received."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        """True once no further item will be delivered to this subscription."""
        return self._ended and not self._buffer

    @property
    def waiting(self) -> int:
        """How many tasks are parked in :meth:`receive` right now."""
        return self._waiting

    # -- core, called by the broadcaster under its lock -----------------------

    def _push_locked(self, item: T) -> _Wakeups | None:
        buffer = self._buffer
        size = len(buffer)
        if size >= self._capacity:
            self.dropped += 1
        else:
            size += 1
            if size > self.peak_pending:
                self.peak_pending = size
        buffer.append(item)
        return self._take_parked_locked() if self._parked else None

    def _end_locked(self, error: BaseException | None = None) -> _Wakeups | None:
        self._ended = True
        if error is not None and self._error is None:
            self._error = error
        return self._take_parked_locked()

    def _take_parked_locked(self) -> _Wakeups | None:
        # Every parked receiver is woken: each retries receive_nowait(), and
        # those that find nothing park again, so no wake-up is ever lost.
        parked = self._parked
        if not parked:
            return None
        self._parked = []
        return parked

    # -- receiving -----------------------------------------------------------

    def receive_nowait(self) -> T:
        """Return the oldest buffered item without waiting.

        Raises ``anyio.WouldBlock`` when nothing is buffered,
        ``anyio.ClosedResourceError`` after :meth:`close`, ``anyio.EndOfStream``
        when the broadcaster was closed and the buffer is drained, and
        ``anyio.BrokenResourceError`` (from the filter's exception) when this
        subscription's ``accept`` filter raised.
        """
        # deque documents its appends and pops as thread-safe, so an item is
        # taken without the lock; close() empties the buffer before it ends it.
        try:
            return self._buffer.popleft()
        except IndexError:
            pass
        with self._lock:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._buffer:
                return self._buffer.popleft()
            if self._ended:
                if self._error is not None:
                    raise anyio.BrokenResourceError(
                        f"subscription filter raised {self._error!r}"
                    ) from self._error
                raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        """Wait for and return the next item.

        Raises what :meth:`receive_nowait` raises, except ``WouldBlock``.
        Cancellation leaves the buffer untouched: an item that arrived as the
        wait was cancelled is returned by the next receive.
        """
        await anyio.lowlevel.checkpoint()
        backend = _backend.current()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            parking = backend.park()
            with self._lock:
                # A publish may have landed since receive_nowait(): try it again.
                if self._buffer or self._ended:
                    continue
                self._parked.append(parking)
                self._waiting += 1
            try:
                await parking.wait()
            finally:
                with self._lock:
                    self._waiting -= 1
                    if parking in self._parked:  # cancelled before anyone woke it
                        self._parked.remove(parking)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop receiving: unsubscribe, drop buffered items, end iteration. Idempotent.

        Receivers parked in :meth:`receive` raise ``anyio.ClosedResourceError``
        (an ``async for`` loop simply ends).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.clear()
            parked = self._end_locked()
        owner = self._owner
        self._owner = None
        if owner is not None:
            owner._discard(self._key)
        _wake(parked)

    async def aclose(self) -> None:
        """Close like :meth:`close`, then yield to the event loop once."""
        self.close()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<Subscription {state} pending={len(self._buffer)} "
            f"capacity={self._capacity} dropped={self.dropped}>"
        )


class Broadcaster(Generic[T]):
    """Deliver every published item to every subscription, never waiting for one.

    ``publish()`` is synchronous, never blocks and never raises because of a
    subscriber: a slow subscriber loses its oldest undelivered items (counted
    in its ``dropped``), a subscription whose ``accept`` filter raises is
    removed (the error is logged and re-raised to its receiver as
    ``anyio.BrokenResourceError``), a garbage-collected one is forgotten.
    Thread-safe: ``publish``, ``subscribe`` and ``close`` may be called from
    any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Values are weak: an abandoned subscription must not be kept alive by us.
        self._subs: dict[int, weakref.ref[Subscription[T]]] = {}
        self._next_key = 0
        self._closed = False
        self._published = 0
        self._peak_subscribers = 0
        self._dropped_gone = 0
        self._max_dropped = 0

    @property
    def subscribers(self) -> int:
        """How many subscriptions are live right now."""
        return len(self._subs)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def subscribe(
        self,
        *,
        buffer: int = 16,
        overflow: Overflow = "drop_oldest",
        initial: Sequence[T] = (),
        accept: Callable[[T], bool] | None = None,
    ) -> Subscription[T]:
        """Return a new subscription that receives every item published from now on.

        ``buffer`` (>= 1) bounds the undelivered items; when it is full the
        oldest is dropped (``overflow="drop_oldest"``). ``overflow="latest"``
        conflates: only the newest undelivered item is kept, whatever
        ``buffer`` says. ``initial`` items are buffered first, before any
        published item, and are not passed to ``accept``; ``accept`` decides
        for each published item whether this subscription wants it.
        After :meth:`close` the subscription delivers ``initial`` and ends.

        Raises ``TypeError``/``ValueError`` for bad arguments.
        """
        check_int("buffer", buffer, minimum=1)
        overflow = check_overflow(overflow)
        if accept is not None and not callable(accept):
            raise TypeError(f"accept must be callable or None, got {accept!r}")
        capacity = 1 if overflow == "latest" else buffer
        sub: Subscription[T] = Subscription(self, self._lock, capacity, accept)
        for item in initial:
            sub._push_locked(item)
        with self._lock:
            if self._closed:
                sub._owner = None
                sub._end_locked()
                return sub
            key = self._next_key
            self._next_key += 1
            sub._key = key
            self._subs[key] = weakref.ref(sub, self._make_forget(key))
            if len(self._subs) > self._peak_subscribers:
                self._peak_subscribers = len(self._subs)
        return sub

    def _make_forget(self, key: int) -> Callable[[weakref.ref[Subscription[T]]], None]:
        # The callback may run during garbage collection inside a locked region
        # of this thread, so it must not take the lock: dict.pop is atomic.
        subs = self._subs

        def forget(_ref: weakref.ref[Subscription[T]]) -> None:
            subs.pop(key, None)

        return forget

    def _discard(self, key: int) -> None:
        ref = self._subs.pop(key, None)
        sub = ref() if ref is not None else None
        if sub is not None:
            with self._lock:
                self._dropped_gone += sub.dropped
                self._max_dropped = max(self._max_dropped, sub.dropped)

    def publish(self, item: T) -> None:
        """Buffer ``item`` for every live subscription and wake their receivers.

        Never blocks and never raises because of a subscriber. A no-op after
        :meth:`close`. Callable from any thread (see the module docstring).
        """
        if self._closed:
            return
        filtered: list[Subscription[T]] | None = None
        wake: list[_Wakeups] | None = None
        with self._lock:
            self._published += 1
            for ref in tuple(self._subs.values()):
                sub = ref()
                if sub is None or sub._ended:
                    continue
                if sub._accept is not None:
                    # Filters are user code: they run below, outside the lock.
                    if filtered is None:
                        filtered = []
                    filtered.append(sub)
                    continue
                parked = sub._push_locked(item)
                if parked is not None:
                    if wake is None:
                        wake = []
                    wake.append(parked)
        broken: list[tuple[Subscription[T], BaseException]] | None = None
        if filtered is not None:
            for sub in filtered:
                try:
                    if not sub._accept(item):  # type: ignore[misc]
                        continue
                except Exception as exc:
                    if broken is None:
                        broken = []
                    broken.append((sub, exc))
                    continue
                with self._lock:
                    parked = None if sub._ended else sub._push_locked(item)
                if parked is not None:
                    if wake is None:
                        wake = []
                    wake.append(parked)
        if wake is not None:
            for parked in wake:
                _wake(parked)
        if broken is not None:
            for sub, error in broken:
                _log.warning(
                    "removing a subscription whose filter raised %r", error, exc_info=error
                )
                self._break(sub, error)

    def _break(self, sub: Subscription[T], exc: BaseException) -> None:
        with self._lock:
            parked = sub._end_locked(exc)
        self._discard(sub._key)
        sub._owner = None
        _wake(parked)

    def close(self) -> None:
        """End every subscription's iteration (after its buffered items). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        wake: list[_Wakeups | None] = []
        for key, ref in list(self._subs.items()):
            sub = ref()
            if sub is None:
                continue
            with self._lock:
                wake.append(sub._end_locked())
            sub._owner = None
            self._discard(key)
        self._subs.clear()
        for parked in wake:
            _wake(parked)

    def statistics(self) -> BroadcastStatistics:
        """Return a snapshot of counts and high-water marks."""
        live = [s for s in (r() for r in tuple(self._subs.values())) if s is not None]
        with self._lock:
            dropped_live = sum(s.dropped for s in live)
            max_live = max((s.dropped for s in live), default=0)
            return BroadcastStatistics(
                subscribers=len(live),
                peak_subscribers=self._peak_subscribers,
                published=self._published,
                dropped=self._dropped_gone + dropped_live,
                max_dropped=max(self._max_dropped, max_live),
                closed=self._closed,
            )

    def __repr__(self) -> str:
        return f"<Broadcaster subscribers={len(self._subs)} published={self._published}>"


def _wake(parked: _Wakeups | None) -> None:
    if parked is not None:
        for parking in parked:
            parking.wake()
