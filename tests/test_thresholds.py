"""cgroup v1 usage thresholds through one eventfd, against a fake cgroup directory."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from memwarden._psi import PsiTrigger

BACKENDS = ("asyncio", "trio")


def _fake_cgroup(tmp_path: Path) -> Path:
    (tmp_path / "memory.usage_in_bytes").write_text("1000\n")
    (tmp_path / "cgroup.event_control").write_text("")
    return tmp_path


def test_each_threshold_is_registered_once_in_order(tmp_path: Path) -> None:
    directory = _fake_cgroup(tmp_path)
    trigger = PsiTrigger.open_cgroup_v1_thresholds(directory, [300, 100, 200, 100])
    assert trigger is not None
    try:
        written = (directory / "cgroup.event_control").read_text()
        efd = trigger._fd
        usage = trigger._keep[0]
        assert written == "".join(f"{efd} {usage} {v}" for v in (100, 200, 300))
        assert trigger.path.endswith("memory.usage_in_bytes")
    finally:
        trigger.close()
    assert trigger.closed


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crossing_wakes_the_waiter_once(tmp_path: Path, backend: str) -> None:
    trigger = PsiTrigger.open_cgroup_v1_thresholds(_fake_cgroup(tmp_path), [100])
    assert trigger is not None

    async def main() -> None:
        assert not await trigger.wait(0.0)  # nothing crossed yet: times out
        os.eventfd_write(trigger._fd, 1)  # what the kernel does on a crossing
        assert await trigger.wait(None)
        assert not await trigger.wait(0.0)  # the counter was reset
        assert trigger.fired == 1

    try:
        anyio.run(main, backend=backend)
    finally:
        trigger.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_wait_leaves_the_trigger_usable(tmp_path: Path, backend: str) -> None:
    trigger = PsiTrigger.open_cgroup_v1_thresholds(_fake_cgroup(tmp_path), [100])
    assert trigger is not None

    async def main() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await trigger.wait(None)
        assert not trigger.waiting
        os.eventfd_write(trigger._fd, 1)
        assert await trigger.wait(1.0)

    try:
        anyio.run(main, backend=backend)
    finally:
        trigger.close()


def test_missing_files_give_none(tmp_path: Path) -> None:
    assert PsiTrigger.open_cgroup_v1_thresholds(tmp_path, [100]) is None
    (tmp_path / "memory.usage_in_bytes").write_text("1\n")
    assert PsiTrigger.open_cgroup_v1_thresholds(tmp_path, [100]) is None  # no event_control


@pytest.mark.parametrize("bad", [[], [0], [-5], [1.5], [True]])
def test_bad_thresholds_are_refused(tmp_path: Path, bad: list[int]) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        PsiTrigger.open_cgroup_v1_thresholds(_fake_cgroup(tmp_path), bad)
