"""History that survives restarts: JSON-lines files, replaced atomically, rotated by size.

The Warden persists its sample history and leak findings here (to
``WardenConfig.state_dir``) so trend and leak analysis continue across
restarts. Each *kind* of record (``"samples"``, ``"leaks"``, ...) lives in
``<directory>/<kind>.jsonl``, one JSON object per line, oldest first; rotated
files are ``<kind>.1.jsonl`` (newest rotated) up to ``<kind>.<keep>.jsonl``.

Crash safety: every write builds the new file in a temporary file in the same
directory, flushes and ``fsync``s it, renames it over the old one
(``os.replace`` is atomic on POSIX) and ``fsync``s the directory, so a
``kill -9`` at any moment leaves either the old or the new file, both
complete. Leftover temporary files of a killed writer are removed on the next
operation. Reading skips lines that do not parse (a file written by something
else, or truncated by hand) and counts them in :attr:`HistoryStore.skipped`.

Rotation: when an append would take the current file past ``max_bytes``, the
current file becomes ``<kind>.1.jsonl`` (older ones shift up, the oldest
beyond ``keep`` is deleted) and the new records start a fresh file. So the
bytes on disk per kind stay under about ``(keep + 1) * max_bytes``.

Appends rewrite the whole current file (at most ``max_bytes``): that is the
price of atomic replacement, and it is paid once per persistence interval.
File I/O uses aiofiles on asyncio and anyio's file API elsewhere (aiofiles is
asyncio-only); fsync and renames run in worker threads. One writer per
directory: two processes sharing a state directory would overwrite each
other's appends.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import reprlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread

from . import _backend
from ._validate import check_int
from .config import WardenConfig
from .units import MiB

__all__ = ["HistoryStore"]

_KIND_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TMP_SUFFIX = ".tmp"
_counter = itertools.count()


class _AsyncFile(Protocol):
    async def read(self) -> bytes: ...
    async def write(self, data: bytes) -> int: ...
    async def flush(self) -> None: ...


@asynccontextmanager
async def _open(path: Path, mode: Literal["rb", "wb"]) -> AsyncIterator[tuple[_AsyncFile, int]]:
    """Open ``path`` with aiofiles on asyncio, anyio elsewhere; yields (file, fd)."""
    backend = _backend.current_or_none()
    if backend is not None and backend.name == "asyncio":
        import aiofiles

        async with aiofiles.open(path, mode) as f:
            yield f, f.fileno()
    else:
        async with await anyio.open_file(path, mode) as g:
            yield g, g.wrapped.fileno()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(records: Sequence[Mapping[str, object]]) -> bytes:
    """One JSON line per record; raises naming the first bad record, before any write."""
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        raise TypeError(
            f"records must be a sequence of mappings, got {type(records).__name__} "
            f"{reprlib.repr(records)}"
        )
    lines = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(
                f"records[{index}] must be a mapping, got {type(record).__name__} "
                f"{reprlib.repr(record)}"
            )
        try:
            lines.append(json.dumps(record, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"records[{index}] is not JSON-serialisable ({exc}): {reprlib.repr(record)}"
            ) from None
    return "".join(line + "\n" for line in lines).encode()


class HistoryStore:
    """Crash-safe, size-rotated JSON-lines history under one directory.

    ``max_bytes`` (>= 1024) bounds each file before rotation; ``keep`` (>= 0)
    is how many rotated files are kept per kind. Raises ``TypeError`` /
    ``ValueError`` for bad arguments. Operations on one store are serialised
    per kind (an anyio lock), so concurrent appends never lose records. A
    cancelled write either completed or left the files as they were.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = 8 * MiB, keep: int = 2
    ) -> None:
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(
                f"directory must be a path, got {type(directory).__name__} {directory!r}"
            )
        self.directory = Path(directory)
        self.max_bytes = check_int("max_bytes", max_bytes, minimum=1024)
        self.keep = check_int("keep", keep, minimum=0)
        self.skipped = 0
        """Lines that did not parse, over every :meth:`load` so far."""
        self._locks: dict[str, anyio.Lock] = {}
        self._cleaned: set[str] = set()

    @classmethod
    def from_config(cls, config: WardenConfig) -> HistoryStore | None:
        """A store at ``config.state_dir`` with ``config.state_max_bytes``; None if unset."""
        if config.state_dir is None:
            return None
        return cls(config.state_dir, max_bytes=max(1024, config.state_max_bytes))

    def __repr__(self) -> str:
        return (
            f"HistoryStore({str(self.directory)!r}, max_bytes={self.max_bytes}, keep={self.keep})"
        )

    def _check_kind(self, kind: object) -> str:
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, got {type(kind).__name__} {kind!r}")
        if not _KIND_RE.match(kind):
            raise ValueError(f"kind must match [A-Za-z0-9_-]{{1,64}}, got {kind!r}")
        return kind

    def path(self, kind: str, generation: int = 0) -> Path:
        """The file of ``kind``: the current one (0) or a rotated one (1..keep)."""
        kind = self._check_kind(kind)
        check_int("generation", generation, minimum=0, maximum=self.keep)
        suffix = f".{generation}" if generation else ""
        return self.directory / f"{kind}{suffix}.jsonl"

    def files(self, kind: str) -> list[Path]:
        """The existing files of ``kind``, oldest first (rotated ones, then the current)."""
        paths = [self.path(kind, g) for g in range(self.keep, -1, -1)]
        return [p for p in paths if p.exists()]

    def _lock(self, kind: str) -> anyio.Lock:
        lock = self._locks.get(kind)
        if lock is None:
            lock = self._locks[kind] = anyio.Lock()
        return lock

    async def _clean(self, kind: str) -> None:
        """Remove temporary files a killed writer left behind (once per kind)."""
        if kind in self._cleaned:
            return

        def clean() -> None:
            if self.directory.is_dir():
                for leftover in self.directory.glob(f".{kind}.jsonl.*{_TMP_SUFFIX}"):
                    leftover.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(clean)
        self._cleaned.add(kind)

    async def _read(self, path: Path) -> bytes:
        try:
            async with _open(path, "rb") as (f, _fd):
                return await f.read()
        except FileNotFoundError:
            return b""

    async def _replace(self, path: Path, data: bytes) -> None:
        """Atomically make ``path`` hold ``data``: temp file, fsync, rename, fsync dir."""
        await anyio.to_thread.run_sync(lambda: self.directory.mkdir(parents=True, exist_ok=True))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}{_TMP_SUFFIX}")
        committed = False
        try:
            async with _open(tmp, "wb") as (f, fd):
                await f.write(data)
                await f.flush()
                await anyio.to_thread.run_sync(os.fsync, fd)
            # Once the data is durable, finish the commit even if cancelled meanwhile.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.replace, tmp, path)
                committed = True
                await anyio.to_thread.run_sync(_fsync_dir, self.directory)
        finally:
            if not committed:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(lambda: tmp.unlink(missing_ok=True))

    async def _rotate(self, kind: str) -> None:
        def rotate() -> None:
            if self.keep == 0:
                self.path(kind).unlink(missing_ok=True)
            else:
                for generation in range(self.keep - 1, -1, -1):
                    source = self.path(kind, generation)
                    if source.exists():
                        os.replace(source, self.path(kind, generation + 1))
            _fsync_dir(self.directory)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(rotate)

    async def append(self, kind: str, records: Sequence[Mapping[str, object]]) -> None:
        """Add ``records`` (JSON-able mappings) to the end of ``kind``'s history.

        Rotates first when the current file would pass ``max_bytes``. Raises
        ``TypeError``/``ValueError`` naming the first record that is not a
        JSON-able mapping (nothing is written), and ``OSError`` from the disk.
        """
        kind = self._check_kind(kind)
        data = _encode(records)
        if not data:
            return
        async with self._lock(kind):
            await self._clean(kind)
            path = self.path(kind)
            existing = await self._read(path)
            if existing and not existing.endswith(b"\n"):
                # Not written by us (we only rename complete files): drop the torn tail.
                existing = existing[: existing.rfind(b"\n") + 1]
            if existing and len(existing) + len(data) > self.max_bytes:
                await self._rotate(kind)
                existing = b""
            await self._replace(path, existing + data)

    async def write_snapshot(self, kind: str, records: Sequence[Mapping[str, object]]) -> None:
        """Replace ``kind``'s current file with exactly ``records`` (atomic, no rotation).

        For state that is rewritten whole, such as the latest leak findings.
        Raises like :meth:`append`.
        """
        kind = self._check_kind(kind)
        data = _encode(records)
        async with self._lock(kind):
            await self._clean(kind)
            await self._replace(self.path(kind), data)

    async def load(self, kind: str) -> list[dict[str, Any]]:
        """Every record of ``kind``, oldest first, across rotated files and the current one.

        Lines that do not parse as a JSON object are skipped and counted in
        :attr:`skipped`. A kind never written gives ``[]``.
        """
        kind = self._check_kind(kind)
        records: list[dict[str, Any]] = []
        async with self._lock(kind):
            await self._clean(kind)
            for path in await anyio.to_thread.run_sync(self.files, kind):
                for line in (await self._read(path)).splitlines():
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        self.skipped += 1
                        continue
                    if isinstance(record, dict):
                        records.append(record)
                    else:
                        self.skipped += 1
        return records

    async def clear(self, kind: str) -> int:
        """Delete every file of ``kind``; returns how many were deleted."""
        kind = self._check_kind(kind)
        async with self._lock(kind):

            def remove() -> int:
                paths = self.files(kind)
                for p in paths:
                    p.unlink(missing_ok=True)
                return len(paths)

            return await anyio.to_thread.run_sync(remove)
