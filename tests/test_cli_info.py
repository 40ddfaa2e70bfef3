"""``memwarden info``: what memwarden detects here, as text or as JSON on stdout alone.

These read this machine, so they check the structure of the answer, never its values.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from memwarden._info import build_parser
from memwarden.cli import main


def _check_structure(info: dict[str, object]) -> None:
    assert isinstance(info["limit"], int) and info["limit"] > 0
    assert isinstance(info["limit_source"], str) and info["limit_source"]
    assert isinstance(info["used"], int)
    cgroup = info["cgroup"]
    assert isinstance(cgroup, dict)
    assert cgroup["version"] in (None, 1, 2)
    assert cgroup["path"] is None or isinstance(cgroup["path"], str)
    psi = info["psi"]
    assert isinstance(psi, dict)
    assert isinstance(psi["files"], list) and psi["files"]
    assert all(set(f) == {"path", "readable"} for f in psi["files"])
    assert isinstance(info["event_sources"], list)
    assert all(isinstance(s, str) for s in info["event_sources"])
    budget = info["budget"]
    assert isinstance(budget, dict)
    assert isinstance(budget["capacity"], int) and budget["capacity"] > 0
    thresholds = info["thresholds"]
    assert isinstance(thresholds, dict)
    assert 0 < thresholds["medium"] < thresholds["high"] < thresholds["critical"] <= 1
    assert info["shed_level"] in ("low", "medium", "high", "critical")


def test_info_json_is_the_only_thing_on_stdout() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memwarden", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _check_structure(json.loads(done.stdout))


def test_info_text_names_each_finding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for label in ("limit", "used", "cgroup", "PSI", "event sources", "thresholds", "budget"):
        assert any(line.startswith(label + " ") for line in out.splitlines()), label


def test_info_budget_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMWARDEN_CAPACITY", "64MiB")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["budget"] == {**info["budget"], "capacity": 64 << 20, "configured": 64 << 20}


def test_info_bad_environment_is_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMWARDEN_CAPACITY", "plenty")
    assert main(["info"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "MEMWARDEN_CAPACITY" in captured.err


def test_info_bad_argument_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["info", "--jsn"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jsn" in err


def test_info_help_is_plain_text_with_every_default() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert "``" not in text
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest
