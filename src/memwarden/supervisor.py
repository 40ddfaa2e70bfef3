"""A supervisor for long-lived and periodic background tasks.

``async with Supervisor(name="...") as sup:`` owns an anyio task group.
``sup.start(name, func)`` runs a long-lived task, ``sup.start_periodic(name,
func, interval)`` calls ``func`` every ``interval`` seconds. A task that
raises is restarted with exponential backoff; past ``max_restarts`` failures
within ``window`` seconds it is given up, either alone (``"stop_task"``) or
by failing the whole supervisor (``"raise"``). Leaving the ``async with``
cancels every task and waits for it to finish.

The restart decisions live in a small synchronous state machine
(:class:`_RestartTracker`); the async layer only sleeps, runs the function and
records what happened. Time comes from the injectable ``clock``/``sleep`` so
tests drive it with :class:`memwarden.testing.ManualClock`.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import anyio
import anyio.abc
import anyio.lowlevel

from ._validate import check_float, check_int, check_interval
from .errors import SupervisorError

__all__ = [
    "RestartPolicy",
    "Supervisor",
    "TaskNotFoundError",
    "TaskStatus",
]

_log = logging.getLogger("memwarden.supervisor")

TaskState = Literal["running", "sleeping", "backoff", "stopped", "failed"]
_LIVE_STATES = ("running", "sleeping", "backoff")
# 2**64 times any sane backoff_initial is far past any backoff_max; the cap
# only keeps the power finite after thousands of spaced-out failures.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervised task is restarted after it raises.

    The n-th consecutive failure waits ``min(backoff_initial * 2**(n-1),
    backoff_max)`` before the next attempt. When more than ``max_restarts``
    failures fall within ``window`` seconds the task is given up:
    ``"stop_task"`` marks it ``"failed"`` and leaves the others running,
    ``"raise"`` cancels every task and makes the ``async with`` raise
    :class:`~memwarden.errors.SupervisorError` chained to the last error.

    Raises ``TypeError``/``ValueError`` naming the field for bad values.
    """

    max_restarts: int = 5
    window: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    on_give_up: Literal["stop_task", "raise"] = "stop_task"

    def __post_init__(self) -> None:
        check_int("max_restarts", self.max_restarts, minimum=0)
        check_interval("window", self.window)
        initial = check_float("backoff_initial", self.backoff_initial, minimum=0.0)
        maximum = check_float("backoff_max", self.backoff_max, minimum=0.0)
        if maximum < initial:
            raise ValueError(
                f"backoff_max must be >= backoff_initial ({initial!r}), got {self.backoff_max!r}"
            )
        if self.on_give_up not in ("stop_task", "raise"):
            raise ValueError(f"on_give_up must be 'stop_task' or 'raise', got {self.on_give_up!r}")

    def backoff(self, consecutive: int) -> float:
        """The delay before the attempt following the ``consecutive``-th failure in a row."""
        exponent = min(max(consecutive - 1, 0), _MAX_EXPONENT)
        return float(min(self.backoff_initial * 2.0**exponent, self.backoff_max))


@dataclass(frozen=True)
class TaskStatus:
    """A snapshot of one supervised task.

    ``runs`` counts calls of the function, ``failures`` those that raised,
    ``restarts`` attempts made after a failure. ``last_error`` is the
    ``repr`` of the last exception, ``last_duration`` the seconds the last
    finished call took, ``next_run`` the clock time of the next call while
    sleeping or backing off (else ``None``).
    """

    name: str
    state: TaskState
    runs: int
    failures: int
    restarts: int
    last_error: str | None
    last_duration: float | None
    next_run: float | None
    kind: Literal["task", "periodic"] = "task"
    interval: float | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field."""
        return {
            "name": self.name,
            "state": self.state,
            "runs": self.runs,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_duration": self.last_duration,
            "next_run": self.next_run,
            "kind": self.kind,
            "interval": self.interval,
        }


class TaskNotFoundError(SupervisorError, KeyError):
    """No task of that name was ever started on this supervisor."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class _RestartTracker:
    """Counts failures in a sliding window and computes backoff delays.

    Synchronous and clock-agnostic: callers pass the time of each failure.
    """

    __slots__ = ("_failures", "consecutive", "policy")

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()
        self.consecutive = 0

    def failure(self, now: float, ran_for: float = 0.0) -> float | None:
        """Record a failure at ``now``; the backoff before the next attempt, or ``None`` to give up.

        A call that ran for a whole ``window`` before failing was healthy, so
        the backoff starts again from ``backoff_initial``.
        """
        horizon = now - self.policy.window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()
        if ran_for >= self.policy.window:
            self.consecutive = 0
        self._failures.append(now)
        self.consecutive += 1
        if len(self._failures) > self.policy.max_restarts:
            return None
        return self.policy.backoff(self.consecutive)

    def success(self) -> None:
        """A call returned normally: the next failure backs off from the start."""
        self.consecutive = 0

    @property
    def recent_failures(self) -> int:
        """Failures still inside the window as of the last one recorded."""
        return len(self._failures)


