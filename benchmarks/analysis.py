"""The ``analysis`` suite: analysis_leaks, analysis_profiler."""

from __future__ import annotations

from benchmarks._harness import Row, run_parts

PARTS = ("analysis_leaks", "analysis_profiler")


def main(quick: bool = False) -> list[Row]:
    """Run every part of the suite in order and return all rows."""
    return run_parts(PARTS, quick)
