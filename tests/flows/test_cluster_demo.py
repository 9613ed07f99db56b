"""`make cluster-demo` (python -m flows.cluster_demo): a Prefect server, a Dask scheduler and
two workers started as processes of their own, a run scored on them through `recsys run`
that publishes the same lists as a local run, and every process stopped afterwards: after
success, when a piece does not start, and on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recsys import run_pipeline, storage
from recsys.data import generate_interactions

pytestmark = pytest.mark.slow

CONFIG = {
    "seed": 7,
    "models": [
        {"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}},
        {"name": "popular", "type": "popular"},
    ],
    "index": {"backend": "annoy", "annoy": {"n_trees": 5}},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "evaluate": {"sample_users": 50, "sample_items": 50, "tune_queries": 50},
}


def _demo(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cluster_demo", "--config", str(root / "c.yaml"),
            "--interactions", str(root / "t.parquet"), "--output", str(root / "out"), *args]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster")
    generate_interactions(n_users=300, n_items=100, n_clusters=4, seed=3).to_parquet(root / "t.parquet")
    (root / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    return root


def _stopped_pids(stdout: str) -> list[int]:
    found = re.findall(r"^stopped pids: ([\d ]+)$", stdout, flags=re.MULTILINE)
    assert len(found) == 1, stdout
    return [int(pid) for pid in found[0].split()]


def _assert_gone(pids: list[int]) -> None:
    """Each process the demo started is gone, and so is every process of its group (the
    workers' nannies' children, the server's own)."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def _lists(run_dir: Path) -> dict[str, pd.DataFrame]:
    lists = {}
    for path in sorted(run_dir.glob("models/*/*.parquet")):
        frame = pd.read_parquet(path).drop(columns=["run_id"])
        key = [column for column in frame.columns if column != "score"]
        lists[f"{path.parent.name}/{path.stem}"] = frame.sort_values(key).reset_index(drop=True)
    return lists


def test_the_demo_scores_on_its_cluster_and_stops_it(inputs):
    done = subprocess.run(_demo(inputs), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    address = re.search(r"^dask scheduler on (tcp://127\.0\.0\.1:\d+)", done.stdout, flags=re.MULTILINE)
    assert address, done.stdout
    assert re.search(r"^prefect server on http://127\.0\.0\.1:\d+/api", done.stdout, flags=re.MULTILINE)
    assert "2 workers connected" in done.stdout
    pids = _stopped_pids(done.stdout)
    assert len(pids) == 5  # server, scheduler, two workers, recsys run
    _assert_gone(pids)

    published = re.search(r"^published run: (\S+)", done.stdout, flags=re.MULTILINE)
    assert published, done.stdout
    run_dir = Path(published.group(1))
    manifest = storage.read_json(run_dir / "manifest.json")
    assert manifest["config"]["task_runner"]["type"] == "dask"
    assert manifest["config"]["task_runner"]["address"] == address.group(1)
    for model in ("als", "popular"):
        assert manifest["models"][model]["rows"]["recommendations"] == 300 * 5
        prefix = f"  models/{model}/"
        listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith(prefix)]
        assert f"models/{model}/recommendations.parquet" in "\n".join(listed), done.stdout
        assert all((run_dir / name).is_file() for name in listed)

    # the same config run locally, in this process: the same lists, row by row
    run_pipeline(inputs / "t.parquet", CONFIG, output=inputs / "local", run_id="local")
    expected, found = _lists(inputs / "local" / "runs" / "local"), _lists(run_dir)
    assert sorted(found) == sorted(expected) and len(found) == 4
    for name, frame in expected.items():
        key = [column for column in frame.columns if column != "score"]
        pd.testing.assert_frame_equal(found[name][key], frame[key], obj=name)
        assert ((found[name]["score"] - frame["score"]).abs() <= 1e-5 + 1e-5 * frame["score"].abs()).all()


def test_a_taken_port_is_one_line_and_nothing_is_left(inputs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = _demo(inputs, "--scheduler-port", port)
        command[command.index("--output") + 1] = str(tmp_path / "out")
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("cluster-demo: the Dask scheduler exited with status"), done.stderr
    assert "Address already in use" in done.stderr
    pids = _stopped_pids(done.stdout)
    assert len(pids) == 2  # the Prefect server it had started, and the scheduler
    _assert_gone(pids)
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "stopped by Ctrl-C")],
)
def test_a_signal_stops_every_piece(inputs, tmp_path, signum, status, said):
    command = _demo(inputs)
    command[command.index("--output") + 1] = str(tmp_path / "out")
    demo = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: Ctrl-C is not ignored (a background job of a shell ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:  # the server boots, the workers start: stop it now
            lines.append(line)
            if line.startswith("dask worker 2 started"):
                break
        demo.send_signal(signum)
        rest, errors = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == status, "".join(lines) + rest + errors
    assert errors == f"cluster-demo: {said}\n"
    pids = _stopped_pids("".join(lines) + rest)
    assert len(pids) == 4
    _assert_gone(pids)


def test_a_bad_config_is_one_line_before_anything_starts(tmp_path):
    (tmp_path / "c.yaml").write_text("models: [{name: a, type: nope}]\n")
    command = [sys.executable, "-m", "flows.cluster_demo", "--config", str(tmp_path / "c.yaml")]
    done = subprocess.run([*command, "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "unknown model type 'nope'" in done.stderr, done.stderr
    assert "stopped pids" not in done.stdout
