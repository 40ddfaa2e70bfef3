"""Hypothesis state machine over the synchronous pool core (memwarden._pool_core),
and a model check of whole pools.

The machine plays every caller of the core: acquirers that are granted an
object, a creation slot or a place in the queue; factories that succeed, fail
or are cancelled; waiters that are woken or cancelled; releases with and
without a reset step; validation failures; trim, reap and close. After every
step it checks the invariants the async layer relies on.

The model check drives real pools (each configuration, on asyncio and trio)
through random single-task sequences of acquires, releases and misuse, and
compares every statistic with a plain count after each step.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from memwarden._pool_core import (
    CHECK,
    CLOSE,
    CREATE,
    LENT,
    PARK,
    RESET,
    RETURNED,
    Entry,
    PoolCore,
    Waiter,
)
from memwarden.errors import PoolClosedError, PoolError, PoolExhaustedError
from memwarden.pool import ObjectPool


class _Flag:
    """Stands in for an event: records that the core woke the waiter."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        assert not self.is_set, "a waiter was woken twice"
        self.is_set = True


class PoolCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: PoolCore[list[int]]
        self.now = 0.0
        self.serial = 0
        self.held: list[list[int]] = []  # objects user code holds (in_use)
        self.granted: list[Entry[list[int]]] = []  # in checking, not yet claimed
        self.creating = 0  # creation slots handed to a caller
        self.parked: list[tuple[Waiter[list[int]], _Flag]] = []
        self.closing = 0  # background closes started and not finished
        self.resetting: list[Entry[list[int]]] = []
        self.acquires = 0
        self.releases = 0
        self.in_use_seen = 0  # the highest in-use count seen after any step

    @initialize(
        max_size=st.integers(1, 5),
        min_size=st.integers(0, 5),
        lifetime=st.sampled_from([None, 5.0]),
        idle_time=st.sampled_from([None, 3.0]),
        validates=st.booleans(),
        resets=st.booleans(),
    )
    def setup(
        self,
        max_size: int,
        min_size: int,
        lifetime: float | None,
        idle_time: float | None,
        validates: bool,
        resets: bool,
    ) -> None:
        self.core = PoolCore(
            max_size,
            min(min_size, max_size),
            max_lifetime=lifetime,
            max_idle_time=idle_time,
            lifetime_jitter=0.2,
            rng=random.Random(0),
            validates=validates,
            resets=resets,
        )

    def _new_obj(self) -> list[int]:
        self.serial += 1
        return [self.serial]

    def _take_grant(self, waiter: Waiter[list[int]]) -> None:
        """Act as the woken waiter."""
        if waiter.error is not None:
            assert isinstance(waiter.error, PoolClosedError)
        else:
            self._take(waiter.kind, waiter.entry)

    def _take(self, kind: int, entry: Entry[list[int]] | None) -> None:
        """Act as an acquirer that was given ``kind``."""
        if kind == LENT:
            assert entry is not None and entry.held and not self.core.validates
            self.held.append(entry.obj)
            self.acquires += 1
        elif kind == CHECK:
            assert entry is not None and entry.key in self.core.checking
            assert self.core.validates
            self.granted.append(entry)
        else:
            assert kind == CREATE and entry is None
            self.creating += 1

    def _collect_woken(self) -> None:
        for pair in [p for p in self.parked if p[1].is_set]:
            self.parked.remove(pair)
            self._take_grant(pair[0])

    # -- acquire -----------------------------------------------------------------------

    @rule(cancelled=st.booleans())
    def acquire(self, cancelled: bool) -> None:
        """An acquire; ``cancelled``: its checkpoint after an immediate grant raises."""
        core = self.core
        if core.closed:
            with pytest.raises(PoolClosedError):
                core.acquire_nowait(self.now)
            return
        had_waiters = bool(core.waiters)
        kind, entry, expired = core.acquire_nowait(self.now)
        for e in expired:
            assert e.expires_at is not None and e.expires_at <= self.now
        if kind == PARK:
            assert had_waiters or (not core.idle and core.size + core.pending == core.max_size)
            flag = _Flag()
            waiter: Waiter[list[int]] = Waiter(flag.set)
            core.park(waiter)
            self.parked.append((waiter, flag))
        elif cancelled:
            assert not had_waiters  # no barging
            self.in_use_seen = max(self.in_use_seen, core.in_use)
            core.give_back(kind, entry, self.now)
            self._collect_woken()
        else:
            assert not had_waiters  # no barging
            self._take(kind, entry)

    @precondition(lambda self: self.granted)
    @rule(data=st.data(), ok=st.booleans())
    def finish_check(self, data: st.DataObject, ok: bool) -> None:
        entry = self.granted.pop(data.draw(st.integers(0, len(self.granted) - 1)))
        if ok:
            self.core.claim(entry, self.now)
            self.held.append(entry.obj)
            self.acquires += 1
            return
        assert self.core.reject(entry)
        if self.core.closed:
            with pytest.raises(PoolClosedError):
                self.core.retry(self.now)
            return
        kind, nxt, _ = self.core.retry(self.now)
        assert kind in (CHECK, CREATE)
        self._take(kind, nxt)

    @precondition(lambda self: self.granted)
    @rule(data=st.data())
    def give_back_grant(self, data: st.DataObject) -> None:
        entry = self.granted.pop(data.draw(st.integers(0, len(self.granted) - 1)))
        self.core.unclaim(entry, self.now)
        self._collect_woken()

    # -- creation ----------------------------------------------------------------------

    @precondition(lambda self: self.creating)
    @rule(outcome=st.sampled_from(["ok", "fail", "abort"]))
    def finish_creation(self, outcome: str) -> None:
        self.creating -= 1
        core = self.core
        if outcome == "ok":
            entry = core.add_created(self._new_obj(), self.now)
            if entry is not None:
                assert entry.held
                self.held.append(entry.obj)
                self.acquires += 1
        elif outcome == "fail":
            core.creation_failed()
        else:
            core.creation_aborted()
        self._collect_woken()

    @rule()
    def fill_one(self) -> None:
        if self.core.reserve_fill():
            self.core.add_created_idle(self._new_obj(), self.now)
            self._collect_woken()

    @precondition(lambda self: self.core.idle)
    @rule()
    def factory_returns_pooled_object(self) -> None:
        if not self.core.reserve_fill():
            return
        with pytest.raises(PoolError):
            self.core.add_created_idle(self.core.idle[0].obj, self.now)
        self._collect_woken()

    # -- waiters -----------------------------------------------------------------------

    @precondition(lambda self: self.parked)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        waiter, _ = self.parked.pop(data.draw(st.integers(0, len(self.parked) - 1)))
        self.core.cancel_waiter(waiter, self.now)
        assert waiter not in self.core.waiters
        assert self.core.cancel_waiter(waiter, self.now) is None  # idempotent
        self._collect_woken()

    # -- release -----------------------------------------------------------------------

    def _release(self, obj: list[int]) -> None:
        core = self.core
        kind, entry = core.release_nowait(obj, self.now)
        self.releases += 1
        if kind == RESET:
            assert entry is not None and core.resets and not core.closed
            self.resetting.append(entry)
        elif kind == CLOSE:
            assert entry is not None and not core.owns(obj)
            self.closing += 1
            core.closing_started()
        else:
            assert kind == RETURNED and entry is None
        self._collect_woken()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._release(self.held.pop(data.draw(st.integers(0, len(self.held) - 1))))

    @precondition(lambda self: self.closing)
    @rule()
    def background_close_finished(self) -> None:
        self.closing -= 1
        self.core.closing_finished()

    @precondition(lambda self: self.resetting)
    @rule(data=st.data(), ok=st.booleans())
    def finish_reset(self, data: st.DataObject, ok: bool) -> None:
        entry = self.resetting.pop(data.draw(st.integers(0, len(self.resetting) - 1)))
        if ok:
            self.core.finish_return(entry, self.now)
        else:
            self.core.discard(entry)
        self._collect_woken()

    @rule()
    def release_foreign(self) -> None:
        with pytest.raises(PoolError):
            self.core.release_nowait([-1], self.now)

    @precondition(lambda self: self.held)
    @rule()
    def release_twice(self) -> None:
        obj = self.held.pop()
        self._release(obj)
        if self.core.closed or not self.core.owns(obj) or any(o is obj for o in self.held):
            return
        with pytest.raises(PoolError, match="already released"):
            self.core.release_nowait(obj, self.now)

    # -- maintenance -----------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.5, 2.0, 4.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(keep=st.integers(0, 5))
    def trim(self, keep: int) -> None:
        before = self.core.size
        removed = self.core.trim(keep)
        assert self.core.size == before - len(removed)
        assert not removed or self.core.size >= keep

    @rule()
    def reap(self) -> None:
        core = self.core
        removed = core.reapable(self.now)
        for entry in removed:
            expired = entry.expires_at is not None and entry.expires_at <= self.now
            stale = (
                core.max_idle_time is not None and self.now - entry.idle_since >= core.max_idle_time
            )
            assert expired or stale
        if any(e.expires_at is None or e.expires_at > self.now for e in removed):
            assert core.size >= core.min_size

    @rule()
    def close(self) -> None:
        self.core.close()
        self._collect_woken()
        assert not self.parked

    @precondition(lambda self: self.core.closed)
    @rule()
    def force_close(self) -> None:
        self.core.force_close()
        for obj in self.held:
            # late release: a quiet no-op
            assert self.core.release_nowait(obj, self.now) == (RETURNED, None)
        self.releases += len(self.held)
        self.held.clear()
        self.granted.clear()
        self.resetting.clear()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def capacity_never_exceeded(self) -> None:
        core = self.core
        assert core.size + core.pending <= core.max_size
        assert core.pending == self.creating

    @invariant()
    def states_are_disjoint(self) -> None:
        core = self.core
        idle = [id(e.obj) for e in core.idle]
        assert len(idle) == len(set(idle))
        in_use = [e.key for e in core.held_entries()]
        tables: list[Any] = [set(idle), set(core.checking), set(in_use), set(core.returning)]
        for i, a in enumerate(tables):
            for b in tables[i + 1 :]:
                assert not (a & b)

    @invariant()
    def registry_is_exactly_the_objects_that_exist(self) -> None:
        core = self.core
        for key, entry in core.entries.items():
            assert key == entry.key == id(entry.obj)
        states: dict[int, Any] = {id(e.obj): e for e in core.idle}
        states.update(core.checking)
        states.update(core.returning)
        states.update((e.key, e) for e in core.held_entries())
        assert states.keys() == core.entries.keys()
        assert all(states[k] is e for k, e in core.entries.items())
        # Only in-use entries are held; idle, checking and returning ones are not.
        for entry in [*core.idle, *core.checking.values(), *core.returning.values()]:
            assert not entry.held
        assert core.in_use == len(core.held_entries())
        # The held objects are exactly those user code holds.
        assert sorted(e.key for e in core.held_entries()) == sorted(id(o) for o in self.held)
        for obj in self.held:
            assert core.owns(obj)

    @invariant()
    def acquired_minus_released_is_in_use(self) -> None:
        assert self.acquires - self.releases == self.core.in_use + len(self.core.force_closed)
        assert self.core.acquired - self.core.released == self.core.in_use

    @invariant()
    def objects_are_conserved(self) -> None:
        core = self.core
        assert core.created - core.destroyed == core.size

    @invariant()
    def waiters_only_when_nothing_to_give(self) -> None:
        core = self.core
        if core.waiters:
            assert not core.idle
            assert core.size + core.pending == core.max_size
            assert not core.closed

    @invariant()
    def closed_pool_holds_nothing_idle(self) -> None:
        if self.core.closed:
            assert not self.core.idle and not self.core.waiters

    @invariant()
    def peaks_bound_current(self) -> None:
        core = self.core
        assert core.in_use_peak >= core.in_use
        # Exact, not just an upper bound: no step lends an object and takes one
        # back within itself, so the peak is the highest count seen between steps.
        self.in_use_seen = max(self.in_use_seen, core.in_use)
        assert core.in_use_peak == self.in_use_seen
        assert core.waiters_peak >= len(core.waiters)
        assert core.closing == self.closing and core.closing_peak >= core.closing


