"""MemoryProfiler, ProfileSnapshot, monitor_function_memory and memory_efficient_context."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import os
import pickle
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memwarden.profiler as profiler_module
from memwarden.profiler import (
    ContextMemoryStats,
    MemoryProfiler,
    ProfileSnapshot,
    function_memory_stats,
    get_function_stats,
    memory_efficient_context,
    monitor_function_memory,
    reset_function_stats,
)
from memwarden.testing import ManualClock, StaticProbe

HERE = os.path.normcase(os.path.abspath(__file__))
MEMWARDEN_DIR = os.path.dirname(os.path.abspath(profiler_module.__file__))
THIS_PACKAGE = __name__.split(".")[0]


@pytest.fixture(autouse=True)
def _restore_tracemalloc() -> Iterator[None]:
    """Each test leaves tracemalloc, the tracing refcount and the registry as it found them."""
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    reset_function_stats()
    yield
    assert profiler_module._tracing.refs == 0, "a test left a tracing reference held"
    assert profiler_module._registry.active_calls == 0, "a monitored call is still in flight"
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    if was_tracing:
        tracemalloc.start()
    reset_function_stats()


def _allocate(n: int = 200, size: int = 1000) -> tuple[list[bytearray], int]:
    """Allocate ``n`` blocks of ``size`` bytes on one line; return them and that line's number."""
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    blocks = [bytearray(size) for _ in range(n)]
    return blocks, line


# --- start / stop ------------------------------------------------------------------------


def test_start_stop_is_refcounted() -> None:
    profiler = MemoryProfiler()
    assert not profiler.is_profiling
    profiler.start_profiling()
    profiler.start_profiling()
    assert tracemalloc.is_tracing() and profiler.is_profiling
    profiler.stop_profiling()
    assert tracemalloc.is_tracing(), "one start is still outstanding"
    profiler.stop_profiling()
    assert not tracemalloc.is_tracing()
    profiler.stop_profiling()  # extra stops are harmless
    assert not tracemalloc.is_tracing()


def test_tracing_started_by_the_user_survives_the_last_stop() -> None:
    tracemalloc.start()
    profiler = MemoryProfiler()
    profiler.start_profiling()
    profiler.stop_profiling()
    assert tracemalloc.is_tracing()


def test_two_profilers_share_one_reference_count() -> None:
    first, second = MemoryProfiler(), MemoryProfiler()
    first.start_profiling()
    second.start_profiling()
    first.stop_profiling()
    assert tracemalloc.is_tracing()
    second.stop_profiling()
    assert not tracemalloc.is_tracing()


def test_snapshot_without_tracing_raises() -> None:
    with pytest.raises(RuntimeError, match="start_profiling"):
        MemoryProfiler().take_snapshot()


class TracingMachine(RuleBasedStateMachine):
    """Profilers, monitored calls and the user toggling tracemalloc never disagree about tracing."""

    def __init__(self) -> None:
        super().__init__()
        self.profilers = [MemoryProfiler() for _ in range(3)]
        self.starts = [0, 0, 0]
        self.user_tracing = False

    @rule(i=st.integers(0, 2))
    def start(self, i: int) -> None:
        self.profilers[i].start_profiling()
        self.starts[i] += 1

    @rule(i=st.integers(0, 2))
    def stop(self, i: int) -> None:
        self.profilers[i].stop_profiling()
        self.starts[i] = max(0, self.starts[i] - 1)

    @precondition(lambda self: sum(self.starts) == 0)
    @rule()
    def user_toggles(self) -> None:
        if self.user_tracing:
            tracemalloc.stop()
        else:
            tracemalloc.start()
        self.user_tracing = not self.user_tracing

    @rule(trace=st.booleans())
    def monitored_call(self, trace: bool) -> None:
        before = tracemalloc.is_tracing()
        monitor_function_memory(trace=trace)(lambda: bytearray(64))()
        assert tracemalloc.is_tracing() == before

    @invariant()
    def tracing_matches_the_model(self) -> None:
        held = sum(self.starts)
        assert profiler_module._tracing.refs == held
        assert tracemalloc.is_tracing() == (held > 0 or self.user_tracing)

    def teardown(self) -> None:
        for i, profiler in enumerate(self.profilers):
            for _ in range(self.starts[i]):
                profiler.stop_profiling()
        if tracemalloc.is_tracing():
            tracemalloc.stop()


