"""Synchronous cache cores: LRU / W-TinyLFU with count, byte and TTL bounds; weak-value cache.

Every cache is a plain data structure behind one ``threading.RLock``. Every
operation, reads included, runs under it, so a cache may be shared between
threads on any interpreter, with or without the GIL. The lock is re-entrant
because a key's ``__hash__`` and ``__eq__`` run inside the dictionary
operations it guards, and such code may call back into the same cache
(CPython's ``test_functools.test_need_for_rlock``). ``sizeof`` and a
subclass's ``__missing__`` run outside it. ``thread_safe=False`` builds the
same cache with no lock at all: the methods are the same; ``get`` and ``put``
skip ``self._lock`` when it is None, the others enter ``self._guard`` (the
lock, or a null context).

A byte-weighted cache may be charged to a budget (``budget=``): it then holds
one LOW-priority evictable reservation of a :class:`~memwarden.budget.MemoryManager`,
grown in ``budget_chunk`` steps as it fills and shrunk as it empties, and never
holds more bytes than that reservation. Calls into the budget run outside the
cache lock, one at a time per cache (``_charge_lock``): the budget may call back
(``on_evict``, which takes only the cache lock) from any thread.

``get`` and ``put`` are the hot path users compare against ``cachetools``: they
take the lock with ``acquire()``/``release()`` in ``try``/``finally`` (about half
the price of a ``with`` block on CPython 3.11, and the lock is most of the
price of a hit), and their plain-LRU branch (no TTL, weights or W-TinyLFU) is
a few dictionary operations. The other configurations go through
``_lookup_locked`` and ``_store_locked``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import (
    Callable,
    ItemsView,
    Iterator,
    KeysView,
    MutableMapping,
    ValuesView,
)
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._tinylfu import _WTinyLFU
from ._validate import check_float, check_fraction, check_int
from .errors import CacheError

if TYPE_CHECKING:
    from .budget import Allocation, MemoryManager

__all__ = ["CacheStats", "LRUCache", "TTLCache", "WeakValueCache"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MISSING: Any = object()
_UNBOUNDED = sys.maxsize
# Above this many entries an unweighed cache estimates nbytes from a sample, so
# that a stats() call (which reports poll) costs at most a few milliseconds.
_EXACT_WEIGH_LIMIT = 2_000
# What an unlocked cache enters where a locked one takes its lock.
_UNLOCKED = contextlib.nullcontext()
#: Default step by which a cache charged to a budget grows its reservation.
BUDGET_CHUNK = 1 << 20

Policy = Literal["lru", "tinylfu"]
_POLICIES = ("lru", "tinylfu")


def default_sizeof() -> Callable[[Any], int]:
    """``memwarden.sizeof.deep_sizeof`` when available, else ``sys.getsizeof``."""
    try:
        from .sizeof import deep_sizeof
    except ImportError:  # pragma: no cover - only before sizeof.py exists
        return sys.getsizeof
    return deep_sizeof


def _unhashable(key: object) -> TypeError:
    return TypeError(f"cache key must be hashable, got {type(key).__name__} {key!r}")


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of one cache's counters, sizes and high-water marks.

    ``nbytes`` is exact when the cache weighs values on insert (``max_bytes`` or
    ``sizeof`` given); otherwise it is measured when the snapshot is taken
    (estimated from a sample above 2,000 entries, with ``nbytes_exact=False``).
    ``held`` says a pressure hold keeps the cache below its bounds.
    ``reserved`` is the bytes a cache charged to a budget holds there (None
    when it is not charged). Supports ``stats["hits"]`` for seed compatibility.
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    size: int
    nbytes: int
    hit_rate: float
    nbytes_peak: int = 0
    size_peak: int = 0
    reactions: int = 0
    capacity: int | None = None
    max_bytes: int | None = None
    nbytes_exact: bool = True
    held: bool = False
    reserved: int | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, name: str) -> object:
        """Field access by name (``stats["hits"]``); ``KeyError`` for unknown names."""
        if name not in _STATS_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> list[str]:
        """Field names, so ``dict(stats)`` style code works."""
        return list(_STATS_FIELDS)


_STATS_FIELDS = tuple(f.name for f in fields(CacheStats))

# The state a pickle carries; the lock and the bound methods are rebuilt.
_PICKLED = (
    "_bound",
    "_byte_bound",
    "_capacity",
    "_clock",
    "_evictions",
    "_expirations",
    "_hits",
    "_hold_bytes",
    "_hold_entries",
    "_max_bytes",
    "_misses",
    "_nbytes",
    "_nbytes_peak",
    "_plain_get",
    "_plain_put",
    "_policy_name",
    "_size_peak",
    "_sizeof",
    "_ttl",
)


class LRUCache(MutableMapping[K, V]):
    """A thread-safe mapping bounded by entry count, by bytes, or both, with optional TTL.

    ``policy="lru"`` evicts the least recently used entry; ``policy="tinylfu"``
    uses W-TinyLFU admission (a frequency sketch decides whether a new entry is
    worth the entry it would displace), which holds up better against scans.
    Values are weighed with ``sizeof`` (default ``memwarden.sizeof.deep_sizeof``)
    when ``max_bytes`` or ``sizeof`` is given. Entries written more than ``ttl``
    seconds ago are never returned; they are dropped lazily on access and by
    :meth:`sweep_expired`. ``capacity=0`` caches nothing (``put`` keeps nothing),
    as ``functools.lru_cache(maxsize=0)`` does.

    ``budget=`` charges a byte-weighted cache to a :class:`~memwarden.budget.MemoryManager`:
    it holds one LOW-priority evictable reservation, grown by ``budget_chunk``
    bytes at a time as it fills. When the budget refuses to grow it, the cache
    evicts its own coldest entries instead (a value larger than anything the
    budget grants is not stored and counts as an eviction; ``put`` never raises
    for it); when the budget evicts it, the cache drops its entries and reserves
    again on later puts; clearing or shrinking returns the bytes. Copies and
    pickles are not charged.

    Raises ``TypeError``/``ValueError`` naming the argument for bad arguments.
    All methods are thread-safe: one re-entrant lock per cache guards every
    read and change (``sizeof`` and ``__missing__`` run outside it).
    ``thread_safe=False`` builds the cache without a lock, for a cache used by
    one thread only (say, one event loop). Caches pickle and copy.
    """

    __slots__ = (
        "__weakref__",
        "_bound",
        "_budget",
        "_budget_chunk",
        "_byte_bound",
        "_capacity",
        "_charge_lock",
        "_clock",
        "_data",
        "_data_get",
        "_deadlines",
        "_evictions",
        "_expirations",
        "_guard",
        "_hits",
        "_hold_bytes",
        "_hold_entries",
        "_lock",
        "_max_bytes",
        "_misses",
        "_move_to_end",
        "_nbytes",
        "_nbytes_peak",
        "_plain_get",
        "_plain_put",
        "_policy",
        "_policy_name",
        "_reservation",
        "_reserved",
        "_size_peak",
        "_sizeof",
        "_sizes",
        "_ttl",
    )

    def __init__(
        self,
        capacity: int | None = None,
        *,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: Policy = "lru",
        thread_safe: bool = True,
        budget: MemoryManager | None = None,
        budget_chunk: int = BUDGET_CHUNK,
    ) -> None:
        if capacity is not None:
            check_int("capacity", capacity, minimum=0)
        if max_bytes is not None:
            check_int("max_bytes", max_bytes, minimum=1)
        if sizeof is not None:
            _check_callable("sizeof", sizeof)
        if ttl is not None:
            ttl = check_float("ttl", ttl, positive=True)
        _check_callable("clock", clock)
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        _check_bool("thread_safe", thread_safe)
        check_int("budget_chunk", budget_chunk, minimum=1)
        if budget is not None:
            if not callable(getattr(budget, "resize", None)):
                raise TypeError(
                    f"budget must be a MemoryManager, got {type(budget).__name__} {budget!r}"
                )
            if max_bytes is None and sizeof is None:
                raise ValueError(
                    f"budget={budget!r} needs a cache that weighs its values: "
                    "give max_bytes or sizeof"
                )
        self._set_lock(thread_safe)
        self._budget = budget
        self._budget_chunk = budget_chunk
        self._charge_lock = threading.Lock()
        self._reservation: Allocation | None = None
        # Bytes the cache may fill: what the reservation holds (None: not charged).
        self._reserved: int | None = 0 if budget is not None else None
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._policy_name: Policy = policy
        weigh = max_bytes is not None or sizeof is not None
        self._sizeof: Callable[[Any], int] = sizeof if sizeof is not None else default_sizeof()
        self._sizes: dict[K, int] | None = {} if weigh else None
        self._set_data(OrderedDict())
        self._deadlines: OrderedDict[K, float] | None = OrderedDict() if ttl is not None else None
        self._policy: _WTinyLFU | None = None
        if policy == "tinylfu":
            maximum = max_bytes if max_bytes is not None else capacity
            self._policy = _WTinyLFU(maximum, capacity if capacity is not None else 1024)
        # get and put take their few-operation branch unless TTL, W-TinyLFU or
        # weights add work (_lookup_locked, _put_general).
        self._plain_get = ttl is None and policy == "lru"
        self._plain_put = self._plain_get and not weigh
        self._hold_entries: int | None = None
        self._hold_bytes: int | None = None
        self._bound = _UNBOUNDED
        self._byte_bound: int | None = None
        self._update_bounds()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._nbytes = 0
        self._nbytes_peak = 0
        self._size_peak = 0

    def _set_lock(self, thread_safe: bool) -> None:
        lock = threading.RLock() if thread_safe else None
        self._lock = lock
        # For the methods off the hot path: ``with self._guard``.
        self._guard: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else _UNLOCKED
        )

    def _set_data(self, data: OrderedDict[K, V]) -> None:
        self._data = data
        self._data_get = data.get
        self._move_to_end = data.move_to_end

    # -- properties ---------------------------------------------------------

    @property
    def capacity(self) -> int | None:
        """Maximum number of entries, or ``None``."""
        return self._capacity

    @property
    def max_bytes(self) -> int | None:
        """Maximum total weight in bytes, or ``None``."""
        return self._max_bytes

    @property
    def ttl(self) -> float | None:
        """Seconds an entry lives after it is written, or ``None``."""
        return self._ttl

    @property
    def policy(self) -> Policy:
        """``"lru"`` or ``"tinylfu"``."""
        return self._policy_name

    @property
    def weighs(self) -> bool:
        """Whether values are weighed on insert (``max_bytes`` or ``sizeof`` given)."""
        return self._sizes is not None

    @property
    def thread_safe(self) -> bool:
        """Whether the cache has a lock (``thread_safe=False`` builds it without one)."""
        return self._lock is not None

    @property
    def nbytes(self) -> int:
        """Total weight of the values held (measured now when the cache does not weigh)."""
        return self.stats().nbytes

    # -- lookups ------------------------------------------------------------

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...
    def get(self, key: K, /, default: Any = None) -> Any:
        """Return the value for ``key`` (counting a hit and refreshing it) or ``default``.

        An expired entry is dropped (and counted) instead. Raises ``TypeError``
        for an unhashable key. Thread-safe.
        """
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            if not self._plain_get:
                return self._lookup_locked(key, default)
            try:
                value = self._data_get(key, _MISSING)
            except TypeError:
                raise _unhashable(key) from None
            if value is _MISSING:
                self._misses += 1
                return default
            self._move_to_end(key)
            self._hits += 1
            return value
        finally:
            if lock is not None:
                lock.release()

    def _lookup_locked(self, key: K, default: Any) -> Any:
        try:
            value = self._data_get(key, _MISSING)
        except TypeError:
            raise _unhashable(key) from None
        policy = self._policy
        if policy is not None:
            policy.sketch.increment(key)
        if value is _MISSING:
            self._misses += 1
            return default
        deadlines = self._deadlines
        if deadlines is not None and deadlines[key] <= self._clock():
            self._remove_locked(key)
            self._expirations += 1
            self._misses += 1
            return default
        if policy is not None:
            policy.on_hit(key)
        else:
            self._move_to_end(key)
        self._hits += 1
        return value

    def __getitem__(self, key: K) -> V:
        """Like :meth:`get`; when ``key`` is absent or expired, return ``self.__missing__(key)``.

        The base ``__missing__`` raises ``KeyError``; a subclass may compute a
        value instead, as with ``dict`` and ``cachetools`` (it runs outside the lock).
        """
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return self.__missing__(key)
        return value

    def __missing__(self, key: K) -> V:
        """Called by ``cache[key]`` for an absent key; raises ``KeyError``."""
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a live entry; counts nothing and keeps recency unchanged."""
        with self._guard:
            try:
                present = key in self._data
            except TypeError:
                raise _unhashable(key) from None
            if present and self._deadlines is not None:
                return self._deadlines[key] > self._clock()  # type: ignore[index]
            return present

    def peek(self, key: K, default: T | None = None) -> V | T | None:
        """Return the live value for ``key`` without counting it or refreshing it."""
        with self._guard:
            try:
                value = self._data_get(key, _MISSING)
            except TypeError:
                raise _unhashable(key) from None
            if value is _MISSING:
                return default
            if self._deadlines is not None and self._deadlines[key] <= self._clock():
                return default
            return value  # type: ignore[no-any-return]

    # -- updates ------------------------------------------------------------

    def _weigh(self, value: object) -> int:
        size = self._sizeof(value)
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"sizeof must return an int, got {type(size).__name__} {size!r}")
        if size < 0:
            raise ValueError(f"sizeof must return a non-negative int, got {size!r}")
        max_bytes = self._max_bytes
        if max_bytes is not None and size > max_bytes:
            raise CacheError(
                f"value of {size} bytes is larger than max_bytes={max_bytes}; it was not cached"
            )
        return size

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key``, evicting the coldest entries to stay within bounds.

        Replacing a key re-weighs it. Raises ``CacheError`` when the value alone
        exceeds ``max_bytes`` (the cache is left unchanged) and ``TypeError``
        for an unhashable key. Thread-safe.
        """
        if not self._plain_put:
            self._put_general(key, value)
            return
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            data = self._data
            size = len(data)
            try:
                data[key] = value
            except TypeError:
                raise _unhashable(key) from None
            # One hash lookup fewer than a "key in data" test: an insert grows the dict.
            if len(data) == size:
                self._move_to_end(key)
            elif size >= self._bound:
                # The cache was at its bound (never above it), so one entry goes.
                data.popitem(last=False)
                self._evictions += 1
            elif size >= self._size_peak:
                self._size_peak = size + 1
        finally:
            if lock is not None:
                lock.release()

    def _put_general(self, key: K, value: V) -> None:
        try:
            hash(key)
        except TypeError:
            raise _unhashable(key) from None
        # Weighing runs outside the lock: sizeof may be slow.
        size = self._weigh(value) if self._sizes is not None else 0
        if self._budget is not None:
            self._put_charged(key, value, size)
            return
        with self._guard:
            self._store_locked(key, value, size)

    def _needs_locked(self, key: K, size: int) -> int:
        """Bytes the cache would hold after storing ``size`` bytes under ``key``."""
        sizes = self._sizes
        assert sizes is not None
        return self._nbytes - sizes.get(key, 0) + size

    def _put_charged(self, key: K, value: V, size: int) -> None:
        budget = self._budget
        assert budget is not None
        with self._guard:
            if self._needs_locked(key, size) <= self._reserved:  # type: ignore[operator]
                self._store_locked(key, value, size)
                return
        with self._charge_lock:
            with self._guard:
                need = self._needs_locked(key, size)
                if need <= self._reserved:  # type: ignore[operator]
                    self._store_locked(key, value, size)
                    return
                allocation = self._reservation
            least = need if self._max_bytes is None else min(need, self._max_bytes)
            least = max(least, size)
            if least <= budget.capacity:
                target = self._round_up(least)
                if self._max_bytes is not None:
                    target = min(target, self._max_bytes)
                target = max(min(target, budget.capacity), least)
                # A whole chunk if the budget has it, else just what this put needs.
                if not self._grow_reservation(budget, allocation, target) and least < target:
                    self._grow_reservation(budget, self._reservation, least)
            with self._guard:
                if size > self._reserved:  # type: ignore[operator]
                    # Larger than anything the budget grants now: not stored, and an
                    # older value under this key must not outlive the refused one.
                    self._take_locked(key)
                    self._evictions += 1
                    return
                # Within the reservation, at the cost of this cache's coldest entries.
                self._store_locked(key, value, size)

    def _round_up(self, nbytes: int) -> int:
        chunk = self._budget_chunk
        return -(-nbytes // chunk) * chunk

    def _grow_reservation(
        self, budget: MemoryManager, allocation: Allocation | None, target: int
    ) -> bool:
        # Called with _charge_lock held and the cache lock not held.
        from .budget import Priority

        if allocation is None:
            allocation = budget.try_acquire(
                target,
                priority=Priority.LOW,
                evictable=True,
                on_evict=self._budget_evicted,
            )
            if allocation is None:
                return False
            with self._guard:
                self._reservation = allocation
            granted = True
        else:
            granted = budget.resize(allocation, target)
        self._settle_reservation(allocation)
        return granted

    def _settle_reservation(self, allocation: Allocation) -> None:
        """Take the reservation's size as the cache's byte bound (it may have been evicted)."""
        with self._guard:
            if self._reservation is not allocation:
                return
            if allocation.released:
                self._reservation = None
                self._reserved = 0
            else:
                self._reserved = allocation.nbytes
            self._update_bounds()

    def _budget_evicted(self, allocation: Allocation) -> None:
        # on_evict: may run in any thread, outside the budget's lock; never calls the budget.
        with self._guard:
            if self._reservation is not allocation:
                return
            self._reservation = None
            self._reserved = 0
            self._update_bounds()
            self._enforce_locked()

    def _return_excess(self) -> None:
        """Shrink the reservation to the bytes held (rounded up to a chunk); release it if empty."""
        budget = self._budget
        if budget is None:
            return
        with self._charge_lock:
            with self._guard:
                allocation = self._reservation
                if allocation is None:
                    return
                target = self._round_up(self._nbytes)
                if target >= self._reserved:  # type: ignore[operator]
                    return
                # Lowered before the budget hears of it: the cache never holds more
                # than the reservation.
                self._reserved = target
                if not target:
                    self._reservation = None
                self._update_bounds()
            if target:
                budget.resize(allocation, target)
                self._settle_reservation(allocation)
            else:
                budget.release(allocation)

    @property
    def budget(self) -> MemoryManager | None:
        """The budget this cache is charged to, or None."""
        return self._budget

    @property
    def reserved(self) -> int | None:
        """Bytes this cache holds in its budget now (None when it is not charged)."""
        return self._reserved

    def _store_locked(self, key: K, value: V, size: int) -> None:
        data = self._data
        sizes = self._sizes
        policy = self._policy
        deadlines = self._deadlines
        if deadlines is not None:
            now = self._clock()
            self._sweep_locked(now)
        present = key in data
        data[key] = value
        if deadlines is not None:
            deadlines[key] = now + self._ttl  # type: ignore[operator]
            deadlines.move_to_end(key)
        weight = size if self._max_bytes is not None else 1
        if present:
            if sizes is not None:
                self._nbytes += size - sizes[key]
                sizes[key] = size
            if policy is not None:
                policy.sketch.increment(key)
                policy.update(key, weight)
            else:
                self._move_to_end(key)
        else:
            if sizes is not None:
                sizes[key] = size
                self._nbytes += size
            if policy is not None:
                policy.sketch.increment(key)
                if self._capacity is None:
                    policy.sketch.ensure_capacity(len(data))
                policy.add(key, weight)
        self._enforce_locked()
        if self._nbytes > self._nbytes_peak:
            self._nbytes_peak = self._nbytes
        if len(data) > self._size_peak:
            self._size_peak = len(data)

    def _update_bounds(self) -> None:
        # The effective bounds: the configured ones, lowered by a pressure hold.
        entries = [b for b in (self._capacity, self._hold_entries) if b is not None]
        self._bound = min(entries) if entries else _UNBOUNDED
        nbytes = [b for b in (self._max_bytes, self._hold_bytes, self._reserved) if b is not None]
        self._byte_bound = min(nbytes) if nbytes else None

    def _over_bound(self) -> bool:
        if len(self._data) > self._bound:
            return True
        byte_bound = self._byte_bound
        return byte_bound is not None and self._nbytes > byte_bound

    def _enforce_locked(self) -> None:
        policy = self._policy
        data = self._data
        while self._over_bound():
            victim = policy.victim() if policy is not None else next(iter(data))
            self._remove_locked(victim)  # type: ignore[arg-type]
            self._evictions += 1
        if policy is not None:
            policy.settle()

    def _remove_locked(self, key: K) -> V:
        value = self._data.pop(key)
        sizes = self._sizes
        if sizes is not None:
            self._nbytes -= sizes.pop(key)
        if self._deadlines is not None:
            del self._deadlines[key]
        if self._policy is not None:
            self._policy.remove(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        """Same as :meth:`put`."""
        self.put(key, value)

    def _take_locked(self, key: K) -> V:
        """Remove ``key`` and return its value; ``_MISSING`` when absent or expired."""
        try:
            present = key in self._data
        except TypeError:
            raise _unhashable(key) from None
        if not present:
            return _MISSING  # type: ignore[no-any-return]
        deadlines = self._deadlines
        expired = deadlines is not None and deadlines[key] <= self._clock()
        value = self._remove_locked(key)
        if expired:
            self._expirations += 1
            return _MISSING  # type: ignore[no-any-return]
        return value

    def __delitem__(self, key: K) -> None:
        """Remove ``key``; ``KeyError`` when it is absent or expired (as :meth:`pop`)."""
        with self._guard:
            value = self._take_locked(key)
        if self._budget is not None:
            self._return_excess()
        if value is _MISSING:
            raise KeyError(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, /, default: V | T) -> V | T: ...
    def pop(self, key: K, /, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; ``default`` (or ``KeyError``) when absent.

        An expired entry counts as absent; it is dropped and counted as expired.
        """
        with self._guard:
            value = self._take_locked(key)
        if self._budget is not None:
            self._return_excess()
        if value is not _MISSING:
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return the coldest ``(key, value)``; ``KeyError`` when empty."""
        with self._guard:
            self._sweep_locked(None)
            if not self._data:
                raise KeyError(f"{type(self).__name__} is empty")
            key = next(self._coldest_locked())
            item = key, self._remove_locked(key)
        if self._budget is not None:
            self._return_excess()
        return item

    def clear(self) -> None:
        """Remove every entry (counters and peaks are kept)."""
        with self._guard:
            self._data.clear()
            if self._sizes is not None:
                self._sizes.clear()
            if self._deadlines is not None:
                self._deadlines.clear()
            if self._policy is not None:
                self._policy.clear()
            self._nbytes = 0
        if self._budget is not None:
            self._return_excess()

    # -- expiry, shrinking, stats -------------------------------------------

    def _sweep_locked(self, now: float | None) -> int:
        deadlines = self._deadlines
        if not deadlines:
            return 0
        if now is None:
            now = self._clock()
        removed = 0
        # Deadlines are kept in write order and the TTL is one per cache, so the
        # expired entries are exactly a prefix: the sweep costs O(expired).
        while deadlines:
            key, deadline = next(iter(deadlines.items()))
            if deadline > now:
                break
            self._remove_locked(key)
            removed += 1
        self._expirations += removed
        return removed

    def sweep_expired(self) -> int:
        """Drop every expired entry now and return how many; O(expired entries).

        The Warden runs this periodically so entries expire without traffic.
        """
        with self._guard:
            removed = self._sweep_locked(None)
        if removed and self._budget is not None:
            self._return_excess()
        return removed

    def _coldest_locked(self) -> Iterator[K]:
        if self._policy is not None:
            return self._policy.coldest()  # type: ignore[return-value]
        return iter(list(self._data))

    def shrink(self, fraction: float, *, hold: bool = False) -> int:
        """Evict the coldest entries until ``fraction`` of the cache is gone; return bytes freed.

        For a cache that weighs values, ``fraction`` is of its bytes; otherwise
        of its entries (the evicted values are weighed to report the bytes).
        Expired entries go first. With ``hold=True`` the cache may not grow
        past its new size (entries and bytes) until :meth:`release_hold`; the
        CacheManager holds caches while memory pressure is HIGH or CRITICAL.
        Raises ``ValueError``/``TypeError`` for a fraction outside ``[0, 1]``.
        """
        fraction = check_fraction("fraction", fraction)
        _check_bool("hold", hold)
        evicted: list[V] = []
        freed = 0
        with self._guard:
            before = self._nbytes
            self._sweep_locked(None)
            freed = before - self._nbytes
            if fraction > 0 and self._data:
                if self._sizes is not None:
                    target = math.floor(self._nbytes * (1.0 - fraction))
                    if fraction >= 1.0:
                        target = 0
                    for key in self._coldest_locked():
                        if self._nbytes <= target:
                            break
                        before = self._nbytes
                        self._remove_locked(key)
                        freed += before - self._nbytes
                        self._evictions += 1
                else:
                    count = math.ceil(len(self._data) * fraction)
                    for key, _ in zip(self._coldest_locked(), range(count), strict=False):
                        evicted.append(self._remove_locked(key))
                    self._evictions += len(evicted)
            if self._policy is not None:
                self._policy.settle()
            if hold:
                self._hold_entries = len(self._data)
                self._hold_bytes = self._nbytes if self._sizes is not None else None
                self._update_bounds()
        if evicted:
            freed += sum(self._sizeof(v) for v in evicted)
        if self._budget is not None:
            self._return_excess()
        return freed

    def release_hold(self) -> bool:
        """Let the cache grow to its configured bounds again; ``True`` if it was held."""
        with self._guard:
            held = self._hold_entries is not None
            self._hold_entries = self._hold_bytes = None
            self._update_bounds()
            return held

    @property
    def held(self) -> bool:
        """Whether a pressure hold keeps the cache below its configured bounds."""
        return self._hold_entries is not None

    def stats(self) -> CacheStats:
        """A :class:`CacheStats` snapshot; expired entries are swept first."""
        with self._guard:
            self._sweep_locked(None)
            hits, misses = self._hits, self._misses
            size = len(self._data)
            sample: list[V] | None = None
            if self._sizes is None:
                values = list(self._data.values())
                sample = (
                    values
                    if size <= _EXACT_WEIGH_LIMIT
                    else values[:: size // _EXACT_WEIGH_LIMIT + 1]
                )
            nbytes = self._nbytes
            evictions, expirations = self._evictions, self._expirations
            nbytes_peak, size_peak = self._nbytes_peak, self._size_peak
            held = self._hold_entries is not None
            reserved = self._reserved
        exact = True
        if sample is not None:
            # Weighing user values can be slow; it runs outside the lock.
            measured = sum(self._sizeof(v) for v in sample)
            if len(sample) < size:
                exact = False
                measured = round(measured * size / len(sample))
            nbytes = measured
            with self._guard:
                if nbytes > self._nbytes_peak:
                    self._nbytes_peak = nbytes
        total = hits + misses
        return CacheStats(
            hits=hits,
            misses=misses,
            evictions=evictions,
            expirations=expirations,
            size=size,
            nbytes=nbytes,
            hit_rate=hits / total if total else 0.0,
            nbytes_peak=max(nbytes_peak, nbytes),
            size_peak=size_peak,
            capacity=self._capacity,
            max_bytes=self._max_bytes,
            nbytes_exact=exact,
            held=held,
            reserved=reserved,
        )

    def _lookups(self) -> int:
        """Hits plus misses: how many gets were answered (memoize's ``cache_info`` reads it)."""
        with self._guard:
            return self._hits + self._misses

    def reset_stats(self) -> None:
        """Zero the hit, miss, eviction and expiration counters and reset peaks to now."""
        with self._guard:
            self._hits = self._misses = self._evictions = self._expirations = 0
            self._size_peak = len(self._data)
            self._nbytes_peak = self._nbytes

    # -- iteration ----------------------------------------------------------

    def __len__(self) -> int:
        """Number of live entries (expired ones are swept first)."""
        with self._guard:
            self._sweep_locked(None)
            return len(self._data)

    def __iter__(self) -> Iterator[K]:
        """Iterate over a snapshot of the keys, coldest first; safe against concurrent writes."""
        with self._guard:
            self._sweep_locked(None)
            return iter(list(self._coldest_locked()))

    def snapshot(self) -> dict[K, V]:
        """A plain dict copy of the live entries, coldest first; counts nothing."""
        with self._guard:
            self._sweep_locked(None)
            data = self._data
            return {k: data[k] for k in self._coldest_locked()}

    def keys(self) -> KeysView[K]:
        """A view of a snapshot of the keys (no hits are counted)."""
        return self.snapshot().keys()

    def items(self) -> ItemsView[K, V]:
        """A view of a snapshot of the entries (no hits are counted)."""
        return self.snapshot().items()

    def values(self) -> ValuesView[V]:
        """A view of a snapshot of the values (no hits are counted)."""
        return self.snapshot().values()

    # -- pickling -----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """A snapshot for pickle and copy: entries in order, bounds, counters, remaining TTLs.

        The lock is not pickled (the copy gets its own); a deadline is stored
        as the time it has left, since clock readings do not carry over to
        another process. ``sizeof`` and ``clock`` must be picklable (the
        defaults are).
        """
        with self._guard:
            state = {name: getattr(self, name) for name in _PICKLED}
            state["thread_safe"] = self._lock is not None
            state["_data"] = OrderedDict(self._data)
            state["_sizes"] = dict(self._sizes) if self._sizes is not None else None
            state["_policy"] = self._policy.copy() if self._policy is not None else None
            deadlines = self._deadlines
            if deadlines is not None:
                now = self._clock()
                state["_deadlines"] = [(k, d - now) for k, d in deadlines.items()]
            else:
                state["_deadlines"] = None
        extra = getattr(self, "__dict__", None)  # a subclass's own attributes
        if extra:
            state["__dict__"] = dict(extra)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`__getstate__` snapshot, with a fresh lock."""
        state = dict(state)
        self._set_lock(state.pop("thread_safe"))
        self._set_data(state.pop("_data"))
        remaining = state.pop("_deadlines")
        extra = state.pop("__dict__", None)
        if extra:
            vars(self).update(extra)
        for name, value in state.items():
            setattr(self, name, value)
        if remaining is None:
            self._deadlines = None
        else:
            now = self._clock()
            self._deadlines = OrderedDict((k, now + left) for k, left in remaining)
        # A copy is not charged to the original's budget (a reservation has one holder).
        self._budget = None
        self._budget_chunk = BUDGET_CHUNK
        self._charge_lock = threading.Lock()
        self._reservation = None
        self._reserved = None
        self._update_bounds()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={len(self)}, capacity={self._capacity}, "
            f"max_bytes={self._max_bytes}, ttl={self._ttl}, policy={self._policy_name!r}, "
            f"thread_safe={self.thread_safe})"
        )


