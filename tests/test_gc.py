"""GCController: profiles, measured collections, pauses, cleanup callbacks, pause stats."""

from __future__ import annotations

import gc
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from both_backends import on_both
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memwarden.errors import GCError
from memwarden.gc import (
    PROFILES,
    GarbageCollectionManager,
    GarbageCollectionOptimizer,
    GCController,
    GCPauseStats,
    GCStats,
    _PauseRecorder,
    pause_depth,
)


@pytest.fixture(autouse=True)
def _collector_left_as_found() -> Iterator[None]:
    """Every test leaves thresholds, the enabled flag and gc.callbacks as it found them."""
    thresholds = gc.get_threshold()
    enabled = gc.isenabled()
    callbacks = _ours()
    yield
    assert pause_depth() == 0
    assert gc.isenabled() == enabled
    assert gc.get_threshold() == thresholds
    assert _ours() == callbacks


def _ours() -> list[object]:
    # Other libraries (hypothesis, for one) add hooks of their own; only ours must not leak.
    return [cb for cb in gc.callbacks if isinstance(cb, _PauseRecorder)]


@pytest.fixture
def ctl() -> Iterator[GCController]:
    with GCController() as controller:
        yield controller


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _make_cycles(count: int) -> None:
    for _ in range(count):
        a, b = _Node(), _Node()
        a.other, b.other = b, a


# -- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["low", "moderate", "high"])
def test_profiles_apply_and_restore(level: str) -> None:
    before = gc.get_threshold()
    with GCController(level) as controller:  # type: ignore[arg-type]
        assert controller.configure() == PROFILES[level]
        assert gc.get_threshold() == PROFILES[level]
        assert controller.aggressiveness == level
        assert controller.restore() == before
        assert gc.get_threshold() == before


def test_profiles_are_ordered_by_aggressiveness() -> None:
    assert PROFILES["low"] > PROFILES["moderate"] > PROFILES["high"]
    assert PROFILES["moderate"] == (700, 10, 10)


def test_configure_twice_restores_the_original() -> None:
    before = gc.get_threshold()
    with GCController("high") as high, GCController("low") as low:
        high.configure()
        high.configure()
        low.configure()
        assert gc.get_threshold() == PROFILES["low"]
        low.restore()
        assert gc.get_threshold() == PROFILES["high"]
        high.restore()
    assert gc.get_threshold() == before


def test_restore_without_configure_is_a_no_op(ctl: GCController) -> None:
    assert ctl.restore() == gc.get_threshold()


