"""Leak detection cost: ``LeakDetector.analyze`` on 100 and 10,000 samples.

The issue asks for absolute costs (µs per analysis). For context, each row has
a peer measured on the same data in the same run:

- ``numpy.polyfit(t, y, 1)``: an ordinary least-squares trend, what a user
  would otherwise write. It is not robust (a sawtooth, a step or one outlier
  moves it) and says nothing about whether growth is sustained, so it is a
  floor on cost, not an equivalent.
- a naive all-pairs Theil-Sen slope in pure Python on the same samples:
  the robust estimator without bounds (O(n^2) pairs); on 10,000 samples it
  would take minutes, so that row uses 1,000.

Histories are a 100 kB/s leak under 1 MB of noise, one sample per second, the
same under a GC sawtooth (which takes the trough path), and a flat history (the
common case in production: the verdict stops after the first fit). ``analyze`` reads only the last
``2 * window`` samples, so its cost does not grow with the history.
Ours and the peer are measured alternately, batch by batch, and compared by
their medians. Run: ``python -m benchmarks analysis`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import random
import statistics

from benchmarks._harness import Row, median_interleaved, speed_row
from memwarden.leaks import LeakDetector

MB = 1_000_000


def _history(
    n: int, *, sawtooth: bool = False, rate: float = 100_000.0, seed: int = 7
) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = 200 * MB + rate * i + rng.gauss(0, MB)
        if sawtooth:
            y += 50 * MB * ((i % 10) / 10)
        out.append((float(i), y))
    return out


def _naive_theil_sen(history: list[tuple[float, float]]) -> float:
    slopes = [
        (y2 - y1) / (t2 - t1)
        for i, (t1, y1) in enumerate(history)
        for t2, y2 in history[i + 1 :]
        if t2 != t1
    ]
    return statistics.median(slopes)


def rows(quick: bool) -> list[Row]:
    """Cost of LeakDetector.analyze against numpy least squares and naive Theil-Sen."""
    import numpy as np

    detector = LeakDetector()
    repeat = 3 if quick else 9
    number = 5 if quick else 40
    out: list[Row] = []

    cases = ((100, False, 1e5), (10_000, False, 1e5), (10_000, True, 1e5), (10_000, False, 0.0))
    for n, sawtooth, rate in cases:
        history = _history(n, sawtooth=sawtooth, rate=rate)
        t = np.array([p[0] for p in history])
        y = np.array([p[1] for p in history])
        assert detector.analyze(history).is_leak is (rate > 0)
        ours, peer = median_interleaved(
            lambda h=history: detector.analyze(h),
            lambda t=t, y=y: np.polyfit(t, y, 1),
            number=number,
            rounds=repeat,
        )
        label = "sawtooth + leak" if sawtooth else "leak + noise" if rate else "flat + noise"
        out.append(
            speed_row(
                f"LeakDetector.analyze, {n:,} samples ({label})",
                ours,
                peer,
                f"numpy.polyfit on {n:,}",
                None,
                notes="absolute cost asked; polyfit is not robust",
            )
        )

    for n in (100, 1_000):
        history = _history(n)
        ours, peer = median_interleaved(
            lambda h=history: detector.analyze(h),
            lambda h=history: _naive_theil_sen(h),
            number=max(1, number // (10 if n > 100 else 1)),
            rounds=repeat,
        )
        out.append(
            speed_row(
                f"LeakDetector.analyze, {n:,} samples",
                ours,
                peer,
                f"all-pairs Theil-Sen on {n:,}",
                None,
                notes="robust peer, unbounded O(n^2)",
            )
        )
    return out
