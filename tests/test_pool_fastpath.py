"""Property test of ObjectPool's uncontended paths against a model.

``PoolLease.__await__`` and ``ObjectPool.release`` carry inlined copies of the
core's fast paths; this drives whole pools (fast path on and off) through
random single-task sequences of acquires, releases and misuse, and checks every
statistic against a plain model after each step.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memwarden import pool as pool_module
from memwarden.errors import PoolError, PoolExhaustedError
from memwarden.pool import ObjectPool

# (name, pool keyword arguments): the first takes both fast paths, the others
# turn one or both off.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("simple", {}),
    ("min_size", {"min_size": 2}),
    ("reset", {"reset": lambda obj: None}),
    ("validate", {"validate": lambda obj: True}),
    ("lifetime", {"max_lifetime": 1e9}),
]

OPS = st.lists(
    st.one_of(
        st.just(("await",)),
        st.just(("with",)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("twice"), st.integers(0, 7)),
        st.just(("foreign",)),
        st.just(("trim",)),
        st.just(("keep",)),
        st.tuples(st.just("use_kept"), st.integers(0, 7)),
    ),
    max_size=40,
)


async def _run(config: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    made: list[list[int]] = []

    def factory() -> list[int]:
        obj = [len(made)]
        made.append(obj)
        return obj

    pool: ObjectPool[list[int]] = ObjectPool(factory, max_size=4, **config)
    held: list[list[int]] = []
    released_objs: list[list[int]] = []
    kept: list[Any] = []  # leases taken and not yet used: never handed out again
    acquired = released = peak = 0

    def check() -> None:
        stats = pool.stats()
        assert stats.in_use == len(held)
        assert stats.acquired == acquired and stats.released == released
        assert stats.in_use_peak == peak
        assert stats.size == stats.idle + stats.in_use <= 4
        assert len({id(o) for o in held}) == len(held), "an object was lent twice"

    for op in ops:
        kind = op[0]
        if kind in ("await", "with"):
            if len(held) == 4:
                with pytest.raises(PoolExhaustedError):
                    await pool.acquire(timeout=0)
                continue
            if kind == "await":
                obj = await pool.acquire()
                acquired += 1
                held.append(obj)
                peak = max(peak, len(held))
            else:
                async with pool.acquire() as obj:
                    acquired += 1
                    held.append(obj)
                    peak = max(peak, len(held))
                    check()
                    held.remove(obj)
                released += 1
                released_objs.append(obj)
        elif kind == "release" and held:
            obj = held.pop(op[1] % len(held))
            await pool.release(obj)
            released += 1
            released_objs.append(obj)
        elif kind == "twice" and released_objs:
            obj = released_objs[op[1] % len(released_objs)]
            if not any(o is obj for o in held):
                with pytest.raises(PoolError):
                    await pool.release(obj)
        elif kind == "foreign":
            with pytest.raises(PoolError):
                await pool.release([0])
        elif kind == "trim":
            await pool.trim(0)
        elif kind == "keep":
            kept.append(pool.acquire())
            assert all(a is not b for i, a in enumerate(kept) for b in kept[i + 1 :])
        elif kind == "use_kept" and kept and len(held) < 4:
            async with kept.pop(op[1] % len(kept)) as obj:
                acquired += 1
                peak = max(peak, len(held) + 1)
            released += 1
            released_objs.append(obj)
        check()
    for obj in held:
        await pool.release(obj)
    await pool.aclose()


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[c[0] for c in CONFIGS])
@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_uncontended_paths_match_the_model(name: str, config: dict[str, Any], ops: Any) -> None:
    asyncio.run(_run(config, ops))


class _Conn:
    """A weak-referenceable pooled object."""


async def test_the_last_lent_object_is_not_kept_alive_once_destroyed() -> None:
    pool: ObjectPool[_Conn] = ObjectPool(_Conn, max_size=2)
    obj = await pool.acquire()
    await pool.release(obj)
    ref = weakref.ref(obj)
    del obj
    assert await pool.trim(0) == 1
    assert ref() is None, "the pool still references a trimmed object"
    await pool.aclose()


async def test_release_by_identity_rejects_an_equal_foreign_object() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=2)
    obj = await pool.acquire()
    with pytest.raises(PoolError):
        await pool.release([0])  # equal to the last lent object, not it
    await pool.release(obj)
    with pytest.raises(PoolError):
        await pool.release(obj)  # the last lent object, already back
    assert pool.stats().released == 1
    await pool.aclose()


async def test_a_lease_is_single_use() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=2)
    lease = pool.acquire()
    obj = await lease
    with pytest.raises(PoolError, match="already used"):
        await lease
    with pytest.raises(PoolError, match="already used"):
        async with lease:
            pass
    await pool.release(obj)
    entered = pool.acquire()
    async with entered:
        pass
    with pytest.raises(PoolError, match="already used"):
        async with entered:
            pass
    timed = pool.acquire(timeout=1.0)
    await pool.release(await timed)
    with pytest.raises(PoolError, match="already used"):
        await timed
    stats = pool.stats()
    assert stats.in_use == 0 and stats.acquired == stats.released == 3
    await pool.aclose()


async def test_a_lease_someone_holds_is_never_handed_out_again() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=2)
    kept = pool.acquire()
    for _ in range(3):
        lease = pool.acquire()
        assert lease is not kept
        await pool.release(await lease)
        del lease
    async with kept as obj:
        assert pool.stats().in_use == 1
    assert obj is not None and pool.stats().in_use == 0
    await pool.aclose()


@pytest.mark.skipif(not pool_module._RECYCLE_LEASES, reason="recycled on CPython 3.11-3.13 only")
async def test_a_spent_lease_nobody_holds_is_reused() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=2)
    lease = pool.acquire()
    first = id(lease)
    await pool.release(await lease)
    del lease
    again = pool.acquire()
    assert id(again) == first
    async with again:
        pass
    await pool.aclose()


async def test_a_used_pool_is_freed_without_the_cycle_collector() -> None:
    gc.disable()
    try:
        pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=2)
        await pool.release(await pool.acquire())
        async with pool.acquire():
            pass
        with pytest.raises(ValueError, match="timeout"):
            pool.acquire(timeout=-1.0)
        ref = weakref.ref(pool)
        del pool
        assert ref() is None, "a spent lease still refers to its pool"
    finally:
        gc.enable()


def _assert_nothing_held(pool: ObjectPool[Any], *, in_use: int) -> None:
    stats = pool.stats()
    assert stats.waiters == 0 and stats.pending == 0 and stats.in_use == in_use, stats


async def test_cancelled_async_with_entry_leaks_nothing_and_spends_the_lease() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=1)
    held = await pool.acquire()
    lease = pool.acquire()
    with anyio.move_on_after(0) as scope:
        async with lease:
            pytest.fail("entered without an object to give")
    assert scope.cancelled_caught
    _assert_nothing_held(pool, in_use=1)
    with pytest.raises(PoolError, match="already used"):
        await lease
    await pool.release(held)
    _assert_nothing_held(pool, in_use=0)
    await pool.aclose()


async def test_timed_out_async_with_entry_leaks_nothing_and_holds_no_pool() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(lambda: [0], max_size=1)
    held = await pool.acquire()
    lease = pool.acquire(timeout=0)
    with pytest.raises(PoolExhaustedError):
        async with lease:
            pytest.fail("entered without an object to give")
    assert pool.stats().timeouts == 1
    _assert_nothing_held(pool, in_use=1)
    # The exception's traceback may keep the pool's frames around until the
    # collector runs; the lease itself must let go of the pool at once.
    assert not any(ref is pool for ref in gc.get_referents(lease))
    with pytest.raises(PoolError, match="already used"):
        await lease
    await pool.release(held)
    _assert_nothing_held(pool, in_use=0)
    await pool.aclose()
