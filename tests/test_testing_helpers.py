"""memwarden.testing: ManualClock and StaticProbe."""

from __future__ import annotations

import anyio
import pytest
from both_backends import on_both

from memwarden.testing import ManualClock, StaticProbe


@on_both
async def test_sleep_wakes_only_when_advanced(clock: ManualClock) -> None:
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5)
        woke.append(clock())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.wait_for_sleepers(1)
        clock.advance(4.9)
        await anyio.lowlevel.checkpoint()
        assert woke == []
        clock.advance(0.1)
    assert woke == [1005.0]
    assert clock.sleepers == 0


@on_both
async def test_cancelled_sleeper_is_forgotten(clock: ManualClock) -> None:
    with anyio.move_on_after(0.01):
        await clock.sleep(100)
    assert clock.sleepers == 0
    clock.advance(200)  # nothing to wake, nothing breaks


@on_both
async def test_advance_when_parked(clock: ManualClock) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 1)
        tg.start_soon(clock.sleep, 2)
        await clock.advance_when_parked(2, sleepers=2)
    assert clock() == 1002.0


@on_both
async def test_zero_sleep_is_a_checkpoint(clock: ManualClock) -> None:
    await clock.sleep(0)
    assert clock() == 1000.0


def test_clock_rejects_going_backwards(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="now"):
        clock.set(10)
    clock.set(2000)
    assert clock.time() == 2000


def test_static_probe_set_and_sample() -> None:
    probe = StaticProbe(used=100, limit=1000)
    sample = probe.sample()
    figures = (sample.used, sample.limit, sample.available, sample.source)
    assert figures == (100, 1000, 900, "static")
    assert sample.fraction == 0.1
    probe.set(used=1200)
    assert probe.sample().available == 0
    assert probe.sample().fraction == 1.2
    probe.set_fraction(0.5)
    assert probe.used == 500
    assert probe.samples_taken == 3


@pytest.mark.parametrize(("kwargs", "name"), [({"used": -1}, "used"), ({"limit": 0}, "limit")])
def test_static_probe_rejects_bad_input_without_change(kwargs: dict[str, int], name: str) -> None:
    probe = StaticProbe(used=10, limit=100)
    with pytest.raises(ValueError, match=name):
        probe.set(**kwargs)
    assert (probe.used, probe.limit) == (10, 100)
    with pytest.raises(TypeError, match="used"):
        probe.set(used=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fraction", "error", "message"),
    [
        (-0.5, ValueError, r"fraction must be >= 0\.0, got -0\.5"),
        (True, TypeError, "fraction must be a number, got bool True"),
        (float("nan"), ValueError, "fraction must not be NaN, got nan"),
        (float("inf"), ValueError, "fraction must be finite, got inf"),
        (None, TypeError, "fraction must be a number, got NoneType None"),
        ("0.5", TypeError, "fraction must be a number, got str '0.5'"),
    ],
)
def test_set_fraction_refuses_bad_input_without_change(
    fraction: object, error: type[Exception], message: str
) -> None:
    probe = StaticProbe(used=10, limit=100)
    with pytest.raises(error, match=message):
        probe.set_fraction(fraction)  # type: ignore[arg-type]
    assert (probe.used, probe.limit) == (10, 100)


def test_set_fraction_beyond_the_limit_is_allowed() -> None:
    probe = StaticProbe(used=10, limit=100)
    probe.set_fraction(1.5)
    assert probe.used == 150


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"used": True}, TypeError, "used must be an int, got bool True"),
        ({"limit": True}, TypeError, "limit must be an int, got bool True"),
        ({"used": float("nan")}, TypeError, "used must be an int, got float nan"),
        ({"limit": -5}, ValueError, "limit must be >= 1, got -5"),
        ({"used": 5, "limit": 0}, ValueError, "limit must be >= 1, got 0"),
    ],
)
def test_static_probe_set_names_the_argument_and_value(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    probe = StaticProbe(used=10, limit=100)
    with pytest.raises(error, match=message):
        probe.set(**kwargs)  # type: ignore[arg-type]
    assert (probe.used, probe.limit) == (10, 100)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"used": -1}, ValueError, "used must be >= 0, got -1"),
        ({"limit": 0}, ValueError, "limit must be >= 1, got 0"),
        ({"used": True}, TypeError, "used must be an int, got bool True"),
        ({"rss": -1}, ValueError, "rss must be >= 0, got -1"),
        ({"rss": 1.5}, TypeError, r"rss must be an int, got float 1\.5"),
    ],
)
def test_static_probe_constructor_names_the_argument_and_value(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        StaticProbe(**kwargs)  # type: ignore[arg-type]


@on_both
async def test_two_tasks_can_wait_for_sleepers(clock: ManualClock) -> None:
    woke: list[str] = []

    async def watcher(name: str) -> None:
        await clock.wait_for_sleepers(1)
        woke.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher, "a")
        tg.start_soon(watcher, "b")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(clock.sleep, 5)
        await anyio.wait_all_tasks_blocked()
        assert sorted(woke) == ["a", "b"]
        clock.advance(5)
    assert clock.sleepers == 0


@on_both
async def test_cancelled_wait_for_sleepers_leaves_no_watcher(clock: ManualClock) -> None:
    with anyio.move_on_after(0.01):
        await clock.wait_for_sleepers(1)
    assert clock._watchers == []


@on_both
async def test_cancelled_sleep_leaves_no_sleeper(clock: ManualClock) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(5)
    with anyio.move_on_after(0.01):
        await clock.sleep(5)
    assert clock.sleepers == 0 and clock._sleepers == []
