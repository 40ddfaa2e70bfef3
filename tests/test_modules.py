"""LazyLoader: loading, per-package attribution, leaks, suggestions, and seed 001's JSON shapes."""

from __future__ import annotations

import importlib
import itertools
import math
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import memwarden.profiler as profiler_module
from memwarden._packages import package_of
from memwarden.modules import LazyLoader, get_lazy_loader
from memwarden.pressure import PressureLevel
from memwarden.testing import ManualClock

# Seed 001's JSON bodies, key by key.
SEED_METRICS = {
    "current_memory_usage", "peak_memory_usage", "memory_footprint", "memory_leak_score",
    "memory_trend", "memory_pressure_level", "memory_growth_rate", "average_memory_usage",
    "memory_variance", "memory_check_count", "last_memory_check", "memory_history_length",
}  # fmt: skip
SEED_SUMMARY = {
    "total_current_memory", "total_peak_memory", "total_memory_footprint", "packages_with_leaks",
    "memory_trends", "memory_pressure_levels", "system_memory_pressure", "total_packages",
    "loaded_packages",
}  # fmt: skip
SEED_LEAK = {
    "package_name", "leak_score", "memory_trend", "memory_growth_rate", "current_memory_usage",
    "peak_memory_usage", "memory_footprint", "memory_check_count", "last_memory_check",
}  # fmt: skip
SEED_SUGGESTION = {"type", "package_name", "severity", "message", "recommendation", "value"}

_counter = itertools.count()

ALPHA = """
DATA = [bytes(1000) for _ in range(500)]
HOARD = []

def grow(n):
    HOARD.extend(bytes(1000) for _ in range(n))
"""


@pytest.fixture(autouse=True)
def _restore_tracemalloc() -> Iterator[None]:
    """Each test starts untraced and leaves tracemalloc and the refcount as it found them."""
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    yield
    assert profiler_module._tracing.refs == 0, "a test left a tracing reference held"
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    if was_tracing:
        tracemalloc.start()


@pytest.fixture
def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write throwaway packages under tmp_path; removes them from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(body: str = "", *, submodules: dict[str, str] | None = None) -> str:
        name = f"mwtest_pkg{next(_counter)}"
        root = tmp_path / name
        root.mkdir()
        (root / "__init__.py").write_text(textwrap.dedent(body))
        for sub, text in (submodules or {}).items():
            (root / f"{sub}.py").write_text(textwrap.dedent(text))
        importlib.invalidate_caches()
        made.append(name)
        return name

    yield make
    for module in list(sys.modules):
        if any(module == n or module.startswith(n + ".") for n in made):
            del sys.modules[module]


def _loader(clock: ManualClock, level: PressureLevel = PressureLevel.LOW, **kw: Any) -> LazyLoader:
    rss = itertools.count(10_000_000, 4096)
    return LazyLoader(pressure_level=lambda: level, clock=clock, rss=lambda: next(rss), **kw)


# --- loading ------------------------------------------------------------------------------


def test_load_measures_the_import_footprint(clock: ManualClock, make_package: Any) -> None:
    name = make_package(ALPHA)
    loader = _loader(clock)
    module = loader.load(name)
    assert module is sys.modules[name] and len(module.DATA) == 500
    assert loader.is_loaded(name)
    assert not tracemalloc.is_tracing(), "tracing was on for the import only"
    info = loader.get_package_memory_info(name)
    assert info is not None
    assert info["status"] == "loaded" and info["is_loaded"] is True
    assert info["already_imported"] is False and info["last_access"] == clock()
    metrics = info["memory_metrics"]
    assert metrics["memory_footprint"] >= 500 * 1000
    assert metrics["import_rss_delta"] == 4096  # one step of the fake RSS counter
    assert metrics["current_memory_usage"] is None, "never measured yet"
    assert loader.load(name) is module, "a second load returns the same module"


