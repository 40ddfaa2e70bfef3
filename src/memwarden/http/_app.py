"""``create_app``: the Starlette application behind ``memwarden.http``.

Routes are plain functions over one :class:`~memwarden.warden.Warden`; every
answer is the shared JSON envelope (:mod:`memwarden._envelope`). Query
parameters are checked against each route's list, so a typo is a 400 naming
the parameter instead of a silently ignored option.
"""

from __future__ import annotations

import gc as pygc
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._envelope import error_body, success_body
from .._validate import check_float, check_int
from ..warden import Warden
from ._events import EventStreams
from ._gate import ApiError, Gate
from ._metrics import MetricsExporter
from ._openapi import openapi_document

__all__ = ["MAX_BODY", "create_app"]

#: Request bodies larger than this get 413.
MAX_BODY = 64 * 1024

#: The environment variable read when ``create_app`` gets no token.
TOKEN_ENV = "MEMWARDEN_API_TOKEN"

_GC_PATH = "/api/packages/memory/garbage-collection"
_UPDATE_PATH = "/api/packages/memory/update-metrics"
_POST_ROUTES = frozenset({_GC_PATH, _UPDATE_PATH})
_PACKAGE_ROUTE_NAMES = {
    "garbage-collection": "POST",
    "update-metrics": "POST",
}

_ERROR_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}

_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


def json_response(data: object, status: int = 200) -> Response:
    """The success envelope around ``data``."""
    return Response(success_body(data), status_code=status, media_type="application/json")


