"""deep_sizeof against the recursive ``sys.getsizeof`` walk people write by hand.

The peer is the widely copied recipe: recursion over ``dict`` items,
``__dict__`` and anything iterable, with an ``id`` set against cycles. Both
walk the same 100k-entry nested dict and return the same total (checked), so
the figure is the cost per object visited. Runs are interleaved ours/peer and
the median is reported.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks._harness import Row, speed_row, time_sync
from memwarden.sizeof import deep_sizeof


def _naive(obj: Any, seen: set[int] | None = None) -> int:
    size = sys.getsizeof(obj)
    if seen is None:
        seen = set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, dict):
        size += sum([_naive(v, seen) for v in obj.values()])
        size += sum([_naive(k, seen) for k in obj])
    elif hasattr(obj, "__dict__"):
        size += _naive(obj.__dict__, seen)
    elif hasattr(obj, "__iter__") and not isinstance(obj, str | bytes | bytearray):
        size += sum([_naive(i, seen) for i in obj])
    return size


def _data(n: int) -> dict[str, Any]:
    # Values are distinct objects (no None/bool), so both walks count the same bytes.
    return {
        f"user:{i}": {"id": i, "name": f"name-{i}", "tags": [i, i + 1, f"t{i}"], "score": i * 0.5}
        for i in range(n)
    }


def _objects(data: dict[str, Any]) -> int:
    seen: set[int] = set()
    stack: list[Any] = [data]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj)
            stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)
    return len(seen)


def rows(quick: bool) -> list[Row]:
    """deep_sizeof vs the naive recursive walk: one small value and a 100k-entry nested dict."""
    n = 10_000 if quick else 100_000
    repeat = 3 if quick else 7
    data = _data(n)
    objects = _objects(data)
    ours_total = deep_sizeof(data)
    peer_total = _naive(data)
    if ours_total != peer_total:
        raise AssertionError(f"totals differ: deep_sizeof {ours_total}, naive {peer_total}")
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        deep_sizeof(data)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        _naive(data)
        peer.append(time.perf_counter() - start)
    small = {"id": 12345, "name": "name-12345", "tags": [1, 2, "t"], "score": 0.5}
    if deep_sizeof(small) != _naive(small):
        raise AssertionError("totals differ on the small value")
    number = 2_000 if quick else 20_000
    small_ours: list[float] = []
    small_peer: list[float] = []
    for _ in range(repeat):
        small_ours.append(time_sync(lambda: deep_sizeof(small), number=number, repeat=1))
        small_peer.append(time_sync(lambda: _naive(small), number=number, repeat=1))
    return [
        speed_row(
            "deep_sizeof, one small dict (a typical cache value)",
            statistics.median(small_ours),
            statistics.median(small_peer),
            "recursive getsizeof",
            1.0,
            unit="µs/call",
            notes="4 keys, a 3-item list",
        ),
        speed_row(
            f"deep_sizeof, nested dict of {n:,} entries",
            statistics.median(ours) / objects,
            statistics.median(peer) / objects,
            "recursive getsizeof",
            1.0,
            unit="µs/object",
            notes=f"{objects:,} objects, {ours_total / 2**20:.1f} MiB",
        ),
    ]
