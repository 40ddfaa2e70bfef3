"""``memwarden demo``: the help, and ``--serve`` running the workload with the dashboard."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from memwarden._demo import build_parser
from memwarden.cli import main

WAIT = 20.0


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["status"] == "success"
    data = body["data"]
    assert isinstance(data, dict)
    return data


def test_demo_serve_runs_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "memwarden", "demo", "--serve", "--port", "0", "--budget", "32MiB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(process.stdout.readline() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(WAIT)
        assert lines and lines[0].startswith("http://127.0.0.1:"), (lines, process.poll())
        url = lines[0].strip()
        memory = _get(url + "api/memory")
        assert memory["limit"] == 32 * 2**20 + 32 * 2**20 // 10
        assert "connections" in _get(url + "api/pools")["pools"]  # type: ignore[operator]
        assert "thumbnails" in _get(url + "api/caches")["caches"]  # type: ignore[operator]
        with urllib.request.urlopen(url, timeout=WAIT) as page:
            assert b"static/dashboard.js" in page.read()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0
        assert process.stderr is not None
        err = process.stderr.read()
        assert "Traceback" not in err and "stopped" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--serve", "--json"], "--json"),
        (["--serve", "--host", "0.0.0.0"], "without a token"),
        (["--serve", "--port", "-1"], "--port"),
    ],
)
def test_demo_serve_bad_input_is_one_line_and_status_2(
    args: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["demo", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_demo_help_is_plain_text_with_every_default() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert "``" not in text
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest
