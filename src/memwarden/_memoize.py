"""``memoize``: result caching for sync and async functions, with single-flight for async.

The wrapper follows cachetools' ``cached``: it builds the key, asks the cache's
public ``get``, calls the function on a miss and ``put``s the result. The
cache's own lock is the only one a hit takes; the function runs outside it.
Keys follow ``functools`` rules (positional arguments, ``typed=`` adds types)
except that keyword arguments are order-insensitive. Exceptions are never
cached.

Async single-flight has the shape of trio's waiting primitives: try the cache
(a hit returns without waiting), else join the computation of that key on
this event loop, or start it, and park until it ends. The computation runs
as a background task of the loop (``_backend``), not in the first caller's
task, so cancelling any caller, the first included, returns that caller at
once while the others keep waiting. A cancelled waiter leaves the flight; the
last one to leave abandons it: the computation is cancelled (through an anyio
``CancelScope``), the flight leaves the table and nothing is cached, as
async-lru settled on (PRs #697/#708). Each waiter of a failed computation
raises its own copy of the exception (see ``_own_exception``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

import anyio

from . import _backend
from ._cache_core import LRUCache, TTLCache, _check_bool, _check_callable
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
    """What :func:`memoize` returns: the function plus ``functools``-style cache controls.

    On a method, ``instance.method.cache_invalidate(*args)`` forgets the entry
    of that instance's call (``self`` is part of the key), as in async-lru.
    """

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


def _describe(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _own_exception(error: BaseException, traceback: Any) -> BaseException:
    """A copy of ``error`` for one waiter, with the computation's own traceback.

    Raising one exception object in every waiter would grow its traceback by
    each waiter's frames (and keep those frames alive), and let one waiter's
    ``raise`` rewrite what another sees. The copy is ``copy.copy``'s, kept
    only when it is faithful (same type, ``args`` and attributes): an
    exception whose ``__init__`` does not take its own ``args`` back cannot be
    rebuilt that way, and is raised as itself with its traceback reset, as
    ``asyncio.Future`` does.
    """
    try:
        twin = copy.copy(error)
        faithful = (
            type(twin) is type(error)
            and twin.args == error.args
            and vars(twin).keys() == vars(error).keys()
        )
    except Exception:
        faithful = False
    if not faithful:
        return error.with_traceback(traceback)
    twin.__cause__ = error.__cause__
    twin.__context__ = error.__context__
    twin.__suppress_context__ = error.__suppress_context__
    return twin.with_traceback(traceback)


class _Flight:
    """One computation on one event loop and the tasks parked on it."""

    __slots__ = (
        "abandoned",
        "done",
        "error",
        "invalidated",
        "key",
        "parked",
        "scope",
        "traceback",
        "value",
    )

    def __init__(self, key: tuple[object, Hashable]) -> None:
        self.key = key
        self.parked: set[_backend.Parking] = set()
        self.value: Any = _MISSING
        self.error: BaseException | None = None
        self.traceback: Any = None
        self.done = False
        self.abandoned = False
        self.invalidated = False
        self.scope: anyio.CancelScope | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise _own_exception(self.error, self.traceback)
        return self.value


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

    Works on sync and async functions, and on methods (``self`` is part of
    the key). ``capacity=None`` and ``max_bytes=None`` mean unbounded (as
    ``functools.cache``); ``capacity=0`` caches nothing (every call runs the
    function, as ``lru_cache(maxsize=0)``); ``ttl`` makes results expire. Pass
    ``cache=`` to store results in an existing cache (keys are then prefixed
    per function, so functions sharing a cache never collide). ``key=``
    replaces the key function: ``key(*args, **kwargs) -> hashable``.
    Concurrent awaits of one key share one computation (see the module notes
    on cancellation); exceptions are never cached; a result too large for
    ``max_bytes`` is returned but not cached.

    ``thread_safe=False`` builds the cache without a lock (one thread only,
    e.g. one event loop). Raises ``TypeError``/``ValueError`` naming the
    argument for bad arguments, and ``ValueError`` when ``cache`` is combined
    with the cache-building options. Each decorated function gets its own
    cache.
    """
    if callable(cache) and not isinstance(cache, LRUCache):
        return memoize()(cache)
    if key is not None:
        _check_callable("key", key)
    _check_bool("typed", typed)
    _check_bool("thread_safe", thread_safe)
    shared = cache is not None
    if shared:
        if not isinstance(cache, LRUCache):
            raise TypeError(f"cache must be an LRUCache, got {type(cache).__name__} {cache!r}")
        given = {"capacity": capacity, "ttl": ttl, "max_bytes": max_bytes, "sizeof": sizeof}
        clash = [name for name, value in given.items() if value is not None]
        if policy != "lru":
            clash.append("policy")
        if not thread_safe:
            clash.append("thread_safe")
        if clash:
            raise ValueError(
                f"pass either cache or {', '.join(clash)}, not both (got cache={cache!r})"
            )

    def build() -> LRUCache[Any, Any]:
        if shared:
            return cast(LRUCache[Any, Any], cache)
        if ttl is not None:
            return TTLCache(
                ttl,
                capacity,
                max_bytes=max_bytes,
                sizeof=sizeof,
                clock=clock,
                policy=policy,  # type: ignore[arg-type]
                thread_safe=thread_safe,
            )
        return LRUCache(
            capacity,
            max_bytes=max_bytes,
            sizeof=sizeof,
            clock=clock,
            policy=policy,  # type: ignore[arg-type]
            thread_safe=thread_safe,
        )

    build()  # every bad argument is refused here, before anything is decorated

    def decorate(func: Callable[P, R]) -> MemoizedFunction[P, R]:
        _check_callable("func", func)
        kind: type[_Memoized] = _AsyncMemoized if inspect.iscoroutinefunction(func) else _Memoized
        return cast(MemoizedFunction[P, R], kind(func, build(), key, typed, shared))

    return decorate


