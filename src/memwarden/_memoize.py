"""``memoize``: result caching for sync and async functions, with single-flight for async.

Keys follow ``functools`` rules (positional arguments, ``typed=`` adds types)
except that keyword arguments are order-insensitive. Exceptions are never
cached.

Async single-flight: concurrent calls with one key share one computation. The
computation runs in its own task (an asyncio ``Task``, or a trio system task),
not in the first caller's, so that cancelling any caller, the first included,
returns that caller at once while the others keep waiting for the result.
When the last waiter goes away before the result is ready, the computation is
cancelled (through an anyio ``CancelScope``) and nothing is cached: nobody is
left to want it. This is the behaviour async-lru settled on (PRs #697/#708).
anyio has no detached spawn on purpose, so that one call is backend-specific;
every wait and cancellation goes through anyio.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

import anyio

from ._cache_core import LRUCache, TTLCache, _SingleThreadLRUCache, _unhashable
from .errors import CacheError

__all__ = ["CacheInfo", "MemoizedFunction", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co")

_MISSING: Any = object()
_KWMARK: Any = object()
_FASTTYPES = frozenset({int, str})


class CacheInfo(NamedTuple):
    """``functools``-style statistics of a memoized function."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


class MemoizedFunction(Protocol[P, R_co]):
    """What :func:`memoize` returns: the function plus ``functools``-style cache controls."""

    cache: LRUCache[Any, Any]
    __wrapped__: Callable[P, R_co]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function, or return its cached result."""
        ...

    def cache_info(self) -> CacheInfo:
        """Hits (calls answered without running the function), misses, maxsize, currsize."""
        ...

    def cache_clear(self) -> None:
        """Forget every cached result and zero the counters."""
        ...

    def cache_invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forget the result for these arguments; ``True`` if one was cached or in flight."""
        ...

    def cache_parameters(self) -> dict[str, Any]:
        """``maxsize``, ``max_bytes``, ``ttl``, ``policy`` and ``typed``, as functools offers."""
        ...


def make_key(args: tuple[Any, ...], kwargs: dict[str, Any], typed: bool) -> Hashable:
    """The cache key of a call: ``functools`` rules, keyword order ignored."""
    key: tuple[Any, ...] = args
    items: list[tuple[str, Any]] = []
    if kwargs:
        items = sorted(kwargs.items())
        key += (_KWMARK,)
        for item in items:
            key += item
    if typed:
        key += tuple(type(v) for v in args)
        if items:
            key += tuple(type(v) for _, v in items)
    elif len(key) == 1 and type(key[0]) in _FASTTYPES:
        return cast(Hashable, key[0])
    return key


def _loop_identity() -> object:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token()


_BACKGROUND: set[asyncio.Task[None]] = set()


def _spawn(fn: Callable[[], Awaitable[None]]) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        trio.lowlevel.spawn_system_task(fn, context=contextvars.copy_context())
        return
    task: asyncio.Task[None] = loop.create_task(fn())  # type: ignore[arg-type]
    # asyncio keeps only weak references to tasks.
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class _Flight:
    __slots__ = ("abandoned", "error", "event", "invalidated", "ok", "scope", "value", "waiters")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.waiters = 0
        self.value: Any = None
        self.error: BaseException | None = None
        self.ok = False
        self.abandoned = False
        self.invalidated = False
        self.scope: anyio.CancelScope | None = None


