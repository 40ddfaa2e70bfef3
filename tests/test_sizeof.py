"""deep_sizeof: what it counts, cycles and sharing, depth bounds, arrays, bad input."""

from __future__ import annotations

import sys
from collections import OrderedDict, defaultdict, deque, namedtuple
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memwarden.sizeof import deep_sizeof

gs = sys.getsizeof


def _reference(obj: Any, seen: set[int] | None = None) -> int:
    """A plain recursive walk with the same rules, for plain data only."""
    seen = set() if seen is None else seen
    if obj is None or isinstance(obj, bool) or id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = gs(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            size += _reference(k, seen) + _reference(v, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            size += _reference(item, seen)
    return size


def test_atoms_are_their_getsizeof() -> None:
    for value in (12345678901234567890, 1.5, 2j, "hello world", b"bytes", bytearray(b"abc")):
        assert deep_sizeof(value) == gs(value)


def test_singletons_count_zero() -> None:
    for value in (None, True, False, Ellipsis, NotImplemented):
        assert deep_sizeof(value) == 0
    assert deep_sizeof([None, True]) == gs([None, True])


def test_list_of_distinct_strings() -> None:
    items = [f"item-{i}" for i in range(10)]
    assert deep_sizeof(items) == gs(items) + sum(gs(s) for s in items)


def test_dict_counts_keys_and_values() -> None:
    data = {f"key-{i}": f"value-{i}" * 3 for i in range(5)}
    expected = gs(data) + sum(gs(k) + gs(v) for k, v in data.items())
    assert deep_sizeof(data) == expected


def test_shared_object_counted_once() -> None:
    shared = "x" * 1000
    assert deep_sizeof([shared, shared, shared]) == gs([shared] * 3) + gs(shared)


def test_cycles_terminate() -> None:
    a: list[Any] = []
    a.append(a)
    assert deep_sizeof(a) == gs(a)
    d: dict[str, Any] = {}
    d["self"] = d
    assert deep_sizeof(d) == gs(d) + gs("self")


def test_other_containers() -> None:
    payload = "p" * 50
    for container in (deque([payload]), {payload}, frozenset([payload]), (payload,)):
        assert deep_sizeof(container) == gs(container) + gs(payload)


def test_container_subclasses_are_walked() -> None:
    payload = "q" * 64
    od = OrderedDict(k=payload)
    dd: defaultdict[str, str] = defaultdict(str, k=payload)
    Point = namedtuple("Point", "x y")
    pt = Point(payload, payload)
    # An OrderedDict instance carries its own attribute dict, counted like any other.
    assert deep_sizeof(od) == gs(od) + gs(od.__dict__) + gs("k") + gs(payload)
    assert deep_sizeof(dd) == gs(dd) + gs("k") + gs(payload)  # default_factory is a class
    assert deep_sizeof(pt) == gs(pt) + gs(payload)


class _WithDict:
    def __init__(self, value: object) -> None:
        self.value = value


class _WithSlots:
    __slots__ = ("__hidden", "unset", "value")

    def __init__(self, value: object, hidden: object) -> None:
        self.value = value
        self.__hidden = hidden


def test_instance_dict_is_walked() -> None:
    payload = "z" * 300
    obj = _WithDict(payload)
    assert deep_sizeof(obj) == gs(obj) + gs(obj.__dict__) + gs("value") + gs(payload)


def test_slots_are_walked_including_mangled_names() -> None:
    payload, hidden = "v" * 200, "h" * 400
    obj = _WithSlots(payload, hidden)
    assert deep_sizeof(obj) == gs(obj) + gs(payload) + gs(hidden)


def test_program_objects_are_not_counted() -> None:
    holder = _WithDict(deep_sizeof)
    holder.__dict__["module"] = sys
    holder.__dict__["cls"] = _WithDict
    holder.__dict__["method"] = holder.__init__
    expected = gs(holder) + gs(holder.__dict__) + sum(gs(k) for k in holder.__dict__)
    assert deep_sizeof(holder) == expected


def test_numpy_owning_array_counts_its_buffer_once() -> None:
    arr = np.zeros(10_000)
    assert deep_sizeof(arr) == gs(arr)
    assert deep_sizeof(arr) >= arr.nbytes


def test_numpy_view_counts_header_plus_base_once() -> None:
    base = np.zeros(10_000)
    view = base[10:20]
    assert deep_sizeof(view) == gs(view) + gs(base)
    other = base[100:200]
    both = [view, other]
    assert deep_sizeof(both) == gs(both) + gs(view) + gs(other) + gs(base)
    assert deep_sizeof([base, view]) == gs([base, view]) + gs(base) + gs(view)


def test_numpy_object_array_walks_elements() -> None:
    payload = "o" * 500
    arr = np.empty(2, dtype=object)
    arr[0] = payload
    arr[1] = payload
    assert deep_sizeof(arr) == gs(arr) + gs(payload)


class _FakeTensor:
    """Like a tensor: a small header whose __sizeof__ does not include the storage."""

    __slots__ = ()
    nbytes = 1 << 20


def test_nbytes_without_base_counts_header_plus_nbytes() -> None:
    tensor = _FakeTensor()
    assert deep_sizeof(tensor) == gs(tensor) + (1 << 20)


def test_memoryview_counts_the_exported_object() -> None:
    data = b"m" * 4096
    view = memoryview(data)
    assert deep_sizeof(view) == gs(view) + gs(data)
    view.release()
    assert deep_sizeof(view) == gs(view)


def test_deep_nesting_never_recurses() -> None:
    nested: list[Any] = []
    for _ in range(50_000):
        nested = [nested]
    assert deep_sizeof(nested) == 50_000 * gs([None]) + gs([])


def test_max_depth_bounds_the_walk() -> None:
    inner = ["leaf" * 10]
    outer = [inner]
    assert deep_sizeof(outer, max_depth=0) == gs(outer)
    assert deep_sizeof(outer, max_depth=1) == gs(outer) + gs(inner)
    assert deep_sizeof(outer, max_depth=2) == deep_sizeof(outer)
    data = {"k": "v" * 100}
    assert deep_sizeof(data, max_depth=0) == gs(data)


def test_shared_seen_counts_across_calls_once() -> None:
    shared = "s" * 1000
    first, second = [shared], [shared]
    seen: set[int] = set()
    a = deep_sizeof(first, seen=seen)
    b = deep_sizeof(second, seen=seen)
    assert a == gs(first) + gs(shared)
    assert b == gs(second)
    assert deep_sizeof(first, seen=seen) == 0


def test_generators_are_not_consumed() -> None:
    gen = (i for i in range(3))
    deep_sizeof([gen])
    assert list(gen) == [0, 1, 2]


class _BrokenSizeof:
    def __sizeof__(self) -> int:
        raise RuntimeError("no size for you")


class _MeasuresItself:
    """Like a pandas object: a Python __sizeof__ that already includes the contents."""

    def __init__(self) -> None:
        self.payload = "p" * 5000

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + len(self.payload)


def test_python_level_sizeof_is_trusted_not_double_counted() -> None:
    obj = _MeasuresItself()
    assert deep_sizeof(obj) == gs(obj)
    assert gs(obj) > 5000


def test_broken_sizeof_does_not_break_the_walk() -> None:
    payload = "b" * 100
    result = deep_sizeof([_BrokenSizeof(), payload])
    assert result > gs(payload)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"max_depth": -1}, ValueError, "max_depth"),
        ({"max_depth": 1.5}, TypeError, "max_depth"),
        ({"max_depth": True}, TypeError, "max_depth"),
        ({"seen": [1, 2]}, TypeError, "seen"),
    ],
)
def test_bad_input(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        deep_sizeof([1], **kwargs)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5), inner, max_size=5)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=40,
)


@given(_json)
def test_matches_a_plain_recursive_walk(data: Any) -> None:
    assert deep_sizeof(data) == _reference(data)
    assert deep_sizeof(data) >= (0 if data is None or isinstance(data, bool) else gs(data))
