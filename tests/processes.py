"""Running the real `recsys` command in its own process group, for tests that need a
process: exit status, stderr lines, kills and signals."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

RECSYS = str(Path(sys.executable).with_name("recsys"))

SMALL_RUN_CONFIG = {
    "input": {"path": "t.parquet"},
    "output": {"root": "out"},
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"n_trees": 5, "backend": "annoy"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 30, "sample_items": 30, "tune_queries": 30},
}
"""A run of seconds for the tests that drive the console script: one small ALS model on
``t.parquet`` beside the config, published under ``out``."""


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a test process: its own Prefect home."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        **extra,
    }
    for key in ("PREFECT_API_URL", "RECSYS_FAILPOINT"):
        if key not in extra:
            env.pop(key, None)
    return env


def recsys(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 300, failpoint: str | None = None
) -> subprocess.CompletedProcess:
    """Run `recsys ARGS` to the end; afterwards end whatever it left running."""
    env = {**env, **({"RECSYS_FAILPOINT": failpoint} if failpoint else {})}
    with open(cwd / ".stdout.log", "w+") as stdout, open(cwd / ".stderr.log", "w+") as stderr:
        process = subprocess.Popen(
            [RECSYS, *args], stdout=stdout, stderr=stderr, env=env, cwd=cwd, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess([RECSYS, *args], returncode, stdout.read(), stderr.read())


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below a folder, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