class _Task:
    __slots__ = (
        "failures",
        "func",
        "interval",
        "jitter",
        "kind",
        "last_duration",
        "last_error",
        "name",
        "next_run",
        "pending_restart",
        "policy",
        "restarts",
        "run_immediately",
        "runs",
        "scope",
        "state",
        "tracker",
    )

    def __init__(
        self,
        name: str,
        kind: Literal["task", "periodic"],
        func: Callable[[], object],
        policy: RestartPolicy,
        *,
        interval: float | None = None,
        jitter: float = 0.0,
        run_immediately: bool = True,
    ) -> None:
        self.name = name
        self.kind: Literal["task", "periodic"] = kind
        self.func = func
        self.policy = policy
        self.tracker = _RestartTracker(policy)
        self.interval = interval
        self.jitter = jitter
        self.run_immediately = run_immediately
        self.scope = anyio.CancelScope()
        self.state: TaskState = "sleeping" if kind == "periodic" else "running"
        self.runs = 0
        self.failures = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.last_duration: float | None = None
        self.next_run: float | None = None
        self.pending_restart = False

    def snapshot(self) -> TaskStatus:
        return TaskStatus(
            name=self.name,
            state=self.state,
            runs=self.runs,
            failures=self.failures,
            restarts=self.restarts,
            last_error=self.last_error,
            last_duration=self.last_duration,
            next_run=self.next_run,
            kind=self.kind,
            interval=self.interval,
        )


