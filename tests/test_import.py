"""``import memwarden`` is cheap: heavy and optional parts load on first use.

Checked in fresh interpreters, so what another test imported cannot hide a
module loaded too early. Timings live in ``benchmarks/import_time.py``; here
only which modules are loaded, which is deterministic.
"""

from __future__ import annotations

import json
import subprocess
import sys

import memwarden

HEAVY = (
    "tracemalloc",
    "ctypes",
    "ssl",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "aiofiles",
    "lzma",
    "bz2",
)


def _loaded_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out))


def test_import_memwarden_loads_no_heavy_module() -> None:
    loaded = _loaded_after("import memwarden")
    assert not loaded & set(HEAVY), f"import memwarden loaded {sorted(loaded & set(HEAVY))}"
    # Nor the feature modules: only the errors and the size helpers come with the package.
    ours = {m for m in loaded if m.startswith("memwarden.")}
    assert ours == {"memwarden.errors", "memwarden.units"}


def test_a_name_loads_its_module_on_first_use() -> None:
    loaded = _loaded_after("from memwarden import LeakDetector")
    assert "memwarden.leaks" in loaded
    assert "memwarden.profiler" not in loaded
    assert "tracemalloc" not in loaded


def test_every_exported_name_is_reachable_and_listed() -> None:
    names = set(memwarden.__all__)
    assert len(names) == len(memwarden.__all__), "duplicate names in __all__"
    assert names <= set(dir(memwarden))
    # dir() shows public names and dunders, never the import machinery.
    assert {n for n in dir(memwarden) if not n.startswith("_")} == names - {"__version__"}
    for name in sorted(names):
        value = getattr(memwarden, name)
        assert value is not None, name
        if hasattr(value, "__module__") and name != "__version__":
            module = sys.modules[value.__module__]
            assert getattr(module, name, value) is value


def test_star_import_and_from_import_see_the_same_objects() -> None:
    namespace: dict[str, object] = {}
    exec("from memwarden import *", namespace)
    assert set(memwarden.__all__) <= set(namespace)
    from memwarden import MemoryManager, Warden
    from memwarden.budget import MemoryManager as direct
    from memwarden.warden import Warden as direct_warden

    assert MemoryManager is direct and Warden is direct_warden


def test_submodules_are_attributes_and_unknown_names_raise() -> None:
    assert memwarden.budget.MemoryManager is memwarden.MemoryManager
    assert memwarden.testing.StaticProbe is not None
    try:
        memwarden.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown attribute did not raise")
