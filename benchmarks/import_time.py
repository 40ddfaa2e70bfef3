"""Import time: ``import memwarden`` against ``import anyio, psutil``, in fresh interpreters.

Every figure is the median of many runs, each a new ``python`` process that
times one import statement with ``time.perf_counter`` around it (interpreter
start-up is outside the measurement). Ours and the peer run alternately, run
by run, so a busy neighbour slows both alike; the first run of each is thrown
away (it may compile bytecode).

The peer is ``import anyio, psutil``: the two libraries memwarden is built on,
which a service governed by memwarden loads anyway. The target is
``import memwarden`` within 2x of it (ratio >= 0.5). Two more rows report what
first use costs: the budget and monitor (``from memwarden import
MemoryManager, PressureMonitor``) and everything a ``Warden`` owns.

Run: ``python -m benchmarks import_time`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

from benchmarks._harness import Row, print_and_save, speed_row

PEER = "import anyio, psutil"
CASES = (
    ("import memwarden", 0.5, "the package alone: errors and sizes, the rest on first use"),
    (
        "from memwarden import MemoryManager, PressureMonitor",
        None,
        "first use of the budget and the monitor",
    ),
    ("from memwarden import Warden", None, "first use of everything a Warden owns"),
)

_SCRIPT = """\
import sys, time
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
print(__import__("json").dumps([elapsed, len(sys.modules)]))
"""


def _run(statement: str, cwd: str) -> tuple[float, int]:
    """Seconds one fresh interpreter spends on ``statement``, and the modules it then holds."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    ).stdout
    elapsed, modules = json.loads(out)
    return float(elapsed), int(modules)


def measure(statement: str, runs: int) -> tuple[list[float], list[float], int, int]:
    """Alternate ``runs`` fresh runs of ``statement`` and of the peer; times and module counts."""
    ours: list[float] = []
    peer: list[float] = []
    ours_modules = peer_modules = 0
    with tempfile.TemporaryDirectory() as cwd:
        _run(statement, cwd)
        _run(PEER, cwd)
        for _ in range(runs):
            elapsed, ours_modules = _run(statement, cwd)
            ours.append(elapsed)
            elapsed, peer_modules = _run(PEER, cwd)
            peer.append(elapsed)
    return ours, peer, ours_modules, peer_modules


def rows(quick: bool) -> list[Row]:
    """Import time of memwarden against anyio + psutil, median of fresh interpreters."""
    runs = 5 if quick else 21
    out: list[Row] = []
    for statement, target, note in CASES:
        ours, peer, ours_modules, peer_modules = measure(statement, runs)
        ours_s, peer_s = statistics.median(ours), statistics.median(peer)
        row = speed_row(
            f"`{statement}` (median of {runs} fresh interpreters)",
            ours_s,
            peer_s,
            f"`{PEER}`",
            target,
            unit="ms",
            scale=1e3,
            notes=f"{note}; {ours_modules} modules loaded vs {peer_modules}",
        )
        row.target = "ours <= 2x peer (ratio >= 0.5)" if target is not None else "report"
        row.extra = {"ours_modules": float(ours_modules), "peer_modules": float(peer_modules)}
        out.append(row)
    return out


def main(quick: bool = False) -> list[Row]:
    """The suite's entry point for ``python -m benchmarks import_time``."""
    return rows(quick)


if __name__ == "__main__":
    print_and_save("import_time", rows("--quick" in sys.argv))