def test_tracing_switched_on_by_the_user_stays_on(clock: ManualClock, make_package: Any) -> None:
    tracemalloc.start()
    name = make_package(ALPHA)
    loader = _loader(clock)
    loader.load(name)
    assert tracemalloc.is_tracing()
    info = loader.get_package_memory_info(name)
    assert info is not None and info["memory_metrics"]["memory_footprint"] >= 500 * 1000


def test_load_without_trace_imports_has_no_footprint(clock: ManualClock, make_package: Any) -> None:
    name = make_package(ALPHA)
    loader = _loader(clock, trace_imports=False)
    loader.load(name)
    info = loader.get_package_memory_info(name)
    assert info is not None and info["memory_metrics"]["memory_footprint"] is None
    assert info["memory_metrics"]["import_rss_delta"] == 4096


def test_already_imported_module_is_reported_as_such(clock: ManualClock) -> None:
    loader = _loader(clock)
    assert loader.load("json") is sys.modules["json"]
    info = loader.get_package_memory_info("json")
    assert info is not None and info["already_imported"] is True
    assert info["memory_metrics"]["memory_footprint"] is None
    assert loader.is_loaded("json")


def test_failed_import_is_recorded_and_raised(clock: ManualClock) -> None:
    loader = _loader(clock)
    with pytest.raises(ModuleNotFoundError):
        loader.load("mwtest_does_not_exist")
    info = loader.get_package_memory_info("mwtest_does_not_exist")
    assert info is not None and info["status"] == "failed" and info["is_loaded"] is False
    assert "ModuleNotFoundError" in info["error"]


def test_unload_reports_what_was_freed(clock: ManualClock, make_package: Any) -> None:
    name = make_package(ALPHA, submodules={"extra": "X = 1\n"})
    loader = _loader(clock)
    loader.load(name)
    importlib.import_module(f"{name}.extra")
    assert loader.unload(name) is True
    assert name not in sys.modules and f"{name}.extra" not in sys.modules
    assert not loader.is_loaded(name)
    info = loader.get_package_memory_info(name)
    assert info is not None and info["status"] == "unloaded"
    record = info["last_unload"]
    assert record["modules_removed"] == 2 and record["still_referenced"] is False
    assert set(record) == {
        "modules_removed", "objects_collected", "memory_freed", "traced_freed",
        "still_referenced", "unload_time",
    }  # fmt: skip
    assert loader.unload(name) is False, "already unloaded"
    assert loader.unload("mwtest_never_registered") is False


def test_unload_of_a_submodule_detaches_it_from_its_parent(
    clock: ManualClock, make_package: Any
) -> None:
    name = make_package("", submodules={"sub": "X = 1\n"})
    loader = _loader(clock)
    loader.load(f"{name}.sub")
    parent = sys.modules[name]
    assert hasattr(parent, "sub")
    assert loader.unload(f"{name}.sub") is True
    assert not hasattr(parent, "sub") and f"{name}.sub" not in sys.modules
    info = loader.get_package_memory_info(f"{name}.sub")
    assert info is not None and info["last_unload"]["still_referenced"] is False


def test_unload_says_when_the_module_is_still_referenced(
    clock: ManualClock, make_package: Any
) -> None:
    name = make_package("X = 1\n")
    loader = _loader(clock)
    kept = loader.load(name)
    assert loader.unload(name) is True
    info = loader.get_package_memory_info(name)
    assert info is not None and info["last_unload"]["still_referenced"] is True
    assert kept.X == 1


@pytest.mark.parametrize("bad", ["", "1abc", "a..b", "a.", "a-b", " a"])
def test_bad_names_are_rejected(clock: ManualClock, bad: str) -> None:
    loader = _loader(clock)
    for method in (loader.register, loader.load, loader.unload, loader.is_loaded):
        with pytest.raises(ValueError, match="name"):
            method(bad)
    with pytest.raises(TypeError, match="name"):
        loader.register(5)  # type: ignore[arg-type]
    assert loader.registered() == []


