"""W-TinyLFU admission and eviction: a frequency sketch plus a window and a segmented main area.

This follows Caffeine's design (``FrequencySketch`` and the simulator's
``WindowTinyLfuPolicy``): new entries land in a small LRU *window* (1% of the
bound); when the window overflows, its oldest entry becomes a *candidate* in
the probation segment of the main area, and while the cache is over its bound
the candidate duels the probation segment's least recently used entry: the one
the sketch has seen less often is evicted. An entry hit while on probation is
promoted to the *protected* segment (80% of the main area). The count-min
sketch keeps four 4-bit counters per key and halves every counter after
``10 * capacity`` recorded accesses, so old popularity fades.

Written by hand because no maintained Python package offers a weighted
W-TinyLFU that can sit inside our own locked cache core. Not thread-safe on its
own: the owning cache calls every method under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator

__all__: list[str] = []

_M64 = (1 << 64) - 1
_MIX1 = 0x9E3779B97F4A7C15
_MIX2 = 0xBF58476D1CE4E5B9
_HALVE = bytes(i >> 1 for i in range(256))
_MAX_COUNT = 15
_ROWS = 4


def _ceil_pow2(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


class _FrequencySketch:
    """Count-min sketch of access frequency with 4-bit saturating counters and aging."""

    __slots__ = ("_additions", "_capacity", "_mask", "_sample_size", "_table", "_width")

    def __init__(self, capacity: int) -> None:
        self._capacity = 0
        self._width = 0
        self._mask = 0
        self._sample_size = 0
        self._additions = 0
        self._table = bytearray()
        self.ensure_capacity(capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    def ensure_capacity(self, capacity: int) -> None:
        """Grow the table for ``capacity`` distinct keys; counts restart, as in Caffeine."""
        capacity = max(capacity, 16)
        if capacity <= self._capacity:
            return
        self._capacity = capacity
        self._width = _ceil_pow2(capacity * 2)
        self._mask = self._width - 1
        self._sample_size = 10 * capacity
        self._additions = 0
        self._table = bytearray(self._width * _ROWS)

    def _slots(self, key: Hashable) -> tuple[int, int, int, int]:
        # Two multiplicative mixes give four 32-bit slices, one per row: the
        # rows collide on different keys, which is what a count-min needs.
        h = (hash(key) * _MIX1) & _M64
        g = ((h ^ (h >> 29)) * _MIX2) & _M64
        mask = self._mask
        width = self._width
        return (
            h & mask,
            width + ((h >> 32) & mask),
            2 * width + (g & mask),
            3 * width + ((g >> 32) & mask),
        )

    def frequency(self, key: Hashable) -> int:
        """Estimated number of recent accesses to ``key`` (0..15)."""
        table = self._table
        a, b, c, d = self._slots(key)
        return min(table[a], table[b], table[c], table[d])

    def increment(self, key: Hashable) -> None:
        """Record one access to ``key``; halves every counter once per sample period."""
        # Runs on every cache access: _slots is inlined and the loop unrolled.
        h = (hash(key) * _MIX1) & _M64
        g = ((h ^ (h >> 29)) * _MIX2) & _M64
        mask = self._mask
        width = self._width
        table = self._table
        a = h & mask
        b = width + ((h >> 32) & mask)
        c = 2 * width + (g & mask)
        d = 3 * width + ((g >> 32) & mask)
        added = False
        if table[a] < _MAX_COUNT:
            table[a] += 1
            added = True
        if table[b] < _MAX_COUNT:
            table[b] += 1
            added = True
        if table[c] < _MAX_COUNT:
            table[c] += 1
            added = True
        if table[d] < _MAX_COUNT:
            table[d] += 1
            added = True
        if added:
            self._additions += 1
            if self._additions >= self._sample_size:
                self._table = bytearray(table.translate(_HALVE))
                self._additions //= 2

    def clear(self) -> None:
        """Forget every count."""
        self._table = bytearray(len(self._table))
        self._additions = 0

    def copy(self) -> _FrequencySketch:
        """An independent copy of the counters (for pickling a cache under its lock)."""
        other = _FrequencySketch.__new__(_FrequencySketch)
        other._capacity = self._capacity
        other._width = self._width
        other._mask = self._mask
        other._sample_size = self._sample_size
        other._additions = self._additions
        other._table = bytearray(self._table)
        return other


_WINDOW = 0
_PROBATION = 1
_PROTECTED = 2


class _WTinyLFU:
    """Region bookkeeping and victim choice for a W-TinyLFU cache.

    Weights are whatever the cache bounds: 1 per entry for a count bound, bytes
    for a byte bound. ``maximum`` is that bound (``None`` when unbounded).
    """

    __slots__ = (
        "_candidates",
        "_max_protected",
        "_max_window",
        "_regions",
        "_weights",
        "_where",
        "sketch",
    )

    def __init__(self, maximum: int | None, expected_entries: int) -> None:
        self.sketch = _FrequencySketch(expected_entries)
        # key -> weight, one ordered dict per region, oldest first.
        self._regions: tuple[OrderedDict[Hashable, int], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        self._weights = [0, 0, 0]
        self._where: dict[Hashable, int] = {}
        self._candidates: OrderedDict[Hashable, None] = OrderedDict()
        self._max_window = 0
        self._max_protected = 0
        self.set_maximum(maximum)

    def set_maximum(self, maximum: int | None) -> None:
        """Size the window (1%) and the protected segment (80% of the rest)."""
        if maximum is None:
            self._max_window = 1 << 62
            self._max_protected = 1 << 62
            return
        window = max(1, maximum // 100)
        self._max_window = window
        self._max_protected = max(1, (maximum - window) * 8 // 10)

    def record(self, key: Hashable) -> None:
        """Count an access (hit or miss) in the sketch."""
        self.sketch.increment(key)

    def on_hit(self, key: Hashable) -> None:
        """Refresh ``key``'s recency; a probation hit is promoted to protected."""
        region = self._where[key]
        regions = self._regions
        if region == _PROBATION:
            weight = regions[_PROBATION].pop(key)
            self._candidates.pop(key, None)
            self._weights[_PROBATION] -= weight
            regions[_PROTECTED][key] = weight
            self._weights[_PROTECTED] += weight
            self._where[key] = _PROTECTED
            self._demote_protected()
        else:
            regions[region].move_to_end(key)

    def _demote_protected(self) -> None:
        regions = self._regions
        protected = regions[_PROTECTED]
        weights = self._weights
        while weights[_PROTECTED] > self._max_protected and len(protected) > 1:
            key, weight = protected.popitem(last=False)
            weights[_PROTECTED] -= weight
            regions[_PROBATION][key] = weight
            weights[_PROBATION] += weight
            self._where[key] = _PROBATION

    def add(self, key: Hashable, weight: int) -> None:
        """Insert a new key into the window; window overflow becomes candidates."""
        self._regions[_WINDOW][key] = weight
        self._weights[_WINDOW] += weight
        self._where[key] = _WINDOW
        self._spill_window()

    def _spill_window(self) -> None:
        regions = self._regions
        window = regions[_WINDOW]
        weights = self._weights
        while weights[_WINDOW] > self._max_window and window:
            key, weight = window.popitem(last=False)
            weights[_WINDOW] -= weight
            regions[_PROBATION][key] = weight
            weights[_PROBATION] += weight
            self._where[key] = _PROBATION
            self._candidates[key] = None

    def update(self, key: Hashable, weight: int) -> None:
        """Re-weigh ``key`` after its value was replaced, and count it as a hit."""
        region = self._where[key]
        old = self._regions[region][key]
        self._regions[region][key] = weight
        self._weights[region] += weight - old
        self.on_hit(key)
        if region == _WINDOW:
            self._spill_window()

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (evicted, expired or deleted)."""
        region = self._where.pop(key)
        self._weights[region] -= self._regions[region].pop(key)
        self._candidates.pop(key, None)

    def victim(self) -> Hashable:
        """The key to evict next while the cache is over its bound.

        A candidate from the window duels the probation segment's LRU entry and
        the less frequent one loses; without candidates the probation LRU goes,
        then the window's, then the protected segment's. Raises ``KeyError``
        when empty.
        """
        regions = self._regions
        probation = regions[_PROBATION]
        if probation:
            victim = next(iter(probation))
            candidates = self._candidates
            while candidates:
                candidate = next(iter(candidates))
                if candidate == victim:
                    # The oldest probation entry is itself a candidate: no
                    # resident entry is left to defend, so compare the next one.
                    del candidates[candidate]
                    continue
                sketch = self.sketch
                if sketch.frequency(candidate) > sketch.frequency(victim):
                    return victim
                return candidate
            return victim
        for region in (_WINDOW, _PROTECTED):
            if regions[region]:
                return next(iter(regions[region]))
        raise KeyError("cache is empty")

    def settle(self) -> None:
        """End an eviction round: candidates still present have been admitted."""
        self._candidates.clear()

    def coldest(self) -> Iterator[Hashable]:
        """Keys from coldest to hottest: probation, then window, then protected, LRU first."""
        regions = self._regions
        for region in (_PROBATION, _WINDOW, _PROTECTED):
            yield from list(regions[region])

    def clear(self) -> None:
        """Forget every key (the sketch keeps its counts, so popularity survives a clear)."""
        for region in self._regions:
            region.clear()
        self._weights = [0, 0, 0]
        self._where.clear()
        self._candidates.clear()

    def copy(self) -> _WTinyLFU:
        """An independent copy of the regions and the sketch (keys are shared, not copied)."""
        other = _WTinyLFU.__new__(_WTinyLFU)
        other.sketch = self.sketch.copy()
        other._regions = tuple(OrderedDict(region) for region in self._regions)
        other._weights = list(self._weights)
        other._where = dict(self._where)
        other._candidates = OrderedDict(self._candidates)
        other._max_window = self._max_window
        other._max_protected = self._max_protected
        return other

    def region_sizes(self) -> tuple[int, int, int]:
        """Entries in window, probation and protected (for tests and debugging)."""
        return (len(self._regions[0]), len(self._regions[1]), len(self._regions[2]))

    def __len__(self) -> int:
        return len(self._where)