TestTracingMachine = TracingMachine.TestCase
TestTracingMachine.settings = settings(max_examples=30, stateful_step_count=20)


# --- snapshots and top consumers ---------------------------------------------------------


def test_top_consumers_by_line_file_and_package() -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        blocks, line = _allocate()
        by_line = profiler.top_consumers(limit=100, group_by="lineno")
        mine = [
            r for r in by_line if os.path.normcase(r["filename"]) == HERE and r["lineno"] == line
        ]
        assert len(mine) == 1
        assert mine[0]["size"] >= 200 * 1000 and mine[0]["count"] >= 200
        assert mine[0]["location"] == f"{mine[0]['filename']}:{line}"
        assert mine[0]["package"] == THIS_PACKAGE
        assert set(mine[0]) == {"location", "filename", "lineno", "package", "size", "count"}

        by_file = profiler.top_consumers(limit=100, group_by="filename")
        row = next(r for r in by_file if os.path.normcase(r["filename"]) == HERE)
        assert row["size"] >= 200 * 1000
        assert set(row) == {"location", "filename", "package", "size", "count"}

        by_package = profiler.top_consumers(limit=100, group_by="package")
        row = next(r for r in by_package if r["package"] == THIS_PACKAGE)
        assert row["size"] >= 200 * 1000 and row["location"] == THIS_PACKAGE
        sizes = [r["size"] for r in by_package]
        assert sizes == sorted(sizes, reverse=True)
        assert len(profiler.top_consumers(limit=1)) == 1
        del blocks
    finally:
        profiler.stop_profiling()


def test_snapshot_hides_memwarden_and_tracemalloc_frames() -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        blocks, _ = _allocate(50)
        for _ in range(3):
            profiler.take_snapshot()  # the history itself is allocated by memwarden
        snap = profiler.take_snapshot()
        del blocks
        files = {os.path.normcase(f) for f in snap.sizes("filename")}
        assert not any(f.startswith(os.path.normcase(MEMWARDEN_DIR)) for f in files)
        assert os.path.normcase(tracemalloc.__file__) not in files
        assert snap.traced_current >= snap.total_size > 0
        assert snap.traced_peak >= snap.traced_current
        assert snap.tracemalloc_overhead > 0
        assert snap.traceback_limit == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            snap.timestamp = 0.0  # type: ignore[misc]
    finally:
        profiler.stop_profiling()


def test_compare_lists_growing_sites_first() -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        older = profiler.take_snapshot()
        blocks, line = _allocate(300, 1000)
        newer = profiler.take_snapshot()
        rows = profiler.compare(older, newer, limit=5)
        assert rows[0]["lineno"] == line and os.path.normcase(rows[0]["filename"]) == HERE
        assert rows[0]["size_diff"] >= 300 * 1000 and rows[0]["count_diff"] >= 300
        assert all(r["size_diff"] > 0 for r in rows)
        diffs = [r["size_diff"] for r in rows]
        assert diffs == sorted(diffs, reverse=True)
        assert profiler.compare(newer, newer) == []
        del blocks
    finally:
        profiler.stop_profiling()


def test_trends_over_history(clock: ManualClock) -> None:
    profiler = MemoryProfiler(clock=clock, history=10)
    empty = profiler.analyze_memory_trends()
    assert empty["snapshots"] == 0 and empty["trend"] == "stable" and empty["growing_sites"] == []
    profiler.start_profiling()
    try:
        hoard: list[bytearray] = []
        line = inspect.currentframe().f_lineno + 3  # type: ignore[union-attr]
        for _ in range(6):
            for _ in range(100):
                hoard.append(bytearray(2000))
            profiler.take_snapshot()
            clock.advance(10.0)
        trends = profiler.analyze_memory_trends(limit=3)
    finally:
        profiler.stop_profiling()
    assert trends["snapshots"] == 6 and trends["duration"] == pytest.approx(50.0)
    assert trends["total_growth"] >= 5 * 100 * 2000
    assert trends["growth_rate"] == pytest.approx(trends["total_growth"] / 50.0)
    assert trends["trend"] == "increasing"
    assert set(trends["leak"]) == {"is_leak", "score", "trend", "growth_rate", "samples"}
    assert trends["samples"] == 6
    top = trends["growing_sites"][0]
    assert top["lineno"] == line and os.path.normcase(top["filename"]) == HERE
    assert top["growth"] == top["last_size"] - top["first_size"] >= 5 * 100 * 2000
    assert top["trend"] == "increasing"
    assert top["growth_rate"] == pytest.approx(top["growth"] / 50.0)
    assert len(profiler.snapshots()) == 6
    profiler.clear_snapshots()
    assert profiler.snapshots() == []


