"""Finding this process' memory cgroup and parsing the kernel's memory files.

Written by hand because psutil reports the host's figures, not the
container's, and no maintained library resolves the process' own cgroup
(v1 or v2) from ``/proc/self/cgroup`` and ``mountinfo`` without a heavy
dependency. Everything here is synchronous and takes a ``root`` so tests can
build fake ``/proc`` and ``/sys/fs/cgroup`` trees.

Parsers work on ``bytes`` (what ``os.pread`` returns) with ``find``/``split``;
they raise :class:`CgroupFormatError` on text they do not understand, so the
probe can fall back loudly instead of reporting a wrong number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

__all__: list[str] = []

CgroupVersion = Literal[1, 2]

#: Files per hierarchy: (limit, usage, stat, pressure).
_FILES: dict[int, tuple[str, str, str, str | None]] = {
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", None),
    2: ("memory.max", "memory.current", "memory.stat", "memory.pressure"),
}


class CgroupFormatError(ValueError):
    """A kernel file held text this module does not understand."""


@dataclass(frozen=True)
class CgroupLevel:
    """One directory of the cgroup path, with the paths of its memory files."""

    directory: str
    limit_path: str
    usage_path: str
    stat_path: str


@dataclass(frozen=True)
class CgroupLocation:
    """Where this process' memory cgroup lives.

    ``levels`` runs from the process' own cgroup up to the mount root: the
    part of the hierarchy this process can see.
    """

    version: CgroupVersion
    path: str
    levels: tuple[CgroupLevel, ...]
    pressure_path: str | None


def join_root(root: str, path: str) -> str:
    """``path`` (absolute on the real system) relocated under ``root``."""
    if root in ("", "/"):
        return path
    return os.path.join(root, path.lstrip("/"))


def read_small(path: str) -> bytes | None:
    """The whole file, or ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def parse_proc_cgroup(data: bytes) -> tuple[str | None, str | None]:
    """``(v1 memory path, v2 path)`` from ``/proc/<pid>/cgroup`` text.

    Lines are ``hierarchy-id:controllers:path``; v1's memory controller has
    ``memory`` among the controllers, v2 has id ``0`` and none.
    """
    v1: str | None = None
    v2: str | None = None
    for line in data.splitlines():
        parts = line.split(b":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if not path.startswith(b"/"):
            continue
        text = path.decode("utf-8", "surrogateescape")
        if hid == b"0" and controllers == b"":
            v2 = text
        elif b"memory" in controllers.split(b","):
            v1 = text
    return v1, v2


def _unescape_mount_field(field: bytes) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Mount:
    """One cgroup mount from ``mountinfo``."""

    root: str
    mountpoint: str
    fstype: str
    super_options: tuple[str, ...]


def parse_mountinfo(data: bytes) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in ``/proc/<pid>/mountinfo`` text."""
    mounts: list[Mount] = []
    for line in data.splitlines():
        left, sep, right = line.partition(b" - ")
        if not sep:
            continue
        lfields = left.split()
        rfields = right.split()
        if len(lfields) < 5 or len(rfields) < 3:
            continue
        fstype = rfields[0].decode("ascii", "replace")
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = tuple(rfields[2].decode("ascii", "replace").split(","))
        mounts.append(
            Mount(
                root=_unescape_mount_field(lfields[3]),
                mountpoint=_unescape_mount_field(lfields[4]),
                fstype=fstype,
                super_options=options,
            )
        )
    return mounts


def _relative(cgroup_path: str, mount_root: str) -> str | None:
    # A cgroup namespace or a bind mount of a sub-tree makes the mount root a
    # prefix of (or equal to) the path /proc/self/cgroup reports.
    if mount_root == "/":
        return cgroup_path.strip("/")
    if cgroup_path == mount_root:
        return ""
    if cgroup_path.startswith(mount_root.rstrip("/") + "/"):
        return cgroup_path[len(mount_root.rstrip("/")) + 1 :].strip("/")
    return None


def _levels(version: CgroupVersion, top: str, relative: str) -> tuple[CgroupLevel, ...]:
    limit_name, usage_name, stat_name, _ = _FILES[version]
    parts = [p for p in relative.split("/") if p and p not in (".", "..")]
    levels = []
    for depth in range(len(parts), -1, -1):
        directory = os.path.join(top, *parts[:depth])
        levels.append(
            CgroupLevel(
                directory=directory,
                limit_path=os.path.join(directory, limit_name),
                usage_path=os.path.join(directory, usage_name),
                stat_path=os.path.join(directory, stat_name),
            )
        )
    return tuple(levels)


def locate(
    root: str = "/", pid: str = "self", *, mounts_of: str | None = None
) -> CgroupLocation | None:
    """Find the memory cgroup of ``pid`` under ``root``; ``None`` if there is none.

    A v1 memory controller wins over the unified hierarchy (hybrid systems
    keep memory on v1). Levels start at the deepest directory that has a
    usage file (``memory.current`` exists only where the memory controller is
    enabled); ``None`` when no level has one.

    ``mounts_of`` names the process whose ``mountinfo`` says where the
    hierarchies are mounted (default: ``pid`` itself). To read another
    process' cgroup from here, pass ``mounts_of="self"``: the kernel shows
    ``/proc/<pid>/cgroup`` relative to the reader's cgroup namespace, and only
    the reader's own mounts are paths the reader can open.
    """
    proc = read_small(join_root(root, f"/proc/{pid}/cgroup"))
    if proc is None:
        return None
    v1_path, v2_path = parse_proc_cgroup(proc)
    mountinfo = read_small(join_root(root, f"/proc/{mounts_of or pid}/mountinfo"))
    mounts = parse_mountinfo(mountinfo) if mountinfo is not None else []

    if v1_path is not None:
        candidates = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
        if not candidates and mountinfo is None:
            candidates = [Mount("/", "/sys/fs/cgroup/memory", "cgroup", ("memory",))]
        found = _choose(1, candidates, v1_path, root)
        if found is not None:
            return found
    if v2_path is not None:
        candidates = [m for m in mounts if m.fstype == "cgroup2"]
        if not candidates and mountinfo is None:
            candidates = [Mount("/", "/sys/fs/cgroup", "cgroup2", ())]
        return _choose(2, candidates, v2_path, root)
    return None


def _choose(
    version: CgroupVersion, mounts: list[Mount], cgroup_path: str, root: str
) -> CgroupLocation | None:
    for mount in mounts:
        relative = _relative(cgroup_path, mount.root)
        top = join_root(root, mount.mountpoint)
        if relative is None:
            # The process' cgroup is outside what is mounted (a foreign
            # namespace); the mount point itself is the best view we have.
            relative = ""
        levels = _levels(version, top, relative)
        # A v2 parent that does not delegate the memory controller leaves its
        # children without memory files; its own limit still binds them.
        while levels and not os.path.exists(levels[0].usage_path):
            levels = levels[1:]
        if not levels:
            continue
        pressure_name = _FILES[version][3]
        pressure = None
        if pressure_name is not None:
            candidate = os.path.join(levels[0].directory, pressure_name)
            pressure = candidate if os.path.exists(candidate) else None
        return CgroupLocation(version, cgroup_path, levels, pressure)
    return None


@dataclass(frozen=True)
class CgroupLimit:
    """The memory limit that binds a process, and where it was found."""

    limit: int
    directory: str
    version: CgroupVersion


def process_limit(pid: int | str, *, root: str = "/", ram: int | None = None) -> CgroupLimit | None:
    """The lowest memory limit on process ``pid``'s cgroup path; ``None`` without one.

    The same rule as ``SystemProbe`` applies to this process: every level from
    the process' own cgroup up to the mount root is read (``memory.max`` on
    v2, ``memory.limit_in_bytes`` on v1, where ``hierarchical_memory_limit``
    in the leaf's ``memory.stat`` also reveals ancestors above the mount
    root), and a limit at or above ``ram`` (when given) counts as none.
    Unreadable levels are skipped; text that is not a limit raises
    :class:`CgroupFormatError`.
    """
    location = locate(root, str(pid), mounts_of="self")
    if location is None:
        return None
    best: CgroupLimit | None = None
    for level in location.levels:
        data = read_small(level.limit_path)
        if data is None:
            continue
        limit = parse_limit(data, level.limit_path)
        if limit is None or (ram is not None and limit >= ram):
            continue
        if best is None or limit < best.limit:
            best = CgroupLimit(limit, level.directory, location.version)
    if location.version == 1:
        stat = read_small(location.levels[0].stat_path)
        hierarchical = stat_value(stat, b"hierarchical_memory_limit") if stat else None
        if (
            hierarchical is not None
            and (ram is None or hierarchical < ram)
            and (best is None or hierarchical < best.limit)
        ):
            best = CgroupLimit(hierarchical, location.levels[0].directory, 1)
    return best


def parse_int(data: bytes, what: str) -> int:
    """A single non-negative integer file such as ``memory.current``."""
    text = data.strip()
    if not text.isdigit():
        raise CgroupFormatError(f"{what}: expected an integer, got {data[:40]!r}")
    return int(text)


def parse_limit(data: bytes, what: str) -> int | None:
    """A limit file: an integer, or ``max`` (v2) meaning no limit (``None``)."""
    text = data.strip()
    if text == b"max":
        return None
    if text.startswith(b"-") and text[1:].isdigit():
        return None  # some v1 kernels print -1 for "unlimited"
    return parse_int(data, what)


def stat_value(data: bytes, key: bytes) -> int | None:
    """The value of ``key`` in a ``key value`` per line file, or ``None`` if absent.

    Raises :class:`CgroupFormatError` when the key is there but its value is
    not an integer.
    """
    if data.startswith(key + b" "):
        start = len(key) + 1
    else:
        pos = data.find(b"\n" + key + b" ")
        if pos < 0:
            return None
        start = pos + len(key) + 2
    end = data.find(b"\n", start)
    raw = data[start:] if end < 0 else data[start:end]
    raw = raw.strip()
    if not raw.isdigit():
        raise CgroupFormatError(f"memory.stat: {key.decode()} is {raw[:40]!r}, not an integer")
    return int(raw)


def parse_meminfo(data: bytes) -> tuple[int, int]:
    """``(MemTotal, MemAvailable)`` in bytes from ``/proc/meminfo`` text."""
    total = _meminfo_kib(data, b"MemTotal:")
    available = _meminfo_kib(data, b"MemAvailable:")
    if total is None or available is None:
        raise CgroupFormatError("meminfo: MemTotal or MemAvailable missing")
    if total <= 0:
        raise CgroupFormatError(f"meminfo: MemTotal is {total}")
    return total, available


def _meminfo_kib(data: bytes, key: bytes) -> int | None:
    if data.startswith(key):
        start = len(key)
    else:
        pos = data.find(b"\n" + key)
        if pos < 0:
            return None
        start = pos + len(key) + 1
    end = data.find(b"\n", start)
    fields = (data[start:] if end < 0 else data[start:end]).split()
    if not fields or not fields[0].isdigit():
        raise CgroupFormatError(f"meminfo: {key.decode()} has no integer value")
    unit = fields[1] if len(fields) > 1 else b"kB"
    if unit != b"kB":
        raise CgroupFormatError(f"meminfo: {key.decode()} has unit {unit!r}, expected kB")
    return int(fields[0]) * 1024


def parse_psi_some_avg10(data: bytes) -> float:
    """The ``some avg10=`` figure (percent of time stalled) from a PSI file."""
    if not data.startswith(b"some "):
        raise CgroupFormatError(f"pressure: expected a 'some' line, got {data[:40]!r}")
    pos = data.find(b"avg10=")
    if pos < 0:
        raise CgroupFormatError("pressure: no avg10 field")
    start = pos + 6
    end = start
    while end < len(data) and data[end] not in b" \n":
        end += 1
    try:
        value = float(data[start:end])
    except ValueError:
        raise CgroupFormatError(f"pressure: avg10 is {data[start:end]!r}") from None
    if not 0.0 <= value <= 100.0:
        raise CgroupFormatError(f"pressure: avg10 is {value}, outside 0..100")
    return value
