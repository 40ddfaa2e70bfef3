"""LeakDetector, analyze_memory_trend and calculate_memory_statistics."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from memwarden.leaks import (
    LeakDetector,
    LeakReport,
    analyze_memory_trend,
    calculate_memory_statistics,
)

TRACES = Path(__file__).resolve().parent / "data" / "traces"
TRACE_FILES = sorted(TRACES.glob("*.csv"))
MB = 1_000_000


def load_trace(path: Path) -> list[tuple[float, float]]:
    lines = path.read_text().split()
    assert lines[0] == "t_seconds,bytes"
    return [(float(t), float(b)) for t, b in (line.split(",") for line in lines[1:])]


def leak_start(name: str) -> int | None:
    """The sample index a leak starts at, from the file name; None for a non-leak."""
    if "leak_start_" not in name:
        assert "noleak" in name, name
        return None
    return int(name.split("leak_start_")[1].split(".")[0])


def first_flag(history: list[tuple[float, float]], detector: LeakDetector) -> int | None:
    """The first prefix length at which the detector reports a leak."""
    for n in range(1, len(history) + 1):
        if detector.analyze(history[:n]).is_leak:
            return n
    return None


def assert_bar(history: list[tuple[float, float]], start: int | None) -> None:
    """Leaks flagged after they start and within 60 samples; non-leaks never."""
    flagged = first_flag(history, LeakDetector())
    if start is None:
        assert flagged is None, f"non-leak flagged at prefix {flagged}"
    else:
        assert flagged is not None, "leak never flagged"
        assert start < flagged <= start + 60, f"leak starting at {start} flagged at {flagged}"


def test_the_labelled_traces_ship_with_the_tests() -> None:
    # A fresh clone runs every labelled trace: none may go missing silently.
    assert len(TRACE_FILES) >= 9, f"labelled traces missing under {TRACES}"
    assert any("noleak" in p.name for p in TRACE_FILES)
    assert any("leak_start_" in p.name for p in TRACE_FILES)


@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
def test_labelled_traces(path: Path) -> None:
    assert_bar(load_trace(path), leak_start(path.name))


def linear(rate: float, *, n: int = 300, noise: float = 0.0, start: int = 0, seed: int = 0):
    rng = random.Random(seed)
    return [(float(i), 200 * MB + rng.gauss(0, noise) + rate * max(0, i - start)) for i in range(n)]


def test_clean_leak_is_flagged_with_high_score() -> None:
    report = LeakDetector().analyze(linear(1 * MB, n=100))
    assert report.is_leak
    assert report.trend == "increasing"
    assert report.growth_rate == pytest.approx(1 * MB, rel=1e-6)
    assert report.score > 0.9
    assert report.samples == 100


def test_flat_history_is_not_a_leak() -> None:
    report = LeakDetector().analyze([(float(i), 100.0 * MB) for i in range(200)])
    assert not report.is_leak
    assert report.trend == "stable"
    assert report.growth_rate == 0.0
    assert report.score == 0.0


def test_growth_below_threshold_is_not_a_leak() -> None:
    history = linear(500.0, n=100)
    assert not LeakDetector().analyze(history).is_leak
    assert LeakDetector(growth_threshold=100.0).analyze(history).is_leak


def test_fewer_than_min_samples_is_never_a_leak() -> None:
    report = LeakDetector(min_samples=50).analyze(linear(1 * MB, n=49))
    assert not report.is_leak
    assert report.reason == "fewer samples than min_samples"
    assert LeakDetector(min_samples=50).analyze(linear(1 * MB, n=50)).is_leak


def test_score_rises_with_size_and_steadiness() -> None:
    detector = LeakDetector()
    small = detector.analyze(linear(20_000.0, n=100, noise=50_000.0, seed=1))
    large = detector.analyze(linear(2 * MB, n=100, noise=50_000.0, seed=1))
    noisy = detector.analyze(linear(2 * MB, n=100, noise=20 * MB, seed=1))
    assert 0.0 <= small.score < large.score <= 1.0
    assert noisy.score < large.score


def test_report_to_dict_is_json_shaped() -> None:
    report = LeakDetector().analyze(linear(1 * MB, n=60))
    data = report.to_dict()
    assert data["is_leak"] is True
    assert set(data) >= {"is_leak", "score", "trend", "growth_rate", "samples"}
    assert isinstance(report, LeakReport)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"growth_threshold": 0}, ValueError, "growth_threshold"),
        ({"growth_threshold": math.nan}, ValueError, "growth_threshold"),
        ({"growth_threshold": "1k"}, TypeError, "growth_threshold"),
        ({"min_samples": 2}, ValueError, "min_samples"),
        ({"min_samples": 10.0}, TypeError, "min_samples"),
        ({"window": 5}, ValueError, "window"),
        ({"window": True}, TypeError, "window"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object], exc: type, needle: str) -> None:
    with pytest.raises(exc, match=needle):
        LeakDetector(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("history", "exc", "needle"),
    [
        ("abc", TypeError, "history must be a sequence of .* got str .abc."),
        (None, TypeError, "got NoneType None"),
        ([(0.0, 1.0), (1.0,)], TypeError, r"history\[1\]"),
        ([(0.0, 1.0), (1.0, "x")], TypeError, r"history\[1\]"),
        ([(0.0, 1.0), (1.0, math.nan)], ValueError, r"history\[1\]"),
        ([(0.0, 1.0), (2.0, 1.0), (1.0, 1.0)], ValueError, "ordered by time"),
    ],
)
def test_bad_history_is_rejected(history: object, exc: type, needle: str) -> None:
    with pytest.raises(exc, match=needle):
        LeakDetector().analyze(history)  # type: ignore[arg-type]
    with pytest.raises(exc, match=needle):
        calculate_memory_statistics(history)  # type: ignore[arg-type]
    with pytest.raises(exc, match=needle):
        analyze_memory_trend(history)  # type: ignore[arg-type]


def test_trend() -> None:
    assert analyze_memory_trend([]) == "stable"
    assert analyze_memory_trend([(0.0, 1.0), (1.0, 5.0)]) == "stable"
    rising = [(float(i), 100.0 + i) for i in range(50)]
    assert analyze_memory_trend(rising) == "increasing"
    assert analyze_memory_trend([(t, 300.0 - v) for t, v in rising]) == "decreasing"
    wobble = [(float(i), 100.0 + (i % 2)) for i in range(50)]
    assert analyze_memory_trend(wobble) == "stable"
    with pytest.raises(ValueError, match="tolerance"):
        analyze_memory_trend(rising, tolerance=-1.0)


def test_statistics() -> None:
    stats = calculate_memory_statistics([(0.0, 10.0), (1.0, 20.0), (2.0, 30.0)])
    assert stats == {
        "average": 20.0,
        "variance": pytest.approx(200 / 3),
        "min": 10.0,
        "max": 30.0,
        "growth_rate": 10.0,
        "samples": 3.0,
    }
    empty = calculate_memory_statistics([])
    assert empty["samples"] == 0.0 and empty["average"] == 0.0
