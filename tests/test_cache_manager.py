"""CacheManager: seed 004's API, namespaces, errors, sweeping, and the pressure reaction."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from memwarden.cache import CacheManager, LRUCache, TTLCache, WeakValueCache
from memwarden.errors import CacheError
from memwarden.pressure import PressureEvent, PressureLevel, PressureThresholds
from memwarden.testing import ManualClock, StaticProbe


class Blob:
    """A weakly referenceable value."""


def event_at(
    probe: StaticProbe, fraction: float, previous: PressureLevel = PressureLevel.LOW
) -> PressureEvent:
    """A pressure event classified from a StaticProbe sample at ``fraction`` of its limit."""
    probe.set_fraction(fraction)
    sample = probe.sample()
    level = PressureThresholds().classify(sample.fraction, previous)
    return PressureEvent(level=level, previous=previous, sample=sample, timestamp=sample.timestamp)


def test_seed_004_api() -> None:
    cache_manager = CacheManager()
    cache_manager.create_lru_cache("results", capacity=1000)
    cache_manager.put_in_cache("lru", "results", "k", 1)
    assert cache_manager.get_from_cache("lru", "results", "k") == 1
    cache_manager.create_timed_cache("api_results", ttl_seconds=300)
    cache_manager.put_in_cache("timed", "api_results", "k", 2)
    assert cache_manager.get_from_cache("timed", "api_results", "k") == 2
    assert cache_manager.get_from_cache("timed", "api_results", "missing", "dflt") == "dflt"

    calls = 0

    @cache_manager.memoize(ttl_seconds=60)
    def expensive_operation(x: int, y: int) -> int:
        nonlocal calls
        calls += 1
        return x + y

    assert expensive_operation(1, 2) == 3 and expensive_operation(1, 2) == 3
    assert calls == 1
    stats = cache_manager.get_stats("results")
    assert stats["hits"] == 1 and stats["misses"] == 0
    assert len(cache_manager) == 3
    assert any(name.startswith("memoize:") for name in cache_manager)
    assert cache_manager.clear_cache("results") == 1
    assert cache_manager.clear_all() == 2  # api_results and the memoized result


def test_namespaces_never_collide() -> None:
    mgr = CacheManager()
    mgr.create_lru_cache("a", 10)
    mgr.create_lru_cache("b", 10)
    mgr.put_in_cache("lru", "a", "key", "from a")
    mgr.put_in_cache("lru", "b", "key", "from b")
    assert mgr.get_from_cache("lru", "a", "key") == "from a"
    assert mgr.get_from_cache("lru", "b", "key") == "from b"


def test_memoize_namespaces() -> None:
    mgr = CacheManager()

    @mgr.memoize(namespace="sq", capacity=4)
    def sq(x: int) -> int:
        return x * x

    def make() -> Any:
        @mgr.memoize()
        def same_name(x: int) -> int:
            return x

        return same_name

    f1, f2 = make(), make()
    assert f1(1) == 1 and f2(1) == 1
    assert sq(3) == 9 and mgr.get_cache("sq") is sq.cache
    assert sum(1 for n in mgr if "same_name" in n) == 2  # second one got a "#2" suffix
    with pytest.raises(CacheError, match="'sq' already exists"):
        mgr.memoize(namespace="sq")(lambda: 1)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda m: m.put_in_cache("lfu", "results", 1, 1), r"unknown cache kind 'lfu'"),
        (lambda m: m.get_from_cache("lru", "nope", 1), r"no cache named 'nope'"),
        (lambda m: m.get_from_cache("timed", "results", 1), r"of kind 'lru', not 'timed'"),
        (lambda m: m.get_stats("nope"), r"no cache named 'nope' \(known: 'results'\)"),
        (lambda m: m.clear_cache("nope"), r"no cache named 'nope'"),
        (lambda m: m.get_cache("nope"), r"no cache named 'nope'"),
        (lambda m: m.create_lru_cache("results", 5), r"'results' already exists"),
    ],
)
def test_unknown_kind_or_name_raises_cache_error(call: Any, pattern: str) -> None:
    mgr = CacheManager()
    mgr.create_lru_cache("results", 10)
    with pytest.raises(CacheError, match=pattern):
        call(mgr)
    assert mgr.names() == ["results"]


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [
        (lambda m: m.create_lru_cache("x", -1), ValueError, r"capacity must be >= 0, got -1"),
        (lambda m: m.create_timed_cache("x", 0), ValueError, r"ttl_seconds must be > 0, got 0"),
        (lambda m: m.create_timed_cache("x", -3.0), ValueError, r"ttl_seconds must be > 0"),
        (lambda m: m.create_lru_cache(3, 1), TypeError, r"name must be a str, got int 3"),
        (lambda m: m.create_lru_cache("", 1), ValueError, r"name must not be empty"),
        (lambda m: m.register("x", {}), TypeError, r"cache must be an LRUCache"),
        (lambda m: m.memoize(ttl_seconds=-1), ValueError, r"ttl_seconds must be > 0"),
    ],
)
def test_bad_input_leaves_registry_unchanged(call: Any, exc: type, pattern: str) -> None:
    mgr = CacheManager()
    with pytest.raises(exc, match=pattern):
        call(mgr)
    assert len(mgr) == 0


@pytest.mark.parametrize("fraction", [-0.5, 1.5, float("nan")])
def test_bad_shrink_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="shrink_fraction"):
        CacheManager(shrink_fraction=fraction)


def test_register_unregister_and_report_is_json(clock: ManualClock) -> None:
    mgr = CacheManager(clock=clock)
    mine: LRUCache[str, bytes] = LRUCache(max_bytes=1000, sizeof=len)
    assert mgr.register("mine", mine) is mine
    mine.put("a", b"x" * 100)
    mgr.create_weak_cache("weak")
    report = mgr.report()
    json.dumps(report)
    caches = report["caches"]
    assert isinstance(caches, dict)
    assert caches["mine"]["nbytes"] == 100 and caches["mine"]["kind"] == "lru"
    assert caches["weak"]["kind"] == "weak"
    assert report["total_nbytes"] == 100
    assert mgr.unregister("mine") is mine and "mine" not in mgr


def test_sweep_expired_runs_without_traffic(clock: ManualClock) -> None:
    mgr = CacheManager(clock=clock)
    timed = mgr.create_timed_cache("t", ttl_seconds=10)
    mgr.create_lru_cache("plain", 5).put("x", 1)
    for i in range(5):
        timed.put(i, i)
    clock.advance(10)
    assert isinstance(timed, TTLCache)
    assert mgr.sweep_expired() == 5
    assert timed._data == {}  # gone without any get
    assert mgr.get_stats("t").expirations == 5


async def test_react_high_shrinks_each_cache_and_critical_clears(
    probe: StaticProbe, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = CacheManager(shrink_fraction=0.5)
    weighed = mgr.create_lru_cache("weighed", max_bytes=10_000, sizeof=len)
    counted = mgr.create_lru_cache("counted", 100)
    weak = mgr.create_weak_cache("weak")
    keep = [Blob() for _ in range(4)]
    for i in range(10):
        weighed.put(i, b"x" * 100)
        counted.put(i, i)
    for i, blob in enumerate(keep):
        weak.put(i, blob)

    caplog.set_level(logging.INFO, logger="memwarden.cache")
    await mgr.react(event_at(probe, 0.50))  # LOW: nothing happens
    assert len(weighed) == 10 and mgr.get_stats("weighed").reactions == 0

    high = event_at(probe, 0.90)
    assert high.level is PressureLevel.HIGH
    await mgr.react(high)
    assert len(weighed) == 5 and weighed.stats().nbytes == 500
    assert list(weighed) == [5, 6, 7, 8, 9]  # the coldest went first
    assert len(counted) == 5
    assert len(weak) == 4  # weak caches are left alone
    assert mgr.get_stats("weighed").reactions == 1
    assert mgr.get_stats("weak").reactions == 0
    assert mgr.bytes_freed >= 500

    await mgr.react(event_at(probe, 0.90, previous=PressureLevel.HIGH))  # re-notification
    # 500 bytes -> at most 250: whole entries go until the target is met
    assert len(weighed) == 2 and mgr.get_stats("weighed").reactions == 2

    critical = event_at(probe, 0.97, previous=PressureLevel.HIGH)
    assert critical.level is PressureLevel.CRITICAL
    await mgr.react(critical)
    assert len(weighed) == 0 and len(counted) == 0
    assert len(weak) == 4
    assert mgr.get_stats("counted").reactions == 3

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # Logged once per level change (HIGH, CRITICAL), not for the re-notification.
    assert len(warnings) == 2
    assert "high" in warnings[0].getMessage() and "critical" in warnings[1].getMessage()
    assert mgr.report()["last_pressure_level"] == "critical"


async def test_react_rejects_non_events() -> None:
    with pytest.raises(TypeError, match="event must be a PressureEvent, got str"):
        await CacheManager().react("high")  # type: ignore[arg-type]


def test_weak_cache_via_manager_kind() -> None:
    mgr = CacheManager()
    weak = mgr.create_weak_cache("w")
    blob = Blob()
    mgr.put_in_cache("weak", "w", "k", blob)
    assert mgr.get_from_cache("weak", "w", "k") is blob
    assert isinstance(weak, WeakValueCache)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancelled_reaction_keeps_what_it_did_and_leaks_nothing(
    probe: StaticProbe, how: str
) -> None:
    import anyio

    mgr = CacheManager(shrink_fraction=0.5)
    first = mgr.create_lru_cache("a-first", max_bytes=10_000, sizeof=len)
    second = mgr.create_lru_cache("b-second", max_bytes=10_000, sizeof=len)
    for i in range(4):
        first.put(i, b"x" * 10)
        second.put(i, b"x" * 10)
    high = event_at(probe, 0.9)
    if how == "cancel":
        with anyio.CancelScope() as scope:
            scope.cancel()
            await mgr.react(high)
    else:
        with anyio.move_on_after(0) as scope:
            await mgr.react(high)
    assert scope.cancelled_caught
    # Each cache is shrunk atomically; the reaction stopped between caches.
    assert len(first) == 2 and first.stats().nbytes == 20
    assert len(second) == 4
    assert mgr.get_stats("a-first").reactions == 1
    assert mgr.get_stats("b-second").reactions == 0
    assert mgr.report()["last_pressure_level"] is None  # not recorded: the next event logs
    await mgr.react(high)
    assert len(second) == 2 and mgr.report()["last_pressure_level"] == "high"


async def test_pressure_hold_stops_regrowth_until_pressure_falls(probe: StaticProbe) -> None:
    mgr = CacheManager(shrink_fraction=0.5)
    results = mgr.create_lru_cache("results", 100)
    for i in range(100):
        results.put(i, i)
    await mgr.react(event_at(probe, 0.9))
    assert len(results) == 50 and mgr.get_stats("results").held
    for i in range(1000, 1100):
        results.put(i, i)
    assert len(results) == 50  # traffic cannot refill it while memory is short
    await mgr.react(event_at(probe, 0.97, previous=PressureLevel.HIGH))
    results.put("x", 1)
    assert len(results) == 0  # held at zero at CRITICAL
    await mgr.react(event_at(probe, 0.5, previous=PressureLevel.CRITICAL))
    for i in range(200):
        results.put(i, i)
    assert len(results) == 100 and not mgr.get_stats("results").held


async def test_hold_can_be_turned_off(probe: StaticProbe) -> None:
    mgr = CacheManager(hold=False)
    cache = mgr.create_lru_cache("c", 10)
    for i in range(10):
        cache.put(i, i)
    await mgr.react(event_at(probe, 0.9))
    for i in range(10):
        cache.put(100 + i, i)
    assert len(cache) == 10 and not cache.held
    with pytest.raises(TypeError, match="hold must be a bool"):
        CacheManager(hold=1)  # type: ignore[arg-type]


async def test_reactions_that_free_nothing_log_at_debug_and_count_in_words(
    probe: StaticProbe, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CacheManager()
    manager.create_lru_cache("empty", capacity=10)
    caplog.set_level(logging.DEBUG, logger="memwarden.cache")
    await manager.react(event_at(probe, 0.9))
    await manager.react(event_at(probe, 0.1, previous=PressureLevel.HIGH))
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records[0][0] == logging.DEBUG
    assert "held 1 cache: 0 entries" in records[0][1]
    assert records[1] == (logging.INFO, "caches: memory pressure low, 1 cache may grow again")
    cache = manager.get_cache("empty")
    cache["k"] = b"v"
    caplog.clear()
    await manager.react(event_at(probe, 0.99))
    assert caplog.records[0].levelno == logging.WARNING
    assert "1 entry" in caplog.records[0].getMessage()
