"""recsys.models sits low: it imports only recsys.errors of the project (and the leaf
modules recsys.threads and recsys.progress, which import nothing of it), and implicit only
when a model trains, so loading a config stays light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import recsys.models

PACKAGE = Path(recsys.models.__file__).parent
LEAVES = ("recsys.errors", "recsys.threads", "recsys.progress")


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_models_import_only_errors_of_the_project():
    for path in sorted(PACKAGE.glob("*.py")):
        for module in _imported_modules(path):
            if module.split(".")[0] == "recsys":
                assert module in LEAVES or module.startswith("recsys.models"), (path.name, module)
            assert module.split(".")[0] not in ("prefect", "flows", "implicit"), (path.name, module)


def _loaded_after(code: str) -> list[str]:
    watched = ["implicit", "prefect", "recsys.config", "recsys.storage", "recsys.pipeline"]
    script = f"import json, sys\n{code}\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PACKAGE.parents[1]
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_registry_loads_nothing_above_it():
    assert _loaded_after("import recsys.models") == []


def test_loading_a_config_does_not_import_implicit():
    loaded = _loaded_after("from recsys.config import load_config; load_config('configs/demo.yaml')")
    assert "implicit" not in loaded and "prefect" not in loaded, loaded
