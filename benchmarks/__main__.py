"""Run benchmark suites: ``python -m benchmarks core|pools|caches|analysis|import_time|all|burst``.

Add ``--quick`` for a smoke run.

Each suite is the module ``benchmarks.<name>`` with ``main(quick: bool) -> list[Row]``.
Results print as a Markdown table and are written to ``benchmarks/results/<name>.json``
(``<name>.quick.json`` for ``--quick`` smoke runs).
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks._harness import print_and_save

SUITES = ("core", "pools", "caches", "analysis", "import_time")
# Not part of "all": it needs root and a memory cgroup, and runs for about ten minutes.
EXTRA = ("burst",)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("suites", nargs="+", choices=(*SUITES, *EXTRA, "all"))
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    names = (
        [*SUITES, *(s for s in args.suites if s in EXTRA)] if "all" in args.suites else args.suites
    )
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        rows = module.main(quick=args.quick)
        # Smoke runs never overwrite the figures of a full run.
        print_and_save(f"{name}.quick" if args.quick else name, rows)


if __name__ == "__main__":
    main()
