"""Seed 002's MemoryPool: keyed put/get free lists with get_stats()."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from memwarden.errors import PoolError
from memwarden.pool import MemoryPool


def test_put_then_get_reuses_the_object() -> None:
    pool: MemoryPool[object] = MemoryPool(max_size=10)
    obj = object()
    assert pool.put("expensive_object", obj) is True
    assert pool.get("expensive_object") is obj
    assert pool.get("expensive_object") is None
    assert len(pool) == 0


def test_get_returns_most_recent_put_per_key() -> None:
    pool: MemoryPool[list[int]] = MemoryPool()
    a, b, c = [1], [2], [3]
    pool.put("k", a)
    pool.put("k", b)
    pool.put("other", c)
    assert pool.get("k") is b
    assert pool.get("k") is a
    assert pool.get("other") is c


def test_put_beyond_max_size_is_refused() -> None:
    pool: MemoryPool[list[int]] = MemoryPool(max_size=2)
    assert pool.put("a", [1]) and pool.put("b", [2])
    rejected = [3]
    assert pool.put("a", rejected) is False
    assert pool.get("a") == [1] and pool.get("a") is None
    assert pool.get_stats()["rejected"] == 1


def test_same_object_twice_is_a_pool_error() -> None:
    pool: MemoryPool[list[int]] = MemoryPool()
    obj = [0]
    pool.put("a", obj)
    with pytest.raises(PoolError, match="already in the pool"):
        pool.put("b", obj)
    assert len(pool) == 1
    assert pool.put("a", [0])  # an equal but distinct object is fine


def test_get_stats_keys_and_figures() -> None:
    pool: MemoryPool[int] = MemoryPool(max_size=4)
    pool.put("x", 1001)
    pool.put("x", 1002)
    pool.put("y", 1003)
    pool.get("x")
    pool.get("missing")
    stats = pool.get_stats()
    assert stats == {
        "max_size": 4,
        "total_objects": 2,
        "peak_objects": 3,
        "utilization": 0.5,
        "pools": {"x": 1, "y": 1},
        "hits": 1,
        "misses": 1,
        "hit_rate": 0.5,
        "puts": 3,
        "rejected": 0,
    }


def test_clear_all_or_one_key() -> None:
    pool: MemoryPool[list[int]] = MemoryPool()
    for i in range(3):
        pool.put("a", [i])
    pool.put("b", [9])
    assert pool.clear("a") == 3
    assert pool.clear("nope") == 0
    assert pool.clear() == 1
    assert len(pool) == 0 and pool.get_stats()["pools"] == {}


@pytest.mark.parametrize(
    ("value", "exc"), [(0, ValueError), (-5, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_max_size(value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="max_size"):
        MemoryPool(max_size=value)


def test_unhashable_key_is_a_type_error() -> None:
    pool: MemoryPool[int] = MemoryPool()
    with pytest.raises(TypeError, match="key must be hashable"):
        pool.put(["k"], 1)  # type: ignore[arg-type]
    assert len(pool) == 0


def test_threads_never_lose_or_duplicate_objects() -> None:
    pool: MemoryPool[list[int]] = MemoryPool(max_size=1000)
    objs = [[i] for i in range(200)]
    for obj in objs:
        pool.put("k", obj)
    taken: list[list[int]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2000):
            obj = pool.get("k")
            if obj is not None:
                with lock:
                    taken.append(obj)
                pool.put("k", obj)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    remaining: list[list[int]] = []
    while (left := pool.get("k")) is not None:
        remaining.append(left)
    assert sorted(id(o) for o in remaining) == sorted(id(o) for o in objs)
    assert taken
