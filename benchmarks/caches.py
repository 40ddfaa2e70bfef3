"""The ``caches`` suite: LRUCache / memoize speed against cachetools, functools and
async-lru, and hit ratios of ``lru`` and ``tinylfu`` on synthetic traces.

Run with ``python -m benchmarks caches`` (``--quick`` for a smoke run). Key
streams are generated with a fixed seed (as Caffeine's simulator does), so the
hit ratios are reproducible; timings interleave ours and the peer round by
round and report the median of the per-round ratios.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
import timeit
from collections.abc import Callable, Sequence

import anyio
import cachetools
import numpy as np
from async_lru import alru_cache

from benchmarks._harness import Row, paired_ratios, speed_row
from memwarden.cache import LRUCache, memoize

SEED = 20240601


def zipf_keys(n: int, exponent: float, universe: int, seed: int = SEED) -> list[int]:
    """``n`` keys drawn from a Zipf(``exponent``) law over ``universe`` keys, ranks scrambled."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, universe + 1, dtype=np.float64) ** exponent
    weights /= weights.sum()
    ranks = rng.choice(universe, size=n, p=weights)
    # Scramble so that popular keys are not the small integers (YCSB's ScrambledZipfian).
    scramble = rng.permutation(universe) * 7919 + 1_000_003
    return [int(k) for k in scramble[ranks]]


def zipf_with_scans(
    n: int, exponent: float, universe: int, scan_every: int, scan_length: int
) -> list[int]:
    """Zipf traffic with a sequential scan of never-seen keys every ``scan_every`` accesses."""
    base = zipf_keys(n, exponent, universe)
    out: list[int] = []
    next_scan_key = 10**12
    for start in range(0, len(base), scan_every):
        out.extend(base[start : start + scan_every])
        out.extend(range(next_scan_key, next_scan_key + scan_length))
        next_scan_key += scan_length
    return out


def loop_trace(n: int, length: int) -> list[int]:
    """A cyclic scan over ``length`` keys (LRU's worst case when length > capacity)."""
    return [i % length for i in range(n)]


# -- LRUCache get/put throughput ------------------------------------------------


def _ours_stream(
    keys: Sequence[int], capacity: int, *, thread_safe: bool = True, policy: str = "lru"
) -> Callable[[], float]:
    def run() -> float:
        cache: LRUCache[int, int] = LRUCache(
            capacity,
            thread_safe=thread_safe,
            policy=policy,  # type: ignore[arg-type]
        )
        get = cache.get
        put = cache.put
        start = time.perf_counter()
        for k in keys:
            if get(k) is None:
                put(k, k)
        return (time.perf_counter() - start) / len(keys)

    return run


def _cachetools_stream(
    keys: Sequence[int], capacity: int, *, lock: threading.Lock | None = None
) -> Callable[[], float]:
    """cachetools.LRUCache, bare or with ``lock`` held around each get and each put.

    With a lock it is what ``cachetools.cached(cache, lock=lock)`` does around
    its lookup and its store.
    """

    def run() -> float:
        cache: cachetools.LRUCache[int, int] = cachetools.LRUCache(capacity)
        get = cache.get
        start = time.perf_counter()
        if lock is None:
            for k in keys:
                if get(k) is None:
                    cache[k] = k
        else:
            for k in keys:
                with lock:
                    value = get(k)
                if value is None:
                    with lock:
                        cache[k] = k
        return (time.perf_counter() - start) / len(keys)

    return run


def lock_round_trip_ns() -> tuple[float, float]:
    """Best and median cost of one uncontended ``threading.RLock`` acquire/release, in ns."""
    lock = threading.RLock()
    names = {"acquire": lock.acquire, "release": lock.release}
    number = 200_000
    samples = []
    for _ in range(7):
        pair = timeit.timeit("acquire(); release()", globals=names, number=number)
        empty = timeit.timeit("pass", number=number)
        samples.append(max(pair - empty, 0.0) / number * 1e9)
    return min(samples), statistics.median(samples)


def _paired(runners: Sequence[Callable[[], float]], rounds: int) -> list[list[float]]:
    """One sample per runner per round, the runners back to back within each round."""
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for runner, bucket in zip(runners, samples, strict=True):
            bucket.append(runner())
    return samples


