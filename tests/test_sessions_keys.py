"""SessionManager.get_or_create, the key table, and the priority and bound of session charges."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both, on_both_autojump, timeout_for
from test_budget_support import waiting

from memwarden.budget import MemoryManager, Priority
from memwarden.errors import AllocationTimeoutError, SessionMemoryError
from memwarden.sessions import SessionData, SessionManager
from memwarden.testing import ManualClock


def sized(data: dict[str, Any]) -> int:
    """A predictable sizeof: the sum of int values and len() of the rest."""
    return sum(v if isinstance(v, int) else len(v) for v in data.values())


def make(clock: ManualClock, **kwargs: Any) -> SessionManager:
    kwargs.setdefault("sizeof", sized)
    kwargs.setdefault("timeout", 60.0)
    return SessionManager(clock=clock, **kwargs)


def assert_no_leak(budget: MemoryManager, manager: SessionManager, *others: int) -> None:
    """The budget holds the sessions' charge plus ``others``; nobody waits."""
    assert budget.waiters == 0
    assert budget.current_usage == manager.stats().budget_bytes + sum(others)
    assert manager.stats().budget_bytes >= manager.stats().total_bytes
    assert manager._table._creating == {}


# -- get_or_create --------------------------------------------------------------------------


@on_both
async def test_get_or_create_is_idempotent_like_setdefault(clock: ManualClock) -> None:
    manager = make(clock)
    first = await manager.get_or_create("user-1", model="a", n=1)
    assert isinstance(first, SessionData)
    assert first.data == {"model": "a", "n": 1} and first.nbytes == 2
    clock.advance(5)
    again = await manager.get_or_create("user-1", model="b", n=100)
    assert again.session_id == first.session_id
    assert again.data == {"model": "a", "n": 1}  # data is stored only on creation
    assert again.last_access == 1005.0  # a lookup is an access
    other = await manager.get_or_create("user-2")
    assert other.session_id != first.session_id and other.data == {}
    stats = manager.stats()
    assert (stats.sessions, stats.created, stats.keys, stats.peak_keys) == (2, 2, 2, 2)


@on_both
async def test_a_keyed_session_is_an_ordinary_session(clock: ManualClock) -> None:
    manager = make(clock)
    sid = (await manager.get_or_create("u", a=1)).session_id
    await manager.update_session(sid, a=5)
    async with manager.acquire(sid) as session:
        assert session.data == {"a": 5}
    assert (await manager.get_or_create("u")).data == {"a": 5}


@on_both
async def test_concurrent_calls_for_one_key_create_one_session(clock: ManualClock) -> None:
    budget = MemoryManager(1000)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(1000, key="hog")
    assert hog is not None
    results: list[SessionData] = []

    async def call(n: int) -> None:
        results.append(await manager.get_or_create("user", n=n))

    async with anyio.create_task_group() as tg:
        for n in range(1, 21):
            tg.start_soon(call, n)
        await waiting(budget, 1)  # one creation waits for bytes; the others wait for it
        await wait_all_tasks_blocked()
        assert budget.waiters == 1 and manager.stats().sessions == 0
        budget.release(hog)
    assert len({r.session_id for r in results}) == 1 and len(results) == 20
    assert len({tuple(r.data.items()) for r in results}) == 1
    assert manager.stats().created == 1 and manager.stats().keys == 1
    assert_no_leak(budget, manager)
    assert budget.current_usage == results[0].nbytes


@on_both
async def test_concurrent_calls_without_a_budget_create_one_session(clock: ManualClock) -> None:
    manager = make(clock)
    ids: set[str] = set()

    async def call(n: int) -> None:
        ids.add((await manager.get_or_create("user", n=n)).session_id)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(call, n)
    assert len(ids) == 1 and manager.stats().created == 1


