"""Kills at each fail point of a real `recsys run` process, a reader looping over the
published files meanwhile, a second writer, and the outer timeout: CURRENT always names
a complete run whose files are unchanged, and the next run cleans up."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions
from recsys.manifest import read_manifest

SCRIPT = str(Path(sys.executable).with_name("recsys"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    generate_interactions(n_users=150, n_items=80, n_clusters=4, seed=6).to_parquet(root / "t.parquet")
    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"n_trees": 5, "backend": "annoy"},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"sample_users": 30, "sample_items": 30, "tune_queries": 30},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("RECSYS_FAILPOINT", None)
    return root, env


def run(workspace, *extra, failpoint=None, timeout=300):
    """Run `recsys run` in its own process group; afterwards end whatever it left running
    (a process killed with SIGKILL leaves Prefect's temporary API server behind)."""
    root, env = workspace
    env = {**env, **({"RECSYS_FAILPOINT": failpoint} if failpoint else {})}
    command = [
        SCRIPT,
        "run",
        "--config",
        str(root / "c.yaml"),
        "--interactions",
        str(root / "t.parquet"),
        "--output",
        str(root / "out"),
        *extra,
    ]
    with open(root / "stdout.log", "w+") as stdout, open(root / "stderr.log", "w+") as stderr:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, env=env, cwd=root, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(command, returncode, stdout.read(), stderr.read())


def snapshot(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def base(workspace):
    result = run(workspace, "--run-id", "base")
    assert result.returncode == 0, result.stderr
    out = workspace[0] / "out"
    return out, snapshot(out / "runs" / "base")


class Reader(threading.Thread):
    """Reads CURRENT, its manifest and its recommendations in a loop; keeps any error."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.errors, self.reads, self.stop = out, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                published = storage.find_run(self.out)
                path = published.path(read_manifest(published).models["als"].outputs.recommendations.path)
                assert len(pd.read_parquet(path)) > 0
                self.reads += 1
            except Exception as exc:  # noqa: BLE001  (every failure is what the test looks for)
                self.errors.append(repr(exc))


@pytest.fixture(scope="module")
def reader(base):
    thread = Reader(base[0])
    thread.start()
    yield thread
    thread.stop.set()
    thread.join(10)


@pytest.mark.parametrize(
    "failpoint", ["after-fit", "index-before-replace", "parquet-before-replace", "publish-before-success"]
)
def test_kill_leaves_current_and_previous_run_intact(workspace, base, reader, failpoint):
    out, files = base
    result = run(workspace, "--run-id", f"killed-{failpoint}", failpoint=failpoint)
    assert result.returncode == -signal.SIGKILL
    assert storage.current_run_id(out) == "base"
    assert snapshot(out / "runs" / "base") == files
    complete = [r["run_id"] for r in storage.list_runs(out) if r["status"] == "complete"]
    assert complete == ["base"]  # the killed run is never taken as complete
    assert not reader.errors, reader.errors[:3]


def test_kill_after_success_leaves_a_complete_run_that_is_not_current(workspace, base, reader):
    out, files = base
    result = run(workspace, "--run-id", "late", failpoint="publish-before-current")
    assert result.returncode == -signal.SIGKILL
    assert storage.current_run_id(out) == "base"
    assert snapshot(out / "runs" / "base") == files
    assert (out / "runs" / "late" / "_SUCCESS").exists()
    assert not reader.errors, reader.errors[:3]


def test_next_run_cleans_up_and_publishes(workspace, base, reader):
    out, _ = base
    result = run(workspace, "--run-id", "after")
    assert result.returncode == 0, result.stderr
    assert storage.current_run_id(out) == "after"
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert not [n for n in names if n.startswith(".")]
    assert "killed-publish-before-success" not in names  # incomplete folder removed
    statuses = {r["run_id"]: r["status"] for r in storage.list_runs(out)}
    assert set(statuses.values()) == {"complete"}
    assert reader.reads > 0 and not reader.errors, reader.errors[:3]


def test_a_second_writer_is_refused(workspace, base):
    out, _ = base
    with storage.root_lock(out):
        result = run(workspace, "--run-id", "second")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"recsys: error: {out}: another recsys run is writing to this output root"
    ]
    assert not (out / "runs" / "second").exists()


def test_outer_timeout_ends_the_run(workspace, base):
    out, _ = base
    before = storage.current_run_id(out)
    result = run(workspace, "--run-id", "slow", "--timeout", "2")
    assert result.returncode == 3
    assert "did not finish within 2 s" in result.stderr
    assert storage.current_run_id(out) == before