def test_constructor_rejects_bad_input(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="footprint_threshold"):
        LazyLoader(footprint_threshold=-1)
    with pytest.raises(ValueError, match="idle_after"):
        LazyLoader(idle_after=math.nan)
    with pytest.raises(ValueError, match="leak_threshold"):
        LazyLoader(leak_threshold=1.5)
    with pytest.raises(ValueError, match="history"):
        LazyLoader(history=1)
    with pytest.raises(TypeError, match="pressure_level"):
        LazyLoader(pressure_level=3)  # type: ignore[arg-type]


# --- attribution and history --------------------------------------------------------------


def test_update_attributes_traced_memory_to_packages(clock: ManualClock, make_package: Any) -> None:
    alpha = make_package(ALPHA)
    beta = make_package("SMALL = [1, 2, 3]\n")
    loader = _loader(clock)
    loader.start_tracking()
    try:
        loader.load(alpha)
        loader.load(beta)
        loader.register("mwtest_not_loaded")
        body = loader.update_all_memory_metrics()
    finally:
        loader.stop_tracking()
    assert body["message"] == "Memory metrics updated for all packages"
    assert body["tracing"] is True and body["packages"] == 3
    alpha_info = loader.get_package_memory_info(alpha)
    beta_info = loader.get_package_memory_info(beta)
    idle_info = loader.get_package_memory_info("mwtest_not_loaded")
    assert alpha_info and beta_info and idle_info
    a, b = alpha_info["memory_metrics"], beta_info["memory_metrics"]
    assert a["current_memory_usage"] >= 500 * 1000
    assert b["current_memory_usage"] < 50_000
    assert idle_info["memory_metrics"]["current_memory_usage"] == 0
    assert a["peak_memory_usage"] == a["current_memory_usage"]
    assert a["memory_check_count"] == 1 and a["memory_history_length"] == 1
    summary = loader.get_memory_usage_summary()
    assert summary["total_packages"] == 3 and summary["loaded_packages"] == 2
    assert summary["total_current_memory"] == a["current_memory_usage"] + b["current_memory_usage"]


def test_nested_registrations_do_not_double_count(clock: ManualClock, make_package: Any) -> None:
    name = make_package("", submodules={"sub": "BLOB = [bytes(1000) for _ in range(300)]\n"})
    loader = _loader(clock)
    loader.start_tracking()
    try:
        loader.register(name)
        loader.load(f"{name}.sub")
        loader.load(name)
        loader.update_all_memory_metrics()
    finally:
        loader.stop_tracking()
    sub = loader.get_package_memory_info(f"{name}.sub")
    top = loader.get_package_memory_info(name)
    assert sub and top
    assert sub["memory_metrics"]["current_memory_usage"] >= 300 * 1000
    assert top["memory_metrics"]["current_memory_usage"] < 300 * 1000


def test_update_without_tracing_changes_nothing(clock: ManualClock, make_package: Any) -> None:
    name = make_package("X = 1\n")
    loader = _loader(clock, trace_imports=False)
    loader.load(name)
    body = loader.update_all_memory_metrics()
    assert body["tracing"] is False and body["packages"] == 0
    assert "not tracing" in body["message"] and isinstance(body["update_time"], float)
    info = loader.get_package_memory_info(name)
    assert info is not None and info["memory_metrics"]["memory_check_count"] == 0


def test_history_is_bounded(clock: ManualClock, make_package: Any) -> None:
    name = make_package("X = 1\n")
    loader = _loader(clock, history=5)
    loader.start_tracking()
    try:
        loader.load(name)
        for _ in range(8):
            clock.advance(1.0)
            loader.update_all_memory_metrics()
    finally:
        loader.stop_tracking()
    info = loader.get_package_memory_info(name)
    assert info is not None
    assert info["memory_metrics"]["memory_history_length"] == 5
    assert info["memory_metrics"]["memory_check_count"] == 8


