"""A Dask worker killed (SIGKILL, a real process) while it writes a part file of the lists:
the run ends either published whole, its lists equal to a local run's row by row and no
leftover in the list folders, or not published at all with CURRENT naming the run before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from recsys import storage
from recsys.data import generate_interactions
from recsys.manifest import read_manifest

SCRIPT = str(Path(sys.executable).with_name("recsys"))
CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 16, "iterations": 5}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 10},
    "similar_items": {"top_n": 10},
    "evaluate": {"sample_users": 50, "sample_items": 50, "tune_queries": 50},
}


def _command(root: Path, name: str, run_id: str, task_runner: dict | None) -> list[str]:
    config = {**CONFIG, **({"task_runner": task_runner} if task_runner else {})}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
    command = [
        SCRIPT,
        "run",
        "--config",
        str(root / f"{name}.yaml"),
        "--interactions",
        str(root / "t.parquet"),
    ]
    return command + ["--output", str(root / "out"), "--run-id", run_id]


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect"), **extra}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    env.pop("PREFECT_API_URL", None)
    return env


def _lists(run_dir: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "models" / "als" / f"{name}.parquet")
    return frame.drop(columns=["run_id"]).sort_values(list(frame.columns[:2])).reset_index(drop=True)


def test_a_worker_killed_mid_part_leaves_a_whole_run_or_none(tmp_path):
    generate_interactions(n_users=900, n_items=150, n_clusters=6, seed=4).to_parquet(tmp_path / "t.parquet")
    before = subprocess.run(
        _command(tmp_path, "local", "before", None),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert before.returncode == 0, before.stderr[-3000:]

    flag = tmp_path / "hold"
    flag.write_text("")
    env = _env(tmp_path, RECSYS_FAILPOINT="hold-mid-part", RECSYS_HOLD=str(flag))
    task_runner = {"type": "dask", "n_workers": 2, "shard_rows": 100}
    run = subprocess.Popen(
        _command(tmp_path, "dask", "killed", task_runner),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reached = Path(f"{flag}.reached")
    try:
        deadline = time.monotonic() + 300
        while not reached.exists() or not reached.read_text().strip():
            assert run.poll() is None, run.stdout.read()[-3000:] if run.stdout else ""
            assert time.monotonic() < deadline, "no worker reached the middle of a part"
            time.sleep(0.05)
        worker = int(reached.read_text())
        assert worker != run.pid  # a worker process, not the flow
        folder = tmp_path / "out" / "runs" / ".staging-killed" / "models" / "als" / "recommendations.parquet"
        assert [p.name for p in folder.iterdir() if p.name.startswith(".part-")], "no part half written"
        os.kill(worker, signal.SIGKILL)
        flag.unlink()  # the other shards go on
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    out = tmp_path / "out"
    print(f"worker {worker} killed: the run ended with exit status {run.returncode}")
    if run.returncode == 0:
        assert storage.current_run_id(out) == "killed", output[-3000:]
        killed, local = out / "runs" / "killed", out / "runs" / "before"
        manifest = read_manifest(storage.find_run(out, "killed"))
        for name in ("recommendations", "similar_items"):
            listed = [part.path for part in getattr(manifest.models["als"].outputs, name).parts]
            on_disk = sorted(
                p.relative_to(killed).as_posix() for p in (killed / f"models/als/{name}.parquet").iterdir()
            )
            assert on_disk == listed  # no leftover, no duplicate, none missing
            expected, found = _lists(local, name), _lists(killed, name)
            pd.testing.assert_frame_equal(found.drop(columns="score"), expected.drop(columns="score"))
            assert (found["score"] - expected["score"]).abs().max() < 1e-5
    else:
        lines = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, output[-3000:]
        assert storage.current_run_id(out) == "before"
        assert not (out / "runs" / "killed").exists()
    assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".staging")]
