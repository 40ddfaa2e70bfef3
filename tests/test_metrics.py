"""GET /metrics: the Prometheus names of API.md, live values, per-app registries, multiprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memwarden import WardenConfig
from memwarden.http import create_app
from memwarden.http._metrics import METRIC_NAMES
from memwarden.testing import StaticProbe
from memwarden.warden import Warden

LIMIT = 1 << 30

# As API.md lists them; counters are named with their _total suffix.
API_NAMES = {
    "memwarden_memory_used_bytes",
    "memwarden_memory_limit_bytes",
    "memwarden_memory_available_bytes",
    "memwarden_process_resident_bytes",
    "memwarden_pressure_level",
    "memwarden_pressure_transitions_total",
    "memwarden_budget_capacity_bytes",
    "memwarden_budget_reserved_bytes",
    "memwarden_budget_unmanaged_bytes",
    "memwarden_budget_waiters",
    "memwarden_budget_wait_seconds",
    "memwarden_budget_timeouts_total",
    "memwarden_budget_evictions_total",
    "memwarden_requests_shed_total",
    "memwarden_cache_bytes",
    "memwarden_cache_hits_total",
    "memwarden_cache_misses_total",
    "memwarden_cache_evictions_total",
    "memwarden_pool_in_use",
    "memwarden_pool_idle",
    "memwarden_sessions",
    "memwarden_gc_collections_total",
    "memwarden_leak_score",
    "memwarden_build_info",
}


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    yield


def make_warden(used: int = LIMIT // 10) -> tuple[Warden, StaticProbe]:
    probe = StaticProbe(used=used, limit=LIMIT)
    warden = Warden(WardenConfig(monitor_use_psi=False), probe=probe)
    _BUILT.append(warden)
    return warden, probe


# Wardens these tests build but never run: their GC pause hook (in gc.callbacks) is
# removed when the test ends, so no later test sees it.
_BUILT: list[Warden] = []


@pytest.fixture(autouse=True)
def close_unrun_wardens() -> Iterator[None]:
    yield
    while _BUILT:
        _BUILT.pop().gc.close()


def client(app: object, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://test",
        headers=headers,
    )


def exposed_names(text: str) -> set[str]:
    """Family names as a scraper writes them: counters with their _total suffix."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def scrape(app: object, **headers: str) -> str:
    async with client(app, **headers) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_the_exported_names_are_those_of_api_md() -> None:
    assert set(METRIC_NAMES) == API_NAMES


async def test_every_name_is_exported_and_parses() -> None:
    warden, _ = make_warden()
    text = await scrape(create_app(warden))
    assert exposed_names(text) == API_NAMES
    assert value(text, "memwarden_memory_used_bytes") == LIMIT // 10
    assert value(text, "memwarden_memory_limit_bytes") == LIMIT
    assert value(text, "memwarden_pressure_level") == 0
    assert value(text, "memwarden_budget_capacity_bytes") == warden.manager.capacity
    assert value(text, "memwarden_build_info", version="0.1.0") == 1
    assert value(text, "memwarden_budget_wait_seconds_count") == 0


async def test_budget_waits_are_observed() -> None:
    warden, _ = make_warden()
    app = create_app(warden)
    async with warden.manager.reserve(10):
        pass
    text = await scrape(app)
    assert value(text, "memwarden_budget_wait_seconds_count") == 1
    assert value(text, "memwarden_budget_wait_seconds_bucket", le="0.005") == 1


async def test_values_are_read_live_at_scrape_time() -> None:
    warden, probe = make_warden()
    app = create_app(warden)
    cache = warden.caches.create_lru_cache("users", capacity=8)
    pool = warden.create_pool("conns", object, max_size=2)
    await warden.sessions.create_session(user="a")
    cache.put("k", "v")
    cache.get("k")
    cache.get("missing")
    warden.record_shed("pressure")
    warden.record_shed("pressure")
    warden.record_shed("too_large")
    for t in range(60):
        warden.leaks.record("orders.bytes", 1000.0 + t, 1e6 + 1e6 * t)
    await warden.leaks.acheck(sample=False)
    probe.set(used=int(LIMIT * 0.9))
    warden.monitor.sample_now()
    lease = await pool.acquire()
    text = await scrape(app)
    assert value(text, "memwarden_memory_used_bytes") == int(LIMIT * 0.9)
    assert value(text, "memwarden_pressure_level") == 2
    assert value(text, "memwarden_pressure_transitions_total", to="high") == 1
    assert value(text, "memwarden_pressure_transitions_total", to="low") == 0
    assert value(text, "memwarden_requests_shed_total", reason="pressure") == 2
    assert value(text, "memwarden_requests_shed_total", reason="too_large") == 1
    assert value(text, "memwarden_requests_shed_total", reason="timeout") == 0
    assert value(text, "memwarden_cache_hits_total", cache="users") == 1
    assert value(text, "memwarden_cache_misses_total", cache="users") == 1
    assert value(text, "memwarden_cache_bytes", cache="users") > 0
    assert value(text, "memwarden_pool_in_use", pool="conns") == 1
    assert value(text, "memwarden_pool_idle", pool="conns") == 0
    assert value(text, "memwarden_sessions") == 1
    assert value(text, "memwarden_leak_score", series="orders.bytes") > 0.5
    assert value(text, "memwarden_budget_reserved_bytes") == warden.manager.current_usage
    await pool.release(lease)
    text = await scrape(app)
    assert value(text, "memwarden_pool_idle", pool="conns") == 1


