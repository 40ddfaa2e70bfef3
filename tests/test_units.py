"""parse_size / format_size."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memwarden import format_size, parse_size
from memwarden.units import GiB, KiB, MiB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("512MiB", 512 * MiB),
        ("512 mib", 512 * MiB),
        ("1.5GiB", int(1.5 * GiB)),
        ("2GB", 2_000_000_000),
        ("10k", 10_000),
        ("3KiB", 3 * KiB),
        (".5MiB", MiB // 2),
        (123, 123),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.2.3", "5 parsecs", "MiB", "1e3"])
def test_parse_size_rejects_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_parse_size_rejects_bad_types() -> None:
    with pytest.raises(TypeError, match="size"):
        parse_size(True)
    with pytest.raises(TypeError, match="size"):
        parse_size(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-5"):
        parse_size(-5)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * MiB, "5.0 MiB"), (-2048, "-2.0 KiB")],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_size_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="nbytes"):
        format_size("12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nbytes"):
        format_size(math.nan)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_then_parse_is_close(n: int) -> None:
    text = format_size(n).replace(" ", "")
    back = parse_size(text)
    assert abs(back - n) <= max(1, n * 0.05)
