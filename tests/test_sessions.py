"""SessionManager: expiry, leases, byte limits, budget accounting, cancellation, bad input."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import current_backend, on_both, on_both_autojump, timeout_for
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from memwarden.budget import MemoryManager
from memwarden.errors import (
    AllocationTimeoutError,
    MemoryAllocationError,
    SessionError,
    SessionMemoryError,
    SessionNotFoundError,
)
from memwarden.sessions import SessionData, SessionManager, SessionStats
from memwarden.testing import ManualClock


def budget_of(capacity: int) -> MemoryManager:
    """A real MemoryManager; its timeouts run on the event loop's clock (anyio's)."""
    return MemoryManager(capacity)


def assert_budget_holds_only(budget: MemoryManager, manager: SessionManager, *others: int) -> None:
    """Nothing leaked: the budget holds the sessions' charge plus ``others``, nobody waits."""
    assert budget.waiters == 0
    assert budget.current_usage == manager.stats().budget_bytes + sum(others)
    assert manager.stats().budget_bytes >= manager.stats().total_bytes


def allocations(budget: MemoryManager) -> int:
    return budget.get_stats().allocations


def sized(data: dict[str, Any]) -> int:
    """A predictable sizeof for tests: the sum of int values and len() of the rest."""
    return sum(v if isinstance(v, int) else len(v) for v in data.values())


def make(clock: ManualClock, **kwargs: Any) -> SessionManager:
    kwargs.setdefault("sizeof", sized)
    kwargs.setdefault("timeout", 60.0)
    return SessionManager(clock=clock, **kwargs)


# -- basics ---------------------------------------------------------------------------------