def _row(
    name: str,
    ours: list[float],
    peer: list[float],
    peer_name: str,
    target: float | None,
    notes: str = "",
) -> Row:
    ratio, q1, q3 = paired_ratios(ours, peer)
    spread = f"per-round ratios {q1:.2f}x to {q3:.2f}x (quartiles)"
    return speed_row(
        name,
        statistics.median(ours),
        statistics.median(peer),
        peer_name,
        target,
        ratio=ratio,
        notes=f"{notes}; {spread}" if notes else spread,
    )


def throughput_rows(quick: bool) -> list[Row]:
    """LRUCache get/put on Zipf(0.99) against cachetools.LRUCache at equal capacity."""
    n = 50_000 if quick else 200_000
    keys = zipf_keys(n, 0.99, 100_000)
    capacity = 2_000
    locked, unlocked, tiny, peer_locked, peer = _paired(
        [
            _ours_stream(keys, capacity),
            _ours_stream(keys, capacity, thread_safe=False),
            _ours_stream(keys, capacity, policy="tinylfu"),
            _cachetools_stream(keys, capacity, lock=threading.Lock()),
            _cachetools_stream(keys, capacity),
        ],
        5 if quick else 15,
    )
    hit_cache: LRUCache[int, int] = LRUCache(capacity)
    for k in keys:
        if hit_cache.get(k) is None:
            hit_cache.put(k, k)
    hit_rate = f"hit rate {hit_cache.stats().hit_rate:.0%}"
    lock_ns = (statistics.median(locked) - statistics.median(unlocked)) * 1e9
    best, typical = lock_round_trip_ns()
    return [
        _row(
            "LRUCache get/put, Zipf(0.99), capacity 2000, thread-safe (default)",
            locked,
            peer_locked,
            "cachetools.LRUCache + threading.Lock, as cached(lock=...)",
            1.2,
            notes=(
                f"{hit_rate}; the lock costs {lock_ns:.0f} ns per op here, one uncontended "
                f"RLock acquire/release {best:.0f} ns best, {typical:.0f} median"
            ),
        ),
        _row(
            "LRUCache get/put, Zipf(0.99), capacity 2000, thread_safe=False",
            unlocked,
            peer,
            "cachetools.LRUCache (no lock)",
            1.2,
            notes=hit_rate,
        ),
        _row(
            "LRUCache(policy='tinylfu') get/put, Zipf(0.99), capacity 2000, thread-safe",
            tiny,
            peer_locked,
            "cachetools.LRUCache + threading.Lock",
            None,
            notes="the price of the frequency sketch; reported, no target",
        ),
    ]


# -- memoize hits ------------------------------------------------------------


