"""``memwarden watch``: follow one process' memory and judge whether it leaks.

Samples the process (RSS, children included) with a ``PressureMonitor`` over a
``ProcessProbe``, prints progress and each pressure change, and ends with
``LeakDetector``'s verdict on the whole run: leak suspected, no leak, or not
enough data to judge.

Sampling starts fast and slows down as the run gets longer: every
``first_interval`` seconds at first; whenever ``HELD`` samples are held, every
other one is dropped and the spacing doubles (never beyond ``interval``). The
history always covers the whole run with ``HELD / 2`` to ``HELD`` evenly spaced
samples, so a run of a few seconds is judged as well as a run of a day.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import anyio.abc
import psutil

from . import _cgroup
from .cli import size_argument
from .leaks import LeakDetector, LeakReport
from .pressure import PressureMonitor
from .probes import ProcessProbe
from .units import format_size

__all__: list[str] = []

EXIT_NO_LEAK = 0
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_NOT_ENOUGH_DATA = 3
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130

VERDICTS = {
    "no leak": EXIT_NO_LEAK,
    "leak suspected": EXIT_LEAK,
    "not enough data": EXIT_NOT_ENOUGH_DATA,
}
"""Each verdict and the exit status ``memwarden watch`` ends with."""

FIRST_INTERVAL = 0.05
"""Seconds between the first samples."""
HELD = 240
"""Samples held for the verdict: when full, every other one goes and the spacing doubles."""
MIN_SAMPLES = 40
"""Samples a verdict needs (leak or not); fewer are "not enough data"."""
PROGRESS_EVERY = 1.0
"""Seconds between progress lines, however fast the sampling."""


class CommandNotFound(Exception):
    """The command to watch does not exist (exit 127, as a shell does)."""


class CommandNotRunnable(Exception):
    """The command exists but cannot be run, e.g. no execute permission (exit 126)."""


class _Thinned:
    """A time-ordered history that halves its resolution instead of growing past ``held``."""

    def __init__(self, first_interval: float, held: int = HELD) -> None:
        self.points: list[tuple[float, float]] = []
        self.spacing = first_interval
        self._held = held

    def offer(self, t: float, value: float) -> None:
        """Keep ``(t, value)`` if it is at least one spacing after the last kept sample."""
        if self.points and t - self.points[-1][0] < 0.999 * self.spacing:
            return
        self.points.append((t, value))
        if len(self.points) >= self._held:
            self.points = self.points[::2]
            self.spacing *= 2


def _limit_of(pid: int | None, limit: int | None, root: str = "/") -> tuple[int | None, str]:
    """The limit to measure against, and where it came from in words.

    ``limit`` (``--limit``) wins. For ``--pid`` the target's own cgroup is read
    through ``/proc/PID/cgroup``, as ``SystemProbe`` reads this process' own;
    ``None`` leaves ``ProcessProbe`` to use this process' limit (a command the
    watch starts shares its cgroup).
    """
    if limit is not None:
        return limit, "--limit"
    if pid is None:
        return None, "this machine or container"
    ram = int(psutil.virtual_memory().total)
    try:
        found = _cgroup.process_limit(pid, root=root, ram=ram)
    except _cgroup.CgroupFormatError as exc:
        return ram, f"RAM (the cgroup of pid {pid} could not be read: {exc})"
    if found is None:
        return ram, "RAM (no cgroup limit)"
    return found.limit, f"cgroup v{found.version} {found.directory}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_size(nbytes: int) -> str:
    """A size in both unit systems, e.g. ``"1,000,000,000 bytes (1.0 GB, 953.7 MiB)"``."""
    return f"{nbytes:,} bytes ({format_size(nbytes, decimal=True)}, {format_size(nbytes)})"


def verdict_of(report: LeakReport) -> str:
    """``"leak suspected"``, ``"no leak"`` or ``"not enough data"`` for a report."""
    if report.is_leak:
        return "leak suspected"
    return "no leak" if report.judged else "not enough data"


def explain(report: LeakReport, verdict: str) -> str:
    """One line where the verdict, trend and score agree, or say why they differ."""
    growth = f"{format_size(report.growth_rate)}/s"
    if verdict == "not enough data":
        return (
            f"not enough data to judge: {report.reason} (so far: trend {report.trend}, "
            f"floor growth {growth}, score {report.score:.2f} over "
            f"{_count(report.samples, 'sample')}; a score is not a verdict); watch a longer run"
        )
    head = "LEAK suspected" if verdict == "leak suspected" else "no leak detected"
    line = (
        f"{head}: {report.reason}; floor growth {growth}, trend {report.trend}, "
        f"score {report.score:.2f} over {_count(report.samples, 'sample')}"
    )
    if verdict == "leak suspected" and report.trend != "increasing":
        line += " (the floor rises steadily, though little against the level of memory)"
    elif verdict == "no leak" and report.trend == "increasing":
        line += " (memory rose, but not as a leak does: see the reason)"
    elif verdict == "no leak" and report.score > 0:
        line += " (the score is the evidence so far, below a leak's)"
    return line


async def watch(
    *,
    pid: int | None,
    command: list[str],
    interval: float = 1.0,
    limit: int | None = None,
    duration: float | None = None,
    quiet: bool = False,
    emit: Callable[[str], object] = print,
    first_interval: float = FIRST_INTERVAL,
    command_stdout: int | TextIO | None = None,
    cgroup_root: str = "/",
    stop_on_signals: bool = False,
) -> dict[str, object]:
    """Watch a pid or a command until it exits (or ``duration``); return a summary dict.

    Samples every ``first_interval`` seconds at first, slowing down as the run
    gets longer (never beyond ``interval``). A command the watch started is
    terminated when the watch ends first. With ``pid`` and no ``limit`` the
    limit is that of the process' own cgroup (``/proc/PID/cgroup`` read under
    ``cgroup_root``). With ``stop_on_signals`` (the command line's choice:
    the main thread only) SIGINT or SIGTERM ends the watch with a verdict on
    what was seen. Raises :class:`CommandNotFound` or
    :class:`CommandNotRunnable` when ``command`` cannot be started.
    """
    process: anyio.abc.Process | None = None
    if command:
        try:
            process = await anyio.open_process(
                command, stdin=None, stdout=command_stdout, stderr=None
            )
        except FileNotFoundError as exc:
            raise CommandNotFound(command[0]) from exc
        except PermissionError as exc:
            raise CommandNotRunnable(command[0]) from exc
        pid = process.pid
    assert pid is not None
    chosen, limit_source = _limit_of(None if command else pid, limit, cgroup_root)
    probe = ProcessProbe(pid, limit=chosen, include_children=True)
    monitor = PressureMonitor(probe, interval=interval)
    history = _Thinned(min(first_interval, interval))
    started = time.monotonic()
    first_t: float | None = None
    peak = 0
    taken = 0
    last_progress = -math.inf

    def alive() -> bool:
        if process is not None:
            return process.returncode is None
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as group:
            if stop_on_signals:
                await group.start(_stop_on_signals, stop)
            emit(
                f"watching pid {pid} against {describe_size(probe.limit)} from {limit_source}; "
                f"sampling every {history.spacing:g} s at first, slowing to every {interval:g} s"
            )
            while alive() and not stop.is_set():
                if duration is not None and time.monotonic() - started >= duration:
                    break
                previous = monitor.level
                try:
                    sample = monitor.sample_now()
                except (psutil.NoSuchProcess, ProcessLookupError, FileNotFoundError, ValueError):
                    break
                taken += 1
                if first_t is None:
                    first_t = sample.timestamp
                elapsed = sample.timestamp - first_t
                history.offer(sample.timestamp, float(sample.used))
                peak = max(peak, sample.used)
                if monitor.level != previous:
                    emit(f"[{elapsed:7.1f}s] pressure {previous} -> {monitor.level}")
                if not quiet and elapsed - last_progress >= PROGRESS_EVERY:
                    last_progress = elapsed
                    emit(
                        f"[{elapsed:7.1f}s] rss {format_size(sample.used):>10}  "
                        f"{sample.fraction:6.1%} of limit  level {monitor.level}"
                    )
                with anyio.move_on_after(min(history.spacing, interval)):
                    await stop.wait()
            group.cancel_scope.cancel()
    finally:
        probe.close()
        if process is not None:
            with anyio.CancelScope(shield=True):
                await _end(process)
    points = history.points
    detector = LeakDetector(min_samples=MIN_SAMPLES, window=HELD)
    report = detector.analyze(points)
    verdict = verdict_of(report)
    summary: dict[str, object] = {
        "verdict": verdict,
        "exit_code": VERDICTS[verdict],
        "pid": pid,
        "command": command or None,
        "returncode": process.returncode if process is not None else None,
        "seconds": round(time.monotonic() - started, 3),
        "samples": taken,
        "samples_judged": len(points),
        "sample_spacing": history.spacing,
        "peak_rss": peak,
        "limit": probe.limit,
        "limit_source": limit_source,
        "final_level": monitor.level.label,
        "leak": report.to_dict(),
    }
    emit(f"{explain(report, verdict)}; peak rss {format_size(peak)}")
    return summary


async def _stop_on_signals(
    stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` on the first SIGINT or SIGTERM (Ctrl-C ends the watch with a verdict)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            stop.set()
            return


async def _end(process: anyio.abc.Process) -> None:
    """Reap a command that exited, or end one the watch started and is leaving early."""
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(5.0):
            await process.wait()
            return
        process.kill()
    await process.wait()


_DESCRIPTION = """\
Follow one process' memory (its resident set, children included) and judge
whether it leaks. Give a process id with --pid, or a command after --; a
command is started, watched until it exits, and ended if the watch stops
first (--duration).

