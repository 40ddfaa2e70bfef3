"""The ``core`` suite: core_budget, core_probe, core_monitor."""

from __future__ import annotations

from benchmarks._harness import Row, run_parts

PARTS = ("core_budget", "core_probe", "core_monitor")


def main(quick: bool = False) -> list[Row]:
    """Run every part of the suite in order and return all rows."""
    return run_parts(PARTS, quick)
