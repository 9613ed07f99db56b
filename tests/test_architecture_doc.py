"""docs/architecture.md states exactly the import rules that tests/test_import_rules.py
checks."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_import_rules import ALLOWED

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
SHARED = {"threads", "progress"}  # used by every part of the library that trains, builds or scores
NOT_SHARED = {"errors", "faults", "threads", "progress", "signals", "__init__", "console"}


def _stated() -> dict[str, set[str]]:
    text = DOC.read_text()
    table = text[text.index("| component | may import |") :].split("\n\n")[0]
    stated: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        name, allowed = (cell.strip() for cell in row.strip("|").split("|"))
        stated[name.strip("`")] = set(re.findall(r"`([^`]+)`", allowed))
    return stated


def test_the_documented_table_is_the_tested_one():
    stated = _stated()
    assert set(stated) == set(ALLOWED), set(stated) ^ set(ALLOWED)
    for name, allowed in ALLOWED.items():
        if name == "cli":  # "every component, and flows"
            expected = (set(ALLOWED) - {"cli", "console"}) | {"flows"}
        else:
            expected = stated[name] | (set() if name in NOT_SHARED else SHARED)
        assert allowed == expected, f"{name}: the doc says {sorted(expected)}, the test {sorted(allowed)}"


def test_the_layout_names_every_module():
    """Every module of recsys/ and flows/ (and every package) appears in the Layout block."""
    text = DOC.read_text()
    layout = text[text.index("## Layout") :].split("```")[1]
    root = DOC.parents[1]
    missing = []
    for path in sorted([*(root / "recsys").rglob("*.py"), *(root / "flows").glob("*.py")]):
        if path.name == "__init__.py" and path.parent.name in ("recsys", "flows"):
            continue
        name = f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        if name not in layout and path.stem not in layout:
            missing.append(str(path.relative_to(root)))
    assert not missing, f"docs/architecture.md's Layout does not name: {', '.join(missing)}"
