"""W-TinyLFU: the frequency sketch, admission against scans, and region bookkeeping."""

from __future__ import annotations

import random

from memwarden._tinylfu import _FrequencySketch, _WTinyLFU
from memwarden.cache import LRUCache


def test_sketch_counts_saturate_at_15() -> None:
    sketch = _FrequencySketch(64)
    for _ in range(3):
        sketch.increment("a")
    assert sketch.frequency("a") == 3
    for _ in range(40):
        sketch.increment("a")
    assert sketch.frequency("a") == 15
    assert sketch.frequency("never-seen") <= 1  # count-min may over-count, never under


def test_sketch_halves_every_sample_period() -> None:
    sketch = _FrequencySketch(16)  # sample period = 10 * 16 additions
    for _ in range(8):
        sketch.increment(1)
    assert sketch.frequency(1) == 8
    step = 0
    while True:  # until the reset: additions drop instead of growing
        before = bytes(sketch._table)
        previous = sketch._additions
        sketch.increment(1_000 + step)
        step += 1
        if sketch._additions < previous:
            break
    assert step <= 160
    touched = set(sketch._slots(1_000 + step - 1))
    after = sketch._table
    # Every counter the last access did not touch was exactly halved.
    assert all(after[i] == before[i] >> 1 for i in range(len(after)) if i not in touched)
    assert sketch.frequency(1) <= 7


def test_sketch_grows_and_clears() -> None:
    sketch = _FrequencySketch(16)
    sketch.increment("x")
    sketch.ensure_capacity(1000)
    assert sketch.capacity == 1000
    assert sketch.frequency("x") == 0  # counts restart when the table grows
    sketch.increment("x")
    sketch.clear()
    assert sketch.frequency("x") == 0


def test_window_candidate_loses_to_a_more_frequent_victim() -> None:
    policy = _WTinyLFU(maximum=100, expected_entries=100)
    policy.add("resident", 1)
    policy.add("pusher", 1)  # window holds 1: resident spills to probation as a candidate
    policy.settle()  # ... and is admitted
    for _ in range(5):
        policy.record("resident")
    policy.add("newcomer", 1)  # pusher spills: a fresh candidate
    assert policy.victim() == "pusher"  # seen once; the resident was seen five times


def test_probation_hit_promotes_to_protected() -> None:
    policy = _WTinyLFU(maximum=100, expected_entries=100)
    policy.add("a", 1)
    policy.add("b", 1)
    policy.settle()
    assert policy.region_sizes() == (1, 1, 0)
    policy.on_hit("a")
    assert policy.region_sizes() == (1, 0, 1)
    assert list(policy.coldest()) == ["b", "a"]


def test_tinylfu_keeps_the_hot_set_through_a_scan() -> None:
    rng = random.Random(7)
    hot = list(range(50))  # int keys: hashes, and so the sketch, are the same every run
    lru: LRUCache[int, int] = LRUCache(100)
    tiny: LRUCache[int, int] = LRUCache(100, policy="tinylfu")
    for cache in (lru, tiny):
        for _ in range(2_000):
            k = rng.choice(hot)
            if cache.get(k) is None:
                cache.put(k, 1)
        for i in range(500):  # one long scan of keys never seen again
            cache.put(10_000 + i, 1)
    assert sum(k in lru for k in hot) == 0
    assert sum(k in tiny for k in hot) >= 45


def test_tinylfu_beats_lru_on_a_loop() -> None:
    keys = [i % 150 for i in range(6_000)]
    results = {}
    for policy in ("lru", "tinylfu"):
        cache: LRUCache[int, int] = LRUCache(100, policy=policy)  # type: ignore[arg-type]
        for k in keys:
            if cache.get(k) is None:
                cache.put(k, k)
        results[policy] = cache.stats().hit_rate
    assert results["lru"] == 0.0
    assert results["tinylfu"] > 0.3


def test_tinylfu_weighted_by_bytes_stays_within_bound() -> None:
    cache: LRUCache[int, bytes] = LRUCache(max_bytes=1_000, sizeof=len, policy="tinylfu")
    rng = random.Random(3)
    for _ in range(3_000):
        k = int(rng.paretovariate(1.2)) % 400
        if cache.get(k) is None:
            cache.put(k, b"x" * (k % 50 + 1))
        assert cache.stats().nbytes <= 1_000
    assert cache.stats().hit_rate > 0.2