def _sync_hit_timer(fn: Callable[[int], int], args: Sequence[int]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for a in args:
            fn(a)
        return (time.perf_counter() - start) / len(args)

    return run


def memoize_rows(quick: bool) -> list[Row]:
    """Sync memoize hits against cachetools.cached (with its lock and info, and bare)."""
    args = list(range(256)) * (100 if quick else 600)

    @memoize(capacity=1024)
    def ours(x: int) -> int:
        return x * 2

    @memoize(capacity=1024, thread_safe=False)
    def ours_unlocked(x: int) -> int:
        return x * 2

    @cachetools.cached(cachetools.LRUCache(1024), lock=threading.RLock(), info=True)
    def ct_locked(x: int) -> int:
        return x * 2

    @cachetools.cached(cachetools.LRUCache(1024), info=True)
    def ct(x: int) -> int:
        return x * 2

    @functools.lru_cache(maxsize=1024)
    def ft(x: int) -> int:
        return x * 2

    fns = (ours, ours_unlocked, ct_locked, ct, ft)
    for fn in fns:
        for a in range(256):
            fn(a)
    o, u, cl, c, f = _paired([_sync_hit_timer(fn, args) for fn in fns], 5 if quick else 15)
    return [
        _row(
            "memoize sync hit, thread-safe (default)",
            o,
            cl,
            "cachetools.cached(lock=RLock(), info=True)",
            1.0,
        ),
        _row(
            "memoize sync hit, thread_safe=False",
            u,
            c,
            "cachetools.cached(info=True), no lock",
            1.0,
        ),
        _row(
            "memoize sync hit, thread-safe (default)",
            o,
            f,
            "functools.lru_cache",
            None,
            notes="lru_cache is C; reported, no target",
        ),
    ]


def async_memoize_rows(quick: bool) -> list[Row]:
    """Async memoize hits against async_lru.alru_cache."""
    args = list(range(256)) * (40 if quick else 300)

    @memoize(capacity=1024)
    async def ours(x: int) -> int:
        return x * 2

    @alru_cache(maxsize=1024)
    async def peer(x: int) -> int:
        return x * 2

    async def measure() -> tuple[list[float], list[float]]:
        for a in range(256):
            await ours(a)
            await peer(a)

        async def timed(fn: Callable[[int], object]) -> float:
            start = time.perf_counter()
            for a in args:
                await fn(a)  # type: ignore[misc]
            return (time.perf_counter() - start) / len(args)

        a_s: list[float] = []
        b_s: list[float] = []
        for _ in range(5 if quick else 15):
            a_s.append(await timed(ours))
            b_s.append(await timed(peer))
        return a_s, b_s

    o, p = anyio.run(measure, backend="asyncio")
    return [_row("memoize async hit (asyncio)", o, p, "async_lru.alru_cache", 1.0)]


# -- hit ratios --------------------------------------------------------------


def _hit_ratio_ours(keys: Sequence[int], capacity: int, policy: str) -> float:
    cache: LRUCache[int, int] = LRUCache(capacity, policy=policy)  # type: ignore[arg-type]
    get = cache.get
    put = cache.put
    for k in keys:
        if get(k) is None:
            put(k, k)
    return cache.stats().hit_rate * 100


def _hit_ratio_cachetools(keys: Sequence[int], capacity: int) -> float:
    cache: cachetools.LRUCache[int, int] = cachetools.LRUCache(capacity)
    hits = 0
    for k in keys:
        if cache.get(k) is None:
            cache[k] = k
        else:
            hits += 1
    return hits / len(keys) * 100


def hit_ratio_rows(quick: bool) -> list[Row]:
    """Hit ratio of lru and tinylfu against cachetools.LRUCache on four traces."""
    n = 60_000 if quick else 300_000
    capacity = 1_000
    traces = {
        "Zipf(0.8)": (zipf_keys(n, 0.8, 50_000), "never > 1 point below LRU"),
        "Zipf(0.99)": (zipf_keys(n, 0.99, 50_000), "never > 1 point below LRU"),
        "Zipf(0.99) + scans": (
            zipf_with_scans(n, 0.99, 50_000, scan_every=5_000, scan_length=2_000),
            ">= LRU + 5 points",
        ),
        "loop (1.5x capacity)": (loop_trace(n, capacity * 3 // 2), "report"),
    }
    rows: list[Row] = []
    for label, (keys, target) in traces.items():
        peer = _hit_ratio_cachetools(keys, capacity)
        lru = _hit_ratio_ours(keys, capacity, "lru")
        tiny = _hit_ratio_ours(keys, capacity, "tinylfu")
        for policy, ours in (("lru", lru), ("tinylfu", tiny)):
            diff = ours - peer
            if policy == "lru":
                met: bool | None = abs(diff) < 0.01
                row_target = "= cachetools LRU"
            elif target.startswith(">="):
                met = ours - lru >= 5.0
                row_target = target
            elif target.startswith("never"):
                met = ours - lru >= -1.0
                row_target = target
            else:
                met = None
                row_target = target
            rows.append(
                Row(
                    name=f"hit ratio {policy}, {label}, capacity {capacity}",
                    ours=ours,
                    peer=peer,
                    unit="% hits",
                    peer_name="cachetools.LRUCache",
                    ratio=ours / peer if peer else float("inf"),
                    target=row_target,
                    met=met,
                    notes=f"{diff:+.1f} points vs cachetools LRU, {ours - lru:+.1f} vs our lru",
                )
            )
    return rows


def main(quick: bool = False) -> list[Row]:
    """Run the whole caches suite and return its rows."""
    rows: list[Row] = []
    rows.extend(throughput_rows(quick))
    rows.extend(memoize_rows(quick))
    rows.extend(async_memoize_rows(quick))
    rows.extend(hit_ratio_rows(quick))
    return rows
