"""Leak detection: trends, statistics and a robust detector for memory histories.

A history is a sequence of ``(t_seconds, bytes)`` pairs, oldest first. A leak
is a *sustained rise of the floor* of memory use. The detector tells it apart
from a garbage-collection sawtooth, a one-off step (a cache warming up, a model
loaded once), a plateau after a warm-up, and noise.

Method (all pure Python, bounded cost; see ``docs/guides/leaks.md``):

1. Take the last ``window`` samples. Test it, and its most recent half, so a
   leak that starts late is seen once it fills half a window.
2. Extract candidate *floors*: the raw points, and the local minima of
   neighbourhood 1, 2 and 3 (for a sawtooth these are the troughs). Keep the
   candidate whose robust slope has the smallest standard error.
3. Fit the floor with Theil-Sen (median of pairwise slopes; at most
   :data:`_MAX_FIT_POINTS` points, so at most ~1,200 pairs). Its noise scale is
   the MAD of the residuals, its standard error ``sigma / sqrt(sum((t - mean)^2))``.
4. It is a leak when the slope is at least ``growth_threshold``, at least
   ``z`` standard errors above zero, and consistent: both halves of the floor
   rise, and the later half does not rise significantly slower than half the
   pace of the earlier one (a warm-up decelerates; a leak does not), and, with
   few floor points, the floor is steadily ordered (Kendall's tau).

No state is kept between calls; every function here is pure and thread-safe.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._validate import check_float, check_int

__all__ = [
    "LeakDetector",
    "LeakReport",
    "analyze_memory_trend",
    "calculate_memory_statistics",
]

Trend = Literal["increasing", "decreasing", "stable"]

_SWITCH = 0.5
"""A sparser floor candidate replaces the current one only if its error is this much smaller."""
_MAX_FIT_POINTS = 48
"""Theil-Sen is O(m^2): floors longer than this are thinned evenly before fitting."""
_MIN_FLOOR_POINTS = 6
_MAD_TO_SIGMA = 1.4826
_LOCAL_MIN_RADII = (1, 2, 3)


def _points(history: object, limit: int | None = None) -> list[tuple[float, float]]:
    """Validate ``history`` (or its last ``limit`` entries) as time-ordered finite pairs."""
    if not isinstance(history, Sequence) or isinstance(history, str | bytes):
        raise TypeError(
            f"history must be a sequence of (t_seconds, bytes) pairs, got {type(history).__name__}"
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
    for lag in range(1, m):
        slopes.extend(
            [
                (y2 - y1) / (t2 - t1)
                for t1, t2, y1, y2 in zip(ts, ts[lag:], ys, ys[lag:], strict=False)
                if t2 != t1
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


def _local_minima(points: list[tuple[float, float]], radius: int) -> list[tuple[float, float]]:
    """Points no higher than any neighbour within ``radius`` (a flat run yields one)."""
    ys = [p[1] for p in points]
    m = len(ys)
    out = []
    for i in range(m):
        y = ys[i]
        # Strict on the left, non-strict on the right, so a flat run yields one point.
        if all(ys[j] > y for j in range(max(0, i - radius), i)) and all(
            ys[j] >= y for j in range(i + 1, min(m, i + radius + 1))
        ):
            out.append(points[i])
    return out


@dataclass(frozen=True, slots=True)
class _Evidence:
    fit: _Fit
    first: _Fit
    second: _Fit
    floor: str
    span: int  # samples in the analysed segment

    @property
    def se(self) -> float:
        return self.fit.se()

    @property
    def mk_z(self) -> float:
        """Mann-Kendall z of the floor: distribution-free, needs no noise estimate."""
        m = self.fit.points
        pairs = m * (m - 1) / 2
        var = m * (m - 1) * (2 * m + 5) / 18.0
        s = self.fit.tau * pairs
        return (s - 1.0) / math.sqrt(var) if var > 0 else 0.0

    @property
    def z(self) -> float:
        se = self.se
        if se == 0:
            return math.inf if self.fit.slope > 0 else 0.0
        return self.fit.slope / se


def _covers(floor: list[tuple[float, float]], segment: list[tuple[float, float]]) -> bool:
    """Whether ``floor`` has at least three points in each half of ``segment``'s time span."""
    middle = (segment[0][0] + segment[-1][0]) / 2.0
    early = sum(1 for p in floor if p[0] <= middle)
    late = sum(1 for p in floor if p[0] >= middle)
    return early >= 3 and late >= 3


