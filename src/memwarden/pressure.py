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
from ._psi import PsiTrigger, candidate_paths, cgroup_v1_directory
from ._validate import check_float, check_int, check_interval
from .probes import MemorySample, Probe, _KernelView
from .units import format_size

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
    subscriptions live at once. ``event_sources`` names the kernel signals
    armed to wake :meth:`PressureMonitor.run` early (``psi``,
    ``cgroup-v1-thresholds``, ``cgroup-v1-pressure-level``,
    ``cgroup-v2-memory.events``; empty when it samples on the interval alone);
    ``psi_active`` is true when any is armed, ``psi_source`` is the file of the
    first and ``psi_wakeups`` counts samples taken early on any signal.
    ``rearms`` counts cgroup v1 thresholds moved after the level or page cache
    changed; ``current_interval`` is the wait after the latest sample;
    ``dwell_holds`` counts samples that kept a level because ``min_dwell`` had
    not passed yet.
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
    event_sources: tuple[str, ...] = ()
    rearms: int = 0
    current_interval: float = 0.0
    dwell_holds: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field, with ``level`` as its label."""
        data: dict[str, object] = dict(self.__dict__)
        data["level"] = self.level.label
        data["event_sources"] = list(self.event_sources)
        return data


_V1_THRESHOLDS = "cgroup-v1-thresholds"
# At most one INFO line per level in this many seconds (by the monitor's clock).
_LOG_EVERY = 10.0
# Thresholds are re-armed when a line would move by more than this or 1 % of the limit.
_REARM_MIN_BYTES = 4 << 20


@dataclass
class _Source:
    """One armed kernel signal; ``limit`` and ``lines`` only for cgroup v1 thresholds."""

    kind: str
    trigger: PsiTrigger
    limit: int = 0
    lines: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.lines:
            at = ", ".join(format_size(n) for n in self.lines)
            return f"{self.kind} {self.trigger.path} at {at}"
        return f"{self.kind} {self.trigger.path}"


class PressureMonitor:
    """Sample a probe, classify pressure with hysteresis, and publish level changes.

    ``sample_now()`` is the synchronous core: sample, keep a bounded history,
    classify against the previous level and publish a :class:`PressureEvent`
    when the level changes, or every ``renotify_interval`` seconds while it
    stays HIGH or CRITICAL. The initial level is LOW and announces nothing; the
    first sample publishes only if it classifies above LOW.

    A level is entered as soon as a sample reaches its line; it is left only
    once the fraction has stayed below the line minus ``hysteresis`` for
    ``min_dwell`` seconds (by ``clock``; default 0.0), so a load in waves does
    not flap.

    ``run()`` calls it every ``interval`` seconds at LOW, down to every
    ``min_interval`` seconds (default 0.1) at HIGH and above, and earlier
    when a kernel signal fires (see ``use_psi`` and :meth:`event_sources`).
    Consumers either ``subscribe()`` to the event stream, ``await
    wait_for(level)``, or register a synchronous ``add_listener`` callback.

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
        min_interval: float = 0.1,
        min_dwell: float = 0.0,
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
        min_interval = check_interval("min_interval", min_interval)
        min_dwell = check_float("min_dwell", min_dwell, minimum=0.0)
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
        # Never longer than the plain interval: min_interval >= interval turns adaptation off.
        self._min_interval = min(min_interval, interval)
        self._min_dwell = min_dwell
        self._current_interval = interval
        # When the fraction was first seen below the current level's exit line (min_dwell).
        self._below_since: float | None = None
        self._dwell_holds = 0
        self._logged_at = [-math.inf] * len(PressureLevel)
        self._log_suppressed = [0] * len(PressureLevel)
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
        self._sources: list[_Source] = []
        self._rearms = 0
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
    def min_interval(self) -> float:
        """The shortest wait between samples in :meth:`run` (at HIGH and above)."""
        return self._min_interval

    @property
    def current_interval(self) -> float:
        """The wait :meth:`run` uses after the latest sample (adapts to the headroom)."""
        return self._current_interval

    @property
    def min_dwell(self) -> float:
        """Seconds the fraction must stay below a level's exit line before the level drops."""
        return self._min_dwell

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
                psi_active=bool(self._sources),
                psi_wakeups=self._psi_wakeups,
                psi_source=self._sources[0].trigger.path if self._sources else None,
                event_sources=tuple(source.kind for source in self._sources),
                rearms=self._rearms,
                current_interval=self._current_interval,
                dwell_holds=self._dwell_holds,
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
            if level < previous:
                level = self._dwell(level, previous, now)
            else:
                self._below_since = None
            self._current_interval = self._next_interval(fraction, level)
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
                self._log_event(event, now)
                self._notify(event)
            return sample

    def _log_event(self, event: PressureEvent, now: float) -> None:
        level = event.level
        sample = event.sample
        if level == event.previous:
            _log.debug(
                "memory pressure still %s: %.1f %% of the limit", level, 100 * sample.fraction
            )
            return
        if now - self._logged_at[level] < _LOG_EVERY:
            # A level entered again and again (a load that comes in waves) is one
            # INFO line per level per _LOG_EVERY seconds; the rest go to DEBUG.
            self._log_suppressed[level] += 1
            _log.debug(
                "memory pressure %s (was %s): %.1f %% of the limit",
                level,
                event.previous,
                100 * sample.fraction,
            )
            return
        suppressed, self._log_suppressed[level] = self._log_suppressed[level], 0
        self._logged_at[level] = now
        _log.info(
            "memory pressure %s (was %s): %s used of %s (%.1f %%)%s",
            level,
            event.previous,
            format_size(sample.used),
            format_size(sample.limit),
            100 * sample.fraction,
            f"; entered {suppressed} more times since the last line" if suppressed else "",
        )

    def _dwell(self, level: PressureLevel, previous: PressureLevel, now: float) -> PressureLevel:
        # Moving down waits until the fraction has stayed below the exit line for
        # min_dwell seconds; any sample back above it restarts the count (the caller
        # resets _below_since), so a fraction oscillating around the line never flaps.
        if self._min_dwell <= 0.0:
            return level
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since < self._min_dwell:
            self._dwell_holds += 1
            return previous
        self._below_since = None
        return level

    def _next_interval(self, fraction: float, level: PressureLevel) -> float:
        # The rule users read in the docs: the plain interval below the MEDIUM line,
        # min_interval at HIGH and above, and in between a geometric interpolation
        # by where the fraction sits between the MEDIUM and HIGH lines.
        slow, fast = self._interval, self._min_interval
        if level >= _HIGH or slow <= fast:
            return fast
        t = self._thresholds
        position = (fraction - t.medium) / (t.high - t.medium)
        if position <= 0.0:
            return slow
        if position >= 1.0:
            return fast
        return float(slow * (fast / slow) ** position)

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

    # -- kernel wake-ups -------------------------------------------------------------

    def _open_psi(self) -> PsiTrigger | None:
        view_root = self._system_root()
        if view_root is None:
            return None
        # PSI only: cgroup v1 gets usage thresholds (see _open_cgroup_sources) instead.
        return PsiTrigger.open_first(candidate_paths(view_root), root=view_root)

    def _system_root(self) -> str | None:
        if not self._use_psi:
            return None
        from .probes import SystemProbe

        # Kernel signals say nothing about a probe that does not read this machine.
        if not isinstance(self._probe, SystemProbe):
            return None
        return self._probe.root

    def _kernel_view(self) -> _KernelView | None:
        view = getattr(self._probe, "_kernel_view", None)
        return view() if view is not None and self._system_root() is not None else None

    def _open_sources(self) -> list[_Source]:
        sources: list[_Source] = []
        psi = self._open_psi()
        if psi is not None:
            sources.append(_Source("psi", psi))
        view = self._kernel_view()
        if view is not None and view.version == 1:
            lines = self._v1_lines(view.limit, view.reclaimable)
            trigger = PsiTrigger.open_cgroup_v1_thresholds(view.directory, list(lines))
            if trigger is not None:
                sources.append(_Source(_V1_THRESHOLDS, trigger, view.limit, lines))
            else:
                # Reclaim-level notifications fire late (at reclaim), but late beats never.
                level = PsiTrigger.open_cgroup_v1(view.directory)
                if level is not None:
                    sources.append(_Source("cgroup-v1-pressure-level", level))
        elif view is not None and view.version == 2:
            events = PsiTrigger.open_memory_events(view.directory)
            if events is not None:
                sources.append(_Source("cgroup-v2-memory.events", events))
        elif view is None and psi is None:
            # A v1 cgroup without a limit of its own: usage thresholds would not
            # match the system figures sampled, but reclaim notifications still do.
            root = self._system_root()
            directory = cgroup_v1_directory(root) if root is not None else None
            level = PsiTrigger.open_cgroup_v1(directory) if directory is not None else None
            if level is not None:
                sources.append(_Source("cgroup-v1-pressure-level", level))
        return sources

    def _v1_lines(self, limit: int, reclaimable: int) -> tuple[int, ...]:
        # memory.usage_in_bytes counts page cache that `used` leaves out, so every
        # line sits `reclaimable` bytes higher in the kernel's counter.
        t = self._thresholds
        fractions = [t.medium, t.high, t.critical]
        if self._level > _LOW:
            fractions.append(t.threshold(self._level) - t.hysteresis)
        return tuple(sorted({max(1, round(limit * f) + reclaimable) for f in fractions}))

    def _rearm_due(self, source: _Source, limit: int, lines: tuple[int, ...]) -> bool:
        if source.limit != limit or len(source.lines) != len(lines):
            return True
        tolerance = max(limit // 100, _REARM_MIN_BYTES)
        return any(abs(a - b) > tolerance for a, b in zip(source.lines, lines, strict=True))

    def _refresh_sources(self) -> list[_Source]:
        """Re-arm cgroup v1 thresholds that moved; return the sources newly armed."""
        fresh: list[_Source] = []
        kept: list[_Source] = []
        for source in self._sources:
            view = self._kernel_view() if source.kind == _V1_THRESHOLDS else None
            if view is None:
                kept.append(source)
                continue
            with self._lock:
                lines = self._v1_lines(view.limit, view.reclaimable)
            if not self._rearm_due(source, view.limit, lines):
                kept.append(source)
                continue
            # Closing the eventfd unregisters every threshold on it.
            source.trigger.close()
            trigger = PsiTrigger.open_cgroup_v1_thresholds(view.directory, list(lines))
            if trigger is None:
                _log.debug("could not re-arm cgroup v1 thresholds; sampling on the interval")
                continue
            replacement = _Source(_V1_THRESHOLDS, trigger, view.limit, lines)
            kept.append(replacement)
            fresh.append(replacement)
            self._rearms += 1
            _log.debug("re-armed cgroup v1 thresholds at %s bytes", ", ".join(map(str, lines)))
        if fresh or len(kept) != len(self._sources):
            with self._lock:
                self._sources = kept
        return fresh

    def event_sources(self) -> tuple[str, ...]:
        """The kernel signals that wake :meth:`run` early, one line each (empty when none).

        Each line names the kind (``psi``, ``cgroup-v1-thresholds``,
        ``cgroup-v1-pressure-level``, ``cgroup-v2-memory.events``) and the file
        it watches; cgroup v1 thresholds also list their byte values. Empty
        before :meth:`run` starts and after it ends.
        """
        with self._lock:
            return tuple(source.describe() for source in self._sources)

    # -- the sampling loop ---------------------------------------------------------

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

    def _log_start(self) -> None:
        sample = self._last_sample
        if sample is None:
            limit = "unknown (the first sample failed)"
        else:
            limit = f"{format_size(sample.limit)} ({self._limit_source(sample)})"
        sources = self.event_sources()
        _log.info(
            "pressure monitor started: limit %s, interval %gs (down to %gs near the limit), "
            "min_dwell %gs, wake-ups: %s",
            limit,
            self._interval,
            self._min_interval,
            self._min_dwell,
            "; ".join(sources) if sources else "none (interval only)",
        )

    def _limit_source(self, sample: MemorySample) -> str:
        view = self._kernel_view()
        if view is not None:
            return f"cgroup v{view.version} {view.directory}"
        return sample.source

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sample until cancelled, every ``interval`` seconds at LOW, faster near the limit.

        The wait between samples is :attr:`current_interval`: ``interval``
        below the MEDIUM line, ``min_interval`` at HIGH and above, and in
        between a geometric interpolation by where the fraction sits between
        the MEDIUM and HIGH lines. Signals ``task_status.started()`` after the
        first sample, so ``await tg.start(monitor.run)`` returns with
        ``level`` and ``last_sample`` set. A probe that raises is logged (a
        warning, then debug until it recovers) and retried.

        Where the kernel offers signals (``use_psi`` and a ``SystemProbe``; see
        :meth:`event_sources`) a signal cuts the current wait short; after an
        early sample the next ``min_interval`` is never cut, so a storm of
        signals costs at most one extra sample per ``min_interval``. Cancellation
        ends the loop promptly and releases every kernel descriptor. Raises
        ``RuntimeError`` if this monitor is already running.
        """
        with self._lock:
            if self._running:
                raise RuntimeError("this PressureMonitor is already running")
            self._running = True
        try:
            self._rearm = anyio.Event()
            async with anyio.create_task_group() as tg:
                failing = self._sample_logged(False)
                sources = self._open_sources()
                with self._lock:
                    self._sources = sources
                for source in sources:
                    # A parked watcher costs nothing per interval, unlike a timed wait on
                    # the trigger, whose timeout would be a cancellation every interval.
                    tg.start_soon(self._watch_trigger, source.trigger)
                self._log_start()
                task_status.started()
                guard = 0.0
                while True:
                    wait = self._current_interval
                    if guard > 0.0:
                        # Right after an early sample: a stretch no signal cuts short.
                        await self._sleep(min(guard, wait))
                        wait -= guard
                    woke_early = False
                    if wait > 0.0:
                        if self._wake_pending:
                            woke_early = True
                        else:
                            with anyio.CancelScope() as scope:
                                self._sleep_scope = scope
                                rearm = self._rearm
                                if rearm is not None and rearm.statistics().tasks_waiting:
                                    # Watchers park on this event right after they fire.
                                    self._rearm = anyio.Event()
                                    rearm.set()
                                await self._sleep(wait)
                            self._sleep_scope = None
                            woke_early = scope.cancelled_caught
                    # A signal that came during a full wait is answered by this sample.
                    self._wake_pending = False
                    if woke_early:
                        self._psi_wakeups += 1
                    guard = self._min_interval if woke_early else 0.0
                    failing = self._sample_logged(failing)
                    if self._sources:
                        for source in self._refresh_sources():
                            tg.start_soon(self._watch_trigger, source.trigger)
        finally:
            with self._lock:
                sources, self._sources = self._sources, []
            self._sleep_scope = None
            self._wake_pending = False
            for source in sources:
                source.trigger.close()
            with self._lock:
                self._running = False

    async def _watch_trigger(self, trigger: PsiTrigger) -> None:
        while not trigger.closed and not trigger.broken:
            if await trigger.wait(None):
                self._wake_pending = True
                scope = self._sleep_scope
                if scope is not None:
                    scope.cancel()
                # Look again only when a wait may be cut short: a storm of
                # signals then costs one wake-up per wait, not one each.
                rearm = self._rearm
                if rearm is not None:
                    await rearm.wait()
        if trigger.broken:
            _log.debug("kernel signal %s reported an error; no longer watched", trigger.path)

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
