"""The pressure event stream (GET /api/memory/events): in process on both backends, and over
a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import uvicorn
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from both_backends import on_both

from memwarden import PressureLevel, WardenConfig
from memwarden.http import create_app
from memwarden.testing import StaticProbe
from memwarden.warden import Warden

LIMIT = 1 << 30
PATH = "/api/memory/events"
BOUND = 10.0  # seconds: a bound on waits that end on an event, never the wait itself

Message = dict[str, Any]


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    yield


def make_warden(probe: StaticProbe, **config: Any) -> Warden:
    return Warden(WardenConfig(monitor_use_psi=False, **config), probe=probe)


def set_fraction(warden: Warden, probe: StaticProbe, fraction: float) -> None:
    probe.set(used=int(LIMIT * fraction))
    warden.monitor.sample_now()


def parse_message(chunk: bytes) -> dict[str, str]:
    text = chunk.decode()
    assert text.endswith("\n\n"), text
    fields: dict[str, str] = {}
    for line in text.strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


# -- an in-process ASGI client --------------------------------------------------------------


@dataclass
class Stream:
    """One request to the app, driven by hand: what it sent and a way to hang up."""

    to_app: MemoryObjectSendStream[Message]
    from_app: MemoryObjectReceiveStream[Message]
    finished: anyio.Event
    group: TaskGroup
    start: Message = field(default_factory=dict)

    async def response_start(self) -> Message:
        with anyio.fail_after(BOUND):
            self.start = await self.from_app.receive()
        assert self.start["type"] == "http.response.start"
        return self.start

    async def chunk(self) -> Message:
        with anyio.fail_after(BOUND):
            message = await self.from_app.receive()
        assert message["type"] == "http.response.body"
        return message

    async def event(self) -> dict[str, Any]:
        message = await self.chunk()
        assert message["more_body"] is True
        fields = parse_message(message["body"])
        assert fields["event"] == "pressure"
        data: dict[str, Any] = json.loads(fields["data"])
        data["id"] = int(fields["id"])
        data["retry"] = int(fields["retry"])
        return data

    async def hang_up(self) -> None:
        await self.to_app.send({"type": "http.disconnect"})
        with anyio.fail_after(BOUND):
            await self.finished.wait()


@asynccontextmanager
async def request(
    app: Any,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    buffer: int = 64,
) -> AsyncIterator[Stream]:
    to_app, app_receives = anyio.create_memory_object_stream[Message](8)
    app_sends, from_app = anyio.create_memory_object_stream[Message](buffer)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test"), *(headers or [])],
        "server": ("test", 80),
        "client": ("127.0.0.1", 5000),
    }
    await to_app.send({"type": "http.request", "body": b"", "more_body": False})
    finished = anyio.Event()

    async def run() -> None:
        try:
            async with app_sends:
                await app(scope, app_receives.receive, app_sends.send)
        finally:
            finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            yield Stream(to_app, from_app, finished, group)
        finally:
            group.cancel_scope.cancel()


@asynccontextmanager
async def warden_task(warden: Warden) -> AsyncIterator[anyio.Event]:
    """Run ``warden`` in a task of its own; setting the yielded event closes it."""
    stop = anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with warden:
            task_status.started()
            await stop.wait()

    async with anyio.create_task_group() as group:
        await group.start(run)
        yield stop
        stop.set()


def subscribers(warden: Warden) -> int:
    return warden.monitor.stats().subscribers


# -- in process, on asyncio and trio ---------------------------------------------------------


@on_both
async def test_first_event_is_the_current_level_with_sse_headers() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden, request(app) as stream:
        start = await stream.response_start()
        headers = dict(start["headers"])
        assert start["status"] == 200
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert headers[b"cache-control"] == b"no-cache"
        assert headers[b"x-accel-buffering"] == b"no"
        first = await stream.event()
        assert first["level"] == "low" and first["previous"] == "low"
        assert first["id"] == 1 and first["retry"] == 3000
        assert first["sample"]["used"] == LIMIT // 10 and first["sample"]["limit"] == LIMIT
        await stream.hang_up()


@on_both
async def test_a_level_change_is_the_next_event() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden, request(app) as stream:
        await stream.response_start()
        await stream.event()
        set_fraction(warden, probe, 0.9)
        event = await stream.event()
        assert (event["level"], event["previous"], event["id"]) == ("high", "low", 2)
        set_fraction(warden, probe, 0.99)
        assert (await stream.event())["level"] == "critical"
        await stream.hang_up()


@on_both
async def test_a_ping_comment_after_a_quiet_interval() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden, ping_interval=0.02)
    async with warden, request(app) as stream:
        await stream.response_start()
        await stream.event()
        ping = await stream.chunk()
        assert ping["body"] == b": ping\n\n" and ping["more_body"] is True
        await stream.hang_up()


@on_both
async def test_a_disconnect_ends_the_stream_and_leaves_nothing_subscribed() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden:
        before = subscribers(warden)
        async with request(app) as stream:
            await stream.response_start()
            await stream.event()
            assert app.state.events.open == 1
            assert subscribers(warden) == before + 1
            await stream.hang_up()
        assert app.state.events.open == 0
        assert subscribers(warden) == before
        await app.state.events.wait_idle()


@on_both
async def test_the_stream_ends_cleanly_when_the_warden_closes() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with request(app) as stream:
        # Not running: refused at once, never left hanging.
        assert (await stream.response_start())["status"] == 503
    async with warden_task(warden) as stop, request(app) as stream:
        await stream.response_start()
        await stream.event()
        stop.set()  # the Warden closes
        last = await stream.chunk()
        assert last == {"type": "http.response.body", "body": b"", "more_body": False}
        with anyio.fail_after(BOUND):
            await stream.finished.wait()
    assert app.state.events.open == 0


@on_both
async def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden:
        async with request(app) as first, request(app) as second:
            for stream in (first, second):
                await stream.response_start()
                await stream.event()
            assert app.state.events.open == 2
            app.state.events.close()
            for stream in (first, second):
                assert (await stream.chunk())["more_body"] is False
            with anyio.fail_after(BOUND):
                await app.state.events.wait_idle()
        async with request(app) as late:
            start = await late.response_start()
            assert start["status"] == 503
            assert dict(start["headers"])[b"retry-after"] == b"3"
            body = json.loads((await late.chunk())["body"])
            assert body["error"]["type"] == "unavailable"


@on_both
async def test_a_slow_client_loses_its_oldest_events_and_never_slows_the_monitor() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe, monitor_min_dwell=0.0)
    app = create_app(warden, event_buffer=4)
    async with warden, request(app, buffer=0) as stream:
        await anyio.wait_all_tasks_blocked()  # the responder is stuck sending its headers
        for i in range(40):
            set_fraction(warden, probe, 0.9 if i % 2 == 0 else 0.1)
        # The monitor took every sample without waiting for the client.
        assert warden.monitor.stats().samples >= 40
        await stream.response_start()
        events = [await stream.event() for _ in range(4)]  # the 4 newest of 41 were kept
        assert [e["id"] for e in events] == [1, 2, 3, 4]
        assert app.state.events.stats()["dropped"] == 37
        assert events[-1]["level"] == "low"  # the newest survive
        await stream.hang_up()
    assert app.state.events.stats()["open"] == 0


@on_both
async def test_wait_idle_waits_for_the_last_stream_and_its_timeout_leaves_nothing() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    streams = app.state.events
    async with warden:
        await streams.wait_idle()  # none open: at once
        async with request(app) as stream:
            await stream.response_start()
            await stream.event()
            with anyio.move_on_after(0.02) as timeout:
                await streams.wait_idle()
            assert timeout.cancelled_caught
            assert streams._idle_waiters == []
            with anyio.CancelScope() as scope:
                scope.cancel()
                await streams.wait_idle()  # a checkpoint: the cancelled scope is honoured
            assert scope.cancelled_caught and streams._idle_waiters == []
            async with anyio.create_task_group() as group:
                group.start_soon(streams.wait_idle)
                await anyio.wait_all_tasks_blocked()
                assert len(streams._idle_waiters) == 1
                await stream.hang_up()
            assert streams._idle_waiters == []


@on_both
async def test_cancelling_a_stream_leaves_nothing_subscribed() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden:
        before = subscribers(warden)
        async with request(app) as stream:
            await stream.response_start()
            await stream.event()
            stream.group.cancel_scope.cancel()
        assert app.state.events.open == 0
        assert subscribers(warden) == before


@on_both
async def test_a_timed_out_stream_leaves_nothing_subscribed() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden:
        before = subscribers(warden)
        with anyio.move_on_after(0.05) as timeout:
            async with request(app) as stream:
                await stream.response_start()
                await stream.event()
                await stream.finished.wait()  # never: only the timeout ends this
        assert timeout.cancelled_caught
        assert app.state.events.open == 0
        assert subscribers(warden) == before


@on_both
async def test_head_and_unknown_parameters_end_at_once() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden:
        async with request(app, method="HEAD") as stream:
            assert (await stream.response_start())["status"] == 200
            assert (await stream.chunk())["more_body"] is False
        async with request(app, query=b"since=3") as stream:
            assert (await stream.response_start())["status"] == 400
            error = json.loads((await stream.chunk())["body"])["error"]
            assert "'since'" in error["message"]
        assert app.state.events.open == 0


@on_both
async def test_the_stream_needs_the_token() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden, token="tkn")
    async with warden:
        async with request(app) as stream:
            start = await stream.response_start()
            assert start["status"] == 401
        async with request(app, headers=[(b"authorization", b"Bearer tkn")]) as stream:
            assert (await stream.response_start())["status"] == 200
            assert (await stream.event())["level"] == "low"
            await stream.hang_up()


# -- over a real uvicorn server (asyncio only: uvicorn runs on asyncio) ----------------------


class Server(uvicorn.Server):
    """A server that ends the app's event streams when told to exit (see the HTTP guide)."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.memwarden_app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.memwarden_app.state.events.close()
        super().handle_exit(sig, frame)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[tuple[Server, str, asyncio.Task[None]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    server = Server(config, app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield server, f"http://127.0.0.1:{port}", task
    finally:
        server.should_exit = True
        with anyio.fail_after(BOUND):
            await task
        sock.close()


async def read_event(lines: AsyncIterator[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    with anyio.fail_after(BOUND):
        async for line in lines:
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    raise AssertionError(f"the stream ended inside a message: {fields}")


async def test_over_uvicorn_first_event_a_level_change_and_a_disconnect() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with warden, serving(app) as (_, url, _task), httpx.AsyncClient(trust_env=False) as http:
        before = subscribers(warden)
        async with http.stream("GET", url + PATH) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.aiter_lines()
            first = await read_event(lines)
            assert first["event"] == "pressure" and first["id"] == "1"
            assert json.loads(first["data"])["level"] == "low"
            set_fraction(warden, probe, 0.9)
            change = await read_event(lines)
            assert json.loads(change["data"])["level"] == "high"
            assert change["id"] == "2"
        # The client hung up: the server notices and lets go of the subscription.
        with anyio.fail_after(BOUND):
            await app.state.events.wait_idle()
        assert subscribers(warden) == before


async def test_over_uvicorn_the_stream_ends_when_the_warden_closes() -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with (
        serving(app) as (_, url, task),
        httpx.AsyncClient(trust_env=False) as http,
        warden_task(warden) as stop,
        http.stream("GET", url + PATH) as response,
    ):
        lines = response.aiter_lines()
        await read_event(lines)
        stop.set()  # the Warden closes
        with anyio.fail_after(BOUND):
            rest = [line async for line in lines]
        assert rest == []  # the response simply ended
    assert task.done() and app.state.events.open == 0


@pytest.fixture
def sigterm_seen() -> Iterator[list[int]]:
    """Record SIGTERM instead of dying of it: uvicorn re-raises the signal it shut down on."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_over_uvicorn_a_shutdown_ends_open_streams(sigterm_seen: list[int]) -> None:
    probe = StaticProbe(used=LIMIT // 10, limit=LIMIT)
    warden = make_warden(probe)
    app = create_app(warden)
    async with (
        warden,
        httpx.AsyncClient(trust_env=False) as http,
        serving(app) as (server, url, task),
    ):
        async with http.stream("GET", url + PATH) as response:
            lines = response.aiter_lines()
            assert json.loads((await read_event(lines))["data"])["level"] == "low"
            server.handle_exit(signal.SIGTERM, None)
            with anyio.fail_after(BOUND):
                rest = [line async for line in lines]
            assert rest == []
        with anyio.fail_after(BOUND):
            await task
        assert warden.running  # the Warden outlives the server; its streams did not
    assert app.state.events.open == 0
    assert sigterm_seen == [signal.SIGTERM]
    assert warden.monitor.level is PressureLevel.LOW