@on_both
async def test_cancelled_creation_leaves_nothing_and_a_waiter_creates(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(100, key="hog")
    assert hog is not None
    first_scope = anyio.CancelScope()
    second: list[SessionData] = []

    async def first() -> None:
        with first_scope:
            await manager.get_or_create("user", a=10)

    async def waiter() -> None:
        second.append(await manager.get_or_create("user", b=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await waiting(budget, 1)
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        assert budget.waiters == 1  # the waiter waits for the first creation, not for bytes
        first_scope.cancel()
        await wait_all_tasks_blocked()
        # The first creation left nothing; the waiter now creates and waits for bytes.
        assert first_scope.cancelled_caught
        stats = manager.stats()
        assert (stats.sessions, stats.created, stats.keys, stats.budget_bytes) == (0, 0, 0, 0)
        assert budget.waiters == 1 and budget.current_usage == 100
        budget.release(hog)
    assert second[0].data == {"b": 5}
    assert manager.stats().created == 1 and manager.stats().keys == 1
    assert (await manager.get_or_create("user")).session_id == second[0].session_id
    assert_no_leak(budget, manager)
    assert budget.current_usage == 5


@on_both
async def test_cancelled_waiter_for_a_creation_leaves_it_alone(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget)
    hog = budget.try_acquire(100, key="hog")
    assert hog is not None
    created: list[SessionData] = []
    waiter_scope = anyio.CancelScope()

    async def creator() -> None:
        created.append(await manager.get_or_create("user", a=10))

    async def waiter() -> None:
        with waiter_scope:
            await manager.get_or_create("user", b=5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(creator)
        await waiting(budget, 1)
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        waiter_scope.cancel()
        await wait_all_tasks_blocked()
        assert waiter_scope.cancelled_caught and budget.waiters == 1
        budget.release(hog)
    assert created[0].data == {"a": 10}
    assert manager.stats().created == 1 and manager.stats().keys == 1
    assert_no_leak(budget, manager)


@on_both_autojump
async def test_timed_out_creation_hands_the_key_to_a_waiter(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget, budget_timeout=timeout_for(5.0))
    hog = budget.try_acquire(100, key="hog")
    assert hog is not None
    failed = anyio.Event()
    created: list[SessionData] = []

    async def creator() -> None:
        with pytest.raises(AllocationTimeoutError):
            await manager.get_or_create("user", a=10)
        failed.set()

    async def waiter() -> None:
        created.append(await manager.get_or_create("user", b=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(creator)
        await waiting(budget, 1)
        tg.start_soon(waiter)
        await failed.wait()
        budget.release(hog)
    assert created[0].data == {"b": 5}
    stats = manager.stats()
    assert (stats.sessions, stats.created, stats.keys) == (1, 1, 1)
    assert_no_leak(budget, manager)
    assert budget.current_usage == 5


@on_both_autojump
async def test_creation_timeout_leaves_no_session_no_key_no_bytes(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget, budget_timeout=timeout_for(5.0))
    hog = budget.try_acquire(95, key="hog")
    assert hog is not None
    with pytest.raises(AllocationTimeoutError):
        await manager.get_or_create("user", a=10)
    stats = manager.stats()
    assert (stats.sessions, stats.created, stats.keys) == (0, 0, 0)
    assert_no_leak(budget, manager, 95)
    budget.release(hog)
    created = await manager.get_or_create("user", a=10)
    assert created.data == {"a": 10} and manager.stats().keys == 1
    assert_no_leak(budget, manager)


@on_both_autojump
async def test_caller_deadline_on_creation_leaves_nothing(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget)
    budget.try_acquire(95, key="hog")
    with anyio.move_on_after(timeout_for(5.0)) as scope:
        await manager.get_or_create("user", a=10)
    assert scope.cancelled_caught
    assert manager.stats().sessions == 0 and manager.stats().keys == 0
    assert_no_leak(budget, manager, 95)


@on_both
async def test_a_too_big_creation_leaves_nothing(clock: ManualClock) -> None:
    manager = make(clock, max_session_bytes=10)
    with pytest.raises(SessionMemoryError):
        await manager.get_or_create("user", a=11)
    assert manager.stats().keys == 0 and manager.stats().rejected_updates == 1
    assert (await manager.get_or_create("user", a=3)).data == {"a": 3}


@on_both
async def test_already_cancelled_get_or_create_changes_nothing(clock: ManualClock) -> None:
    manager = make(clock)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await manager.get_or_create("user")
    assert scope.cancelled_caught
    assert manager.stats().sessions == 0 and manager.stats().keys == 0


# -- the key table --------------------------------------------------------------------------


@on_both
async def test_keys_are_forgotten_when_their_session_ends_or_expires(clock: ManualClock) -> None:
    manager = make(clock)
    ended = await manager.get_or_create("ended")
    assert await manager.end_session(ended.session_id) is True
    assert manager.stats().keys == 0
    assert (await manager.get_or_create("ended")).session_id != ended.session_id

    swept = await manager.get_or_create("swept")
    clock.advance(60)
    assert await manager.cleanup_inactive_sessions() == 2
    assert manager.stats().keys == 0
    assert (await manager.get_or_create("swept")).session_id != swept.session_id

    shed = await manager.get_or_create("shed")
    clock.advance(60)
    assert await manager.expire_idle(min_idle=30) == 2
    assert manager.stats().keys == 0
    assert (await manager.get_or_create("shed")).session_id != shed.session_id


@on_both
async def test_lookup_of_an_idle_keyed_session_expires_it_and_creates_anew(
    clock: ManualClock,
) -> None:
    manager = make(clock)
    old = await manager.get_or_create("user", a=1)
    clock.advance(60)
    new = await manager.get_or_create("user", a=2)
    assert new.session_id != old.session_id and new.data == {"a": 2}
    assert manager.get_session(old.session_id) is None
    stats = manager.stats()
    assert (stats.sessions, stats.expired, stats.keys) == (1, 1, 1)


@on_both
async def test_a_full_key_table_forgets_its_least_recently_used_key(clock: ManualClock) -> None:
    manager = make(clock, max_keys=3)
    ids = {key: (await manager.get_or_create(key)).session_id for key in ("a", "b", "c")}
    await manager.get_or_create("a")  # a is now the most recently used key
    d = await manager.get_or_create("d")  # forgets b
    stats = manager.stats()
    assert (stats.keys, stats.peak_keys, stats.keys_evicted, stats.sessions) == (3, 3, 1, 4)
    assert manager.get_session(ids["b"]) is not None  # b's session lives on
    assert (await manager.get_or_create("a")).session_id == ids["a"]
    assert (await manager.get_or_create("c")).session_id == ids["c"]
    assert (await manager.get_or_create("d")).session_id == d.session_id
    new_b = await manager.get_or_create("b")  # forgets a, the least recently used now
    assert new_b.session_id != ids["b"]
    assert manager.stats().keys_evicted == 2 and manager.stats().keys == 3
    # The session whose key was forgotten still ends and expires normally.
    assert await manager.end_session(ids["b"]) is True
    assert manager.stats().keys == 3
    assert (await manager.get_or_create("b")).session_id == new_b.session_id


@on_both
async def test_key_table_of_one(clock: ManualClock) -> None:
    manager = make(clock, max_keys=1)
    a = await manager.get_or_create("a")
    b = await manager.get_or_create("b")
    assert manager.stats().keys == 1 and manager.stats().keys_evicted == 1
    assert (await manager.get_or_create("b")).session_id == b.session_id
    assert (await manager.get_or_create("a")).session_id != a.session_id


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"max_keys": 0}, ValueError, "max_keys must be >= 1, got 0"),
        ({"max_keys": 1.5}, TypeError, "max_keys must be an int, got float 1.5"),
        ({"max_keys": True}, TypeError, "max_keys"),
        ({"budget_priority": "high"}, TypeError, "budget_priority must be an int, got str 'high'"),
        ({"budget_priority": True}, TypeError, "budget_priority"),
        ({"budget_timeout": math.nan}, ValueError, "budget_timeout"),
    ],
)
def test_bad_key_table_and_charge_arguments(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        SessionManager(**kwargs)


@on_both
async def test_bad_keys_are_refused_naming_key_and_value(clock: ManualClock) -> None:
    manager = make(clock)
    with pytest.raises(ValueError, match="key must not be empty, got ''"):
        await manager.get_or_create("")
    with pytest.raises(ValueError, match="key must not be empty, got '  '"):
        await manager.get_or_create("  ")
    with pytest.raises(TypeError, match="key must be a str, got int 5"):
        await manager.get_or_create(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a str, got NoneType None"):
        await manager.get_or_create(None)  # type: ignore[arg-type]
    assert manager.stats().sessions == 0 and manager.stats().keys == 0


def test_defaults_and_properties() -> None:
    manager = SessionManager()
    assert manager.budget_priority == 75 > Priority.NORMAL
    assert manager.budget_timeout == 30.0
    assert manager.max_keys == 100_000
    assert SessionManager(budget_timeout=None, budget_priority=-3).budget_timeout is None


# -- the priority and bound of session charges ----------------------------------------------


@on_both
async def test_session_charge_is_served_before_queued_normal_requests(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget)
    hogs = [budget.try_acquire(10, key=f"hog{i}") for i in range(10)]
    assert all(h is not None for h in hogs)
    served: list[str] = []

    async def request(i: int) -> None:
        await budget.acquire(10, key=f"request{i}")
        served.append(f"request{i}")

    async def store_result() -> None:
        await manager.get_or_create("user", result="x" * 10)
        served.append("session")

    async with anyio.create_task_group() as tg:
        for i in range(150):  # a burst of new requests, queued first
            tg.start_soon(request, i)
        await waiting(budget, 150)
        tg.start_soon(store_result)
        await waiting(budget, 151)
        budget.release(hogs[0])  # room for exactly one of them
        await waiting(budget, 150)
        await wait_all_tasks_blocked()
        assert served == ["session"]
        tg.cancel_scope.cancel()
    assert manager.stats().budget_bytes == 10 and budget.current_usage == 100
    allocation = next(iter(manager._table)).allocations[0]
    assert allocation.priority == 75 and allocation.evictable is False


@on_both
async def test_at_normal_priority_the_session_would_queue_behind_requests(
    clock: ManualClock,
) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget, budget_priority=Priority.NORMAL)
    assert budget.try_acquire(90, key="rest") is not None
    piece = budget.try_acquire(10, key="piece")
    assert piece is not None
    served: list[str] = []

    async def request() -> None:
        await budget.acquire(10, key="request")
        served.append("request")

    async def store_result() -> None:
        await manager.get_or_create("user", result="x" * 10)
        served.append("session")

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await waiting(budget, 1)
        tg.start_soon(store_result)
        await waiting(budget, 2)
        budget.release(piece)  # room for exactly one: FIFO within a priority
        await waiting(budget, 1)
        await wait_all_tasks_blocked()
        assert served == ["request"]
        tg.cancel_scope.cancel()
    assert manager.stats().sessions == 0 and manager.stats().keys == 0
    assert_no_leak(budget, manager, 100)


@on_both
async def test_session_charges_evict_lower_priority_evictable_reservations(
    clock: ManualClock,
) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget)
    evicted: list[str] = []
    cache = budget.try_acquire(
        90,
        key="cache",
        priority=Priority.LOW,
        evictable=True,
        on_evict=lambda a: evicted.append(a.key),
    )
    assert cache is not None
    await manager.get_or_create("user", result="x" * 20)
    assert evicted == ["cache"] and budget.current_usage == 20


@on_both_autojump
async def test_growth_past_a_full_budget_times_out_keeping_old_data(clock: ManualClock) -> None:
    budget = MemoryManager(100)
    manager = make(clock, budget=budget, budget_timeout=timeout_for(5.0))
    session = await manager.get_or_create("user", result="x" * 10)
    hog = budget.try_acquire(90, key="requests")
    assert hog is not None
    with pytest.raises(AllocationTimeoutError):
        await manager.update_session(session.session_id, result="y" * 40)
    kept = manager.get_session(session.session_id)
    assert kept is not None and kept.data == {"result": "x" * 10} and kept.nbytes == 10
    assert_no_leak(budget, manager, 90)
    assert budget.get_stats().timeouts == 1
    budget.release(hog)
    await manager.update_session(session.session_id, result="y" * 40)
    assert_no_leak(budget, manager)
    assert budget.current_usage == 40
