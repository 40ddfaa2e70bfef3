"""The argument checks every public entry point shares."""

from __future__ import annotations

import pytest

from memwarden._validate import (
    check_float,
    check_fraction,
    check_int,
    check_interval,
    check_name,
    check_timeout,
)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: check_int("n", True), TypeError, "n must be an int, got bool True"),
        (lambda: check_int("n", 1.0), TypeError, r"n must be an int, got float 1\.0"),
        (lambda: check_int("n", -1), ValueError, "n must be >= 0, got -1"),
        (lambda: check_int("n", 9, maximum=3), ValueError, "n must be <= 3, got 9"),
        (lambda: check_float("x", False), TypeError, "x must be a number, got bool False"),
        (lambda: check_float("x", "1"), TypeError, "x must be a number, got str '1'"),
        (lambda: check_float("x", float("nan")), ValueError, "x must not be NaN, got nan"),
        (lambda: check_float("x", float("inf")), ValueError, "x must be finite, got inf"),
        (lambda: check_float("x", 10**400), ValueError, "x must be finite, got 1000"),
        (lambda: check_float("x", 0, positive=True), ValueError, "x must be > 0, got 0"),
        (lambda: check_timeout("timeout", -1), ValueError, "timeout must be >= 0.0, got -1"),
        (lambda: check_timeout("timeout", True), TypeError, "timeout must be a number, got bool"),
        (lambda: check_interval("interval", 0.0), ValueError, r"interval must be > 0, got 0\.0"),
        (lambda: check_fraction("f", 1.5), ValueError, r"f must be <= 1\.0, got 1\.5"),
        (
            lambda: check_fraction("f", 0, inclusive_zero=False),
            ValueError,
            "f must be > 0, got 0",
        ),
        (lambda: check_name("name", 3), TypeError, "name must be a str, got int 3"),
        (lambda: check_name("name", "  "), ValueError, "name must not be empty, got '  '"),
    ],
)
def test_every_refusal_names_the_argument_and_shows_the_value(
    call: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]


def test_a_huge_int_is_an_infinite_timeout() -> None:
    assert check_timeout("timeout", 10**400) == float("inf")
    assert check_float("x", -(10**400), allow_inf=True) == float("-inf")