@on_both
async def test_ids_are_unique_urlsafe_secrets(clock: ManualClock) -> None:
    manager = make(clock)
    ids = {await manager.create_session() for _ in range(500)}
    assert len(ids) == 500
    for session_id in ids:
        assert len(session_id) * 6 >= 128  # base64 characters carry 6 bits each
        assert set(session_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


@on_both
async def test_create_get_update_round_trip(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(user="ada", blob=100)
    session = manager.get_session(sid)
    assert isinstance(session, SessionData)
    assert session.session_id == sid
    assert session.data == {"user": "ada", "blob": 100}
    assert session.nbytes == 103
    assert session.created_at == session.last_access == 1000.0
    clock.advance(5)
    await manager.update_session(sid, blob=200, extra="xy")
    session = manager.get_session(sid)
    assert session is not None
    assert session.data == {"user": "ada", "blob": 200, "extra": "xy"}
    assert session.nbytes == 205
    assert session.last_access == 1005.0
    assert manager.stats().total_bytes == 205
    assert sid in manager and len(manager) == 1


@on_both
async def test_snapshot_is_a_copy(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    snap = manager.get_session(sid)
    assert snap is not None
    snap.data["a"] = 10**9
    again = manager.get_session(sid)
    assert again is not None and again.data == {"a": 1} and again.nbytes == 1


@on_both
async def test_default_sizeof_is_deep_sizeof(clock: ManualClock) -> None:
    from memwarden.sizeof import deep_sizeof

    manager = SessionManager(clock=clock)
    sid = await manager.create_session(payload="x" * 10_000)
    session = manager.get_session(sid)
    assert session is not None
    assert session.nbytes == deep_sizeof({"payload": "x" * 10_000})
    assert session.nbytes > 10_000


# -- expiry ---------------------------------------------------------------------------------


@on_both
async def test_cleanup_expires_idle_sessions(clock: ManualClock) -> None:
    manager = make(clock)
    old = await manager.create_session(a=1)
    clock.advance(30)
    young = await manager.create_session(b=2)
    clock.advance(30)
    assert await manager.cleanup_inactive_sessions() == 1
    assert manager.get_session(old) is None
    assert manager.get_session(young) is not None
    stats = manager.stats()
    assert (stats.sessions, stats.expired, stats.total_bytes) == (1, 1, 2)


@on_both
async def test_access_resets_the_idle_timer(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session()
    clock.advance(59)
    assert manager.get_session(sid) is not None
    clock.advance(59)
    assert await manager.cleanup_inactive_sessions() == 0
    clock.advance(1)
    assert await manager.cleanup_inactive_sessions() == 1


@on_both
async def test_lookup_of_an_idle_session_expires_it(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=5)
    clock.advance(60)
    assert manager.get_session(sid) is None
    assert manager.stats().expired == 1 and manager.stats().total_bytes == 0
    with pytest.raises(SessionNotFoundError):
        await manager.update_session(sid, a=1)


@on_both
async def test_infinite_timeout_never_expires(clock: ManualClock) -> None:
    manager = make(clock, timeout=math.inf)
    sid = await manager.create_session()
    clock.advance(1e9)
    assert await manager.cleanup_inactive_sessions() == 0
    assert manager.get_session(sid) is not None


# -- leases ---------------------------------------------------------------------------------


@on_both
async def test_leased_session_survives_cleanup_then_expires_after_release(
    clock: ManualClock,
) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    async with manager.acquire(sid) as session:
        assert session.data == {"a": 1}
        assert manager.stats().leased == 1
        clock.advance(600)
        assert await manager.cleanup_inactive_sessions() == 0
        assert await manager.expire_idle() == 0
        assert manager.get_session(sid) is not None
    assert manager.stats().leased == 0
    clock.advance(59)  # idle time counts from the release
    assert await manager.cleanup_inactive_sessions() == 0
    clock.advance(1)
    assert await manager.cleanup_inactive_sessions() == 1


@on_both
async def test_leases_nest_and_count(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session()
    outer = manager.acquire(sid)
    await outer.__aenter__()
    async with manager.acquire(sid):
        assert manager.stats().leased == 1
    clock.advance(120)
    assert await manager.cleanup_inactive_sessions() == 0  # outer lease still held
    await outer.__aexit__(None, None, None)
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1


@on_both
async def test_lease_of_unknown_session_raises(clock: ManualClock) -> None:
    manager = make(clock)
    with pytest.raises(SessionNotFoundError):
        async with manager.acquire("no-such-session"):
            pass
    assert manager.stats().leased == 0


@on_both
async def test_lease_is_released_when_the_body_raises(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session()
    with pytest.raises(RuntimeError):
        async with manager.acquire(sid):
            raise RuntimeError("boom")
    assert manager.stats().leased == 0


@on_both
async def test_lease_object_is_single_use_while_held(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session()
    lease = manager.acquire(sid)
    async with lease:
        with pytest.raises(RuntimeError):
            await lease.__aenter__()
    assert manager.stats().leased == 0


@on_both
async def test_end_session_while_leased(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=3)
    async with manager.acquire(sid):
        assert await manager.end_session(sid) is True
        assert manager.stats().leased == 0
    assert await manager.end_session(sid) is False
    stats = manager.stats()
    assert (stats.sessions, stats.ended, stats.leased, stats.total_bytes) == (0, 1, 0, 0)


# -- byte limit -----------------------------------------------------------------------------


@on_both
async def test_update_past_the_limit_keeps_old_data(clock: ManualClock) -> None:
    manager = make(clock, max_session_bytes=100)
    sid = await manager.create_session(a=60)
    with pytest.raises(SessionMemoryError) as info:
        await manager.update_session(sid, b=50)
    message = str(info.value)
    assert sid[:8] in message and "110 bytes" in message and "max_session_bytes=100" in message
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 60} and session.nbytes == 60
    assert manager.stats().rejected_updates == 1
    assert manager.stats().total_bytes == 60
    await manager.update_session(sid, a=40, b=60)  # exactly at the limit is allowed
    assert manager.stats().total_bytes == 100


@on_both
async def test_create_past_the_limit_creates_nothing(clock: ManualClock) -> None:
    manager = make(clock, max_session_bytes=10)
    with pytest.raises(SessionMemoryError, match="new session"):
        await manager.create_session(a=11)
    stats = manager.stats()
    assert (stats.sessions, stats.created, stats.rejected_updates) == (0, 0, 1)


@on_both
async def test_session_errors_are_catchable_as_builtins(clock: ManualClock) -> None:
    manager = make(clock)
    with pytest.raises(KeyError):
        await manager.update_session("missing", a=1)
    with pytest.raises(SessionError):
        await manager.update_session("missing", a=1)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"timeout": "30"}, TypeError, "timeout"),
        ({"max_session_bytes": 0}, ValueError, "max_session_bytes"),
        ({"max_session_bytes": 1.5}, TypeError, "max_session_bytes"),
        ({"sizeof": 3}, TypeError, "sizeof"),
        ({"clock": "now"}, TypeError, "clock"),
        ({"budget": object()}, TypeError, "budget"),
        ({"budget_timeout": -1}, ValueError, "budget_timeout"),
    ],
)
def test_bad_constructor_arguments(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        SessionManager(**kwargs)


@on_both
async def test_bad_call_arguments(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session()
    with pytest.raises(TypeError, match="session_id"):
        manager.get_session(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        await manager.update_session(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        manager.acquire(b"id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_id"):
        await manager.end_session(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_count"):
        await manager.expire_idle(max_count=-1)
    with pytest.raises(ValueError, match="min_idle"):
        await manager.expire_idle(min_idle=math.nan)
    assert manager.stats().sessions == 1 and manager.get_session(sid) is not None


@on_both
async def test_bad_sizeof_result_changes_nothing(clock: ManualClock) -> None:
    results: list[Any] = [5]
    manager = SessionManager(clock=clock, sizeof=lambda data: results[0])
    sid = await manager.create_session(a=1)
    for bad in (-1, 2.5, "7", None, True):
        results[0] = bad
        with pytest.raises(TypeError, match="sizeof"):
            await manager.update_session(sid, a=2)
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 1} and session.nbytes == 5


@on_both
async def test_unknown_ids(clock: ManualClock) -> None:
    manager = make(clock)
    assert manager.get_session("nope") is None
    assert await manager.end_session("nope") is False
    with pytest.raises(SessionNotFoundError, match="nope"):
        await manager.update_session("nope", a=1)


# -- expire_idle ----------------------------------------------------------------------------


@on_both
async def test_expire_idle_is_lru_skips_leased_and_logs(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make(clock)
    ids = []
    for i in range(5):
        ids.append(await manager.create_session(n=i))
        clock.advance(1)
    manager.get_session(ids[0])  # now the most recently used
    async with manager.acquire(ids[1]):
        with caplog.at_level(logging.WARNING, logger="memwarden.sessions"):
            assert await manager.expire_idle(max_count=2) == 2
        assert [r.getMessage().split()[2] for r in caplog.records] == [
            ids[2][:8] + "…",
            ids[3][:8] + "…",
        ]
        assert manager.get_session(ids[1]) is not None
    survivors = {sid for sid in ids if sid in manager}
    assert survivors == {ids[0], ids[1], ids[4]}
    assert manager.stats().expired == 2


@on_both
async def test_expire_idle_min_idle(clock: ManualClock) -> None:
    manager = make(clock)
    a = await manager.create_session()
    clock.advance(10)
    b = await manager.create_session()
    clock.advance(5)
    assert await manager.expire_idle(min_idle=8) == 1
    assert a not in manager and b in manager
    assert await manager.expire_idle(max_count=0) == 0
    assert await manager.expire_idle() == 1


# -- budget accounting ----------------------------------------------------------------------


@on_both
async def test_budget_round_trip(clock: ManualClock) -> None:
    budget = budget_of(1000)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=100)
    assert budget.current_usage == 100
    await manager.update_session(sid, a=300)  # grows by 200
    assert budget.current_usage == 300 and manager.stats().budget_bytes == 300
    await manager.update_session(sid, a=50)  # shrinks: one exact grant replaces the chunks
    assert budget.current_usage == 50 and allocations(budget) == 1
    other = await manager.create_session(b=20)
    assert budget.current_usage == 70
    assert await manager.end_session(sid) is True
    assert budget.current_usage == 20
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1
    assert other not in manager
    assert budget.current_usage == 0 and allocations(budget) == 0


@on_both
async def test_budget_shrink_without_headroom_returns_whole_chunks(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=40)
    await manager.update_session(sid, a=90)  # chunks of 40 and 50
    assert budget.current_usage == 90
    # No room for a fresh 45-byte grant, so whole chunks the session no longer needs
    # go back: the 40 fits in the 45-byte surplus, the 50 must stay.
    await manager.update_session(sid, a=45)
    assert budget.current_usage == 50
    assert manager.stats().budget_bytes == budget.current_usage >= manager.stats().total_bytes


@on_both
async def test_many_growths_are_merged(clock: ManualClock) -> None:
    budget = budget_of(10_000)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=1)
    for size in range(2, 30):
        await manager.update_session(sid, a=size)
    assert allocations(budget) <= 5
    assert budget.current_usage == manager.stats().budget_bytes == 29


@on_both
async def test_budget_too_small_for_a_session(clock: ManualClock) -> None:
    budget = budget_of(10)
    manager = make(clock, budget=budget)
    with pytest.raises(MemoryAllocationError):
        await manager.create_session(a=11)
    assert manager.stats().sessions == 0 and budget.current_usage == 0


@on_both
async def test_update_waits_for_budget_bytes(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(60, key="hog")
    assert hog is not None
    sid = await manager.create_session(a=10)
    done = anyio.Event()

    async def grow() -> None:
        await manager.update_session(sid, a=50)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(grow)
        await wait_all_tasks_blocked()
        assert not done.is_set() and budget.waiters == 1
        clock.advance(3600)  # a session being updated is pinned
        assert await manager.cleanup_inactive_sessions() == 0
        budget.release(hog)
    session = manager.get_session(sid)
    assert session is not None and session.nbytes == 50 and budget.current_usage == 50


@on_both
async def test_update_cancelled_while_waiting_for_budget_leaves_everything(
    clock: ManualClock,
) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(80, key="hog")
    sid = await manager.create_session(a=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: manager.update_session(sid, a=50))
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 10} and session.nbytes == 10
    assert budget.waiters == 0 and budget.current_usage == 90
    assert manager.stats().budget_bytes == 10
    assert hog is not None
    budget.release(hog)
    await manager.update_session(sid, a=50)  # the lock was not left held
    assert budget.current_usage == 50


@on_both
async def test_update_timeout_leaves_everything(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=0)
    hog = budget.try_acquire(80, key="hog")
    sid = await manager.create_session(a=10)
    with pytest.raises(AllocationTimeoutError):
        await manager.update_session(sid, a=50)
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 10}
    assert budget.waiters == 0 and budget.current_usage == 90 and manager.stats().budget_bytes == 10
    assert hog is not None


@on_both
async def test_update_caller_timeout_leaves_everything(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    budget.try_acquire(95, key="hog")
    sid = await manager.create_session(a=5)
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0):
            await manager.update_session(sid, a=50)
    assert budget.waiters == 0 and budget.current_usage == 100
    session = manager.get_session(sid)
    assert session is not None and session.nbytes == 5


@on_both
async def test_create_cancelled_while_waiting_for_budget_creates_nothing(
    clock: ManualClock,
) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    budget.try_acquire(100, key="hog")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: manager.create_session(a=10))
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert manager.stats().sessions == 0 and manager.stats().created == 0
    assert budget.waiters == 0 and budget.current_usage == 100


@on_both
async def test_create_timeout_creates_nothing(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=0)
    budget.try_acquire(100, key="hog")
    with pytest.raises(AllocationTimeoutError):
        await manager.create_session(a=10)
    assert manager.stats().sessions == 0 and budget.current_usage == 100 and budget.waiters == 0


@on_both
async def test_end_while_update_waits_returns_every_byte(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(80, key="hog")
    sid = await manager.create_session(a=10)
    errors: list[BaseException] = []

    async def grow() -> None:
        try:
            await manager.update_session(sid, a=30)
        except SessionNotFoundError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(grow)
        await wait_all_tasks_blocked()
        assert await manager.end_session(sid) is True
        assert hog is not None
        budget.release(hog)
    assert len(errors) == 1
    assert budget.current_usage == 0 and allocations(budget) == 0


@on_both
async def test_concurrent_updates_of_one_session_are_serialized(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(90, key="hog")
    sid = await manager.create_session(a=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: manager.update_session(sid, b=5))
        await wait_all_tasks_blocked()
        tg.start_soon(lambda: manager.update_session(sid, c=5))
        await wait_all_tasks_blocked()
        assert budget.waiters == 1  # the second waits for the first, not the budget
        assert hog is not None
        budget.release(hog)
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 5, "b": 5, "c": 5}
    assert budget.current_usage == manager.stats().budget_bytes == 15


def test_runs_on_trio() -> None:
    async def scenario() -> SessionStats:
        clock = ManualClock(0.0)
        budget = budget_of(100)
        manager = make(clock, budget=budget)
        sid = await manager.create_session(a=10)
        async with manager.acquire(sid):
            await manager.update_session(sid, a=20)
        clock.advance(60)
        await manager.cleanup_inactive_sessions()
        assert budget.current_usage == 0
        return manager.stats()

    stats = anyio.run(scenario, backend="trio")
    assert (stats.created, stats.expired, stats.peak_bytes) == (1, 1, 20)
    assert stats.to_dict()["peak_session_bytes"] == 20


# -- a state machine over the whole manager -------------------------------------------------


class SessionMachine(RuleBasedStateMachine):
    """Random creates, updates, leases, ends, sweeps and clock moves against a model."""

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = ManualClock(0.0)
        self.budget = budget_of(1 << 30)  # never makes a step wait
        self.manager = SessionManager(
            timeout=10.0,
            max_session_bytes=500,
            budget=self.budget,
            sizeof=sized,
            clock=self.clock,
            max_keys=2,
        )
        self.model: dict[str, int] = {}  # id -> nbytes
        self.leases: list[tuple[str, Any]] = []

    def teardown(self) -> None:
        self.runner.close()

    def _leased(self) -> set[str]:
        return {sid for sid, _ in self.leases}

    @rule(target=sessions, size=st.integers(0, 600))
    def create(self, size: int) -> str:
        try:
            sid = self.runner.run(self.manager.create_session(v=size))
        except SessionMemoryError:
            assert size > 500
            return "rejected"
        assert size <= 500
        self.model[sid] = size
        return sid

    @rule(target=sessions, key=st.sampled_from(["a", "b", "c"]), size=st.integers(0, 600))
    def get_or_create(self, key: str, size: int) -> str:
        before = self.manager._table._keys.get(key)
        try:
            session = self.runner.run(self.manager.get_or_create(key, v=size))
        except SessionMemoryError:
            assert size > 500
            self._sync_model()
            assert key not in self.manager._table._keys
            return "rejected"
        self._sync_model()
        if before is not None and not before.ended:
            # The key named a live session: it is returned unchanged, data ignored.
            assert session.session_id == before.session_id
            assert session.nbytes == self.model[session.session_id]
        else:
            assert size <= 500 and session.session_id not in self.model
            self.model[session.session_id] = size
        assert self.manager._table._keys[key].session_id == session.session_id
        return session.session_id

    @rule(sid=sessions, size=st.integers(0, 600))
    def update(self, sid: str, size: int) -> None:
        try:
            self.runner.run(self.manager.update_session(sid, v=size))
        except SessionNotFoundError:
            assert sid not in self.model or sid not in self.manager
            self.model.pop(sid, None)
        except SessionMemoryError:
            assert size > 500
        else:
            self.model[sid] = size

    @rule(sid=sessions)
    def lease(self, sid: str) -> None:
        lease = self.manager.acquire(sid)
        try:
            self.runner.run(lease.__aenter__())
        except SessionNotFoundError:
            self.model.pop(sid, None)
        else:
            self.leases.append((sid, lease))

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def unlease(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.leases) - 1))
        _, lease = self.leases.pop(index)
        self.runner.run(lease.__aexit__(None, None, None))

    @rule(sid=consumes(sessions))
    def end(self, sid: str) -> None:
        ended = self.runner.run(self.manager.end_session(sid))
        if ended:
            assert sid in self.model
        self.model.pop(sid, None)
        self.leases = [(s, lease) for s, lease in self.leases if s != sid]

    @rule(sid=sessions)
    def get(self, sid: str) -> None:
        found = self.manager.get_session(sid)
        if found is None:
            assert sid not in self._leased()
            self.model.pop(sid, None)
        else:
            assert found.nbytes == self.model[sid]

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def cleanup(self) -> None:
        self.runner.run(self.manager.cleanup_inactive_sessions())
        self._sync_model()

    @rule(max_count=st.none() | st.integers(0, 3))
    def expire_idle(self, max_count: int | None) -> None:
        self.runner.run(self.manager.expire_idle(max_count=max_count))
        self._sync_model()

    def _sync_model(self) -> None:
        for sid in list(self.model):
            if sid not in self.manager:
                assert sid not in self._leased(), "a leased session was expired"
                del self.model[sid]

    @invariant()
    def totals_match(self) -> None:
        stats = self.manager.stats()
        assert set(self.model) == {entry.session_id for entry in self.manager._table}
        assert stats.sessions == len(self.model)
        assert stats.total_bytes == sum(self.model.values())
        assert stats.budget_bytes == self.budget.current_usage >= stats.total_bytes
        assert stats.peak_bytes >= stats.total_bytes
        assert stats.leased == len({s for s in self._leased() if s in self.manager})

    @invariant()
    def keys_name_live_sessions(self) -> None:
        keys = self.manager._table._keys
        assert len(keys) <= 2 and self.manager.stats().keys == len(keys)
        for key, entry in keys.items():
            assert entry.key == key and not entry.ended and entry.session_id in self.model
        named = [e for e in self.manager._table if e.key is not None]
        assert len(named) == len(keys)

    @invariant()
    def leased_sessions_are_alive(self) -> None:
        for sid in self._leased():
            if sid in self.model:
                assert sid in self.manager


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


@on_both_autojump
async def test_update_budget_timeout_leaves_everything(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=timeout_for(5.0))
    hog = budget.try_acquire(80, key="hog")
    sid = await manager.create_session(a=10)
    with pytest.raises(AllocationTimeoutError):
        await manager.update_session(sid, a=50)
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 10} and session.nbytes == 10
    assert_budget_holds_only(budget, manager, 80)
    assert manager.stats().budget_bytes == 10 and hog is not None
    budget.release(hog)
    await manager.update_session(sid, a=50)  # neither the lock nor a pin was left behind
    assert_budget_holds_only(budget, manager)


@on_both
async def test_cancelled_while_waiting_for_the_session_lock(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(90, key="hog")
    sid = await manager.create_session(a=5)
    async with anyio.create_task_group() as outer:
        outer.start_soon(lambda: manager.update_session(sid, b=10))
        await wait_all_tasks_blocked()
        with anyio.CancelScope() as second:
            async with anyio.create_task_group() as inner:
                inner.start_soon(lambda: manager.update_session(sid, c=10))
                await wait_all_tasks_blocked()
                second.cancel()
        assert hog is not None
        budget.release(hog)
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 5, "b": 10}
    assert budget.current_usage == manager.stats().budget_bytes == 15
    assert budget.waiters == 0
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1  # not left pinned
    assert budget.current_usage == 0


@on_both
async def test_already_cancelled_calls_change_nothing(clock: ManualClock) -> None:
    budget = budget_of(1000)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=10)
    clock.advance(60)  # idle long enough to be swept
    with anyio.CancelScope() as scope:
        scope.cancel()
        for call in (
            lambda: manager.create_session(b=1),
            lambda: manager.update_session(sid, a=20),
            lambda: manager.end_session(sid),
            manager.cleanup_inactive_sessions,
            manager.expire_idle,
        ):
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await call()
        with pytest.raises(anyio.get_cancelled_exc_class()):
            async with manager.acquire(sid):
                pass
    stats = manager.stats()
    assert (stats.sessions, stats.created, stats.expired) == (1, 1, 0)
    assert (stats.ended, stats.leased) == (0, 0)
    assert budget.current_usage == 10


