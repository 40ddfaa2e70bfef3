"""Leak detection: trends, statistics, a robust detector, and a watcher for many series.

A history is a sequence of ``(t_seconds, bytes)`` pairs, oldest first. A leak
is a *sustained rise of the floor* of memory use. :class:`LeakDetector` tells it
apart from a garbage-collection sawtooth, a one-off step (a cache warming up, a
model loaded once), a plateau after a warm-up, and noise. The method is
described in ``docs/guides/leaks.md``; in short:

1. Judge the last ``window`` samples. The floor is the raw samples, or, when
   the window is a sawtooth (two or more sharp drops), each cycle's ramp line
   at the moment of its drop. The drop times come from a vernier over every
   drop interval; every alignment the samples still allow is fitted, and the
   slowest growth counts, so sampling aliasing never passes for a leak.
2. Fit the floor with Theil-Sen (the median of pairwise slopes; floors are
   thinned to 48 points, so a fit costs at most 1,128 slopes). Its noise scale
   is the MAD of the residuals.
3. A leak needs all of: slope >= ``growth_threshold``; slope >= 5 standard
   errors (3 when a few troughs are steadily ordered); a Mann-Kendall z of at
   least 3.2 (2.5 for steadily ordered troughs), which needs no noise
   estimate; no single level shift explaining the floor better than a line
   (a step); both halves of the window rising, the later at no less than 0.6
   of the earlier's pace (a warm-up decelerates) and the earlier at no less
   than 0.6 of the later's (otherwise the recent half is judged alone: a leak
   that began mid-window); growth inside the best three flat levels (a
   staircase of steps is flat between them); and, given an earlier window as
   context, a pace no less than 0.6 of that window's (the tail of a warm-up).

Everything is pure Python with bounded cost; the detector keeps no state.
:class:`LeakWatcher` keeps bounded histories for many named series (process
memory, packages, pool/cache/session sizes), judges them on each
:meth:`~LeakWatcher.check` and publishes a :class:`LeakEvent` when a series
becomes a leak or stops being one.
"""

from __future__ import annotations

import itertools
import logging
import math
import reprlib
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread

from ._broadcast import Broadcaster, Subscription
from ._validate import check_float, check_int, check_name

__all__ = [
    "LeakDetector",
    "LeakEvent",
    "LeakReport",
    "LeakWatcher",
    "analyze_memory_trend",
    "calculate_memory_statistics",
]

Trend = Literal["increasing", "decreasing", "stable"]

_log = logging.getLogger("memwarden.leaks")

_MAD_TO_SIGMA = 1.4826
_MAX_FIT_POINTS = 48
"""Theil-Sen is O(m^2): floors longer than this are thinned evenly before fitting."""
_MIN_FLOOR_POINTS = 5
_MIN_SPAN = 40
"""Samples a leak verdict needs: fewer cannot tell a sawtooth's first ramp from a leak."""
_DROP_Z = 6.0
"""How far (robust deviations) under the typical step a fall must be to end a sawtooth cycle."""
_Z_MIN = 5.0
"""Standard errors the floor slope must clear: keeps noise quiet across many checks."""
_Z_STEADY = 3.0
"""Standard errors needed when a few floor points (troughs) are steadily ordered."""
_MK_Z_SURE = 3.2
"""Mann-Kendall z the floor must clear: guards against an underestimated noise scale."""
_MK_Z_STEADY = 2.5
"""Mann-Kendall z for a few steadily ordered troughs (6 in perfect order give 2.63)."""
_FEW_POINTS = 12
_TAU_STEADY = 0.8
"""Below ``_FEW_POINTS`` floor points, Kendall's tau >= this counts as steadily ordered."""
_STEP_RATIO = 0.9
"""A floor that one level shift explains this much better than a line is a step."""
_PACE = 0.6
"""Each half of the window, and the window before, must keep at least this share of pace."""
_LEVELS_PACE = 0.5
"""Inside the best three flat levels a leak keeps at least this share of its pace."""
_MIN_LEVELS_POINTS = 12
"""Floor points the three-level check needs (three levels of at least three points, and room)."""
_Z_HALF = 1.0
"""Noise allowance, in standard errors, when a half rises faster than the other."""


def _points(history: object, limit: int | None = None) -> list[tuple[float, float]]:
    """Validate ``history`` (or its last ``limit`` entries) as time-ordered finite pairs."""
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise TypeError(
            "history must be a sequence of (t_seconds, bytes) pairs, got "
            f"{type(history).__name__} {reprlib.repr(history)}"
        )
    start = 0 if limit is None else max(0, len(history) - limit)
    out: list[tuple[float, float]] = []
    last_t = -math.inf
    for index in range(start, len(history)):
        item = history[index]
        try:
            t, value = item
            t = float(t)
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"history[{index}] must be a (t_seconds, bytes) pair of numbers, got {item!r}"
            ) from None
        if not (math.isfinite(t) and math.isfinite(value)):
            raise ValueError(f"history[{index}] must be finite, got {item!r}")
        if t < last_t:
            raise ValueError(
                f"history must be ordered by time: history[{index}] has t={t!r} < {last_t!r}"
            )
        last_t = t
        out.append((t, value))
    return out