def _grow_and_sample(loader: LazyLoader, module: Any, clock: ManualClock, steps: int) -> None:
    for _ in range(steps):
        module.grow(100)  # 100 kB more every 10 s: 10 kB/s, steady
        clock.advance(10.0)
        loader.update_all_memory_metrics()


def test_leaking_package_is_detected_with_seed_shapes(
    clock: ManualClock, make_package: Any
) -> None:
    leaky = make_package(ALPHA)
    steady = make_package(ALPHA)
    loader = _loader(clock)
    loader.start_tracking()
    try:
        module = loader.load(leaky)
        loader.load(steady)
        _grow_and_sample(loader, module, clock, 20)
    finally:
        loader.stop_tracking()
    leaks = loader.detect_memory_leaks(threshold=0.1)
    assert [leak["package_name"] for leak in leaks] == [leaky]
    leak = leaks[0]
    assert set(leak) == SEED_LEAK
    assert leak["leak_score"] >= 0.1 and leak["memory_trend"] == "increasing"
    assert leak["memory_growth_rate"] == pytest.approx(10_000, rel=0.3)
    assert leak["memory_check_count"] == 20

    report = loader.get_leak_report(0.1)
    assert set(report) == {"leaks", "total_leaks", "threshold", "detection_time"}
    assert report["total_leaks"] == 1 and report["threshold"] == 0.1

    summary = loader.get_memory_usage_summary()
    assert set(summary) - {"tracing"} == SEED_SUMMARY
    assert summary["packages_with_leaks"] == [
        {
            "package_name": leaky,
            "leak_score": leak["leak_score"],
            "trend": "increasing",
            "growth_rate": leak["memory_growth_rate"],
        }
    ]
    assert summary["memory_trends"] == {"increasing": 1, "decreasing": 0, "stable": 1}
    assert summary["memory_pressure_levels"] == {"low": 2, "medium": 0, "high": 0, "critical": 0}
    assert summary["system_memory_pressure"] == "low"

    info = loader.get_package_memory_info(leaky)
    assert info is not None
    assert set(info) >= {"package_name", "memory_metrics", "is_loaded", "status"}
    assert set(info["memory_metrics"]) >= SEED_METRICS
    assert info["memory_metrics"]["memory_trend"] == "increasing"
    assert info["memory_metrics"]["average_memory_usage"] > 0

    kinds = {(s["type"], s["package_name"]) for s in loader.get_memory_optimization_suggestions()}
    assert ("memory_leak", leaky) in kinds and ("memory_leak", steady) not in kinds
    assert loader.detect_memory_leaks(threshold=1.0) == [] or leak["leak_score"] == 1.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, "0.1", None])
def test_detect_leaks_rejects_bad_thresholds(clock: ManualClock, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="threshold"):
        _loader(clock).detect_memory_leaks(threshold=bad)


# --- suggestions --------------------------------------------------------------------------


def test_high_footprint_suggested_only_when_idle(clock: ManualClock, make_package: Any) -> None:
    name = make_package(ALPHA)
    loader = _loader(clock, footprint_threshold=100_000, idle_after=60.0)
    loader.load(name)
    assert loader.get_memory_optimization_suggestions() == [], "used just now"
    clock.advance(61.0)
    (suggestion,) = loader.get_memory_optimization_suggestions()
    assert set(suggestion) == SEED_SUGGESTION
    assert suggestion["type"] == "high_memory_footprint" and suggestion["package_name"] == name
    assert suggestion["severity"] == "high"  # > 4x the threshold
    assert suggestion["value"] >= 500 * 1000 and "MB" in suggestion["message"]
    loader.load(name)  # a use resets the idle clock
    assert loader.get_memory_optimization_suggestions() == []


