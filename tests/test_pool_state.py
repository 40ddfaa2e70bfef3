"""Hypothesis state machine over the synchronous pool core (memwarden._pool_core).

The machine plays every caller of the core: acquirers that are granted an
object, a creation slot or a place in the queue; factories that succeed, fail
or are cancelled; waiters that are woken or cancelled; releases with and
without a reset step; validation failures; trim, reap and close. After every
step it checks the invariants the async layer relies on.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from memwarden._pool_core import (
    _NO_ENTRY,
    GRANT_CREATE,
    GRANT_OBJECT,
    MISSING,
    PARK,
    Entry,
    PoolCore,
    Waiter,
)
from memwarden.errors import PoolClosedError, PoolError


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
        self.parked: list[Waiter[list[int]]] = []
        self.resetting: list[Entry[list[int]]] = []
        self.acquires = 0
        self.releases = 0
        self.in_use_seen = 0  # the highest in-use count seen after any step

    @initialize(
        max_size=st.integers(1, 5),
        min_size=st.integers(0, 5),
        lifetime=st.sampled_from([None, 5.0]),
        idle_time=st.sampled_from([None, 3.0]),
        claim_needed=st.booleans(),
    )
    def setup(
        self,
        max_size: int,
        min_size: int,
        lifetime: float | None,
        idle_time: float | None,
        claim_needed: bool,
    ) -> None:
        self.core = PoolCore(
            max_size,
            min(min_size, max_size),
            max_lifetime=lifetime,
            max_idle_time=idle_time,
            lifetime_jitter=0.2,
            rng=random.Random(0),
            claim_needed=claim_needed,
        )

    def _new_obj(self) -> list[int]:
        self.serial += 1
        return [self.serial]

    def _take_grant(self, waiter: Waiter[list[int]]) -> None:
        """Act as the woken waiter."""
        if waiter.error is not None:
            assert isinstance(waiter.error, PoolClosedError)
        elif waiter.entry is not None:
            if self.core.claim_needed:
                self.granted.append(waiter.entry)
            else:
                self.held.append(waiter.entry.obj)
                self.acquires += 1
        else:
            assert waiter.create
            self.creating += 1

    def _collect_woken(self) -> None:
        for waiter in [w for w in self.parked if w.event.is_set]:  # type: ignore[attr-defined]
            self.parked.remove(waiter)
            self._take_grant(waiter)

    # -- acquire -----------------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        core = self.core
        if core.closed:
            with pytest.raises(PoolClosedError):
                core.acquire(self.now)
            return
        kind, entry, expired = core.acquire(self.now)
        for e in expired:
            assert e.expires_at is not None and e.expires_at <= self.now
        if kind == GRANT_OBJECT:
            assert entry is not None
            self.granted.append(entry)
        elif kind == GRANT_CREATE:
            self.creating += 1
        else:
            assert kind == PARK
            waiter: Waiter[list[int]] = Waiter(_Flag(), self.now)
            core.park(waiter)
            self.parked.append(waiter)

    @rule()
    def take_fast(self) -> None:
        core = self.core
        if core.max_lifetime is not None or core.claim_needed or core.closed:
            return
        obj = core.take_idle_nowait()
        if obj is MISSING:
            assert not core.idle or core.waiters
        else:
            self.held.append(obj)
            self.acquires += 1

    @precondition(lambda self: self.granted)
    @rule(data=st.data(), ok=st.booleans())
    def finish_check(self, data: st.DataObject, ok: bool) -> None:
        entry = self.granted.pop(data.draw(st.integers(0, len(self.granted) - 1)))
        if ok:
            self.core.claim(entry, self.now)
            self.held.append(entry.obj)
            self.acquires += 1
            return
        if self.core.closed:
            with pytest.raises(PoolClosedError):
                self.core.reject(entry, self.now)
            return
        kind, nxt, _ = self.core.reject(entry, self.now)
        assert kind in (GRANT_OBJECT, GRANT_CREATE)
        if kind == GRANT_OBJECT:
            assert nxt is not None
            self.granted.append(nxt)
        else:
            self.creating += 1

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
                if core.claim_needed:
                    self.granted.append(entry)
                else:
                    core.claim(entry, self.now)
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

    @rule()
    def park_fast(self) -> None:
        core = self.core
        if core.max_lifetime is not None or core.claim_needed:
            return
        before = len(core.waiters)
        waiter = core.park_if_busy(lambda: Waiter[list[int]](_Flag(), self.now))
        if waiter is None:
            assert core.closed or (
                not core.waiters and (core.idle or core.size + core.pending < core.max_size)
            )
            return
        assert not core.closed and core.waiters[-1] is waiter
        assert len(core.waiters) == before + 1 and core.waiters_peak >= before + 1
        self.parked.append(waiter)

    # -- waiters -----------------------------------------------------------------------

    @precondition(lambda self: self.parked)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        waiter = self.parked.pop(data.draw(st.integers(0, len(self.parked) - 1)))
        self.core.cancel_waiter(waiter, self.now)
        assert waiter not in self.core.waiters
        self._collect_woken()

    # -- release -----------------------------------------------------------------------

    @precondition(lambda self: self.held)
    @rule(data=st.data(), nowait=st.booleans())
    def release(self, data: st.DataObject, nowait: bool) -> None:
        obj = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        core = self.core
        self.releases += 1
        simple = core.max_lifetime is None and core.max_idle_time is None
        if nowait and simple and not core.closed:
            # What ObjectPool.release does on its fast path.
            entry = core.entries[id(obj)]
            assert entry.obj is obj and entry.held
            core.hand_back(entry)
        else:
            core.release(obj, self.now)
        self._collect_woken()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def begin_reset(self, data: st.DataObject) -> None:
        obj = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        entry = self.core.begin_return(obj)
        assert entry is not None
        self.releases += 1
        self.resetting.append(entry)

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
            self.core.release([-1], self.now)

    @precondition(lambda self: self.held)
    @rule()
    def release_twice(self) -> None:
        obj = self.held.pop()
        self.core.release(obj, self.now)
        self.releases += 1
        self._collect_woken()
        if self.core.closed or not self.core.owns(obj) or any(o is obj for o in self.held):
            return
        with pytest.raises(PoolError, match="already released"):
            self.core.release(obj, self.now)

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
            assert self.core.release(obj, self.now) is None  # late release: quiet no-op
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
        # The fast path's last-lent entry is a live registered one, or none.
        if core.last is not _NO_ENTRY:
            assert core.entries.get(core.last.key) is core.last

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


TestPoolCore = PoolCoreMachine.TestCase


def test_lifetime_jitter_spreads_and_bounds_expiry() -> None:
    core: PoolCore[list[int]] = PoolCore(
        100, max_lifetime=100.0, lifetime_jitter=0.1, rng=random.Random(7)
    )
    expiries = []
    for i in range(50):
        core.acquire(0.0)
        entry = core.add_created([i], 0.0)
        assert entry is not None
        assert entry.expires_at is not None
        expiries.append(entry.expires_at)
    assert all(90.0 <= e <= 100.0 for e in expiries)
    assert len(set(expiries)) == len(expiries)
    assert max(expiries) - min(expiries) > 5.0