async def test_each_app_has_its_own_registry() -> None:
    first, _ = make_warden(used=LIMIT // 10)
    second, _ = make_warden(used=LIMIT // 5)
    one, two = create_app(first), create_app(second)
    assert value(await scrape(one), "memwarden_memory_used_bytes") == LIMIT // 10
    assert value(await scrape(two), "memwarden_memory_used_bytes") == LIMIT // 5
    # A second app over the same Warden is fine too (no duplicate registration).
    assert value(await scrape(create_app(first)), "memwarden_memory_used_bytes") == LIMIT // 10


async def test_openmetrics_when_asked() -> None:
    warden, _ = make_warden()
    async with client(create_app(warden)) as http:
        response = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_metrics_need_the_token_unless_metrics_auth_is_off() -> None:
    warden, _ = make_warden()
    async with client(create_app(warden, token="tkn")) as anonymous:
        response = await anonymous.get("/metrics")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert exposed_names(await scrape(create_app(warden, token="tkn"), Authorization="Bearer tkn"))
    public = create_app(warden, token="tkn", metrics_auth=False)
    assert exposed_names(await scrape(public)) == API_NAMES
    async with client(public) as anonymous:
        assert (await anonymous.get("/api/memory")).status_code == 401


async def test_unknown_query_parameters_are_refused() -> None:
    warden, _ = make_warden()
    async with client(create_app(warden)) as http:
        response = await http.get("/metrics", params={"name[]": "x"})
    assert response.status_code == 400
    assert "'name[]'" in response.json()["error"]["message"]


# -- multiprocess mode, in subprocesses: prometheus-client picks its mode at import ----------

WORKER = textwrap.dedent(
    """
    import sys, anyio, httpx
    from prometheus_client import multiprocess
    from memwarden import WardenConfig
    from memwarden.http import create_app
    from memwarden.testing import StaticProbe
    from memwarden.warden import Warden

    role, used, hits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for pid in sys.argv[4:]:
        multiprocess.mark_process_dead(int(pid))  # what gunicorn's child_exit hook does
    probe = StaticProbe(used=used, limit=1 << 30)
    warden = Warden(WardenConfig(monitor_use_psi=False), probe=probe)
    app = create_app(warden)
    assert app.state.metrics.multiprocess
    if hits:
        cache = warden.caches.create_lru_cache("users", capacity=4)
        cache.put("k", b"x" * (1000 * hits))
        for _ in range(hits):
            cache.get("k")
        warden.record_shed("pressure")
        warden.create_pool("conns", object, max_size=2)
        for t in range(60):
            warden.leaks.record("orders.bytes", 1000.0 + t, 1e6 + 1e6 * t)
        warden.leaks.check(sample=False)
    warden.monitor.sample_now()  # the sampling loop writes the files

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as http:
            response = await http.get("/metrics")
            assert response.status_code == 200
            return response.text

    text = anyio.run(main)
    import os
    print(os.getpid())
    print(warden.caches.get_stats("users").nbytes if hits else 0)
    if role == "scraper":
        print(text)
    """
)


def run_worker(directory: Path, *args: object) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MEMWARDEN_API_TOKEN"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_adds_counters_and_keeps_live_gauges_of_live_workers(
    tmp_path: Path,
) -> None:
    first, _ = run_worker(tmp_path, "worker", 300 << 20, 3).split()
    _, second_bytes = run_worker(tmp_path, "worker", 200 << 20, 4).split()
    text = run_worker(tmp_path, "scraper", 100 << 20, 0, first).split("\n", 2)[2]
    assert exposed_names(text) == API_NAMES
    # Counters add up over every worker, gone or alive.
    assert value(text, "memwarden_cache_hits_total", cache="users") == 7
    assert value(text, "memwarden_requests_shed_total", reason="pressure") == 2
    # livesum gauges: only the second worker's cache is counted (the first was marked dead).
    assert value(text, "memwarden_cache_bytes", cache="users") == int(second_bytes)
    # livemax gauges: the largest value among live workers (the second one's 200 MiB).
    assert value(text, "memwarden_memory_used_bytes") == 200 << 20
    assert value(text, "memwarden_memory_limit_bytes") == 1 << 30
    assert value(text, "memwarden_build_info", version="0.1.0") == 1