# -- waiting APIs on both backends: cancellation and timeout twins ----------------------------


@on_both_autojump
async def test_create_budget_timeout_creates_nothing(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=timeout_for(5.0))
    hog = budget.try_acquire(95, key="hog")
    with pytest.raises(AllocationTimeoutError):
        await manager.create_session(a=10)
    assert manager.stats().sessions == 0 and manager.stats().created == 0
    assert_budget_holds_only(budget, manager, 95)
    assert hog is not None
    budget.release(hog)
    sid = await manager.create_session(a=10)  # the budget still grants
    assert manager.get_session(sid) is not None
    assert_budget_holds_only(budget, manager)


@on_both_autojump
async def test_create_under_a_caller_deadline_creates_nothing(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    budget.try_acquire(95, key="hog")
    with anyio.move_on_after(timeout_for(5.0)) as scope:
        await manager.create_session(a=10)
    assert scope.cancelled_caught
    assert manager.stats().sessions == 0
    assert_budget_holds_only(budget, manager, 95)


@on_both_autojump
async def test_update_under_a_caller_deadline_keeps_old_data(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    budget.try_acquire(80, key="hog")
    sid = await manager.create_session(a=10)
    with anyio.move_on_after(timeout_for(5.0)) as scope:
        await manager.update_session(sid, a=50)
    assert scope.cancelled_caught
    session = manager.get_session(sid)
    assert session is not None and session.data == {"a": 10} and session.nbytes == 10
    assert_budget_holds_only(budget, manager, 80)
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1  # the update left no pin
    assert_budget_holds_only(budget, manager, 80)


@on_both
async def test_update_shrink_needs_no_wait_even_with_a_full_budget(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=40)
    budget.try_acquire(60, key="hog")
    with anyio.fail_after(5):
        await manager.update_session(sid, a=10)
    session = manager.get_session(sid)
    assert session is not None and session.nbytes == 10
    assert_budget_holds_only(budget, manager, 60)


@on_both
async def test_cancelled_lease_body_releases_the_lease(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    with anyio.CancelScope() as scope:
        async with manager.acquire(sid) as session:
            assert manager.stats().leased == 1 and session.session_id == sid
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert manager.stats().leased == 0
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1


@on_both_autojump
async def test_timed_out_lease_body_releases_the_lease(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    with pytest.raises(TimeoutError):
        with anyio.fail_after(timeout_for(5.0)):
            async with manager.acquire(sid):
                await anyio.sleep_forever()
    assert manager.stats().leased == 0
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 1


@on_both
async def test_cancelled_lease_entry_holds_nothing(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    lease = manager.acquire(sid)
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with lease:
            pytest.fail("a cancelled lease entry must not run the body")
    assert scope.cancelled_caught
    assert manager.stats().leased == 0
    async with lease:  # the lease object was not left marked as held
        assert manager.stats().leased == 1


@on_both
async def test_cancelled_end_session_leaves_the_session_and_its_bytes(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    sid = await manager.create_session(a=30)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.end_session(sid)
    assert scope.cancelled_caught
    assert manager.get_session(sid) is not None
    assert_budget_holds_only(budget, manager)
    assert budget.current_usage == 30
    assert await manager.end_session(sid) is True
    assert budget.current_usage == 0 and allocations(budget) == 0


@on_both
async def test_operations_are_checkpoints(clock: ManualClock) -> None:
    manager = make(clock)
    sid = await manager.create_session(a=1)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    for call in (
        lambda: manager.create_session(b=1),
        lambda: manager.update_session(sid, a=2),
        lambda: manager.end_session("unknown"),
        manager.cleanup_inactive_sessions,
    ):
        if current_backend() == "trio":
            import trio.testing

            # trio shuffles runnable tasks, so ask trio itself whether the call yielded.
            with trio.testing.assert_checkpoints():
                await call()
            continue
        ran.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await call()
            # asyncio runs ready tasks in order: the other task ran while the call yielded.
            assert ran == ["other"]


# -- charging from a held reservation -------------------------------------------------------


@on_both
async def test_charge_from_moves_bytes_from_a_held_reservation_without_waiting(
    clock: ManualClock,
) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=0)
    request = budget.try_acquire(90, key="request")
    assert request is not None
    # The budget is full: without charge_from these would time out at once.
    sid = await manager.create_session(charge_from=request, a=10)
    await manager.update_session(sid, charge_from=request, a=30)
    snapshot = await manager.get_or_create("user", charge_from=request, b=5)
    assert request.nbytes == 90 - 30 - 5 and budget.current_usage == 90
    assert_budget_holds_only(budget, manager, request.nbytes)
    request.release()
    assert budget.current_usage == 35 == manager.stats().budget_bytes
    assert snapshot.data == {"b": 5}


@on_both
async def test_charge_from_too_small_or_released_waits_as_usual(clock: ManualClock) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget, budget_timeout=0)
    request = budget.try_acquire(95, key="request")
    assert request is not None
    with pytest.raises(AllocationTimeoutError):
        await manager.create_session(charge_from=request, a=96)
    assert request.nbytes == 95
    request.release()
    sid = await manager.create_session(charge_from=request, a=20)  # a plain grant now
    assert_budget_holds_only(budget, manager)
    assert manager.get_session(sid) is not None


@on_both
async def test_charge_from_refuses_what_is_not_an_allocation_of_its_budget(
    clock: ManualClock,
) -> None:
    budget = budget_of(100)
    manager = make(clock, budget=budget)
    with pytest.raises(TypeError, match="charge_from"):
        await manager.create_session(charge_from="request", a=1)
    foreign = budget_of(100).try_acquire(50)
    with pytest.raises(ValueError, match="charge_from"):
        await manager.create_session(charge_from=foreign, a=1)
    unbudgeted = make(clock)
    with pytest.raises(ValueError, match="charge_from"):
        await unbudgeted.create_session(charge_from=budget.try_acquire(1), a=1)
    assert manager.stats().sessions == 0
    assert_budget_holds_only(budget, manager, 1)
