"""Reservations shared by the processes of one memory cgroup (memwarden._shared).

Two "processes" are two tables on one file with injected identities; one test
runs a real second process. Figures come from StaticProbes, time from a
ManualClock: nothing reads this machine's memory or sleeps to wait.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memwarden._shared import ReservationTable, default_table_path, open_for_cgroup
from memwarden.budget import MemoryManager
from memwarden.pressure import PressureMonitor
from memwarden.testing import ManualClock, StaticProbe

LIMIT = 1000  # critical line 950, high line 850 with the default thresholds

ALIVE = {101: 11, 202: 22}


def _table(
    path: Path, pid: int, clock: ManualClock, alive: dict[int, int] = ALIVE
) -> ReservationTable:
    return ReservationTable(
        path, identity=lambda: (pid, alive[pid]), start_time_of=alive.get, clock=clock
    )


def _budget(
    table: ReservationTable, clock: ManualClock, used: int = 0
) -> tuple[StaticProbe, PressureMonitor, MemoryManager]:
    probe = StaticProbe(used=used, limit=LIMIT)
    monitor = PressureMonitor(probe, clock=clock)
    return probe, monitor, MemoryManager(10_000, monitor=monitor, clock=clock, shared=table)


def test_another_process_reservation_narrows_the_room(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    _, _, first = _budget(_table(path, 101, clock), clock)
    _, _, second = _budget(_table(path, 202, clock), clock)
    held = first.try_acquire(600)
    assert held is not None
    # The second process measured nothing of the first's untouched 600 bytes, yet may
    # only grant what is left under the critical line: 950 - 600.
    assert second.try_acquire(351) is None
    assert second.try_acquire(350) is not None
    assert second.get_stats().others_reserved == 600
    held.release()
    assert second.try_acquire(600) is not None
    assert first.try_acquire(1) is None  # the second holds all 950 bytes of room
    assert first.get_stats().others_reserved == 950
    first.close()
    second.close()


def test_touched_reservations_are_not_counted_twice(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    _, _, first = _budget(_table(path, 101, clock), clock)
    probe, monitor, second = _budget(_table(path, 202, clock), clock)
    assert first.try_acquire(400) is not None
    clock.advance(5.0)
    probe.set(used=500)  # the first touched its 400; 100 is unmanaged
    monitor.sample_now()
    stats = second.get_stats()
    assert stats.unmanaged == 100 and stats.others_reserved == 400
    assert second.try_acquire(451) is None and second.try_acquire(450) is not None


def test_a_dead_process_slot_is_reclaimed(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    alive = dict(ALIVE)
    _, _, first = _budget(_table(path, 101, clock, alive), clock)
    _, _, second = _budget(_table(path, 202, clock, alive), clock)
    assert first.try_acquire(900) is not None
    assert second.try_acquire(100) is None
    del alive[101]  # killed without closing its budget
    clock.advance(2.0)  # past the reap interval
    assert second.try_acquire(100) is not None
    assert second.get_stats().others_reserved == 0
    alive[101] = 99  # the pid now names a later process: still not the slot's owner
    table = _table(path, 202, clock, alive)
    assert table.processes() == 1
    table.close()


def test_closing_frees_the_slot(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    first_table = _table(path, 101, clock)
    _, _, first = _budget(first_table, clock)
    _, _, second = _budget(_table(path, 202, clock), clock)
    assert first.try_acquire(900) is not None
    assert first_table.processes() == 2
    first.close()
    assert first_table.closed
    assert second.try_acquire(900) is not None
    first.close()  # idempotent


def test_a_real_second_process_is_seen_and_reaped(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from memwarden._shared import ReservationTable
                table = ReservationTable({str(path)!r})
                table.lock()
                table.unlock(123)
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        table = ReservationTable(path, clock=clock)
        table.lock()
        table.unlock(0)
        assert table.others == 123 and table.processes() == 2
    finally:
        child.kill()
        child.wait()
    clock.advance(2.0)
    table.lock()
    table.unlock(0)
    assert table.others == 0 and table.processes() == 1
    table.close()


def test_table_paths_and_bad_arguments(tmp_path: Path) -> None:
    assert default_table_path("/a") == default_table_path("/a") != default_table_path("/b")
    assert open_for_cgroup(None) is None and open_for_cgroup("") is None
    with pytest.raises(TypeError, match="shared"):
        MemoryManager(100, shared="table")  # type: ignore[arg-type]
    with pytest.raises(OSError):
        ReservationTable(tmp_path / "missing-dir" / "table")


async def test_a_warden_under_a_cgroup_shares_its_reservations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_probes import FakeHost

    from memwarden import SystemProbe, Warden, WardenConfig, _shared

    host = FakeHost(tmp_path)
    host.v1("/app")
    host.v1_level("/app", limit=str(1 << 30), usage=100 << 20, inactive_file=0)
    paths: list[str] = []

    def table_path(cgroup_path: str) -> Path:
        paths.append(cgroup_path)
        return tmp_path / "table"

    monkeypatch.setattr(_shared, "default_table_path", table_path)
    config = WardenConfig(monitor_use_psi=False, allocator_tuning=False)
    with SystemProbe(root=str(host.root), limit_refresh=0) as probe:
        async with Warden(config, probe=probe) as warden:
            async with warden.manager.reserve(1 << 20):
                other = ReservationTable(tmp_path / "table")
                other.lock()
                other.unlock(0)
                assert other.others == 1 << 20
            other.close()
        async with Warden(
            WardenConfig(monitor_use_psi=False, share_reservations=False), probe=probe
        ) as warden:
            assert warden.manager.get_stats().others_reserved == 0
    assert paths == ["/app"]


def test_the_last_process_out_removes_the_file(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "table"
    first, second = _table(path, 101, clock), _table(path, 202, clock)
    for table in (first, second):
        table.lock()
        table.unlock(5)
    first.close()
    assert path.exists()
    second.close()
    assert not path.exists()
    third = _table(path, 101, clock)  # a newcomer starts a fresh file
    third.lock()
    third.unlock(1)
    assert path.exists() and third.others == 0
    third.close()
