"""memwarden.http: every route, the envelope, the codes, the token, body limits, rate limits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from memwarden import PressureLevel, WardenConfig
from memwarden.http import create_app
from memwarden.testing import ManualClock, StaticProbe
from memwarden.warden import Warden

LIMIT = 1 << 30
TOKEN = "s3cret-token"

# The keys of seed 001's JSON examples, route by route.
SUMMARY_KEYS = {
    "total_current_memory",
    "total_peak_memory",
    "total_memory_footprint",
    "packages_with_leaks",
    "memory_trends",
    "memory_pressure_levels",
    "system_memory_pressure",
    "total_packages",
    "loaded_packages",
}
PACKAGE_KEYS = {"package_name", "memory_metrics", "is_loaded", "status"}
METRICS_KEYS = {
    "current_memory_usage",
    "peak_memory_usage",
    "memory_footprint",
    "memory_leak_score",
    "memory_trend",
    "memory_pressure_level",
    "memory_growth_rate",
    "average_memory_usage",
    "memory_variance",
    "memory_check_count",
    "last_memory_check",
    "memory_history_length",
}
LEAKS_KEYS = {"leaks", "total_leaks", "threshold", "detection_time"}
SUGGESTIONS_KEYS = {
    "suggestions",
    "total_suggestions",
    "high_severity",
    "medium_severity",
    "low_severity",
    "generation_time",
}
SUGGESTION_KEYS = {"type", "package_name", "severity", "message", "recommendation", "value"}
GC_KEYS = {
    "memory_before",
    "memory_after",
    "memory_freed",
    "objects_collected",
    "garbage_collection_time",
}
UPDATE_KEYS = {"message", "update_time"}

GET_ROUTES = [
    "/healthz",
    "/readyz",
    "/api/packages/memory/summary",
    "/api/packages/memory/leaks",
    "/api/packages/memory/optimization-suggestions",
    "/api/memory",
    "/api/memory/history",
    "/api/budget",
    "/api/sessions",
    "/api/caches",
    "/api/pools",
    "/api/supervisor",
    "/api/gc",
    "/api/leaks",
]
POST_ROUTES = [
    "/api/packages/memory/garbage-collection",
    "/api/packages/memory/update-metrics",
]
SAMPLE_KEYS = {"timestamp", "used", "limit", "available", "rss", "source", "psi_some_avg10"}


def make_warden(probe: StaticProbe | None = None, **config: Any) -> Warden:
    warden = Warden(
        WardenConfig(monitor_use_psi=False, **config),
        probe=probe if probe is not None else StaticProbe(used=LIMIT // 10, limit=LIMIT),
    )
    _BUILT.append(warden)
    return warden


# Wardens these tests build but never run: their GC pause hook (in gc.callbacks) is
# removed when the test ends, so no later test sees it.
_BUILT: list[Warden] = []


@pytest.fixture(autouse=True)
def close_unrun_wardens() -> Iterator[None]:
    yield
    while _BUILT:
        _BUILT.pop().gc.close()


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    )


def data_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "data"}, body
    assert body["status"] == "success"
    assert isinstance(body["data"], dict)
    return body["data"]  # type: ignore[no-any-return]


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
def probe() -> StaticProbe:
    return StaticProbe(used=LIMIT // 10, limit=LIMIT)


@pytest.fixture
def warden(probe: StaticProbe) -> Warden:
    return make_warden(probe)


@pytest.fixture
async def api(warden: Warden) -> AsyncIterator[httpx.AsyncClient]:
    async with client(create_app(warden)) as c:
        yield c


@pytest.fixture
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    yield


pytestmark = pytest.mark.usefixtures("no_env_token")


# -- every route ------------------------------------------------------------------------


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_every_get_route_answers_the_success_envelope(
    api: httpx.AsyncClient, path: str
) -> None:
    response = await api.get(path)
    assert response.status_code == 200
    data_of(response)


@pytest.mark.parametrize("path", [*GET_ROUTES, "/api/packages/memory/json"])
async def test_an_unknown_query_parameter_is_a_400_naming_it(
    api: httpx.AsyncClient, path: str
) -> None:
    error = error_of(await api.get(path, params={"colour": "blue"}), 400)
    assert error["type"] == "bad_parameter"
    assert "'colour'" in error["message"]


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_an_unknown_query_parameter_on_a_post_route_is_a_400(
    api: httpx.AsyncClient, path: str
) -> None:
    error = error_of(await api.post(path, params={"now": "1"}), 400)
    assert "'now'" in error["message"]


async def test_a_parameter_given_twice_is_a_400(api: httpx.AsyncClient) -> None:
    error = error_of(await api.get("/api/memory/history?limit=1&limit=2"), 400)
    assert "'limit'" in error["message"]


async def test_memory_is_the_sample_flat_with_level_and_budget(
    api: httpx.AsyncClient, warden: Warden
) -> None:
    data = data_of(await api.get("/api/memory"))
    assert set(data) >= SAMPLE_KEYS
    assert data["used"] == LIMIT // 10 and data["limit"] == LIMIT
    assert data["level"] == "low"
    stats = warden.manager.get_stats().to_dict()
    assert set(stats) <= set(data["budget"])
    assert data["budget"]["total_allocated"] == warden.manager.capacity
    assert data["thresholds"]["critical"] == warden.monitor.thresholds.critical
    assert data["shed"] == {}
    warden.record_shed("pressure")
    assert data_of(await api.get("/api/memory"))["shed"] == {"pressure": 1}


async def test_history_is_oldest_first_with_budget_figures_and_a_limit(
    api: httpx.AsyncClient, warden: Warden, probe: StaticProbe
) -> None:
    for used in (200, 300, 400):
        probe.set(used=used << 20)
        warden.monitor.sample_now()
    samples = data_of(await api.get("/api/memory/history"))["samples"]
    assert [s["used"] for s in samples] == [LIMIT // 10, 200 << 20, 300 << 20, 400 << 20]
    for sample in samples:
        assert SAMPLE_KEYS | {"managed", "unmanaged", "cache"} <= set(sample)
    newest = data_of(await api.get("/api/memory/history", params={"limit": "2"}))["samples"]
    assert [s["used"] for s in newest] == [300 << 20, 400 << 20]


@given(raw=st.text(max_size=8))
async def test_history_limit_is_a_positive_integer_or_a_400(raw: str) -> None:
    async with client(create_app(make_warden())) as api:
        response = await api.get("/api/memory/history", params={"limit": raw})
    if raw.isascii() and raw.isdigit() and int(raw) >= 1:
        assert response.status_code == 200
    else:
        assert "'limit'" in error_of(response, 400)["message"]


async def test_status_routes_carry_the_components_figures(
    api: httpx.AsyncClient, warden: Warden
) -> None:
    cache = warden.caches.create_lru_cache("users", capacity=4)
    cache.put("a", 1)
    cache.get("a")
    warden.create_pool("conns", object, max_size=2)
    await warden.sessions.create_session(user="x")

    budget = data_of(await api.get("/api/budget"))
    assert {"managed", "unmanaged", "limit", "evictable", "capacity", "waiters"} <= set(budget)
    sessions = data_of(await api.get("/api/sessions"))
    assert sessions["sessions"] == 1
    caches = data_of(await api.get("/api/caches"))
    assert caches["caches"]["users"]["hits"] == 1
    pools = data_of(await api.get("/api/pools"))
    assert pools["pools"]["conns"]["max_size"] == 2
    supervisor = data_of(await api.get("/api/supervisor"))
    assert {"name", "running", "tasks"} <= set(supervisor)
    collector = data_of(await api.get("/api/gc"))
    assert [c["generation"] for c in collector["collections"]] == [0, 1, 2]
    assert "thresholds" in collector
    leaks = data_of(await api.get("/api/leaks"))
    assert leaks["total_leaks"] == 0 and leaks["leaks"] == []
    assert leaks["watched"] >= 2


async def test_leaks_lists_judged_series_by_name(api: httpx.AsyncClient, warden: Warden) -> None:
    for t in range(60):
        warden.leaks.record("orders.bytes", 1000.0 + t, 1e6 + 1e6 * t)
    await warden.leaks.acheck(sample=False)
    leaks = data_of(await api.get("/api/leaks"))
    assert leaks["leaks"] == ["orders.bytes"]
    assert leaks["series"]["orders.bytes"]["is_leak"] is True
    assert leaks["series"]["orders.bytes"]["kind"] == "custom"


# -- seed 001 ---------------------------------------------------------------------------


async def test_seed_summary_has_every_key_of_the_seed(
    api: httpx.AsyncClient, warden: Warden
) -> None:
    warden.loader.load("json")
    data = data_of(await api.get("/api/packages/memory/summary"))
    assert set(data) >= SUMMARY_KEYS
    assert set(data["memory_trends"]) >= {"increasing", "decreasing", "stable"}
    assert set(data["memory_pressure_levels"]) >= {"low", "medium", "high", "critical"}
    assert data["total_packages"] == 1 and data["loaded_packages"] == 1


async def test_seed_package_info_and_404_for_an_unknown_package(
    api: httpx.AsyncClient, warden: Warden
) -> None:
    warden.loader.load("json")
    data = data_of(await api.get("/api/packages/memory/json"))
    assert set(data) >= PACKAGE_KEYS
    assert set(data["memory_metrics"]) >= METRICS_KEYS
    assert data["package_name"] == "json" and data["is_loaded"] is True
    for name in ("torch_not_here", "not a name", "-x"):
        error = error_of(await api.get(f"/api/packages/memory/{name}"), 404)
        assert error["type"] == "not_found"


async def test_seed_leaks_with_a_threshold(api: httpx.AsyncClient) -> None:
    data = data_of(await api.get("/api/packages/memory/leaks", params={"threshold": "0.25"}))
    assert set(data) >= LEAKS_KEYS
    assert data["threshold"] == 0.25
    default = data_of(await api.get("/api/packages/memory/leaks"))
    assert default["threshold"] == 0.1


@pytest.mark.parametrize("raw", ["", "abc", "-0.1", "1.5", "nan", "inf", "0x1"])
async def test_seed_leaks_refuses_a_threshold_outside_0_1(api: httpx.AsyncClient, raw: str) -> None:
    error = error_of(await api.get("/api/packages/memory/leaks", params={"threshold": raw}), 400)
    assert error["type"] == "bad_parameter" and "'threshold'" in error["message"]


@given(value=st.floats(allow_nan=True, allow_infinity=True))
async def test_seed_leaks_threshold_property(value: float) -> None:
    async with client(create_app(make_warden())) as api:
        response = await api.get("/api/packages/memory/leaks", params={"threshold": repr(value)})
    if 0.0 <= value <= 1.0:
        assert data_of(response)["threshold"] == value
    else:
        error_of(response, 400)


async def test_seed_optimization_suggestions(
    api: httpx.AsyncClient, probe: StaticProbe, warden: Warden
) -> None:
    probe.set(used=int(LIMIT * 0.9))
    warden.monitor.sample_now()
    data = data_of(await api.get("/api/packages/memory/optimization-suggestions"))
    assert set(data) >= SUGGESTIONS_KEYS
    assert data["total_suggestions"] == len(data["suggestions"]) >= 1
    for suggestion in data["suggestions"]:
        assert set(suggestion) >= SUGGESTION_KEYS


async def test_seed_garbage_collection_and_update_metrics(api: httpx.AsyncClient) -> None:
    data = data_of(await api.post("/api/packages/memory/garbage-collection"))
    assert set(data) >= GC_KEYS
    assert data["memory_freed"] == data["memory_before"] - data["memory_after"]
    young = data_of(
        await api.post("/api/packages/memory/garbage-collection", json={"generation": 0})
    )
    assert set(young) >= GC_KEYS and young["generation"] == 0
    update = data_of(await api.post("/api/packages/memory/update-metrics"))
    assert set(update) >= UPDATE_KEYS


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 422),
        (b'{"generation": 5}', 422),
        (b'{"generation": "2"}', 422),
        (b'{"colour": 1}', 422),
    ],
)
async def test_post_bodies_are_checked(api: httpx.AsyncClient, body: bytes, status: int) -> None:
    response = await api.post("/api/packages/memory/garbage-collection", content=body)
    error = error_of(response, status)
    assert error["type"] == ("bad_request" if status == 400 else "unprocessable")


# -- health and readiness ---------------------------------------------------------------


async def test_readyz_is_503_not_ready_at_the_shedding_level(
    api: httpx.AsyncClient, probe: StaticProbe, warden: Warden
) -> None:
    assert data_of(await api.get("/readyz")) == {"ready": True, "level": "low"}
    probe.set(used=int(LIMIT * 0.99))
    warden.monitor.sample_now()
    assert warden.monitor.level is PressureLevel.CRITICAL
    error = error_of(await api.get("/readyz"), 503)
    assert error["type"] == "not_ready" and "critical" in error["message"]
    assert data_of(await api.get("/healthz")) == {"ready": False, "level": "critical"}


async def test_readyz_follows_a_configured_shedding_level(probe: StaticProbe) -> None:
    warden = make_warden(probe, shed_level=PressureLevel.HIGH)
    async with client(create_app(warden)) as api:
        probe.set(used=int(LIMIT * 0.9))
        warden.monitor.sample_now()
        assert "high" in error_of(await api.get("/readyz"), 503)["message"]


# -- errors -------------------------------------------------------------------------------


async def test_unknown_route_is_a_404_envelope(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("/api/nothing"), 404)["type"] == "not_found"


async def test_wrong_method_is_a_405_envelope_with_allow(api: httpx.AsyncClient) -> None:
    response = await api.delete("/api/memory")
    assert error_of(response, 405)["type"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
    for path in POST_ROUTES:
        response = await api.get(path)
        assert error_of(response, 405)["type"] == "method_not_allowed"
        assert response.headers["allow"] == "POST"


async def test_a_body_over_64_kib_is_a_413(api: httpx.AsyncClient) -> None:
    path = "/api/packages/memory/update-metrics"
    response = await api.post(path, content=b" " * (64 * 1024 + 1))
    assert error_of(response, 413)["type"] == "payload_too_large"
    at_limit = b"{}" + b" " * (64 * 1024 - 2)  # valid JSON, exactly 64 KiB
    assert (await api.post(path, content=at_limit)).status_code == 200
    assert error_of(await api.post(path, content=b"   "), 400)["type"] == "bad_request"


async def test_a_streamed_body_is_counted_as_it_arrives(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * 4096

    response = await api.post("/api/packages/memory/update-metrics", content=chunks())
    assert "content-length" not in response.request.headers
    assert error_of(response, 413)["type"] == "payload_too_large"


async def test_post_routes_are_rate_limited_with_retry_after(warden: Warden) -> None:
    clock = ManualClock(100.0)
    app = create_app(warden, post_burst=2, post_interval=10.0, clock=clock)
    path = "/api/packages/memory/update-metrics"
    async with client(app) as api:
        assert (await api.post(path)).status_code == 200
        assert (await api.post(path)).status_code == 200
        refused = await api.post(path)
        assert error_of(refused, 429)["type"] == "rate_limited"
        assert refused.headers["retry-after"] == "10"
        clock.advance(9.5)
        refused = await api.post(path)
        assert refused.headers["retry-after"] == "1"  # whole seconds, at least 1
        # Each route has its own bucket; GET routes are never limited.
        assert (await api.post("/api/packages/memory/garbage-collection")).status_code == 200
        assert (await api.get("/api/memory")).status_code == 200
        clock.advance(0.5)
        assert (await api.post(path)).status_code == 200


# -- the token ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["argument", "environment"])
async def test_a_token_guards_every_route_but_the_public_ones(
    warden: Warden, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "argument":
        app = create_app(warden, token=TOKEN)
    else:
        monkeypatch.setenv("MEMWARDEN_API_TOKEN", TOKEN)
        app = create_app(warden)
    async with client(app) as anonymous:
        for path in [*GET_ROUTES[2:], "/api/openapi.json", "/metrics", "/api/nothing"]:
            response = await anonymous.get(path)
            error = error_of(response, 401)
            assert error["type"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        for path in POST_ROUTES:
            error_of(await anonymous.post(path), 401)
        for path in ("/healthz", "/readyz", "/", "/static/dashboard.js"):
            assert (await anonymous.get(path)).status_code == 200, path
    async with client(app, Authorization="Bearer wrong") as wrong:
        response = await wrong.get("/api/memory")
        error_of(response, 401)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    async with client(app, Authorization=f"Basic {TOKEN}") as basic:
        error_of(await basic.get("/api/memory"), 401)
    async with client(app, Authorization=f"bearer {TOKEN}") as good:
        for path in GET_ROUTES:
            assert (await good.get(path)).status_code == 200, path


@pytest.mark.parametrize("name", ["token", "access_token"])
async def test_a_token_in_the_url_is_refused(warden: Warden, name: str) -> None:
    async with client(create_app(warden, token=TOKEN)) as api:
        response = await api.get("/api/memory", params={name: TOKEN})
        error = error_of(response, 400)
        assert "URL" in error["message"] and TOKEN not in error["message"]


# -- mounting -----------------------------------------------------------------------------


async def test_mounted_inside_fastapi_paths_are_relative_to_the_mount(warden: Warden) -> None:
    outer = FastAPI()

    @outer.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    outer.mount("/memwarden", create_app(warden, token=TOKEN))
    async with client(outer) as anonymous:
        assert (await anonymous.get("/hello")).json() == {"hello": "world"}
        assert data_of(await anonymous.get("/memwarden/healthz"))["ready"] is True
        assert (await anonymous.get("/memwarden/")).status_code == 200
        error_of(await anonymous.get("/memwarden/api/memory"), 401)
    async with client(outer, Authorization=f"Bearer {TOKEN}") as api:
        assert data_of(await api.get("/memwarden/api/memory"))["level"] == "low"
        data_of(await api.get("/memwarden/api/packages/memory/summary"))
        error_of(await api.get("/memwarden/api/nothing"), 404)


# -- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"token": 5}, TypeError, "token"),
        ({"token": ""}, ValueError, "token"),
        ({"token": "has space"}, ValueError, "token"),
        ({"metrics_auth": "yes"}, TypeError, "metrics_auth"),
        ({"post_burst": 0}, ValueError, "post_burst"),
        ({"post_interval": -1.0}, ValueError, "post_interval"),
        ({"clock": 3}, TypeError, "clock"),
    ],
)
def test_bad_arguments_name_themselves(
    warden: Warden, kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        create_app(warden, **kwargs)


def test_a_bad_token_is_described_never_shown(warden: Warden) -> None:
    with pytest.raises(ValueError) as caught:
        create_app(warden, token="two words")
    assert "two words" not in str(caught.value)


def test_the_warden_must_be_a_warden() -> None:
    with pytest.raises(TypeError, match="warden"):
        create_app(object())  # type: ignore[arg-type]


def test_a_bad_environment_token_names_the_variable(
    warden: Warden, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMWARDEN_API_TOKEN", "a b")
    with pytest.raises(ValueError, match="MEMWARDEN_API_TOKEN"):
        create_app(warden)


def test_importing_memwarden_does_not_import_the_http_stack() -> None:
    code = (
        "import sys, memwarden; "
        "heavy = [m for m in ('starlette', 'prometheus_client', 'memwarden.http') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