def test_history_is_bounded() -> None:
    profiler = MemoryProfiler(history=3)
    profiler.start_profiling()
    try:
        for _ in range(5):
            profiler.take_snapshot()
        profiler.take_snapshot(record=False)
    finally:
        profiler.stop_profiling()
    assert len(profiler.snapshots()) == 3


def test_memory_report_shape() -> None:
    probe = StaticProbe(used=300, limit=1000)
    profiler = MemoryProfiler(probe=probe)
    profiler.start_profiling()
    try:
        blocks, _ = _allocate(20)
        monitor_function_memory(name="report.fn")(lambda: None)()
        report = profiler.get_memory_report(limit=5)
        del blocks
    finally:
        profiler.stop_profiling()
    assert set(report) == {
        "timestamp", "profiling", "tracemalloc", "process_memory", "system_memory",
        "top_consumers", "snapshot_count", "memory_trends", "function_stats",
    }  # fmt: skip
    assert report["profiling"] is True
    assert set(report["tracemalloc"]) == {
        "tracing", "traceback_limit", "traced_current", "traced_peak", "overhead",
    }  # fmt: skip
    assert report["tracemalloc"]["overhead"] > 0 and report["tracemalloc"]["tracing"] is True
    assert report["system_memory"] == {
        "total": 1000, "available": 700, "used": 300, "percentage": 30.0,
    }  # fmt: skip
    assert set(report["process_memory"]) == {"rss", "vms"}
    assert 0 < len(report["top_consumers"]) <= 5
    assert report["function_stats"]["report.fn"]["calls"] == 1
    json.dumps(report)  # JSON-able as it is


def test_memory_report_while_not_tracing() -> None:
    report = MemoryProfiler(probe=StaticProbe()).get_memory_report()
    assert report["profiling"] is False and report["top_consumers"] == []
    assert report["tracemalloc"]["tracing"] is False


@on_both
async def test_dump_pickle_round_trip(tmp_path: Path) -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        blocks, _ = _allocate()
        snap = profiler.take_snapshot()
        await profiler.dump(tmp_path / "snap.pickle")
    finally:
        profiler.stop_profiling()
    loaded = ProfileSnapshot.load(tmp_path / "snap.pickle")
    assert loaded.sizes("lineno") == snap.sizes("lineno")
    assert loaded.top(5) == snap.top(5)
    # The file is tracemalloc's own format.
    raw = tracemalloc.Snapshot.load(str(tmp_path / "snap.pickle"))
    assert len(raw.traces) == len(snap.snapshot.traces)
    del blocks


def test_dump_json_round_trip_on_trio(tmp_path: Path) -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        snap = profiler.take_snapshot()

        async def main() -> None:
            await profiler.dump(str(tmp_path / "snap.json"), format="json", limit=7, snapshot=snap)

        anyio.run(main, backend="trio")
    finally:
        profiler.stop_profiling()
    data = json.loads((tmp_path / "snap.json").read_text())
    assert data == json.loads(json.dumps(snap.to_dict(limit=7)))
    assert len(data["top_consumers"]) <= 7


@on_both
async def test_dump_cancelled_leaves_no_file(tmp_path: Path) -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        snap = profiler.take_snapshot()
        (tmp_path / "keep").write_bytes(b"old")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await profiler.dump(tmp_path / "keep", snapshot=snap)
        assert scope.cancelled_caught
    finally:
        profiler.stop_profiling()
    assert os.listdir(tmp_path) == ["keep"]
    assert (tmp_path / "keep").read_bytes() == b"old"


