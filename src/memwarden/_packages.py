"""Map a source filename to the package that owns it.

tracemalloc reports allocations by the filename of the allocating frame; the
profiler's ``group_by="package"`` and the lazy loader's per-package figures
need the package instead. Two rules, cheapest first:

1. a path inside ``site-packages`` or ``dist-packages`` belongs to the first
   component after it (``.../site-packages/numpy/core/x.py`` -> ``numpy``,
   ``.../site-packages/six.py`` -> ``six``);
2. otherwise the deepest root of an imported module contains the file: a
   package's root is its ``__path__`` directories, a plain module's root is its
   ``__file__`` (the stdlib, editable installs and application code land here).

Lookups are cached per filename; the cache is rebuilt whenever ``sys.modules``
changes size, so a newly imported package is found on the next lookup.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from types import ModuleType

__all__: list[str] = []

_SITE_RE = re.compile(r"[/\\](?:site|dist)-packages[/\\]([^/\\]+)")
_FROZEN_RE = re.compile(r"^<frozen ([A-Za-z_][\w.]*)>$")


def _site_component(filename: str) -> str | None:
    match = _SITE_RE.search(filename)
    if match is None:
        return None
    first = match.group(1)
    # Extension modules and single-file modules: "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
    # "six.py" -> the part before the first dot.
    name = first.split(".", 1)[0]
    return name or None


def module_roots(module: ModuleType) -> list[str]:
    """Directories (for packages) or the file (for plain modules) a module's code lives in."""
    roots: list[str] = []
    path = getattr(module, "__path__", None)
    if path is not None:
        # Some namespace-path objects are not iterable.
        with contextlib.suppress(TypeError):
            roots.extend(os.path.normpath(str(p)) for p in path)
    else:
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            roots.append(os.path.normpath(file))
    return roots


class RootIndex:
    """Longest-prefix lookup from a filename to the owner whose root contains it.

    Not thread-safe by itself; callers hold their own lock or rebuild it per use.
    """

    def __init__(self, roots: Mapping[str, Iterable[str]]) -> None:
        self._owner_of_root: dict[str, str] = {}
        for owner, paths in roots.items():
            for root in paths:
                previous = self._owner_of_root.get(root)
                # Two owners of one root (a package and an alias): keep the more specific name.
                if previous is None or len(owner) > len(previous):
                    self._owner_of_root[root] = owner
        self._cache: dict[str, str | None] = {}

    def owner(self, filename: str) -> str | None:
        """The owner of the deepest root that is ``filename`` or one of its parent directories."""
        try:
            return self._cache[filename]
        except KeyError:
            pass
        found: str | None = None
        if self._owner_of_root:
            path = os.path.normpath(filename)
            while True:
                owner = self._owner_of_root.get(path)
                if owner is not None:
                    found = owner
                    break
                parent = os.path.dirname(path)
                if parent == path:
                    break
                path = parent
        self._cache[filename] = found
        return found


class PackageResolver:
    """Filename -> top-level package name, following the two rules of this module.

    Thread-safe; cheap after the first lookup of a filename.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modules_seen = -1
        self._index = RootIndex({})
        self._cache: dict[str, str | None] = {}

    def _refresh(self) -> None:
        count = len(sys.modules)
        if count == self._modules_seen:
            return
        roots: dict[str, list[str]] = {}
        for name, module in list(sys.modules.items()):
            if "." in name or module is None:
                continue
            paths = module_roots(module)
            if paths:
                roots[name] = paths
        self._index = RootIndex(roots)
        self._cache = {}
        self._modules_seen = count

    def package_of(self, filename: str) -> str | None:
        """The top-level package owning ``filename``, or None when no rule applies."""
        with self._lock:
            self._refresh()
            try:
                return self._cache[filename]
            except KeyError:
                pass
            found = _site_component(filename)
            if found is None:
                frozen = _FROZEN_RE.match(filename)
                if frozen is not None:
                    found = frozen.group(1).split(".", 1)[0]
                else:
                    found = self._index.owner(filename)
            self._cache[filename] = found
            return found


_resolver = PackageResolver()


def package_of(filename: str) -> str | None:
    """The top-level package owning ``filename`` (process-wide cached resolver)."""
    return _resolver.package_of(filename)
