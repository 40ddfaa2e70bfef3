"""Print pip constraints pinning every runtime dependency to the floor pyproject.toml gives.

With ``--check``, verify instead that the running interpreter has exactly those versions
installed, so the minimum-versions job cannot pass on newer ones by accident.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floors() -> dict[str, str]:
    """Map each runtime dependency to its lowest allowed version."""
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found: dict[str, str] = {}
    for dep in deps:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?", dep)
        if match is None:
            raise SystemExit(f"runtime dependency {dep!r} has no '>=' floor to test")
        name = re.sub(r"\[.*\]", "", match.group(1))
        found[name] = match.group(2)
    return found


def _release(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def main() -> None:
    """Print the constraints, or check them with ``--check``."""
    pins = floors()
    if "--check" in sys.argv[1:]:
        wrong = {n: version(n) for n, v in pins.items() if _release(version(n)) != _release(v)}
        if wrong:
            raise SystemExit(f"minimum-versions job runs newer versions than the floors: {wrong}")
        return
    for name, floor in pins.items():
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