@on_both
async def test_dump_timed_out_leaves_no_file(tmp_path: Path) -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        snap = profiler.take_snapshot()
        with anyio.move_on_after(0) as scope:
            await profiler.dump(tmp_path / "snap", snapshot=snap, format="json")
        assert scope.cancelled_caught
    finally:
        profiler.stop_profiling()
    assert os.listdir(tmp_path) == []


@on_both
async def test_dump_without_tracing_or_snapshot_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        await MemoryProfiler().dump(tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"limit": 0}, ValueError, "limit"),
        ({"limit": -3}, ValueError, "limit"),
        ({"limit": True}, TypeError, "limit"),
        ({"limit": "5"}, TypeError, "limit"),
        ({"group_by": "module"}, ValueError, "group_by"),
        ({"group_by": 1}, TypeError, "group_by"),
    ],
)
def test_top_consumers_rejects_bad_input(kwargs: dict[str, Any], error: type, needle: str) -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        snap = profiler.take_snapshot()
        with pytest.raises(error, match=needle):
            profiler.top_consumers(snapshot=snap, **kwargs)
        with pytest.raises(error, match=needle):
            profiler.compare(snap, snap, **kwargs)
        with pytest.raises(error, match=needle):
            profiler.analyze_memory_trends(**kwargs)
    finally:
        profiler.stop_profiling()