Sampling starts every 0.05 s and slows down as the run gets longer (never
beyond --interval), so a run of a few seconds gets a verdict too.

Sizes: Ki Mi Gi Ti (and KiB MiB GiB TiB) are powers of 1024; K M G T (and
KB MB GB TB) are powers of 1000; a bare lower-case m is refused as ambiguous.
"""

_EPILOG = """\
exit status:
  0    no leak detected
  1    leak suspected
  2    usage error
  3    not enough data to judge (the run was too short)
  126  the command cannot be run
  127  command not found
  130  interrupted before sampling began (later, Ctrl-C ends the watch with
       a verdict)

The watched command's own exit status is "returncode" in the --json output.
With --json, stdout holds the JSON alone: progress lines, and the watched
command's own output, go to stderr.
"""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memwarden watch",
        usage="memwarden watch [options] (--pid PID | -- CMD ...)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pid", type=int, help="process to watch (default: none; give -- CMD)")
    parser.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        help="longest time between samples, in seconds (default: 1.0)",
    )
    parser.add_argument(
        "--limit",
        type=size_argument,
        help="limit to compare against, e.g. 2Gi or 2G (default: the cgroup limit of the "
        "watched process, else RAM)",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        help="stop after this many seconds (default: when the process exits)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only pressure changes and the verdict (default: off)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON on stdout, progress on stderr (default: off)",
    )
    return parser


def _stderr_fd() -> int | None:
    """The descriptor of stderr, for the watched command's output under --json."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def main(args: list[str] | None = None) -> int:
    """Entry point of ``memwarden watch``; returns the exit status (see ``--help``)."""
    argv = list(sys.argv[2:] if args is None else args)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = _parser()
    ns = parser.parse_args(argv)
    if (ns.pid is None) == (not command):
        parser.error("give exactly one of --pid PID or -- CMD ...")
    if ns.pid is not None and (ns.pid <= 0 or not psutil.pid_exists(ns.pid)):
        parser.error(f"--pid {ns.pid}: no such process")
    progress: TextIO = sys.stderr if ns.json else sys.stdout

    def emit(line: str) -> None:
        print(line, file=progress, flush=True)

    kwargs: dict[str, Any] = {
        "pid": ns.pid,
        "command": command,
        "interval": ns.interval,
        "limit": ns.limit,
        "duration": ns.duration,
        "quiet": ns.quiet,
        "emit": emit,
        "first_interval": min(FIRST_INTERVAL, ns.interval),
        "command_stdout": _stderr_fd() if ns.json else None,
        "stop_on_signals": True,
    }
    try:
        summary = anyio.run(lambda: watch(**kwargs))
    except CommandNotFound as exc:
        print(f"memwarden: command not found: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except CommandNotRunnable as exc:
        print(f"memwarden: permission denied: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        # Only before sampling began: from then on Ctrl-C ends the watch with a verdict.
        print("memwarden: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if ns.json:
        print(json.dumps(summary, indent=2))
    code = summary["exit_code"]
    assert isinstance(code, int)
    return code