def _evidence(segment: list[tuple[float, float]]) -> _Evidence | None:
    """Best floor candidate of ``segment`` (smallest slope standard error), with its halves."""
    best: tuple[_Fit, list[tuple[float, float]], str] | None = None
    candidates: list[tuple[str, list[tuple[float, float]]]] = [("raw", segment)]
    candidates += [(f"minima{r}", _local_minima(segment, r)) for r in _LOCAL_MIN_RADII]
    for name, floor in candidates:
        if len(floor) < _MIN_FLOOR_POINTS or not _covers(floor, segment):
            continue
        floor = _thin(floor, _MAX_FIT_POINTS)
        fit = _theil_sen(floor)
        # A later (sparser) candidate must be clearly better: picking the luckiest of
        # several similar fits would overstate significance on plain noise.
        if best is None or fit.se() < _SWITCH * best[0].se():
            best = (fit, floor, name)
    if best is None:
        return None
    fit, floor, name = best
    # Halves by time, not by point count: local minima can bunch up in one part.
    middle = (segment[0][0] + segment[-1][0]) / 2.0
    early = [p for p in floor if p[0] <= middle]
    late = [p for p in floor if p[0] >= middle]
    if len(early) < 3 or len(late) < 3:
        return None
    first = _theil_sen(early)
    second = _theil_sen(late)
    return _Evidence(fit, first, second, name, len(segment))


_Z_MIN = 5.0
"""Standard errors the floor slope must clear: keeps noise quiet across many checks."""
_MK_Z_MIN = 2.5
"""Mann-Kendall z the floor must clear too: guards against an underestimated noise scale."""
_DECEL = 0.6
"""The later half must rise at least this share of the earlier half's pace (warm-ups do not)."""
_Z_DECEL = 0.0
"""Noise allowance of the deceleration check: none, since a warm-up's tail creeps slowly."""
_HALF_SHARE = 0.33
"""Each half must rise at least this share of the whole window's pace (steps do not)."""
_Z_HALF = 1.0
"""Noise allowance, in standard errors, for the half-window checks."""
_Z_STEADY = 3.0
"""Significance needed when a few floor points (troughs) are steadily ordered."""
_FEW_POINTS = 12
_TAU_STEADY = 0.8
"""With fewer floor points than ``_FEW_POINTS``, a steadily ordered floor stands in for halves."""


def _judge(ev: _Evidence, threshold: float) -> tuple[bool, str]:
    fit, first, second = ev.fit, ev.first, ev.second
    if fit.slope < threshold:
        return False, "floor growth below growth_threshold"
    steady = fit.points < _FEW_POINTS and fit.tau >= _TAU_STEADY
    if ev.z < (_Z_STEADY if steady else _Z_MIN):
        return False, "floor growth not significant against the noise"
    if ev.mk_z < _MK_Z_MIN:
        return False, "floor not steadily rising (Mann-Kendall)"
    if first.slope <= 0 or second.slope <= 0:
        return False, "growth not sustained: one half of the window does not rise"
    se1 = first.se(fit.sigma)
    se2 = second.se(fit.sigma)
    allowance = _Z_DECEL * math.hypot(se2, _DECEL * se1)
    if not steady and second.slope < _DECEL * first.slope - allowance:
        return False, "growth decelerating: a warm-up approaching a plateau"
    allowance = _Z_HALF * math.hypot(se1, _DECEL * se2)
    if not steady and first.slope < _DECEL * second.slope - allowance:
        return False, "growth accelerating: a step or a leak that began mid-window"
    own1, own2 = first.se(), second.se()
    if not steady and (
        first.slope < _HALF_SHARE * fit.slope - _Z_HALF * own1
        or second.slope < _HALF_SHARE * fit.slope - _Z_HALF * own2
    ):
        return False, "growth concentrated in one half: a step, not a leak"
    return True, "sustained rise of the memory floor"


_MIN_SPAN = 40
"""Samples a leak verdict needs: fewer cannot tell a sawtooth's first ramp from a leak."""


def _size_factor(rate: float, threshold: float) -> float:
    return min(1.0, math.log10(1.0 + rate / threshold) / 3.0) if rate > 0 else 0.0


