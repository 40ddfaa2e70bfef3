"""The detection bar on generated histories: leaks flagged within 60 samples, others never.

Every family uses fixed seeds (so failures reproduce) and realistic noise: 1 MB
of Gaussian noise on a 200 MB process, sampled once a second with jitter.
"""

from __future__ import annotations

import math
import random

import pytest

from memwarden.leaks import LeakDetector

MB = 1_000_000
SEEDS = range(3)


def generate(
    seed: int,
    *,
    n: int = 260,
    rate: float = 0.0,
    start: int = 0,
    noise: float = 1 * MB,
    period: int = 0,
    amplitude: float = 50 * MB,
    step_at: int | None = None,
    step: float = 0.0,
    warmup_tau: float = 0.0,
    warmup_size: float = 500 * MB,
) -> list[tuple[float, float]]:
    """A history: base + noise + optional leak, sawtooth, step or warm-up."""
    rng = random.Random(seed)
    phase = rng.random() * max(period, 1)
    out = []
    for i in range(n):
        t = i + rng.uniform(-0.03, 0.03)
        y = 200 * MB + rng.gauss(0.0, noise)
        if rate and i >= start:
            y += rate * (t - start)
        if period:
            y += amplitude * (((i + phase) % period) / period)
        if step_at is not None and i >= step_at:
            y += step
        if warmup_tau:
            y += warmup_size * (1 - math.exp(-i / warmup_tau))
        out.append((t, y))
    return out


def first_flag(history: list[tuple[float, float]]) -> int | None:
    detector = LeakDetector()
    for n in range(1, len(history) + 1):
        if detector.analyze(history[:n]).is_leak:
            return n
    return None


LEAKS = [
    pytest.param({"rate": rate}, 0, id=f"linear-{rate / 1000:g}kBps")
    for rate in (50e3, 200e3, 1e6, 5e6)
] + [
    pytest.param({"rate": rate, "start": 120}, 120, id=f"late-{rate / 1000:g}kBps")
    for rate in (100e3, 1e6)
] + [
    pytest.param({"rate": rate, "period": period}, 0, id=f"sawtooth{period}-{rate / 1000:g}kBps")
    for rate in (500e3, 2e6)
    for period in (6, 10)
]  # fmt: skip

NON_LEAKS = [
    pytest.param({"noise": noise}, id=f"noise-{noise / MB:g}MB") for noise in (1 * MB, 10 * MB)
] + [
    pytest.param({"period": period}, id=f"sawtooth{period}") for period in (4, 10, 20)
] + [
    pytest.param({"step_at": 90, "step": step}, id=f"step-{step / MB:g}MB")
    for step in (20 * MB, 300 * MB)
] + [
    pytest.param({"warmup_tau": tau}, id=f"warmup-tau{tau}") for tau in (5, 15, 25)
]  # fmt: skip


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("params", "start"), LEAKS)
def test_generated_leak_flagged_within_60_samples(
    params: dict[str, float], start: int, seed: int
) -> None:
    flagged = first_flag(generate(seed, **params))  # type: ignore[arg-type]
    assert flagged is not None, "leak never flagged"
    assert start < flagged <= start + 60, f"leak starting at {start} flagged at {flagged}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("params", NON_LEAKS)
def test_generated_non_leak_never_flagged(params: dict[str, float], seed: int) -> None:
    assert first_flag(generate(seed, **params)) is None  # type: ignore[arg-type]


def test_slow_sawtooth_leak_is_flagged_after_five_cycles() -> None:
    # With a 14-sample cycle, 60 samples hold four troughs: too few to judge.
    # The detector needs five; it flags soon after.
    flagged = first_flag(generate(0, rate=1e6, period=14))
    assert flagged is not None
    assert 60 < flagged <= 5 * 14 + 30
