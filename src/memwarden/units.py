"""Byte sizes: parse ``"512MiB"`` into ints and format ints for people.

Sizes are plain ``int`` bytes everywhere in memwarden; these two helpers are
the only place units appear.
"""

from __future__ import annotations

import math
import re

__all__ = ["GiB", "KiB", "MiB", "TiB", "format_size", "parse_size"]

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": KiB,
    "m": 1000**2, "mb": 1000**2, "mib": MiB,
    "g": 1000**3, "gb": 1000**3, "gib": GiB,
    "t": 1000**4, "tb": 1000**4, "tib": TiB,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a size such as ``"512MiB"``, ``"1.5 GB"``, ``"4096"`` or an int into bytes.

    Decimal units (kB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB)
    powers of 1024. Raises ``TypeError`` for non-str/int input and
    ``ValueError`` naming the text for negative, malformed or unknown units.
    """
    if isinstance(text, bool):
        raise TypeError(f"size must be a str or int, got bool {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must be >= 0, got {text!r}")
        return text
    if not isinstance(text, str):
        raise TypeError(f"size must be a str or int, got {type(text).__name__} {text!r}")
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"size {text!r} is not a number followed by an optional unit")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"size {text!r} has an unknown unit {unit!r}")
    value = float(number) * factor
    if not math.isfinite(value):
        raise ValueError(f"size {text!r} is too large")
    return int(value)


def format_size(nbytes: int | float) -> str:
    """Format a byte count with binary units, e.g. ``format_size(1536) == "1.5 KiB"``."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | float):
        raise TypeError(f"nbytes must be a number, got {type(nbytes).__name__} {nbytes!r}")
    if isinstance(nbytes, float) and not math.isfinite(nbytes):
        raise ValueError(f"nbytes must be finite, got {nbytes!r}")
    sign = "-" if nbytes < 0 else ""
    value = float(abs(nbytes))
    if value < KiB:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")