TestPoolCore = PoolCoreMachine.TestCase


def test_lifetime_jitter_spreads_and_bounds_expiry() -> None:
    core: PoolCore[list[int]] = PoolCore(
        100, max_lifetime=100.0, lifetime_jitter=0.1, rng=random.Random(7)
    )
    expiries = []
    for i in range(50):
        core.acquire_nowait(0.0)
        entry = core.add_created([i], 0.0)
        assert entry is not None
        assert entry.expires_at is not None
        expiries.append(entry.expires_at)
    assert all(90.0 <= e <= 100.0 for e in expiries)
    assert len(set(expiries)) == len(expiries)
    assert max(expiries) - min(expiries) > 5.0


# -- whole pools against a model ----------------------------------------------------------

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("min_size", {"min_size": 2}),
    ("reset", {"reset": lambda obj: None}),
    ("validate", {"validate": lambda obj: True}),
    ("lifetime", {"max_lifetime": 1e9}),
    ("fast_acquire", {"fast_acquire": True}),
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
    max_size=30,
)


async def _run_model(config: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    made: list[list[int]] = []

    def factory() -> list[int]:
        obj = [len(made)]
        made.append(obj)
        return obj

    pool: ObjectPool[list[int]] = ObjectPool(factory, max_size=4, **config)
    held: list[list[int]] = []
    released_objs: list[list[int]] = []
    kept: list[Any] = []  # leases taken and not yet used
    acquired = released = peak = 0

    def check() -> None:
        stats = pool.stats()
        assert stats.in_use == len(held)
        assert stats.acquired == acquired and stats.released == released
        assert stats.in_use_peak == peak
        assert stats.size == stats.idle + stats.in_use <= 4
        assert stats.waiters == stats.pending == 0
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


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[c[0] for c in CONFIGS])
@settings(max_examples=30, deadline=None)
@given(ops=OPS)
def test_whole_pools_match_the_model(
    backend: str, name: str, config: dict[str, Any], ops: Any
) -> None:
    anyio.run(_run_model, config, ops, backend=backend)
