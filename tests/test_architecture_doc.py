"""docs/architecture.md: its import table is what tests/test_import_rules.py checks (read
from the page), it names every component there is, and its layout names every module."""

from __future__ import annotations

from pathlib import Path

from tests.test_import_rules import ALLOWED, _component, _sources, documented_rules

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_the_table_names_every_component_and_only_those():
    components = {_component(path) for path in _sources()}
    assert set(ALLOWED) == components, set(ALLOWED) ^ components


def test_the_table_is_read_as_stated():
    """A row of the page is what the rule test enforces: a made-up table reads back."""
    text = (
        "| component | may import |\n|---|---|\n| `errors` | nothing |\n| `api` | `errors`, `storage` |\n\n"
    )
    rules = documented_rules(text)
    assert rules["errors"] == set()
    assert rules["api"] == {"errors", "storage", "threads", "progress"}
    assert rules["cli"] == {"errors", "api", "flows"}


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
