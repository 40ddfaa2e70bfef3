"""Supervisor: restarts, backoff, give-up, periodic scheduling, stop and shutdown."""

from __future__ import annotations

import json
import logging
import math
import random

import anyio
import pytest
from both_backends import on_both
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from memwarden.errors import SupervisorError
from memwarden.supervisor import (
    RestartPolicy,
    Supervisor,
    TaskNotFoundError,
    TaskStatus,
    _RestartTracker,
)
from memwarden.testing import ManualClock


def _sup(clock: ManualClock, **kw: object) -> Supervisor:
    return Supervisor(name="test", clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


class Boom(RuntimeError):
    pass


async def _settle() -> None:
    """Let every task run until it blocks."""
    await anyio.wait_all_tasks_blocked()


# ------------------------------------------------------------- restart policy


def test_policy_defaults_and_backoff() -> None:
    policy = RestartPolicy()
    assert (policy.max_restarts, policy.window, policy.on_give_up) == (5, 60.0, "stop_task")
    assert [policy.backoff(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert policy.backoff(20) == 30.0
    assert policy.backoff(10_000) == 30.0  # no overflow


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_restarts": -1}, ValueError, "max_restarts must be >= 0, got -1"),
        ({"max_restarts": 1.5}, TypeError, "max_restarts must be an int"),
        ({"window": 0}, ValueError, "window must be > 0, got 0"),
        ({"window": math.nan}, ValueError, "window must not be NaN"),
        ({"backoff_initial": -0.1}, ValueError, "backoff_initial must be >= 0"),
        ({"backoff_initial": "1"}, TypeError, "backoff_initial must be a number"),
        ({"backoff_max": math.inf}, ValueError, "backoff_max must be finite"),
        ({"backoff_initial": 5.0, "backoff_max": 1.0}, ValueError, "backoff_max must be >= "),
        ({"on_give_up": "explode"}, ValueError, "on_give_up must be .* got 'explode'"),
    ],
)
def test_policy_rejects_bad_fields(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


class RestartTrackerMachine(RuleBasedStateMachine):
    """The tracker against a model that keeps every failure time."""

    @initialize(
        max_restarts=st.integers(0, 6),
        window=st.floats(0.5, 50.0),
        initial=st.floats(0.0, 2.0),
        extra=st.floats(0.0, 10.0),
    )
    def setup(self, max_restarts: int, window: float, initial: float, extra: float) -> None:
        self.policy = RestartPolicy(
            max_restarts=max_restarts, window=window, backoff_initial=initial,
            backoff_max=initial + extra,
        )  # fmt: skip
        self.tracker = _RestartTracker(self.policy)
        self.now = 0.0
        self.times: list[float] = []
        self.consecutive = 0

    @rule(dt=st.floats(0.0, 30.0), ran_for=st.floats(0.0, 60.0))
    def fail(self, dt: float, ran_for: float) -> None:
        self.now += dt
        self.times.append(self.now)
        if ran_for >= self.policy.window:
            self.consecutive = 0
        self.consecutive += 1
        in_window = [t for t in self.times if t > self.now - self.policy.window]
        expected = (
            None
            if len(in_window) > self.policy.max_restarts
            else min(
                self.policy.backoff_initial * 2 ** min(self.consecutive - 1, 64),
                self.policy.backoff_max,
            )
        )
        got = self.tracker.failure(self.now, ran_for)
        assert got == pytest.approx(expected) if expected is not None else got is None
        assert self.tracker.recent_failures == len(in_window)

    @rule()
    def succeed(self) -> None:
        self.tracker.success()
        self.consecutive = 0

    @invariant()
    def bounded_delay(self) -> None:
        if hasattr(self, "policy"):
            delay = self.policy.backoff(self.tracker.consecutive + 1)
            assert self.policy.backoff_initial <= delay <= self.policy.backoff_max


TestRestartTracker = RestartTrackerMachine.TestCase
TestRestartTracker.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


# ---------------------------------------------------------- long-lived tasks


@on_both
async def test_restart_backoff_sequence_then_stop_task_give_up(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []
    sibling_started = anyio.Event()

    async def flaky() -> None:
        calls.append(clock())
        raise Boom("boom")

    async def steady() -> None:
        sibling_started.set()
        await anyio.sleep_forever()

    policy = RestartPolicy(max_restarts=3, window=100.0, backoff_initial=1.0, backoff_max=3.0)
    with caplog.at_level(logging.ERROR, "memwarden.supervisor"):
        async with _sup(clock) as sup:
            sup.start("steady", steady)
            sup.start("flaky", flaky, policy=policy)
            await sibling_started.wait()
            expected_next = [1001.0, 1003.0, 1006.0]
            for step, (delay, nxt) in enumerate(zip([1.0, 2.0, 3.0], expected_next, strict=True)):
                await clock.wait_for_sleepers(1)
                st_ = sup.status()["flaky"]
                assert (st_.state, st_.next_run, st_.failures) == ("backoff", nxt, step + 1)
                clock.advance(delay)
            await _settle()
            status = sup.status()
            assert status["flaky"].state == "failed"
            assert (status["flaky"].runs, status["flaky"].failures) == (4, 4)
            assert status["flaky"].restarts == 3
            assert status["flaky"].last_error == "Boom('boom')"
            assert status["flaky"].next_run is None
            assert status["steady"].state == "running"  # a sibling's failure is not ours
            assert calls == [1000.0, 1001.0, 1003.0, 1006.0]
    assert sup.status()["steady"].state == "stopped"
    assert sup.status()["flaky"].state == "failed"
    failures = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert len(failures) == 4
    assert all(r.exc_info is not None and r.exc_info[0] is Boom for r in failures)
    assert "giving up" in failures[-1].getMessage()


@on_both
async def test_give_up_raise_cancels_everything_and_chains(clock: ManualClock) -> None:
    cleaned = anyio.Event()
    sibling_started = anyio.Event()

    async def steady() -> None:
        sibling_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    async def doomed() -> None:
        await sibling_started.wait()
        raise Boom("fatal")

    policy = RestartPolicy(max_restarts=0, on_give_up="raise")
    with pytest.raises(SupervisorError, match="'doomed' failed 1 time within 60s: Boom") as info:
        async with _sup(clock) as sup:
            sup.start("steady", steady)
            sup.start("doomed", doomed, policy=policy)
            await anyio.sleep_forever()
    assert isinstance(info.value.__cause__, Boom)
    assert cleaned.is_set()
    assert sup.status()["doomed"].state == "failed"
    assert sup.status()["steady"].state == "stopped"
    assert not sup.running


@on_both
async def test_give_up_raise_after_body_finished(clock: ManualClock) -> None:
    async def doomed() -> None:
        raise Boom("late")

    with pytest.raises(SupervisorError) as info:
        async with _sup(clock, policy=RestartPolicy(max_restarts=0, on_give_up="raise")) as sup:
            sup.start("doomed", doomed)
            await _settle()
    assert isinstance(info.value.__cause__, Boom)


@on_both
async def test_long_lived_return_ends_the_task(clock: ManualClock) -> None:
    async def once() -> None:
        await anyio.lowlevel.checkpoint()

    async with _sup(clock) as sup:
        sup.start("once", once)
        await _settle()
        st_ = sup.status()["once"]
        assert (st_.state, st_.runs, st_.failures, st_.last_duration) == ("stopped", 1, 0, 0.0)
        sup.start("once", once)  # a finished name can be reused


@on_both
async def test_backoff_restarts_from_initial_after_a_healthy_window(clock: ManualClock) -> None:
    lifetimes = iter([0.0, 0.0, 20.0, 0.0])

    async def worker() -> None:
        lifetime = next(lifetimes)
        if lifetime:
            await clock.sleep(lifetime)
        raise Boom("x")

    policy = RestartPolicy(max_restarts=10, window=10.0, backoff_initial=1.0, backoff_max=60.0)
    async with _sup(clock) as sup:
        sup.start("w", worker, policy=policy)
        await clock.advance_when_parked(1.0)  # backoff 1 after the first failure
        await clock.wait_for_sleepers(1)
        assert sup.status()["w"].next_run == 1001.0 + 2.0  # second failure: 2
        clock.advance(2.0)
        await clock.advance_when_parked(20.0)  # the third run lives 20 s > window
        await clock.wait_for_sleepers(1)
        assert sup.status()["w"].next_run == clock() + 1.0  # back to backoff_initial


@on_both
async def test_function_swallowing_cancellation_is_not_a_failure(clock: ManualClock) -> None:
    entered = anyio.Event()

    async def stubborn() -> None:
        try:
            entered.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise Boom("cleanup failed") from None

    async with _sup(clock) as sup:
        sup.start("s", stubborn)
        await entered.wait()
        sup.stop("s")
        await _settle()
        st_ = sup.status()["s"]
        assert (st_.state, st_.failures, st_.restarts) == ("stopped", 0, 0)


# ------------------------------------------------------------ periodic tasks


@on_both
async def test_periodic_runs_on_schedule(clock: ManualClock) -> None:
    calls: list[float] = []

    async with _sup(clock) as sup:
        sup.start_periodic("tick", lambda: calls.append(clock()), 10.0)
        for _ in range(3):
            await clock.advance_when_parked(10.0)
        await clock.wait_for_sleepers(1)
        st_ = sup.status()["tick"]
        assert (st_.state, st_.runs, st_.next_run, st_.kind, st_.interval) == (
            "sleeping",
            4,
            1040.0,
            "periodic",
            10.0,
        )
    assert calls == [1000.0, 1010.0, 1020.0, 1030.0]


@on_both
async def test_periodic_async_function_and_run_immediately_false(clock: ManualClock) -> None:
    calls: list[float] = []

    async def work() -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(clock())

    async with _sup(clock) as sup:
        sup.start_periodic("w", work, 5.0, run_immediately=False)
        await clock.wait_for_sleepers(1)
        assert sup.status()["w"].runs == 0
        assert sup.status()["w"].next_run == 1005.0
        clock.advance(5.0)
        await clock.wait_for_sleepers(1)
    assert calls == [1005.0]


@on_both
async def test_periodic_runs_never_overlap_and_skip_missed_ticks(clock: ManualClock) -> None:
    gate = anyio.Event()
    entered = anyio.Event()
    active = 0
    peak = 0
    starts: list[float] = []

    async def slow() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        starts.append(clock())
        entered.set()
        try:
            if len(starts) == 1:
                await gate.wait()
        finally:
            active -= 1

    async with _sup(clock) as sup:
        sup.start_periodic("slow", slow, 1.0)
        await entered.wait()
        clock.advance(5.5)  # five ticks pass while the first run is stuck
        await _settle()
        assert sup.status()["slow"].state == "running"
        assert sup.status()["slow"].runs == 1
        gate.set()
        await clock.wait_for_sleepers(1)
        st_ = sup.status()["slow"]
        assert st_.runs == 1
        assert st_.last_duration == 5.5
        assert st_.next_run == 1006.0  # the next tick after the overrun, no catch-up burst
        clock.advance(0.5)
        await clock.wait_for_sleepers(1)
    assert starts == [1000.0, 1006.0]
    assert peak == 1


@on_both
async def test_periodic_failure_backs_off_then_recovers(clock: ManualClock) -> None:
    outcomes = iter([True, True, False, False])

    def job() -> None:
        if next(outcomes):
            raise Boom("flaky")

    policy = RestartPolicy(max_restarts=5, window=100.0, backoff_initial=2.0, backoff_max=10.0)
    async with _sup(clock) as sup:
        sup.start_periodic("job", job, 1.0, policy=policy)
        await clock.wait_for_sleepers(1)
        st_ = sup.status()["job"]
        assert (st_.state, st_.next_run, st_.failures) == ("backoff", 1002.0, 1)
        clock.advance(2.0)
        await clock.wait_for_sleepers(1)
        st_ = sup.status()["job"]
        assert (st_.state, st_.next_run, st_.restarts) == ("backoff", 1006.0, 1)  # 2 -> 4
        clock.advance(4.0)
        await clock.wait_for_sleepers(1)
        st_ = sup.status()["job"]
        assert (st_.state, st_.next_run, st_.restarts, st_.runs) == ("sleeping", 1007.0, 2, 3)
        assert st_.last_error == "Boom('flaky')"


@on_both
async def test_periodic_gives_up_and_sibling_continues(clock: ManualClock) -> None:
    ticks: list[float] = []

    def bad() -> None:
        raise Boom("always")

    policy = RestartPolicy(max_restarts=1, window=100.0, backoff_initial=0.5, backoff_max=0.5)
    async with _sup(clock) as sup:
        sup.start_periodic("good", lambda: ticks.append(clock()), 1.0)
        sup.start_periodic("bad", bad, 1.0, policy=policy)
        await clock.advance_when_parked(1.0, sleepers=2)
        await clock.wait_for_sleepers(1)
        await _settle()
        assert sup.status()["bad"].state == "failed"
        clock.advance(1.0)
        await clock.wait_for_sleepers(1)
    assert ticks == [1000.0, 1001.0, 1002.0]


@on_both
async def test_periodic_jitter_stays_in_range(clock: ManualClock) -> None:
    async with _sup(clock, rng=random.Random(7)) as sup:
        sup.start_periodic("j", lambda: None, 10.0, jitter=2.0)
        nexts = []
        for _ in range(5):
            await clock.wait_for_sleepers(1)
            nxt = sup.status()["j"].next_run
            assert nxt is not None
            nexts.append(nxt - clock())
            clock.advance(nxt - clock())
    assert all(10.0 <= d < 12.0 for d in nexts)
    assert len(set(nexts)) > 1


# ------------------------------------------------------------ stop and exit


@on_both
async def test_stop_cancels_one_task_and_runs_its_cleanup(clock: ManualClock) -> None:
    started = anyio.Event()
    cleaned = anyio.Event()

    async def worker() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()

    async with _sup(clock) as sup:
        sup.start("w", worker)
        sup.start_periodic("p", lambda: None, 1.0)
        await started.wait()
        sup.stop("w")
        assert sup.status()["w"].state == "stopped"
        await cleaned.wait()
        sup.stop("w")  # already stopped: no-op
        await clock.wait_for_sleepers(1)
        assert sup.status()["p"].state == "sleeping"
        sup.stop("p")
        await _settle()
        assert clock.sleepers == 0  # the stopped periodic task left no sleeper behind
        sup.start("w", worker)  # the name is free again
        with pytest.raises(TaskNotFoundError, match="no task named 'nope'") as info:
            sup.stop("nope")
        assert isinstance(info.value, KeyError)
        assert str(info.value) == "supervisor 'test' has no task named 'nope'"


@on_both
async def test_stop_during_backoff_leaves_no_sleeper(clock: ManualClock) -> None:
    async def bad() -> None:
        raise Boom("x")

    async with _sup(clock) as sup:
        sup.start("bad", bad)
        await clock.wait_for_sleepers(1)
        assert sup.status()["bad"].state == "backoff"
        sup.stop("bad")
        await _settle()
        assert clock.sleepers == 0
        assert sup.status()["bad"].state == "stopped"


@on_both
async def test_exit_cancels_every_task_and_waits_for_cleanup(clock: ManualClock) -> None:
    cleanup_done: list[str] = []
    started = anyio.Event()

    async def worker() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
                cleanup_done.append("worker")

    async with _sup(clock) as sup:
        sup.start("w", worker)
        sup.start_periodic("p", lambda: None, 1.0)
        await started.wait()
        await clock.wait_for_sleepers(1)
    assert cleanup_done == ["worker"]
    assert {s.state for s in sup.status().values()} == {"stopped"}
    assert clock.sleepers == 0
    with pytest.raises(SupervisorError, match="not running"):
        sup.start("late", worker)


@on_both
async def test_start_during_shutdown_is_refused(clock: ManualClock) -> None:
    errors: list[BaseException] = []
    started = anyio.Event()

    async def worker() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            try:
                sup.start("late", worker)
            except SupervisorError as exc:
                errors.append(exc)

    async with _sup(clock) as sup:
        sup.start("w", worker)
        await started.wait()
    assert len(errors) == 1 and "shutting down" in str(errors[0])
    assert set(sup.status()) == {"w"}


@on_both
async def test_stop_before_the_task_first_runs(clock: ManualClock) -> None:
    calls: list[float] = []
    async with _sup(clock) as sup:
        sup.start_periodic("p", lambda: calls.append(clock()), 1.0)
        sup.stop("p")  # the task has not been scheduled yet
        await _settle()
        assert sup.status()["p"].state == "stopped"
    assert calls == []
    assert sup.status()["p"].runs == 0


@on_both
async def test_outer_cancellation_twin(clock: ManualClock) -> None:
    started = anyio.Event()

    async def worker() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.CancelScope() as outer:
        async with _sup(clock) as sup:
            sup.start("w", worker)
            sup.start_periodic("p", lambda: None, 1.0)
            await started.wait()
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert {s.state for s in sup.status().values()} == {"stopped"}
    assert clock.sleepers == 0
    assert not sup.running


@on_both
async def test_timeout_twin(clock: ManualClock) -> None:
    async def worker() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01) as scope:
        async with _sup(clock) as sup:
            sup.start("w", worker)
            sup.start_periodic("p", lambda: None, 1.0)
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert {s.state for s in sup.status().values()} == {"stopped"}
    assert clock.sleepers == 0


@on_both
async def test_body_exception_propagates_unchanged(clock: ManualClock) -> None:
    with pytest.raises(Boom, match="body"):
        async with _sup(clock) as sup:
            sup.start_periodic("p", lambda: None, 1.0)
            await clock.wait_for_sleepers(1)
            raise Boom("body")
    assert sup.status()["p"].state == "stopped"


# ------------------------------------------------------------ misuse and report


@on_both
async def test_start_outside_and_duplicates(clock: ManualClock) -> None:
    sup = _sup(clock)

    async def worker() -> None:
        await anyio.sleep_forever()

    with pytest.raises(SupervisorError, match="not running"):
        sup.start("w", worker)
    async with sup:
        with pytest.raises(SupervisorError, match="already running"):
            await sup.__aenter__()
        sup.start("w", worker)
        with pytest.raises(ValueError, match="'w' is already running"):
            sup.start("w", worker)
        with pytest.raises(ValueError, match="'w' is already running"):
            sup.start_periodic("w", worker, 1.0)
        assert len(sup.status()) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("", None, 1.0), {}, ValueError, "name must not be empty"),
        ((3, None, 1.0), {}, TypeError, "name must be a str, got int 3"),
        (("x", 42, 1.0), {}, TypeError, "func must be callable, got int 42"),
        (("x", None, 0), {}, ValueError, "interval must be > 0, got 0"),
        (("x", None, -1.0), {}, ValueError, "interval must be > 0, got -1.0"),
        (("x", None, math.nan), {}, ValueError, "interval must not be NaN"),
        (("x", None, "1"), {}, TypeError, "interval must be a number"),
        (("x", None, 1.0), {"jitter": -0.5}, ValueError, "jitter must be >= 0"),
        (("x", None, 1.0), {"jitter": 1.0}, ValueError, r"jitter must be < interval \(1.0\)"),
        (("x", None, 1.0), {"run_immediately": 1}, TypeError, "run_immediately must be a bool"),
        (("x", None, 1.0), {"policy": {}}, TypeError, "policy must be a RestartPolicy"),
    ],
)
@on_both
async def test_start_periodic_bad_input(
    clock: ManualClock, args: tuple[object, ...], kwargs: dict[str, object], exc: type, match: str
) -> None:
    name, func, interval = args
    async with _sup(clock) as sup:
        with pytest.raises(exc, match=match):
            sup.start_periodic(name, func or (lambda: None), interval, **kwargs)  # type: ignore[arg-type]
        assert sup.status() == {}