class Supervisor:
    """Runs named background tasks in an anyio task group and restarts them when they fail.

    Use as ``async with Supervisor(name="...") as sup:``. ``policy`` is the
    default :class:`RestartPolicy` for tasks started without one. ``clock``
    and ``sleep`` are injectable for tests; ``rng`` draws periodic jitter.

    One task's failure never cancels its siblings unless its policy says
    ``on_give_up="raise"``. Methods are synchronous and must be called from
    the event loop that entered the supervisor. Raises
    :class:`~memwarden.errors.SupervisorError` when entered twice at once.
    """

    def __init__(
        self,
        name: str = "supervisor",
        *,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if policy is not None and not isinstance(policy, RestartPolicy):
            raise TypeError(
                f"policy must be a RestartPolicy or None, got {type(policy).__name__} {policy!r}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")
        if not callable(sleep):
            raise TypeError(f"sleep must be callable, got {type(sleep).__name__} {sleep!r}")
        self._name = name
        self._policy = policy if policy is not None else RestartPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._tasks: dict[str, _Task] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._give_up: SupervisorError | None = None

    @property
    def name(self) -> str:
        """The supervisor's name (used in logs and errors)."""
        return self._name

    @property
    def running(self) -> bool:
        """Whether the ``async with`` block is active (tasks can be started)."""
        return self._tg is not None

    async def __aenter__(self) -> Supervisor:
        if self._tg is not None:
            raise SupervisorError(f"supervisor {self._name!r} is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._closing = False
        self._give_up = None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        tg = self._tg
        assert tg is not None
        self._closing = True
        tg.cancel_scope.cancel()
        try:
            if isinstance(exc, Exception):
                # Children never raise (failures are handled here), so the
                # body's own error is the only one: let it propagate as is
                # rather than wrapped in an ExceptionGroup.
                await tg.__aexit__(None, None, None)
                suppress = False
            else:
                suppress = await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
        give_up, self._give_up = self._give_up, None
        if give_up is not None and (exc is None or suppress):
            raise give_up
        return bool(suppress)

    # ------------------------------------------------------------------ API

    def start(
        self,
        name: str,
        func: Callable[[], Awaitable[None]],
        *,
        policy: RestartPolicy | None = None,
    ) -> None:
        """Run ``func()`` as a long-lived task named ``name``, restarting it when it raises.

        A normal return ends the task (state ``"stopped"``). Raises
        ``ValueError`` when a task of that name is live, ``TypeError`` for a
        non-callable ``func`` or a bad ``policy``, and ``SupervisorError``
        outside the ``async with`` block.
        """
        self._check_name(name)
        self._check_func(func)
        task = _Task(name, "task", func, self._resolve_policy(policy))
        self._launch(task)

    def start_periodic(
        self,
        name: str,
        func: Callable[[], Awaitable[object] | object],
        interval: float,
        *,
        jitter: float = 0.0,
        run_immediately: bool = True,
        policy: RestartPolicy | None = None,
    ) -> None:
        """Call ``func()`` (sync or async) every ``interval`` seconds as task ``name``.

        Calls never overlap: a call that outlasts the interval skips the
        ticks it covered, so there is no burst of catch-up calls. Each wait
        adds a random ``[0, jitter)`` seconds. With ``run_immediately=False``
        the first call comes after one interval. A call that raises counts
        as a failure of ``policy``; the next call then waits for the later of
        its regular tick and the backoff. Sync functions run on the event
        loop, so keep them short (or pass an async function that uses
        ``anyio.to_thread.run_sync``).

        Raises ``ValueError`` for ``interval <= 0``, ``jitter`` outside
        ``[0, interval)`` or a live task of that name; ``TypeError`` for bad
        types; ``SupervisorError`` outside the ``async with`` block.
        """
        self._check_name(name)
        self._check_func(func)
        interval = check_interval("interval", interval)
        jitter = check_float("jitter", jitter, minimum=0.0)
        if jitter >= interval:
            raise ValueError(f"jitter must be < interval ({interval!r}), got {jitter!r}")
        if not isinstance(run_immediately, bool):
            raise TypeError(
                f"run_immediately must be a bool, got {type(run_immediately).__name__} "
                f"{run_immediately!r}"
            )
        task = _Task(
            name,
            "periodic",
            func,
            self._resolve_policy(policy),
            interval=interval,
            jitter=jitter,
            run_immediately=run_immediately,
        )
        self._launch(task)

    def stop(self, name: str) -> None:
        """Cancel task ``name`` (state ``"stopped"``); a no-op for a task already ended.

        Returns at once; the task finishes its cleanup in the background and
        the supervisor's exit still waits for it. Raises
        :class:`TaskNotFoundError` (a ``KeyError``) for an unknown name.
        """
        task = self._tasks.get(name)
        if task is None:
            raise TaskNotFoundError(f"supervisor {self._name!r} has no task named {name!r}")
        if task.state in _LIVE_STATES:
            task.state = "stopped"
            task.next_run = None
        task.scope.cancel()

    def status(self) -> dict[str, TaskStatus]:
        """A snapshot of every task ever started, by name, in start order."""
        return {name: task.snapshot() for name, task in self._tasks.items()}

    def to_dict(self) -> dict[str, object]:
        """A JSON-able report: the supervisor's name and each task's status."""
        return {
            "name": self._name,
            "running": self.running,
            "tasks": {name: status.to_dict() for name, status in self.status().items()},
        }

    def __repr__(self) -> str:
        live = sum(1 for t in self._tasks.values() if t.state in _LIVE_STATES)
        return f"<Supervisor {self._name!r} tasks={len(self._tasks)} live={live}>"

    # ------------------------------------------------------------- internals

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError(f"name must not be empty, got {name!r}")
        if self._tg is None:
            raise SupervisorError(
                f"supervisor {self._name!r} is not running: start tasks inside "
                f"'async with Supervisor(...)'"
            )
        if self._closing or self._give_up is not None:
            raise SupervisorError(f"supervisor {self._name!r} is shutting down")
        existing = self._tasks.get(name)
        if existing is not None and existing.state in _LIVE_STATES:
            raise ValueError(f"a task named {name!r} is already {existing.state}")

    @staticmethod
    def _check_func(func: object) -> None:
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__} {func!r}")

    def _resolve_policy(self, policy: object) -> RestartPolicy:
        if policy is None:
            return self._policy
        if not isinstance(policy, RestartPolicy):
            raise TypeError(
                f"policy must be a RestartPolicy or None, got {type(policy).__name__} {policy!r}"
            )
        return policy

    def _launch(self, task: _Task) -> None:
        assert self._tg is not None
        self._tasks.pop(task.name, None)  # re-insert so status() keeps start order
        self._tasks[task.name] = task
        self._tg.start_soon(self._run, task, name=f"{self._name}:{task.name}")

    async def _run(self, task: _Task) -> None:
        try:
            with task.scope:
                if task.kind == "periodic":
                    await self._run_periodic(task)
                else:
                    await self._run_long_lived(task)
        finally:
            if task.state != "failed":
                task.state = "stopped"
            task.next_run = None

    async def _call(self, task: _Task) -> None:
        # stop() may land after the wait finished but before this task ran
        # again: never start a call that is already cancelled.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if task.pending_restart:
            task.pending_restart = False
            task.restarts += 1
        task.state = "running"
        task.next_run = None
        task.runs += 1
        result = task.func()
        if inspect.isawaitable(result):
            await result

    async def _pause(self, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()

    async def _run_long_lived(self, task: _Task) -> None:
        while True:
            started = self._clock()
            try:
                await self._call(task)
            except Exception as exc:
                ended = self._clock()
                task.last_duration = ended - started
                if self._cancelling(task):
                    return
                delay = self._failed(task, exc, ended, ended - started)
                if delay is None:
                    return
            else:
                task.last_duration = self._clock() - started
                _log.debug("supervisor %r: task %r returned", self._name, task.name)
                return
            task.state = "backoff"
            task.next_run = ended + delay
            task.pending_restart = True
            await self._pause(delay)

    async def _run_periodic(self, task: _Task) -> None:
        assert task.interval is not None
        now = self._clock()
        next_at = now if task.run_immediately else now + task.interval + self._jitter(task)
        while True:
            task.next_run = next_at
            if not task.pending_restart:
                task.state = "sleeping"
            await self._pause(next_at - self._clock())
            started = self._clock()
            try:
                await self._call(task)
            except Exception as exc:
                ended = self._clock()
                task.last_duration = ended - started
                if self._cancelling(task):
                    return
                delay = self._failed(task, exc, ended, ended - started)
                if delay is None:
                    return
                task.state = "backoff"
                task.pending_restart = True
                next_at = max(self._next_tick(task, started, ended), ended + delay)
            else:
                ended = self._clock()
                task.last_duration = ended - started
                task.tracker.success()
                next_at = self._next_tick(task, started, ended)

    def _jitter(self, task: _Task) -> float:
        return self._rng.uniform(0.0, task.jitter) if task.jitter > 0 else 0.0

    def _next_tick(self, task: _Task, started: float, ended: float) -> float:
        assert task.interval is not None
        next_at = started + task.interval + self._jitter(task)
        if next_at < ended:
            # The call overran: skip the ticks it covered instead of bursting.
            next_at += math.ceil((ended - next_at) / task.interval) * task.interval
        return next_at

    def _cancelling(self, task: _Task) -> bool:
        # A function that swallows cancellation and raises something else
        # must not be counted (or restarted) as a failure.
        tg = self._tg
        return task.scope.cancel_called or tg is None or tg.cancel_scope.cancel_called

    def _failed(self, task: _Task, exc: Exception, ended: float, ran_for: float) -> float | None:
        task.failures += 1
        task.last_error = repr(exc)
        delay = task.tracker.failure(ended, ran_for)
        policy = task.policy
        if delay is not None:
            _log.error(
                "supervisor %r: task %r failed (%d in the last %gs); retrying in %.3gs",
                self._name,
                task.name,
                task.tracker.recent_failures,
                policy.window,
                delay,
                exc_info=exc,
            )
            return delay
        task.state = "failed"
        task.next_run = None
        _log.error(
            "supervisor %r: task %r failed %d time(s) within %gs; giving up (%s)",
            self._name,
            task.name,
            task.tracker.recent_failures,
            policy.window,
            policy.on_give_up,
            exc_info=exc,
        )
        if policy.on_give_up == "raise":
            if self._give_up is None:
                count = task.tracker.recent_failures
                error = SupervisorError(
                    f"supervisor {self._name!r}: task {task.name!r} failed {count} "
                    f"time{'s' if count != 1 else ''} within {policy.window:g}s: {exc!r}"
                )
                error.__cause__ = exc
                error.__suppress_context__ = True
                self._give_up = error
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
        return None
