"""A benchmark suite: each part is a module with ``rows(quick) -> list[Row]``."""

from __future__ import annotations

import importlib

from benchmarks._harness import Row

PARTS = ("pool_bench", "sizeof_bench")


def main(quick: bool = False) -> list[Row]:
    """Run every part of the suite in order and return all rows."""
    rows: list[Row] = []
    for part in PARTS:
        module = importlib.import_module(f"benchmarks.{part}")
        rows.extend(module.rows(quick))
    return rows
