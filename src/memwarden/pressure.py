"""Pressure levels, the classifier with hysteresis, pressure events and the monitor.

:class:`PressureMonitor` samples a probe, classifies the fraction of the limit
in use into a :class:`PressureLevel` (with hysteresis, so a value hovering at
a threshold does not flap) and publishes a :class:`PressureEvent` on every
change to subscribers (:class:`Subscription`, an async iterator with a bounded
buffer), to ``wait_for`` callers and to synchronous listeners.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._broadcast import Broadcaster, Overflow, Subscription, check_overflow
from ._psi import PsiTrigger
from ._validate import check_float, check_int, check_interval
from .probes import MemorySample, Probe

__all__ = [
    "MonitorStats",
    "PressureEvent",
    "PressureLevel",
    "PressureMonitor",
    "PressureThresholds",
    "Subscription",
]

_log = logging.getLogger("memwarden.pressure")


class PressureLevel(enum.IntEnum):
    """How close memory use is to its limit; ordered, so ``level >= HIGH`` works."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """Lower-case name: ``"low"``, ``"medium"``, ``"high"`` or ``"critical"``."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: PressureLevel | str | int, *, name: str = "level") -> PressureLevel:
        """Accept a level, its label (any case) or its number 0..3.

        Raises ``ValueError`` for an unknown label or number and ``TypeError``
        for anything else (``bool`` included); messages name the argument
        ``name`` and show the value.
        """
        if isinstance(value, PressureLevel):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(_unknown(name, value)) from None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(_unknown(name, value)) from None
        raise TypeError(
            f"{name} must be a PressureLevel, str or int, got {type(value).__name__} {value!r}"
        )


def _unknown(name: str, value: object) -> str:
    return f"unknown pressure level {name}={value!r} (expected low, medium, high, critical or 0..3)"


# Module constants: attribute lookups on an Enum class are slow on the sampling path.
_LOW, _MEDIUM, _HIGH, _CRITICAL = (
    PressureLevel.LOW,
    PressureLevel.MEDIUM,
    PressureLevel.HIGH,
    PressureLevel.CRITICAL,
)


@dataclass(frozen=True)
class PressureThresholds:
    """Fractions of the limit at which each level starts, plus hysteresis.

    A level is entered as soon as the fraction reaches its threshold and left
    only when the fraction falls below ``threshold - hysteresis``, so a value
    hovering at a threshold does not flap.
    """

    medium: float = 0.70
    high: float = 0.85
    critical: float = 0.95
    hysteresis: float = 0.02

    def __post_init__(self) -> None:
        for name in ("medium", "high", "critical"):
            check_float(name, getattr(self, name), positive=True, maximum=1.0)
        check_float("hysteresis", self.hysteresis, minimum=0.0)
        if not self.medium < self.high < self.critical:
            raise ValueError(
                "thresholds must satisfy medium < high < critical, got "
                f"medium={self.medium!r}, high={self.high!r}, critical={self.critical!r}"
            )
        if self.hysteresis >= self.medium:
            raise ValueError(
                f"hysteresis must be < medium ({self.medium!r}), got {self.hysteresis!r}"
            )

    def _raw(self, fraction: float) -> PressureLevel:
        if fraction >= self.critical:
            return _CRITICAL
        if fraction >= self.high:
            return _HIGH
        if fraction >= self.medium:
            return _MEDIUM
        return _LOW

    def threshold(self, level: PressureLevel) -> float:
        """The fraction at which ``level`` is entered (0.0 for LOW)."""
        return {
            PressureLevel.LOW: 0.0,
            PressureLevel.MEDIUM: self.medium,
            PressureLevel.HIGH: self.high,
            PressureLevel.CRITICAL: self.critical,
        }[level]

    def classify(self, fraction: float, previous: PressureLevel | None = None) -> PressureLevel:
        """Return the level for ``fraction`` given the ``previous`` level (hysteresis).

        ``previous`` is a :class:`PressureLevel`, its number 0..3, or None.
        Raises ``TypeError`` for a ``fraction`` that is not a number (``bool``
        included) or a ``previous`` that is not a level, number or None, and
        ``ValueError`` for a NaN or negative ``fraction`` or an unknown level
        number.
        """
        fraction = check_float("fraction", fraction, minimum=0.0, allow_inf=True)
        if previous is not None and not isinstance(previous, PressureLevel):
            if isinstance(previous, str):
                # parse() takes labels, but a label here is a caller's mix-up.
                raise TypeError(
                    f"previous must be a PressureLevel, an int 0..3 or None, got str {previous!r}"
                )
            previous = PressureLevel.parse(previous, name="previous")
        return self._classify_checked(fraction, previous)

    def _classify_checked(self, fraction: float, previous: PressureLevel | None) -> PressureLevel:
        raw = self._raw(fraction)
        if previous is None or raw >= previous:
            return raw
        # Going down: stay at each level until below its threshold minus hysteresis.
        return min(previous, self._raw(fraction + self.hysteresis))