@on_both
async def test_dump_rejects_bad_input(tmp_path: Path) -> None:
    profiler = MemoryProfiler()
    with pytest.raises(TypeError, match="path"):
        await profiler.dump(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        await profiler.dump(b"snap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        await profiler.dump("")
    with pytest.raises(ValueError, match="format"):
        await profiler.dump(tmp_path / "x", format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await profiler.dump(tmp_path / "x", limit=0)
    assert not os.listdir(tmp_path)


def test_constructor_and_compare_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="nframe"):
        MemoryProfiler(nframe=0)
    with pytest.raises(ValueError, match="history"):
        MemoryProfiler(history=1)
    with pytest.raises(TypeError, match="older"):
        MemoryProfiler().compare("a", "b")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        ProfileSnapshot.load(None)  # type: ignore[arg-type]


# --- monitor_function_memory --------------------------------------------------------------


def test_monitor_sync_records_net_peak_and_duration(clock: ManualClock) -> None:
    @monitor_function_memory(clock=clock)
    def keep(n: int) -> bytearray:
        """Keep n bytes."""
        clock.advance(2.5)
        scratch = bytearray(1_000_000)  # freed before return: counts towards peak only
        del scratch
        return bytearray(n)

    kept = keep(100_000)
    assert len(kept) == 100_000
    assert keep.__name__ == "keep" and keep.__doc__ == "Keep n bytes."
    assert keep.__wrapped__ is not None  # type: ignore[attr-defined]
    name = f"{__name__}.test_monitor_sync_records_net_peak_and_duration.<locals>.keep"
    stats = get_function_stats(name)
    assert stats is not None
    assert stats.calls == 1 and stats.traced_calls == 1 and stats.errors == 0
    assert stats.last_net is not None and 100_000 <= stats.last_net < 200_000
    # The peak is taken against the traced total at entry; a few bytes the
    # interpreter frees meanwhile (cached frames, interned names) may come off it.
    assert stats.last_peak is not None and stats.last_peak >= 1_000_000 - 4096
    assert stats.max_peak == stats.total_peak == stats.last_peak
    assert stats.last_duration == stats.total_duration == stats.max_duration == 2.5
    assert stats.overlapped_calls == 0
    assert not tracemalloc.is_tracing(), "tracing was switched on for the call only"
    assert function_memory_stats()[name] == stats
    assert stats.to_dict()["mean_peak"] == stats.mean_peak
    reset_function_stats(name)
    assert get_function_stats(name) is None


def test_monitor_keeps_exceptions_and_counts_them() -> None:
    @monitor_function_memory(name="boom")
    def boom() -> None:
        raise KeyError("x")

    for _ in range(2):
        with pytest.raises(KeyError):
            boom()
    stats = get_function_stats("boom")
    assert stats is not None and stats.calls == 2 and stats.errors == 2


def test_monitor_without_trace_records_duration_only() -> None:
    @monitor_function_memory(trace=False, name="light")
    def light() -> int:
        return 7

    assert light() == 7
    stats = get_function_stats("light")
    assert stats is not None and stats.calls == 1 and stats.traced_calls == 0
    assert stats.last_net is None and stats.last_peak is None and stats.mean_peak == 0.0
    assert not tracemalloc.is_tracing()


def test_monitor_inside_a_profiling_region_keeps_tracing_on() -> None:
    profiler = MemoryProfiler()
    profiler.start_profiling()
    try:
        monitor_function_memory(trace=False, name="inside")(lambda: bytearray(10_000))()
        assert tracemalloc.is_tracing()
    finally:
        profiler.stop_profiling()
    stats = get_function_stats("inside")
    assert stats is not None and stats.traced_calls == 1 and (stats.last_net or 0) >= 10_000


@on_both
async def test_monitor_async_function(clock: ManualClock) -> None:
    @monitor_function_memory(name="fetch", clock=clock)
    async def fetch(n: int) -> bytes:
        await anyio.lowlevel.checkpoint()
        clock.advance(1.0)
        return bytes(n)

    assert inspect.iscoroutinefunction(fetch)
    assert len(await fetch(50_000)) == 50_000
    stats = get_function_stats("fetch")
    assert stats is not None and stats.calls == 1 and stats.last_duration == 1.0
    assert stats.last_net is not None and stats.last_net >= 50_000


@on_both
async def test_monitor_a_memoized_async_function_awaits_it() -> None:
    from memwarden import memoize

    @monitor_function_memory(name="memoized-fetch")
    @memoize(capacity=4)
    async def fetch(n: int) -> bytes:
        await anyio.lowlevel.checkpoint()
        return bytes(n)

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(10) == bytes(10)
    stats = get_function_stats("memoized-fetch")
    assert stats is not None and stats.calls == 1


@on_both
async def test_monitor_async_overlapping_calls_are_flagged() -> None:
    gate = anyio.Event()

    @monitor_function_memory(name="overlap")
    async def wait_gate() -> None:
        await gate.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_gate)
        tg.start_soon(wait_gate)
        await wait_all_tasks_blocked()
        assert profiler_module._registry.active_calls == 2
        gate.set()
    stats = get_function_stats("overlap")
    assert stats is not None and stats.calls == 2 and stats.overlapped_calls == 2


@on_both
async def test_monitor_async_cancelled_call_leaves_nothing_behind() -> None:
    never = anyio.Event()

    @monitor_function_memory(name="cancelled")
    async def stuck() -> None:
        await never.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await wait_all_tasks_blocked()
        assert profiler_module._tracing.refs == 1
        tg.cancel_scope.cancel()
    assert profiler_module._registry.active_calls == 0
    assert profiler_module._tracing.refs == 0 and not tracemalloc.is_tracing()
    stats = get_function_stats("cancelled")
    assert stats is not None and stats.calls == 1 and stats.errors == 1


@on_both
async def test_monitor_async_timed_out_call_leaves_nothing_behind() -> None:
    never = anyio.Event()

    @monitor_function_memory(name="timeout")
    async def stuck() -> None:
        await never.wait()

    with anyio.move_on_after(0.01) as scope:
        await stuck()
    assert scope.cancelled_caught
    assert profiler_module._registry.active_calls == 0 and profiler_module._tracing.refs == 0
    stats = get_function_stats("timeout")
    assert stats is not None and stats.errors == 1


def test_monitor_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="func"):
        monitor_function_memory(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="name"):
        monitor_function_memory(name="")
    with pytest.raises(TypeError, match="trace"):
        monitor_function_memory(trace="yes")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name"):
        get_function_stats(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        reset_function_stats(3)  # type: ignore[arg-type]


# --- memory_efficient_context -------------------------------------------------------------


class _Node:
    def __init__(self) -> None:
        self.me = self
        self.payload = bytearray(1000)


def _fake_rss(*values: int) -> Any:
    it = iter(values)
    return lambda: next(it)


def test_context_sync_collects_and_reports(clock: ManualClock) -> None:
    gc.disable()
    try:
        ctx = memory_efficient_context(rss=_fake_rss(5000, 9000, 6000), clock=clock, trim=False)
        with pytest.raises(RuntimeError, match="not exited"):
            ctx.result  # noqa: B018
        with ctx as entered:
            assert entered is ctx
            garbage = [_Node() for _ in range(300)]
            del garbage
            clock.advance(3.0)
    finally:
        gc.enable()
    result = ctx.result
    assert isinstance(result, ContextMemoryStats)
    assert result.memory_at_enter == 5000 and result.memory_before == 9000
    assert result.memory_after == 6000 and result.memory_freed == 3000 and result.growth == 1000
    assert result.objects_collected >= 300 and result.duration == 3.0
    assert result.traced_freed is None and result.trimmed is False
    assert set(result.to_dict()) >= {"memory_freed", "traced_freed", "growth", "objects_collected"}


@on_both
async def test_context_async_measures_traced_bytes_freed() -> None:
    tracemalloc.start()
    gc.disable()
    try:
        async with memory_efficient_context(rss=lambda: 0) as ctx:
            garbage = [_Node() for _ in range(300)]
            del garbage
            await anyio.lowlevel.checkpoint()
    finally:
        gc.enable()
    result = ctx.result
    assert result.objects_collected >= 300
    assert result.traced_freed is not None and result.traced_freed >= 300 * 1000


def test_context_propagates_exceptions_and_still_reports() -> None:
    ctx = memory_efficient_context(rss=lambda: 1)
    with pytest.raises(ZeroDivisionError), ctx:
        1 / 0  # noqa: B018
    assert ctx.result.memory_freed == 0


@on_both
async def test_context_cancelled_block_still_reports() -> None:
    ctx = memory_efficient_context(rss=lambda: 1)
    with anyio.CancelScope() as scope:
        async with ctx:
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught and ctx.result.objects_collected >= 0


@on_both
async def test_context_timed_out_block_still_reports() -> None:
    ctx = memory_efficient_context(rss=lambda: 1, trim=False)
    with anyio.move_on_after(0.01) as scope:
        async with ctx:
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert ctx.result.duration >= 0.0 and ctx.result.memory_freed == 0
    async with ctx:  # reusable after a cancelled block: nothing was left half-entered
        pass


def test_context_rejects_nesting_and_bad_input() -> None:
    ctx = memory_efficient_context(rss=lambda: 1)
    with ctx, pytest.raises(RuntimeError, match="nest"), ctx:
        pass
    with pytest.raises(ValueError, match="generation"):
        memory_efficient_context(generation=3)
    with pytest.raises(TypeError, match="trim"):
        memory_efficient_context(trim="yes")  # type: ignore[arg-type]


def test_pickled_snapshot_is_plain_tracemalloc(tmp_path: Path) -> None:
    """ProfileSnapshot.load also reads files written by tracemalloc itself."""
    tracemalloc.start()
    raw = tracemalloc.take_snapshot()
    raw.dump(str(tmp_path / "raw"))
    loaded = ProfileSnapshot.load(tmp_path / "raw")
    assert loaded.traced_current == sum(t.size for t in raw.traces)
    assert pickle.loads((tmp_path / "raw").read_bytes()).traceback_limit == raw.traceback_limit


def test_monitor_and_context_run_on_trio() -> None:
    @monitor_function_memory(name="trio.fetch")
    async def fetch() -> bytes:
        await anyio.lowlevel.checkpoint()
        return bytes(20_000)

    async def main() -> tuple[int, ContextMemoryStats]:
        async with memory_efficient_context(rss=lambda: 0, trim=False) as ctx:
            data = await fetch()
        return len(data), ctx.result

    size, result = anyio.run(main, backend="trio")
    stats = get_function_stats("trio.fetch")
    assert size == 20_000 and result.memory_freed == 0
    assert stats is not None and stats.calls == 1 and (stats.last_net or 0) >= 20_000
