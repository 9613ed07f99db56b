"""What the console script imports: ``--version`` and ``--help`` load none of the heavy
libraries (Prefect, numpy, pandas, pyarrow), and a bad input table is one line before
Prefect is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

HEAVY = ("prefect", "flows", "numpy", "pandas", "pyarrow", "scipy", "implicit")

# runs the console script's main in a fresh interpreter, then prints what it imported
PROBE = (
    "import json, sys\n"
    "from recsys.console import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "sys.stdout.flush()\n"
    "print(json.dumps({'code': code, 'modules': sorted({m.split('.')[0] for m in sys.modules})}), "
    "file=sys.stderr)\n"
)


def _probe(*args: str, cwd=None) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    *lines, last = done.stderr.strip().splitlines()
    result = json.loads(last)
    return result["code"], set(result["modules"]), "\n".join(lines)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["recommend", "--help"]])
def test_version_and_help_import_no_heavy_library(args):
    code, modules, _ = _probe(*args)
    assert code == 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.parametrize("bad", ["missing", "no_item_column", "nan_weight"])
def test_a_bad_table_is_one_line_before_prefect_is_imported(tmp_path, bad):
    path = tmp_path / "interactions.parquet"
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "weight": [1.0, 2.0], "timestamp": [1, 2]})
    if bad == "no_item_column":
        frame = frame.drop(columns="item_id")
    elif bad == "nan_weight":
        frame["weight"] = [1.0, float("nan")]
    if bad != "missing":
        frame.to_parquet(path)
    code, modules, stderr = _probe(
        "run", "--interactions", str(path), "--output", str(tmp_path / "out"), cwd=tmp_path
    )
    assert code == 2
    assert stderr.startswith("recsys: error: ") and len(stderr.splitlines()) == 1, stderr
    assert "prefect" not in modules