@dataclass(frozen=True)
class PressureEvent:
    """A change of pressure level (or a re-notification while HIGH/CRITICAL)."""

    level: PressureLevel
    previous: PressureLevel
    sample: MemorySample
    timestamp: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict: labels for levels and the sample as a dict."""
        return {
            "level": self.level.label,
            "previous": self.previous.label,
            "timestamp": self.timestamp,
            "sample": self.sample.to_dict(),
        }


@dataclass(frozen=True)
class MonitorStats:
    """A snapshot of a :class:`PressureMonitor`'s counters and high-water marks.

    ``max_dropped`` is the most events any one subscription lost to overflow
    (raise its ``buffer`` if this is not 0); ``peak_subscribers`` the most
    subscriptions live at once. ``psi_source`` is the kernel file whose
    trigger wakes :meth:`PressureMonitor.run` early (a PSI pressure file or a
    cgroup v1 ``memory.pressure_level``), None when it sleeps on the interval.
    """

    level: PressureLevel
    samples: int
    events: int
    renotifications: int
    probe_errors: int
    subscribers: int
    peak_subscribers: int
    max_dropped: int
    listeners: int
    running: bool
    psi_active: bool
    psi_wakeups: int
    psi_source: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field, with ``level`` as its label."""
        data: dict[str, object] = dict(self.__dict__)
        data["level"] = self.level.label
        return data


