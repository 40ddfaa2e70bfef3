"""Parsing of /proc and cgroup files, and locating this process' memory cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memwarden import _cgroup
from memwarden._cgroup import CgroupFormatError

V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_proc_cgroup_hybrid_prefers_memory_line() -> None:
    data = b"9:name=systemd:/\n4:memory:/app/a\n3:cpu,cpuacct:/x\n0::/user.slice\n"
    assert _cgroup.parse_proc_cgroup(data) == ("/app/a", "/user.slice")


def test_parse_proc_cgroup_ignores_garbage_lines() -> None:
    data = b"garbage\n7:memory:relative\n\n0::/ok\n"
    assert _cgroup.parse_proc_cgroup(data) == (None, "/ok")


def test_parse_mountinfo_keeps_cgroup_mounts_and_unescapes() -> None:
    data = (
        b"30 23 0:26 /pod\\040a /sys/fs/my\\040cgroup rw shared:4 - cgroup2 cgroup2 rw\n"
        b"31 23 0:27 / /proc rw - proc proc rw\n"
        b"bad line\n"
    )
    mounts = _cgroup.parse_mountinfo(data)
    assert len(mounts) == 1
    assert mounts[0].root == "/pod a"
    assert mounts[0].mountpoint == "/sys/fs/my cgroup"
    assert mounts[0].fstype == "cgroup2"


def test_parse_limit_and_int() -> None:
    assert _cgroup.parse_limit(b"max\n", "m") is None
    assert _cgroup.parse_limit(b"-1\n", "m") is None
    assert _cgroup.parse_limit(b"1048576\n", "m") == 1048576
    with pytest.raises(CgroupFormatError, match="integer"):
        _cgroup.parse_limit(b"lots\n", "m")
    with pytest.raises(CgroupFormatError):
        _cgroup.parse_int(b"", "m")
    with pytest.raises(CgroupFormatError):
        _cgroup.parse_int(b"12.5\n", "m")


def test_stat_value_finds_exact_keys_only() -> None:
    stat = b"file 100\ninactive_file 40\ntotal_inactive_file 70\nshmem 5\n"
    assert _cgroup.stat_value(stat, b"file") == 100
    assert _cgroup.stat_value(stat, b"inactive_file") == 40
    assert _cgroup.stat_value(stat, b"total_inactive_file") == 70
    assert _cgroup.stat_value(stat, b"active_file") is None
    with pytest.raises(CgroupFormatError, match="inactive_file"):
        _cgroup.stat_value(b"inactive_file lots\n", b"inactive_file")


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.integers(0, 2**63)))
def test_stat_value_round_trips(values: dict[str, int]) -> None:
    text = "".join(f"{k} {v}\n" for k, v in values.items()).encode()
    for key, value in values.items():
        assert _cgroup.stat_value(text, key.encode()) == value
    assert _cgroup.stat_value(text, b"not-a-key") is None


def test_parse_meminfo() -> None:
    data = b"MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:    4000 kB\n"
    assert _cgroup.parse_meminfo(data) == (16000 * 1024, 4000 * 1024)
    with pytest.raises(CgroupFormatError, match="missing"):
        _cgroup.parse_meminfo(b"MemTotal: 16000 kB\n")
    with pytest.raises(CgroupFormatError, match="integer"):
        _cgroup.parse_meminfo(b"MemTotal: x kB\nMemAvailable: 1 kB\n")
    with pytest.raises(CgroupFormatError, match="unit"):
        _cgroup.parse_meminfo(b"MemTotal: 5 MB\nMemAvailable: 1 kB\n")
    with pytest.raises(CgroupFormatError, match="MemTotal is 0"):
        _cgroup.parse_meminfo(b"MemTotal: 0 kB\nMemAvailable: 0 kB\n")


@given(st.integers(1, 2**40), st.integers(0, 2**40))
def test_parse_meminfo_round_trips(total: int, available: int) -> None:
    data = f"MemTotal: {total} kB\nMemFree: 1 kB\nMemAvailable: {available} kB\n".encode()
    assert _cgroup.parse_meminfo(data) == (total * 1024, available * 1024)


def test_parse_psi() -> None:
    data = b"some avg10=1.25 avg60=0.50 avg300=0.10 total=99\nfull avg10=0.00 avg60=0 total=0\n"
    assert _cgroup.parse_psi_some_avg10(data) == 1.25
    for bad in (
        b"",
        b"full avg10=1.0\n",
        b"some avg60=1\n",
        b"some avg10=nan x\n",
        b"some avg10=x\n",
    ):
        with pytest.raises(CgroupFormatError):
            _cgroup.parse_psi_some_avg10(bad)


def test_locate_v2_from_mountinfo(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/kubepods/pod1/c1\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/kubepods/pod1/c1/memory.current", "1\n")
    _write(tmp_path, "/sys/fs/cgroup/kubepods/pod1/c1/memory.pressure", "some avg10=0.00\n")
    loc = _cgroup.locate(str(tmp_path))
    assert loc is not None
    assert loc.version == 2
    dirs = [lvl.directory for lvl in loc.levels]
    base = str(tmp_path / "sys/fs/cgroup")
    assert dirs == [f"{base}/kubepods/pod1/c1", f"{base}/kubepods/pod1", f"{base}/kubepods", base]
    assert loc.pressure_path == f"{base}/kubepods/pod1/c1/memory.pressure"


def test_locate_v2_namespaced_mount_root(tmp_path: Path) -> None:
    # A cgroup namespace bind-mounts the container's own cgroup as the root.
    _write(tmp_path, "/proc/self/cgroup", "0::/kubepods/pod1/c1\n")
    _write(
        tmp_path,
        "/proc/self/mountinfo",
        "30 23 0:26 /kubepods/pod1/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    )
    _write(tmp_path, "/sys/fs/cgroup/memory.current", "1\n")
    loc = _cgroup.locate(str(tmp_path))
    assert loc is not None
    assert [lvl.directory for lvl in loc.levels] == [str(tmp_path / "sys/fs/cgroup")]


def test_locate_v2_without_memory_controller_is_none(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/app\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    (tmp_path / "sys/fs/cgroup/app").mkdir(parents=True)
    assert _cgroup.locate(str(tmp_path)) is None


def test_locate_v2_starts_at_the_deepest_level_with_memory_files(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/slice/svc\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/slice/memory.current", "1\n")
    (tmp_path / "sys/fs/cgroup/slice/svc").mkdir()
    loc = _cgroup.locate(str(tmp_path))
    assert loc is not None
    assert loc.path == "/slice/svc"
    assert loc.levels[0].directory == str(tmp_path / "sys/fs/cgroup/slice")


def test_locate_hybrid_uses_v1_memory(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "4:memory:/docker/abc\n0::/\n")
    _write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes", "5\n")
    loc = _cgroup.locate(str(tmp_path))
    assert loc is not None
    assert loc.version == 1
    assert loc.levels[0].limit_path.endswith("docker/abc/memory.limit_in_bytes")
    assert loc.pressure_path is None


def test_locate_without_mountinfo_uses_standard_mounts(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/svc\n")
    _write(tmp_path, "/sys/fs/cgroup/svc/memory.current", "5\n")
    loc = _cgroup.locate(str(tmp_path))
    assert loc is not None
    assert loc.levels[0].directory == str(tmp_path / "sys/fs/cgroup/svc")


def test_locate_without_proc_is_none(tmp_path: Path) -> None:
    assert _cgroup.locate(str(tmp_path)) is None


def test_join_root() -> None:
    assert _cgroup.join_root("/", "/proc/meminfo") == "/proc/meminfo"
    assert _cgroup.join_root("/x", "/proc/meminfo") == "/x/proc/meminfo"
