"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` for a wrong type and ``ValueError`` for a value
out of range, with a message that names the argument and shows the value, so
callers see exactly what they passed. Checks run before any state changes.
"""

from __future__ import annotations

import math
from typing import Any

__all__: list[str] = []


def check_int(name: str, value: Any, *, minimum: int | None = 0, maximum: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a float after rejecting bools, NaN, infinities and range errors."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        result = float(value)
    except OverflowError:  # an int beyond the float range
        result = math.inf if value > 0 else -math.inf
    if math.isnan(result):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if math.isinf(result) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and result <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and result > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return result


def check_timeout(name: str, value: Any) -> float | None:
    """Return ``None`` or a non-negative, non-NaN number of seconds (``inf`` allowed)."""
    if value is None:
        return None
    return check_float(name, value, minimum=0.0, allow_inf=True)


def check_interval(name: str, value: Any) -> float:
    """Return a strictly positive, finite number of seconds."""
    return check_float(name, value, positive=True)


def check_fraction(name: str, value: Any, *, inclusive_zero: bool = True) -> float:
    """Return a number in ``[0, 1]`` (or ``(0, 1]`` when ``inclusive_zero`` is false)."""
    result = check_float(name, value, minimum=0.0, maximum=1.0)
    if not inclusive_zero and result == 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return result


def check_name(argument: str, value: Any) -> str:
    """Return ``value`` if it is a non-blank ``str``; the message names ``argument``."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{argument} must not be empty, got {value!r}")
    return value
