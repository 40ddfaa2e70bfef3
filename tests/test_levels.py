"""PressureLevel and PressureThresholds: labels, parsing, classification with hysteresis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memwarden import PressureEvent, PressureLevel, PressureThresholds, StaticProbe

LOW, MEDIUM, HIGH, CRITICAL = (
    PressureLevel.LOW,
    PressureLevel.MEDIUM,
    PressureLevel.HIGH,
    PressureLevel.CRITICAL,
)


def test_labels_and_order() -> None:
    assert [str(level) for level in PressureLevel] == ["low", "medium", "high", "critical"]
    assert HIGH.label == "high"
    assert LOW < MEDIUM < HIGH < CRITICAL


@pytest.mark.parametrize(("value", "level"), [("high", HIGH), ("CRITICAL", CRITICAL), (1, MEDIUM)])
def test_parse(value: str | int, level: PressureLevel) -> None:
    assert PressureLevel.parse(value) is level


@pytest.mark.parametrize("value", ["severe", 7, -1])
def test_parse_unknown_level_names_it(value: object) -> None:
    with pytest.raises(ValueError, match=repr(value)):
        PressureLevel.parse(value)  # type: ignore[arg-type]


def test_parse_wrong_type() -> None:
    with pytest.raises(
        TypeError, match=r"level must be a PressureLevel, str or int, got float 1\.5"
    ):
        PressureLevel.parse(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool True"):
        PressureLevel.parse(True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("previous", "error", "message"),
    [
        (7, ValueError, "unknown pressure level previous=7"),
        (-1, ValueError, "unknown pressure level previous=-1"),
        (2.5, TypeError, r"previous must be a PressureLevel, str or int, got float 2\.5"),
        (
            "high",
            TypeError,
            r"previous must be a PressureLevel, an int 0\.\.3 or None, got str 'high'",
        ),
        (True, TypeError, "previous must be a PressureLevel, str or int, got bool True"),
    ],
)
def test_classify_refuses_a_bad_previous(
    previous: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PressureThresholds().classify(0.5, previous)  # type: ignore[arg-type]


def test_classify_accepts_a_level_number_as_previous() -> None:
    assert PressureThresholds().classify(0.84, 2) is HIGH  # hysteresis keeps HIGH
    assert PressureThresholds().classify(0.84, HIGH) is HIGH


@pytest.mark.parametrize(
    ("fraction", "error", "message"),
    [
        (float("nan"), ValueError, "fraction must not be NaN, got nan"),
        (-0.1, ValueError, r"fraction must be >= 0\.0, got -0\.1"),
        ("0.5", TypeError, r"fraction must be a number, got str .0\.5."),
        (None, TypeError, "fraction must be a number, got NoneType None"),
        (True, TypeError, "fraction must be a number, got bool True"),
    ],
)
def test_classify_refuses_a_bad_fraction(
    fraction: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PressureThresholds().classify(fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fraction", "level"),
    [(0.0, LOW), (0.69, LOW), (0.70, MEDIUM), (0.85, HIGH), (0.95, CRITICAL), (1.5, CRITICAL)],
)
def test_classify_without_history(fraction: float, level: PressureLevel) -> None:
    assert PressureThresholds().classify(fraction) is level


def test_hysteresis_holds_a_level_until_threshold_minus_band() -> None:
    t = PressureThresholds(medium=0.7, high=0.85, critical=0.95, hysteresis=0.02)
    assert t.classify(0.86, LOW) is HIGH  # going up is immediate
    assert t.classify(0.84, HIGH) is HIGH  # within the band: stay
    assert t.classify(0.8301, HIGH) is HIGH
    assert t.classify(0.829, HIGH) is MEDIUM  # below 0.85 - 0.02
    assert t.classify(0.60, CRITICAL) is LOW  # a big drop goes straight down
    assert t.classify(0.935, CRITICAL) is CRITICAL
    assert t.classify(0.92, CRITICAL) is HIGH


@pytest.mark.parametrize(
    "kwargs",
    [
        {"medium": 0.9, "high": 0.85},
        {"high": 0.99, "critical": 0.95},
        {"critical": 1.2},
        {"medium": 0.0},
        {"hysteresis": -0.1},
        {"hysteresis": 0.8},
        {"medium": math.nan},
    ],
)
def test_bad_thresholds_raise_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PressureThresholds(**kwargs)


def test_classify_rejects_nan_and_negative() -> None:
    with pytest.raises(ValueError, match="fraction"):
        PressureThresholds().classify(math.nan)
    with pytest.raises(ValueError, match="fraction"):
        PressureThresholds().classify(-0.1)


@given(
    st.lists(st.floats(min_value=0.0, max_value=1.2), min_size=1, max_size=50),
)
def test_classification_stays_within_one_band(fractions: list[float]) -> None:
    t = PressureThresholds()
    previous: PressureLevel | None = None
    for f in fractions:
        level = t.classify(f, previous)
        assert level >= t.classify(f)  # never below the raw level
        assert level <= t.classify(f + t.hysteresis)  # never above the banded level
        previous = level


def test_event_to_dict() -> None:
    sample = StaticProbe(used=900, limit=1000).sample()
    event = PressureEvent(HIGH, MEDIUM, sample, 5.0)
    data = event.to_dict()
    assert data["level"] == "high"
    assert data["previous"] == "medium"
    assert data["sample"]["fraction"] == 0.9  # type: ignore[index]