@dataclass(frozen=True)
class LeakReport:
    """The verdict of :meth:`LeakDetector.analyze` on one history.

    ``score`` (0..1) is ``steadiness * size``: ``steadiness`` is Kendall's tau
    of the memory floor against time (0 when not positive), ``size`` is
    ``min(1, log10(1 + growth_rate / growth_threshold) / 3)`` (0.1 at the
    threshold, 1.0 at 1000x it). A report that is not a leak because its
    growth is not sustained (a step, a warm-up) scores 0.
    """

    is_leak: bool
    score: float
    trend: Trend
    growth_rate: float
    samples: int
    reason: str = ""
    """Why the verdict was reached, for people reading a report."""
    floor: str = ""
    """Which floor was fitted: ``"raw"`` or ``"minimaN"`` (local minima of radius N)."""
    window_samples: int = 0
    """How many recent samples the verdict rests on."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict of every field."""
        return {
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
    fewer than ``min_samples`` samples are never judged; only the last
    ``window`` samples are judged, with the ``window`` before them as context
    (so pass up to ``2 * window`` samples). A verdict of leak also needs at
    least ``min(40, window)`` samples: fewer cannot tell the first ramp of a
    garbage-collection sawtooth from a leak.

    Raises ``TypeError``/``ValueError`` naming the argument for bad settings.
    Stateless after construction: ``analyze`` is safe to call from any thread.
    """

    def __init__(
        self, *, growth_threshold: float = 1000.0, min_samples: int = 10, window: int = 100
    ) -> None:
        self.growth_threshold = check_float("growth_threshold", growth_threshold, positive=True)
        self.min_samples = check_int("min_samples", min_samples, minimum=3)
        self.window = check_int("window", window, minimum=max(self.min_samples, 20))

    def __repr__(self) -> str:
        return (
            f"LeakDetector(growth_threshold={self.growth_threshold!r}, "
            f"min_samples={self.min_samples!r}, window={self.window!r})"
        )

    def analyze(self, history: Sequence[tuple[float, float]]) -> LeakReport:
        """Judge ``history`` (``(t_seconds, bytes)`` pairs, oldest first).

        Raises ``TypeError`` for a non-sequence or non-numeric pair and
        ``ValueError`` for non-finite values or times out of order (only the
        last ``2 * window`` samples are read and checked).
        """
        points = _points(history, 2 * self.window)
        n = len(history)
        context = points[: -self.window] if len(points) > self.window else []
        recent = points[-self.window :]
        trend = _trend(recent)
        if n < self.min_samples:
            return LeakReport(False, 0.0, trend, 0.0, n, "fewer samples than min_samples")
        ev = _evidence(recent)
        if ev is None:
            rate = _theil_sen(_thin(recent, _MAX_FIT_POINTS)).slope
            return LeakReport(
                False, 0.0, trend, rate, n, "too few floor points to judge", "", len(recent)
            )
        is_leak, reason, ev = self._judge_all(ev, recent, context)
        fit = ev.fit
        size = _size_factor(fit.slope, self.growth_threshold)
        # Growth that is there but not sustained (a step, a warm-up) must not score.
        sustained = is_leak or not reason.startswith("growth")
        score = max(0.0, fit.tau) * size if sustained else 0.0
        return LeakReport(is_leak, round(score, 4), trend, fit.slope, n, reason, ev.floor, ev.span)

    def _judge_all(
        self,
        ev: _Evidence,
        recent: list[tuple[float, float]],
        context: list[tuple[float, float]],
    ) -> tuple[bool, str, _Evidence]:
        needed = min(_MIN_SPAN, self.window)
        if len(recent) < needed:
            return False, f"fewer than {needed} samples to judge a leak", ev
        is_leak, reason = _judge(ev, self.growth_threshold)
        if not is_leak and reason.startswith("growth accelerating") and len(recent) >= 2 * needed:
            # A leak that began mid-window: judge the recent half on its own.
            half = _evidence(recent[len(recent) // 2 :])
            if half is not None and _judge(half, self.growth_threshold)[0]:
                is_leak, reason, ev = True, "sustained rise of the memory floor (recent half)", half
        if is_leak and len(context) >= needed:
            before = _evidence(context)
            if before is not None and ev.fit.slope < _DECEL * before.fit.slope:
                return False, "growth decelerating: slower than in the window before", ev
        return is_leak, reason, ev


def _trend(points: list[tuple[float, float]], tolerance: float = 0.05) -> Trend:
    if len(points) < 3:
        return "stable"
    fit = _theil_sen(_thin(points, _MAX_FIT_POINTS))
    span = points[-1][0] - points[0][0]
    level = abs(_median([p[1] for p in points])) or 1.0
    change = fit.slope * span / level
    # A trend needs both size (5% of the level over the span) and order (tau).
    if change > tolerance and fit.tau > 0.2:
        return "increasing"
    if change < -tolerance and fit.tau < -0.2:
        return "decreasing"
    return "stable"


def analyze_memory_trend(
    history: Sequence[tuple[float, float]], *, window: int = 100, tolerance: float = 0.05
) -> Trend:
    """Classify the last ``window`` samples as ``"increasing"``, ``"decreasing"`` or ``"stable"``.

    A trend is reported when the robust (Theil-Sen) slope changes the level by
    more than ``tolerance`` (a fraction of the median) over the span and the
    samples are ordered that way (Kendall's tau beyond ±0.2). Fewer than three
    samples are ``"stable"``. Raises ``TypeError``/``ValueError`` for bad input.
    """
    check_int("window", window, minimum=3)
    check_float("tolerance", tolerance, minimum=0.0)
    return _trend(_points(history, window), tolerance)


def calculate_memory_statistics(history: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Average, variance, min, max, growth_rate (bytes/s) and samples of a history.

    ``variance`` is the population variance; ``growth_rate`` the Theil-Sen
    slope of the history (thinned evenly to 48 points, so the cost is bounded).
    An empty history gives zeros. Raises ``TypeError``/``ValueError`` for bad input.
    """
    points = _points(history)
    n = len(points)
    if n == 0:
        return {
            "average": 0.0, "variance": 0.0, "min": 0.0, "max": 0.0,
            "growth_rate": 0.0, "samples": 0.0,
        }  # fmt: skip
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
