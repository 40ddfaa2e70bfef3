"""The broadcaster behind pressure and leak event streams."""

from __future__ import annotations

import gc
import threading
from collections import deque

import anyio
import anyio.abc
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memwarden._broadcast import Broadcaster, Subscription


def drain(sub: Subscription[int]) -> list[int]:
    out = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except anyio.WouldBlock:
            return out


@on_both
async def test_every_subscriber_gets_every_item() -> None:
    b: Broadcaster[int] = Broadcaster()
    s1, s2 = b.subscribe(), b.subscribe()
    for i in range(3):
        b.publish(i)
    assert [await s1.receive() for _ in range(3)] == [0, 1, 2]
    assert drain(s2) == [0, 1, 2]
    assert b.subscribers == 2
    assert b.statistics().published == 3


@on_both
async def test_drop_oldest_counts_dropped() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe(buffer=3)
    for i in range(10):
        b.publish(i)
    assert sub.dropped == 7
    assert sub.peak_pending == 3
    assert drain(sub) == [7, 8, 9]
    assert b.statistics().max_dropped == 7


@on_both
async def test_latest_conflates_to_newest() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe(buffer=8, overflow="latest")
    for i in range(5):
        b.publish(i)
    assert sub.dropped == 4
    assert drain(sub) == [4]
    b.publish(5)
    assert drain(sub) == [5]
    assert sub.dropped == 4


@on_both
async def test_initial_items_come_first_and_bypass_accept() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe(initial=[-1], accept=lambda x: x % 2 == 0)
    for i in range(4):
        b.publish(i)
    assert drain(sub) == [-1, 0, 2]


@on_both
async def test_slow_subscriber_blocks_nobody() -> None:
    b: Broadcaster[int] = Broadcaster()
    slow = b.subscribe(buffer=1)
    fast = b.subscribe(buffer=1)
    got: list[int] = []
    send_ack, receive_ack = anyio.create_memory_object_stream[int](1)

    async def reader() -> None:
        async for item in fast:
            got.append(item)
            await send_ack.send(item)
            if item == 99:
                return

    async with anyio.create_task_group() as tg, send_ack, receive_ack:
        tg.start_soon(reader)
        for i in range(100):
            b.publish(i)
            assert await receive_ack.receive() == i
    assert got == list(range(100))
    assert slow.dropped == 99
    assert drain(slow) == [99]


