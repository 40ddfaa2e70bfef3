"""The fleet kit in deploy/: Grafana dashboard, alert rules, Kubernetes example, example service.

Every metric name the dashboard and the rules use must be one the app exports
(read from a live app's /metrics with prometheus_client's parser), so a renamed
metric cannot leave a silent panel or an alert that never fires.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import memwarden
from memwarden import Warden, WardenConfig
from memwarden.http import create_app
from memwarden.testing import StaticProbe
from memwarden.units import MiB

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
GRAFANA = DEPLOY / "grafana" / "memwarden-dashboard.json"
RULES = DEPLOY / "prometheus" / "memwarden-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "memwarden-alerts.test.yml"
KUBERNETES = DEPLOY / "kubernetes" / "memwarden.yaml"
EXAMPLE = DEPLOY / "example"

# Words of PromQL and Grafana's variables that look like names but are not metrics.
_METRIC = re.compile(r"\bmemwarden_[a-z0-9_]+")


def _config() -> WardenConfig:
    return WardenConfig(
        monitor_use_psi=False, allocator_tuning=False, gc_optimization_enabled=False
    )


async def _exported_names() -> set[str]:
    """Every sample name a busy app's /metrics exposes (labelled families included)."""
    probe = StaticProbe(used=300 * MiB, limit=1024 * MiB)
    async with Warden(_config(), probe=probe) as warden:
        cache: Any = warden.caches.create_lru_cache("thumbnails", max_bytes=8 * MiB)
        cache["a"] = b"x" * 1024
        cache.get("b")
        pool = warden.create_pool("db", object, max_size=2)
        async with pool.acquire():
            pass
        await warden.sessions.create_session(cart=b"x")
        warden.record_shed("pressure")
        for _ in range(12):
            warden.sample_series()
        await warden.check_leaks()  # a finding per series: memwarden_leak_score{series}
        probe.set_fraction(0.9)
        warden.monitor.sample_now()
        async with warden.manager.reserve(MiB):
            pass
        app = create_app(warden)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.update(sample.name for sample in family.samples)
    return names


def _names_in(text: str) -> set[str]:
    return set(_METRIC.findall(text))


def _grafana_exprs() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str | dict):
                    exprs.append(json.dumps(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return exprs


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


async def test_every_metric_the_kit_uses_is_exported() -> None:
    exported = await _exported_names()
    # API.md's list, so a metric the contract names but the app lost is caught here too.
    assert {
        "memwarden_memory_used_bytes",
        "memwarden_pressure_level",
        "memwarden_requests_shed_total",
        "memwarden_leak_score",
        "memwarden_budget_wait_seconds_bucket",
    } <= exported
    grafana = {name for expr in _grafana_exprs() for name in _names_in(expr)}
    rules = {name for rule in _rules() for name in _names_in(rule["expr"])}
    assert grafana and rules
    assert grafana - exported == set()
    assert rules - exported == set()
    # The rules' own unit tests feed only real series too.
    assert _names_in(RULE_TESTS.read_text()) - exported == set()


def test_the_alerts_the_issue_asks_for() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert rules["MemwardenPressureHigh"]["for"] == "5m"
    assert "memwarden_pressure_level >= 2" in rules["MemwardenPressureHigh"]["expr"]
    assert rules["MemwardenPressureCritical"]["for"] == "1m"
    assert "memwarden_pressure_level >= 3" in rules["MemwardenPressureCritical"]["expr"]
    assert "memwarden_requests_shed_total" in rules["MemwardenShedding"]["expr"]
    assert "memwarden_memory_limit_bytes" in rules["MemwardenNearLimit"]["expr"]
    assert "memwarden_leak_score" in rules["MemwardenLeakSuspected"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run(
            ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_grafana_dashboard_is_importable() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "memwarden" and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Every query honours the job and instance pickers.
            assert 'job=~"$job"' in target["expr"], panel["title"]


def _kubernetes() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text())}


def test_the_kubernetes_example() -> None:
    deployment = _kubernetes()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    assert container["readinessProbe"]["httpGet"]["path"].endswith("/readyz")
    assert container["livenessProbe"]["httpGet"]["path"].endswith("/healthz")
    env = {item["name"]: item for item in container["env"]}
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    volume = volumes[mounts[multiproc]]
    # On disk, not tmpfs: tmpfs pages count against the memory limit.
    assert "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory"
    downward = [item["valueFrom"] for item in env.values() if "valueFrom" in item]
    assert any("fieldRef" in ref for ref in downward)
    limit_refs = [ref["resourceFieldRef"] for ref in downward if "resourceFieldRef" in ref]
    assert limit_refs and limit_refs[0]["resource"] == "limits.memory"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/memwarden/metrics"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, StaticProbe]]:
    """deploy/example/service.py, its Warden on a StaticProbe instead of this machine."""
    probe = StaticProbe(used=200 * MiB, limit=1024 * MiB)
    real = memwarden.Warden
    monkeypatch.delenv("MEMWARDEN_API_TOKEN", raising=False)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(memwarden, "Warden", lambda: real(_config(), probe=probe))
    yield _load(EXAMPLE / "service.py", "memwarden_example_service"), probe
    sys.modules.pop("memwarden_example_service", None)


async def test_the_example_service_serves_the_probes_and_sheds_at_critical(
    example: tuple[ModuleType, StaticProbe],
) -> None:
    service, probe = example
    kubernetes = _kubernetes()["Deployment"]["spec"]["template"]
    (container,) = kubernetes["spec"]["containers"]
    readiness = container["readinessProbe"]["httpGet"]["path"]
    liveness = container["livenessProbe"]["httpGet"]["path"]
    metrics = kubernetes["metadata"]["annotations"]["prometheus.io/path"]
    async with service.warden:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get(readiness)).status_code == 200
            assert (await client.get(liveness)).status_code == 200
            assert (await client.get("/work")).status_code == 200
            scraped = (await client.get(metrics)).text
            assert "memwarden_pressure_level" in scraped
            probe.set_fraction(0.97)
            service.warden.monitor.sample_now()
            assert (await client.get(readiness)).status_code == 503
            assert (await client.get("/work")).status_code == 503
            assert (await client.get(liveness)).status_code == 200


def test_the_gunicorn_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"stale")
    conf = _load(EXAMPLE / "gunicorn.conf.py", "memwarden_example_gunicorn_conf")
    conf.on_starting(None)
    assert list(tmp_path.iterdir()) == []

    class Worker:
        pid = 123

    conf.child_exit(None, Worker())
    assert conf.worker_class.endswith("UvicornWorker")