def _thin(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """Keep at most ``limit`` points, evenly spaced by index, always keeping the last."""
    m = len(points)
    if m <= limit:
        return points
    step = (m - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def _median_sorted(values: list[float]) -> float:
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _median(values: list[float]) -> float:
    return _median_sorted(sorted(values))


@dataclass(frozen=True, slots=True)
class _Fit:
    slope: float
    intercept: float
    sigma: float  # robust noise scale of the residuals (MAD * 1.4826)
    spread: float  # sqrt(sum((t - mean(t))^2))
    tau: float  # Kendall's tau of value against time, -1..1
    points: int

    def se(self, sigma: float | None = None) -> float:
        """Standard error of the slope, optionally with a pooled noise scale."""
        s = self.sigma if sigma is None else sigma
        if self.spread <= 0:
            return math.inf
        return s / self.spread


def _spread(ts: list[float]) -> float:
    t_mean = sum(ts) / len(ts)
    return math.sqrt(sum((t - t_mean) ** 2 for t in ts))


def _theil_sen(points: list[tuple[float, float]]) -> _Fit:
    """Theil-Sen slope, robust noise scale and Kendall's tau of ``points``."""
    ts = [p[0] for p in points]
    ys = [p[1] for p in points]
    m = len(points)
    slopes: list[float] = []
    extend = slopes.extend
    strictly_increasing = all(a < b for a, b in itertools.pairwise(ts))
    for i in range(m - 1):
        ti, yi = ts[i], ys[i]
        if strictly_increasing:
            extend([(yj - yi) / (tj - ti) for tj, yj in zip(ts[i + 1 :], ys[i + 1 :], strict=True)])
        else:
            extend(
                [
                    (yj - yi) / (tj - ti)
                    for tj, yj in zip(ts[i + 1 :], ys[i + 1 :], strict=True)
                    if tj != ti
                ]
            )
    if not slopes:
        return _Fit(0.0, _median(ys) if ys else 0.0, 0.0, 0.0, 0.0, m)
    slopes.sort()
    slope = _median_sorted(slopes)
    below = bisect_left(slopes, 0.0)
    above = len(slopes) - bisect_right(slopes, 0.0)
    tau = (above - below) / len(slopes)
    intercept = _median([y - slope * t for t, y in points])
    sigma = _MAD_TO_SIGMA * _median([abs(y - slope * t - intercept) for t, y in points])
    return _Fit(slope, intercept, sigma, _spread(ts), tau, m)


def _drops(points: list[tuple[float, float]]) -> list[int] | None:
    """Indices of the first sample after each sawtooth drop; None when there is no sawtooth.

    A cycle ends at a *drop*: a fall far below the typical step between
    samples (more than ``_DROP_Z`` robust deviations under the median step), as
    a garbage collection or a cache purge makes. Two drops or more make a
    sawtooth.
    """
    ys = [p[1] for p in points]
    diffs = [b - a for a, b in itertools.pairwise(ys)]
    if len(diffs) < 4:
        return None
    middle = _median(diffs)
    spread = _MAD_TO_SIGMA * _median([abs(d - middle) for d in diffs])
    cut = middle - _DROP_Z * spread
    drops = [i + 1 for i, d in enumerate(diffs) if d < cut and d < 0]
    return drops if len(drops) >= 2 else None


def _troughs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]] | None:
    """The floor of each sawtooth cycle, at the moment of its drop; None without a sawtooth.

    A cycle's lowest *sample* is a poor floor: it comes up to one sampling
    interval after the drop, so it sits above the true floor by up to the
    ramp's rise in that time (amplitude / period per second of sampling),
    and when the period is close to a whole number of samples that offset
    drifts slowly from cycle to cycle, which looks like growth or decline.
    Instead:

    1. the ramp slope is fitted once over every cycle's samples (one
       intercept per cycle, one common slope);
    2. each drop happened between the last sample before it and the first
       after. When the drops fit a regular period, every period and phase
       that fits all those intervals at once places the drops (a vernier:
       many cycles with varied offsets pin the period closely; cycles that
       all fall alike on the sample grid leave it loose). Otherwise the
       middle of each interval is used;
    3. a cycle's floor is its ramp line, through the mean of its samples,
       at its drop time.

    Returns one floor per alignment still possible: the shortest and the
    longest period that fit (the floor's slope is monotonic between them),
    or the mid-interval floors of an irregular sawtooth. The partial cycle
    before the first drop has no drop to anchor it and is left out.
    """
    drops = _drops(points)
    if drops is None:
        return None
    bounds = [0, *drops, len(points)]
    cycles = [points[a:b] for a, b in itertools.pairwise(bounds)]
    slope = _ramp_slope(cycles)
    means = [
        (math.fsum(p[0] for p in c) / len(c), math.fsum(p[1] for p in c) / len(c)) if c else None
        for c in cycles
    ]
    step = _median([b[0] - a[0] for a, b in itertools.pairwise(points)])
    out = []
    for times, period in _drop_times(points, drops):
        # The partial cycle before the first drop counts when the drop before it
        # (one period earlier) falls at most one sample before the history starts.
        before = times[0] - period
        first = before if means[0] is not None and points[0][0] - before <= step else None
        floor = []
        for at, mean in zip([first, *times], means, strict=True):
            if at is not None and mean is not None:
                floor.append((at, mean[1] + slope * (at - mean[0])))
        out.append(floor)
    return out


