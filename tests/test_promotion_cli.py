"""The promotion gate through the real console script: after two good runs, a run on 30%
of the users exits 4 with one line on stderr, its flow run ends Failed with the reason,
CURRENT and latest stay on the second run; `recsys runs` shows it held; `recsys promote`
moves both to it; `--no-gate` makes a run current whatever it measures."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions
from tests.processes import environment, recsys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("promotion")
    frame = generate_interactions(n_users=300, n_items=80, n_clusters=4, seed=4)
    frame.to_parquet(root / "full.parquet", index=False)
    users = frame["user_id"].drop_duplicates().sample(frac=0.3, random_state=1)
    frame[frame["user_id"].isin(users)].to_parquet(root / "part.parquet", index=False)
    config = {
        "output": {"root": "out"},
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"backend": "exact"},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"sample_users": 30, "sample_items": 30},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    return root, environment(root)


def _run(workspace, table, run_id, *extra):
    root, env = workspace
    return recsys(
        "run", "--config", "c.yaml", "--interactions", table, "--run-id", run_id, *extra, env=env, cwd=root
    )


def _statuses(workspace) -> dict[str, tuple[str, bool]]:
    root, env = workspace
    result = recsys("runs", "--output", "out", "--json", env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    return {row["run_id"]: (row["status"], row["current"]) for row in json.loads(result.stdout)}


def test_a_collapsed_input_is_held_until_promoted(workspace):
    root, env = workspace
    out = root / "out"
    for run_id in ("first", "second"):
        result = _run(workspace, "full.parquet", run_id)
        assert result.returncode == 0, result.stderr
    assert storage.current_run_id(out) == "second" and os.readlink(out / "latest") == "runs/second"

    held = _run(workspace, "part.parquet", "third")
    assert held.returncode == 4, held.stderr
    (line,) = held.stderr.splitlines()
    assert line.startswith(
        "recsys: error: run third is complete but not promoted: users fell from 300 to 90 (-70.0%; "
        "promotion.max_input_drop allows 50%)"
    )
    assert "against the current run second" in line and "`recsys promote third`" in line
    assert "Traceback" not in held.stdout + held.stderr
    # the flow run ends Failed, the reason as its message
    assert "Finished in state Failed('run third is complete but not promoted: users fell" in held.stdout
    assert storage.current_run_id(out) == "second" and os.readlink(out / "latest") == "runs/second"
    assert (out / "runs" / "third" / "_SUCCESS").exists()  # kept, complete
    manifest = json.loads((out / "runs" / "third" / "manifest.json").read_text())
    assert manifest["promotion"]["gate"] == "failed" and manifest["promotion"]["against"] == "second"
    assert manifest["promotion"]["reason"] in line
    assert _statuses(workspace)["third"] == ("held", False)

    promoted = recsys("promote", "third", "--output", "out", env=env, cwd=root)
    assert promoted.returncode == 0, promoted.stderr
    assert "run third is CURRENT" in promoted.stdout and promoted.stderr == ""
    assert storage.current_run_id(out) == "third" and os.readlink(out / "latest") == "runs/third"
    assert (out / "latest" / "models" / "als" / "recommendations.parquet" / "part-00000.parquet").is_file()
    assert _statuses(workspace)["third"] == ("complete", True)

    # an unknown run: one line, exit 2, nothing moves
    missing = recsys("promote", "nope", "--output", "out", env=env, cwd=root)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    assert storage.current_run_id(out) == "third"


def test_no_gate_makes_the_run_current(workspace):
    root, _ = workspace
    out = root / "out"
    # the full input, then a collapsed one without the gate
    assert _run(workspace, "full.parquet", "fourth").returncode == 0
    result = _run(workspace, "part.parquet", "fifth", "--no-gate")
    assert result.returncode == 0, result.stderr
    assert storage.current_run_id(out) == "fifth" and os.readlink(out / "latest") == "runs/fifth"
    manifest = json.loads((out / "runs" / "fifth" / "manifest.json").read_text())
    assert manifest["promotion"]["gate"] == "off"
