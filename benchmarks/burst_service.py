"""The service the burst benchmark runs: an imaging-style endpoint under uvicorn.

``GET /work?mb=N&hold=MS&user=U`` decodes (allocates and touches) ``N`` MB with
numpy in a worker thread (as an imaging service decodes off the event loop, so
the loop keeps accepting and answering while pages are touched), holds it
across an ``MS`` ms await, and keeps a result copy of 1/64 of
it in the user's session and in a cache. The variant comes from the
``BURST_VARIANT`` environment variable:

- ``naive``: no memwarden; sessions in a dict, results in a 256-entry dict cache.
- ``memwarden``: configured as docs/guides/web-service.md tells a user: a Warden
  run by ``memwarden.asgi.lifespan``, ``MemoryGuardMiddleware`` with a per-route
  cost (the bytes a request touches), per-user sessions through
  ``warden.sessions.get_or_create`` and a byte-weighted cache from the Warden.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MB = 1_000_000
RESULT_SHARE = 64

VARIANT = os.environ.get("BURST_VARIANT", "naive")


def _size(request: Request) -> tuple[int, float, str]:
    mb = int(request.query_params.get("mb", "20"))
    hold = float(request.query_params.get("hold", "100")) / 1000
    return mb * MB, hold, request.query_params.get("user", "u0")


def _decode(nbytes: int) -> np.ndarray[Any, Any]:
    # np.ones writes every byte, so every page is touched, as a real decode does.
    return np.ones(nbytes, dtype=np.uint8)


def _naive_app() -> Starlette:
    sessions: dict[str, np.ndarray[Any, Any]] = {}
    cache: OrderedDict[int, np.ndarray[Any, Any]] = OrderedDict()
    counter = iter(range(1 << 62))

    async def work(request: Request) -> JSONResponse:
        nbytes, hold, user = _size(request)
        image = await anyio.to_thread.run_sync(_decode, nbytes)
        await anyio.sleep(hold)
        result = image[: nbytes // RESULT_SHARE].copy()
        del image
        sessions[user] = result
        cache[next(counter)] = result
        while len(cache) > 256:
            cache.popitem(last=False)
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/work", work), Route("/healthz", healthz)])


def _request_cost(scope: dict[str, Any]) -> int | None:
    if scope["path"] != "/work":
        return None
    query = parse_qs(scope.get("query_string", b"").decode())
    nbytes = int(query.get("mb", ["20"])[0]) * MB
    return nbytes + nbytes // RESULT_SHARE


def _memwarden_app() -> Any:
    from memwarden.asgi import MemoryGuardMiddleware, lifespan

    counter = iter(range(1 << 62))

    async def work(request: Request) -> JSONResponse:
        began = time.monotonic()
        warden = request.app.state.warden
        nbytes, hold, user = _size(request)
        image = await anyio.to_thread.run_sync(_decode, nbytes)
        await anyio.sleep(hold)
        result = image[: nbytes // RESULT_SHARE].copy()
        del image
        # The request reserved the result's bytes too: hand them to the session
        # (no second wait for memory while holding the request's).
        reservation = request.state.memwarden_reservation
        session = await warden.sessions.get_or_create(user, charge_from=reservation)
        await warden.sessions.update_session(
            session.session_id, charge_from=reservation, result=result
        )
        warden.caches.get_cache("results").put(next(counter), result)
        arrived = request.scope["state"]["arrived"]
        return JSONResponse(
            {
                "ok": True,
                "queued": began - arrived,
                "served": time.monotonic() - began,
                "arrived_wall": request.scope["state"]["arrived_wall"],
                "done_wall": time.time(),
            }
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/work", work), Route("/healthz", healthz)],
        lifespan=_with_results_cache(lifespan()),
    )
    guarded = MemoryGuardMiddleware(app, cost=_request_cost)

    async def timed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Stamp arrival before the guard, so the service can say how long it queued.
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state["arrived"] = time.monotonic()
            state["arrived_wall"] = time.time()
        await guarded(scope, receive, send)

    return timed


def _with_results_cache(inner: Any) -> Any:
    @contextlib.asynccontextmanager
    async def run(app: Any) -> Any:
        async with inner(app) as state:
            warden = state["warden"]
            warden.caches.create_lru_cache("results", max_bytes=64 * MB)
            yield state

    return run


app: Any = _memwarden_app() if VARIANT == "memwarden" else _naive_app()
