"""SystemProbe, ProcessProbe and detect_memory_limit against fake /proc and cgroup trees."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from memwarden.probes import (
    MemorySample,
    Probe,
    ProcessProbe,
    SystemProbe,
    detect_memory_limit,
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
RAM_KIB = 16 * 1024 * 1024  # 16 GiB
V1_UNLIMITED = "9223372036854771712"


class FakeHost:
    """A fake root with /proc and /sys/fs/cgroup files."""

    def __init__(self, root: Path, *, total_kib: int = RAM_KIB, available_kib: int = RAM_KIB // 4):
        self.root = root
        self.meminfo(total_kib, available_kib)
        self.write("/proc/self/statm", "1000 250 100 10 0 200 0\n")

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)  # truncates in place: open descriptors see the new text
        return path

    def meminfo(self, total_kib: int, available_kib: int) -> None:
        self.write(
            "/proc/meminfo",
            f"MemTotal:       {total_kib} kB\nMemFree:        1000 kB\n"
            f"MemAvailable:   {available_kib} kB\nBuffers:        10 kB\n",
        )

    @property
    def system_used(self) -> int:
        return (RAM_KIB - RAM_KIB // 4) * KIB

    def v2(self, path: str = "/app") -> None:
        self.write("/proc/self/cgroup", f"0::{path}\n")
        self.write(
            "/proc/self/mountinfo",
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n",
        )

    def v2_level(
        self, path: str, *, limit: str, current: int, inactive_file: int, file: int = 0
    ) -> None:
        base = f"/sys/fs/cgroup{path}".rstrip("/")
        self.write(f"{base}/memory.max", limit + "\n")
        self.write(f"{base}/memory.current", f"{current}\n")
        self.write(
            f"{base}/memory.stat",
            f"anon {current - file}\nfile {file}\nkernel 0\nshmem {MIB}\n"
            f"inactive_anon 0\nactive_anon 0\ninactive_file {inactive_file}\n"
            f"active_file {file - inactive_file}\n",
        )

    def v1(self, path: str = "/docker/abc") -> None:
        self.write("/proc/self/cgroup", f"9:name=systemd:/\n4:memory:{path}\n0::/\n")
        self.write(
            "/proc/self/mountinfo",
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )

    def v1_level(self, path: str, *, limit: str, usage: int, inactive_file: int) -> None:
        base = f"/sys/fs/cgroup/memory{path}".rstrip("/")
        self.write(f"{base}/memory.limit_in_bytes", limit + "\n")
        self.write(f"{base}/memory.usage_in_bytes", f"{usage}\n")
        self.write(
            f"{base}/memory.stat",
            f"cache {4 * MIB}\nrss 1\nshmem {MIB}\ninactive_file 1\n"
            f"hierarchical_memory_limit {V1_UNLIMITED}\ntotal_cache {8 * MIB}\n"
            f"total_shmem {MIB}\ntotal_inactive_file {inactive_file}\n",
        )


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def _probe(host: FakeHost, **kw: object) -> SystemProbe:
    return SystemProbe(root=str(host.root), **kw)  # type: ignore[arg-type]


def _consistent(s: MemorySample) -> None:
    assert s.available == max(s.limit - s.used, 0)
    assert s.limit > 0 and s.used >= 0


def test_v2_limited_subtracts_inactive_file(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level(
        "/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=50 * MIB, file=80 * MIB
    )
    with _probe(host) as probe:
        s = probe.sample()
        assert isinstance(probe, Probe)
        assert probe.cgroup_version == 2 and probe.cgroup_path == "/app"
    assert s.source == "cgroup"
    assert s.limit == 512 * MIB
    assert s.used == 250 * MIB
    assert s.available == 262 * MIB
    assert s.rss == 250 * os.sysconf("SC_PAGE_SIZE")
    _consistent(s)


def test_v2_file_mode_subtracts_file_but_not_shmem(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level(
        "/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=50 * MIB, file=80 * MIB
    )
    with _probe(host, reclaimable="file") as probe:
        s = probe.sample()
    assert s.used == 300 * MIB - (80 * MIB - MIB)


def test_v2_max_falls_back_to_meminfo(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/", limit="max", current=0, inactive_file=0)
    host.v2_level("/app", limit="max", current=300 * MIB, inactive_file=0)
    with _probe(host) as probe:
        s = probe.sample()
    assert s.source == "system"
    assert s.limit == RAM_KIB * KIB
    assert s.used == host.system_used
    _consistent(s)


def test_nested_v2_parent_holds_the_lower_limit(host: FakeHost) -> None:
    host.v2("/pod/c1")
    host.v2_level("/pod", limit=str(1 * GIB), current=900 * MIB, inactive_file=100 * MIB)
    host.v2_level("/pod/c1", limit=str(2 * GIB), current=400 * MIB, inactive_file=10 * MIB)
    with _probe(host) as probe:
        s = probe.sample()
    # The pod's limit binds, and the pod's usage (both containers) counts against it.
    assert s.source == "cgroup"
    assert s.limit == 1 * GIB
    assert s.used == 800 * MIB


def test_v2_parent_without_delegated_memory_controller(host: FakeHost) -> None:
    host.v2("/slice/svc")
    host.v2_level("/slice", limit=str(1 * GIB), current=600 * MIB, inactive_file=100 * MIB)
    (host.root / "sys/fs/cgroup/slice/svc").mkdir()
    with _probe(host) as probe:
        s = probe.sample()
    assert (s.source, s.limit, s.used) == ("cgroup", 1 * GIB, 500 * MIB)


def test_nested_v2_equal_limits_use_the_own_cgroup(host: FakeHost) -> None:
    host.v2("/pod/c1")
    host.v2_level("/pod", limit=str(1 * GIB), current=900 * MIB, inactive_file=0)
    host.v2_level("/pod/c1", limit=str(1 * GIB), current=400 * MIB, inactive_file=0)
    with _probe(host) as probe:
        assert probe.sample().used == 400 * MIB


def test_limit_changes_are_seen_without_reopening(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    with _probe(host, limit_refresh=0.0) as probe:
        assert probe.sample().limit == 512 * MIB
        host.write("/sys/fs/cgroup/app/memory.max", f"{256 * MIB}\n")
        host.write("/sys/fs/cgroup/app/memory.current", f"{100 * MIB}\n")
        s = probe.sample()
    assert (s.limit, s.used) == (256 * MIB, 100 * MIB)


def test_limits_are_cached_for_limit_refresh_seconds(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr("memwarden.probes.time.monotonic", lambda: now[0])
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    with _probe(host, limit_refresh=2.0) as probe:
        assert probe.sample().limit == 512 * MIB
        host.write("/sys/fs/cgroup/app/memory.max", f"{256 * MIB}\n")
        host.write("/sys/fs/cgroup/app/memory.current", f"{100 * MIB}\n")
        s = probe.sample()
        assert (s.limit, s.used) == (512 * MIB, 100 * MIB)  # usage is always fresh
        now[0] += 2.0
        assert probe.sample().limit == 256 * MIB


def test_v1_limited_uses_total_inactive_file(host: FakeHost) -> None:
    host.v1("/docker/abc")
    host.v1_level("/docker/abc", limit=str(256 * MIB), usage=200 * MIB, inactive_file=20 * MIB)
    with _probe(host) as probe:
        s = probe.sample()
        assert probe.cgroup_version == 1
        assert probe.describe()["cgroup_path"] == "/docker/abc"
    assert s.source == "cgroup"
    assert (s.limit, s.used, s.available) == (256 * MIB, 180 * MIB, 76 * MIB)
    assert s.psi_some_avg10 is None


def test_v1_file_mode_uses_total_cache_minus_shmem(host: FakeHost) -> None:
    host.v1("/docker/abc")
    host.v1_level("/docker/abc", limit=str(256 * MIB), usage=200 * MIB, inactive_file=20 * MIB)
    with _probe(host, reclaimable="file") as probe:
        assert probe.sample().used == 200 * MIB - 7 * MIB


def test_v1_unlimited_is_no_limit(host: FakeHost) -> None:
    host.v1("/docker/abc")
    host.v1_level("/docker/abc", limit=V1_UNLIMITED, usage=200 * MIB, inactive_file=0)
    host.v1_level("/docker", limit=V1_UNLIMITED, usage=200 * MIB, inactive_file=0)
    with _probe(host) as probe:
        s = probe.sample()
    assert s.source == "system"
    assert s.limit == RAM_KIB * KIB


def test_v1_hierarchical_limit_of_a_hidden_ancestor(host: FakeHost) -> None:
    host.v1("/docker/abc")
    host.v1_level("/docker/abc", limit=V1_UNLIMITED, usage=200 * MIB, inactive_file=20 * MIB)
    stat = host.root / "sys/fs/cgroup/memory/docker/abc/memory.stat"
    stat.write_text(
        stat.read_text().replace(
            f"hierarchical_memory_limit {V1_UNLIMITED}", f"hierarchical_memory_limit {300 * MIB}"
        )
    )
    with _probe(host) as probe:
        s = probe.sample()
    assert (s.source, s.limit, s.used) == ("cgroup", 300 * MIB, 180 * MIB)


def test_limit_above_ram_is_no_limit(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(RAM_KIB * KIB * 2), current=300 * MIB, inactive_file=0)
    with _probe(host) as probe:
        assert probe.sample().source == "system"


def test_page_cache_larger_than_usage_clamps_to_zero(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=10 * MIB, inactive_file=10 * MIB)
    host.write("/sys/fs/cgroup/app/memory.stat", f"inactive_file {20 * MIB}\n")
    with _probe(host) as probe:
        s = probe.sample()
    assert (s.used, s.available) == (0, 512 * MIB)


def test_no_cgroup_uses_meminfo(host: FakeHost) -> None:
    with _probe(host) as probe:
        s = probe.sample()
        assert probe.cgroup_version is None
    assert (s.source, s.limit, s.used) == ("system", RAM_KIB * KIB, host.system_used)
    _consistent(s)


def test_missing_memory_stat_counts_cache_as_used_and_says_so(
    host: FakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=50 * MIB)
    (host.root / "sys/fs/cgroup/app/memory.stat").unlink()
    with caplog.at_level(logging.WARNING, "memwarden.probes"), _probe(host) as probe:
        s = probe.sample()
        probe.sample()
        reason = probe.fallback_reason
    assert s.used == 300 * MIB  # conservative: never under-reports
    assert reason is not None and "page cache counts as used" in reason
    assert len([r for r in caplog.records if "page cache" in r.getMessage()]) == 1


def test_stat_without_inactive_file_is_conservative(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    host.write("/sys/fs/cgroup/app/memory.stat", "anon 5\n")
    with _probe(host) as probe:
        assert probe.sample().used == 300 * MIB
        assert "lacks page cache" in (probe.fallback_reason or "")


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        ("memory.max", "lots\n"),
        ("memory.current", "\n"),
        ("memory.current", "12abc\n"),
        ("memory.stat", "inactive_file -5\n"),
    ],
)
def test_garbage_in_cgroup_files_falls_back_to_system(
    host: FakeHost, caplog: pytest.LogCaptureFixture, rel: str, text: str
) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    host.write(f"/sys/fs/cgroup/app/{rel}", text)
    with caplog.at_level(logging.WARNING, "memwarden.probes"), _probe(host) as probe:
        s = probe.sample()
        assert "cgroup figures unusable" in (probe.fallback_reason or "")
    assert (s.source, s.limit, s.used) == ("system", RAM_KIB * KIB, host.system_used)
    assert any("using system figures" in r.getMessage() for r in caplog.records)


def test_unreadable_usage_file_falls_back(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    usage = host.root / "sys/fs/cgroup/app/memory.current"
    usage.unlink()
    usage.mkdir()  # opening a directory works, reading it fails with EISDIR
    with _probe(host) as probe:
        s = probe.sample()
    assert s.source == "system"


def test_garbage_meminfo_falls_back_to_psutil(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SimpleNamespace(total=8 * GIB, available=6 * GIB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)
    host.write("/proc/meminfo", "MemTotal: many kB\n")
    with _probe(host) as probe:
        s = probe.sample()
        assert "meminfo" in (probe.fallback_reason or "")
    assert (s.source, s.limit, s.used) == ("system", 8 * GIB, 2 * GIB)


def test_missing_proc_files_fall_back_to_psutil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SimpleNamespace(total=4 * GIB, available=1 * GIB)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)
    with SystemProbe(root=str(tmp_path)) as probe:
        s = probe.sample()
    assert (s.source, s.limit, s.used, s.rss, s.psi_some_avg10) == (
        "system",
        4 * GIB,
        3 * GIB,
        None,
        None,
    )
    assert detect_memory_limit(root=str(tmp_path)) == 4 * GIB


def test_psi_from_cgroup_pressure_file(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    host.write("/proc/pressure/memory", "some avg10=9.00 avg60=0 avg300=0 total=0\n")
    host.write("/sys/fs/cgroup/app/memory.pressure", "some avg10=3.50 avg60=1 avg300=0 total=5\n")
    with _probe(host) as probe:
        assert probe.sample().psi_some_avg10 == 3.5
    with _probe(host, psi=False) as probe:
        assert probe.sample().psi_some_avg10 is None


def test_psi_from_proc_without_cgroup(host: FakeHost) -> None:
    host.write("/proc/pressure/memory", "some avg10=0.75 avg60=0 avg300=0 total=0\n")
    with _probe(host) as probe:
        assert probe.sample().psi_some_avg10 == 0.75


def test_psi_is_re_read_at_most_once_a_second(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [50.0]
    monkeypatch.setattr("memwarden.probes.time.monotonic", lambda: now[0])
    path = host.write("/proc/pressure/memory", "some avg10=1.00 avg60=0 avg300=0 total=0\n")
    with _probe(host) as probe:
        assert probe.sample().psi_some_avg10 == 1.0
        path.write_text("some avg10=2.00 avg60=0 avg300=0 total=0\n")
        now[0] += 0.5
        assert probe.sample().psi_some_avg10 == 1.0
        now[0] += 0.5
        assert probe.sample().psi_some_avg10 == 2.0


def test_large_files_are_read_whole(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    padding = "".join(f"pad_{i} {i}\n" for i in range(2000))  # ~20 KiB before the key
    host.write("/sys/fs/cgroup/app/memory.stat", padding + f"inactive_file {100 * MIB}\n")
    with _probe(host) as probe:
        assert probe.sample().used == 200 * MIB


def test_garbage_psi_gives_none_and_stops_reading(host: FakeHost) -> None:
    path = host.write("/proc/pressure/memory", "nonsense\n")
    with _probe(host) as probe:
        assert probe.sample().psi_some_avg10 is None
        path.write_text("some avg10=5.00 avg60=0 avg300=0 total=0\n")
        assert probe.sample().psi_some_avg10 is None
        assert probe.describe()["psi"] is False


def test_close_releases_descriptors_and_rejects_samples(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=0)
    before = len(os.listdir("/proc/self/fd"))
    probe = _probe(host)
    assert len(os.listdir("/proc/self/fd")) > before
    probe.close()
    probe.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ValueError, match="closed"):
        probe.sample()


def test_concurrent_samples_from_threads(host: FakeHost) -> None:
    host.v2("/app")
    host.v2_level("/app", limit=str(512 * MIB), current=300 * MIB, inactive_file=50 * MIB)
    results: list[int] = []
    with _probe(host) as probe:

        def worker() -> None:
            for _ in range(200):
                results.append(probe.sample().used)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [250 * MIB] * 800


def test_bad_arguments(host: FakeHost) -> None:
    with pytest.raises(TypeError, match="root"):
        SystemProbe(root=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="psi"):
        SystemProbe(root=str(host.root), psi="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit_refresh must be >= 0"):
        SystemProbe(root=str(host.root), limit_refresh=-1.0)
    with pytest.raises(ValueError, match=r"reclaimable.*'cache'"):
        SystemProbe(root=str(host.root), reclaimable="cache")  # type: ignore[arg-type]


def test_detect_memory_limit(host: FakeHost) -> None:
    assert detect_memory_limit(root=str(host.root)) == RAM_KIB * KIB
    host.v2("/app")
    host.v2_level("/app", limit=str(300 * MIB), current=MIB, inactive_file=0)
    assert detect_memory_limit(root=str(host.root)) == 300 * MIB


def test_real_system_sample_is_consistent() -> None:
    with SystemProbe() as probe:
        s = probe.sample()
    _consistent(s)
    assert s.source in ("cgroup", "system")
    assert s.rss is None or s.rss > 0
    assert s.limit <= int(psutil.virtual_memory().total)
    assert 0 < detect_memory_limit() <= int(psutil.virtual_memory().total)


# ----------------------------------------------------------------- ProcessProbe


def test_process_probe_own_process() -> None:
    with ProcessProbe(limit=64 * GIB) as probe:
        s = probe.sample()
        assert probe.pid == os.getpid() and probe.limit == 64 * GIB
    assert s.source == "process"
    assert s.used == s.rss and s.rss is not None
    assert abs(s.rss - psutil.Process().memory_info().rss) < 64 * MIB
    assert s.available == 64 * GIB - s.used


def test_process_probe_default_limit_is_detected(host: FakeHost) -> None:
    host.write(f"/proc/{os.getpid()}/statm", "10 4 1 1 0 2 0\n")
    with ProcessProbe(root=str(host.root)) as probe:
        s = probe.sample()
    assert s.limit == RAM_KIB * KIB
    assert s.used == 4 * os.sysconf("SC_PAGE_SIZE")


def test_process_probe_unknown_pid(host: FakeHost) -> None:
    with pytest.raises(ValueError, match="pid 424242: no such process"):
        ProcessProbe(424242, root=str(host.root), limit=GIB)


def test_process_probe_exited_process_in_fake_tree(host: FakeHost) -> None:
    statm = host.write("/proc/77/statm", "10 4 1 1 0 2 0\n")
    with ProcessProbe(77, root=str(host.root), limit=GIB) as probe:
        assert probe.sample().used == 4 * os.sysconf("SC_PAGE_SIZE")
        statm.write_text("")
        with pytest.raises(ProcessLookupError, match="pid 77"):
            probe.sample()


_IDLE_CHILD = "import sys; print('ready', flush=True); sys.stdin.read()"


def _idle_child() -> subprocess.Popen[bytes]:
    """A python child blocked on stdin once it has printed 'ready' (its RSS is then stable)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _IDLE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def _finish(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.wait(timeout=30)
    child.stdout.close()


def test_process_probe_real_child_exit() -> None:
    child = _idle_child()
    try:
        probe = ProcessProbe(child.pid, limit=GIB)
        s = probe.sample()
        assert s.used == s.rss
        assert abs(s.used - psutil.Process(child.pid).memory_info().rss) < 4 * MIB
    finally:
        _finish(child)
    with pytest.raises(ProcessLookupError, match=str(child.pid)):
        probe.sample()
    probe.close()


def test_process_probe_includes_children() -> None:
    child = _idle_child()
    try:
        child_rss = psutil.Process(child.pid).memory_info().rss
        with ProcessProbe(include_children=True, limit=64 * GIB) as probe:
            s = probe.sample()
        assert s.rss is not None
        assert abs((s.used - s.rss) - child_rss) < 4 * MIB
    finally:
        _finish(child)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"pid": 0}, ValueError, "pid must be >= 1, got 0"),
        ({"pid": "1"}, TypeError, "pid must be an int"),
        ({"limit": 0}, ValueError, "limit must be >= 1, got 0"),
        ({"limit": 1.5}, TypeError, "limit must be an int"),
        ({"include_children": "yes"}, TypeError, "include_children must be a bool"),
    ],
)
def test_process_probe_bad_arguments(kwargs: dict[str, object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        ProcessProbe(**kwargs)  # type: ignore[arg-type]


def test_process_probe_close() -> None:
    probe = ProcessProbe(limit=GIB)
    probe.close()
    with pytest.raises(ValueError, match="closed"):
        probe.sample()