class _Memoized:
    """A memoized function: the call path and the functools-style controls.

    A descriptor like a function: looked up on an instance it binds that
    instance (:class:`_BoundMemoized`), so the method's controls know ``self``.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_calls",
        "_computed",
        "_flights",
        "_get",
        "_key",
        "_mutex",
        "_prefix",
        "_put",
        "_simple",
        "_typed",
        "cache",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        store: LRUCache[Any, Any],
        key: Callable[..., Hashable] | None,
        typed: bool,
        shared: bool,
    ) -> None:
        functools.update_wrapper(self, func)
        self.cache = store
        self._get = store.get
        self._put = store.put
        self._key = key
        self._typed = typed
        # A shared cache holds other functions' entries too: keys get a
        # per-function prefix, and calls are counted here, not by the cache.
        self._prefix: object | None = object() if shared else None
        self._simple = key is None and not typed and not shared
        lock = threading.RLock() if store.thread_safe else None
        self._mutex: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext()
        )
        self._calls: int | None = 0 if shared else None
        self._computed = 0
        self._flights: dict[tuple[object, Hashable], _Flight] = {}

    def _key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        """The cache key of a call, prefixed in a shared cache; counts nothing."""
        user_key = self._key
        k = (
            user_key(*args, **kwargs)
            if user_key is not None
            else make_key(args, kwargs, self._typed)
        )
        prefix = self._prefix
        return k if prefix is None else (prefix, k)

    def _make_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        """The key of a call that is not on the inline path; counts the call in a shared cache."""
        k = self._key_of(args, kwargs)
        if self._calls is not None:
            with self._mutex:
                self._calls += 1
        return k

    def _store(self, k: Hashable, value: Any) -> None:
        # A value larger than max_bytes is returned but not cached.
        with contextlib.suppress(CacheError):
            self._put(k, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the cached result for these arguments, or call the function and cache it."""
        if self._simple and not kwargs:
            k = args[0] if len(args) == 1 and type(args[0]) in _FASTTYPES else args
        else:
            k = self._make_key(args, kwargs)
        value = self._get(k, _MISSING)
        if value is not _MISSING:
            return value
        with self._mutex:
            self._computed += 1
        value = self.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]
        self._store(k, value)
        return value

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return self if instance is None else _BoundMemoized(self, instance)

    def __reduce__(self) -> str:
        # Pickled by reference, like the function it replaces.
        return cast(str, self.__qualname__)  # type: ignore[attr-defined]

    def __copy__(self) -> _Memoized:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Memoized:
        return self

    def __repr__(self) -> str:
        return f"<memoized {self.__wrapped__!r}>"  # type: ignore[attr-defined]

    # -- functools-style controls -------------------------------------------

    def _own_keys(self) -> list[Hashable]:
        prefix = self._prefix
        return [k for k in self.cache if isinstance(k, tuple) and k and k[0] is prefix]

    def cache_info(self) -> CacheInfo:
        """Hits (calls answered without running the function), misses, maxsize, currsize."""
        store = self.cache
        with self._mutex:
            computed = self._computed
            calls = self._calls
        if calls is None:  # every call asked the cache once
            calls = store._lookups()
            size = len(store)
        else:
            size = len(self._own_keys())
        # max(): a cache_clear() racing this read may zero one count first.
        return CacheInfo(max(calls - computed, 0), computed, store.capacity, size)

    def cache_clear(self) -> None:
        """Forget every cached result and zero the counters; computations in flight are not kept."""
        store = self.cache
        if self._prefix is not None:
            for k in self._own_keys():
                store.pop(k, None)
        else:
            store.clear()
            store.reset_stats()
        with self._mutex:
            for flight in self._flights.values():
                flight.invalidated = True
            self._computed = 0
            if self._calls is not None:
                self._calls = 0

    def cache_invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forget the result for these arguments; ``True`` if one was cached or in flight.

        A computation in flight still answers its waiters, but is not cached.
        """
        k = self._key_of(args, kwargs)
        removed = self.cache.pop(k, _MISSING) is not _MISSING
        with self._mutex:
            for (_, flight_key), flight in self._flights.items():
                if flight_key == k:
                    flight.invalidated = True
                    removed = True
        return removed

    def cache_parameters(self) -> dict[str, Any]:
        """``maxsize``, ``max_bytes``, ``ttl``, ``policy`` and ``typed``, as functools offers."""
        store = self.cache
        return {
            "maxsize": store.capacity,
            "max_bytes": store.max_bytes,
            "ttl": store.ttl,
            "policy": store.policy,
            "typed": self._typed,
        }


class _AsyncMemoized(_Memoized):
    """A memoized coroutine function: a hit returns at once; misses share one computation."""

    __slots__ = ()

    def __init__(
        self,
        func: Callable[..., Any],
        store: LRUCache[Any, Any],
        key: Callable[..., Hashable] | None,
        typed: bool,
        shared: bool,
    ) -> None:
        super().__init__(func, store, key, typed, shared)
        _mark_coroutine_function(self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the cached result, or await the one computation of these arguments."""
        if self._simple and not kwargs:
            k = args[0] if len(args) == 1 and type(args[0]) in _FASTTYPES else args
        else:
            k = self._make_key(args, kwargs)
        value = self._get(k, _MISSING)
        if value is not _MISSING:
            return value
        return await self._join(k, args, kwargs)

    async def _join(self, k: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A caller already cancelled starts and joins nothing.
        await anyio.lowlevel.checkpoint_if_cancelled()
        backend = _backend.current()
        flight_key = (backend, k)
        with self._mutex:
            flight = self._flights.get(flight_key)
            start = flight is None
            if flight is None:
                flight = self._flights[flight_key] = _Flight(flight_key)
                self._computed += 1
        if start:
            backend.spawn(self._compute, flight, args, kwargs)
        # Only this loop's tasks touch the flight from here on.
        parking = backend.park()
        flight.parked.add(parking)
        try:
            await parking.wait()
        except BaseException:
            flight.parked.discard(parking)
            if not flight.parked and not flight.done:
                self._abandon(flight)
            raise
        return flight.result()

    def _abandon(self, flight: _Flight) -> None:
        """The last waiter left: nobody wants the result any more."""
        flight.abandoned = flight.invalidated = True
        self._leave_table(flight)
        if flight.scope is not None:
            flight.scope.cancel()

    def _leave_table(self, flight: _Flight) -> None:
        with self._mutex:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]

    async def _compute(
        self, flight: _Flight, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            if flight.abandoned:  # every waiter left before the task began
                return
            with anyio.CancelScope() as scope:
                flight.scope = scope
                flight.value = await self.__wrapped__(*args, **kwargs)  # type: ignore[attr-defined]
        except anyio.get_cancelled_exc_class():
            # Cancelled by something other than its own scope (the function
            # raised it, or the loop is closing): the waiters learn it from
            # _finish. Letting it escape would crash a trio system task.
            flight.value = _MISSING
        except Exception as exc:
            flight.value = _MISSING
            flight.error = exc
            flight.traceback = exc.__traceback__
        finally:
            self._finish(flight)

    def _finish(self, flight: _Flight) -> None:
        try:
            self._leave_table(flight)
            if flight.error is None:
                if flight.value is _MISSING:
                    name = _describe(self.__wrapped__)  # type: ignore[attr-defined]
                    flight.error = CacheError(f"the shared computation of {name} was cancelled")
                elif not flight.invalidated:
                    try:
                        self._store(flight.key[1], flight.value)
                    except Exception as exc:
                        # A failing sizeof reaches the callers, as it does for sync functions.
                        flight.error = exc
                        flight.traceback = exc.__traceback__
        finally:
            # Whatever happened above, no waiter may be left parked.
            flight.done = True
            for parking in flight.parked:
                parking.wake()


def _mark_coroutine_function(wrapper: _AsyncMemoized) -> None:
    """Let ``iscoroutinefunction`` see a coroutine function (as async-lru does)."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:  # Python 3.12+
        mark(wrapper)
    else:  # pragma: no cover - depends on the Python version
        import asyncio.coroutines

        wrapper._is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)  # type: ignore[attr-defined]


class _BoundMemoized:
    """A memoized function bound to an instance: ``self`` joins every key.

    Calls and ``cache_invalidate`` pass the instance first, so
    ``obj.method.cache_invalidate(42)`` forgets ``obj.method(42)``; the other
    controls are the function's own (one cache for every instance), as in
    ``functools`` and async-lru.
    """

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: _Memoized, instance: object) -> None:
        self.__func__ = func
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the memoized function with the instance first."""
        return self.__func__(self.__self__, *args, **kwargs)

    def cache_invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Forget this instance's result for these arguments; ``True`` if one was kept."""
        return self.__func__.cache_invalidate(self.__self__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func__, name)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.__func__.__doc__

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as the attribute lookup that made it, like a bound method.
        return (getattr, (self.__self__, self.__func__.__name__))  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _BoundMemoized):
            return NotImplemented
        return self.__func__ is other.__func__ and self.__self__ == other.__self__

    def __hash__(self) -> int:
        return hash((self.__func__, self.__self__))

    def __repr__(self) -> str:
        return f"<bound memoized {self.__func__.__wrapped__!r} of {self.__self__!r}>"  # type: ignore[attr-defined]


for _cls in (CacheInfo, MemoizedFunction):
    _cls.__module__ = "memwarden.cache"
memoize.__module__ = "memwarden.cache"
