"""Synchronous cache cores: LRU / W-TinyLFU with count, byte and TTL bounds; weak-value cache.

Every cache is a plain data structure behind one ``threading.Lock``: a get is a
dictionary lookup plus a recency update, with no event-loop round trip. The
plain LRU path is kept free of policy and TTL branches (they live in
``_get_special`` / ``_put_special``) because the lookup is the hot path users
compare against ``cachetools`` and ``functools.lru_cache``.

Lock-free reads
---------------
Every structural change (insert, replace, evict, pop, clear, shrink, expiry,
byte accounting) happens under the cache's lock. On an LRU without
W-TinyLFU (count- or byte-bounded, with or without TTL) ``get`` does not take
it: a get is

    R1  value = data.get(key)       one C call
    R2  data.move_to_end(key)       one C call, hits only
    R3  next(hit or miss counter)   one C call

Under the GIL each of these runs to completion without another thread
running in between, provided that no Python code runs inside it. Python code
could run there from a key's ``__hash__``/``__eq__`` written in Python, or a
value's ``__del__``. So while gets are lock-free the cache only stores keys
of the types in ``_ATOMIC_KEY_TYPES`` (or flat tuples of them), whose hashing
and comparison are C; putting a key of any other type makes every later get
take the lock, for good (``_locked_reads``, set before the key is stored).
Interleavings of a lock-free get with a locked writer W:

* W inserts, replaces or evicts between R1 and R2. If the key is gone, R2
  raises ``KeyError``, which the get swallows: it returns the value it read
  and linearizes before the eviction. If the key was evicted and put again,
  R2 refreshes the new entry, which W had just made the most recent anyway;
  the get still linearizes before the eviction. A replace between R1 and R2
  returns the old value (linearized before the replace) and R2 is the
  refresh W's own ``move_to_end`` does.
* W clears. ``OrderedDict.clear`` empties the dict, then drops the values
  (their ``__del__`` may run Python code, so readers may run here), then
  the order list. A reader in that window misses at R1, or gets ``KeyError``
  at R2 (the order list no longer matches the dict).
* W iterates (shrink, popitem, iteration, stats). With C-hashed keys the
  copy ``list(data)`` runs no Python code, so no R2 can reorder the dict
  while it is copied. Right after the switch to locked gets, a reader
  that checked ``_locked_reads`` before the switch can still do one R2; the
  copies retry on the ``RuntimeError`` that would raise, which ends once
  each thread has done its one stale R2. Gets only read the TTL deadline
  table, so its sweeps are never disturbed.
* TTL (``_get_special``): a get first reads the deadline (R0), then the value
  (R1), then the clock. Every put writes the value before the deadline and
  every removal drops the value before the deadline, so a value read after
  a deadline d is at least as new as d, and (with a clock that never goes
  back) its own deadline is >= d. If d is later than the clock, the value
  was live at R1 and is returned; if not, the get redoes the lookup under
  the lock, which drops an expired entry and counts the expiry. No deadline
  at R0 or no value at R1 is a miss: before the put or after the removal.
* W's own multi-step logic (``len`` before and after an insert, the size
  peak, the eviction count, ``sizes``/``nbytes``) is exact: a reader never
  adds or removes a key and touches only the order and its counters.

So the size bound (len <= capacity) and the byte accounting are W's alone;
a reader can only move an entry that exists to the most-recent end. A get
whose own key hashes in Python (the cache never stored it) runs that code
inside its own R1/R2; the writers' C calls it may interleave with compare
stored keys only, which are C-hashed, so they stay whole. The hit
and miss counters of the lock-free path are ``itertools.count`` objects:
``next`` is one C call, so no increment is lost. They are read under the
lock by consuming one value (see ``_read_counter``). The locked paths keep
plain ``int`` counters, and stats add the two.

Without the GIL (the free-threaded build) none of this holds, so every
shared cache takes the locked paths there (``_gil_enabled``).
"""

from __future__ import annotations

import itertools
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
from typing import Any, Generic, Literal, Self, TypeVar, overload

from ._tinylfu import _WTinyLFU
from ._validate import check_float, check_fraction, check_int
from .errors import CacheError

__all__ = ["CacheStats", "LRUCache", "TTLCache", "WeakValueCache"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MISSING: Any = object()
_UNBOUNDED = sys.maxsize
# Above this many entries an unweighed cache estimates nbytes from a sample, so
# that a stats() call (which reports poll) costs at most a few milliseconds.
_EXACT_WEIGH_LIMIT = 2_000

Policy = Literal["lru", "tinylfu"]
_POLICIES = ("lru", "tinylfu")

# Key types whose hash and equality are implemented in C, so that a dict
# operation on a cache holding only such keys runs no Python code and is
# atomic under the GIL. Exact types only: a subclass may define __eq__.
_ATOMIC_KEY_TYPES: frozenset[type] = frozenset({int, str, bytes, float, bool, type(None)})


def _atomic_key(key: object) -> bool:
    """Whether hashing and comparing ``key`` can run no Python code."""
    kind = type(key)
    if kind in _ATOMIC_KEY_TYPES:
        return True
    return kind is tuple and all(type(k) in _ATOMIC_KEY_TYPES for k in key)  # type: ignore[attr-defined]


def _gil_enabled() -> bool:
    """False on a free-threaded build running without the GIL.

    A free-threaded interpreter may turn the GIL on later (when it imports an
    extension that needs it), never off, so a cache built while it was on
    stays correct.
    """
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _read_counter(counter: itertools.count[int], reads: int) -> int:
    """The number of ``next`` calls made on ``counter`` apart from ``reads`` earlier reads.

    Reading consumes one value, so the caller adds one to ``reads`` after it.
    """
    return next(counter) - reads


def default_sizeof() -> Callable[[Any], int]:
    """``memwarden.sizeof.deep_sizeof`` when available, else ``sys.getsizeof``."""
    try:
        from .sizeof import deep_sizeof
    except ImportError:  # pragma: no cover - only before sizeof.py exists
        return sys.getsizeof
    return deep_sizeof


def _unhashable(key: object) -> TypeError:
    return TypeError(f"cache key must be hashable, got {type(key).__name__} {key!r}")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of one cache's counters, sizes and high-water marks.

    ``nbytes`` is exact when the cache weighs values on insert (``max_bytes`` or
    ``sizeof`` given); otherwise it is measured when the snapshot is taken
    (estimated from a sample above 2,000 entries, with ``nbytes_exact=False``).
    ``held`` says a pressure hold keeps the cache below its bounds.
    Supports ``stats["hits"]`` for seed compatibility.
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


class LRUCache(MutableMapping[K, V]):
    """A thread-safe mapping bounded by entry count, by bytes, or both, with optional TTL.

    ``policy="lru"`` evicts the least recently used entry; ``policy="tinylfu"``
    uses W-TinyLFU admission (a frequency sketch decides whether a new entry is
    worth the entry it would displace), which holds up better against scans.
    Values are weighed with ``sizeof`` (default ``memwarden.sizeof.deep_sizeof``)
    when ``max_bytes`` or ``sizeof`` is given. Entries written more than ``ttl``
    seconds ago are never returned; they are dropped lazily on access and by
    :meth:`sweep_expired`.

    Raises ``TypeError``/``ValueError`` for bad arguments. All methods are
    thread-safe: one lock per cache guards every change; ``sizeof`` runs
    outside it. A get on an LRU without W-TinyLFU holding keys of builtin
    scalar types reads without the lock under the GIL; an expired entry is
    dropped under it (see the module docstring). ``thread_safe=False`` drops the lock from the plain
    LRU put path too, for a cache used by one thread only (say, one event loop).
    """

    __slots__ = (
        "__weakref__",
        "_bound",
        "_byte_bound",
        "_capacity",
        "_clock",
        "_data",
        "_data_get",
        "_deadlines",
        "_evictions",
        "_expirations",
        "_free_hit_reads",
        "_free_hits",
        "_free_miss_reads",
        "_free_misses",
        "_hits",
        "_hold_bytes",
        "_hold_entries",
        "_lock",
        "_locked_reads",
        "_max_bytes",
        "_misses",
        "_move_to_end",
        "_nbytes",
        "_nbytes_peak",
        "_policy",
        "_policy_name",
        "_size_peak",
        "_sizeof",
        "_sizes",
        "_special",
        "_ttl",
        "_ttl_free_reads",
    )

    def __new__(cls, *args: Any, thread_safe: bool = True, **kwargs: Any) -> Self:
        """Pick the lock-free variant of the hot paths when ``thread_safe=False``."""
        if not isinstance(thread_safe, bool):
            raise TypeError(
                f"thread_safe must be a bool, got {type(thread_safe).__name__} {thread_safe!r}"
            )
        if not thread_safe and cls is LRUCache:
            cls = _SingleThreadLRUCache  # type: ignore[assignment]
        return super().__new__(cls)

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
    ) -> None:
        if capacity is not None:
            check_int("capacity", capacity, minimum=1)
        if max_bytes is not None:
            check_int("max_bytes", max_bytes, minimum=1)
        if sizeof is not None and not callable(sizeof):
            raise TypeError(f"sizeof must be callable, got {type(sizeof).__name__} {sizeof!r}")
        if ttl is not None:
            ttl = check_float("ttl", ttl, positive=True)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        self._lock = threading.Lock()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._policy_name: Policy = policy
        weigh = max_bytes is not None or sizeof is not None
        self._sizeof: Callable[[Any], int] = sizeof if sizeof is not None else default_sizeof()
        self._sizes: dict[K, int] | None = {} if weigh else None
        self._data: OrderedDict[K, V] = OrderedDict()
        self._data_get = self._data.get
        self._move_to_end = self._data.move_to_end
        self._deadlines: OrderedDict[K, float] | None = OrderedDict() if ttl is not None else None
        self._policy: _WTinyLFU | None = None
        if policy == "tinylfu":
            maximum = max_bytes if max_bytes is not None else capacity
            self._policy = _WTinyLFU(maximum, capacity if capacity is not None else 1024)
        # Gets of an LRU read without the lock (module docstring), except
        # without the GIL, where that is not safe for a shared cache. A TTL
        # cache's get takes the general path, which reads without the lock
        # too when _ttl_free_reads says so.
        shared_reads = self._policy is None and (
            _gil_enabled() or isinstance(self, _SingleThreadLRUCache)
        )
        self._locked_reads = not shared_reads or self._deadlines is not None
        self._ttl_free_reads = shared_reads and self._deadlines is not None
        # Anything but a count-bounded (or unbounded) plain LRU takes the slower,
        # general put path; the plain one stays a few dictionary operations long.
        self._special = weigh or self._locked_reads
        self._hold_entries: int | None = None
        self._hold_bytes: int | None = None
        self._bound = _UNBOUNDED
        self._byte_bound: int | None = None
        self._update_bounds()
        self._hits = 0
        self._misses = 0
        # Counted by lock-free gets; read under the lock (_read_counter).
        self._free_hits = itertools.count()
        self._free_misses = itertools.count()
        self._free_hit_reads = 0
        self._free_miss_reads = 0
        self._evictions = 0
        self._expirations = 0
        self._nbytes = 0
        self._nbytes_peak = 0
        self._size_peak = 0

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

        Raises ``TypeError`` for an unhashable key. On an LRU (not W-TinyLFU)
        with the GIL this takes no lock unless the entry has expired; it is
        still thread-safe (module docstring).
        """
        if self._locked_reads:
            return self._get_special(key, default)
        try:
            value = self._data_get(key, _MISSING)
        except TypeError:
            raise _unhashable(key) from None
        if value is _MISSING:
            next(self._free_misses)
            return default
        # contextlib.suppress would cost more than the rest of the hit.
        try:  # noqa: SIM105
            self._move_to_end(key)
        except KeyError:
            pass  # evicted since the lookup: this hit happened before the eviction
        next(self._free_hits)
        return value

    def _get_special(self, key: K, default: Any) -> Any:
        # Both branches are inline: a method call would cost a Python frame.
        if self._ttl_free_reads:
            # A TTL get without the lock. The deadline is read before the
            # value and written after it (_put_special_locked), so the value
            # read is at least as new as the deadline: if that deadline is in
            # the future, so is the value's.
            try:
                deadline = self._deadlines.get(key)  # type: ignore[union-attr]
            except TypeError:
                raise _unhashable(key) from None
            if deadline is None:
                next(self._free_misses)
                return default
            value = self._data_get(key, _MISSING)
            if value is _MISSING:
                next(self._free_misses)
                return default
            if deadline > self._clock():
                try:  # noqa: SIM105 - as in get
                    self._move_to_end(key)
                except KeyError:
                    pass
                next(self._free_hits)
                return value
            # Expired, or replaced since: decide, and drop it, under the lock.
        lock = self._lock
        lock.acquire()
        try:
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
        finally:
            lock.release()

    def __getitem__(self, key: K) -> V:
        """Like :meth:`get`, but raise ``KeyError`` when ``key`` is absent or expired."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` holds a live entry; counts nothing and keeps recency unchanged."""
        with self._lock:
            try:
                present = key in self._data
            except TypeError:
                raise _unhashable(key) from None
            if present and self._deadlines is not None:
                return self._deadlines[key] > self._clock()  # type: ignore[index]
            return present

    def peek(self, key: K, default: T | None = None) -> V | T | None:
        """Return the live value for ``key`` without counting it or refreshing it."""
        with self._lock:
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
        for an unhashable key.
        """
        if self._special:
            self._put_special(key, value)
            return
        if type(key) not in _ATOMIC_KEY_TYPES and not _atomic_key(key):
            # Hashing this key may run Python code, which lock-free gets
            # cannot tolerate: _put_special switches them to the lock first.
            self._put_special(key, value)
            return
        data = self._data
        # acquire/release in try/finally costs about a third of a ``with``
        # block here, and the lock is most of the price of a put.
        lock = self._lock
        lock.acquire()
        try:
            size = len(data)
            try:
                data[key] = value
            except TypeError:
                raise _unhashable(key) from None
            # One hash lookup fewer than a "key in data" test: an insert grows the dict.
            if len(data) == size:
                self._move_to_end(key)
            elif size >= self._bound:
                data.popitem(last=False)
                self._evictions += 1
            elif size >= self._size_peak:
                self._size_peak = size + 1
        finally:
            lock.release()

    def _put_special(self, key: K, value: V) -> None:
        try:
            hash(key)
        except TypeError:
            raise _unhashable(key) from None
        if (
            type(key) not in _ATOMIC_KEY_TYPES
            and (self._ttl_free_reads or not self._locked_reads)
            and not _atomic_key(key)
        ):
            # Hashing this key may run Python code, which lock-free gets
            # cannot tolerate: from now on every get takes the lock. This
            # happens before the key is stored (module docstring).
            self._locked_reads = self._special = True
            self._ttl_free_reads = False
        # Weighing runs outside the lock: sizeof may be slow.
        size = self._weigh(value) if self._sizes is not None else 0
        with self._lock:
            self._put_special_locked(key, value, size)

    def _put_special_locked(self, key: K, value: V, size: int) -> None:
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
            # After the value: a lock-free get reads the deadline first.
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
        nbytes = [b for b in (self._max_bytes, self._hold_bytes) if b is not None]
        self._byte_bound = min(nbytes) if nbytes else None

    def _over_bound(self) -> bool:
        if len(self._data) > self._bound:
            return True
        byte_bound = self._byte_bound
        return byte_bound is not None and self._nbytes > byte_bound

    @staticmethod
    def _retry_reordered(read: Callable[[], T]) -> T:
        # Right after a cache leaves the lock-free path, a get that started
        # before may still reorder the dict once while ``read`` walks it
        # (module docstring). Each thread can do that at most once, so this
        # ends; any other error propagates.
        while True:
            try:
                return read()
            except RuntimeError as exc:
                if "mutated during iteration" not in str(exc):
                    raise

    def _keys_locked(self) -> list[K]:
        data = self._data
        return self._retry_reordered(lambda: list(data))

    def _values_locked(self) -> list[V]:
        values = self._data.values()
        return self._retry_reordered(lambda: list(values))

    def _first_key_locked(self) -> K:
        data = self._data
        return self._retry_reordered(lambda: next(iter(data)))

    def _enforce_locked(self) -> None:
        policy = self._policy
        while self._over_bound():
            victim = policy.victim() if policy is not None else self._first_key_locked()
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

    def __delitem__(self, key: K) -> None:
        """Remove ``key``; ``KeyError`` when it is absent."""
        with self._lock:
            try:
                present = key in self._data
            except TypeError:
                raise _unhashable(key) from None
            if not present:
                raise KeyError(key)
            self._remove_locked(key)

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, /, default: V | T) -> V | T: ...
    def pop(self, key: K, /, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; ``default`` (or ``KeyError``) when absent."""
        with self._lock:
            try:
                present = key in self._data
            except TypeError:
                raise _unhashable(key) from None
            if present:
                expired = self._deadlines is not None and self._deadlines[key] <= self._clock()
                value = self._remove_locked(key)
                if not expired:
                    return value
                self._expirations += 1
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return the coldest ``(key, value)``; ``KeyError`` when empty."""
        with self._lock:
            self._sweep_locked(None)
            if not self._data:
                raise KeyError(f"{type(self).__name__} is empty")
            key = next(self._coldest_locked())
            return key, self._remove_locked(key)

    def clear(self) -> None:
        """Remove every entry (counters and peaks are kept)."""
        with self._lock:
            self._data.clear()
            if self._sizes is not None:
                self._sizes.clear()
            if self._deadlines is not None:
                self._deadlines.clear()
            if self._policy is not None:
                self._policy.clear()
            self._nbytes = 0

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
        with self._lock:
            return self._sweep_locked(None)

    def _coldest_locked(self) -> Iterator[K]:
        if self._policy is not None:
            return self._policy.coldest()  # type: ignore[return-value]
        return iter(self._keys_locked())

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
        if not isinstance(hold, bool):
            raise TypeError(f"hold must be a bool, got {type(hold).__name__} {hold!r}")
        evicted: list[V] = []
        freed = 0
        with self._lock:
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
        return freed

    def release_hold(self) -> bool:
        """Let the cache grow to its configured bounds again; ``True`` if it was held."""
        with self._lock:
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
        with self._lock:
            self._sweep_locked(None)
            hits = self._hits + _read_counter(self._free_hits, self._free_hit_reads)
            misses = self._misses + _read_counter(self._free_misses, self._free_miss_reads)
            self._free_hit_reads += 1
            self._free_miss_reads += 1
            size = len(self._data)
            sample: list[V] | None = None
            if self._sizes is None:
                if size <= _EXACT_WEIGH_LIMIT:
                    sample = self._values_locked()
                else:
                    step = size // _EXACT_WEIGH_LIMIT + 1
                    sample = self._values_locked()[::step]
            nbytes = self._nbytes
            evictions, expirations = self._evictions, self._expirations
            nbytes_peak, size_peak = self._nbytes_peak, self._size_peak
            held = self._hold_entries is not None
        exact = True
        if sample is not None:
            # Weighing user values can be slow; it runs outside the lock.
            measured = sum(self._sizeof(v) for v in sample)
            if len(sample) < size:
                exact = False
                measured = round(measured * size / len(sample))
            nbytes = measured
            with self._lock:
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
        )

    def reset_stats(self) -> None:
        """Zero the hit, miss, eviction and expiration counters and reset peaks to now."""
        with self._lock:
            self._hits = self._misses = self._evictions = self._expirations = 0
            # The next read of each counter consumes the value it returns now.
            self._free_hit_reads = next(self._free_hits) + 1
            self._free_miss_reads = next(self._free_misses) + 1
            self._size_peak = len(self._data)
            self._nbytes_peak = self._nbytes

    # -- iteration ----------------------------------------------------------

    def __len__(self) -> int:
        """Number of live entries (expired ones are swept first)."""
        with self._lock:
            if self._deadlines is not None:
                self._sweep_locked(None)
            return len(self._data)

    def __iter__(self) -> Iterator[K]:
        """Iterate over a snapshot of the keys, coldest first; safe against concurrent writes."""
        with self._lock:
            self._sweep_locked(None)
            return iter(list(self._coldest_locked()))

    def snapshot(self) -> dict[K, V]:
        """A plain dict copy of the live entries, coldest first; counts nothing."""
        with self._lock:
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

    @property
    def thread_safe(self) -> bool:
        """Whether the cache may be shared between threads (``thread_safe=False`` says no)."""
        return not isinstance(self, _SingleThreadLRUCache)

    def __repr__(self) -> str:
        name = "LRUCache" if isinstance(self, _SingleThreadLRUCache) else type(self).__name__
        return (
            f"{name}(size={len(self)}, capacity={self._capacity}, "
            f"max_bytes={self._max_bytes}, ttl={self._ttl}, policy={self._policy_name!r}, "
            f"thread_safe={self.thread_safe})"
        )


class _SingleThreadLRUCache(LRUCache[K, V]):
    """``LRUCache(thread_safe=False)``: the plain get/put paths without the lock.

    The bodies repeat :class:`LRUCache`'s minus the ``with`` block: taking an
    uncontended ``threading.Lock`` costs as much as the rest of a lookup, and a
    helper call to share the code would cost about as much again.
    """

    __slots__ = ()

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...
    def get(self, key: K, /, default: Any = None) -> Any:
        """Return the value for ``key`` (counting a hit and refreshing it) or ``default``."""
        if self._special:
            return self._get_special(key, default)
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

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key``, evicting the coldest entries to stay within bounds."""
        if self._special:
            self._put_special(key, value)
            return
        data = self._data
        size = len(data)
        try:
            data[key] = value
        except TypeError:
            raise _unhashable(key) from None
        if len(data) == size:
            self._move_to_end(key)
        elif size >= self._bound:
            data.popitem(last=False)
            self._evictions += 1
        elif size >= self._size_peak:
            self._size_peak = size + 1


class TTLCache(LRUCache[K, V]):
    """An :class:`LRUCache` whose entries expire ``ttl`` seconds after they were written.

    Expired entries are dropped on access and by :meth:`sweep_expired` (run
    periodically by the Warden). Raises ``ValueError`` for ``ttl <= 0``, NaN or
    infinity. Thread-safe like :class:`LRUCache`.
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
    ) -> None:
        if ttl is None:
            raise TypeError("ttl must be a number of seconds, got None")
        super().__init__(
            capacity, max_bytes=max_bytes, sizeof=sizeof, ttl=ttl, clock=clock, policy=policy
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
    referenced (``int``, ``str``, ``tuple``...). Thread-safe.
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
        self._lock = threading.Lock()
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