class TTLCache(LRUCache[K, V]):
    """An :class:`LRUCache` whose entries expire ``ttl`` seconds after they were written.

    Expired entries are dropped on access and by :meth:`sweep_expired` (run
    periodically by the Warden). Raises ``ValueError`` for ``ttl <= 0``, NaN or
    infinity. Thread-safe like :class:`LRUCache` unless ``thread_safe=False``.
    """

    __slots__ = ()

    def __init__(
        self,
        ttl: float,
        capacity: int | None = None,
        *,
        max_bytes: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: Policy = "lru",
        thread_safe: bool = True,
        budget: MemoryManager | None = None,
        budget_chunk: int = BUDGET_CHUNK,
    ) -> None:
        if ttl is None:
            raise TypeError("ttl must be a number of seconds, got None")
        super().__init__(
            capacity,
            max_bytes=max_bytes,
            sizeof=sizeof,
            ttl=ttl,
            clock=clock,
            policy=policy,
            thread_safe=thread_safe,
            budget=budget,
            budget_chunk=budget_chunk,
        )


class _KeyedRef(weakref.ref):  # type: ignore[type-arg]
    __slots__ = ("key",)
    key: Any

    def __new__(cls, obj: Any, callback: Callable[[Any], Any], key: Any) -> _KeyedRef:
        self = super().__new__(cls, obj, callback)
        self.key = key
        return self

    def __init__(self, obj: Any, callback: Callable[[Any], Any], key: Any) -> None:
        super().__init__(obj, callback)  # type: ignore[call-arg]


