"""parse_size / format_size: one rule for every size memwarden reads."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memwarden import ConfigError, WardenConfig, format_size, parse_size
from memwarden.units import GiB, KiB, MiB, TiB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("4096B", 4096),
        ("512MiB", 512 * MiB),
        ("512 mib", 512 * MiB),
        ("1.5GiB", int(1.5 * GiB)),
        ("2GB", 2_000_000_000),
        ("10k", 10_000),
        ("3KiB", 3 * KiB),
        (".5MiB", MiB // 2),
        (123, 123),
        # Kubernetes quantities: Ki Mi Gi Ti are binary, K M G T decimal.
        ("1Gi", GiB),
        ("512Mi", 512 * MiB),
        ("64Ki", 64 * KiB),
        ("2Ti", 2 * TiB),
        ("1G", 10**9),
        ("512M", 512 * 10**6),
        ("64K", 64_000),
        ("2T", 2 * 10**12),
        # Case-insensitive, except the bare lower-case m.
        ("1gi", GiB),
        ("1GI", GiB),
        ("1g", 10**9),
        ("512mb", 512 * 10**6),
        ("512MB", 512 * 10**6),
        ("512mi", 512 * MiB),
        ("1 tib", TiB),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


def test_bare_lower_case_m_is_refused_naming_both_readings() -> None:
    with pytest.raises(ValueError, match="'512m'") as info:
        parse_size("512m")
    message = str(info.value)
    assert "milli" in message
    assert "Docker" in message and "mebibytes" in message
    assert "512Mi" in message and "512M " in message


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.2.3", "5 parsecs", "MiB", "1e3", "1Gib2"])
def test_parse_size_rejects_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_unknown_unit_names_the_text_and_the_rule() -> None:
    with pytest.raises(ValueError, match=r"'3 parsecs'.*Ki Mi Gi Ti"):
        parse_size("3 parsecs")


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


@pytest.mark.parametrize(
    ("n", "text"),
    [(999, "999 B"), (1536, "1.5 KB"), (10**9, "1.0 GB"), (GiB, "1.1 GB"), (-2000, "-2.0 KB")],
)
def test_format_size_decimal(n: int, text: str) -> None:
    assert format_size(n, decimal=True) == text


def test_format_size_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="nbytes"):
        format_size("12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nbytes"):
        format_size(math.nan)


@given(st.integers(min_value=0, max_value=2**50), st.booleans())
def test_format_then_parse_is_close(n: int, decimal: bool) -> None:
    text = format_size(n, decimal=decimal).replace(" ", "")
    back = parse_size(text)
    assert abs(back - n) <= max(1, n * 0.05)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["K", "M", "G", "T"]),
    st.sampled_from(["", "i", "iB", "B"]),
    st.booleans(),
)
def test_one_rule_for_every_spelling(number: int, prefix: str, suffix: str, upper: bool) -> None:
    unit = prefix + suffix
    unit = unit.upper() if upper else unit.lower()
    if unit == "m":
        with pytest.raises(ValueError, match="ambiguous"):
            parse_size(f"{number}{unit}")
        return
    power = "KMGT".index(prefix) + 1
    base = 1024 if "i" in suffix else 1000
    assert parse_size(f"{number}{unit}") == number * base**power


@pytest.mark.parametrize(("text", "expected"), [("1Gi", GiB), ("1G", 10**9), ("256MiB", 256 * MiB)])
def test_the_environment_reads_sizes_by_the_same_rule(text: str, expected: int) -> None:
    assert WardenConfig.from_env({"MEMWARDEN_CAPACITY": text}).capacity == expected


def test_the_environment_refuses_a_bare_m_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"MEMWARDEN_CAPACITY='512m'.*milli.*Docker"):
        WardenConfig.from_env({"MEMWARDEN_CAPACITY": "512m"})
