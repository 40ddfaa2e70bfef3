"""The ``memwarden`` command: --version, demo and watch."""

from __future__ import annotations

import json
import sys

import anyio
import pytest

from memwarden import __version__
from memwarden._demo import run_demo
from memwarden._watch import watch
from memwarden.cli import main
from memwarden.units import MiB


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"memwarden {__version__}"


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["frobnicate"]) == 2
    assert "'frobnicate'" in capsys.readouterr().err


def test_usage_names_every_command_in_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out
    for command in ("demo", "serve", "info", "watch", "--version"):
        assert command in out


async def test_demo_runs_every_job_within_the_budget() -> None:
    lines: list[str] = []
    report = await run_demo(jobs=24, budget=24 * MiB, concurrency=8, job_timeout=30.0, out=lines)
    assert report.completed == report.jobs == 24
    assert 0 < report.peak_reserved <= report.budget == 24 * MiB
    assert report.levels_seen[0] == "low"
    assert report.seconds > 0
    assert lines[0].startswith("memwarden demo: 24 jobs")
    assert any("peak reserved" in line for line in report.lines())


def test_demo_command_prints_a_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--jobs", "6", "--budget", "16MiB", "--concurrency", "3", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds the JSON alone
    assert captured.err.startswith("memwarden demo: 6 jobs")
    assert report["completed"] == 6
    assert report["peak_reserved"] <= 16 * MiB


@pytest.mark.parametrize(
    "args", [["--jobs", "0"], ["--concurrency", "-1"], ["--budget", "lots"], ["--jobs", "x"]]
)
def test_demo_rejects_bad_arguments(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_demo_explains_a_refused_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--budget", "512m"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "milli" in err and "512Mi" in err and "invalid" not in err


async def test_watch_follows_a_command_to_its_end() -> None:
    lines: list[str] = []
    code = "import time; data = [bytearray(b'x' * (1 << 20)) for _ in range(8)]; time.sleep(60)"
    # The child outlives the watch's duration: the watch ends it.
    summary = await watch(
        pid=None,
        command=[sys.executable, "-c", code],
        interval=0.05,
        limit=None,
        duration=0.3,
        quiet=False,
        emit=lines.append,
    )
    assert isinstance(summary["samples"], int) and summary["samples"] >= 1
    assert isinstance(summary["peak_rss"], int) and summary["peak_rss"] > 8 * MiB
    assert summary["returncode"] == -15  # terminated when the watch ended
    assert lines[0].startswith("watching pid")
    assert "not enough data to judge" in lines[-1]


def test_watch_command_exit_status_is_in_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["watch", "--json", "--", sys.executable, "-c", "raise SystemExit(4)"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["returncode"] == 4
    assert code == summary["exit_code"] == 3  # the verdict's status: not enough data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one"),
        (["--pid", "1", "--", "true"], "exactly one"),
        (["--pid", "999999999"], "no such process"),
        (["--interval", "0", "--", "true"], "--interval"),
    ],
)
def test_watch_rejects_bad_arguments(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["watch", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_watch_runs_under_trio() -> None:
    async def run() -> dict[str, object]:
        return await watch(
            pid=None,
            command=[sys.executable, "-c", "pass"],
            interval=0.05,
            limit=64 * MiB,
            duration=None,
            quiet=True,
            emit=lambda _line: None,
        )

    summary = anyio.run(run, backend="trio")
    assert summary["returncode"] == 0
    assert summary["verdict"] == "not enough data"
