"""HistoryStore: atomic JSON-lines files, rotation, loading back, bad input, cancellation."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from both_backends import on_both

from memwarden.config import WardenConfig
from memwarden.history import HistoryStore
from memwarden.leaks import LeakWatcher


def temp_files(directory: Path) -> list[Path]:
    return list(directory.glob(".*tmp"))


def records(start: int, count: int) -> list[dict[str, object]]:
    return [{"i": i, "t": float(i), "value": 1000 * i} for i in range(start, start + count)]


@on_both
async def test_append_and_load_roundtrip(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "state")
    assert await store.load("samples") == []
    await store.append("samples", records(0, 3))
    await store.append("samples", records(3, 2))
    await store.append("samples", [])
    assert [r["i"] for r in await store.load("samples")] == [0, 1, 2, 3, 4]
    text = (tmp_path / "state" / "samples.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 5
    assert json.loads(text.splitlines()[0]) == {"i": 0, "t": 0.0, "value": 0}
    # A new store over the same directory (a restart) sees the same history.
    again = HistoryStore(tmp_path / "state")
    assert [r["i"] for r in await again.load("samples")] == [0, 1, 2, 3, 4]


@on_both
async def test_rotation_is_bounded_by_size(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_bytes=2048, keep=2)
    for start in range(0, 400, 10):
        await store.append("samples", records(start, 10))
    files = store.files("samples")
    assert [f.name for f in files] == ["samples.2.jsonl", "samples.1.jsonl", "samples.jsonl"]
    assert all(f.stat().st_size <= 2048 for f in files)
    loaded = [r["i"] for r in await store.load("samples")]
    # The newest records survive, contiguous and in order; the oldest were rotated away.
    assert loaded == list(range(loaded[0], 400))
    assert 0 < loaded[0] < 400 - 2 * 2048 // 60
    assert not temp_files(tmp_path)


@on_both
async def test_keep_zero_drops_old_files(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_bytes=1024, keep=0)
    for start in range(0, 100, 10):
        await store.append("samples", records(start, 10))
    assert [f.name for f in store.files("samples")] == ["samples.jsonl"]


@on_both
async def test_write_snapshot_replaces_whole_file(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    await store.write_snapshot("leaks", [{"series": "a"}, {"series": "b"}])
    await store.write_snapshot("leaks", [{"series": "c"}])
    assert await store.load("leaks") == [{"series": "c"}]
    assert await store.clear("leaks") == 1
    assert await store.load("leaks") == []


@on_both
async def test_load_skips_torn_and_foreign_lines(tmp_path: Path) -> None:
    (tmp_path / "samples.jsonl").write_text('{"i": 0}\n[1, 2]\nnot json\n{"i": 1}\n{"i": 2, "tr')
    store = HistoryStore(tmp_path)
    assert await store.load("samples") == [{"i": 0}, {"i": 1}]
    assert store.skipped == 3
    # The torn tail is dropped on the next append, not glued to the new line.
    await store.append("samples", [{"i": 3}])
    assert [r["i"] for r in await store.load("samples")] == [0, 1, 3]


@on_both
async def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / ".samples.jsonl.999.0.tmp"
    leftover.write_text("half a wri")
    store = HistoryStore(tmp_path)
    await store.append("samples", records(0, 1))
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("bad", "exc", "needle"),
    [
        ("abc", TypeError, "records must be a sequence of mappings, got str 'abc'"),
        ([{"ok": 1}, 5], TypeError, r"records\[1\] must be a mapping, got int 5"),
        ([{"ok": 1}, {"x": object()}], TypeError, r"records\[1\] .*\{'x': <object"),
        ([{"x": float("nan")}], ValueError, r"records\[0\] .*\{'x': nan\}"),
    ],
)
@on_both
async def test_bad_records_write_nothing(
    tmp_path: Path, bad: object, exc: type, needle: str
) -> None:
    store = HistoryStore(tmp_path)
    await store.append("samples", records(0, 2))
    with pytest.raises(exc, match=needle):
        await store.append("samples", bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match=needle):
        await store.write_snapshot("samples", bad)  # type: ignore[arg-type]
    assert [r["i"] for r in await store.load("samples")] == [0, 1]


@on_both
async def test_bad_kind_and_settings(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    for kind in ("", "../etc", "a/b", "x" * 65):
        with pytest.raises(ValueError, match="kind"):
            await store.append(kind, [])
    with pytest.raises(TypeError, match="kind"):
        await store.load(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes"):
        HistoryStore(tmp_path, max_bytes=10)
    with pytest.raises(ValueError, match="keep"):
        HistoryStore(tmp_path, keep=-1)
    with pytest.raises(TypeError, match="directory must be a path, got int 5"):
        HistoryStore(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generation must be <= 2, got 3"):
        store.path("samples", 3)
    with pytest.raises(TypeError, match="generation must be an int, got bool True"):
        store.path("samples", True)  # type: ignore[arg-type]


def test_from_config(tmp_path: Path) -> None:
    assert HistoryStore.from_config(WardenConfig()) is None
    store = HistoryStore.from_config(WardenConfig(state_dir=str(tmp_path), state_max_bytes=4096))
    assert store is not None
    assert store.directory == tmp_path and store.max_bytes == 4096


@on_both
async def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    async with anyio.create_task_group() as tg:
        for k in range(10):
            tg.start_soon(store.append, "samples", records(10 * k, 10))
    assert sorted(r["i"] for r in await store.load("samples")) == list(range(100))


@on_both
async def test_cancelled_append_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    await store.append("samples", records(0, 5))
    for _ in range(20):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.append("samples", records(5, 5))
    # Cancel at many different points of the write: after k scheduler turns.
    for k in range(1, 40, 3):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def write(scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await store.append("samples", records(5, 5))

            async def cancel_later(scope: anyio.CancelScope = scope, k: int = k) -> None:
                for _ in range(k):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()

            tg.start_soon(write)
            tg.start_soon(cancel_later)
    loaded = [r["i"] for r in await store.load("samples")]
    # Each cancelled append either completed whole or left the file unchanged.
    assert loaded[:5] == [0, 1, 2, 3, 4]
    assert len(loaded) % 5 == 0
    assert loaded[5:] == [5, 6, 7, 8, 9] * (len(loaded) // 5 - 1)
    assert not temp_files(tmp_path)


@on_both
async def test_watcher_history_survives_a_restart(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    before = LeakWatcher()
    for i in range(30):
        before.record("proc", float(i), 1e8 + 1e6 * i, kind="process")
    await store.append("leak_series", before.take_records())

    after = LeakWatcher()
    assert after.restore(await store.load("leak_series")) == 30
    for i in range(30, 45):
        after.record("proc", float(i), 1e8 + 1e6 * i, kind="process")
    assert [e.series for e in after.check(now=45.0)] == ["proc"]


@on_both
async def test_timed_out_append_leaves_whole_records_and_no_temp(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_bytes=2048, keep=1)
    await store.append("samples", records(0, 5))
    timed_out = 0
    for k in range(30):
        with anyio.move_on_after(0.0005 * k) as scope:
            await store.append("samples", records(100 + 5 * k, 5))
        timed_out += scope.cancelled_caught
    loaded = [r["i"] for r in await store.load("samples")]
    # Every append is all or nothing, whether it finished or timed out.
    assert len(loaded) % 5 == 0
    for start in range(0, len(loaded), 5):
        block = loaded[start : start + 5]
        assert block == list(range(block[0], block[0] + 5))
    assert not temp_files(tmp_path)
    assert timed_out >= 1
