"""Deep object sizes: the bytes an object graph holds, counted once per object.

:func:`deep_sizeof` is the default ``sizeof`` of memwarden's caches and
sessions. ``sys.getsizeof`` only measures an object's own header and inline
storage; this walks what the object references and sums every object once.

What is counted, and why:

- Containers (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``collections.deque`` and their subclasses) count themselves plus their items
  (dict keys and values).
- Other objects count ``sys.getsizeof`` plus what their ``__dict__`` and
  ``__slots__`` reference. An object whose class defines ``__sizeof__`` in
  Python (pandas objects do, through ``memory_usage(deep=True)``) is taken at
  its word: it counts ``sys.getsizeof`` only, so its contents are not counted
  twice.
- Objects exposing an integer ``nbytes`` (NumPy arrays, tensors, ``memoryview``)
  count their data buffer. A NumPy array that owns its data already reports it
  through ``sys.getsizeof``; one that does not (a *view*) counts its header plus
  its ``base`` object, because the view keeps the whole base alive. Two views of
  one base therefore count the base once. Objects without ``base`` whose
  ``sys.getsizeof`` is smaller than ``nbytes`` count header + ``nbytes``.
- Each object counts once per walk, by ``id``, so cycles terminate and shared
  objects (the same key string in a thousand dicts) are not multiplied. Pass
  one ``seen`` set to several calls to count objects shared between them once.
- Singletons (``None``, ``True``, ``False``, ``...``, ``NotImplemented``) and
  objects that belong to the program rather than to data (classes, modules,
  functions, methods, code objects, frames) count zero and are not walked.
- Arbitrary iterables are never iterated: walking a generator would consume it.

The walk is breadth-first over an explicit list, so depth never causes a
``RecursionError``; ``max_depth`` optionally stops it early (depth 0 is the
object itself). It is not atomic with respect to other threads mutating the
graph; call it from the thread that owns the data.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections import deque
from typing import Any

from ._validate import check_int

__all__ = ["deep_sizeof"]

_getsizeof = sys.getsizeof

# Count zero, never walked: singletons and program objects (shared, not owned by data).
_SKIP_EXACT: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        type(NotImplemented),
        type(Ellipsis),
        type,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.BuiltinMethodType,
        types.CodeType,
        types.FrameType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.GetSetDescriptorType,
        types.MemberDescriptorType,
        property,
        staticmethod,
        classmethod,
    }
)
_SKIP_INSTANCE: tuple[type, ...] = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
)

# Exact types whose sys.getsizeof is their whole footprint: counted without being queued.
_ATOMIC: frozenset[type] = frozenset({int, float, complex, str, bytes, bytearray, range})


_type_cache: dict[type, tuple[tuple[str, ...], bool]] = {}


def _type_info(cls: type) -> tuple[tuple[str, ...], bool]:
    """(slot attribute names, whether the class measures itself with a Python __sizeof__)."""
    cached = _type_cache.get(cls)
    if cached is not None:
        return cached
    if len(_type_cache) >= 4096:  # bounded: classes made on the fly must not pile up
        _type_cache.clear()
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        for name in slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{klass.__name__.lstrip('_')}{name}"  # private-name mangling
            names.append(name)
    # Builtins implement __sizeof__ in C and count only themselves; a class that
    # overrides it in Python (pandas objects do) claims to count its contents too.
    trusted = isinstance(getattr(cls, "__sizeof__", None), types.FunctionType)
    result = _type_cache[cls] = (tuple(names), trusted)
    return result


def _inspect(obj: Any) -> tuple[int, list[Any]]:
    """Size and referents of an object that is not an exact builtin container."""
    if isinstance(obj, _SKIP_INSTANCE):
        return 0, []
    slot_names, trusted = _type_info(type(obj))
    try:
        size = _getsizeof(obj)
    except Exception:  # a broken __sizeof__ must not break accounting of the rest
        size = object.__sizeof__(obj)
        trusted = False
    if trusted:
        return size, []
    children: list[Any] = []
    if isinstance(obj, dict):
        children.extend(obj.keys())
        children.extend(obj.values())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        children.extend(obj)
    elif isinstance(obj, memoryview):
        with contextlib.suppress(ValueError):  # a released view holds nothing
            children.append(obj.obj)
    elif not isinstance(obj, str | bytes | bytearray | int | float | complex):
        try:
            nbytes = getattr(obj, "nbytes", None)
        except Exception:
            nbytes = None
        if isinstance(nbytes, int) and not isinstance(nbytes, bool) and nbytes > 0:
            try:
                base = getattr(obj, "base", None)
            except Exception:
                base = None
            if base is not None:
                children.append(base)
            elif size < nbytes:
                size += nbytes
            dtype = getattr(obj, "dtype", None)
            if getattr(dtype, "hasobject", False):
                with contextlib.suppress(Exception):
                    children.extend(obj.flat)
    try:
        attrs = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        attrs = None
    if type(attrs) is dict:
        children.append(attrs)
    for name in slot_names:
        with contextlib.suppress(AttributeError):  # an unset slot holds nothing
            children.append(object.__getattribute__(obj, name))
    return size, children


def deep_sizeof(obj: object, *, max_depth: int | None = None, seen: set[int] | None = None) -> int:
    """Return the bytes held by ``obj`` and everything it references, each object once.

    ``max_depth`` (``None``: unlimited) stops the walk that many references
    below ``obj``; objects deeper than that are not counted. ``seen`` is a set
    of ``id()`` values already counted; it is updated in place so several calls
    can share it (keep the objects alive meanwhile, or ids may be reused).
    Objects in ``seen`` count zero. Raises ``TypeError``/``ValueError`` for a
    bad ``max_depth`` or a ``seen`` that is not a set. Never raises
    ``RecursionError``; see the module docstring for what is counted.
    """
    if max_depth is not None:
        check_int("max_depth", max_depth)
    if seen is None:
        kind = type(obj)
        if kind in _ATOMIC:  # the common cache value: no walk, no set
            return int(_getsizeof(obj))
        if kind in _SKIP_EXACT:
            return 0
        seen = set()
    elif not isinstance(seen, set):
        raise TypeError(f"seen must be a set of ids or None, got {type(seen).__name__} {seen!r}")

    if type(obj) in _SKIP_EXACT or id(obj) in seen:
        return 0
    seen.add(id(obj))

    # Breadth-first, one level per iteration, so depth is free to track and
    # never costs recursion. Atoms (ints, strs...) are sized on discovery
    # instead of being queued: most objects in plain data are atoms.
    getsizeof = _getsizeof
    skip = _SKIP_EXACT
    atomic = _ATOMIC
    seen_add = seen.add
    total = 0
    level: list[Any] = [obj]
    depth = 0
    while level:
        expand = max_depth is None or depth < max_depth
        queued: list[Any] = []
        push = queued.append
        for item in level:
            kind = type(item)
            children: Any
            if kind is dict:
                total += getsizeof(item)
                if not expand:
                    continue
                # A C-level snapshot: no Python code runs while it is taken.
                children = [*item, *item.values()]
            elif kind is list or kind is tuple or kind is set or kind is frozenset:
                total += getsizeof(item)
                if not expand:
                    continue
                children = item
            elif kind in atomic:
                total += getsizeof(item)
                continue
            else:
                size, children = _inspect(item)
                total += size
                if not expand:
                    continue
            for child in children:
                child_type = type(child)
                if child_type in atomic:
                    child_id = id(child)
                    if child_id not in seen:
                        seen_add(child_id)
                        total += getsizeof(child)
                elif child_type not in skip:
                    child_id = id(child)
                    if child_id not in seen:
                        seen_add(child_id)
                        push(child)
        level = queued
        depth += 1
    return int(total)
