"""PSI triggers: every refusal falls back to None; the wake path works on a real POLLPRI fd."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from both_backends import on_both

from memwarden import _psi
from memwarden._psi import PsiTrigger, candidate_paths, cgroup_v1_directory

PSI_TEXT = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


@pytest.fixture(autouse=True)
def _reset_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_psi, "_logged_fallback", False)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def oob_pair(
    oob: tuple[socket.socket, socket.socket],
) -> Iterator[tuple[socket.socket, PsiTrigger]]:
    """A trigger on an AF_UNIX socket: MSG_OOB data raises POLLPRI like a PSI event."""
    a, b = oob
    trigger = PsiTrigger(os.dup(b.fileno()), "socketpair")
    yield a, trigger
    trigger.close()


def test_missing_file_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="memwarden.pressure")
    assert PsiTrigger.open(tmp_path / "nope") is None
    assert PsiTrigger.open(tmp_path / "nope-again") is None
    assert caplog.text.count("PSI trigger unavailable") == 1  # logged once
    assert "ENOENT" in caplog.text


def test_ordinary_files_are_not_mistaken_for_pressure_files(tmp_path: Path) -> None:
    full = tmp_path / "memory.pressure"
    full.write_text(PSI_TEXT)  # right text but a real size: not a kernel file
    empty = tmp_path / "empty"
    empty.write_text("")
    before = _open_fds()
    assert PsiTrigger.open(full) is None
    assert PsiTrigger.open(empty) is None
    assert PsiTrigger.open(tmp_path) is None  # a directory
    assert PsiTrigger.open("/dev/null") is None
    assert _open_fds() == before


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, errno.EROFS])
def test_kernel_refusing_the_trigger_falls_back(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="memwarden.pressure")
    fake = tmp_path / "memory.pressure"
    fake.write_text(PSI_TEXT)
    monkeypatch.setattr(_psi, "_looks_like_psi", lambda fd: True)

    def refuse(fd: int, data: bytes) -> int:
        assert data == b"some 150000 2000000"
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_psi, "_os_write", refuse)
    before = _open_fds()
    assert PsiTrigger.open(fake) is None
    assert _open_fds() == before
    assert errno.errorcode[code] in caplog.text


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind must be 'some' or 'full', got 'half'"):
        PsiTrigger.open("/proc/pressure/memory", kind="half")
    with pytest.raises(ValueError, match="stall_us must be a positive int, got 0"):
        PsiTrigger.open("/proc/pressure/memory", stall_us=0)
    with pytest.raises(ValueError, match="window_us must be an int >= stall_us, got 10"):
        PsiTrigger.open("/proc/pressure/memory", stall_us=100, window_us=10)


def _fake_tree(root: Path, proc_cgroup: str, cgroup_dir: str, files: dict[str, str]) -> Path:
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "cgroup").write_text(proc_cgroup)
    directory = root / cgroup_dir.lstrip("/")
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_candidate_paths_prefers_own_cgroup_v2(tmp_path: Path) -> None:
    directory = _fake_tree(
        tmp_path,
        "0::/system.slice/app.service\n",
        "/sys/fs/cgroup/system.slice/app.service",
        {"memory.current": "1\n", "memory.pressure": PSI_TEXT},
    )
    assert candidate_paths(str(tmp_path)) == [
        directory / "memory.pressure",
        tmp_path / "proc" / "pressure" / "memory",
    ]
    assert cgroup_v1_directory(str(tmp_path)) is None


def test_candidate_paths_without_cgroup(tmp_path: Path) -> None:
    assert candidate_paths(str(tmp_path)) == [tmp_path / "proc" / "pressure" / "memory"]
    assert cgroup_v1_directory(str(tmp_path)) is None


V1_FILES = {"memory.usage_in_bytes": "1\n", "memory.pressure_level": "", "cgroup.event_control": ""}


def _registration(directory: Path) -> tuple[int, int, str]:
    efd, pressure, level = (directory / "cgroup.event_control").read_text().split()
    return int(efd), int(pressure), level


@on_both
async def test_cgroup_v1_pressure_level_fires_and_drains(tmp_path: Path) -> None:
    directory = _fake_tree(tmp_path, "4:memory:/app\n", "/sys/fs/cgroup/memory/app", V1_FILES)
    assert cgroup_v1_directory(str(tmp_path)) == directory
    before = _open_fds()
    trigger = PsiTrigger.open_first(root=str(tmp_path))  # no PSI file here: falls to v1
    assert trigger is not None
    assert trigger.path.endswith("memory.pressure_level")
    efd, _, level = _registration(directory)
    assert level == "medium"
    assert await trigger.wait(0.01) is False
    os.eventfd_write(efd, 1)  # what the kernel does on medium reclaim pressure
    assert await trigger.wait(30) is True
    assert await trigger.wait(0.01) is False  # the counter was reset
    trigger.close()
    assert _open_fds() == before


def test_cgroup_v1_refusals_fall_back_without_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _open_fds()
    assert PsiTrigger.open_cgroup_v1(tmp_path / "missing") is None
    directory = tmp_path / "memcg"
    directory.mkdir()
    for name, text in V1_FILES.items():
        (directory / name).write_text(text)

    def refuse(fd: int, data: bytes) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(_psi, "_os_write", refuse)
    assert PsiTrigger.open_cgroup_v1(directory) is None
    assert _open_fds() == before
    with pytest.raises(ValueError, match=r"level must be one of .*, got 'severe'"):
        PsiTrigger.open_cgroup_v1(directory, level="severe")


def test_open_first_falls_through_to_none(tmp_path: Path) -> None:
    assert PsiTrigger.open_first([tmp_path / "a", tmp_path / "b"]) is None


def test_this_machine_either_arms_or_refuses_cleanly() -> None:
    before = _open_fds()
    trigger = PsiTrigger.open_first()
    if trigger is not None:
        trigger.close()
    assert _open_fds() == before


@on_both
async def test_wait_times_out_without_event(oob_pair: tuple[socket.socket, PsiTrigger]) -> None:
    _, trigger = oob_pair
    assert await trigger.wait(0.01) is False
    assert trigger.fired == 0 and not trigger.waiting


@on_both
async def test_wait_returns_true_on_pollpri(oob_pair: tuple[socket.socket, PsiTrigger]) -> None:
    sender, trigger = oob_pair
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await trigger.wait(30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        sender.send(b"!", socket.MSG_OOB)
    assert result == [True]
    assert trigger.fired == 1


@on_both
async def test_cancelled_wait_leaves_trigger_usable(
    oob_pair: tuple[socket.socket, PsiTrigger],
) -> None:
    sender, trigger = oob_pair
    before = _open_fds()
    async with anyio.create_task_group() as tg:
        tg.start_soon(trigger.wait, 60)
        await wait_all_tasks_blocked()
        assert trigger.waiting
        tg.cancel_scope.cancel()
    assert not trigger.waiting
    assert _open_fds() == before
    assert await trigger.wait(0) is False  # still usable
    sender.send(b"!", socket.MSG_OOB)
    assert await trigger.wait(30) is True


@on_both
async def test_close_during_wait_releases_fds(oob_pair: tuple[socket.socket, PsiTrigger]) -> None:
    _, trigger = oob_pair
    before = _open_fds()
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await trigger.wait(60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        trigger.close()
        trigger.close()
    assert result == [False]
    assert not trigger.waiting
    assert len(before - _open_fds()) == 2  # the trigger fd and its epoll fd
    assert await trigger.wait(1) is False


@on_both
async def test_concurrent_wait_is_refused(oob_pair: tuple[socket.socket, PsiTrigger]) -> None:
    _, trigger = oob_pair

    async with anyio.create_task_group() as tg:
        tg.start_soon(trigger.wait, 60)
        await wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already waiting"):
            await trigger.wait(1)
        tg.cancel_scope.cancel()


@on_both
async def test_error_on_fd_marks_trigger_broken() -> None:
    r, w = os.pipe()
    os.close(w)  # the read end now reports POLLHUP
    trigger = PsiTrigger(r, "pipe")
    assert await trigger.wait(5) is False
    assert trigger.broken
    assert await trigger.wait(5) is False  # returns at once from now on
    trigger.close()
