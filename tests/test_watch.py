"""``memwarden watch``: verdicts, exit statuses, the target's cgroup, JSON and help.

Real commands are short ``python -c`` programs; the cgroup of a ``--pid``
target is a fake ``/proc`` and ``/sys/fs/cgroup`` tree.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memwarden._watch import (
    EXIT_LEAK,
    EXIT_NO_LEAK,
    EXIT_NOT_ENOUGH_DATA,
    EXIT_NOT_FOUND,
    HELD,
    MIN_SAMPLES,
    _Thinned,
    explain,
    main,
    verdict_of,
    watch,
)
from memwarden.cli import main as cli_main
from memwarden.leaks import LeakReport
from memwarden.units import MiB

# The program: 5 MiB more every 0.25 s for about 3 s, each page touched.
LEAK_3S = (
    "import time\n"
    "hold = []\n"
    "for _ in range(12):\n"
    "    block = bytearray(5 << 20)\n"
    "    block[::4096] = b'x' * len(block[::4096])\n"
    "    hold.append(block)\n"
    "    time.sleep(0.25)\n"
)
FLAT = (
    "import time\n"
    "block = bytearray(20 << 20)\n"
    "block[::4096] = b'x' * len(block[::4096])\n"
    "time.sleep({seconds})\n"
)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memwarden", "watch", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_three_second_leak_is_suspected_at_default_settings() -> None:
    done = _run_cli("--json", "--", sys.executable, "-c", LEAK_3S)
    assert done.returncode == EXIT_LEAK, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verdict"] == "leak suspected"
    assert summary["exit_code"] == EXIT_LEAK
    assert summary["returncode"] == 0  # the watched program's own status
    assert summary["leak"]["is_leak"] is True
    assert summary["leak"]["trend"] == "increasing"
    assert summary["leak"]["score"] > 0.5
    assert summary["samples_judged"] >= MIN_SAMPLES


async def test_a_flat_program_gets_no_leak() -> None:
    lines: list[str] = []
    summary = await watch(
        pid=None,
        command=[sys.executable, "-c", FLAT.format(seconds=1.5)],
        emit=lines.append,
        first_interval=0.02,
    )
    assert summary["verdict"] == "no leak", lines[-1]
    assert summary["exit_code"] == EXIT_NO_LEAK
    assert lines[-1].startswith("no leak detected:")


def test_too_short_a_run_is_not_enough_data_never_no_leak() -> None:
    done = _run_cli("--json", "--", sys.executable, "-c", "raise SystemExit(5)")
    assert done.returncode == EXIT_NOT_ENOUGH_DATA
    summary = json.loads(done.stdout)
    assert summary["verdict"] == "not enough data"
    assert summary["returncode"] == 5
    assert summary["leak"]["judged"] is False
    assert "not enough data to judge" in done.stderr
    assert "no leak" not in done.stderr


def test_json_stdout_is_json_alone_even_when_the_command_prints() -> None:
    done = _run_cli("--json", "--", sys.executable, "-c", "print('hello from the command')")
    json.loads(done.stdout)  # nothing but the JSON
    assert "hello from the command" in done.stderr
    assert "watching pid" in done.stderr


def test_a_missing_command_is_one_line_and_127() -> None:
    done = _run_cli("--", "nonexistent_cmd_for_memwarden")
    assert done.returncode == EXIT_NOT_FOUND
    assert done.stderr == "memwarden: command not found: nonexistent_cmd_for_memwarden\n"
    assert done.stdout == ""


def test_a_command_that_cannot_run_is_126(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert main(["--", str(script)]) == 126


def test_cli_dispatches_watch_and_returns_the_verdict_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_main(["watch", "--quiet", "--", sys.executable, "-c", "pass"])
    assert code == EXIT_NOT_ENOUGH_DATA
    assert "not enough data" in capsys.readouterr().out


def test_help_is_plain_text_and_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":class:" not in text
    options = text[text.index("options:") : text.index("exit status:")]
    helps = {block.split()[0]: block for block in options.split("\n  --")[1:]}
    assert set(helps) == {"pid", "interval", "limit", "duration", "quiet", "json"}
    for option, help_text in helps.items():
        assert "(default: " in " ".join(help_text.split()), f"--{option}: {help_text!r}"
    for status in ("0 ", "1 ", "2 ", "3 ", "127"):
        assert f"  {status}" in text
    assert "Ki Mi Gi Ti" in text


def test_a_limit_is_echoed_in_both_units(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--limit", "1G", "--quiet", "--", sys.executable, "-c", "pass"])
    assert code == EXIT_NOT_ENOUGH_DATA
    first = capsys.readouterr().out.splitlines()[0]
    assert "1,000,000,000 bytes (1.0 GB, 953.7 MiB) from --limit" in first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "512m", "--", "true"], "ambiguous unit 'm'"),
        (["--limit", "lots", "--", "true"], "'lots'"),
        (["--interval", "0", "--", "true"], "--interval"),
        (["--interval", "nan", "--", "true"], "--interval"),
        (["--duration", "-1", "--", "true"], "--duration"),
        (["--pid", "0"], "--pid 0"),
    ],
)
def test_bad_arguments_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# -- the target's cgroup ------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield child
    child.kill()
    child.wait()


def _fake_tree(root: Path, pid: int, *, version: int, limit: str) -> None:
    def write(rel: str, text: str) -> None:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    if version == 2:
        write(f"/proc/{pid}/cgroup", "0::/workers/job\n")
        write(
            "/proc/self/mountinfo",
            "30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        )
        write("/sys/fs/cgroup/workers/memory.max", f"{limit}\n")
        write("/sys/fs/cgroup/workers/memory.current", "0\n")
        write("/sys/fs/cgroup/workers/job/memory.max", "max\n")
        write("/sys/fs/cgroup/workers/job/memory.current", "0\n")
        write("/sys/fs/cgroup/memory.current", "0\n")
    else:
        write(f"/proc/{pid}/cgroup", "4:memory:/docker/abc\n0::/\n")
        write(
            "/proc/self/mountinfo",
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        )
        base = "/sys/fs/cgroup/memory/docker/abc"
        write(f"{base}/memory.limit_in_bytes", "9223372036854771712\n")
        write(f"{base}/memory.usage_in_bytes", "0\n")
        write(f"{base}/memory.stat", f"cache 0\nhierarchical_memory_limit {limit}\n")


@pytest.mark.parametrize("version", [1, 2])
async def test_pid_uses_the_targets_cgroup_limit(
    version: int, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    _fake_tree(tmp_path, sleeper.pid, version=version, limit=str(512 * MiB))
    lines: list[str] = []
    summary = await watch(
        pid=sleeper.pid,
        command=[],
        duration=0.2,
        emit=lines.append,
        cgroup_root=str(tmp_path),
    )
    assert summary["limit"] == 512 * MiB
    assert f"cgroup v{version}" in str(summary["limit_source"])
    assert "512.0 MiB" in lines[0]
    assert summary["returncode"] is None
    assert sleeper.poll() is None  # a --pid target is never ended by the watch


async def test_pid_without_a_cgroup_limit_is_measured_against_ram(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    _fake_tree(tmp_path, sleeper.pid, version=2, limit="max")
    summary = await watch(
        pid=sleeper.pid, command=[], duration=0.1, emit=lambda _: None, cgroup_root=str(tmp_path)
    )
    assert summary["limit_source"] == "RAM (no cgroup limit)"


# -- verdict, trend and score agree ------------------------------------------


def _report(**kw: object) -> LeakReport:
    base: dict[str, object] = {
        "is_leak": False,
        "score": 0.0,
        "trend": "stable",
        "growth_rate": 0.0,
        "samples": 50,
        "reason": "floor growth below growth_threshold",
    }
    base.update(kw)
    return LeakReport(**base)  # type: ignore[arg-type]


def test_explain_never_contradicts_itself() -> None:
    too_short = _report(trend="increasing", growth_rate=20e6, samples=11, judged=False)
    assert verdict_of(too_short) == "not enough data"
    assert explain(too_short, "not enough data").startswith("not enough data to judge")
    rising = _report(trend="increasing", growth_rate=20e6, reason="growth decelerating: a warm-up")
    line = explain(rising, verdict_of(rising))
    assert line.startswith("no leak detected: growth decelerating")
    assert "memory rose, but not as a leak does" in line
    quiet_leak = _report(is_leak=True, score=0.4, trend="stable", growth_rate=150e3)
    line = explain(quiet_leak, verdict_of(quiet_leak))
    assert line.startswith("LEAK suspected") and "floor rises steadily" in line


def test_sampling_slows_down_and_covers_the_whole_run() -> None:
    history = _Thinned(0.05)
    t = 0.0
    for _ in range(20_000):
        history.offer(t, 1.0)
        t += min(history.spacing, 1.0)
        assert len(history.points) < HELD
    assert HELD // 2 <= len(history.points) < HELD
    assert history.points[0][0] == 0.0  # the start of the run is still held
    assert history.spacing > 1.0


def test_ctrl_c_ends_the_watch_with_a_verdict() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "memwarden", "watch", "--json", "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline().startswith("watching pid")  # sampling has begun
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    summary = json.loads(out)
    assert watcher.returncode == summary["exit_code"]
    assert summary["verdict"] in ("not enough data", "no leak")
    assert summary["returncode"] == -signal.SIGTERM  # the watch ended the command