def _ramp_slope(cycles: list[list[tuple[float, float]]]) -> float:
    """The common slope of every cycle's ramp: least squares with one intercept per cycle."""
    sxy = sxx = 0.0
    for cycle in cycles:
        if len(cycle) < 2:
            continue
        t_mean = math.fsum(p[0] for p in cycle) / len(cycle)
        y_mean = math.fsum(p[1] for p in cycle) / len(cycle)
        for t, y in cycle:
            sxy += (t - t_mean) * (y - y_mean)
            sxx += (t - t_mean) ** 2
    return sxy / sxx if sxx > 0 else 0.0


def _drop_times(
    points: list[tuple[float, float]], drops: list[int]
) -> list[tuple[list[float], float]]:
    """When each drop happened, and the period, for each regular period that fits.

    When none fits, the middle of each interval and the median spacing.
    """
    lows = [points[k - 1][0] for k in drops]
    highs = [points[k][0] for k in drops]
    middles = [(lo + hi) / 2.0 for lo, hi in zip(lows, highs, strict=True)]
    spacing = _median([b - a for a, b in itertools.pairwise(middles)])
    if spacing <= 0:
        return [(middles, spacing)]
    # Cycle numbers, counted gap by gap: a gap of two periods is a drop not seen.
    counts = [0]
    for a, b in itertools.pairwise(middles):
        counts.append(counts[-1] + round((b - a) / spacing))
    if len(set(counts)) != len(counts):
        return [(middles, spacing)]

    # Drop j happened at d0 + counts[j] * period, inside (lows[j], highs[j]]. Two
    # drops i < j bound the period: (lows[j] - highs[i]) / (counts[j] - counts[i]) <
    # period < (highs[j] - lows[i]) / (counts[j] - counts[i]); every pair together
    # gives the periods that fit all the intervals, if any.
    shortest, longest = -math.inf, math.inf
    for i in range(len(counts) - 1):
        low_i, high_i, n_i = lows[i], highs[i], counts[i]
        for j in range(i + 1, len(counts)):
            gap = counts[j] - n_i
            shortest = max(shortest, (lows[j] - high_i) / gap)
            longest = min(longest, (highs[j] - low_i) / gap)
    if not shortest < longest:
        return [(middles, spacing)]  # no regular period fits: drops at irregular times

    def phase(period: float) -> float:
        # The middle of the phases every interval allows (one point at an end).
        lo = max(a - n * period for a, n in zip(lows, counts, strict=True))
        hi = min(b - n * period for b, n in zip(highs, counts, strict=True))
        return (lo + hi) / 2.0

    ends = (shortest, longest)
    out = []
    for period in ends:
        start = phase(period)
        out.append(([start + n * period for n in counts], period))
    return out


def _step_ratio(points: list[tuple[float, float]]) -> float:
    """Squared error of the best two-level (one step) fit over that of a least-squares line.

    Below 1 the floor looks more like a level shift (a cache filled, a model
    loaded) than like steady growth.
    """
    m = len(points)
    ts = [p[0] for p in points]
    ys = [p[1] for p in points]
    t_mean = sum(ts) / m
    y_mean = sum(ys) / m
    sxx = sum((t - t_mean) ** 2 for t in ts)
    sxy = sum((t - t_mean) * (y - y_mean) for t, y in points)
    syy = sum((y - y_mean) ** 2 for y in ys)
    sse_line = syy - (sxy * sxy / sxx if sxx > 0 else 0.0)
    # Prefix sums give every split's two-level squared error in O(m).
    total, total_sq = 0.0, 0.0
    prefix = [(0.0, 0.0)]
    for y in ys:
        d = y - y_mean  # centred, for numerical stability
        total += d
        total_sq += d * d
        prefix.append((total, total_sq))
    best = math.inf
    for k in range(3, m - 2):
        left, left_sq = prefix[k]
        right, right_sq = total - left, total_sq - left_sq
        sse = left_sq - left * left / k + right_sq - right * right / (m - k)
        best = min(best, sse)
    if sse_line <= 0:
        return math.inf if best > 0 else 1.0
    return best / sse_line


