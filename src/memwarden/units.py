"""Byte sizes: parse ``"512MiB"`` into ints and format ints for people.

Sizes are plain ``int`` bytes everywhere in memwarden; these helpers are the
only place units appear. One rule reads every size, in the API, the
environment and the command line:

- ``Ki Mi Gi Ti`` and ``KiB MiB GiB TiB`` are powers of 2 (Kubernetes, IEC);
- ``K M G T`` and ``KB MB GB TB`` are powers of 10 (Kubernetes, SI);
- units are case-insensitive, except a bare lower-case ``m``: Kubernetes
  reads it as milli and Docker (``-m 512m``) as mebibytes, so it is refused.
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
    "k": 1000, "kb": 1000, "ki": KiB, "kib": KiB,
    "m": 1000**2, "mb": 1000**2, "mi": MiB, "mib": MiB,
    "g": 1000**3, "gb": 1000**3, "gi": GiB, "gib": GiB,
    "t": 1000**4, "tb": 1000**4, "ti": TiB, "tib": TiB,
}  # fmt: skip
"""Lower-cased unit -> bytes; ``parse_size`` refuses the bare ``"m"`` before looking here."""
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a size such as ``"512MiB"``, ``"1.5 GB"``, ``"2Gi"``, ``"4096"`` or an int into bytes.

    ``Ki Mi Gi Ti`` (also ``KiB MiB GiB TiB``) are powers of 1024; ``K M G T``
    (also ``KB MB GB TB``) powers of 1000, as in Kubernetes. Units are
    case-insensitive, except a bare lower-case ``m`` (``"512m"``), which is
    ambiguous (milli in Kubernetes, mebibytes in Docker) and refused. A
    fractional result is rounded down to whole bytes.

    Raises ``TypeError`` for non-str/int input and ``ValueError`` naming the
    text for negative, malformed or unknown units and for a bare ``m``.
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
    if unit == "m":
        raise ValueError(
            f"size {text!r} has an ambiguous unit 'm': Kubernetes reads it as milli "
            f"(thousandths of a byte) and Docker as mebibytes; write {number}Mi for "
            f"{number} x 1024^2 bytes or {number}M for {number} x 1000^2"
        )
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"size {text!r} has an unknown unit {unit!r}: use one of K M G T (powers of 1000) "
            "or Ki Mi Gi Ti (powers of 1024), optionally followed by B"
        )
    value = float(number) * factor
    if not math.isfinite(value):
        raise ValueError(f"size {text!r} is too large")
    return int(value)


def format_size(nbytes: int | float, *, decimal: bool = False) -> str:
    """Format a byte count with binary units, e.g. ``format_size(1536) == "1.5 KiB"``.

    ``decimal=True`` uses powers of 1000 instead (``format_size(1536,
    decimal=True) == "1.5 KB"``), the units ``parse_size`` reads as K M G T.
    Raises ``TypeError`` for a non-number and ``ValueError`` for NaN or infinity.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | float):
        raise TypeError(f"nbytes must be a number, got {type(nbytes).__name__} {nbytes!r}")
    if isinstance(nbytes, float) and not math.isfinite(nbytes):
        raise ValueError(f"nbytes must be finite, got {nbytes!r}")
    sign = "-" if nbytes < 0 else ""
    value = float(abs(nbytes))
    base = 1000 if decimal else KiB
    if value < base:
        return f"{sign}{int(value)} B"
    units = ("KB", "MB", "GB", "TB") if decimal else ("KiB", "MiB", "GiB", "TiB")
    for unit in units:
        value /= base
        if value < base or unit == units[-1]:
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")