@on_both
async def test_filter_that_raises_removes_only_that_subscriber(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b: Broadcaster[int] = Broadcaster()

    def bad(item: int) -> bool:
        if item == 2:
            raise RuntimeError("boom")
        return True

    broken = b.subscribe(accept=bad)
    good = b.subscribe()
    for i in range(4):
        b.publish(i)
    assert b.subscribers == 1
    assert drain(good) == [0, 1, 2, 3]
    # The broken subscription still hands over what it buffered, then reports why it ended.
    assert broken.receive_nowait() == 0
    assert broken.receive_nowait() == 1
    with pytest.raises(anyio.BrokenResourceError) as info:
        await broken.receive()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "boom" in caplog.text


@on_both
async def test_garbage_collected_subscription_is_forgotten() -> None:
    b: Broadcaster[int] = Broadcaster()
    keep = b.subscribe()
    b.subscribe()  # dropped immediately
    gc.collect()
    assert b.subscribers == 1
    b.publish(1)
    assert drain(keep) == [1]


@on_both
async def test_context_manager_and_aclose_unsubscribe() -> None:
    b: Broadcaster[int] = Broadcaster()
    async with b.subscribe() as sub:
        assert b.subscribers == 1
    assert b.subscribers == 0
    assert sub.closed
    with pytest.raises(anyio.ClosedResourceError):
        sub.receive_nowait()
    other = b.subscribe()
    await other.aclose()
    await other.aclose()  # idempotent
    assert b.subscribers == 0
    b.publish(1)  # nobody left: still fine


@on_both
async def test_close_ends_iteration_after_buffered_items() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    b.publish(1)
    b.publish(2)
    b.close()
    b.close()
    assert [x async for x in sub] == [1, 2]
    with pytest.raises(anyio.EndOfStream):
        sub.receive_nowait()
    assert b.subscribers == 0
    b.publish(3)  # no-op after close
    late = b.subscribe(initial=[7])
    assert [x async for x in late] == [7]


@on_both
async def test_close_wakes_parked_receiver() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    result: list[int] = []

    async def reader() -> None:
        result.extend([x async for x in sub])

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        assert sub.waiting == 1
        b.close()
    assert result == []


@on_both
async def test_subscription_close_wakes_parked_receiver() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()

    async def reader() -> None:
        with pytest.raises(anyio.ClosedResourceError):
            await sub.receive()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        sub.close()
    assert sub.waiting == 0


@on_both
async def test_cancelled_receive_leaves_no_waiter_and_no_lost_item() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sub.receive()
    assert scope.cancelled_caught
    assert sub.waiting == 0 and sub._parked == []

    async with anyio.create_task_group() as tg:

        async def reader() -> None:
            await sub.receive()

        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        # Item published and the receiver cancelled in the same step: the item stays buffered.
        b.publish(5)
        tg.cancel_scope.cancel()
    assert sub.waiting == 0 and sub._parked == []
    assert sub.pending in (0, 1)
    if sub.pending:
        assert sub.receive_nowait() == 5


@on_both
async def test_timed_out_receive_leaves_no_waiter() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            await sub.receive()
    assert sub.waiting == 0 and sub._parked == []
    b.publish(1)
    assert await sub.receive() == 1


@on_both
async def test_two_receivers_share_one_subscription() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    got: list[int] = []

    async def reader() -> None:
        got.append(await sub.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        assert sub.waiting == 2
        b.publish(1)
        await wait_all_tasks_blocked()
        b.publish(2)
    assert sorted(got) == [1, 2]
    assert sub.waiting == 0 and sub._parked == []


@on_both
async def test_publish_from_another_thread_wakes_receiver() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe(buffer=1000)

    def publisher() -> None:
        for i in range(500):
            b.publish(i)

    got: list[int] = []
    done = anyio.Event()

    async def reader() -> None:
        while len(got) < 500:
            got.append(await sub.receive())
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        thread = threading.Thread(target=publisher)
        thread.start()
        with anyio.fail_after(10):
            await done.wait()
        thread.join()
    assert got == list(range(500))
    assert sub.dropped == 0


def _without_anyio_run_sync_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    # anyio 4.11 to 4.14 have no backend_class.run_sync_soon: take it away here too,
    # so nothing in memwarden may lean on it.
    from anyio._backends._asyncio import AsyncIOBackend
    from anyio._backends._trio import TrioBackend

    for backend_class in (AsyncIOBackend, TrioBackend):
        if hasattr(backend_class, "run_sync_soon"):
            monkeypatch.delattr(backend_class, "run_sync_soon")


@on_both
async def test_one_publish_from_a_thread_wakes_a_parked_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_anyio_run_sync_soon(monkeypatch)
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    got: list[int] = []
    done = anyio.Event()

    async def reader() -> None:
        got.append(await sub.receive())
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        assert sub.waiting == 1
        thread = threading.Thread(target=b.publish, args=(7,))
        thread.start()
        thread.join()
        with anyio.fail_after(5):  # a lost wake-up fails here instead of hanging
            await done.wait()
    assert got == [7]
    assert sub.waiting == 0 and sub._parked == [] and sub.pending == 0


@on_both
async def test_close_from_a_thread_ends_a_parked_iteration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_anyio_run_sync_soon(monkeypatch)
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    done = anyio.Event()

    async def reader() -> None:
        async for _ in sub:
            pass
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        thread = threading.Thread(target=b.close)
        thread.start()
        thread.join()
        with anyio.fail_after(5):
            await done.wait()
    assert sub.waiting == 0 and sub._parked == []


@on_both
async def test_receive_is_a_checkpoint_even_with_an_item_buffered() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    b.publish(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sub.receive()
    assert scope.cancelled_caught
    assert sub.pending == 1  # cancelled: the item is still there
    assert await sub.receive() == 1


@on_both
async def test_cancelled_async_for_leaves_subscription_and_buffer() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    seen: list[int] = []

    async def reader() -> None:
        async for item in sub:
            seen.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_all_tasks_blocked()
        b.publish(1)
        await wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert seen == [1]
    assert sub.waiting == 0 and sub._parked == []
    # Cancelling a receiver does not unsubscribe: later items still arrive.
    assert b.subscribers == 1
    b.publish(2)
    assert drain(sub) == [2]


@on_both
async def test_timed_out_async_for_leaves_subscription_and_buffer() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    with anyio.move_on_after(0.01) as scope:
        async for _ in sub:
            pass
    assert scope.cancelled_caught
    assert sub.waiting == 0 and sub._parked == []
    assert b.subscribers == 1
    b.publish(3)
    assert drain(sub) == [3]


@on_both
async def test_cancelling_one_of_two_receivers_loses_no_item() -> None:
    b: Broadcaster[int] = Broadcaster()
    sub = b.subscribe()
    got: list[int] = []

    async def reader(task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as own:
            task_status.started(own)
            got.append(await sub.receive())

    async with anyio.create_task_group() as tg:
        await tg.start(reader)
        doomed = await tg.start(reader)
        await wait_all_tasks_blocked()
        assert sub.waiting == 2
        b.publish(1)
        doomed.cancel()  # woken and cancelled in the same step
        await wait_all_tasks_blocked()
        # The item went to exactly one receiver, or stayed buffered for the next.
        assert len(got) + sub.pending == 1
        tg.cancel_scope.cancel()
    assert sub.waiting == 0 and sub._parked == []
    assert len(got) + sub.pending == 1


def test_bad_arguments_are_rejected_without_subscribing() -> None:
    b: Broadcaster[int] = Broadcaster()
    with pytest.raises(ValueError, match="buffer must be >= 1, got 0"):
        b.subscribe(buffer=0)
    with pytest.raises(TypeError, match="buffer must be an int"):
        b.subscribe(buffer=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"overflow must be one of .* got 'newest'"):
        b.subscribe(overflow="newest")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="accept must be callable"):
        b.subscribe(accept=3)  # type: ignore[arg-type]
    assert b.subscribers == 0


class BroadcastMachine(RuleBasedStateMachine):
    """The synchronous core against a list-of-deques model."""

    def __init__(self) -> None:
        super().__init__()
        self.b: Broadcaster[int] = Broadcaster()
        self.subs: list[Subscription[int]] = []
        self.model: list[deque[int]] = []
        self.caps: list[int] = []
        self.drops: list[int] = []
        self.live: list[bool] = []
        self.counter = 0

    @rule(buffer=st.integers(1, 5), latest=st.booleans())
    def subscribe(self, buffer: int, latest: bool) -> None:
        sub = self.b.subscribe(buffer=buffer, overflow="latest" if latest else "drop_oldest")
        self.subs.append(sub)
        self.model.append(deque())
        self.caps.append(1 if latest else buffer)
        self.drops.append(0)
        self.live.append(not self.b.closed)

    @rule()
    def publish(self) -> None:
        self.counter += 1
        self.b.publish(self.counter)
        if self.b.closed:
            return
        for i, q in enumerate(self.model):
            if not self.live[i]:
                continue
            if len(q) >= self.caps[i]:
                q.popleft()
                self.drops[i] += 1
            q.append(self.counter)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.subs) - 1))
        sub, q = self.subs[i], self.model[i]
        if sub._closed:
            with pytest.raises(anyio.ClosedResourceError):
                sub.receive_nowait()
        elif q:
            assert sub.receive_nowait() == q.popleft()
        elif not self.live[i]:
            with pytest.raises(anyio.EndOfStream):
                sub.receive_nowait()
        else:
            with pytest.raises(anyio.WouldBlock):
                sub.receive_nowait()

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def close_one(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.subs) - 1))
        self.subs[i].close()
        self.live[i] = False
        self.model[i].clear()

    @rule()
    def close_all(self) -> None:
        self.b.close()
        self.live = [False] * len(self.live)

    @invariant()
    def matches_model(self) -> None:
        for sub, q, drops in zip(self.subs, self.model, self.drops, strict=True):
            assert list(sub._buffer) == list(q)
            assert sub.dropped == drops
        assert self.b.subscribers == sum(self.live)


TestBroadcastMachine = BroadcastMachine.TestCase
TestBroadcastMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