def _within_levels(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Slope left once the best fit of three flat levels (two steps) is taken out, and its SE.

    A staircase of a step or two rises overall, and a single-step fit misses
    the second step, but within its levels it is flat; a leak keeps rising
    inside every level. Levels hold at least three points; the slope is
    pooled over the levels (one intercept each) and its standard error uses
    the robust scale of the residuals.
    """
    m = len(points)
    ys = [p[1] for p in points]
    y_mean = sum(ys) / m
    sums = [0.0]
    squares = [0.0]
    for y in ys:
        sums.append(sums[-1] + (y - y_mean))
        squares.append(squares[-1] + (y - y_mean) ** 2)

    def sse(a: int, b: int) -> float:
        total = sums[b] - sums[a]
        return squares[b] - squares[a] - total * total / (b - a)

    best, cuts = math.inf, (m, m)
    for i in range(3, m - 5):
        left = sse(0, i)
        for j in range(i + 3, m - 2):
            value = left + sse(i, j) + sse(j, m)
            if value < best:
                best, cuts = value, (i, j)
    levels = [points[: cuts[0]], points[cuts[0] : cuts[1]], points[cuts[1] :]]
    slope = _ramp_slope([level for level in levels if level])
    residuals = []
    sxx = 0.0
    for level in levels:
        if not level:
            continue
        t_mean = sum(p[0] for p in level) / len(level)
        y_level = sum(p[1] for p in level) / len(level)
        for t, y in level:
            residuals.append(y - y_level - slope * (t - t_mean))
            sxx += (t - t_mean) ** 2
    sigma = _MAD_TO_SIGMA * _median([abs(r) for r in residuals])
    return slope, (sigma / math.sqrt(sxx) if sxx > 0 else math.inf)


def _covers(floor: list[tuple[float, float]], segment: list[tuple[float, float]]) -> bool:
    """Whether ``floor`` has at least three points in each half of ``segment``'s time span."""
    middle = (segment[0][0] + segment[-1][0]) / 2.0
    early = sum(1 for p in floor if p[0] <= middle)
    late = sum(1 for p in floor if p[0] >= middle)
    return early >= 3 and late >= 3


class _Evidence:
    """The floor of one segment, its fit, and (lazily) the fits of its halves."""

    __slots__ = ("_halves", "fit", "floor", "kind", "segment", "span")

    def __init__(
        self,
        segment: list[tuple[float, float]],
        floor: list[tuple[float, float]],
        kind: str,
        fit: _Fit,
    ) -> None:
        self.segment = segment
        self.floor = floor
        self.kind = kind
        self.fit = fit
        self.span = len(segment)
        self._halves: tuple[_Fit, _Fit] | None = None

    @property
    def z(self) -> float:
        se = self.fit.se()
        if se == 0:
            return math.inf if self.fit.slope > 0 else 0.0
        return self.fit.slope / se

    @property
    def mk_z(self) -> float:
        """Mann-Kendall z of the floor: distribution-free, needs no noise estimate."""
        m = self.fit.points
        var = m * (m - 1) * (2 * m + 5) / 18.0
        s = self.fit.tau * m * (m - 1) / 2.0
        return (s - 1.0) / math.sqrt(var) if var > 0 else 0.0

    @property
    def steady(self) -> bool:
        return self.fit.points < _FEW_POINTS and self.fit.tau >= _TAU_STEADY

    def halves(self) -> tuple[_Fit, _Fit]:
        """Fits of the floor's early and late halves, split by time (not point count)."""
        if self._halves is None:
            middle = (self.segment[0][0] + self.segment[-1][0]) / 2.0
            early = [p for p in self.floor if p[0] <= middle]
            late = [p for p in self.floor if p[0] >= middle]
            self._halves = (_theil_sen(early), _theil_sen(late))
        return self._halves


def _evidence(
    segment: list[tuple[float, float]],
    raw_fit: _Fit | None = None,
    limit: int = _MAX_FIT_POINTS,
) -> _Evidence | None:
    """The floor of ``segment`` (its troughs if it is a sawtooth) and its fit."""
    floors = _troughs(segment)
    if floors is None:
        floor, kind = _thin(segment, limit), "raw"
        if len(floor) < _MIN_FLOOR_POINTS or not _covers(floor, segment):
            return None
        fit = raw_fit if raw_fit is not None else _theil_sen(floor)
        return _Evidence(segment, floor, kind, fit)
    # Every alignment of the drops the samples allow is fitted; the evidence is
    # the one with the slowest growth, so aliasing never passes for a leak.
    best: _Evidence | None = None
    for candidate in floors:
        floor = _thin(candidate, limit)
        if len(floor) < _MIN_FLOOR_POINTS or not _covers(floor, segment):
            return None
        fit = _theil_sen(floor)
        if best is None or fit.slope < best.fit.slope:
            best = _Evidence(segment, floor, "troughs", fit)
    return best


def _judge(ev: _Evidence, threshold: float) -> tuple[bool, str]:
    """Apply the leak criteria to one segment's evidence; cheapest checks first."""
    fit = ev.fit
    if fit.slope < threshold:
        return False, "floor growth below growth_threshold"
    steady = ev.steady
    if ev.z < (_Z_STEADY if steady else _Z_MIN):
        return False, "floor growth not significant against the noise"
    if ev.mk_z < (_MK_Z_STEADY if steady else _MK_Z_SURE):
        return False, "floor not steadily rising (Mann-Kendall)"
    if _step_ratio(ev.floor) < _STEP_RATIO:
        return False, "growth is a level shift (a step), not a steady rise"
    first, second = ev.halves()
    if second.slope <= 0:
        return False, "growth not sustained: the later half of the window does not rise"
    if first.slope <= 0:
        # Judged again on the recent half alone, as any acceleration is.
        return False, "growth accelerating: the earlier half of the window does not rise"
    if second.slope < _PACE * first.slope:
        # No noise allowance here: the tail of a warm-up creeps on for a long time.
        return False, "growth decelerating: a warm-up approaching a plateau"
    se1, se2 = first.se(fit.sigma), second.se(fit.sigma)
    if first.slope < _PACE * second.slope - _Z_HALF * math.hypot(se1, _PACE * se2):
        return False, "growth accelerating: a step, or a leak that began mid-window"
    if len(ev.floor) >= _MIN_LEVELS_POINTS:
        inside, inside_se = _within_levels(ev.floor)
        if inside + _Z_HALF * inside_se < _LEVELS_PACE * fit.slope:
            return False, "growth is a few level shifts (steps), flat in between"
    return True, "sustained rise of the memory floor"


def _size_factor(rate: float, threshold: float) -> float:
    return min(1.0, math.log10(1.0 + rate / threshold) / 3.0) if rate > 0 else 0.0


def _trend_of(fit: _Fit, points: list[tuple[float, float]], tolerance: float) -> Trend:
    if len(points) < 3:
        return "stable"
    span = points[-1][0] - points[0][0]
    level = abs(_median([p[1] for p in points])) or 1.0
    change = fit.slope * span / level
    # A trend needs both size (tolerance of the level over the span) and order (tau).
    if change > tolerance and fit.tau > 0.2:
        return "increasing"
    if change < -tolerance and fit.tau < -0.2:
        return "decreasing"
    return "stable"


@dataclass(frozen=True)
class LeakReport:
    """The verdict of :meth:`LeakDetector.analyze` on one history.

    ``growth_rate`` is the floor's Theil-Sen slope in bytes/s. ``score``
    (0..1) is ``steadiness * size``: ``steadiness`` is Kendall's tau of the
    floor against time (0 when negative) and ``size`` is
    ``min(1, log10(1 + growth_rate / growth_threshold) / 3)`` (0.1 at the
    threshold, 0.57 at 50x, 1.0 at 1000x). Growth that is present but not
    sustained (a step, a warm-up) scores 0.
    """

    is_leak: bool
    score: float
    trend: Trend
    growth_rate: float
    samples: int
    reason: str = ""
    """Why the verdict was reached, in words."""
    floor: str = ""
    """What was fitted: ``"raw"`` samples or sawtooth ``"troughs"`` (empty if nothing)."""
    window_samples: int = 0
    """How many recent samples the verdict rests on."""
    judged: bool = True
    """False when the history was too short to judge: not a leak, but no all-clear either.

    ``score`` is then the evidence so far (0 when there were too few samples
    or floor points to fit at all)."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field."""
        return {
            "judged": self.judged,
            "is_leak": self.is_leak,
            "score": self.score,
            "trend": self.trend,
            "growth_rate": self.growth_rate,
            "samples": self.samples,
            "reason": self.reason,
            "floor": self.floor,
            "window_samples": self.window_samples,
        }


class LeakDetector:
    """Decides whether a memory history shows a leak: a sustained rise of its floor.

    ``growth_threshold`` is the smallest floor growth (bytes/s) called a leak;
    histories shorter than ``min_samples`` are never judged; the last
    ``window`` samples are judged and the ``window`` before them serve as
    context, so keep up to ``2 * window`` samples. A leak verdict also needs
    ``min(40, window)`` samples: fewer cannot tell the first ramp of a
    garbage-collection sawtooth from a leak.

    Raises ``TypeError``/``ValueError`` naming the argument for bad settings.
    Keeps no state: ``analyze`` may be called from any thread.
    """

    def __init__(
        self, *, growth_threshold: float = 1000.0, min_samples: int = 10, window: int = 100
    ) -> None:
        growth_threshold = check_float("growth_threshold", growth_threshold, positive=True)
        min_samples = check_int("min_samples", min_samples, minimum=3)
        window = check_int("window", window, minimum=max(min_samples, 20))
        self.growth_threshold = growth_threshold
        self.min_samples = min_samples
        self.window = window

    def __repr__(self) -> str:
        return (
            f"LeakDetector(growth_threshold={self.growth_threshold!r}, "
            f"min_samples={self.min_samples!r}, window={self.window!r})"
        )

    def analyze(self, history: Sequence[tuple[float, float]]) -> LeakReport:
        """Judge ``history`` (``(t_seconds, bytes)`` pairs, oldest first).

        Raises ``TypeError`` for a non-sequence or a non-numeric pair and
        ``ValueError`` for non-finite values or times out of order. Only the
        last ``2 * window`` samples are read (and checked).
        """
        points = _points(history, 2 * self.window)
        n = len(history)
        recent = points[-self.window :]
        context = points[: -self.window] if len(points) > self.window else []
        raw_fit = _theil_sen(_thin(recent, _MAX_FIT_POINTS))
        trend = _trend_of(raw_fit, recent, 0.05)
        if n < self.min_samples:
            return LeakReport(
                False,
                0.0,
                trend,
                raw_fit.slope,
                n,
                "fewer samples than min_samples",
                judged=False,
            )
        needed = min(_MIN_SPAN, self.window)
        ev = _evidence(recent, raw_fit)
        if ev is None:
            return LeakReport(
                False,
                0.0,
                trend,
                raw_fit.slope,
                n,
                "too few floor points",
                "",
                len(recent),
                judged=False,
            )
        if len(recent) < needed:
            # Not a verdict, but the score still says how steep and steady the
            # growth is so far (seed 001's leak_score ranks packages by it).
            fit = ev.fit
            return LeakReport(
                False,
                round(max(0.0, fit.tau) * _size_factor(fit.slope, self.growth_threshold), 4),
                trend,
                fit.slope,
                n,
                f"fewer than {needed} samples to judge a leak",
                ev.kind,
                ev.span,
                judged=False,
            )
        is_leak, reason = _judge(ev, self.growth_threshold)
        if not is_leak and reason.startswith("growth accelerating") and len(recent) >= 2 * needed:
            half = _evidence(recent[len(recent) // 2 :])
            if half is not None and _judge(half, self.growth_threshold)[0]:
                is_leak, reason, ev = True, "sustained rise of the memory floor (recent half)", half
        if is_leak and len(context) >= needed:
            # Only a coarse pace is needed from the context: fewer points, a quarter the pairs.
            before = _evidence(context, limit=_MAX_FIT_POINTS // 2)
            if before is not None and ev.fit.slope < _PACE * before.fit.slope:
                is_leak, reason = False, "growth decelerating: slower than in the window before"
        fit = ev.fit
        sustained = is_leak or not reason.startswith("growth")
        score = max(0.0, fit.tau) * _size_factor(fit.slope, self.growth_threshold)
        return LeakReport(
            is_leak,
            round(score, 4) if sustained else 0.0,
            trend,
            fit.slope,
            n,
            reason,
            ev.kind,
            ev.span,
        )


def analyze_memory_trend(
    history: Sequence[tuple[float, float]], *, window: int = 100, tolerance: float = 0.05
) -> Trend:
    """Classify the last ``window`` samples as ``"increasing"``, ``"decreasing"`` or ``"stable"``.

    A trend is reported when the Theil-Sen slope changes the level by more
    than ``tolerance`` (a fraction of the median level) over the span and the
    samples are ordered that way (Kendall's tau beyond +-0.2). Fewer than
    three samples are ``"stable"``. Raises ``TypeError``/``ValueError`` for bad
    input.
    """
    check_int("window", window, minimum=3)
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    points = _points(history, window)
    if len(points) < 3:
        return "stable"
    return _trend_of(_theil_sen(_thin(points, _MAX_FIT_POINTS)), points, tolerance)


def calculate_memory_statistics(history: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Average, variance, min, max, growth_rate (bytes/s) and samples of a history.

    ``variance`` is the population variance; ``growth_rate`` is the Theil-Sen
    slope of the history thinned evenly to 48 points (bounded cost). An empty
    history gives zeros. Raises ``TypeError``/``ValueError`` for bad input.
    """
    points = _points(history)
    n = len(points)
    if n == 0:
        return dict.fromkeys(("average", "variance", "min", "max", "growth_rate", "samples"), 0.0)
    values = [p[1] for p in points]
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / n
    growth = _theil_sen(_thin(points, _MAX_FIT_POINTS)).slope if n >= 2 else 0.0
    return {
        "average": mean,
        "variance": variance,
        "min": min(values),
        "max": max(values),
        "growth_rate": growth,
        "samples": float(n),
    }


@dataclass(frozen=True)
class LeakEvent:
    """A series became a leak (``report.is_leak``) or stopped being one (not ``is_leak``).

    ``kind`` is the series' kind (``"process"``, ``"package"``, ``"pool"``,
    ``"cache"``, ``"session"``, ``"custom"``...); ``timestamp`` is wall-clock
    ``time.time()`` when the check ran.
    """

    series: str
    kind: str
    report: LeakReport
    timestamp: float

    @property
    def is_leak(self) -> bool:
        """Shortcut for ``report.is_leak``."""
        return self.report.is_leak

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict: the series, its kind, the timestamp and the report as a dict."""
        return {
            "series": self.series,
            "kind": self.kind,
            "timestamp": self.timestamp,
            "report": self.report.to_dict(),
        }


class _Series:
    __slots__ = ("detector", "history", "kind", "leaking", "report", "source")

    def __init__(
        self,
        kind: str,
        source: Callable[[], float] | None,
        maxlen: int,
        detector: LeakDetector | None = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.detector = detector
        if detector is not None:
            maxlen = max(maxlen, 2 * detector.window)
        self.history: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self.report: LeakReport | None = None
        self.leaking = False


class LeakWatcher:
    """Watches many named series for leaks and publishes a :class:`LeakEvent` on each change.

    A series is either *sampled* (``add_series(name, source)``: ``check()``
    calls ``source()``) or *pushed* (``record(name, t, value)``). Each keeps the
    last ``history`` samples (default ``2 * detector.window``, what the
    detector reads). ``check()`` samples, judges every series that changed and
    publishes an event when a series *becomes* a leak and when it *stops*
    being one (``event.report.is_leak`` tells which), never on every check.

    Time is wall-clock by default (``clock=time.time``) so that histories
    restored after a restart (:meth:`restore`) line up with new samples.
    Thread-safe: every method may be called from any thread; sources are
    called outside the lock, one check at a time.
    """

    def __init__(
        self,
        detector: LeakDetector | None = None,
        *,
        history: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if detector is not None and not isinstance(detector, LeakDetector):
            raise TypeError(f"detector must be a LeakDetector, got {detector!r}")
        self.detector = detector if detector is not None else LeakDetector()
        maxlen = 2 * self.detector.window if history is None else history
        self._maxlen = check_int("history", maxlen, minimum=self.detector.min_samples)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._dirty: set[str] = set()
        self._pending: list[dict[str, object]] = []
        self._events: Broadcaster[LeakEvent] = Broadcaster()

    def add_series(
        self,
        name: str,
        source: Callable[[], float],
        *,
        kind: str = "custom",
        detector: LeakDetector | None = None,
    ) -> None:
        """Watch ``source()`` under ``name``; sampled on each :meth:`check` or :meth:`sample`.

        ``detector`` judges this series instead of the watcher's: give a pool
        size in objects, say, ``LeakDetector(growth_threshold=0.01)`` (objects
        per second) rather than the bytes-per-second default. A pushed series
        of that name (say, one :meth:`restore` created) becomes sampled and
        keeps its history. Raises ``ValueError`` if ``name`` is already sampled
        or empty, ``TypeError`` for a non-callable ``source``, a non-str
        ``name``/``kind`` or a ``detector`` that is not a LeakDetector.
        """
        check_name("name", name)
        if not callable(source):
            raise TypeError(f"source must be callable, got {source!r}")
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, got {type(kind).__name__} {kind!r}")
        if detector is not None and not isinstance(detector, LeakDetector):
            raise TypeError(f"detector must be a LeakDetector, got {detector!r}")
        with self._lock:
            existing = self._series.get(name)
            if existing is not None and existing.source is not None:
                raise ValueError(f"series {name!r} is already watched")
            series = _Series(kind, source, self._maxlen, detector)
            if existing is not None:
                series.history.extend(existing.history)
                series.report, series.leaking = existing.report, existing.leaking
                if existing.history:
                    self._dirty.add(name)
            self._series[name] = series

    def remove_series(self, name: str) -> bool:
        """Stop watching ``name`` and forget its history; False if it was not watched."""
        with self._lock:
            self._dirty.discard(name)
            return self._series.pop(name, None) is not None

    def record(self, name: str, t: float, value: float, *, kind: str = "custom") -> None:
        """Append ``(t, value)`` to series ``name`` (created as a pushed series if new).

        ``t`` is seconds on the watcher's clock and must not go back in time.
        Raises ``TypeError``/``ValueError`` (changing nothing) for bad input.
        """
        check_name("name", name)
        t = check_float("t", t)
        value = check_float("value", value)
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, got {type(kind).__name__} {kind!r}")
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = _Series(kind, None, self._maxlen)
            if series.history and t < series.history[-1][0]:
                raise ValueError(
                    f"t must not go back in time for series {name!r}: "
                    f"got {t!r} after {series.history[-1][0]!r}"
                )
            self._append_locked(name, series, t, value)

    def _append_locked(self, name: str, series: _Series, t: float, value: float) -> None:
        series.history.append((t, value))
        self._dirty.add(name)
        self._pending.append({"series": name, "kind": series.kind, "t": t, "value": value})
        if len(self._pending) > self._maxlen * max(1, len(self._series)):
            del self._pending[: len(self._pending) // 2]

    def has_series(self, name: str) -> bool:
        """Whether a series called ``name`` is watched (sampled or pushed)."""
        return name in self._series

    def series(self) -> dict[str, str]:
        """Every watched series' name and kind."""
        with self._lock:
            return {name: s.kind for name, s in self._series.items()}

    def history(self, name: str) -> list[tuple[float, float]]:
        """A copy of series ``name``'s bounded history, oldest first; ``KeyError`` if unknown."""
        with self._lock:
            return list(self._series[name].history)

    def sample(self, now: float | None = None) -> int:
        """Sample every sampled series once, without judging; returns how many were sampled.

        For sampling more often than judging: run ``sample()`` every few
        seconds and ``check(sample=False)`` every minute. A source that raises
        or returns a non-number is skipped (and logged); the others are
        unaffected.
        """
        t = self._clock() if now is None else check_float("now", now)
        with self._lock:
            sources = [(n, s.source) for n, s in self._series.items() if s.source is not None]
        taken = 0
        for name, source in sources:
            assert source is not None
            try:
                value = check_float("value", source())
            except Exception:
                _log.warning("leak watcher: source of series %r failed", name, exc_info=True)
                continue
            with self._lock:
                series = self._series.get(name)
                if series is None:
                    continue
                if series.history and t < series.history[-1][0]:
                    # The clock went back (a restored history from another time base,
                    # a reboot under a monotonic clock): the old samples cannot be
                    # compared with new ones, and refusing new ones would stall the series.
                    _log.warning("leak watcher: clock went back for %r; history restarted", name)
                    series.history.clear()
                self._append_locked(name, series, t, value)
                taken += 1
        return taken

    def check(self, now: float | None = None, *, sample: bool = True) -> list[LeakEvent]:
        """Sample, judge every series with new samples, publish each change of verdict.

        ``sample=False`` skips sampling (see :meth:`sample`). Returns the events
        published by this check. Runs one check at a time; analysis happens
        outside the state lock, so ``record`` never waits for it.
        """
        with self._check_lock:
            if sample:
                self.sample(now)
            with self._lock:
                todo = [(n, self._series[n], list(self._series[n].history)) for n in self._dirty]
                self._dirty.clear()
            events: list[LeakEvent] = []
            stamp = time.time()
            for name, series, points in todo:
                report = (series.detector or self.detector).analyze(points)
                with self._lock:
                    if self._series.get(name) is not series:
                        continue  # removed (or replaced) while we were judging it
                    series.report = report
                    changed = report.is_leak != series.leaking
                    series.leaking = report.is_leak
                if changed:
                    events.append(LeakEvent(name, series.kind, report, stamp))
            for event in events:
                self._events.publish(event)
            return events

    async def acheck(self, now: float | None = None, *, sample: bool = True) -> list[LeakEvent]:
        """:meth:`check` in a worker thread, so many series never stall the event loop.

        Not abandoned on cancellation: the check in progress completes, then
        the cancellation is raised.
        """
        return await anyio.to_thread.run_sync(lambda: self.check(now, sample=sample))

    def findings(self) -> dict[str, LeakReport]:
        """The latest report of every series judged so far (for the JSON report)."""
        with self._lock:
            return {n: s.report for n, s in self._series.items() if s.report is not None}

    def leaks(self) -> dict[str, LeakReport]:
        """The latest report of every series that is a leak right now."""
        with self._lock:
            return {
                n: s.report
                for n, s in self._series.items()
                if s.report is not None and s.report.is_leak
            }

    def subscribe(
        self,
        *,
        buffer: int = 16,
        overflow: Literal["drop_oldest", "latest"] = "drop_oldest",
        include_current: bool = False,
        accept: Callable[[LeakEvent], bool] | None = None,
    ) -> Subscription[LeakEvent]:
        """A subscription over :class:`LeakEvent` (``async with w.subscribe() as ev: ...``).

        ``include_current=True`` first delivers one event per series that is a
        leak now. A slow subscriber loses its oldest events (counted in
        ``dropped``), never blocking the watcher. Raises
        ``TypeError``/``ValueError`` for bad arguments.
        """
        initial: list[LeakEvent] = []
        if include_current:
            stamp = time.time()
            with self._lock:
                initial = [
                    LeakEvent(n, s.kind, s.report, stamp)
                    for n, s in self._series.items()
                    if s.report is not None and s.report.is_leak
                ]
        return self._events.subscribe(
            buffer=buffer, overflow=overflow, initial=initial, accept=accept
        )

    def close(self) -> None:
        """End every subscription (after buffered events are delivered); idempotent."""
        self._events.close()

    def take_records(self) -> list[dict[str, object]]:
        """Samples appended since the last call, as JSON-able records, for persistence.

        Each record is ``{"series", "kind", "t", "value"}``; feed them to
        :meth:`memwarden.history.HistoryStore.append` and, after a restart,
        back to :meth:`restore`. Bounded: if nobody takes them, the oldest go.
        """
        with self._lock:
            records, self._pending = self._pending, []
            return records

    def restore(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Load persisted records (see :meth:`take_records`) into pushed or sampled series.

        Unknown series are created as pushed series of the record's kind;
        records that are malformed or older than a series' last sample are
        skipped. Returns how many were loaded. Restored samples are not handed
        out again by :meth:`take_records`.
        """
        loaded = 0
        with self._lock:
            for record in records:
                try:
                    name = check_name("name", record["series"])
                    t = check_float("t", record["t"])
                    value = check_float("value", record["value"])
                    kind = str(record.get("kind", "custom"))
                except (KeyError, TypeError, ValueError):
                    continue
                series = self._series.get(name)
                if series is None:
                    series = self._series[name] = _Series(kind, None, self._maxlen)
                if series.history and t < series.history[-1][0]:
                    continue
                series.history.append((t, value))
                self._dirty.add(name)
                loaded += 1
        return loaded
