"""memwarden.asgi: shedding, per-request reservations, lifespan and the FastAPI dependency."""

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.testclient import TestClient

from memwarden import MemoryManager, PressureLevel, PressureMonitor, WardenConfig
from memwarden.asgi import MemoryGuardMiddleware, lifespan, reserve_dependency
from memwarden.budget import Allocation
from memwarden.testing import StaticProbe

BACKENDS = ("asyncio", "trio")
LIMIT = 1000


def _run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main, backend=backend)


def _monitor(fraction: float = 0.1) -> tuple[StaticProbe, PressureMonitor]:
    probe = StaticProbe(used=int(LIMIT * fraction), limit=LIMIT)
    monitor = PressureMonitor(probe)
    monitor.sample_now()
    return probe, monitor


def _app(manager: MemoryManager, seen: list[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    async def work() -> dict[str, int]:
        seen.append(manager.current_usage)
        return {"usage": manager.current_usage}

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["status"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sheds_at_critical_with_retry_after_before_reading_the_body(backend: str) -> None:
    async def main() -> None:
        probe, monitor = _monitor()
        manager = MemoryManager(LIMIT)
        seen: list[int] = []
        guard = MemoryGuardMiddleware(_app(manager, seen), manager=manager, monitor=monitor)
        async with _client(guard) as client:
            assert (await client.get("/work")).status_code == 200
            probe.set(used=990, limit=LIMIT)
            assert monitor.sample_now().fraction == 0.99
            assert monitor.level is PressureLevel.CRITICAL
            response = await client.get("/work")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            error = _envelope(response)
            assert error["type"] == "overloaded" and "critical" in error["message"]
            assert (await client.get("/healthz")).status_code == 200
        assert seen == [0]
        assert guard.stats().shed == {"pressure": 1, "timeout": 0, "too_large": 0}

    _run(backend, main)


def test_a_shed_request_is_answered_without_receiving_its_body() -> None:
    async def main() -> None:
        _, monitor = _monitor(0.99)
        called: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            called.append("app")

        async def receive() -> dict[str, Any]:
            called.append("receive")
            return {"type": "http.request", "body": b"x" * 100, "more_body": False}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        guard = MemoryGuardMiddleware(app, monitor=monitor)
        scope = {"type": "http", "path": "/upload", "root_path": "", "method": "POST"}
        await guard(scope, receive, send)
        assert called == []
        assert sent[0]["status"] == 503
        assert json.loads(sent[1]["body"])["status"] == "error"

    anyio.run(main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cost_is_reserved_while_the_request_runs_and_released_after(backend: str) -> None:
    async def main() -> None:
        manager = MemoryManager(LIMIT)
        seen: list[int] = []
        guard = MemoryGuardMiddleware(_app(manager, seen), manager=manager, cost={"/work": 300})
        async with _client(guard) as client:
            response = await client.get("/work")
            assert response.status_code == 200 and response.json() == {"usage": 300}
        assert seen == [300]
        assert manager.current_usage == 0 and manager.waiters == 0
        stats = guard.stats()
        assert (stats.in_flight, stats.reserved, stats.reserved_peak) == (0, 0, 300)

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cost_over_the_capacity_gets_413(backend: str) -> None:
    async def main() -> None:
        manager = MemoryManager(LIMIT)
        guard = MemoryGuardMiddleware(
            _app(manager, []), manager=manager, cost=lambda scope: LIMIT + 1
        )
        async with _client(guard) as client:
            response = await client.get("/work")
        assert response.status_code == 413
        assert _envelope(response)["type"] == "payload_too_large"
        assert guard.stats().shed["too_large"] == 1
        assert manager.current_usage == 0

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reservation_timeout_gets_503_and_leaves_nothing(backend: str) -> None:
    async def main() -> None:
        manager = MemoryManager(LIMIT)
        blocker = await manager.acquire(LIMIT)
        guard = MemoryGuardMiddleware(
            _app(manager, []),
            manager=manager,
            cost={"/work": 10},
            reserve_timeout=0.01,
            retry_after=2.5,
        )
        async with _client(guard) as client:
            response = await client.get("/work")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert _envelope(response)["type"] == "overloaded"
        assert guard.stats().shed["timeout"] == 1
        assert manager.waiters == 0 and manager.current_usage == LIMIT
        blocker.release()
        assert manager.current_usage == 0

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_cancelled_mid_response_returns_its_reservation(backend: str) -> None:
    """The server cancels the app when the client goes: nothing may stay reserved."""

    async def main() -> None:
        manager = MemoryManager(LIMIT)
        started = anyio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            started.set()
            await anyio.sleep_forever()

        async def receive() -> dict[str, Any]:
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            await anyio.lowlevel.checkpoint()

        guard = MemoryGuardMiddleware(app, manager=manager, cost={"/stream": 100})
        scope = {"type": "http", "path": "/stream", "root_path": "", "method": "GET"}
        async with anyio.create_task_group() as group:
            group.start_soon(guard, scope, receive, send)
            await started.wait()
            assert manager.current_usage == 100
            group.cancel_scope.cancel()
        assert manager.current_usage == 0 and manager.waiters == 0
        assert guard.stats().in_flight == 0 and guard.stats().reserved == 0

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_cancelled_while_waiting_for_memory_leaves_no_waiter(backend: str) -> None:
    async def main() -> None:
        manager = MemoryManager(LIMIT)
        blocker = await manager.acquire(LIMIT)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("must not run")

        async def send(message: dict[str, Any]) -> None:
            raise AssertionError("nothing is sent for a cancelled request")

        guard = MemoryGuardMiddleware(app, manager=manager, cost={"/x": 10})
        scope = {"type": "http", "path": "/x", "root_path": "", "method": "GET"}
        async with anyio.create_task_group() as group:
            group.start_soon(guard, scope, None, send)
            while manager.waiters == 0:
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        assert manager.waiters == 0 and manager.current_usage == LIMIT
        blocker.release()
        assert guard.stats().in_flight == 0

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_app_error_returns_the_reservation(backend: str) -> None:
    async def main() -> None:
        manager = MemoryManager(LIMIT)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert manager.current_usage == 50
            raise RuntimeError("handler failed")

        guard = MemoryGuardMiddleware(app, manager=manager, cost={"/x": 50})
        scope = {"type": "http", "path": "/x", "root_path": "", "method": "GET"}
        with pytest.raises(RuntimeError, match="handler failed"):
            await guard(scope, None, None)
        assert manager.current_usage == 0

    _run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_paths_are_matched_below_the_mount_point(backend: str) -> None:
    async def main() -> None:
        _, monitor = _monitor(0.99)
        manager = MemoryManager(LIMIT)
        inner = MemoryGuardMiddleware(
            _app(manager, []), manager=manager, monitor=monitor, exempt=("/healthz", "/public/")
        )
        outer = FastAPI()
        outer.mount("/svc", inner)
        async with _client(outer) as client:
            assert (await client.get("/svc/healthz")).status_code == 200
            assert (await client.get("/svc/work")).status_code == 503

    _run(backend, main)


def test_exempt_prefixes_need_a_trailing_slash() -> None:
    guard = MemoryGuardMiddleware(_app(MemoryManager(LIMIT), []), exempt=("/a/", "/b"))
    assert guard._exempted("/a/x") and guard._exempted("/b")
    assert not guard._exempted("/bx") and not guard._exempted("/b/x")


def test_no_warden_found_is_a_clear_error() -> None:
    async def main() -> None:
        guard = MemoryGuardMiddleware(_app(MemoryManager(LIMIT), []))
        scope = {"type": "http", "path": "/work", "root_path": ""}
        with pytest.raises(RuntimeError, match="found no Warden"):
            await guard(scope, None, None)

    anyio.run(main)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"shed_at": 7}, ValueError, "shed_at"),
        ({"shed_at": "high"}, TypeError, "shed_at"),
        ({"reserve_timeout": -1}, ValueError, "reserve_timeout"),
        ({"reserve_timeout": float("nan")}, ValueError, "reserve_timeout"),
        ({"retry_after": -2}, ValueError, "retry_after"),
        ({"cost": {"/x": -1}}, ValueError, "cost['/x']"),
        ({"cost": 5}, TypeError, "cost"),
        ({"exempt": "/healthz"}, TypeError, "exempt"),
        ({"priority": 3}, TypeError, "priority"),
        ({"manager": object()}, TypeError, "manager"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle.replace("[", r"\[")):
        MemoryGuardMiddleware(_app(MemoryManager(LIMIT), []), **kwargs)


# ------------------------------------------------------- lifespan and Depends


def _config() -> WardenConfig:
    return WardenConfig(capacity=LIMIT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lifespan_runs_a_warden_the_middleware_finds(backend: str) -> None:
    probe = StaticProbe(used=100, limit=10 * LIMIT)
    app = FastAPI(lifespan=lifespan(_config(), probe=probe))
    usage: list[int] = []

    @app.get("/work")
    async def work(request: Request) -> dict[str, bool]:
        warden = request.app.state.warden
        usage.append(warden.manager.current_usage)
        return {"same": request.state.warden is warden}

    app.add_middleware(MemoryGuardMiddleware, cost={"/work": 200})
    with TestClient(app, backend=backend) as client:
        response = client.get("/work")
        assert response.status_code == 200 and response.json() == {"same": True}
        warden = app.state.warden
        assert warden.manager.current_usage == 0
    assert usage == [200]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sheds_are_counted_on_the_warden_across_middlewares(backend: str) -> None:
    probe = StaticProbe(used=100, limit=10 * LIMIT)
    app = FastAPI(lifespan=lifespan(_config(), probe=probe))

    @app.get("/work")
    async def work() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(MemoryGuardMiddleware, cost={"/work": 2 * LIMIT})
    app.add_middleware(MemoryGuardMiddleware)
    with TestClient(app, backend=backend) as client:
        warden = app.state.warden
        assert client.get("/work").status_code == 413
        probe.set(used=int(9.9 * LIMIT), limit=10 * LIMIT)
        warden.monitor.sample_now()
        assert client.get("/work").status_code == 503
        assert warden.shed_counts() == {"too_large": 1, "pressure": 1}
        assert warden.report()["shed"] == {"too_large": 1, "pressure": 1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_handler_hands_part_of_its_reservation_to_a_session(backend: str) -> None:
    probe = StaticProbe(used=100, limit=10 * LIMIT)
    config = WardenConfig(capacity=LIMIT, session_budget_timeout=0.5)
    app = FastAPI(lifespan=lifespan(config, probe=probe))
    kept: list[int] = []

    @app.get("/work")
    async def work(request: Request) -> dict[str, int]:
        warden = request.app.state.warden
        reservation = request.state.memwarden_reservation
        assert reservation.nbytes == 800
        # The budget is full: only the reservation can pay for the result now.
        manager = warden.manager
        hog = manager.try_acquire(manager.capacity - manager.current_usage)
        session = await warden.sessions.get_or_create("user", charge_from=reservation)
        await warden.sessions.update_session(
            session.session_id, charge_from=reservation, result=b"r" * 200
        )
        kept.append(warden.sessions.stats().budget_bytes)
        warden.manager.release(hog)
        return {"left": reservation.nbytes}

    app.add_middleware(MemoryGuardMiddleware, cost={"/work": 800})
    with TestClient(app, backend=backend) as client:
        response = client.get("/work")
        assert response.status_code == 200
        warden = app.state.warden
        charged = warden.sessions.stats().budget_bytes
        assert charged == kept[0] >= 200
        assert response.json()["left"] == 800 - charged
        assert warden.manager.current_usage == charged  # the rest went back with the request


def test_request_rejection_off_never_sheds_by_pressure() -> None:
    probe = StaticProbe(used=100, limit=10 * LIMIT)
    config = WardenConfig(capacity=LIMIT, enable_request_rejection=False)
    app = FastAPI(lifespan=lifespan(config, probe=probe))

    @app.get("/work")
    async def work() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(MemoryGuardMiddleware)
    with TestClient(app) as client:
        probe.set(used=int(9.9 * LIMIT), limit=10 * LIMIT)
        app.state.warden.monitor.sample_now()
        assert not app.state.warden.ready
        assert client.get("/work").status_code == 200
        assert app.state.warden.shed_counts() == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_reserve_dependency_holds_bytes_for_the_request(backend: str) -> None:
    probe = StaticProbe(used=100, limit=10 * LIMIT)
    app = FastAPI(lifespan=lifespan(_config(), probe=probe))
    usage: list[int] = []

    async def size(request: Request) -> int:
        return int(request.query_params.get("n", "0"))

    @app.get("/fixed")
    async def fixed(
        allocation: Annotated[Allocation, Depends(reserve_dependency(300))],
    ) -> dict[str, int]:
        usage.append(app.state.warden.manager.current_usage)
        return {"nbytes": allocation.nbytes}

    @app.get("/sized")
    async def sized(
        allocation: Annotated[Allocation, Depends(reserve_dependency(size))],
    ) -> dict[str, int]:
        return {"nbytes": allocation.nbytes}

    with TestClient(app, backend=backend) as client:
        assert client.get("/fixed").json() == {"nbytes": 300}
        assert client.get("/sized", params={"n": 42}).json() == {"nbytes": 42}
        response = client.get("/sized", params={"n": LIMIT + 1})
        assert response.status_code == 413
        assert app.state.warden.manager.current_usage == 0
    assert usage == [300]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reserve_dependency_timeout_answers_503_with_retry_after(backend: str) -> None:
    manager = MemoryManager(LIMIT)
    app = FastAPI()

    held = Depends(reserve_dependency(10, timeout=0.01, manager=manager))

    @app.get("/x")
    async def handler(allocation: Annotated[Allocation, held]) -> dict[str, int]:
        return {"nbytes": allocation.nbytes}

    with TestClient(app, backend=backend) as client:
        blocker = manager.try_acquire(LIMIT)
        assert blocker is not None
        response = client.get("/x")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert manager.waiters == 0
        blocker.release()
        assert client.get("/x").json() == {"nbytes": 10}
    assert manager.current_usage == 0


def test_reserve_dependency_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nbytes"):
        reserve_dependency(-1)
    with pytest.raises(TypeError, match="nbytes"):
        reserve_dependency("10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        reserve_dependency(1, timeout=-1)
    with pytest.raises(TypeError, match="priority"):
        reserve_dependency(1, priority=1.5)  # type: ignore[arg-type]


def test_lifespan_refuses_what_is_not_a_warden_or_config() -> None:
    with pytest.raises(TypeError, match="warden_or_config"):
        lifespan(5)  # type: ignore[arg-type]


# ------------------------------------------------------- a real uvicorn server


async def _serve(app: Any) -> tuple[Any, int, Any]:
    import asyncio

    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, port, task


async def _stop(server: Any, task: Any) -> None:
    server.should_exit = True
    await task


def test_real_server_sheds_and_releases_on_client_disconnect() -> None:
    """Under uvicorn on 127.0.0.1: a 503 with Retry-After, and a reservation freed on disconnect."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def main() -> None:
        probe, monitor = _monitor()
        manager = MemoryManager(LIMIT)
        first_chunk_sent = anyio.Event()

        async def stream(request: Request) -> StreamingResponse:
            async def body() -> Any:
                yield b"first\n"
                first_chunk_sent.set()
                await anyio.sleep_forever()
                yield b"never"

            return StreamingResponse(body())

        app = Starlette(routes=[Route("/stream", stream)])
        guard = MemoryGuardMiddleware(app, manager=manager, monitor=monitor, cost={"/stream": 400})
        finished = anyio.Event()

        async def outer(scope: Any, receive: Any, send: Any) -> None:
            try:
                await guard(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    finished.set()

        server, port, task = await _serve(outer)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async with client.stream("GET", "/stream") as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_bytes():
                        assert chunk.startswith(b"first")
                        break
                    await first_chunk_sent.wait()
                    assert manager.current_usage == 400
                # Leaving the block closes the connection mid-response.
                with anyio.fail_after(10):
                    await finished.wait()
                assert manager.current_usage == 0 and guard.stats().in_flight == 0
                probe.set(used=990, limit=LIMIT)
                monitor.sample_now()
                response = await client.get("/stream")
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                assert response.json()["status"] == "error"
        finally:
            await _stop(server, task)

    anyio.run(main)