@on_both
async def test_start_bad_input(clock: ManualClock) -> None:
    async def worker() -> None:
        await anyio.sleep_forever()

    async with _sup(clock) as sup:
        with pytest.raises(TypeError, match="func must be callable, got str 'x'"):
            sup.start("w", "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="policy must be a RestartPolicy or None, got int 1"):
            sup.start("w", worker, policy=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name must not be empty"):
            sup.start("", worker)
        assert sup.status() == {}


def test_supervisor_constructor_bad_input() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        Supervisor(name=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must be a RestartPolicy"):
        Supervisor(policy=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be callable"):
        Supervisor(clock=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sleep must be callable"):
        Supervisor(sleep=None)  # type: ignore[arg-type]


@on_both
async def test_status_and_report_are_json_ready(clock: ManualClock) -> None:
    async with _sup(clock) as sup:
        sup.start_periodic("p", lambda: None, 2.0)
        await clock.wait_for_sleepers(1)
        status = sup.status()["p"]
        assert isinstance(status, TaskStatus)
        with pytest.raises(AttributeError):
            status.runs = 5  # type: ignore[misc]
        report = sup.to_dict()
        assert json.loads(json.dumps(report)) == report
        assert report["tasks"] == {"p": status.to_dict()}
        assert status.to_dict()["next_run"] == 1002.0
        assert "live=1" in repr(sup)
