"""MemoryMonitor (seeds 001 and 003) over a StaticProbe: no test reads real memory."""

from __future__ import annotations

import sys
import tracemalloc
import types

import pytest

from memwarden.config import WardenConfig
from memwarden.errors import InsufficientMemoryError, MemoryAllocationError
from memwarden.monitor import MemoryMetrics, MemoryMonitor
from memwarden.probes import StaticProbe
from memwarden.units import GiB, MiB


@pytest.fixture
def monitor(probe: StaticProbe) -> MemoryMonitor:
    return MemoryMonitor(WardenConfig(max_memory_percent=80.0), probe=probe)


def test_current_metrics(monitor: MemoryMonitor, probe: StaticProbe) -> None:
    probe.set(used=256 * MiB)
    metrics = monitor.get_current_metrics()
    assert isinstance(metrics, MemoryMetrics)
    assert metrics.total_mb == 1024.0
    assert metrics.used_mb == 256.0
    assert metrics.available_mb == 768.0
    assert metrics.percent_used == 25.0
    assert metrics["percent_used"] == 25.0 and "used_mb" in metrics
    assert dict(metrics) == metrics.to_dict()
    assert set(metrics.to_dict()) == {
        "total_mb", "available_mb", "used_mb", "percent_used", "timestamp"
    }  # fmt: skip
    with pytest.raises(KeyError):
        metrics["nope"]


def test_check_memory_available(monitor: MemoryMonitor, probe: StaticProbe) -> None:
    probe.set(used=512 * MiB)  # 80% of 1 GiB is 819.2 MiB: 307.2 MiB of room
    assert monitor.check_memory_available(300) is True
    assert monitor.check_memory_available(0) is True
    with pytest.raises(InsufficientMemoryError) as info:
        monitor.check_memory_available(310)
    message = str(info.value)
    assert "310.0 MB" in message and "307.2 MB" in message and "1024.0 MB" in message
    assert "80%" in message
    assert isinstance(info.value, MemoryAllocationError)
    probe.set(used=900 * MiB)  # already above the configured share: no room at all
    with pytest.raises(InsufficientMemoryError, match=r"only 0\.0 MB"):
        monitor.check_memory_available(1)


@pytest.mark.parametrize(
    ("value", "exc"), [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_check_memory_available_bad_input(monitor: MemoryMonitor, value: object, exc: type) -> None:
    with pytest.raises(exc, match="required_mb"):
        monitor.check_memory_available(value)  # type: ignore[arg-type]


def test_current_usage_is_process_rss() -> None:
    monitor = MemoryMonitor(probe=StaticProbe(used=0, limit=GiB, rss=300 * MiB))
    assert monitor.get_current_memory_usage() == 300.0


def test_pressure_level_with_hysteresis(monitor: MemoryMonitor, probe: StaticProbe) -> None:
    probe.set_fraction(0.5)
    assert monitor.get_memory_pressure_level() == "low"
    probe.set_fraction(0.86)
    assert monitor.get_memory_pressure_level() == "high"
    probe.set_fraction(0.84)  # within hysteresis of 0.85: stays high
    assert monitor.get_memory_pressure_level() == "high"
    probe.set_fraction(0.82)
    assert monitor.get_memory_pressure_level() == "medium"
    probe.set_fraction(0.99)
    assert monitor.get_memory_pressure_level() == "critical"


def test_history_analysis_delegates_to_leaks(monitor: MemoryMonitor) -> None:
    leak = [(float(i), 1e8 + 1e6 * i) for i in range(60)]
    is_leak, score = monitor.detect_memory_leak(leak)
    assert is_leak and 0.9 < score <= 1.0
    assert monitor.detect_memory_leak([(float(i), 1e8) for i in range(60)]) == (False, 0.0)
    assert monitor.analyze_memory_trend(leak) == "increasing"
    stats = monitor.calculate_memory_statistics(leak)
    assert stats["growth_rate"] == pytest.approx(1e6)
    assert stats["samples"] == 60
    with pytest.raises(TypeError, match="history"):
        monitor.detect_memory_leak("nope")  # type: ignore[arg-type]


def _fake_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"/nonexistent/{name}.py"
    exec(
        "BIG = list(range(20000))\n"
        "class K:\n    def method(self):\n        return 1\n"
        "def f():\n    return 2\n",
        module.__dict__,
    )
    return module


def test_footprint_by_namespace_walk(monitor: MemoryMonitor) -> None:
    name = "memwarden_test_fake_module"
    module = _fake_module(name)
    sys.modules[name] = module
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    try:
        footprint = monitor.get_memory_footprint(name)
        # 20,000 ints in a list: at least the list's pointer array plus the ints.
        assert footprint * MiB > 20000 * 8 + 20000 * 24
        assert footprint < 5.0
        # Imported names are not counted: adding a foreign module changes nothing.
        module.os = sys.modules["os"]
        module.MemoryMonitor = MemoryMonitor
        assert monitor.get_memory_footprint(name) == pytest.approx(footprint, rel=0.01)
    finally:
        del sys.modules[name]
        if was_tracing:
            tracemalloc.start()
    assert monitor.get_memory_footprint(name) == 0.0
    with pytest.raises(TypeError, match="module_name"):
        monitor.get_memory_footprint(None)  # type: ignore[arg-type]


def test_footprint_by_tracemalloc(monitor: MemoryMonitor, tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "mw_traced_mod.py"
    path.write_text("DATA = [bytes(1000) for _ in range(2000)]\n")
    sys.path.insert(0, str(path.parent))
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        import mw_traced_mod  # type: ignore[import-not-found]  # noqa: F401

        footprint = monitor.get_memory_footprint("mw_traced_mod")
        assert 2000 * 1000 / MiB < footprint < 4 * 2000 * 1000 / MiB
    finally:
        if not was_tracing:
            tracemalloc.stop()
        sys.path.remove(str(path.parent))
        sys.modules.pop("mw_traced_mod", None)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="config"):
        MemoryMonitor({"max_memory_percent": 80})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="probe"):
        MemoryMonitor(probe=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="detector"):
        MemoryMonitor(probe=StaticProbe(), detector=1)  # type: ignore[arg-type]


def test_default_probe_is_system_probe() -> None:
    from memwarden.probes import SystemProbe

    assert isinstance(MemoryMonitor().probe, SystemProbe)


# -- seed 003's background check and upkeep -----------------------------------------------


def test_check_classifies_and_runs_the_upkeep_due(probe: StaticProbe) -> None:
    config = WardenConfig(emergency_cleanup_threshold_mb=100.0, proactive_gc_threshold=90.0)
    monitor = MemoryMonitor(config, probe=probe)
    assert not monitor.running and monitor.check() is None and monitor.checks == 1
    probe.set(used=int(0.92 * GiB))  # 82 MiB available: below the emergency line
    assert monitor.check() == "emergency"
    assert monitor.check() is None  # cooled down for 5 s, the collection included
    assert monitor.get_memory_pressure_level() == "high"


def test_background_check_runs_in_a_thread_until_stopped(probe: StaticProbe) -> None:
    import threading

    sampled = threading.Event()

    class Signalling(StaticProbe):
        def sample(self):  # type: ignore[no-untyped-def]
            sampled.set()
            return super().sample()

    config = WardenConfig(enable_background_monitoring=True, monitor_interval=0.01)
    with MemoryMonitor(config, probe=Signalling(used=MiB, limit=GiB)) as monitor:
        assert monitor.running
        assert sampled.wait(10)  # a bound, not a pause: set by the first check
        monitor.start()  # idempotent
    assert not monitor.running and monitor.checks >= 1
    monitor.stop()  # idempotent
