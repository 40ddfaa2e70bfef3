"""The burst benchmark: a real service in a real 1 GiB memory cgroup, under bursts of load.

``python -m benchmarks burst [--quick]`` (root, cgroup v1 or v2). For each
variant it creates a memory cgroup, starts ``benchmarks.burst_service`` under
uvicorn inside it, and drives it from this process on 127.0.0.1 with a bounded,
closed-loop load generator: bursts of 150 concurrent clients (each with its own
keep-alive connection) alternating with calm phases of 8. A client that gets a
503 waits for ``Retry-After`` (capped at 2 s; 0.5 s when absent), as a
well-behaved client does, the same for every variant. A server the kernel
kills is restarted, as a container runtime would.

Variants, one after another in the same run:
(a) naive; (b) naive behind uvicorn ``--limit-concurrency N`` for a sweep of N;
(c) memwarden as the web-service guide configures it; (d) the same with
``--workers 2``.

Reported per variant: OOM kills (the cgroup's own counter), server restarts,
requests completed, 503s, connection errors, p50/p99 latency of completed
requests, mean cgroup usage during bursts and peak cgroup usage. The cgroup is
removed afterwards. Results go to ``benchmarks/results/burst.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._harness import RESULTS, Row, machine, print_and_save

LIMIT = 1 << 30
BURST_CLIENTS = 150
CALM_CLIENTS = 8
BURST_SECONDS = 4.0
CALM_SECONDS = 5.0
RETRY_CAP = 2.0
RETRY_DEFAULT = 0.5
RESERVE_TIMEOUT = 5.0  # the middleware's default
SWEEP = (2, 3, 4, 6, 8)
REPEATS = 3
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- the cgroup


class Cgroup:
    """A memory cgroup of our own (v1 or v2), removed on close."""

    def __init__(self, name: str, limit: int) -> None:
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists() and "memory" in v2.read_text().split():
            self.version = 2
            self.path = Path("/sys/fs/cgroup") / name
        elif Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
            self.version = 1
            self.path = Path("/sys/fs/cgroup/memory") / name
        else:
            raise RuntimeError("no memory cgroup controller (v1 or v2) is mounted here")
        self.path.mkdir()
        try:
            if self.version == 1:
                self._write("memory.limit_in_bytes", str(limit))
                with contextlib.suppress(OSError):  # no swap accounting on some kernels
                    self._write("memory.memsw.limit_in_bytes", str(limit))
            else:
                self._write("memory.max", str(limit))
                with contextlib.suppress(OSError):
                    self._write("memory.swap.max", "0")
        except BaseException:
            self.path.rmdir()
            raise

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def add_self(self) -> None:
        """Move the calling process into this cgroup (used in the child before exec)."""
        self._write("cgroup.procs", str(os.getpid()))

    def usage(self) -> int:
        """Bytes charged to the cgroup now."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int(self._read(name))

    def peak(self) -> int | None:
        """The cgroup's own high-water mark, where the kernel keeps one."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int(self._read(name))
        except OSError:
            return None

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer has killed in this cgroup."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in self._read(name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        """Processes in the cgroup now."""
        return [int(p) for p in self._read("cgroup.procs").split()]

    def close(self) -> None:
        """Kill what is left inside and remove the cgroup."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


