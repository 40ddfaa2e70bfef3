"""The caching guide's examples print exactly what their comments say they print."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [DOCS / "guides" / "caching.md"]
FENCE = re.compile(r"```python\n(.*?)```", re.S)
# `print(...)   # expected` comments in the guide
EXPECTED = re.compile(r"^print\(.*\)\s+#\s+(.*)$", re.M)


def _blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.stem}-{i}", code)
        for page in PAGES
        for i, code in enumerate(FENCE.findall(page.read_text()))
    ]


@pytest.mark.parametrize(("name", "code"), _blocks(), ids=[name for name, _ in _blocks()])
def test_block_runs_and_prints_what_it_claims(
    name: str, code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out.splitlines()
    claims = EXPECTED.findall(code)
    # Comments that describe rather than quote output are skipped.
    quoted = [c for c in claims if not c.startswith("every ")]
    assert printed[: len(quoted)] == quoted