def test_explicit_thresholds_and_seed_alias() -> None:
    with GCController(thresholds=(1000, 15, 15)) as a:
        assert a.thresholds == (1000, 15, 15)
    with GCController(gc_threshold=[500]) as b:
        assert b.thresholds == (500, 10, 10)
        assert b.configure_gc() == (500, 10, 10)
        b.restore()
        assert b.optimize_gc_settings() == (500, 10, 10)
    with GCController("high", thresholds=(1, 2, 3), gc_threshold=(1, 2, 3)) as c:
        assert c.thresholds == (1, 2, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        (("extreme",), {}, ValueError, "aggressiveness"),
        ((3,), {}, TypeError, "aggressiveness"),
        ((), {"thresholds": (700, -1, 10)}, ValueError, r"thresholds\[1\]"),
        ((), {"thresholds": (700, 1.5)}, TypeError, r"thresholds\[1\]"),
        ((), {"thresholds": "700"}, TypeError, "thresholds"),
        ((), {"thresholds": ()}, ValueError, "thresholds"),
        ((), {"thresholds": (1, 2, 3, 4)}, ValueError, "thresholds"),
        ((), {"gc_threshold": (True,)}, TypeError, "gc_threshold"),
        ((), {"thresholds": (1, 2, 3), "gc_threshold": (3, 2, 1)}, ValueError, "disagree"),
        ((), {"cleanup_timeout": -1}, ValueError, "cleanup_timeout"),
        ((), {"track_pauses": "yes"}, TypeError, "track_pauses"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    callbacks = len(_ours())
    with pytest.raises(error, match=fragment):
        GCController(*args, **kwargs)
    assert len(_ours()) == callbacks  # nothing installed by a failed constructor


# -- collections ----------------------------------------------------------------------------


def test_collect_with_stats_collects_a_real_cycle(ctl: GCController) -> None:
    gc.collect()
    with ctl.paused():  # no automatic collection may take the cycles first
        _make_cycles(200)
        stats = ctl.collect_with_stats(2)
    assert isinstance(stats, GCStats)
    assert stats.collected >= 400  # 400 nodes, plus their attribute dicts
    assert stats.uncollectable == 0
    assert stats.generation == 2
    assert stats.duration_ms >= 0
    assert stats.memory_before > 0 and stats.memory_after > 0
    assert stats.freed == stats.memory_before - stats.memory_after
    assert stats["collected"] == stats.collected
    assert stats.get("duration_ms") == stats.duration_ms
    assert stats.get("nope", 7) == 7
    assert "memory_after" in list(stats.keys())
    with pytest.raises(KeyError):
        stats["nope"]
    json.dumps(stats.to_dict())


def test_collect_younger_generation(ctl: GCController) -> None:
    with ctl.paused():
        _make_cycles(10)
        stats = ctl.collect_with_stats(0)
    assert stats.generation == 0 and stats.collected >= 20


def test_seed_collection_dict(ctl: GCController) -> None:
    with ctl.paused():
        _make_cycles(5)
        result = ctl.perform_optimized_collection()
    assert result["collected"] >= 10 and "duration_ms" in result


@pytest.mark.parametrize(
    ("generation", "error"), [(3, ValueError), (-1, ValueError), ("2", TypeError)]
)
def test_collect_bad_generation(ctl: GCController, generation: Any, error: type) -> None:
    with pytest.raises(error, match="generation"):
        ctl.collect_with_stats(generation)


def test_collector_failure_is_a_gc_error(
    ctl: GCController, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(generation: int = 2) -> int:
        raise RuntimeError("collector broke")

    monkeypatch.setattr(gc, "collect", broken)
    with pytest.raises(GCError, match="collector broke"):
        ctl.collect_with_stats()


# -- pauses ---------------------------------------------------------------------------------


def test_paused_nests_sync(ctl: GCController) -> None:
    assert gc.isenabled()
    with ctl.paused():
        assert not gc.isenabled()
        with ctl.paused():
            assert pause_depth() == 2
        assert not gc.isenabled()
    assert gc.isenabled()


def test_paused_restores_after_an_exception(ctl: GCController) -> None:
    with pytest.raises(ValueError), ctl.paused(), ctl.paused():
        raise ValueError("inside")
    assert gc.isenabled() and pause_depth() == 0


def test_paused_keeps_a_disabled_collector_disabled(ctl: GCController) -> None:
    gc.disable()
    try:
        with ctl.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@on_both
async def test_paused_nests_async_across_tasks(ctl: GCController) -> None:
    inside = anyio.Event()
    leave = anyio.Event()

    async def hold() -> None:
        async with ctl.paused():
            inside.set()
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await inside.wait()
        async with ctl.paused():
            assert pause_depth() == 2
        assert not gc.isenabled()  # the other task's block is still open
        leave.set()
    assert gc.isenabled()


@on_both
async def test_paused_async_restores_after_an_exception(ctl: GCController) -> None:
    with pytest.raises(RuntimeError):
        async with ctl.paused():
            raise RuntimeError("boom")
    assert gc.isenabled()


@on_both
async def test_paused_async_restores_after_cancellation(ctl: GCController) -> None:
    with anyio.move_on_after(0):
        async with ctl.paused():
            await anyio.sleep_forever()
    assert gc.isenabled() and pause_depth() == 0


def test_paused_across_threads(ctl: GCController) -> None:
    entered = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with ctl.paused():
            entered.set()
            release.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait()
    with ctl.paused():
        pass
    assert not gc.isenabled()
    release.set()
    thread.join()
    assert gc.isenabled()


def test_paused_block_cannot_be_entered_twice(ctl: GCController) -> None:
    block = ctl.paused()
    with block:
        with pytest.raises(RuntimeError), block:
            pass
        assert pause_depth() == 1
    assert gc.isenabled()
    with ctl.disable_gc_temporarily():
        assert not gc.isenabled()


class PauseMachine(RuleBasedStateMachine):
    """Blocks entered and left in any order, with the user toggling the collector between."""

    def __init__(self) -> None:
        super().__init__()
        self.ctl = GCController(track_pauses=False)
        self.open: list[Any] = []
        self.user_enabled = gc.isenabled()

    @rule()
    def enter(self) -> None:
        block = self.ctl.paused()
        block.__enter__()
        self.open.append(block)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def leave_any(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.open) - 1))
        self.open.pop(index).__exit__(None, None, None)

    @precondition(lambda self: not self.open)
    @rule(enabled=st.booleans())
    def user_toggles(self, enabled: bool) -> None:
        if enabled:
            gc.enable()
        else:
            gc.disable()
        self.user_enabled = enabled

    @invariant()
    def collector_state(self) -> None:
        assert pause_depth() == len(self.open)
        assert gc.isenabled() == (self.user_enabled and not self.open)

    def teardown(self) -> None:
        for block in self.open:
            block.__exit__(None, None, None)
        gc.enable()


TestPauseMachine = PauseMachine.TestCase
TestPauseMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


# -- cleanup callbacks ----------------------------------------------------------------------


@on_both
async def test_run_cleanup_sync_and_async_with_failures(
    ctl: GCController, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    def good_sync() -> int:
        ran.append("sync")
        return 1000  # bytes freed

    async def good_async() -> int:
        await anyio.lowlevel.checkpoint()
        ran.append("async")
        return 24

    def reports_nothing() -> None:
        ran.append("silent")

    def bad_sync() -> None:
        raise RuntimeError("sync failure")

    async def bad_async() -> None:
        raise OSError("async failure")

    for callback in (bad_sync, good_sync, bad_async, good_async, reports_nothing):
        ctl.register_cleanup_callback(callback)
    with caplog.at_level(logging.ERROR, logger="memwarden.gc"):
        assert await ctl.run_cleanup() == 1024  # the bytes the callbacks reported
    assert ran == ["sync", "async", "silent"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "bad_sync" in messages and "bad_async" in messages


@on_both
async def test_slow_async_callback_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    after: list[bool] = []

    def reports_seven() -> int:
        after.append(True)
        return 7

    with GCController(cleanup_timeout=0) as controller:
        controller.register_cleanup_callback(anyio.sleep_forever)
        controller.register_cleanup_callback(reports_seven)
        with caplog.at_level(logging.WARNING, logger="memwarden.gc"):
            assert await controller.run_cleanup() == 7
    assert after == [True]
    assert "timed out" in caplog.text


@on_both
async def test_run_cleanup_cancellation_propagates(ctl: GCController) -> None:
    started = anyio.Event()
    later: list[bool] = []

    async def waits() -> None:
        started.set()
        await anyio.sleep_forever()

    ctl.register_cleanup_callback(waits)
    ctl.register_cleanup_callback(lambda: later.append(True))
    async with anyio.create_task_group() as tg:
        tg.start_soon(ctl.run_cleanup)
        await started.wait()
        tg.cancel_scope.cancel()
    assert later == []


def test_register_and_unregister(ctl: GCController) -> None:
    def callback() -> None:
        pass

    with pytest.raises(TypeError, match="callback"):
        ctl.register_cleanup_callback("not callable")  # type: ignore[arg-type]
    ctl.register_cleanup_callback(callback)
    assert ctl.unregister_cleanup_callback(callback) is True
    assert ctl.unregister_cleanup_callback(callback) is False


@on_both
async def test_emergency_runs_the_whole_sequence(ctl: GCController) -> None:
    ran: list[bool] = []
    ctl.register_cleanup_callback(lambda: ran.append(True))
    ctl.register_cleanup_callback(lambda: 4096)
    ctl.register_cleanup_callback(lambda: True)  # a bool is not a byte count
    async with ctl.paused():
        _make_cycles(50)
        stats = await ctl.emergency()
    assert ran == [True]
    assert stats.generation == 2 and stats.collected >= 100
    assert stats.cleanups == 3 and stats.cleanup_bytes == 4096
    assert isinstance(stats.trimmed, bool)
    assert stats.to_dict()["cleanups"] == 3


# -- lifecycle monitoring -------------------------------------------------------------------


def test_monitor_object_lifecycle(ctl: GCController) -> None:
    first, second = _Node(), _Node()
    ref = ctl.monitor_object_lifecycle(first, "first")
    ctl.monitor_object_lifecycle(second, "second")
    assert ref() is first
    assert ctl.alive_objects() == ["first", "second"]
    del first
    gc.collect()
    assert ref() is None
    assert ctl.alive_objects() == ["second"]
    replacement = _Node()
    ctl.monitor_object_lifecycle(replacement, "second")
    del second
    gc.collect()
    assert ctl.alive_objects() == ["second"]  # the name now follows the replacement
    del replacement


def test_monitor_bad_input(ctl: GCController) -> None:
    with pytest.raises(TypeError, match="weak"):
        ctl.monitor_object_lifecycle(12345, "int")
    with pytest.raises(TypeError, match="name"):
        ctl.monitor_object_lifecycle(_Node(), 5)  # type: ignore[arg-type]
    assert ctl.alive_objects() == []


# -- pause statistics -----------------------------------------------------------------------


def test_pause_stats_recorded(ctl: GCController) -> None:
    assert ctl.installed
    before = ctl.pause_stats()
    gc.collect(0)
    gc.collect(2)
    after = ctl.pause_stats()
    assert isinstance(after, GCPauseStats)
    assert after.count[0] >= before.count[0] + 1
    assert after.count[2] >= before.count[2] + 1
    for gen in range(3):
        assert after.total_ms[gen] >= after.max_ms[gen] >= 0
    assert after.total_count >= 2 and after.longest_ms >= 0
    shape = after.to_dict()
    assert [g["generation"] for g in shape["generations"]] == [0, 1, 2]
    json.dumps(shape)


def test_uninstall_stops_recording() -> None:
    controller = GCController()
    controller.uninstall()
    controller.uninstall()
    assert not controller.installed
    gc.collect()
    assert controller.pause_stats().total_count == 0
    controller.install()
    controller.install()
    assert gc.callbacks.count(controller._recorder) == 1
    controller.close()
    assert not controller.installed


def test_hook_goes_away_with_the_controller() -> None:
    controller = GCController()
    recorder = controller._recorder
    assert recorder in gc.callbacks
    del controller
    gc.collect()
    assert recorder not in gc.callbacks


def test_track_pauses_off() -> None:
    with GCController(track_pauses=False) as controller:
        assert not controller.installed


def test_report_is_json(ctl: GCController) -> None:
    ctl.configure()
    report = ctl.report()
    json.dumps(report)
    assert report["thresholds"] == [700, 10, 10]
    assert report["current_thresholds"] == [700, 10, 10]
    assert report["enabled"] is True


def test_seed_names() -> None:
    assert GarbageCollectionManager is GCController
    assert GarbageCollectionOptimizer is GCController


@on_both
async def test_budget_optimize_uses_the_controller() -> None:
    from memwarden.budget import MemoryManager

    ran: list[str] = []

    def frees_a_megabyte() -> int:
        ran.append("cleanup")
        return 1 << 20

    with GCController() as controller:
        controller.register_cleanup_callback(frees_a_megabyte)
        budget = MemoryManager(1 << 30, gc_controller=controller)
        before = controller.pause_stats().count[2]
        freed = await budget.optimize()
        assert ran == ["cleanup"]
        assert freed >= 1 << 20  # what the callback reported, plus any RSS drop
        assert controller.pause_stats().count[2] >= before + 1  # a full collection ran
        budget.close()


def test_upkeep_decides_emergency_and_collection_with_a_cooldown() -> None:
    from memwarden.gc import Upkeep
    from memwarden.testing import ManualClock, StaticProbe

    clock = ManualClock()
    upkeep = Upkeep(emergency_below=100, proactive_at=0.9, cooldown=5.0, clock=clock)
    probe = StaticProbe(used=500, limit=1000)
    assert upkeep.due(probe.sample()) is None
    probe.set(used=910)
    assert upkeep.due(probe.sample()) == "emergency"  # 90 available < 100, and 91 % used
    assert upkeep.due(probe.sample()) is None
    clock.advance(5.0)
    probe.set(used=880, limit=1000)
    assert upkeep.due(probe.sample()) is None  # neither line is crossed
    probe.set(used=895)
    assert upkeep.due(probe.sample()) is None  # 89.5 % < 90 %
    probe.set(used=900)
    assert upkeep.due(probe.sample()) == "collect"
    assert Upkeep().due(probe.sample()) is None  # both off by default
    for kwargs, error in (
        ({"emergency_below": -1}, ValueError),
        ({"emergency_below": 1.5}, TypeError),
        ({"proactive_at": 0}, ValueError),
        ({"proactive_at": float("nan")}, ValueError),
        ({"proactive_at": "90"}, TypeError),
        ({"cooldown": -1.0}, ValueError),
    ):
        with pytest.raises(error, match=next(iter(kwargs))):
            Upkeep(**kwargs)  # type: ignore[arg-type]
