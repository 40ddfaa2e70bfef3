"""Model-based tests: each cache class against a dict-plus-list model (hypothesis)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from memwarden.cache import LRUCache, TTLCache, WeakValueCache
from memwarden.errors import CacheError
from memwarden.testing import ManualClock

KEYS = st.integers(min_value=0, max_value=12)
SIZES = st.integers(min_value=0, max_value=60)


class LRUModelMachine(RuleBasedStateMachine):
    """LRUCache bounded by count and bytes: contents, order, bounds and stats match a model."""

    @initialize(
        capacity=st.one_of(st.none(), st.integers(min_value=0, max_value=8)),
        max_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=150)),
        thread_safe=st.booleans(),
        weigh=st.booleans(),
    )
    def setup(
        self, capacity: int | None, max_bytes: int | None, thread_safe: bool, weigh: bool
    ) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        # Without max_bytes or sizeof the cache takes the plain (unweighed) paths.
        self.weigh = weigh or max_bytes is not None
        self.cache: LRUCache[int, bytes] = LRUCache(
            capacity,
            max_bytes=max_bytes,
            sizeof=len if self.weigh else None,
            thread_safe=thread_safe,
        )
        self.order: list[int] = []  # oldest first
        self.values: dict[int, bytes] = {}
        self.hits = self.misses = self.evictions = 0
        self.peak_bytes = self.peak_size = 0
        self.hold_entries: int | None = None
        self.hold_bytes: int | None = None

    def _nbytes(self) -> int:
        return sum(len(v) for v in self.values.values())

    def _evict_front(self) -> None:
        victim = self.order.pop(0)
        del self.values[victim]
        self.evictions += 1

    @rule(key=KEYS, size=SIZES)
    def put(self, key: int, size: int) -> None:
        value = bytes([key]) * size
        if self.max_bytes is not None and size > self.max_bytes:
            try:
                self.cache.put(key, value)
            except CacheError:
                return
            raise AssertionError("oversized value was accepted")
        self.cache.put(key, value)
        if key in self.values:
            self.order.remove(key)
        self.order.append(key)
        self.values[key] = value
        entry_bounds = [b for b in (self.capacity, self.hold_entries) if b is not None]
        byte_bounds = [b for b in (self.max_bytes, self.hold_bytes) if b is not None]
        while (entry_bounds and len(self.order) > min(entry_bounds)) or (
            byte_bounds and self._nbytes() > min(byte_bounds)
        ):
            self._evict_front()
        self.peak_bytes = max(self.peak_bytes, self._nbytes())
        self.peak_size = max(self.peak_size, len(self.order))

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        if key in self.values:
            assert got == self.values[key]
            self.order.remove(key)
            self.order.append(key)
            self.hits += 1
        else:
            assert got is None
            self.misses += 1

    @rule(key=KEYS)
    def pop(self, key: int) -> None:
        got = self.cache.pop(key, None)
        assert got == self.values.pop(key, None)
        if key in self.order:
            self.order.remove(key)

    @rule(fraction=st.sampled_from([0.0, 0.25, 0.5, 1.0]), hold=st.booleans())
    def shrink(self, fraction: float, hold: bool) -> None:
        before = self._nbytes()
        freed = self.cache.shrink(fraction, hold=hold)
        if self.weigh:
            target = 0 if fraction >= 1 else math.floor(before * (1 - fraction))
            while self.order and fraction > 0 and self._nbytes() > target:
                self._evict_front()
            assert freed == before - self._nbytes()
        else:
            for _ in range(math.ceil(len(self.order) * fraction)):
                self._evict_front()
            assert freed >= before - self._nbytes()  # deep sizes include object headers
        if hold:
            self.hold_entries = len(self.order)
            self.hold_bytes = self._nbytes() if self.weigh else None

    @rule()
    def release_hold(self) -> None:
        assert self.cache.release_hold() is (self.hold_entries is not None)
        self.hold_entries = self.hold_bytes = None

    @rule()
    def pickle_round_trip(self) -> None:
        # Everything the model tracks carries over: entries, order, bounds,
        # counters, peaks and a pressure hold.
        self.cache = pickle.loads(pickle.dumps(self.cache))

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.order.clear()
        self.values.clear()

    @invariant()
    def matches_model(self) -> None:
        assert list(self.cache) == self.order
        stats = self.cache.stats()
        assert stats.size == len(self.order)
        if self.weigh:
            assert stats.nbytes == self._nbytes()
            assert stats.nbytes_peak == self.peak_bytes
        assert (stats.hits, stats.misses, stats.evictions) == (
            self.hits,
            self.misses,
            self.evictions,
        )
        if self.capacity is not None:
            assert stats.size <= self.capacity
        if self.max_bytes is not None:
            assert stats.nbytes <= self.max_bytes
        if self.hold_entries is not None:
            assert stats.held and stats.size <= self.hold_entries
        assert stats.size_peak == self.peak_size
        total = self.hits + self.misses
        assert stats.hit_rate == (self.hits / total if total else 0.0)


class TTLModelMachine(RuleBasedStateMachine):
    """TTLCache with a manual clock: expiry on access, in sweeps, and before eviction."""

    @initialize(
        capacity=st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
        ttl=st.sampled_from([1.0, 2.5, 10.0]),
    )
    def setup(self, capacity: int | None, ttl: float) -> None:
        self.clock = ManualClock(100.0)
        self.ttl = ttl
        self.capacity = capacity
        self.cache: TTLCache[int, int] = TTLCache(ttl, capacity, clock=self.clock)
        self.order: list[int] = []  # recency, oldest first
        self.entries: dict[int, tuple[int, float]] = {}  # key -> (value, deadline)
        self.hits = self.misses = self.evictions = self.expirations = 0

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, (_, d) in self.entries.items() if d <= now]:
            del self.entries[key]
            self.order.remove(key)
            self.expirations += 1

    @rule(key=KEYS, value=st.integers())
    def put(self, key: int, value: int) -> None:
        self.cache.put(key, value)
        self._drop_expired()
        if key in self.entries:
            self.order.remove(key)
        self.order.append(key)
        self.entries[key] = (value, self.clock() + self.ttl)
        while self.capacity is not None and len(self.order) > self.capacity:
            del self.entries[self.order.pop(0)]
            self.evictions += 1

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        entry = self.entries.get(key)
        if entry is not None and entry[1] <= self.clock():
            del self.entries[key]
            self.order.remove(key)
            self.expirations += 1
            entry = None
        if entry is None:
            assert got is None
            self.misses += 1
        else:
            assert got == entry[0]
            self.order.remove(key)
            self.order.append(key)
            self.hits += 1

    @rule(key=KEYS)
    def delete(self, key: int) -> None:
        entry = self.entries.get(key)
        if entry is not None and entry[1] > self.clock():
            del self.cache[key]
        else:
            with pytest.raises(KeyError):
                del self.cache[key]
            if entry is not None:  # expired: dropped and counted, like pop
                self.expirations += 1
        if entry is not None:
            del self.entries[key]
            self.order.remove(key)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def sweep(self) -> None:
        before = self.expirations
        removed = self.cache.sweep_expired()
        self._drop_expired()
        assert removed == self.expirations - before

    @invariant()
    def matches_model(self) -> None:
        stats = self.cache.stats()  # sweeps first, like the model below
        self._drop_expired()
        assert list(self.cache) == self.order
        assert (stats.hits, stats.misses, stats.evictions, stats.expirations) == (
            self.hits,
            self.misses,
            self.evictions,
            self.expirations,
        )
        if self.capacity is not None:
            assert stats.size <= self.capacity


class TinyLFUMachine(RuleBasedStateMachine):
    """W-TinyLFU: bounds hold, a present key returns its latest value, bookkeeping agrees."""

    @initialize(
        capacity=st.integers(min_value=1, max_value=10),
        max_bytes=st.one_of(st.none(), st.integers(min_value=60, max_value=300)),
    )
    def setup(self, capacity: int, max_bytes: int | None) -> None:
        sizeof = len if max_bytes is not None else None
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.cache: LRUCache[int, bytes] = LRUCache(
            capacity, max_bytes=max_bytes, sizeof=sizeof, policy="tinylfu"
        )
        self.latest: dict[int, bytes] = {}
        self.gets = 0

    @rule(key=st.integers(min_value=0, max_value=30), size=SIZES)
    def put(self, key: int, size: int) -> None:
        value = bytes([key]) * size
        self.cache.put(key, value)
        self.latest[key] = value

    @rule(key=st.integers(min_value=0, max_value=30))
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        self.gets += 1
        if got is not None:
            assert got == self.latest[key]

    @rule(key=st.integers(min_value=0, max_value=30))
    def pop(self, key: int) -> None:
        got = self.cache.pop(key, None)
        if got is not None:
            assert got == self.latest[key]

    @rule(fraction=st.sampled_from([0.3, 0.5, 1.0]))
    def shrink(self, fraction: float) -> None:
        before = self.cache.stats().nbytes
        freed = self.cache.shrink(fraction)
        if self.max_bytes is not None:
            assert freed == before - self.cache.stats().nbytes

    @invariant()
    def bounded_and_consistent(self) -> None:
        stats = self.cache.stats()
        snapshot = self.cache.snapshot()
        assert stats.size == len(snapshot) <= self.capacity
        for key, value in snapshot.items():
            assert value == self.latest[key]
        if self.max_bytes is not None:
            assert stats.nbytes == sum(len(v) for v in snapshot.values()) <= self.max_bytes
        assert stats.hits + stats.misses == self.gets
        policy = self.cache._policy
        assert policy is not None
        assert sum(policy.region_sizes()) == len(policy) == stats.size


class _Obj:
    def __init__(self, n: int) -> None:
        self.n = n


class WeakModelMachine(RuleBasedStateMachine):
    """WeakValueCache: an entry lives exactly as long as a strong reference elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: WeakValueCache[int, _Obj] = WeakValueCache()
        self.strong: dict[int, _Obj] = {}
        self.cached: dict[int, int] = {}  # key -> id(value) believed cached

    @rule(key=KEYS, n=st.integers())
    def put(self, key: int, n: int) -> None:
        obj = _Obj(n)
        self.strong[key] = obj
        self.cache.put(key, obj)

    @precondition(lambda self: bool(self.strong))
    @rule(data=st.data())
    def drop(self, data: Any) -> None:
        key = data.draw(st.sampled_from(sorted(self.strong)))
        # No reference cycles here: CPython frees the value at once.
        del self.strong[key]

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        assert got is self.strong.get(key)

    @invariant()
    def alive_matches(self) -> None:
        assert len(self.cache) == len(self.strong)
        assert set(self.cache) == set(self.strong)


# Fewer, shorter runs than the default keep this file a few seconds long on 2 cores.
_FAST = settings(max_examples=50, stateful_step_count=30)
for _machine in (TTLModelMachine, TinyLFUMachine, WeakModelMachine):
    _machine.TestCase.settings = _FAST
# The LRU machine covers four code paths (locked or not, weighed or not): more runs.
LRUModelMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30)

TestLRUModel = LRUModelMachine.TestCase
TestTTLModel = TTLModelMachine.TestCase
TestTinyLFU = TinyLFUMachine.TestCase
TestWeakModel = WeakModelMachine.TestCase
