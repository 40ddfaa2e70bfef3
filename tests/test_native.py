"""glibc allocator controls: mallopt thresholds and the rate-limited malloc_trim."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memwarden import _native
from memwarden.testing import ManualClock

glibc = pytest.mark.skipif(not _native.malloc_trim_available(), reason="needs glibc")


@glibc
def test_tune_allocator_is_accepted_by_glibc() -> None:
    # Process-wide, so it runs in a child and leaves this interpreter as it was.
    code = (
        "from memwarden import _native;"
        "print(_native.tune_allocator(mmap_threshold=1 << 20, trim_threshold=2 << 20))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_trimmer_waits_for_enough_bytes_and_the_interval() -> None:
    clock = ManualClock(0.0)
    calls: list[float] = []

    def trim() -> bool:
        calls.append(clock())
        return True

    trimmer = _native.Trimmer(threshold=100, interval=1.0, clock=clock, trim=trim)
    assert not trimmer.released(60)
    assert trimmer.released(40)  # 100 bytes: trims
    assert calls == [0.0]
    assert not trimmer.released(500)  # enough bytes, but within the interval
    clock.advance(1.0)
    assert trimmer.released(0)  # the pending 500 bytes are trimmed once the interval passed
    assert calls == [0.0, 1.0] and trimmer.trims == 2
    clock.advance(5.0)
    assert not trimmer.released(99)


def test_without_glibc_everything_reports_it_did_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_resolved", True)
    monkeypatch.setattr(_native, "_trim", None)
    monkeypatch.setattr(_native, "_mallopt", None)
    assert not _native.malloc_trim_available()
    assert not _native.malloc_trim()
    assert not _native.mallopt(_native.M_MMAP_THRESHOLD, 1 << 20)
    assert not _native.tune_allocator(mmap_threshold=1 << 20, trim_threshold=1 << 20)
