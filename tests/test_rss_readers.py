"""Every module that reports this process' RSS reads it through memwarden._rss."""

from __future__ import annotations

import pathlib

import pytest

import memwarden
from memwarden import gc as mw_gc
from memwarden import modules, monitor, probes, profiler
from memwarden.pressure import PressureLevel
from memwarden.probes import StaticProbe, SystemProbe

SRC = pathlib.Path(memwarden.__file__).parent
FAKE_RSS = 123 * 4096


@pytest.fixture
def fake_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (mw_gc, modules, monitor, probes, profiler):
        monkeypatch.setattr(module, "process_rss", lambda: FAKE_RSS)


@pytest.mark.parametrize("name", ["gc", "modules", "monitor", "probes", "profiler"])
def test_module_has_no_rss_reader_of_its_own(name: str) -> None:
    text = (SRC / f"{name}.py").read_text()
    # psutil still reads other processes' RSS (a ProcessProbe's pid and its children).
    assert "psutil.Process().memory_info().rss" not in text
    assert "def _rss()" not in text and "def _default_rss" not in text
    assert "PAGE_SIZE" not in text  # statm is parsed by memwarden._rss alone


def test_gc_statistics_use_the_shared_reader(fake_rss: None) -> None:
    stats = mw_gc.GCController().collect_with_stats(0)
    assert stats.memory_before == FAKE_RSS
    assert stats.memory_after == FAKE_RSS


def test_monitor_falls_back_to_the_shared_reader(fake_rss: None) -> None:
    mon = monitor.MemoryMonitor(probe=StaticProbe(used=1, limit=2))
    assert mon.get_current_memory_usage() == FAKE_RSS / (1 << 20)


def test_profiler_context_and_report_use_the_shared_reader(fake_rss: None) -> None:
    with profiler.memory_efficient_context(trim=False) as ctx:
        pass
    assert ctx.result.memory_at_enter == FAKE_RSS
    assert ctx.result.memory_after == FAKE_RSS
    report = profiler.MemoryProfiler().get_memory_report()
    assert report["process_memory"]["rss"] == FAKE_RSS


def test_system_probe_reports_the_shared_reading(fake_rss: None) -> None:
    with SystemProbe(psi=False) as probe:
        assert probe.sample().rss == FAKE_RSS


def test_lazy_loader_defaults_to_the_shared_reader(fake_rss: None) -> None:
    loader = modules.LazyLoader(pressure_level=lambda: PressureLevel.LOW, trace_imports=False)
    result = loader.force_garbage_collection()
    assert result["memory_before"] == FAKE_RSS == result["memory_after"]


def test_lazy_loader_counts_an_unreadable_rss_as_zero() -> None:
    loader = modules.LazyLoader(
        pressure_level=lambda: PressureLevel.LOW, trace_imports=False, rss=lambda: None
    )
    assert loader.force_garbage_collection()["memory_freed"] == 0