# ----------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Variant:
    """One way of running the service."""

    name: str
    env: str
    workers: int = 1
    limit_concurrency: int | None = None

    def command(self, port: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.burst_service:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        if self.limit_concurrency is not None:
            cmd += ["--limit-concurrency", str(self.limit_concurrency)]
        return cmd


class Server:
    """A uvicorn process inside the cgroup, restarted when it dies."""

    def __init__(self, variant: Variant, cgroup: Cgroup, port: int) -> None:
        self.variant = variant
        self.cgroup = cgroup
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.log = open(RESULTS / f"burst-{variant.name}.log", "ab")  # noqa: SIM115

    def start(self) -> None:
        env = dict(os.environ, BURST_VARIANT=self.variant.env, PYTHONPATH=str(ROOT))
        cgroup = self.cgroup
        self.process = subprocess.Popen(
            self.variant.command(self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=cgroup.add_self,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# ------------------------------------------------------------------- the load


@dataclass
class Outcome:
    """What one variant's run produced."""

    variant: str
    oom_kills: int = 0
    restarts: int = 0
    completed: int = 0
    shed_503: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    # Where a completed request's time went, as the service reports it (memwarden only).
    queued: list[float] = field(default_factory=list)
    served: list[float] = field(default_factory=list)
    # Before the service saw the request (connect, send, the server's accept and parse)
    # and after it answered (the response's way back to the client).
    before: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)  # queued + served
    burst_usage: list[int] = field(default_factory=list)
    peak_usage: int = 0

    def summary(self) -> dict[str, float | int | str]:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        mean = statistics.fmean(self.burst_usage) if self.burst_usage else 0.0
        extra: dict[str, float] = {}
        for name, values in (
            ("before", self.before),
            ("queued", self.queued),
            ("served", self.served),
            ("after", self.after),
            ("server", self.server),
        ):
            if values:
                ordered = sorted(values)
                extra[f"{name}_p50_s"] = statistics.median(ordered)
                extra[f"{name}_p99_s"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return {
            "variant": self.variant,
            "oom_kills": self.oom_kills,
            "restarts": self.restarts,
            "completed": self.completed,
            "shed_503": self.shed_503,
            "connection_errors": self.errors,
            "p50_s": p50,
            "p99_s": p99,
            "mean_burst_usage_mib": mean / 2**20,
            "peak_usage_mib": self.peak_usage / 2**20,
            **extra,
        }


def _phases(duration: float) -> Iterator[tuple[float, int]]:
    """(end time offset, active clients) for each phase, bursts first."""
    t = 0.0
    while t < duration:
        t = min(t + BURST_SECONDS, duration)
        yield t, BURST_CLIENTS
        if t >= duration:
            break
        t = min(t + CALM_SECONDS, duration)
        yield t, CALM_CLIENTS


async def _ready(port: int, server: Server, deadline: float) -> bool:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                return False
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return False


async def _drive(variant: Variant, cgroup: Cgroup, duration: float, seed: int) -> Outcome:
    import httpx

    port = _free_port()
    server = Server(variant, cgroup, port)
    outcome = Outcome(variant.name)
    kills_before = cgroup.oom_kills()
    server.start()
    if not await _ready(port, server, time.monotonic() + 30):
        server.stop()
        raise RuntimeError(f"variant {variant.name}: the server did not start (see its log)")
    rng = random.Random(seed)
    active = 0
    phase_changed = asyncio.Event()
    stop = asyncio.Event()
    in_burst = False

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        local = random.Random(rng.random())
        while not stop.is_set():
            if index >= active:
                await phase_changed.wait()
                continue
            mb = local.randint(20, 200)
            hold = local.randint(50, 200)
            params = {"mb": str(mb), "hold": str(hold), "user": f"u{index % 50}"}
            start = time.monotonic()
            sent_wall = time.time()
            try:
                response = await client.get("/work", params=params)
            except httpx.HTTPError:
                outcome.errors += 1
                await asyncio.sleep(RETRY_DEFAULT)
                continue
            if response.status_code == 200:
                outcome.completed += 1
                outcome.latencies.append(time.monotonic() - start)
                timing = response.json()
                if "queued" in timing:
                    outcome.queued.append(timing["queued"])
                    outcome.served.append(timing["served"])
                    outcome.server.append(timing["queued"] + timing["served"])
                    outcome.before.append(timing["arrived_wall"] - sent_wall)
                    outcome.after.append(time.time() - timing["done_wall"])
            elif response.status_code == 503:
                outcome.shed_503 += 1
                header = response.headers.get("retry-after")
                wait = min(float(header), RETRY_CAP) if header else RETRY_DEFAULT
                await asyncio.sleep(wait)
            else:
                outcome.errors += 1
                await asyncio.sleep(RETRY_DEFAULT)

    async def sampler() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                usage = cgroup.usage()
                outcome.peak_usage = max(outcome.peak_usage, usage)
                if in_burst:
                    outcome.burst_usage.append(usage)
            await asyncio.sleep(0.02)

    async def keeper() -> None:
        # A container runtime restarts a killed service; so do we.
        while not stop.is_set():
            if not server.alive():
                outcome.restarts += 1
                server.start()
                await _ready(port, server, time.monotonic() + 30)
            await asyncio.sleep(0.05)

    # Each client is one user with its own keep-alive connection, as a browser or an
    # upstream service holds one. One shared pool made requests wait inside the load
    # generator itself for seconds when many were held open at the server.
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them,
    # so no request is sent on a connection the server is closing.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=4.0)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0, limits=limits)
            )
            for _ in range(BURST_CLIENTS)
        ]
        tasks = [asyncio.create_task(client_loop(i, c)) for i, c in enumerate(clients)]
        helpers = [asyncio.create_task(sampler()), asyncio.create_task(keeper())]
        start = time.monotonic()
        for end, clients in _phases(duration):
            active = clients
            in_burst = clients == BURST_CLIENTS
            phase_changed.set()
            phase_changed = asyncio.Event()
            await asyncio.sleep(max(0.0, start + end - time.monotonic()))
        stop.set()
        phase_changed.set()
        # Requests in flight may finish (bounded), then everything stops.
        _, pending = await asyncio.wait(tasks, timeout=RESERVE_TIMEOUT + 5)
        for task in (*pending, *helpers):
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
    server.stop()
    outcome.restarts = max(outcome.restarts, 0)
    outcome.oom_kills = cgroup.oom_kills() - kills_before
    outcome.peak_usage = max(outcome.peak_usage, cgroup.peak() or 0)
    return outcome


def run_variant(variant: Variant, duration: float, seed: int) -> Outcome:
    """Run one variant in a fresh 1 GiB cgroup and return its outcome."""
    cgroup = Cgroup(f"memwarden-burst-{os.getpid()}-{variant.name}", LIMIT)
    try:
        outcome = asyncio.run(_drive(variant, cgroup, duration, seed))
    finally:
        cgroup.close()
    print(json.dumps(outcome.summary()), file=sys.stderr, flush=True)
    return outcome


def unavailable() -> str | None:
    """Why the benchmark cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a memory cgroup"
    try:
        probe = Cgroup(f"memwarden-burst-probe-{os.getpid()}", LIMIT)
    except (OSError, RuntimeError) as exc:
        return f"cannot create a memory cgroup: {exc}"
    probe.close()
    for module in ("uvicorn", "numpy", "httpx", "starlette"):
        try:
            __import__(module)
        except ImportError:
            return f"needs {module} (pip install -e '.[bench]')"
    return None


def _flag(name: str) -> str:
    """``limit-concurrency-3`` -> ``--limit-concurrency 3``."""
    option, _, value = name.rpartition("-")
    return f"--{option} {value}"


def _rows(results: dict[str, list[Outcome]]) -> list[Row]:
    naive = results["naive"][0]
    sweep = {name: runs[0] for name, runs in results.items() if name.startswith("limit-")}
    survivors = {n: o for n, o in sweep.items() if o.oom_kills == 0}
    best_name, best = max(survivors.items() or sweep.items(), key=lambda item: item[1].completed)
    rows: list[Row] = []
    for name in ("memwarden", "memwarden-2-workers"):
        runs = results.get(name)
        if not runs:
            continue
        kills = sum(o.oom_kills for o in runs)
        completed = min(o.completed for o in runs)
        errors = sum(o.errors for o in runs)
        p99 = max(o.summary()["p99_s"] for o in runs)  # type: ignore[type-var]
        label = "(c)" if name == "memwarden" else "(d) --workers 2"
        rows.append(
            Row(
                name=f"burst {label}: OOM kills over {len(runs)} runs",
                ours=kills,
                peer=naive.oom_kills,
                unit="kills",
                peer_name="naive",
                ratio=float("inf") if kills == 0 else naive.oom_kills / kills,
                target="0 kills",
                met=kills == 0,
            )
        )
        rows.append(
            Row(
                name=f"burst {label}: requests completed (worst of {len(runs)} runs)",
                ours=completed,
                peer=best.completed,
                unit="requests",
                peer_name=f"uvicorn {_flag(best_name)} (best without OOM kills)",
                ratio=completed / best.completed if best.completed else float("inf"),
                target=">= 1.2x" if name == "memwarden" else "report",
                met=completed >= 1.2 * best.completed if name == "memwarden" else None,
            )
        )
        if name == "memwarden":
            rows.append(
                Row(
                    name=f"burst {label}: connection errors over {len(runs)} runs",
                    ours=errors,
                    peer=best.errors,
                    unit="errors",
                    peer_name=f"uvicorn {_flag(best_name)}",
                    ratio=float("inf") if errors == 0 else best.errors / errors,
                    target="0 errors",
                    met=errors == 0,
                )
            )
            rows.append(
                Row(
                    name=f"burst {label}: p99 latency of completed requests",
                    ours=float(p99),
                    peer=RESERVE_TIMEOUT + 1,
                    unit="s",
                    peer_name="reserve_timeout + 1 s",
                    ratio=(RESERVE_TIMEOUT + 1) / float(p99) if p99 else float("inf"),
                    target=f"<= {RESERVE_TIMEOUT + 1:g} s",
                    met=float(p99) <= RESERVE_TIMEOUT + 1,
                )
            )
    return rows


def _variant_table(results: dict[str, list[Outcome]]) -> str:
    lines = [
        "| variant | OOM kills | restarts | completed | 503s | conn. errors | p50 s | p99 s "
        "| mean burst MiB | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runs in results.values():
        for o in runs:
            s = o.summary()
            lines.append(
                f"| {s['variant']} | {s['oom_kills']} | {s['restarts']} | {s['completed']} "
                f"| {s['shed_503']} | {s['connection_errors']} | {s['p50_s']:.2f} "
                f"| {s['p99_s']:.2f} | {s['mean_burst_usage_mib']:.0f} "
                f"| {s['peak_usage_mib']:.0f} |"
            )
    return "\n".join(lines)


def main(quick: bool = False, only: list[str] | None = None) -> list[Row]:
    """Run every variant (``only``: a subset by name) and return the summary rows."""
    reason = unavailable()
    if reason is not None:
        print(f"burst benchmark skipped: {reason}", file=sys.stderr)
        return []
    RESULTS.mkdir(exist_ok=True)
    duration = 15.0 if quick else 45.0
    repeats = 1 if quick else REPEATS
    sweep = (3, 6) if quick else SWEEP
    plan: list[tuple[Variant, int]] = [(Variant("naive", "naive"), 1)]
    plan += [(Variant(f"limit-concurrency-{n}", "naive", limit_concurrency=n), 1) for n in sweep]
    plan += [(Variant("memwarden", "memwarden"), repeats)]
    plan += [(Variant("memwarden-2-workers", "memwarden", workers=2), repeats)]
    results: dict[str, list[Outcome]] = {}
    for variant, count in plan:
        if only and variant.name not in only and variant.env not in only:
            continue
        for repeat in range(count):
            outcome = run_variant(variant, duration, seed=1000 + repeat)
            results.setdefault(variant.name, []).append(outcome)
    table = _variant_table(results)
    print(f"\n### burst variants ({duration:g} s each)\n\n{table}\n")
    (RESULTS / ("burst-variants.quick.md" if quick else "burst-variants.md")).write_text(
        table + "\n"
    )
    details = {
        "machine": machine(),
        "duration_s": duration,
        "variants": {k: [o.summary() for o in v] for k, v in results.items()},
    }
    name = "burst-variants.quick.json" if quick else "burst-variants.json"
    (RESULTS / name).write_text(json.dumps(details, indent=2))
    if "naive" not in results or not any(k.startswith("limit-") for k in results):
        return []
    return _rows(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.burst")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="variant names or kinds (naive, memwarden)")
    args = parser.parse_args()
    rows = main(quick=args.quick, only=args.only)
    if rows:
        print_and_save("burst.quick" if args.quick else "burst", rows)