@pytest.mark.parametrize("level", [PressureLevel.HIGH, PressureLevel.CRITICAL])
def test_high_pressure_suggestion(clock: ManualClock, level: PressureLevel) -> None:
    loader = _loader(clock, level=level)
    (suggestion,) = loader.get_memory_optimization_suggestions()
    assert suggestion["type"] == "high_pressure" and suggestion["package_name"] is None
    assert suggestion["severity"] == "high" and suggestion["value"] == level.label
    assert loader.get_memory_usage_summary()["system_memory_pressure"] == level.label
    loader.set_pressure_level_provider(lambda: PressureLevel.MEDIUM)
    assert loader.get_memory_optimization_suggestions() == []


def test_broken_pressure_provider_counts_as_low(clock: ManualClock) -> None:
    def broken() -> PressureLevel:
        raise OSError("no /proc")

    loader = LazyLoader(pressure_level=broken, clock=clock)
    assert loader.get_memory_usage_summary()["system_memory_pressure"] == "low"


def test_cache_and_pool_suggestions(clock: ManualClock) -> None:
    loader = _loader(clock, footprint_threshold=1_000_000)
    loader.register_stats_provider(
        "sessions", "cache",
        lambda: {"hit_rate": 0.05, "size": 900, "nbytes": 5_000_000, "capacity": 1000},
    )  # fmt: skip
    loader.register_stats_provider(
        "good", "cache", lambda: {"hit_rate": 0.9, "size": 900, "nbytes": 5e6, "capacity": 1000}
    )
    loader.register_stats_provider(
        "db", "pool", lambda: {"size": 10, "idle": 8, "in_use_peak": 2, "max_size": 10}
    )
    loader.register_stats_provider(
        "busy", "pool", lambda: {"size": 3, "idle": 0, "in_use_peak": 3, "max_size": 10}
    )
    loader.register_stats_provider("partial", "pool", lambda: {"size": 3})

    def broken() -> dict[str, float]:
        raise RuntimeError("gone")

    loader.register_stats_provider("broken", "cache", broken)
    suggestions = loader.get_memory_optimization_suggestions()
    by_name = {s["package_name"]: s for s in suggestions}
    assert set(by_name) == {"sessions", "db"}
    cache = by_name["sessions"]
    assert set(cache) == SEED_SUGGESTION
    assert cache["type"] == "oversized_cache" and cache["value"] == 5_000_000
    assert cache["severity"] == "high" and "5%" in cache["message"]
    pool = by_name["db"]
    assert pool["type"] == "oversized_pool" and pool["value"] == 8 and pool["severity"] == "medium"
    report = loader.get_suggestion_report()
    assert set(report) == {
        "suggestions", "total_suggestions", "high_severity", "medium_severity", "low_severity",
        "generation_time",
    }  # fmt: skip
    assert (report["total_suggestions"], report["high_severity"], report["medium_severity"]) == (
        2, 1, 1,
    )  # fmt: skip
    assert [s["severity"] for s in report["suggestions"]] == ["high", "medium"]
    assert loader.unregister_stats_provider("db") is True
    assert loader.unregister_stats_provider("db") is False


