"""BLAS threads as a user gets them: no OPENBLAS_*, OMP_* or MKL_* variable set, and the
product pins implicit's fits to one BLAS thread itself, with no thread warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.data import generate_interactions

RECSYS = str(Path(sys.executable).with_name("recsys"))
THREAD_WARNING = "OpenBLAS is configured to use"


def clean_environment(home: Path) -> dict[str, str]:
    """What a user's shell has: a PATH and a HOME, no thread variable."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    env["PREFECT_HOME"] = str(home / "prefect")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # a loaded test machine
    assert not [key for key in env if key.startswith(("OPENBLAS_", "OMP_", "MKL_"))]
    return env


FIT_PROBE = """
import json
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_info
from recsys.data import generate_interactions
from recsys.models import get_model_type

frame = generate_interactions(n_users=300, n_items=400, n_clusters=5, seed=1)
matrix = sp.csr_matrix((frame["weight"].astype(np.float32), (frame["user_id"], frame["item_id"])))
inside = []

def progress(done, user_factors, item_factors):
    inside.append([(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()])

get_model_type("{model}").fit({{"factors": 16, "iterations": 2}}, matrix, 1, progress=progress)
after = [(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()]
print(json.dumps({{"inside": inside[0], "after": after}}))
"""


@pytest.mark.parametrize("model", ["als", "bpr"])
def test_a_fit_in_a_clean_process_runs_blas_at_one_thread(model, tmp_path):
    """In a fresh process where nothing has imported implicit yet: every BLAS the fit can
    use (numpy's and scipy's OpenBLAS, the one implicit's import loads) is at one thread
    inside the fit, and every core is given back after it."""
    done = subprocess.run(
        [sys.executable, "-c", FIT_PROBE.format(model=model)],
        env=clean_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert THREAD_WARNING not in done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    blas_inside = [threads for api, threads in seen["inside"] if api != "openmp"]
    assert len(blas_inside) >= 2, seen  # numpy's BLAS and the one implicit loads
    assert set(blas_inside) == {1}, seen
    blas_after = [threads for api, threads in seen["after"] if api != "openmp"]
    assert set(blas_after) == {os.cpu_count()}, seen


def test_recsys_run_in_a_clean_environment_prints_no_thread_warning(tmp_path):
    """The installed console script with no thread variable: no implicit warning, and the
    run's log reports one BLAS thread inside each implicit fit."""
    frame = generate_interactions(n_users=300, n_items=400, n_clusters=5, seed=2)
    frame.to_parquet(tmp_path / "t.parquet")
    config = {
        "models": [
            {"name": "als", "type": "als", "params": {"factors": 16, "iterations": 3}},
            {"name": "bpr", "type": "bpr", "params": {"factors": 16, "iterations": 3}},
        ],
        "evaluate": {"split": {"method": "random"}, "sample_users": 50, "sample_items": 50},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [RECSYS, "run", "--config", "c.yaml", "--interactions", "t.parquet", "--output", "out"],
        env=clean_environment(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert THREAD_WARNING not in output
    for name in ("als", "bpr"):
        # trained twice: on the training split, then on all the input for publication
        lines = [line for line in output.splitlines() if f"{name}: trained in" in line]
        assert len(lines) == 2 and all("(BLAS threads in the fit: 1)" in line for line in lines), lines
