"""The layering of the code, as a test: who may import whom, as the table of
docs/architecture.md states it (the page is the one source of the rules).

Every import is counted, also those inside functions: a lazy import is still a
dependency. Prefect (and Dask) are imported only by ``flows/`` and the CLI above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SHARED = {"threads", "progress"}
"""Used by every part of the library that trains, builds or scores."""
NOT_SHARED = {"errors", "faults", "threads", "progress", "signals", "__init__", "console"}


def documented_rules(text: str) -> dict[str, set[str]]:
    """component -> the components it may import (besides itself), as the table of
    docs/architecture.md states them ("flows" is the package; `cli` may import every
    component, and flows)."""
    table = text[text.index("| component | may import |") :].split("\n\n")[0]
    rules: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        name, allowed = (cell.strip() for cell in row.strip("|").split("|"))
        rules[name.strip("`")] = set(re.findall(r"`([^`]+)`", allowed))
    for name, allowed in rules.items():
        if name not in NOT_SHARED:
            allowed.update(SHARED)
    rules["cli"] = (set(rules) - {"cli", "console"}) | {"flows"}
    return rules


ALLOWED: dict[str, set[str]] = documented_rules(DOC.read_text())
ORCHESTRATION = ("prefect", "prefect_dask", "dask", "distributed")


def _component(path: Path, root: Path = ROOT) -> str:
    relative = path.relative_to(root)
    if relative.parts[0] == "flows":
        return "flows"
    name = relative.parts[1]
    return name.removesuffix(".py")


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            if module in ("recsys", "flows"):  # from recsys import storage
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _sources() -> list[Path]:
    return sorted([*(ROOT / "recsys").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])


def _target(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    if parts[0] == "recsys" and len(parts) > 1:
        return parts[1]
    return None


def test_every_component_is_in_the_table():
    components = {_component(path) for path in _sources()}
    assert components <= set(ALLOWED), components - set(ALLOWED)


def test_no_upward_or_sideways_import():
    violations = []
    for path in _sources():
        source = _component(path)
        for line, module in _imports(path):
            target = _target(module)
            if target is None or target == source or target == "__version__":
                continue
            if target not in ALLOWED[source]:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {module}")
    assert not violations, "\n".join(violations)


def test_only_flows_and_the_cli_import_prefect():
    violations = []
    for path in _sources():
        if _component(path) in ("flows", "cli"):
            continue
        for line, module in _imports(path):
            if module.split(".")[0] in ORCHESTRATION:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not violations, "\n".join(violations)


def test_the_rules_catch_a_violation(tmp_path):
    """The checker itself: upward, relative and Prefect imports in a lower layer are found."""
    path = tmp_path / "recsys" / "data" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from ..stages import index_stage\n    import prefect\n")
    modules = [module for _, module in _imports(path, tmp_path)]
    assert modules == ["recsys.stages", "prefect"]
    assert _target("recsys.stages") not in ALLOWED[_component(path, tmp_path)]
