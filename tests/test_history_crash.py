"""Kill -9 a process that appends to a HistoryStore in a loop; the history always survives.

Each round starts a writer that loads the history, continues numbering from
the last record and appends one record at a time (small files, so rotation
happens under fire too); the test kills it at a random moment. After every
kill, every file must parse completely and the records must run 0, 1, 2, ...
without a gap (the oldest may have been rotated away), and the next writer
must continue from where the killed one stopped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

# One process imports memwarden once, then forks a fresh writer for every
# round, so each round costs a fork rather than an interpreter start.
FORKSERVER = """
import os
import sys

import aiofiles  # imported here once, not in every forked writer
import anyio

from memwarden.history import HistoryStore


async def write(directory: str) -> None:
    store = HistoryStore(directory, max_bytes=4096, keep=2)
    loaded = await store.load("samples")
    i = loaded[-1]["i"] + 1 if loaded else 0
    print("ready", i, flush=True)
    while True:
        await store.append("samples", [{"i": i, "pad": "x" * 40}])
        i += 1


for _command in sys.stdin:
    pid = os.fork()
    if pid == 0:
        anyio.run(write, sys.argv[1])
        os._exit(0)
    print("writer", pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""

KILLS = 20


def read_strictly(directory: Path) -> list[int]:
    """Every record's ``i``, oldest first; fails on any line that does not parse."""
    numbers: list[int] = []
    names = ["samples.2.jsonl", "samples.1.jsonl", "samples.jsonl"]
    for name in names:
        path = directory / name
        if path.exists():
            text = path.read_text()
            assert text == "" or text.endswith("\n"), f"{name} ends with a torn line"
            numbers += [json.loads(line)["i"] for line in text.splitlines()]
    return numbers


def test_kill_9_mid_write_never_corrupts_history(tmp_path: Path) -> None:
    script = tmp_path / "forkserver.py"
    script.write_text(FORKSERVER)
    state = tmp_path / "state"
    rng = random.Random(1234)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen(
        [sys.executable, str(script), str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    expected_start = 0
    highest = -1
    try:
        for _ in range(KILLS):
            server.stdin.write("go\n")
            server.stdin.flush()
            lines = dict(server.stdout.readline().split() for _ in range(2))
            pid = int(lines["writer"])
            # The writer resumes right after the last record that survived.
            assert int(lines["ready"]) == expected_start
            time.sleep(rng.uniform(0.0, 0.05))  # a random moment in the write loop
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().strip() == "reaped"
            numbers = read_strictly(state)
            if not numbers:
                # Killed before its first append finished: nothing may have been lost.
                assert highest == -1, "history lost"
                continue
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "gap"
            assert numbers[-1] >= highest, "records that were complete went missing"
            highest = numbers[-1]
            expected_start = numbers[-1] + 1
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        server.stdout.close()
    assert highest > 0  # the writers made progress between kills
    assert len(list(state.glob(".*.tmp"))) <= 1  # at most the last killed writer's temp file
