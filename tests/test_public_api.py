"""Each public module's ``__all__`` matches its definitions; every public name has a docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import memwarden

PUBLIC_MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(memwarden.__path__, "memwarden.")
    if not m.name.rsplit(".", 1)[1].startswith("_")
)


def _defined_here(module: types.ModuleType) -> set[str]:
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
            names.add(name)
    return names


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_all_matches_definitions(modname: str) -> None:
    module = importlib.import_module(modname)
    exported = set(getattr(module, "__all__", ()))
    assert hasattr(module, "__all__"), f"{modname} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{modname}.__all__ names undefined {missing}"
    unlisted = _defined_here(module) - exported
    assert not unlisted, f"{modname} defines public {sorted(unlisted)} not in __all__"


@pytest.mark.parametrize("modname", ["memwarden", *PUBLIC_MODULES])
def test_public_names_have_docstrings(modname: str) -> None:
    module = importlib.import_module(modname)
    assert module.__doc__, f"{modname} has no module docstring"
    undocumented = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                undocumented.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member):
                        continue
                    if not inspect.getdoc(member):
                        undocumented.append(f"{name}.{attr}")
    assert not undocumented, f"{modname}: undocumented {undocumented}"


def test_top_level_reexports_are_the_same_objects() -> None:
    for name in memwarden.__all__:
        assert hasattr(memwarden, name), name
