"""Every Python example in the README and docs/ runs exactly as written.

Each fenced ``python`` block is run as its own script (blocks are
self-contained), so a page can never drift from the code it documents.
"""

from __future__ import annotations

import re
import runpy
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Fences may be indented (inside list items); the closing fence matches the opening indent.
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.M | re.S)
PAGES = [
    ROOT / "README.md",
    ROOT / "docs" / "quickstart.md",
    ROOT / "docs" / "seed-api-map.md",
    *sorted((ROOT / "docs" / "guides").glob("*.md")),
]
MUST_HAVE_EXAMPLES = {"README.md", "quickstart.md", "seed-api-map.md"}


def _blocks(page: Path) -> list[str]:
    return [textwrap.dedent(m.group(2)) for m in FENCE.finditer(page.read_text())]


def _cases() -> list[tuple[Path, int, str]]:
    return [(page, i, code) for page in PAGES for i, code in enumerate(_blocks(page))]


@pytest.mark.parametrize(
    ("page", "index", "code"),
    _cases(),
    ids=[f"{page.relative_to(ROOT)}#{i}" for page, i, _ in _cases()],
)
def test_example_runs_as_written(page: Path, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / f"{page.stem}_{index}.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="__main__")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_exists_and_links_resolve(page: Path) -> None:
    text = page.read_text()
    if page.name in MUST_HAVE_EXAMPLES:
        assert _blocks(page), f"{page} has no python example"
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_quick_start_installs_from_a_checkout() -> None:
    # memwarden is not on PyPI yet: a newcomer copying the first command must succeed.
    text = (ROOT / "docs" / "quickstart.md").read_text()
    first_shell = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_shell is not None
    commands = first_shell.group(1)
    assert "pip install ." in commands
    for page in PAGES:
        assert "pip install memwarden" not in page.read_text(), page.name


@pytest.mark.parametrize(
    ("page", "claim"),
    [("quickstart.md", "most == 4"), ("guides/budgets.md", "most == 12")],
)
def test_concurrency_examples_assert_what_they_claim(page: str, claim: str) -> None:
    # The first example of each page holds its reservation across an await, so the
    # concurrency it describes really happens, and asserts it.
    code = _blocks(ROOT / "docs" / page)[0]
    assert "await anyio.sleep" in code
    assert claim in code