def _describe(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


@overload
def memoize(cache: Callable[P, R], /) -> MemoizedFunction[P, R]: ...
@overload
def memoize(
    cache: LRUCache[Any, Any] | None = None,
    *,
    capacity: int | None = None,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    max_bytes: int | None = None,
    sizeof: Callable[[Any], int] | None = None,
    policy: str = "lru",
    clock: Callable[[], float] = time.monotonic,
    thread_safe: bool = True,
) -> Callable[[Callable[P, R]], MemoizedFunction[P, R]]: ...
def memoize(
    cache: Any = None,
    *,
    capacity: int | None = None,
    ttl: float | None = None,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    max_bytes: int | None = None,
    sizeof: Callable[[Any], int] | None = None,
    policy: str = "lru",
    clock: Callable[[], float] = time.monotonic,
    thread_safe: bool = True,
) -> Any:
    """Cache a function's results in an :class:`LRUCache` (``@memoize`` or ``@memoize(...)``).

    Works on sync and async functions. ``capacity=None`` and ``max_bytes=None``
    mean unbounded (as ``functools.cache``); ``ttl`` makes results expire.
    Pass ``cache=`` to store results in an existing cache (keys are then
    prefixed per function, so functions sharing a cache never collide).
    ``key=`` replaces the key function: ``key(*args, **kwargs) -> hashable``.
    Concurrent awaits of one key share one computation (see the module notes
    on cancellation); exceptions are never cached; a result too large for
    ``max_bytes`` is returned but not cached.

    ``thread_safe=False`` drops the cache's lock (one thread only, e.g. one
    event loop). Raises ``TypeError``/``ValueError`` for bad arguments, and
    ``ValueError`` when ``cache`` is combined with the cache-building options.
    """
    if callable(cache) and not isinstance(cache, LRUCache):
        return memoize()(cache)
    if key is not None and not callable(key):
        raise TypeError(f"key must be callable, got {type(key).__name__} {key!r}")
    if not isinstance(typed, bool):
        raise TypeError(f"typed must be a bool, got {type(typed).__name__} {typed!r}")
    shared = cache is not None
    if shared:
        if not isinstance(cache, LRUCache):
            raise TypeError(f"cache must be an LRUCache, got {type(cache).__name__} {cache!r}")
        given = {
            "capacity": capacity,
            "ttl": ttl,
            "max_bytes": max_bytes,
            "sizeof": sizeof,
        }
        clash = [name for name, value in given.items() if value is not None]
        if policy != "lru":
            clash.append("policy")
        if not thread_safe:
            clash.append("thread_safe")
        if clash:
            raise ValueError(
                f"pass either cache or {', '.join(clash)}, not both (got cache={cache!r})"
            )
        store: LRUCache[Any, Any] = cache
    elif ttl is not None:
        store = TTLCache(
            ttl,
            capacity,
            max_bytes=max_bytes,
            sizeof=sizeof,
            clock=clock,
            policy=policy,  # type: ignore[arg-type]
        )
    else:
        store = LRUCache(
            capacity,
            max_bytes=max_bytes,
            sizeof=sizeof,
            clock=clock,
            policy=policy,  # type: ignore[arg-type]
        )

    def decorate(func: Callable[P, R]) -> MemoizedFunction[P, R]:
        if not callable(func):
            raise TypeError(f"memoize needs a callable, got {type(func).__name__} {func!r}")
        if inspect.iscoroutinefunction(func):
            wrapper = _async_wrapper(func, store, key, typed, shared)
        else:
            wrapper = _sync_wrapper(func, store, key, typed, shared)
        return cast(MemoizedFunction[P, R], wrapper)

    return decorate


class _Controls:
    """Counters and cache controls shared by the sync and async wrappers."""

    __slots__ = ("flights", "hits", "misses", "prefix", "shared", "store", "typed")

    def __init__(self, store: LRUCache[Any, Any], shared: bool, typed: bool) -> None:
        self.store = store
        self.typed = typed
        self.shared = shared
        self.prefix = object() if shared else None
        self.hits = 0
        self.misses = 0
        self.flights: dict[tuple[object, Hashable], _Flight] = {}

    def own_keys(self) -> list[Hashable]:
        prefix = self.prefix
        return [k for k in self.store if isinstance(k, tuple) and k and k[0] is prefix]

    def info(self) -> CacheInfo:
        size = len(self.own_keys()) if self.shared else len(self.store)
        return CacheInfo(self.hits, self.misses, self.store.capacity, size)

    def clear(self) -> None:
        if self.shared:
            for k in self.own_keys():
                self.store.pop(k, None)
        else:
            self.store.clear()
        for flight in self.flights.values():
            flight.invalidated = True
        self.hits = self.misses = 0

    def invalidate(self, k: Hashable) -> bool:
        if self.prefix is not None:
            k = (self.prefix, k)
        removed = self.store.pop(k, _MISSING) is not _MISSING
        for (_, flight_key), flight in self.flights.items():
            if flight_key == k:
                flight.invalidated = True
                removed = True
        return removed


def _attach(
    wrapper: Any,
    func: Callable[..., Any],
    controls: _Controls,
    make: Callable[[tuple[Any, ...], dict[str, Any]], Hashable],
) -> None:
    functools.update_wrapper(wrapper, func)
    wrapper.cache = controls.store
    wrapper.cache_info = controls.info
    wrapper.cache_clear = controls.clear
    wrapper.cache_invalidate = lambda *a, **kw: controls.invalidate(make(a, kw))
    store = controls.store
    wrapper.cache_parameters = lambda: {
        "maxsize": store.capacity,
        "max_bytes": store.max_bytes,
        "ttl": store.ttl,
        "policy": store.policy,
        "typed": controls.typed,
    }


def _key_maker(
    key: Callable[..., Hashable] | None, typed: bool
) -> Callable[[tuple[Any, ...], dict[str, Any]], Hashable]:
    if key is not None:
        user_key = key
        return lambda a, kw: user_key(*a, **kw)
    return lambda a, kw: make_key(a, kw, typed)


def _inline_parts(store: LRUCache[Any, Any]) -> tuple[bool, Any]:
    """Whether the wrapper may read ``store`` directly, and the lock to take then.

    A plain LRU lookup is a dict get and a move_to_end; doing it in the
    wrapper instead of calling ``store.get`` saves a Python frame, which is a
    third of the cost of a hit. Caches with TTL, weights or W-TinyLFU go
    through ``store.get``.
    """
    plain = not store._special
    lock = None if isinstance(store, _SingleThreadLRUCache) else store._lock
    return plain, lock


def _sync_wrapper(
    func: Callable[..., Any],
    store: LRUCache[Any, Any],
    key: Callable[..., Hashable] | None,
    typed: bool,
    shared: bool,
) -> Callable[..., Any]:
    controls = _Controls(store, shared, typed)
    prefix = controls.prefix
    cache_get = store.get
    cache_put = store.put
    fast = _FASTTYPES
    make = _key_maker(key, typed)
    simple = key is None and not typed and not shared

    plain, lock = _inline_parts(store)
    data_get = store._data_get
    move_to_end = store._move_to_end
    counter_lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The common case (positional, untyped, own cache) is inlined: it is
        # the whole cost of a hit.
        if simple and not kwargs:
            k: Hashable = args[0] if len(args) == 1 and type(args[0]) in fast else args
        else:
            k = make(args, kwargs)
            if prefix is not None:
                k = (prefix, k)
        if plain:
            if lock is not None:
                lock.acquire()
            try:
                value = data_get(k, _MISSING)
                # Counted under the cache's lock so threads lose no counts.
                if value is _MISSING:
                    store._misses += 1
                    controls.misses += 1
                else:
                    move_to_end(k)
                    store._hits += 1
                    controls.hits += 1
                    return value
            except TypeError:
                raise _unhashable(k) from None
            finally:
                if lock is not None:
                    lock.release()
        else:
            value = cache_get(k, _MISSING)
            with counter_lock:
                if value is not _MISSING:
                    controls.hits += 1
                    return value
                controls.misses += 1
        value = func(*args, **kwargs)
        # A value larger than max_bytes is returned but not cached.
        with contextlib.suppress(CacheError):
            cache_put(k, value)
        return value

    _attach(wrapper, func, controls, make)
    return wrapper


def _async_wrapper(
    func: Callable[..., Awaitable[Any]],
    store: LRUCache[Any, Any],
    key: Callable[..., Hashable] | None,
    typed: bool,
    shared: bool,
) -> Callable[..., Any]:
    controls = _Controls(store, shared, typed)
    prefix = controls.prefix
    cache_get = store.get
    flights = controls.flights
    fast = _FASTTYPES
    make = _key_maker(key, typed)
    simple = key is None and not typed and not shared
    name = _describe(func)

    def finish(flight_key: tuple[object, Hashable], flight: _Flight) -> None:
        try:
            if flights.get(flight_key) is flight:
                del flights[flight_key]
            if flight.ok and not flight.invalidated:
                try:
                    store.put(flight_key[1], flight.value)
                except CacheError:
                    pass  # larger than max_bytes: returned, not cached
                except Exception as exc:
                    # A failing sizeof reaches the callers, as it does for sync functions.
                    flight.ok = False
                    flight.error = exc
            elif not flight.ok and flight.error is None:
                flight.error = CacheError(f"the shared computation of {name} was cancelled")
        finally:
            # Whatever happened above, no waiter may be left parked.
            flight.event.set()

    def start(flight_key: tuple[object, Hashable], args: Any, kwargs: Any) -> _Flight:
        flight = _Flight()

        async def compute() -> None:
            try:
                with anyio.CancelScope() as scope:
                    flight.scope = scope
                    if flight.abandoned:
                        scope.cancel()
                    flight.value = await func(*args, **kwargs)
                    flight.ok = True
            except Exception as exc:
                flight.error = exc
            finally:
                finish(flight_key, flight)

        flights[flight_key] = flight
        _spawn(compute)
        return flight

    async def join(flight_key: tuple[object, Hashable], flight: _Flight) -> Any:
        flight.waiters += 1
        try:
            await flight.event.wait()
        except BaseException:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.event.is_set():
                # Last waiter gone: nobody wants the result any more.
                flight.abandoned = True
                if flights.get(flight_key) is flight:
                    del flights[flight_key]
                if flight.scope is not None:
                    flight.scope.cancel()
            raise
        flight.waiters -= 1
        if flight.error is not None:
            raise flight.error
        return flight.value

    plain, lock = _inline_parts(store)
    data_get = store._data_get
    move_to_end = store._move_to_end

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if simple and not kwargs:
            k: Hashable = args[0] if len(args) == 1 and type(args[0]) in fast else args
        else:
            k = make(args, kwargs)
            if prefix is not None:
                k = (prefix, k)
        if plain:
            if lock is not None:
                lock.acquire()
            try:
                value = data_get(k, _MISSING)
                if value is _MISSING:
                    store._misses += 1
                else:
                    move_to_end(k)
                    store._hits += 1
            except TypeError:
                raise _unhashable(k) from None
            finally:
                if lock is not None:
                    lock.release()
        else:
            value = cache_get(k, _MISSING)
        if value is not _MISSING:
            controls.hits += 1
            return value
        flight_key = (_loop_identity(), k)
        flight = flights.get(flight_key)
        if flight is None:
            controls.misses += 1
            flight = start(flight_key, args, kwargs)
        else:
            controls.hits += 1
        return await join(flight_key, flight)

    _attach(wrapper, func, controls, make)
    return wrapper


for _cls in (CacheInfo, MemoizedFunction):
    _cls.__module__ = "memwarden.cache"
memoize.__module__ = "memwarden.cache"
