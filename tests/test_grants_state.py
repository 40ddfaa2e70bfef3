"""The grant ledger as a state machine, checked against a plain reference model.

Hypothesis drives random submissions (non-waiting and queueing), releases,
cancellations (including of a waiter already granted), timeouts, pressure
changes and explicit evictions. After every step the ledger must agree with
a slow, obviously-correct model on every request's state, the queue's service
order, what was evicted (and in which order) and who was woken; and the
invariants hold: used == sum of live bytes <= capacity, the queue's head can
never be served right now (no lost wake-up), evictions only hit strictly
lower-priority evictable allocations and never more than needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from memwarden._grants import ABANDONED, LIVE, PENDING, QUEUED, RELEASED, Ledger, Request
from memwarden.errors import MemoryAllocationError

CAPACITY = 100
KEYS = st.sampled_from([None, None, None, "a", "b", "c"])
SIZES = st.integers(min_value=0, max_value=CAPACITY)
PRIORITIES = st.sampled_from([0, 10, 50, 50, 100])


@dataclass
class Model:
    """Reference semantics, written for clarity rather than speed."""

    capacity: int
    used: int = 0
    peak: int = 0
    headroom: int | None = None
    state: dict[int, int] = field(default_factory=dict)
    live: list[Request] = field(default_factory=list)  # in grant order
    queue: list[Request] = field(default_factory=list)  # in service order
    evicted: list[Request] = field(default_factory=list)
    woken: list[Request] = field(default_factory=list)
    keys: dict[str, Request] = field(default_factory=dict)
    timeouts: int = 0
    cancelled: int = 0
    evictions: int = 0

    def _grant(self, request: Request) -> None:
        self.used += request.nbytes
        self.peak = max(self.peak, self.used)
        if self.headroom is not None:
            self.headroom = max(self.headroom - request.nbytes, 0)
        self.live.append(request)
        self.state[id(request)] = LIVE
        if request._key is not None:
            self.keys[request._key] = request

    def _drop(self, request: Request) -> None:
        self.used -= request.nbytes
        self.live.remove(request)
        self.state[id(request)] = RELEASED
        if request._key is not None and self.keys.get(request._key) is request:
            del self.keys[request._key]

    def _evict(self, victims: list[Request]) -> None:
        for victim in victims:
            self._drop(victim)
        self.evicted.extend(victims)
        self.evictions += len(victims)

    def _plan(self, nbytes: int, priority: int) -> list[Request] | None:
        need = self.used + nbytes - self.capacity
        eligible = [a for a in self.live if a.evictable and a.priority < priority and a.nbytes]
        if sum(a.nbytes for a in eligible) < need:
            return None
        eligible.sort(key=lambda a: (a.priority, a.nbytes))
        victims: list[Request] = []
        for victim in eligible:
            victims.append(victim)
            if sum(v.nbytes for v in victims) >= need:
                break
        # Never more than needed: without the last victim it would not fit.
        assert sum(v.nbytes for v in victims[:-1]) < need
        assert all(v.priority < priority and v.evictable for v in victims)
        return victims

    def _admit(self, request: Request, *, queued_ahead: bool) -> bool:
        nbytes = request.nbytes
        if nbytes == 0:
            return True
        if queued_ahead:
            return False
        if self.headroom is not None and nbytes > self.headroom:
            return False
        if self.used + nbytes > self.capacity:
            victims = self._plan(nbytes, request.priority)
            if victims is None:
                return False
            self._evict(victims)
        return True

    def try_grant(self, request: Request) -> bool:
        ahead = any(q.priority >= request.priority for q in self.queue)
        evictions = self.evictions
        if self._admit(request, queued_ahead=ahead):
            self._grant(request)
            if self.evictions > evictions:
                self.pump()  # eviction may have freed more than this request needed
            return True
        return False

    def enqueue(self, request: Request) -> bool:
        if self.try_grant(request):
            return True
        position = len(self.queue)
        for index, queued in enumerate(self.queue):
            if queued.priority < request.priority:
                position = index
                break
        self.queue.insert(position, request)
        self.state[id(request)] = QUEUED
        if request._key is not None:
            self.keys[request._key] = request
        return False

    def pump(self) -> None:
        while self.queue:
            head = self.queue[0]
            if self.headroom is not None and head.nbytes > self.headroom:
                return
            if self.used + head.nbytes > self.capacity:
                victims = self._plan(head.nbytes, head.priority)
                if victims is None:
                    return
                self._evict(victims)
            self.queue.pop(0)
            self._grant(head)
            self.woken.append(head)

    def _unqueue(self, request: Request) -> None:
        self.queue.remove(request)
        self.state[id(request)] = ABANDONED
        if request._key is not None and self.keys.get(request._key) is request:
            del self.keys[request._key]

    def release(self, request: Request) -> bool:
        if self.state[id(request)] != LIVE:
            return False
        self._drop(request)
        self.pump()
        return True

    def cancel(self, request: Request) -> None:
        state = self.state[id(request)]
        if state == QUEUED:
            self._unqueue(request)
        elif state == LIVE:
            self._drop(request)
        else:
            return
        self.cancelled += 1
        self.pump()

    def settle(self, request: Request) -> bool:
        state = self.state[id(request)]
        if state == LIVE:
            return True
        if state == QUEUED:
            self._unqueue(request)
            self.timeouts += 1
            self.pump()
        return False

    def set_pressure(self, level: int, available: int) -> None:
        self.headroom = available if level >= 2 else None
        if level >= 3:
            self._evict(sorted((a for a in self.live if a.evictable), key=_order))
        self.pump()

    def evict_below(self, priority: int) -> None:
        self._evict(
            sorted((a for a in self.live if a.evictable and a.priority < priority), key=_order)
        )
        self.pump()


def _order(request: Request) -> tuple[int, int]:
    return (request.priority, request.nbytes)


class LedgerMachine(RuleBasedStateMachine):
    """Random operations on a Ledger, mirrored on the Model."""

    @initialize(capacity=st.sampled_from([1, 10, CAPACITY]))
    def setup(self, capacity: int) -> None:
        self.now = 0.0
        self.evicted: list[Request] = []
        self.woken: list[Request] = []
        self.ledger = Ledger(
            capacity, clock=lambda: self.now, history=5, on_evicted=self.evicted.extend
        )
        self.model = Model(capacity)
        self.requests: list[Request] = []

    def _new(self, nbytes: int, priority: int, evictable: bool, key: str | None) -> Request:
        request = Request(self.ledger, key, nbytes, priority, evictable)
        self.model.state[id(request)] = PENDING
        return request

    def _check_op(self) -> None:
        assert self.evicted == self.model.evicted
        assert self.woken == self.model.woken
        self.evicted.clear()
        self.woken.clear()
        self.model.evicted.clear()
        self.model.woken.clear()

    def _admissible(self, nbytes: int, key: str | None) -> bool:
        return nbytes <= self.model.capacity and (key is None or key not in self.model.keys)

    @rule(nbytes=SIZES, priority=PRIORITIES, evictable=st.booleans(), key=KEYS)
    def try_grant(self, nbytes: int, priority: int, evictable: bool, key: str | None) -> None:
        request = self._new(nbytes, priority, evictable, key)
        if key is not None and key in self.model.keys:
            with pytest.raises(ValueError):
                self.ledger.try_grant(request)
            assert request._state == PENDING
            return
        if nbytes > self.model.capacity:
            with pytest.raises(MemoryAllocationError):
                self.ledger.try_grant(request)
            assert request._state == PENDING
            return
        expected = self.model.try_grant(request)
        assert self.ledger.try_grant(request) is expected
        if not expected:
            assert request._state == PENDING
        self.requests.append(request)
        self._check_op()

    @rule(nbytes=SIZES, priority=PRIORITIES, evictable=st.booleans(), key=KEYS)
    def enqueue(self, nbytes: int, priority: int, evictable: bool, key: str | None) -> None:
        if not self._admissible(nbytes, key):
            return
        request = self._new(nbytes, priority, evictable, key)
        expected = self.model.enqueue(request)
        assert self.ledger.enqueue(request, lambda: self.woken.append(request)) is expected
        self.requests.append(request)
        self._check_op()

    def _pick(self, state: int, index: int) -> Request | None:
        chosen = [r for r in self.requests if self.model.state[id(r)] == state]
        return chosen[index % len(chosen)] if chosen else None

    @precondition(lambda self: any(r._state == LIVE for r in self.requests))
    @rule(index=st.integers(min_value=0), by_key=st.booleans())
    def release(self, index: int, by_key: bool) -> None:
        request = self._pick(LIVE, index)
        assert request is not None
        if by_key:
            key = request.key  # names anonymous ones on first use
            assert self.ledger.release_key(key) is True
            self.model.release(request)
        else:
            assert self.ledger.release(request) is self.model.release(request)
        self._check_op()
        assert self.ledger.release(request) is False
        assert request.released

    @precondition(lambda self: self.requests)
    @rule(index=st.integers(min_value=0))
    def cancel(self, index: int) -> None:
        # Cancels queued waiters, and granted ones as if cancelled before resuming.
        request = self.requests[index % len(self.requests)]
        self.model.cancel(request)
        self.ledger.cancel(request)
        self._check_op()

    @precondition(lambda self: any(r._state == QUEUED for r in self.requests))
    @rule(index=st.integers(min_value=0))
    def time_out(self, index: int) -> None:
        request = self._pick(QUEUED, index)
        assert request is not None
        assert self.ledger.settle(request) is self.model.settle(request) is False
        self._check_op()

    @rule(
        level=st.integers(min_value=0, max_value=3),
        available=st.integers(min_value=-5, max_value=CAPACITY),
    )
    def pressure(self, level: int, available: int) -> None:
        self.model.set_pressure(level, max(available, 0))
        self.ledger.set_pressure(level, available)
        self._check_op()

    @rule(priority=PRIORITIES)
    def evict_below(self, priority: int) -> None:
        self.model.evict_below(priority)
        self.ledger.evict_below(priority)
        self._check_op()

    @rule(dt=st.sampled_from([0.0, 0.004, 0.011]))
    def tick(self, dt: float) -> None:
        self.now += dt

    # ----------------------------------------------------------- invariants

    @invariant()
    def agrees_with_model(self) -> None:
        for request in self.requests:
            assert request._state == self.model.state[id(request)], request
        assert self.ledger.queued() == self.model.queue
        assert self.ledger.headroom == self.model.headroom
        row = self.ledger.snapshot()
        assert (row.used, row.peak) == (self.model.used, self.model.peak)
        assert (row.timeouts, row.cancelled, row.evictions) == (
            self.model.timeouts,
            self.model.cancelled,
            self.model.evictions,
        )

    @invariant()
    def held_means_live(self) -> None:
        for request in self.requests:
            assert self.ledger.held(request) is (self.model.state[id(request)] == LIVE)

    @rule(nbytes=st.integers(min_value=0, max_value=2 * CAPACITY))
    def check_size(self, nbytes: int) -> None:
        if nbytes > self.model.capacity:
            with pytest.raises(MemoryAllocationError, match=rf"^size={nbytes} exceeds"):
                self.ledger.check_size(nbytes, "size")
        else:
            self.ledger.check_size(nbytes, "size")

    @invariant()
    def accounting_is_exact(self) -> None:
        live = [r for r in self.requests if r._state == LIVE]
        row = self.ledger.snapshot()
        assert row.used == sum(r.nbytes for r in live) <= row.capacity
        assert row.allocations == len(live)
        assert row.waiters == self.ledger.waiting == len(self.ledger.queued())
        assert row.waiters == sum(r._state == QUEUED for r in self.requests)
        assert row.peak >= row.used

    @invariant()
    def queue_is_in_service_order(self) -> None:
        queued = self.ledger.queued()
        order = {id(r): i for i, r in enumerate(self.requests)}
        keys = [(-r.priority, order[id(r)]) for r in queued]
        assert keys == sorted(keys)  # higher priority first, FIFO within a priority
        assert all(r.nbytes > 0 for r in queued)  # zero bytes never wait

    @invariant()
    def head_cannot_be_served_now(self) -> None:
        queued = self.ledger.queued()
        if not queued:
            return
        head = queued[0]
        row = self.ledger.snapshot()
        if row.headroom is not None and head.nbytes > row.headroom:
            return
        lower = sum(
            r.nbytes
            for r in self.requests
            if r._state == LIVE and r.evictable and r.priority < head.priority
        )
        assert row.used + head.nbytes - lower > row.capacity

    @invariant()
    def history_is_bounded_and_coalesced(self) -> None:
        rows = self.ledger._history
        assert len(rows) <= 5


TestLedger = LedgerMachine.TestCase


def test_ledger_history_keeps_the_latest_state_of_a_window() -> None:
    now = [0.0]
    ledger = Ledger(10, clock=lambda: now[0], history=10)
    first = Request(ledger, None, 3, 50)
    assert ledger.try_grant(first)
    second = Request(ledger, None, 4, 50)
    assert ledger.try_grant(second)
    rows = ledger.history()
    assert [r.used for r in rows] == [7]  # one entry for the 10 ms window, latest state
    now[0] += 0.02
    assert ledger.release(first)
    assert [r.used for r in ledger.history()] == [7, 4]
    ledger.clear_history()
    assert ledger.history() == []


def test_request_states_and_resubmission() -> None:
    ledger = Ledger(10)
    request = Request(ledger, "k", 5, 50)
    assert repr(request).endswith("pending>")
    assert ledger.try_grant(request)
    with pytest.raises(RuntimeError, match="already submitted"):
        ledger.try_grant(request)
    with pytest.raises(RuntimeError, match="already submitted"):
        ledger.enqueue(request, lambda: None)
    assert request.release() and request.released
    assert "released" in repr(request)
    assert ledger.indexed() == []
