"""The grant ledger as a state machine, checked against a plain reference model.

Hypothesis drives random submissions (non-waiting and queueing), releases,
resizes, cancellations (including of a waiter already granted), timeouts,
memory samples (measured used, limit and level) and explicit evictions. After
every step the ledger must agree with a slow, obviously-correct model on every
request's state, the queue's service order, what was evicted (and in which
order) and who was woken; and the invariants hold: used == sum of live bytes
<= capacity, no grant (or growth) ever ends above the measured room of the
moment, the queue's head can never be served right now (no lost wake-up),
evictions only hit strictly lower-priority evictable allocations and never
more than needed.
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

from memwarden._grants import (
    ABANDONED,
    LIVE,
    PENDING,
    QUEUED,
    RECENT_SAMPLES,
    RECENT_WINDOW,
    RELEASED,
    STALE_AFTER,
    Ledger,
    Request,
)
from memwarden.errors import MemoryAllocationError

CAPACITY = 100
KEYS = st.sampled_from([None, None, None, "a", "b", "c"])
SIZES = st.integers(min_value=0, max_value=CAPACITY)
PRIORITIES = st.sampled_from([0, 10, 50, 50, 100])
CRITICAL = 0.95
HIGH = 0.85


@dataclass
class Model:
    """Reference semantics, written for clarity rather than speed."""

    capacity: int
    follow: bool = False
    followed: bool = False  # the capacity was ever set from a sample
    used: int = 0
    peak: int = 0
    now: float = 0.0
    limit: int | None = None
    recent: list[tuple[float, int]] = field(default_factory=list)
    sampled_at: float = -float("inf")
    sizes: dict[int, int] = field(default_factory=dict)  # resized requests' bytes
    state: dict[int, int] = field(default_factory=dict)
    live: list[Request] = field(default_factory=list)  # in grant order
    queue: list[Request] = field(default_factory=list)  # in service order
    evicted: list[Request] = field(default_factory=list)
    woken: list[Request] = field(default_factory=list)
    keys: dict[str, Request] = field(default_factory=dict)
    timeouts: int = 0
    cancelled: int = 0
    evictions: int = 0

    def n(self, request: Request) -> int:
        return self.sizes.get(id(request), request.nbytes)

    def unmanaged_recent(self) -> int:
        return max(u for _, u in self.recent) if self.recent else 0

    def ceiling(self) -> int:
        if self.limit is None:
            return self.capacity
        return min(self.capacity, int(self.limit * CRITICAL) - self.unmanaged_recent())

    def headroom(self) -> int | None:
        return None if self.limit is None else max(self.ceiling() - self.used, 0)

    def _grant(self, request: Request) -> None:
        self.used += self.n(request)
        # The measured rule: no grant ends above the room of the moment.
        assert self.used <= self.ceiling() or self.n(request) == 0
        self.peak = max(self.peak, self.used)
        self.live.append(request)
        self.state[id(request)] = LIVE
        if request._key is not None:
            self.keys[request._key] = request

    def _drop(self, request: Request) -> None:
        self.used -= self.n(request)
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
        need = self.used + nbytes - self.ceiling()
        n = self.n
        eligible = [a for a in self.live if a.evictable and a.priority < priority and n(a)]
        if sum(n(a) for a in eligible) < need:
            return None
        eligible.sort(key=lambda a: (a.priority, n(a)))
        victims: list[Request] = []
        for victim in eligible:
            victims.append(victim)
            if sum(n(v) for v in victims) >= need:
                break
        # Never more than needed: without the last victim it would not fit.
        assert sum(n(v) for v in victims[:-1]) < need
        assert all(v.priority < priority and v.evictable for v in victims)
        return victims

    def _admit(self, request: Request, *, queued_ahead: bool) -> bool:
        nbytes = request.nbytes
        if nbytes == 0:
            return True
        if queued_ahead:
            return False
        if self.used + nbytes > self.ceiling():
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
            if self.used + head.nbytes > self.ceiling():
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

    def resize(self, request: Request, nbytes: int) -> bool:
        if self.state[id(request)] != LIVE:
            return False
        extra = nbytes - self.n(request)
        if extra > 0:
            if any(q.priority >= request.priority for q in self.queue):
                return False
            if self.used + extra > self.ceiling():
                victims = self._plan(extra, request.priority)
                if victims is None:
                    return False
                self._evict(victims)
        self.sizes[id(request)] = nbytes
        self.used += extra
        assert extra <= 0 or self.used <= self.ceiling()
        self.peak = max(self.peak, self.used)
        if extra < 0 or self.evicted:
            self.pump()
        return True

    def observe(self, used: int, limit: int, level: int) -> None:
        unmanaged = max(used - self.used, 0)
        self.recent.append((self.now, unmanaged))
        while len(self.recent) > RECENT_SAMPLES and self.recent[0][0] < self.now - RECENT_WINDOW:
            self.recent.pop(0)
        self.sampled_at = self.now
        if limit != self.limit:
            self.limit = limit
            if self.follow:
                self.capacity = max(int(limit * CRITICAL) - unmanaged, 1)
                self.followed = True
        if level >= 3:
            self._evict(sorted((a for a in self.live if a.evictable), key=self._order))
        self.pump()

    def needs_sample(self, nbytes: int) -> bool:
        if self.limit is None or nbytes <= 0:
            return False
        above_high = self.unmanaged_recent() + self.used + nbytes > int(self.limit * HIGH)
        return above_high and self.now - self.sampled_at > STALE_AFTER

    def _order(self, request: Request) -> tuple[int, int]:
        return (request.priority, self.n(request))

    def evict_below(self, priority: int) -> None:
        self._evict(
            sorted((a for a in self.live if a.evictable and a.priority < priority), key=self._order)
        )
        self.pump()


class LedgerMachine(RuleBasedStateMachine):
    """Random operations on a Ledger, mirrored on the Model."""

    @initialize(capacity=st.sampled_from([1, 10, CAPACITY]), follow=st.booleans())
    def setup(self, capacity: int, follow: bool) -> None:
        self.evicted: list[Request] = []
        self.woken: list[Request] = []
        self.model = Model(capacity, follow=follow)
        self.ledger = Ledger(
            capacity, clock=lambda: self.model.now, history=5, on_evicted=self.evicted.extend
        )
        if follow:
            self.ledger.follow_samples()
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
        used=st.integers(min_value=0, max_value=2 * CAPACITY),
        limit=st.sampled_from([50, CAPACITY, 2 * CAPACITY]),
        level=st.sampled_from([0, 0, 1, 2, 3]),
    )
    def observe(self, used: int, limit: int, level: int) -> None:
        self.model.observe(used, limit, level)
        self.ledger.observe(used, limit, level, critical=CRITICAL, high=HIGH)
        self._check_op()

    @precondition(lambda self: any(r._state == LIVE for r in self.requests))
    @rule(index=st.integers(min_value=0), nbytes=SIZES)
    def resize(self, index: int, nbytes: int) -> None:
        request = self._pick(LIVE, index)
        assert request is not None
        if nbytes > self.model.capacity:
            with pytest.raises(MemoryAllocationError):
                self.ledger.resize(request, nbytes)
            return
        expected = self.model.resize(request, nbytes)
        assert self.ledger.resize(request, nbytes) is expected
        assert request.nbytes == self.model.n(request)
        self._check_op()

    @rule(nbytes=SIZES)
    def needs_sample(self, nbytes: int) -> None:
        assert self.ledger.needs_sample(nbytes) is self.model.needs_sample(nbytes)

    @rule()
    def forget_samples(self) -> None:
        self.model.limit = None
        self.model.recent.clear()
        self.model.sampled_at = -float("inf")
        self.model.follow = False
        self.model.pump()
        self.ledger.forget_samples()
        self._check_op()

    @rule(priority=PRIORITIES)
    def evict_below(self, priority: int) -> None:
        self.model.evict_below(priority)
        self.ledger.evict_below(priority)
        self._check_op()

    @rule(dt=st.sampled_from([0.0, 0.004, 0.011, 0.06, 1.0]))
    def tick(self, dt: float) -> None:
        self.model.now += dt

    # ----------------------------------------------------------- invariants

    @invariant()
    def agrees_with_model(self) -> None:
        for request in self.requests:
            assert request._state == self.model.state[id(request)], request
        assert self.ledger.queued() == self.model.queue
        assert self.ledger.headroom == self.model.headroom()
        assert self.ledger.capacity == self.model.capacity
        assert self.ledger.limit == self.model.limit
        if self.model.limit is not None:
            assert self.ledger.unmanaged == self.model.unmanaged_recent()
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
        assert row.used == sum(r.nbytes for r in live)
        if not self.model.followed:
            # An automatic capacity follows the limit and may fall below what is
            # already granted (a smaller limit, or grants not yet touched);
            # grants still never exceed it (checked in Model._grant).
            assert row.used <= row.capacity
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
        lower = sum(
            r.nbytes
            for r in self.requests
            if r._state == LIVE and r.evictable and r.priority < head.priority
        )
        assert row.used + head.nbytes - lower > self.model.ceiling()

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
