"""``<root>/latest``: a relative symlink to the current run, switched with CURRENT, repaired
where a crash fell between the two, and spared by retention; the id maps' column names."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from recsys import storage
from recsys.data.interactions import IdMap


def _publish(root, run_id, move_current=True, manifest=None):
    run = storage.start_run(root, run_id)
    storage.write_text(run.dir / "file.txt", run_id)
    return storage.publish_run(run, json.dumps(manifest or {"run_id": run_id, "models": {}}), move_current)


def test_latest_is_a_relative_symlink_switched_with_current(tmp_path):
    _publish(tmp_path, "r1")
    link = tmp_path / "latest"
    assert link.is_symlink() and os.readlink(link) == "runs/r1"
    assert (link / "file.txt").read_text() == "r1"
    _publish(tmp_path, "r2")
    assert os.readlink(link) == "runs/r2" and storage.current_run_id(tmp_path) == "r2"
    assert (link / "file.txt").read_text() == "r2"
    # a run published without moving CURRENT (evaluation, held) leaves latest alone
    _publish(tmp_path, "r3", move_current=False)
    assert os.readlink(link) == "runs/r2" and storage.latest_target(tmp_path) == "r2"
    # the root can move: the link is relative
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    os.replace(tmp_path, moved)
    assert (moved / "latest" / "file.txt").read_text() == "r2"
    # no temporary link left beside it
    assert sorted(p.name for p in moved.iterdir() if p.name.startswith(".latest")) == []


def test_a_crash_between_current_and_latest_is_repaired_by_the_next_writer(tmp_path):
    _publish(tmp_path, "r1")
    _publish(tmp_path, "r2", move_current=False)
    # as if killed after CURRENT moved and before latest did
    storage.write_text(tmp_path / "CURRENT", "r2\n")
    os.symlink("runs/r1", tmp_path / ".latest.tmp-1-abc")  # a temporary link left behind
    assert storage.latest_target(tmp_path) == "r1"
    with storage.PublishTransaction(tmp_path, "r3"):
        assert storage.latest_target(tmp_path) == "r2"  # repaired under the root lock
    assert not (tmp_path / ".latest.tmp-1-abc").exists()
    assert storage.current_run_id(tmp_path) == "r2"  # nothing published: CURRENT unchanged


def test_a_root_from_before_latest_gets_it_at_the_next_run(tmp_path):
    _publish(tmp_path, "r1")
    (tmp_path / "latest").unlink()
    storage.clean_stale_staging(tmp_path)
    assert os.readlink(tmp_path / "latest") == "runs/r1"


def test_latest_that_is_not_a_symlink_is_left_alone(tmp_path):
    (tmp_path / "latest").mkdir()
    _publish(tmp_path, "r1")
    assert (tmp_path / "latest").is_dir() and not (tmp_path / "latest").is_symlink()
    assert storage.current_run_id(tmp_path) == "r1"


def test_retention_spares_current_latest_and_the_held_run(tmp_path):
    held = {"promotion": {"gate": "failed", "reason": "users fell"}}
    for run_id in ("r1", "r2", "r3"):
        _publish(tmp_path, run_id)
    _publish(tmp_path, "h1", move_current=False, manifest={"run_id": "h1", **held})
    _publish(tmp_path, "h2", move_current=False, manifest={"run_id": "h2", **held})
    assert storage.pending_held_run(tmp_path) == "h2"  # the newer held run supersedes h1
    storage.write_text(tmp_path / "CURRENT", "r2\n")  # latest still on r3: a crash in between
    removed = storage.apply_retention(tmp_path, keep_runs=1)
    assert sorted(removed) == ["h1", "r1"]
    left = {r["run_id"] for r in storage.list_runs(tmp_path)}
    assert left == {"h2", "r2", "r3"}
    # promoted by hand: no longer waiting, an ordinary run for retention
    (tmp_path / "runs" / "h2" / storage.PROMOTED).write_text("")
    assert storage.pending_held_run(tmp_path) is None


def test_id_maps_name_their_column_and_old_runs_still_read(tmp_path):
    from recsys.data import generate_interactions
    from recsys.data.interactions import build_interactions

    interactions = build_interactions(generate_interactions(n_users=20, n_items=10, n_clusters=2, seed=1))
    storage.write_interactions(tmp_path, interactions)
    assert pq.read_schema(tmp_path / "users.parquet").names == ["user_id"]
    assert pq.read_schema(tmp_path / "items.parquet").names == ["item_id"]
    back = storage.read_interactions(tmp_path)
    assert back.users.ids.tolist() == interactions.users.ids.tolist()
    # a run written before the columns were named
    pq.write_table(pa.table({"id": pa.array(["a", "b"])}), tmp_path / "old.parquet")
    old = storage.read_id_map(tmp_path / "old.parquet")
    assert isinstance(old, IdMap) and old.kind == "str" and old.ids.tolist() == ["a", "b"]


def test_a_reader_never_finds_latest_missing_or_incomplete(tmp_path):
    import threading

    _publish(tmp_path, "r0")
    done = threading.Event()
    problems: list[str] = []
    reads = 0

    def publish_many():
        for i in range(1, 40):
            _publish(tmp_path, f"r{i}")
        done.set()

    writer = threading.Thread(target=publish_many)
    writer.start()
    while not done.is_set():
        try:
            run_id = (tmp_path / "latest" / "file.txt").read_text()
            if not (tmp_path / "latest" / "_SUCCESS").exists():
                problems.append(f"latest names {run_id} without _SUCCESS")
            reads += 1
        except OSError as exc:
            problems.append(repr(exc))
    writer.join()
    assert reads > 0 and not problems, problems[:3]
    assert os.readlink(tmp_path / "latest") == "runs/r39"


def test_killed_between_current_and_latest(tmp_path):
    import subprocess
    import sys

    _publish(tmp_path, "r1")
    script = (
        "import json\nimport sys\nfrom recsys import storage\n"
        "run = storage.start_run(sys.argv[1], 'r2')\n"
        "storage.publish_run(run, json.dumps({'run_id': 'r2'}))\n"
    )
    env = {**os.environ, "RECSYS_FAILPOINT": "publish-before-latest"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, timeout=60)
    assert result.returncode < 0  # killed at the point
    assert storage.current_run_id(tmp_path) == "r2" and os.readlink(tmp_path / "latest") == "runs/r1"
    with storage.PublishTransaction(tmp_path, "r3") as transaction:
        assert os.readlink(tmp_path / "latest") == "runs/r2"
        transaction.publish(json.dumps({"run_id": "r3"}))
    assert storage.current_run_id(tmp_path) == "r3" and os.readlink(tmp_path / "latest") == "runs/r3"


def test_a_filesystem_without_symlinks_still_publishes(tmp_path, monkeypatch, caplog):
    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    _publish(tmp_path, "r1")
    assert storage.current_run_id(tmp_path) == "r1" and not (tmp_path / "latest").exists()
    assert "could not point" in caplog.text
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".latest")]