def test_register_stats_provider_rejects_bad_input(clock: ManualClock) -> None:
    loader = _loader(clock)
    with pytest.raises(ValueError, match="kind"):
        loader.register_stats_provider("x", "db", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        loader.register_stats_provider("", "cache", dict)
    with pytest.raises(TypeError, match="provider must be callable, got int 5"):
        loader.register_stats_provider("x", "cache", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a non-empty str, got int 7"):
        loader.register_stats_provider(7, "cache", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="provider must be callable, got int 5"):
        loader.set_pressure_level_provider(5)  # type: ignore[arg-type]
    assert loader.get_memory_optimization_suggestions() == []


def test_garbage_collection_body(clock: ManualClock) -> None:
    values = iter([200, 150])
    loader = LazyLoader(pressure_level=lambda: PressureLevel.LOW, rss=lambda: next(values))
    body = loader.force_garbage_collection()
    assert set(body) - {"duration"} == {
        "memory_before", "memory_after", "memory_freed", "objects_collected",
        "garbage_collection_time",
    }  # fmt: skip
    assert (body["memory_before"], body["memory_after"], body["memory_freed"]) == (200, 150, 50)


# --- the singleton and the filename -> package map ---------------------------------------


def test_get_lazy_loader_is_one_instance_across_threads() -> None:
    seen: list[LazyLoader] = []
    threads = [threading.Thread(target=lambda: seen.append(get_lazy_loader())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(loader is get_lazy_loader() for loader in seen) and len(seen) == 8


def test_package_of_rules(tmp_path: Path) -> None:
    assert package_of("/usr/lib/python3/site-packages/numpy/core/x.py") == "numpy"
    assert package_of("/venv/lib/python3.11/dist-packages/six.py") == "six"
    assert package_of("/v/site-packages/_cffi_backend.cpython-311-x86_64-linux-gnu.so") == (
        "_cffi_backend"
    )
    assert package_of("<frozen importlib._bootstrap>") == "importlib"
    assert package_of(importlib.import_module("json.decoder").__file__ or "") == "json"
    assert package_of(str(tmp_path / "nowhere.py")) is None
    assert package_of("<unknown>") is None


class LoaderMachine(RuleBasedStateMachine):
    """register / load / unload / is_loaded agree with a simple model of each package's state."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.names = [f"mwtest_sm{next(_counter)}" for _ in range(3)]
        for name in self.names:
            root = Path(self.tmp.name) / name
            root.mkdir()
            (root / "__init__.py").write_text("VALUE = 1\n")
        sys.path.insert(0, self.tmp.name)
        importlib.invalidate_caches()
        self.loader = LazyLoader(pressure_level=lambda: PressureLevel.LOW, trace_imports=False)
        self.model: dict[str, str] = {}

    @rule(i=st.integers(0, 2))
    def register(self, i: int) -> None:
        name = self.names[i]
        self.loader.register(name)
        self.model.setdefault(name, "registered")

    @rule(i=st.integers(0, 2))
    def load(self, i: int) -> None:
        name = self.names[i]
        assert self.loader.load(name).VALUE == 1
        self.model[name] = "loaded"

    @rule(i=st.integers(0, 2))
    def unload(self, i: int) -> None:
        name = self.names[i]
        assert self.loader.unload(name) == (self.model.get(name) == "loaded")
        if self.model.get(name) == "loaded":
            self.model[name] = "unloaded"

    @invariant()
    def agrees(self) -> None:
        assert set(self.loader.registered()) == set(self.model)
        for name in self.names:
            assert self.loader.is_loaded(name) == (self.model.get(name) == "loaded")
            assert (name in sys.modules) == (self.model.get(name) == "loaded")
            info = self.loader.get_package_memory_info(name)
            assert (info is None) == (name not in self.model)
            if info is not None:
                assert info["status"] == self.model[name]
        summary = self.loader.get_memory_usage_summary()
        assert summary["total_packages"] == len(self.model)
        assert summary["loaded_packages"] == sum(1 for s in self.model.values() if s == "loaded")

    def teardown(self) -> None:
        for name in self.names:
            sys.modules.pop(name, None)
        sys.path.remove(self.tmp.name)
        self.tmp.cleanup()


TestLoaderMachine = LoaderMachine.TestCase
TestLoaderMachine.settings = settings(max_examples=30, stateful_step_count=20)


def test_concurrent_loads_of_one_package_share_the_module(
    clock: ManualClock, make_package: Any
) -> None:
    name = make_package("import time\ntime.sleep(0.05)\nX = object()\n")
    loader = _loader(clock)
    start = threading.Barrier(4)
    modules: list[Any] = []

    def worker() -> None:
        start.wait()
        modules.append(loader.load(name))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(modules) == 4 and all(m is sys.modules[name] for m in modules)
    info = loader.get_package_memory_info(name)
    assert info is not None and info["status"] == "loaded" and loader.is_loaded(name)