def error_response(
    status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The error envelope with ``status``."""
    return Response(
        error_body(kind, message),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


# -- query parameters ------------------------------------------------------------------


def _query(request: Request, **parsers: Callable[[str, str], Any]) -> dict[str, Any]:
    """Parse the query string: each name once, known to the route, parsed by its parser."""
    params = request.query_params
    found: dict[str, Any] = {}
    for name in params:
        if name not in parsers:
            allowed = ", ".join(sorted(parsers)) or "none"
            raise ApiError(
                400,
                "bad_parameter",
                f"unknown query parameter {name!r} (this route accepts: {allowed})",
            )
        values = params.getlist(name)
        if len(values) > 1:
            raise ApiError(400, "bad_parameter", f"query parameter {name!r} is given twice")
        found[name] = parsers[name](name, values[0])
    return found


def _positive_int(name: str, raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", raw) or int(raw) < 1:
        raise ApiError(
            400,
            "bad_parameter",
            f"query parameter {name!r} must be a positive integer, got {raw!r}",
        )
    return int(raw)


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ApiError(
            400,
            "bad_parameter",
            f"query parameter {name!r} must be a number in [0, 1], got {raw!r}",
        )
    return value


# -- request bodies --------------------------------------------------------------------


async def _body_object(
    request: Request, allowed: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    """An optional JSON object body: empty is ``{}``; bad JSON is 400, bad fields 422."""
    raw = await request.body()
    if not raw:  # no body at all; whitespace alone is not JSON
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(422, "unprocessable", "the request body must be a JSON object")
    parsed: dict[str, Any] = {}
    for key, item in value.items():
        check = allowed.get(key)
        if check is None:
            names = ", ".join(sorted(allowed)) or "none"
            raise ApiError(
                422, "unprocessable", f"unknown field {key!r} in the body (accepted: {names})"
            )
        try:
            parsed[key] = check(item)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, "unprocessable", str(exc)) from None
    return parsed


def _generation(value: Any) -> int:
    # JSON does not tell 2 from 2.0: an integral number is an integer (as JSON Schema says).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_int("generation", value, minimum=0, maximum=2)


# -- the routes ------------------------------------------------------------------------


class _Api:
    """The route handlers over one Warden."""

    def __init__(self, warden: Warden, *, metrics_auth: bool) -> None:
        self.warden = warden
        self.exporter = MetricsExporter(warden)
        self.metrics_auth = metrics_auth

    # health

    def _health(self) -> dict[str, object]:
        return {"ready": self.warden.ready, "level": self.warden.monitor.level.label}

    async def healthz(self, request: Request) -> Response:
        _query(request)
        return json_response(self._health())

    async def readyz(self, request: Request) -> Response:
        _query(request)
        warden = self.warden
        if not warden.ready:
            level = warden.monitor.level.label
            return error_response(
                503,
                "not_ready",
                f"memory pressure is {level}: at or above {warden.shed_level.label} "
                "this replica sheds load and should be drained",
            )
        return json_response(self._health())

    # seed 001

    async def summary(self, request: Request) -> Response:
        _query(request)
        return json_response(self.warden.loader.get_memory_usage_summary())

    async def package(self, request: Request) -> Response:
        _query(request)
        name = str(request.path_params["package_name"])
        method = _PACKAGE_ROUTE_NAMES.get(name)
        if method is not None:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {method}",
                {"Allow": method},
            )
        try:
            info = self.warden.loader.get_package_memory_info(name)
        except (TypeError, ValueError):
            info = None
        if info is None:
            raise ApiError(404, "not_found", f"no package named {name!r} is tracked")
        return json_response(info)

    async def leaks_of_packages(self, request: Request) -> Response:
        params = _query(request, threshold=_fraction)
        threshold = params.get("threshold", 0.1)
        return json_response(self.warden.loader.get_leak_report(threshold))

    async def suggestions(self, request: Request) -> Response:
        _query(request)
        return json_response(self.warden.loader.get_suggestion_report())

    async def garbage_collection(self, request: Request) -> Response:
        _query(request)
        body = await _body_object(request, {"generation": _generation})
        generation = body.get("generation")
        if generation is None:
            # A full collection plus malloc_trim: seed 001's body as the loader makes it.
            result = await anyio.to_thread.run_sync(self.warden.loader.force_garbage_collection)
            result["generation"] = 2
            return json_response(result)
        stats = await anyio.to_thread.run_sync(self.warden.gc.collect_with_stats, generation)
        return json_response(
            {
                "memory_before": stats.memory_before,
                "memory_after": stats.memory_after,
                "memory_freed": stats.memory_before - stats.memory_after,
                "objects_collected": stats.collected,
                "garbage_collection_time": time.time(),
                "duration": stats.duration_ms / 1000.0,
                "generation": generation,
            }
        )

    async def update_metrics(self, request: Request) -> Response:
        _query(request)
        await _body_object(request, {})
        result = await anyio.to_thread.run_sync(self.warden.loader.update_all_memory_metrics)
        return json_response(result)

    # status

    async def memory(self, request: Request) -> Response:
        _query(request)
        warden = self.warden
        sample = warden.monitor.last_sample or warden.monitor.sample_now()
        data: dict[str, Any] = dict(sample.to_dict())
        data["level"] = warden.monitor.level.label
        data["ready"] = warden.ready
        data["shed_level"] = warden.shed_level.label
        data["budget"] = warden.manager.get_stats().to_dict()
        thresholds = warden.monitor.thresholds
        data["thresholds"] = {
            "medium": thresholds.medium,
            "high": thresholds.high,
            "critical": thresholds.critical,
            "hysteresis": thresholds.hysteresis,
        }
        data["shed"] = warden.shed_counts()
        return json_response(data)

    async def history(self, request: Request) -> Response:
        params = _query(request, limit=_positive_int)
        return json_response({"samples": self.warden.memory_history(params.get("limit"))})

    async def budget(self, request: Request) -> Response:
        _query(request)
        manager = self.warden.manager
        data = manager.get_stats().to_dict()
        data["capacity"] = manager.capacity
        return json_response(data)

    async def sessions(self, request: Request) -> Response:
        _query(request)
        return json_response(self.warden.sessions.stats().to_dict())

    async def caches(self, request: Request) -> Response:
        _query(request)
        return json_response(self.warden.caches.report())

    async def pools(self, request: Request) -> Response:
        _query(request)
        pools = dict(self.warden.pools)
        return json_response(
            {"pools": {name: pool.stats().to_dict() for name, pool in pools.items()}}
        )

    async def supervisor(self, request: Request) -> Response:
        _query(request)
        return json_response(self.warden.supervisor.to_dict())

    async def gc(self, request: Request) -> Response:
        _query(request)
        data = dict(self.warden.gc.report())
        data["collections"] = [
            {"generation": generation, **figures}
            for generation, figures in enumerate(pygc.get_stats())
        ]
        return json_response(data)

    async def leaks(self, request: Request) -> Response:
        _query(request)
        watcher = self.warden.leaks
        kinds = watcher.series()
        findings = watcher.findings()
        series = {
            name: {"kind": kinds.get(name, "custom"), **report.to_dict()}
            for name, report in findings.items()
        }
        leaking = sorted(name for name, report in findings.items() if report.is_leak)
        return json_response(
            {"series": series, "leaks": leaking, "total_leaks": len(leaking), "watched": len(kinds)}
        )

    async def metrics(self, request: Request) -> Response:
        _query(request)
        body, content_type = self.exporter.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def openapi(self, request: Request) -> Response:
        _query(request)
        document = openapi_document(
            root_path=str(request.scope.get("root_path", "")), metrics_auth=self.metrics_auth
        )
        return Response(json.dumps(document).encode(), media_type="application/json")

    def routes(self) -> list[BaseRoute]:
        get = ["GET", "HEAD"]
        memory = "/api/packages/memory"
        return [
            Route("/healthz", self.healthz, methods=get),
            Route("/readyz", self.readyz, methods=get),
            Route(f"{memory}/summary", self.summary, methods=get),
            Route(f"{memory}/leaks", self.leaks_of_packages, methods=get),
            Route(f"{memory}/optimization-suggestions", self.suggestions, methods=get),
            Route(_GC_PATH, self.garbage_collection, methods=["POST"]),
            Route(_UPDATE_PATH, self.update_metrics, methods=["POST"]),
            Route(memory + "/{package_name}", self.package, methods=get),
            Route("/api/memory", self.memory, methods=get),
            Route("/api/memory/history", self.history, methods=get),
            Route("/api/budget", self.budget, methods=get),
            Route("/api/sessions", self.sessions, methods=get),
            Route("/api/caches", self.caches, methods=get),
            Route("/api/pools", self.pools, methods=get),
            Route("/api/supervisor", self.supervisor, methods=get),
            Route("/api/gc", self.gc, methods=get),
            Route("/api/leaks", self.leaks, methods=get),
            Route("/metrics", self.metrics, methods=get),
            Route("/api/openapi.json", self.openapi, methods=get),
        ]


# -- errors ----------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.kind, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    kind = _ERROR_KINDS.get(status, "error")
    if status == 404:
        message = f"no route {request.url.path!r}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path!r}"
    else:
        message = str(exc.detail)
    return error_response(status, kind, message, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed to answer this request")


# -- the factory -----------------------------------------------------------------------


def _check_token(token: object) -> str | None:
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            return None
        name = TOKEN_ENV
    else:
        name = "token"
    if not isinstance(token, str):
        raise TypeError(f"{name} must be a str or None, got {type(token).__name__}")
    if not _TOKEN_RE.fullmatch(token):
        # The value is a secret: it is described, never shown.
        raise ValueError(
            f"{name} must be a non-empty string of printable ASCII without spaces "
            f"(got {len(token)} characters)"
        )
    return token


def create_app(
    warden: Warden,
    *,
    token: str | None = None,
    metrics_auth: bool = True,
    post_burst: int = 3,
    post_interval: float = 5.0,
    ping_interval: float = 15.0,
    event_buffer: int = 16,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The HTTP API, metrics and dashboard over ``warden``, as a Starlette application.

    Mount it anywhere (``fastapi_app.mount("/memwarden", create_app(warden))``):
    paths are matched below the mount point. ``token`` (default: the
    ``MEMWARDEN_API_TOKEN`` environment variable) makes every route but
    ``/``, ``/static/...``, ``/healthz`` and ``/readyz`` require
    ``Authorization: Bearer <token>``; ``/metrics`` too unless
    ``metrics_auth=False``. POST routes allow ``post_burst`` calls at once,
    then one every ``post_interval`` seconds (by ``clock``), answering 429
    with ``Retry-After`` beyond that.

    The event stream (``/api/memory/events``) sends a ``: ping`` after
    ``ping_interval`` quiet seconds and buffers at most ``event_buffer``
    events per client (the oldest are dropped for a slow one). The app's
    ``state.events`` (:class:`~memwarden.http.EventStreams`) ends
    every open stream with ``close()``: call it from the server's shutdown
    hook, since uvicorn waits for open responses before shutting down.

    Raises ``TypeError``/``ValueError`` naming the argument for bad input
    (a bad token is described, never shown).
    """
    if not isinstance(warden, Warden):
        raise TypeError(f"warden must be a Warden, got {type(warden).__name__} {warden!r}")
    secret = _check_token(token)
    if not isinstance(metrics_auth, bool):
        raise TypeError(
            f"metrics_auth must be a bool, got {type(metrics_auth).__name__} {metrics_auth!r}"
        )
    check_int("post_burst", post_burst, minimum=1)
    check_float("post_interval", post_interval, positive=True)
    check_float("ping_interval", ping_interval, positive=True)
    check_int("event_buffer", event_buffer, minimum=1)
    if not callable(clock):
        raise TypeError(f"clock must be callable, got {type(clock).__name__} {clock!r}")

    from ._dashboard import dashboard_routes

    api = _Api(warden, metrics_auth=metrics_auth)
    events = EventStreams(warden, ping_interval=float(ping_interval), buffer=event_buffer)
    routes = [
        *api.routes(),
        Route("/api/memory/events", events, methods=["GET"]),
        *dashboard_routes(),
    ]

    def public(path: str) -> bool:
        if path in ("/", "/healthz", "/readyz") or path.startswith("/static/"):
            return True
        return path == "/metrics" and not metrics_auth

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                Gate,
                token=secret,
                public=public,
                max_body=MAX_BODY,
                limited=_POST_ROUTES,
                burst=post_burst,
                interval=post_interval,
                clock=clock,
            )
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.warden = warden
    app.state.events = events
    app.state.metrics = api.exporter
    return app
