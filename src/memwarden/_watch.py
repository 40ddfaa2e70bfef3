"""``memwarden watch``: follow one process' memory and judge its trend.

Samples the process (RSS, children included) with a ``PressureMonitor`` over a
``ProcessProbe``, prints one line per sample and each pressure change, and
ends with ``LeakDetector``'s verdict on the whole history.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio
import psutil

from .leaks import LeakDetector
from .pressure import PressureMonitor
from .probes import ProcessProbe
from .units import format_size, parse_size

__all__: list[str] = []


async def watch(
    *,
    pid: int | None,
    command: list[str],
    interval: float,
    limit: int | None,
    duration: float | None,
    quiet: bool,
    emit: object = print,
) -> dict[str, object]:
    """Watch a pid or a command until it exits (or ``duration``); return a summary dict.

    A command the watch started is terminated when the watch ends first.
    """
    say = emit if callable(emit) else print
    process: anyio.abc.Process | None = None
    if command:
        process = await anyio.open_process(command, stdin=None, stdout=None, stderr=None)
        pid = process.pid
    assert pid is not None
    probe = ProcessProbe(pid, limit=limit, include_children=True)
    monitor = PressureMonitor(probe, interval=interval)
    history: list[tuple[float, float]] = []
    started = time.monotonic()
    peak = 0
    say(f"watching pid {pid} against {format_size(probe.limit)} every {interval:g} s")

    def alive() -> bool:
        if process is not None:
            return process.returncode is None
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    try:
        while alive():
            if duration is not None and time.monotonic() - started >= duration:
                break
            previous = monitor.level
            try:
                sample = monitor.sample_now()
            except (psutil.NoSuchProcess, ProcessLookupError, FileNotFoundError, ValueError):
                break
            elapsed = sample.timestamp - history[0][0] if history else 0.0
            history.append((sample.timestamp, float(sample.used)))
            peak = max(peak, sample.used)
            if monitor.level != previous:
                say(f"[{elapsed:7.1f}s] pressure {previous} -> {monitor.level}")
            if not quiet:
                say(
                    f"[{elapsed:7.1f}s] rss {format_size(sample.used):>10}  "
                    f"{sample.fraction:6.1%} of limit  level {monitor.level}"
                )
            await anyio.sleep(interval)
    finally:
        if process is not None:
            with anyio.CancelScope(shield=True):
                await _end(process)
    report = LeakDetector(min_samples=min(10, max(len(history), 3))).analyze(history)
    summary: dict[str, object] = {
        "pid": pid,
        "samples": len(history),
        "seconds": round(time.monotonic() - started, 3),
        "peak_rss": peak,
        "final_level": monitor.level.label,
        "leak": report.to_dict(),
        "returncode": process.returncode if process is not None else None,
    }
    verdict = "LEAK suspected" if report.is_leak else "no leak detected"
    say(
        f"{verdict}: trend {report.trend}, growth {report.growth_rate / 1024:.1f} KiB/s, "
        f"score {report.score:.2f} over {report.samples} samples; peak rss {format_size(peak)}"
    )
    return summary


async def _end(process: anyio.abc.Process) -> None:
    """Reap a command that exited, or end one the watch started and is leaving early."""
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(5.0):
            await process.wait()
            return
        process.kill()
    await process.wait()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden watch``."""
    argv = list(sys.argv[2:] if args is None else args)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="memwarden watch", usage="memwarden watch [options] (--pid PID | -- CMD ...)"
    )
    parser.add_argument("--pid", type=int, help="process to watch")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--limit", type=parse_size, help="limit to compare against, e.g. 2GiB")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--quiet", action="store_true", help="print only changes and the verdict")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    ns = parser.parse_args(argv)
    if (ns.pid is None) == (not command):
        parser.error("give exactly one of --pid PID or -- CMD ...")
    if not ns.interval > 0:
        parser.error(f"--interval must be > 0, got {ns.interval}")
    if ns.pid is not None and not psutil.pid_exists(ns.pid):
        parser.error(f"--pid {ns.pid}: no such process")
    summary = anyio.run(
        lambda: watch(
            pid=ns.pid,
            command=command,
            interval=ns.interval,
            limit=ns.limit,
            duration=ns.duration,
            quiet=ns.quiet,
        )
    )
    if ns.json:
        print(json.dumps(summary, indent=2))
    code = summary.get("returncode")
    return code if isinstance(code, int) else 0
