"""Probe cost: SystemProbe vs psutil.virtual_memory(), ProcessProbe vs memory_info().

Ours and the peer are timed in alternating batches so a noisy neighbour hits
both alike; each figure is the median of the batches. Run alone with
``python -m benchmarks.core_probe [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import psutil

from benchmarks._harness import Row, print_and_save, speed_row, time_interleaved
from memwarden.probes import ProcessProbe, SystemProbe

_TARGET_US = 20.0


def _interleaved(
    ours: Callable[[], object], peer: Callable[[], object], *, number: int, rounds: int
) -> tuple[float, float, float]:
    ours_times, peer_times = time_interleaved(ours, peer, number=number, rounds=rounds)
    return statistics.median(ours_times), statistics.median(peer_times), min(ours_times)


def rows(quick: bool) -> list[Row]:
    """Per-sample cost of both probes against the psutil calls users would make instead."""
    number = 1000 if quick else 10000
    rounds = 3 if quick else 11
    out: list[Row] = []

    with SystemProbe() as probe:
        source = probe.sample().source
        version = probe.cgroup_version
        ours, peer, best = _interleaved(
            probe.sample, psutil.virtual_memory, number=number, rounds=rounds
        )
    where = f"source={source}" + (f", cgroup v{version} found" if version else "")
    absolute = "met" if ours * 1e6 < _TARGET_US else "missed"
    absolute += f" (best batch {best * 1e6:.1f} µs)"
    out.append(
        speed_row(
            "SystemProbe.sample()",
            ours,
            peer,
            "psutil.virtual_memory()",
            1.67,
            notes=f"{where}; < {_TARGET_US:g} µs/sample {absolute}",
        )
    )

    process = psutil.Process()
    with ProcessProbe(limit=1 << 40) as pprobe:
        ours, peer, _ = _interleaved(
            pprobe.sample, process.memory_info, number=number, rounds=rounds
        )
    out.append(
        speed_row(
            "ProcessProbe.sample()",
            ours,
            peer,
            "psutil.Process().memory_info()",
            None,
            notes="RSS of this process as a full MemorySample",
        )
    )
    return out


if __name__ == "__main__":
    print_and_save("core_probe", rows("--quick" in sys.argv))
