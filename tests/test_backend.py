"""The private backend module: one park, wake and spawn per event loop, on asyncio and trio."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from memwarden import _backend, _rss

BACKENDS = ("asyncio", "trio")


def _run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main, backend=backend)


def test_outside_an_event_loop_there_is_no_backend() -> None:
    with pytest.raises(RuntimeError):
        _backend.current()
    assert _backend.current_or_none() is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_backend_per_event_loop(backend: str) -> None:
    seen: list[_backend.Backend] = []

    async def main() -> None:
        first = _backend.current()
        assert _backend.current() is first
        assert first.name == backend
        assert first.thread == threading.get_ident()
        seen.append(first)

    _run(backend, main)
    _run(backend, main)
    assert seen[0] is not seen[1]


def test_asyncio_then_trio_in_one_thread() -> None:
    names: list[str] = []

    async def main() -> None:
        names.append(_backend.current().name)

    _run("asyncio", main)
    _run("trio", main)
    _run("asyncio", main)
    assert names == ["asyncio", "trio", "asyncio"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_park_and_wake_on_the_loop(backend: str) -> None:
    async def main() -> None:
        parking = _backend.current().park()
        woken = False

        async def waiter() -> None:
            nonlocal woken
            await parking.wait()
            woken = True

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.lowlevel.checkpoint()
            parking.wake()
            parking.wake()  # repeated: harmless
        assert woken

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wake_from_another_thread(backend: str) -> None:
    async def main() -> None:
        parking = _backend.current().park()
        thread = threading.Thread(target=parking.wake)
        with anyio.fail_after(10):
            thread.start()
            await parking.wait()
        thread.join()

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancelled_park_leaves_nothing_and_a_late_wake_is_harmless(backend: str) -> None:
    async def main() -> None:
        parking = _backend.current().park()
        with anyio.move_on_after(0.01) as scope:
            await parking.wait()
        assert scope.cancelled_caught
        parking.wake()

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wake_after_the_loop_finished_is_harmless(backend: str) -> None:
    parked: list[_backend.Parking] = []

    async def main() -> None:
        parked.append(_backend.current().park())

    _run(backend, main)
    thread = threading.Thread(target=parked[0].wake)
    thread.start()
    thread.join()


@pytest.mark.parametrize("backend", BACKENDS)
def test_spawn_from_the_loop_and_from_another_thread(backend: str) -> None:
    async def main() -> None:
        loop = _backend.current()
        done = anyio.Event()
        results: list[str] = []

        async def job(name: str) -> None:
            results.append(name)
            if len(results) == 2:
                done.set()

        loop.spawn(job, "here")
        thread = threading.Thread(target=loop.spawn, args=(job, "there"))
        thread.start()
        with anyio.fail_after(10):
            await done.wait()
        thread.join()
        assert sorted(results) == ["here", "there"]

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_background_task_is_logged_not_raised(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        ran = anyio.Event()

        async def boom() -> None:
            ran.set()
            raise ValueError("boom")

        _backend.current().spawn(boom)
        await ran.wait()
        for _ in range(5):
            await anyio.lowlevel.checkpoint()

    with caplog.at_level(logging.ERROR, logger="memwarden"):
        _run(backend, main)
    assert any("background task" in r.getMessage() for r in caplog.records)


def test_process_rss_reads_this_process() -> None:
    value = _rss.process_rss()
    assert value is not None and value > 0


def test_read_statm_rss_parses_pages(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "statm")
    with open(path, "w") as f:
        f.write("1000 250 30 1 0 200 0\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _rss.read_statm_rss(fd) == 250 * _rss.PAGE_SIZE
    finally:
        os.close(fd)
    with open(path, "w") as f:
        f.write("garbled\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _rss.read_statm_rss(fd) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_honours_a_cancelled_scope_and_lets_others_run(backend: str) -> None:
    async def main() -> None:
        loop = _backend.current()
        ran = False

        async def other() -> None:
            nonlocal ran
            ran = True

        async with anyio.create_task_group() as group:
            group.start_soon(other)
            await loop.checkpoint()
            # asyncio runs ready tasks in order; trio's scheduler may defer one a round.
            assert ran or backend == "trio"
        with anyio.CancelScope() as scope:
            scope.cancel()
            await loop.checkpoint()
            raise AssertionError("a cancelled scope must raise at the checkpoint")
        assert scope.cancelled_caught

    _run(backend, main)


def test_trio_guest_run_on_an_asyncio_host_gets_the_trio_backend() -> None:
    """In guest mode trio tasks run inside asyncio callbacks: still trio, not the host."""
    import asyncio

    import trio

    async def trio_main() -> str:
        found = _backend.current()
        parking = found.park()
        parking.wake()
        await parking.wait()
        return found.name

    async def host() -> tuple[str, str]:
        host_name = _backend.current().name
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def finished(outcome: Any) -> None:
            done.set_result(outcome.unwrap())

        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=finished,
        )
        return host_name, await done

    assert asyncio.run(host()) == ("asyncio", "trio")
