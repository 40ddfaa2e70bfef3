"""``memwarden serve``: a real subprocess on an ephemeral port, its URL, /healthz, and a clean stop.

The served Warden reads this machine, so only shapes and statuses are checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from memwarden._serve import UsageError, build_parser, check_exposure, format_url, is_loopback
from memwarden.cli import main

WAIT = 20.0


@contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``memwarden serve ARGS``; yield the process and the URL it printed; stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "memwarden", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(process.stdout.readline() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(WAIT)
        assert lines and lines[0].startswith("http://"), (lines, process.poll())
        yield process, lines[0].strip()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_serve_on_port_0_prints_the_bound_url_and_answers() -> None:
    with serving("--port", "0") as (process, url):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert 0 < port < 65536
        status, body = _get(url + "healthz")
        assert status == 200
        assert body["status"] == "success"
        data = body["data"]
        assert isinstance(data, dict) and set(data) >= {"ready", "level"}
        status, body = _get(url + "api/memory")
        assert status == 200 and isinstance(body["data"], dict)
        assert isinstance(body["data"]["limit"], int)
        # SIGINT stops it cleanly: status 0, no traceback.
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()


def test_serve_with_a_token_from_the_environment() -> None:
    with serving("--port", "0", env={"MEMWARDEN_API_TOKEN": "t0ken"}) as (process, url):
        assert _get(url + "api/memory")[0] == 401
        assert _get(url + "api/memory", "t0ken")[0] == 200
        assert _get(url + "healthz")[0] == 200
        process.terminate()
        assert process.wait(timeout=WAIT) == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--host", "0.0.0.0"], "without a token"),
        (["--host", "192.0.2.7", "--port", "0"], "without a token"),
        (["--port", "70000"], "--port"),
        (["--port", "eighty"], "--port"),
        (["--token", " "], "token is empty"),
        (["--token", "two words"], "without spaces"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    args: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["serve", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and fragment in captured.err


def test_exposure_rules() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_exposure(host, None, False)
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.com"):
        assert not is_loopback(host), host
        with pytest.raises(UsageError, match="MEMWARDEN_API_TOKEN"):
            check_exposure(host, None, False)
        check_exposure(host, "token", False)
        check_exposure(host, None, True)


def test_urls_bracket_ipv6() -> None:
    assert format_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"
    assert format_url("::1", 80) == "http://[::1]:80/"


def test_serve_help_is_plain_text_with_every_default() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert "``" not in text
    assert "127.0.0.1" in text and "8765" in text
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest
