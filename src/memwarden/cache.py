"""Caches that weigh bytes and shrink under memory pressure.

- :class:`LRUCache`: a thread-safe ``MutableMapping`` bounded by entries,
  bytes or both, with an optional TTL and ``policy="lru"`` or ``"tinylfu"``.
- :class:`TTLCache`: an :class:`LRUCache` whose entries expire.
- :class:`WeakValueCache`: values held weakly (seed 002's ``WeakReferenceCache``).
- :func:`memoize`: result caching for sync and async functions, single-flight for async.
- :class:`CacheManager`: named caches (seed 004's API) that react to pressure
  events: at HIGH every cache sheds ``shrink_fraction`` of itself, at CRITICAL
  every cache but the weak ones is cleared.

Caches are synchronous: a lookup never touches the event loop. Only
``memoize`` on async functions and :meth:`CacheManager.react` are async.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import anyio

from ._cache_core import CacheStats, LRUCache, TTLCache, WeakValueCache
from ._memoize import CacheInfo, MemoizedFunction, memoize
from ._validate import check_float, check_fraction, check_name
from .errors import CacheError
from .pressure import PressureEvent, PressureLevel

if TYPE_CHECKING:
    from .budget import MemoryManager

__all__ = [
    "CacheInfo",
    "CacheManager",
    "CacheStats",
    "LRUCache",
    "MemoizedFunction",
    "TTLCache",
    "WeakValueCache",
    "memoize",
]

logger = logging.getLogger("memwarden.cache")

P = ParamSpec("P")
R = TypeVar("R")

AnyCache = LRUCache[Any, Any] | WeakValueCache[Any, Any]
Kind = Literal["lru", "timed", "weak"]
_KINDS = ("lru", "timed")


def _kind_of(cache: AnyCache) -> Kind:
    if isinstance(cache, WeakValueCache):
        return "weak"
    return "timed" if cache.ttl is not None else "lru"


class CacheManager:
    """A registry of named caches that shrink under memory pressure (seed 004's CacheManager).

    Every cache lives in its own namespace: the same key in two caches never
    collides. ``react(event)`` is the pressure hook: at HIGH each cache (weak
    caches excepted) evicts ``shrink_fraction`` of its contents, coldest first;
    at CRITICAL each is cleared. With ``hold=True`` (the default) they stay at
    that size until pressure falls below HIGH, instead of refilling at once.
    Each reaction is counted per cache (``reactions`` in its stats) and logged
    once per level change. With ``budget=`` every byte-weighted cache it
    creates (``max_bytes`` or ``sizeof`` given) is charged to that budget (see
    :class:`LRUCache`); caches that count entries only are not.

    Raises ``CacheError`` naming an unknown cache or kind, or a duplicate name;
    ``TypeError``/``ValueError`` for bad arguments. Thread-safe; ``react`` runs
    on the event loop and yields between caches.
    """

    def __init__(
        self,
        *,
        shrink_fraction: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
        hold: bool = True,
        budget: MemoryManager | None = None,
    ) -> None:
        self._shrink_fraction = check_fraction("shrink_fraction", shrink_fraction)
        if budget is not None and not callable(getattr(budget, "resize", None)):
            raise TypeError(
                f"budget must be a MemoryManager, got {type(budget).__name__} {budget!r}"
            )
        self._budget = budget
        if not isinstance(hold, bool):
            raise TypeError(f"hold must be a bool, got {type(hold).__name__} {hold!r}")
        self._hold = hold
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        self._clock = clock
        self._log = log if log is not None else logger
        self._lock = threading.Lock()
        self._caches: dict[str, AnyCache] = {}
        self._reactions: dict[str, int] = {}
        self._last_level: PressureLevel | None = None
        self._freed_total = 0

    # -- registry -----------------------------------------------------------

    @property
    def budget(self) -> MemoryManager | None:
        """The budget byte-weighted caches created here are charged to, or None."""
        return self._budget

    def _charge(self, kw: dict[str, Any]) -> None:
        if self._budget is not None and (
            kw.get("max_bytes") is not None or kw.get("sizeof") is not None
        ):
            kw.setdefault("budget", self._budget)

    @property
    def shrink_fraction(self) -> float:
        """Share of each cache evicted at HIGH pressure."""
        return self._shrink_fraction

    def register(self, name: str, cache: AnyCache) -> AnyCache:
        """Add a cache made elsewhere under ``name`` and return it.

        Raises ``CacheError`` if the name is taken, ``TypeError`` for a non-cache.
        """
        check_name("name", name)
        if not isinstance(cache, LRUCache | WeakValueCache):
            raise TypeError(
                f"cache must be an LRUCache, TTLCache or WeakValueCache, got "
                f"{type(cache).__name__} {cache!r}"
            )
        with self._lock:
            if name in self._caches:
                raise CacheError(f"a cache named {name!r} already exists")
            self._caches[name] = cache
            self._reactions[name] = 0
        return cache

    def unregister(self, name: str) -> AnyCache:
        """Remove ``name`` from the registry and return its cache (its entries stay)."""
        with self._lock:
            cache = self._lookup_locked(name)
            del self._caches[name]
            del self._reactions[name]
            return cache

    def create_lru_cache(
        self, name: str, capacity: int | None = None, **kw: Any
    ) -> LRUCache[Any, Any]:
        """Create and register an :class:`LRUCache`; ``kw`` as for its constructor.

        A byte-weighted one is charged to the manager's ``budget``, if any.
        """
        check_name("name", name)
        kw.setdefault("clock", self._clock)
        self._charge(kw)
        cache: LRUCache[Any, Any] = LRUCache(capacity, **kw)
        self.register(name, cache)
        return cache

    def create_timed_cache(self, name: str, ttl_seconds: float, **kw: Any) -> TTLCache[Any, Any]:
        """Create and register a :class:`TTLCache` whose entries live ``ttl_seconds``.

        ``kw`` as for :class:`TTLCache` (``capacity``, ``max_bytes``, ``policy``...).
        """
        check_name("name", name)
        check_float("ttl_seconds", ttl_seconds, positive=True)
        kw.setdefault("clock", self._clock)
        self._charge(kw)
        cache: TTLCache[Any, Any] = TTLCache(ttl_seconds, **kw)
        self.register(name, cache)
        return cache

    def create_weak_cache(self, name: str) -> WeakValueCache[Any, Any]:
        """Create and register a :class:`WeakValueCache`."""
        check_name("name", name)
        cache: WeakValueCache[Any, Any] = WeakValueCache()
        self.register(name, cache)
        return cache

    def _lookup_locked(self, name: str) -> AnyCache:
        try:
            return self._caches[name]
        except (KeyError, TypeError):
            known = ", ".join(repr(n) for n in sorted(self._caches)) or "none"
            raise CacheError(f"no cache named {name!r} (known: {known})") from None

    def get_cache(self, name: str) -> AnyCache:
        """The cache registered as ``name``; ``CacheError`` naming it when unknown."""
        with self._lock:
            return self._lookup_locked(name)

    def _typed_lookup(self, kind: str, name: str) -> AnyCache:
        if kind not in _KINDS and kind != "weak":
            raise CacheError(f"unknown cache kind {kind!r}; expected 'lru' or 'timed'")
        cache = self.get_cache(name)
        actual = _kind_of(cache)
        if actual != kind:
            raise CacheError(f"cache {name!r} is of kind {actual!r}, not {kind!r}")
        return cache

    def put_in_cache(self, kind: str, name: str, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` in cache ``name`` of ``kind`` ("lru" or "timed").

        Raises ``CacheError`` for an unknown kind or name, or a kind that does
        not match the cache.
        """
        self._typed_lookup(kind, name).put(key, value)

    def get_from_cache(self, kind: str, name: str, key: Hashable, default: Any = None) -> Any:
        """The value under ``key`` in cache ``name`` of ``kind``, or ``default``.

        Raises ``CacheError`` for an unknown kind or name.
        """
        return self._typed_lookup(kind, name).get(key, default)

    def get_stats(self, name: str) -> CacheStats:
        """:class:`CacheStats` of cache ``name`` (``stats["hits"]`` works too)."""
        with self._lock:
            cache = self._lookup_locked(name)
            reactions = self._reactions[name]
        return dataclasses.replace(cache.stats(), reactions=reactions)

    def clear_cache(self, name: str) -> int:
        """Empty cache ``name``; return how many entries it held."""
        cache = self.get_cache(name)
        count = len(cache)
        cache.clear()
        return count

    def clear_all(self) -> int:
        """Empty every cache; return the number of entries removed."""
        return sum(self.clear_cache(name) for name in self.names())

    def names(self) -> list[str]:
        """Registered cache names, sorted."""
        with self._lock:
            return sorted(self._caches)

    def __iter__(self) -> Iterator[str]:
        """Iterate over a snapshot of the registered names."""
        return iter(self.names())

    def __len__(self) -> int:
        """Number of registered caches."""
        return len(self._caches)

    def __contains__(self, name: object) -> bool:
        """Whether a cache is registered under ``name``."""
        return name in self._caches

    # -- memoize ------------------------------------------------------------

    def memoize(
        self,
        *,
        ttl_seconds: float | None = None,
        capacity: int | None = None,
        namespace: str | None = None,
        **kw: Any,
    ) -> Callable[[Callable[P, R]], MemoizedFunction[P, R]]:
        """Decorator: memoize into a cache registered as ``namespace``.

        The default namespace is ``memoize:<module>.<qualname>`` (suffixed
        ``#2``, ``#3``... if taken). ``ttl_seconds`` makes results expire;
        ``kw`` goes to :func:`memoize` (``max_bytes``, ``key``, ``typed``...).
        Raises ``CacheError`` when an explicit ``namespace`` is taken.
        """
        if ttl_seconds is not None:
            check_float("ttl_seconds", ttl_seconds, positive=True)
        if namespace is not None:
            check_name("namespace", namespace)
        kw.setdefault("clock", self._clock)
        # Built now, so that a bad argument is refused here, before any decoration.
        memoizer = memoize(capacity=capacity, ttl=ttl_seconds, **kw)

        def decorate(func: Callable[P, R]) -> MemoizedFunction[P, R]:
            wrapped = memoizer(func)
            if namespace is not None:
                self.register(namespace, wrapped.cache)
                return wrapped
            base = (
                f"memoize:{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
            )
            name, n = base, 1
            while True:
                try:
                    self.register(name, wrapped.cache)
                    return wrapped
                except CacheError:
                    n += 1
                    name = f"{base}#{n}"

        return decorate

    # -- pressure and periodic work -----------------------------------------

    def sweep_expired(self) -> int:
        """Drop expired entries from every cache now; return how many. Cheap: O(expired).

        The Warden runs this periodically under its supervisor.
        """
        removed = 0
        with self._lock:
            caches = list(self._caches.values())
        for cache in caches:
            if isinstance(cache, LRUCache) and cache.ttl is not None:
                removed += cache.sweep_expired()
        return removed

    async def react(self, event: PressureEvent) -> None:
        """Respond to a pressure event: HIGH shrinks every cache, CRITICAL clears them.

        With ``hold`` (the default) a shrunk cache may not grow back past its
        new size until an event below HIGH arrives, which lifts every hold.
        Weak caches are left alone (they hold no memory of their own). Each
        cache's reaction is counted in its stats; a line is logged when the
        level changes. Yields to the event loop between caches; if cancelled
        midway, caches already handled stay shrunk.
        """
        if not isinstance(event, PressureEvent):
            raise TypeError(f"event must be a PressureEvent, got {type(event).__name__} {event!r}")
        level = event.level
        changed = level != self._last_level
        if level < PressureLevel.HIGH:
            released = 0
            for name in self.names():
                with self._lock:
                    cache = self._caches.get(name)
                if isinstance(cache, LRUCache) and cache.release_hold():
                    released += 1
            self._last_level = level
            if changed:
                # Nothing to report when no cache was held: DEBUG keeps a busy log quiet.
                self._log.log(
                    logging.INFO if released else logging.DEBUG,
                    "caches: memory pressure %s, %s may grow again",
                    level.label,
                    _count(released, "cache", "caches"),
                )
            return
        hold = self._hold
        freed = 0
        entries = 0
        touched = 0
        for name in self.names():
            with self._lock:
                cache = self._caches.get(name)
            if cache is None or isinstance(cache, WeakValueCache):
                continue
            if level >= PressureLevel.CRITICAL:
                entries += len(cache)
                if not cache.weighs:
                    # Weighing every value now would cost CPU exactly when the
                    # process can least afford it: drop them unweighed.
                    cache.clear()
                freed += cache.shrink(1.0, hold=hold)
            else:
                size = len(cache)
                freed += cache.shrink(self._shrink_fraction, hold=hold)
                entries += size - len(cache)
            with self._lock:
                if name in self._reactions:
                    self._reactions[name] += 1
            touched += 1
            await anyio.lowlevel.checkpoint()
        self._freed_total += freed
        # Recorded only once the reaction completed: after a cancelled one the
        # next event at this level still counts as a change and is logged.
        self._last_level = level
        if changed:
            action = (
                "cleared"
                if level >= PressureLevel.CRITICAL
                else f"shrank by {self._shrink_fraction:.0%}"
            )
            if hold:
                action += " and held"
            self._log.log(
                logging.WARNING if entries or freed else logging.DEBUG,
                "caches: memory pressure %s, %s %s: %s, %s freed",
                level.label,
                action,
                _count(touched, "cache", "caches"),
                _count(entries, "entry", "entries"),
                _count(freed, "byte", "bytes"),
            )

    @property
    def bytes_freed(self) -> int:
        """Total bytes freed by pressure reactions so far."""
        return self._freed_total

    def stats(self) -> dict[str, CacheStats]:
        """Every cache's :class:`CacheStats` by name."""
        return {name: self.get_stats(name) for name in self.names()}

    def report(self) -> dict[str, object]:
        """A JSON-able summary for the Warden's report: totals plus each cache's stats."""
        per_cache = self.stats()
        return {
            "caches": {
                name: {"kind": _kind_of(self.get_cache(name)), **s.to_dict()}
                for name, s in per_cache.items()
            },
            "total_nbytes": sum(s.nbytes for s in per_cache.values()),
            "total_entries": sum(s.size for s in per_cache.values()),
            "shrink_fraction": self._shrink_fraction,
            "bytes_freed_by_pressure": self._freed_total,
            "last_pressure_level": self._last_level.label if self._last_level is not None else None,
        }

    def __repr__(self) -> str:
        return f"CacheManager(caches={self.names()!r}, shrink_fraction={self._shrink_fraction})"


def _count(count: int, one: str, many: str) -> str:
    """``"1 entry"``, ``"0 entries"``: a count in words for log lines."""
    return f"{count} {one if count == 1 else many}"
