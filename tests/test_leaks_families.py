"""Slow leaks under a large GC sawtooth, and the leak-free shapes around them.

Generated families, seeded and deterministic, over random phases: a sawtooth of
60-90 MB amplitude and a 5-10 s period (not a whole number of samples), sampled
about once a second with 0.5 MB noise; under it, a leak of 100-200 kB/s, about
1 % of the amplitude per cycle. Leak-free families: the sawtooth alone, steps,
warm-up plateaus, batches and declines, each with and without a sawtooth.

The bar, with ``LeakDetector(window=300)``: no false positive on a leak-free
history at any prefix; at least 90 % of leaks flagged within 150 samples of
their start, at least 95 % at the end of 300 samples. The tests here judge a
sample of each family (prefixes every few samples); ``python -m benchmarks
analysis`` judges every prefix of many more and reports the rates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from memwarden.leaks import LeakDetector

MB = 1_000_000
N = 300
WINDOW = 300
Trace = list[tuple[float, float]]


@dataclass(frozen=True)
class Case:
    """One generated history and what it is."""

    family: str
    seed: int
    trace: Trace
    leak_start: int | None  # sample index a leak starts at; None for no leak


def _times(rng: random.Random, n: int) -> list[float]:
    # About once a second: a scheduler's jitter, never out of order.
    return [i + rng.uniform(-0.05, 0.05) for i in range(n)]


def _sawtooth(rng: random.Random) -> Callable[[float], float]:
    amplitude = rng.uniform(60, 90) * MB
    period = rng.uniform(5, 10)
    while abs(period - round(period)) < 0.01:  # a whole number of samples is the easy case
        period = rng.uniform(5, 10)
    phase = rng.uniform(0, period)
    return lambda t: amplitude * (((t + phase) % period) / period)


def sawtooth_leak(seed: int, *, n: int = N, start: int | None = None) -> Case:
    """A 100-200 kB/s leak under a sawtooth, starting at 0 or at ``start``."""
    rng = random.Random(seed)
    saw = _sawtooth(rng)
    rate = rng.uniform(100e3, 200e3)
    begin = rng.randrange(0, 100) if start is None else start
    trace = [
        (t, 200 * MB + saw(t) + rate * max(0.0, t - begin) + rng.gauss(0, 0.5 * MB))
        for t in _times(rng, n)
    ]
    return Case("sawtooth+leak", seed, trace, begin)


def _leak_free(
    family: str, seed: int, shape: Callable[[random.Random], Callable[[float], float]]
) -> Case:
    rng = random.Random(seed)
    level = shape(rng)
    saw = _sawtooth(rng) if family == "sawtooth" or rng.random() < 0.5 else (lambda t: 0.0)
    trace = [(t, 200 * MB + level(t) + saw(t) + rng.gauss(0, 0.5 * MB)) for t in _times(rng, N)]
    return Case(family, seed, trace, None)


def _flat(rng: random.Random) -> Callable[[float], float]:
    return lambda t: 0.0


def _steps(rng: random.Random) -> Callable[[float], float]:
    steps = [(rng.uniform(20, 280), rng.uniform(10, 300) * MB) for _ in range(rng.randint(1, 2))]
    return lambda t: sum(h for at, h in steps if t >= at)


def _warmup(rng: random.Random) -> Callable[[float], float]:
    size = rng.uniform(50, 500) * MB
    tau = rng.uniform(5, 30)
    return lambda t: size * (1 - math.exp(-t / tau))


def _batches(rng: random.Random) -> Callable[[float], float]:
    batches = []
    t = rng.uniform(0, 60)
    while t < N:
        length = rng.uniform(10, 40)
        batches.append((t, t + length, rng.uniform(20, 200) * MB))
        t += length + rng.uniform(20, 60)

    def level(t: float) -> float:
        # A batch builds up its working set over a few seconds, then frees it at once.
        return sum(h * min(1.0, (t - a) / 3.0) for a, b, h in batches if a <= t < b)

    return level


def _decline(rng: random.Random) -> Callable[[float], float]:
    rate = rng.uniform(50e3, 500e3)
    drop_at = rng.uniform(50, 250)
    drop = rng.uniform(0, 100) * MB if rng.random() < 0.5 else 0.0
    return lambda t: 150 * MB - rate * t - (drop if t >= drop_at else 0.0)


LEAK_FREE: dict[str, Callable[[random.Random], Callable[[float], float]]] = {
    "sawtooth": _flat,
    "steps": _steps,
    "warm-up": _warmup,
    "batches": _batches,
    "decline": _decline,
}


def leak_free(family: str, seed: int) -> Case:
    """One leak-free history of ``family`` (see ``LEAK_FREE``)."""
    return _leak_free(family, seed, LEAK_FREE[family])


def first_flag(
    trace: Trace, detector: LeakDetector, *, stride: int = 1, start: int = 1
) -> int | None:
    """The first prefix length (checked every ``stride`` samples) reported as a leak."""
    for n in range(start, len(trace) + 1, stride):
        if detector.analyze(trace[:n]).is_leak:
            return n
    return None


def flagged_within(case: Case, detector: LeakDetector, samples: int) -> bool:
    """Whether the leak is reported ``samples`` after it starts."""
    assert case.leak_start is not None
    return detector.analyze(case.trace[: case.leak_start + samples]).is_leak


# -- the tests: a sample of each family, judged quickly ---------------------

SEEDS = range(40)


@pytest.fixture(scope="module")
def detector() -> LeakDetector:
    return LeakDetector(window=WINDOW)


@pytest.mark.parametrize("family", sorted(LEAK_FREE))
def test_no_false_positive_on_leak_free_families(family: str, detector: LeakDetector) -> None:
    flagged = {}
    for seed in range(12):
        case = leak_free(family, seed)
        at = first_flag(case.trace, detector, stride=7, start=40)
        if at is not None:
            flagged[seed] = at
    assert not flagged, f"{family}: leak-free seeds flagged at prefixes {flagged}"


def test_slow_leaks_are_flagged_within_150_samples(detector: LeakDetector) -> None:
    cases = [sawtooth_leak(seed) for seed in SEEDS]
    hits = sum(flagged_within(case, detector, 150) for case in cases)
    assert hits >= 0.9 * len(cases), f"{hits}/{len(cases)} flagged within 150 samples"


def test_slow_leaks_are_flagged_at_the_end_of_300_samples(detector: LeakDetector) -> None:
    cases = [sawtooth_leak(seed, start=0) for seed in SEEDS]
    hits = sum(detector.analyze(case.trace).is_leak for case in cases)
    assert hits >= 0.95 * len(cases), f"{hits}/{len(cases)} flagged at the end"