class PressureMonitor:
    """Sample a probe, classify pressure with hysteresis, and publish level changes.

    ``sample_now()`` is the synchronous core: sample, keep a bounded history,
    classify against the previous level and publish a :class:`PressureEvent`
    when the level changes, or every ``renotify_interval`` seconds while it
    stays HIGH or CRITICAL. The initial level is LOW and announces nothing; the
    first sample publishes only if it classifies above LOW.

    ``run()`` calls it every ``interval`` seconds (earlier when a Linux PSI
    trigger fires; see ``use_psi``). Consumers either ``subscribe()`` to the
    event stream, ``await wait_for(level)``, or register a synchronous
    ``add_listener`` callback.

    Raises ``TypeError``/``ValueError`` naming the argument for bad input.
    Thread-safe: ``sample_now`` may be called from any thread; it holds a
    re-entrant lock while it classifies and publishes, so events come out in
    the order the levels were decided.
    """

    def __init__(
        self,
        probe: Probe | None = None,
        *,
        interval: float = 1.0,
        thresholds: PressureThresholds | None = None,
        history: int = 100,
        clock: Callable[[], float] = time.monotonic,
        renotify_interval: float = 10.0,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        use_psi: bool = True,
    ) -> None:
        if probe is not None and not callable(getattr(probe, "sample", None)):
            raise TypeError(
                f"probe must have a sample() method, got {type(probe).__name__} {probe!r}"
            )
        interval = check_interval("interval", interval)
        if thresholds is None:
            thresholds = PressureThresholds()
        elif not isinstance(thresholds, PressureThresholds):
            raise TypeError(
                "thresholds must be a PressureThresholds, got "
                f"{type(thresholds).__name__} {thresholds!r}"
            )
        check_int("history", history, minimum=1)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        renotify_interval = check_interval("renotify_interval", renotify_interval)
        if not callable(sleep):
            raise TypeError(f"sleep must be callable, got {sleep!r}")
        if not isinstance(use_psi, bool):
            raise TypeError(f"use_psi must be a bool, got {type(use_psi).__name__} {use_psi!r}")
        if probe is None:
            # Imported here so this module never depends on probe internals at import time.
            from .probes import SystemProbe

            probe = SystemProbe()
        self._probe: Probe = probe
        self._interval = interval
        self._thresholds = thresholds
        self._clock = clock
        self._renotify_interval = renotify_interval
        self._sleep = sleep
        self._use_psi = use_psi
        self._lock = threading.RLock()
        self._history: deque[MemorySample] = deque(maxlen=history)
        self._level = PressureLevel.LOW
        self._last_sample: MemorySample | None = None
        self._last_notified = -math.inf
        self._broadcaster: Broadcaster[PressureEvent] = Broadcaster()
        self._listeners: list[Callable[[PressureEvent], None]] = []
        self._sample_listeners: list[Callable[[MemorySample], None]] = []
        self._samples = 0
        self._events = 0
        self._renotifications = 0
        self._probe_errors = 0
        self._running = False
        self._psi: PsiTrigger | None = None
        self._psi_wakeups = 0
        self._wake_pending = False
        self._sleep_scope: anyio.CancelScope | None = None
        self._rearm: anyio.Event | None = None

    # -- read-only state --------------------------------------------------------

    @property
    def level(self) -> PressureLevel:
        """The level decided by the last sample (LOW before any)."""
        return self._level

    @property
    def last_sample(self) -> MemorySample | None:
        """The most recent sample, or None before the first."""
        return self._last_sample

    @property
    def probe(self) -> Probe:
        """The probe being sampled."""
        return self._probe

    @property
    def interval(self) -> float:
        """Seconds between samples in :meth:`run`."""
        return self._interval

    @property
    def thresholds(self) -> PressureThresholds:
        """The thresholds and hysteresis used to classify."""
        return self._thresholds

    @property
    def renotify_interval(self) -> float:
        """Seconds between re-published events while HIGH or CRITICAL."""
        return self._renotify_interval

    @property
    def running(self) -> bool:
        """True while :meth:`run` is sampling."""
        return self._running

    def history(self) -> list[MemorySample]:
        """A copy of the retained samples, oldest first (at most ``history`` of them)."""
        with self._lock:
            return list(self._history)

    def stats(self) -> MonitorStats:
        """Return a snapshot of counters, subscriber figures and high-water marks."""
        b = self._broadcaster.statistics()
        with self._lock:
            return MonitorStats(
                level=self._level,
                samples=self._samples,
                events=self._events,
                renotifications=self._renotifications,
                probe_errors=self._probe_errors,
                subscribers=b.subscribers,
                peak_subscribers=b.peak_subscribers,
                max_dropped=b.max_dropped,
                listeners=len(self._listeners),
                running=self._running,
                psi_active=self._psi is not None,
                psi_wakeups=self._psi_wakeups,
                psi_source=self._psi.path if self._psi is not None else None,
            )

    # -- the synchronous core ---------------------------------------------------

    def sample_now(self) -> MemorySample:
        """Take a sample, classify it, and publish an event if one is due.

        An event is due when the level changed, or when it stayed HIGH or
        CRITICAL for ``renotify_interval`` seconds (by ``clock``) since the
        last event. Listeners run first, synchronously, then the event goes
        to every subscription. Raises whatever the probe raises (state is
        left unchanged), ``ValueError`` for a sample with a NaN or negative
        fraction.
        """
        with self._lock:
            sample = self._probe.sample()
            fraction = sample.fraction
            previous = self._level
            # `not >=` also catches NaN; the full check runs only to word the error.
            if not (type(fraction) is float and fraction >= 0.0):
                fraction = check_float("fraction", fraction, minimum=0.0, allow_inf=True)
            level = self._thresholds._classify_checked(fraction, previous)
            now = self._clock()
            event: PressureEvent | None = None
            if level != previous:
                event = PressureEvent(level, previous, sample, sample.timestamp)
            elif level >= _HIGH and now - self._last_notified >= self._renotify_interval:
                event = PressureEvent(level, previous, sample, sample.timestamp)
                self._renotifications += 1
            self._history.append(sample)
            self._last_sample = sample
            self._level = level
            self._samples += 1
            if self._sample_listeners:
                _call_each(self._sample_listeners, sample, "sample")
            if event is not None:
                self._last_notified = now
                self._events += 1
                self._notify(event)
            return sample

    def _notify(self, event: PressureEvent) -> None:
        _call_each(self._listeners, event, "pressure")
        self._broadcaster.publish(event)

    def add_sample_listener(self, callback: Callable[[MemorySample], None]) -> Callable[[], None]:
        """Call ``callback(sample)`` synchronously inside ``sample_now`` for every sample.

        Sample listeners run before event listeners and subscriptions (a budget
        updates its view of measured memory before anyone reacts to a level).
        They run under the monitor's lock: never call ``sample_now`` from one.
        Returns a function that removes the listener (idempotent). A listener
        that raises is logged and removed. Raises ``TypeError`` if
        ``callback`` is not callable.
        """
        return self._add(self._sample_listeners, callback)

    def add_listener(self, callback: Callable[[PressureEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously inside ``sample_now`` for every event.

        Listeners run in registration order, before subscriptions receive the
        event. Returns a function that removes the listener (idempotent). A
        listener that raises is logged on ``memwarden.pressure`` and removed.
        Raises ``TypeError`` if ``callback`` is not callable.
        """
        return self._add(self._listeners, callback)

    def _add(self, listeners: list[Any], callback: Callable[[Any], None]) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            listeners.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                listeners.remove(callback)

        return remove

    def _current_event(self) -> PressureEvent:
        with self._lock:
            sample = self._last_sample
            if sample is None:
                sample = self.sample_now()
            level = self._level
            return PressureEvent(level, level, sample, sample.timestamp)

    # -- consumers ----------------------------------------------------------------

    def subscribe(
        self,
        *,
        min_level: PressureLevel = PressureLevel.LOW,
        buffer: int = 16,
        overflow: Overflow = "drop_oldest",
        include_current: bool = True,
    ) -> Subscription[PressureEvent]:
        """Return a subscription to pressure events: ``async with m.subscribe() as events``.

        With ``include_current`` the first event is the current level (an
        event whose ``previous == level``; a sample is taken if none was yet),
        provided it is at least ``min_level``. Afterwards an event is
        delivered when its level is at least ``min_level`` *or* when it
        announces a drop from at least ``min_level`` to below it, so a
        subscriber always learns that the pressure it cared about went away.
        ``buffer`` and ``overflow`` bound undelivered events (see
        :class:`Subscription`); the monitor never waits for a subscriber.

        Raises ``TypeError``/``ValueError`` for a bad ``min_level`` (a
        level, its label or its number), ``buffer`` or ``overflow``, and what
        the probe raises if a first sample is needed.
        """
        min_level = PressureLevel.parse(min_level, name="min_level")
        check_int("buffer", buffer, minimum=1)
        overflow = check_overflow(overflow)
        if not isinstance(include_current, bool):
            raise TypeError(
                "include_current must be a bool, got "
                f"{type(include_current).__name__} {include_current!r}"
            )
        accept: Callable[[PressureEvent], bool] | None = None
        if min_level > PressureLevel.LOW:

            def accept(event: PressureEvent) -> bool:
                return event.level >= min_level or event.previous >= min_level

        # Under the lock no event can slip between the current one and the subscription.
        with self._lock:
            initial: list[PressureEvent] = []
            if include_current:
                current = self._current_event()
                if current.level >= min_level:
                    initial.append(current)
            return self._broadcaster.subscribe(
                buffer=buffer, overflow=overflow, initial=initial, accept=accept
            )

    async def wait_for(self, level: PressureLevel) -> PressureEvent:
        """Wait until the level is at least ``level``; return the event that showed it.

        Returns at once (with a current-level event) if the level is already
        there; takes a first sample if none was taken. Something must keep
        sampling (:meth:`run` or :meth:`sample_now`) for a later level to be
        seen. Cancellation and timeouts (``anyio.fail_after``) leave no
        subscription behind. Raises ``TypeError``/``ValueError`` for a bad
        ``level``.
        """
        level = PressureLevel.parse(level)
        await anyio.lowlevel.checkpoint()
        with self._lock:
            current = self._current_event()
            if current.level >= level:
                return current
            # Subscribed under the lock, so no event slips between the check and here.
            sub = self._broadcaster.subscribe(buffer=1, accept=lambda ev: ev.level >= level)
        try:
            return await sub.receive()
        finally:
            sub.close()

    # -- the sampling loop ---------------------------------------------------------

    def _open_psi(self) -> PsiTrigger | None:
        if not self._use_psi:
            return None
        from .probes import SystemProbe

        # Kernel stalls say nothing about a probe that does not read this machine.
        if not isinstance(self._probe, SystemProbe):
            return None
        return PsiTrigger.open_first()

    def _sample_logged(self, failing: bool) -> bool:
        try:
            self.sample_now()
        except Exception:
            with self._lock:
                self._probe_errors += 1
            if failing:
                _log.debug("pressure probe still failing", exc_info=True)
            else:
                _log.warning("pressure probe failed; retrying every interval", exc_info=True)
            return True
        if failing:
            _log.info("pressure probe recovered")
        return False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sample every ``interval`` seconds until cancelled.

        Signals ``task_status.started()`` after the first sample, so
        ``await tg.start(monitor.run)`` returns with ``level`` and
        ``last_sample`` set. A probe that raises is logged (a warning, then
        debug until it recovers) and retried on the next interval. Where a
        kernel trigger can be armed (``use_psi`` and a ``SystemProbe``; see
        ``MonitorStats.psi_source``) a memory stall cuts the current wait
        short, at most once per interval, so a pressure storm costs at most
        two samples per interval. Cancellation ends the loop promptly and
        releases the trigger. Raises ``RuntimeError`` if this monitor is
        already running.
        """
        with self._lock:
            if self._running:
                raise RuntimeError("this PressureMonitor is already running")
            self._running = True
        psi: PsiTrigger | None = None
        try:
            psi = self._open_psi()
            self._psi = psi
            self._rearm = anyio.Event()
            async with anyio.create_task_group() as tg:
                if psi is not None:
                    # A parked watcher costs nothing per interval, unlike a timed wait on
                    # the trigger, whose timeout would be a cancellation every interval.
                    tg.start_soon(self._watch_trigger, psi)
                failing = self._sample_logged(False)
                task_status.started()
                early_allowed = True
                while True:
                    if early_allowed and self._wake_pending:
                        woke_early = True
                    else:
                        with anyio.CancelScope() as scope:
                            if early_allowed:
                                self._sleep_scope = scope
                                if self._rearm is not None:
                                    self._rearm.set()
                            await self._sleep(self._interval)
                        self._sleep_scope = None
                        woke_early = scope.cancelled_caught
                    # A trigger that fired during a full sleep is answered by this sample.
                    self._wake_pending = False
                    if woke_early:
                        self._psi_wakeups += 1
                    early_allowed = not woke_early
                    failing = self._sample_logged(failing)
        finally:
            self._psi = None
            self._sleep_scope = None
            self._wake_pending = False
            if psi is not None:
                psi.close()
            with self._lock:
                self._running = False

    async def _watch_trigger(self, psi: PsiTrigger) -> None:
        while not psi.closed and not psi.broken:
            if await psi.wait(None):
                self._wake_pending = True
                scope = self._sleep_scope
                if scope is not None:
                    scope.cancel()
                # Look again only when a sleep may be cut short: a storm of
                # notifications then costs one wake-up per interval, not one each.
                rearm = self._rearm = anyio.Event()
                await rearm.wait()
        if psi.broken:
            _log.debug("pressure trigger %s reported an error; sampling on the interval", psi.path)

    def __repr__(self) -> str:
        return (
            f"<PressureMonitor level={self._level.label} interval={self._interval} "
            f"samples={self._samples} subscribers={self._broadcaster.subscribers}>"
        )


def _call_each(listeners: list[Any], value: object, kind: str) -> None:
    for listener in tuple(listeners):
        try:
            listener(value)
        except Exception:
            _log.exception("removing %s listener %r: it raised", kind, listener)
            with contextlib.suppress(ValueError):
                listeners.remove(listener)
