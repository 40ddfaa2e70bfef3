"""Pressure levels, the classifier with hysteresis, and pressure events.

The monitor and its subscription stream live further down this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._broadcast import Subscription
from ._validate import check_float
from .probes import MemorySample

__all__ = [
    "PressureEvent",
    "PressureLevel",
    "PressureThresholds",
    "Subscription",
]


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
    def parse(cls, value: PressureLevel | str | int) -> PressureLevel:
        """Accept a level, its label (any case) or its number; ``ValueError`` otherwise."""
        if isinstance(value, PressureLevel):
            return value
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(f"unknown pressure level {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(f"unknown pressure level {value!r}") from None
        raise TypeError(f"level must be a PressureLevel, str or int, got {type(value).__name__}")


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
            return PressureLevel.CRITICAL
        if fraction >= self.high:
            return PressureLevel.HIGH
        if fraction >= self.medium:
            return PressureLevel.MEDIUM
        return PressureLevel.LOW

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

        Raises ``ValueError`` for NaN or negative fractions.
        """
        fraction = check_float("fraction", fraction, minimum=0.0, allow_inf=True)
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