class WeakValueCache(Generic[K, V]):
    """A cache that holds its values weakly: an entry vanishes when its value is collected.

    Seed 002's ``WeakReferenceCache`` (``put``, ``get``, ``len``). It owns no
    memory of its own, so pressure reactions leave it alone. Raises
    ``TypeError`` for an unhashable key or a value that cannot be weakly
    referenced (``int``, ``str``, ``tuple``...). Thread-safe: one re-entrant
    lock, as in :class:`LRUCache`.
    """

    __slots__ = (
        "__weakref__",
        "_collected",
        "_data",
        "_hits",
        "_lock",
        "_misses",
        "_pending",
        "_size_peak",
    )

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[K, _KeyedRef] = {}
        # Weakref callbacks can run inside any allocation, even while this
        # thread holds the lock, so they only queue the dead ref; every
        # operation drains the queue under the lock.
        self._pending: deque[_KeyedRef] = deque()
        self._hits = 0
        self._misses = 0
        self._collected = 0
        self._size_peak = 0

    def _drain_locked(self) -> None:
        pending = self._pending
        data = self._data
        while pending:
            ref = pending.popleft()
            if data.get(ref.key) is ref:
                del data[ref.key]
                self._collected += 1

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` weakly under ``key``; ``TypeError`` if it cannot be weakly referenced."""
        try:
            hash(key)
        except TypeError:
            raise _unhashable(key) from None
        try:
            ref = _KeyedRef(value, self._pending.append, key)
        except TypeError:
            raise TypeError(
                f"WeakValueCache values must support weak references, got "
                f"{type(value).__name__} {value!r}"
            ) from None
        with self._lock:
            self._drain_locked()
            self._data[key] = ref
            if len(self._data) > self._size_peak:
                self._size_peak = len(self._data)

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...
    def get(self, key: K, /, default: Any = None) -> Any:
        """Return the value for ``key`` if it is still alive, else ``default``."""
        with self._lock:
            self._drain_locked()
            try:
                ref = self._data.get(key)
            except TypeError:
                raise _unhashable(key) from None
            value = ref() if ref is not None else None
            if value is None:
                self._misses += 1
                return default
            self._hits += 1
            return value

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` and return its live value, or ``default``."""
        with self._lock:
            self._drain_locked()
            try:
                ref = self._data.pop(key, None)
            except TypeError:
                raise _unhashable(key) from None
        value = ref() if ref is not None else None
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` maps to a live value."""
        with self._lock:
            self._drain_locked()
            try:
                ref = self._data.get(key)  # type: ignore[arg-type]
            except TypeError:
                raise _unhashable(key) from None
            return ref is not None and ref() is not None

    def __len__(self) -> int:
        """Number of entries whose values are still alive."""
        with self._lock:
            self._drain_locked()
            return len(self._data)

    def __iter__(self) -> Iterator[K]:
        """Iterate over a snapshot of the keys."""
        with self._lock:
            self._drain_locked()
            return iter(list(self._data))

    def clear(self) -> None:
        """Forget every entry (the values themselves are untouched)."""
        with self._lock:
            self._data.clear()
            self._pending.clear()

    def stats(self) -> CacheStats:
        """Hits, misses and size; ``expirations`` counts values that were collected."""
        with self._lock:
            self._drain_locked()
            total = self._hits + self._misses
            size = len(self._data)
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=0,
                expirations=self._collected,
                size=size,
                nbytes=0,
                hit_rate=self._hits / total if total else 0.0,
                size_peak=self._size_peak,
            )

    def __repr__(self) -> str:
        return f"WeakValueCache(size={len(self)})"


for _cls in (CacheStats, LRUCache, TTLCache, WeakValueCache):
    _cls.__module__ = "memwarden.cache"
