"""``memwarden info``: what memwarden detects on this machine or in this container.

It prints the memory limit and where it comes from (a cgroup, or the
machine's RAM), the cgroup path and version, the pressure (PSI) files and the
kernel signals the monitor would arm to wake early, and the budget a
:class:`~memwarden.Warden` would start with under the current environment
(``MEMWARDEN_*`` and the seed variables). Nothing is changed: the monitor runs
for one sample and stops.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

import anyio

from . import __version__
from .units import format_size

__all__: list[str] = []

_DESCRIPTION = """\
Show what memwarden detects here: the memory limit and its source, the
cgroup path and version, the pressure (PSI) files and kernel event sources
available, and the budget a Warden would use with the current environment.
"""


def _readable(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            file.read(256)
    except OSError:
        return False
    return True


async def gather() -> dict[str, Any]:
    """Detect and return everything ``memwarden info`` prints, as a JSON-able dict.

    Raises :class:`~memwarden.errors.ConfigError` for a bad environment variable.
    """
    from ._psi import candidate_paths
    from .budget import MemoryManager
    from .config import WardenConfig
    from .pressure import PressureMonitor
    from .probes import SystemProbe

    config = WardenConfig.from_env()
    probe = SystemProbe(psi=config.monitor_use_psi)
    try:
        monitor = PressureMonitor(
            probe,
            interval=config.monitor_interval,
            thresholds=config.thresholds,
            use_psi=config.monitor_use_psi,
        )
        # The same construction a Warden makes, so the capacity is the one it would use.
        manager = MemoryManager(config.capacity, monitor=monitor)
        async with anyio.create_task_group() as tg:
            # run() arms the kernel signals and reports started after its first sample.
            await tg.start(monitor.run)
            event_sources = list(monitor.event_sources())
            first = monitor.last_sample
            limit_source = None if first is None else monitor._limit_source(first)
            tg.cancel_scope.cancel()
        sample = monitor.last_sample
        stats = manager.get_stats()
        manager.close()
        described = probe.describe()
    finally:
        probe.close()
    psi_files = [
        {"path": str(path), "readable": _readable(str(path))} for path in candidate_paths("/")
    ]
    thresholds = config.thresholds
    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "limit": None if sample is None else sample.limit,
        "limit_source": limit_source,
        "used": None if sample is None else sample.used,
        "available": None if sample is None else sample.available,
        "fraction": None if sample is None else round(sample.fraction, 4),
        "ram": described["ram"],
        "cgroup": {
            "version": described["cgroup_version"],
            "path": described["cgroup_path"],
            "directories": described["cgroup_directories"],
        },
        "fallback_reason": described["fallback_reason"],
        "psi": {
            "enabled": config.monitor_use_psi,
            "files": psi_files,
            "some_avg10": None if sample is None else sample.psi_some_avg10,
        },
        "event_sources": event_sources,
        "thresholds": {
            "medium": thresholds.medium,
            "high": thresholds.high,
            "critical": thresholds.critical,
            "hysteresis": thresholds.hysteresis,
        },
        "shed_level": config.shed_level.label,
        "budget": {
            "capacity": stats.total_allocated,
            "configured": config.capacity,
            "unmanaged": stats.unmanaged,
        },
    }


def _size(value: object) -> str:
    return "unknown" if not isinstance(value, int) else format_size(value)


def lines(info: dict[str, Any]) -> list[str]:
    """``info`` (from :func:`gather`) as aligned text lines."""
    cgroup = info["cgroup"]
    if cgroup["version"] is None:
        cgroup_line = "none found (memory of the whole machine)"
    else:
        cgroup_line = f"v{cgroup['version']} {cgroup['path']}"
    psi = info["psi"]
    files = [f"{f['path']} ({'readable' if f['readable'] else 'absent'})" for f in psi["files"]]
    budget = info["budget"]
    how = "configured" if budget["configured"] is not None else "limit x critical - unmanaged"
    fraction = info["fraction"]
    used = _size(info["used"])
    if isinstance(fraction, float):
        used += f" ({fraction:.0%} of the limit)"
    t = info["thresholds"]
    source = info["limit_source"] or "unknown"
    if source == "system":
        source = "the machine's RAM (no cgroup limit below it)"
    out = [
        f"memwarden {info['version']} (Python {info['python']}, {info['platform']})",
        f"limit            {_size(info['limit'])} from {source}",
        f"used             {used}",
        f"RAM              {_size(info['ram'])}",
        f"cgroup           {cgroup_line}",
        f"PSI              {'on' if psi['enabled'] else 'off (MEMWARDEN_MONITOR_USE_PSI)'}: "
        + "; ".join(files),
        "event sources    "
        + ("; ".join(info["event_sources"]) or "none (samples on the interval only)"),
        f"thresholds       medium {t['medium']:.0%}, high {t['high']:.0%}, "
        f"critical {t['critical']:.0%}; sheds at {info['shed_level']}",
        f"budget           {_size(budget['capacity'])} ({how})",
    ]
    if info["fallback_reason"]:
        out.append(f"note             {info['fallback_reason']}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``memwarden info`` argument parser."""
    from .cli import command_parser

    parser = command_parser("memwarden info", _DESCRIPTION)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout instead of text (default: text)",
    )
    return parser


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden info``."""
    from .errors import ConfigError

    ns = build_parser().parse_args(args)
    try:
        info = anyio.run(gather)
    except ConfigError as exc:
        print(f"memwarden info: {exc}", file=sys.stderr)
        return 2
    if ns.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(lines(info)))
    return 0
