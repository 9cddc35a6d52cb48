"""docs/extending.md shows exactly the example files the suite registers and runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- example: (?P<path>[^ ]+) -->\n```python\n(?P<code>.*?)```\n", re.DOTALL)


def test_every_example_block_is_the_file_it_names() -> None:
    page = (ROOT / "docs" / "extending.md").read_text()
    blocks = list(BLOCK.finditer(page))
    named = {b["path"] for b in blocks}
    assert named == {
        "tests/strategies/example_strategy.py",
        "tests/adapters/example_kind.py",
        "tests/client/tasks/example_task/__init__.py",
        "tests/client/tasks/example_task/config.py",
        "tests/client/tasks/example_task/task.py",
    }
    for block in blocks:
        assert block["code"] == (ROOT / block["path"]).read_text(), f"docs/extending.md is stale for {block['path']}"


def test_the_docs_index_links_the_page() -> None:
    assert "extending.md" in (ROOT / "docs" / "README.md").read_text()
