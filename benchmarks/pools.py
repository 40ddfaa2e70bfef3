"""The ``pools`` suite: pool_bench, sizeof_bench."""

from __future__ import annotations

from benchmarks._harness import Row, run_parts

PARTS = ("pool_bench", "sizeof_bench")


def main(quick: bool = False) -> list[Row]:
    """Run every part of the suite in order and return all rows."""
    return run_parts(PARTS, quick)
