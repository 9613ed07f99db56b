"""Ordinary operator actions and hostile inputs, through the real CLI in subprocesses:
the last good run is never lost, nothing this program did not make is deleted, nothing
after CURRENT moves fails a published run."""

from __future__ import annotations

import json
import signal

import pytest
import yaml

from recsys import storage
from recsys.data import generate_interactions
from tests.processes import environment, recsys, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=8).to_parquet(root / "t.parquet")
    config = {
        "input": {"path": "t.parquet"},
        "output": {"root": "out"},
        "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
        "index": {"n_trees": 5, "backend": "annoy"},
        "recommend": {"top_n": 5},
        "similar_items": {"top_n": 5},
        "evaluate": {"sample_users": 30, "sample_items": 30, "tune_queries": 30},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    return root, environment(root)


def run(workspace, *extra, **kwargs):
    root, env = workspace
    return recsys("run", "--config", str(root / "c.yaml"), *extra, env=env, cwd=root, **kwargs)


@pytest.fixture(scope="module")
def published(workspace):
    result = run(workspace, "--run-id", "good")
    assert result.returncode == 0, result.stderr
    out = workspace[0] / "out"
    return out, snapshot(out / "runs" / "good")


@pytest.mark.parametrize(
    "failpoint",
    [
        "after-fit",
        "parquet-before-replace",
        "publish-before-success",
        "no-exchange,publish-between-renames",
    ],
)
def test_rerunning_the_current_id_and_dying_keeps_the_good_run(workspace, published, failpoint):
    out, files = published
    result = run(workspace, "--run-id", "good", failpoint=failpoint)
    assert result.returncode == -signal.SIGKILL
    assert storage.current_run_id(out) == "good"
    if not failpoint.startswith("no-exchange"):  # with an atomic exchange, at once
        assert snapshot(out / "runs" / "good") == files
    # without it, cut between two renames: the next run puts the good run back first
    # the next run (any id) starts from the good run, byte-identical
    again = run(workspace, "--run-id", "next")
    assert again.returncode == 0, again.stderr
    assert snapshot(out / "runs" / "good") == files
    assert storage.current_run_id(out) == "next"
    assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]
    (out / "CURRENT").write_text("good\n")  # back to the start for the next case


def test_republishing_the_current_id_replaces_it_whole(workspace, published):
    out, files = published
    for failpoint in (None, "no-exchange"):
        result = run(workspace, "--run-id", "good", failpoint=failpoint)
        assert result.returncode == 0, result.stderr
        assert storage.current_run_id(out) == "good"
        assert (out / "runs" / "good" / "_SUCCESS").exists()
        assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]


def test_cleanup_deletes_only_what_recsys_made(workspace, published):
    out, _ = published
    foreign = {
        "notes": {"readme.txt": "keep me"},
        ".staging-by-hand": {"data.csv": "1,2"},
        "half": {"manifest.json": "{}"},
        ".replaced-other-abc": {"x": "y"},
    }
    for folder, files in foreign.items():
        (out / "runs" / folder).mkdir()
        for name, text in files.items():
            (out / "runs" / folder / name).write_text(text)
    result = run(workspace, "--run-id", "clean")
    assert result.returncode == 0, result.stderr
    for folder, files in foreign.items():
        for name, text in files.items():
            assert (out / "runs" / folder / name).read_text() == text
    assert "not made by recsys" in result.stdout + result.stderr


def test_retention_never_fails_a_published_run(workspace, published):
    root, _ = workspace
    out, _ = published
    config = yaml.safe_load((root / "c.yaml").read_text())
    config["retention"] = {"keep_runs": 1}
    (root / "keep1.yaml").write_text(yaml.safe_dump(config))
    weird = out / "runs" / "corrupt"
    weird.mkdir(exist_ok=True)
    (weird / "_SUCCESS").write_text("corrupt\n")
    (weird / "manifest.json").write_text("{not json")
    (out / "runs" / "dangling").symlink_to(root / "nowhere")
    env = workspace[1]
    result = recsys("run", "--config", str(root / "keep1.yaml"), "--run-id", "kept", env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    assert storage.current_run_id(out) == "kept"
    assert (weird / "_SUCCESS").exists() and (out / "runs" / "dangling").is_symlink()
    listing = recsys("runs", "--output", str(out), "--json", env=env, cwd=root)
    assert listing.returncode == 0, listing.stderr
    statuses = {row["run_id"]: row["status"] for row in json.loads(listing.stdout)}
    assert statuses["kept"] == "complete" and statuses["corrupt"] == "unreadable"
