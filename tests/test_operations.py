"""Retention, a swapped index file, and N larger than the catalog."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from recsys import storage
from recsys.cli import main
from recsys.data import generate_interactions
from recsys.errors import AnnIndexError
from recsys.index import AnnoyIndex, build_annoy_index


def _publish(root, run_id):
    run = storage.start_run(root, run_id)
    storage.write_text(run.dir / "file.txt", run_id)
    return storage.publish_run(run, json.dumps({"run_id": run_id}))


def test_retention_keeps_current_and_runs_being_read(tmp_path):
    for run_id in ("r1", "r2", "r3", "r4"):
        _publish(tmp_path, run_id)
    read = storage.RunLayout(tmp_path, "r1", staging=False)
    with storage.reading(read):
        removed = storage.apply_retention(tmp_path, keep_runs=2)
    assert removed == ["r2"]  # r1 is being read, r3 and r4 are kept
    assert sorted(r["run_id"] for r in storage.list_runs(tmp_path)) == ["r1", "r3", "r4"]
    assert storage.apply_retention(tmp_path, keep_runs=1) == ["r3", "r1"]
    assert storage.current_run_id(tmp_path) == "r4" and (tmp_path / "runs/r4/file.txt").exists()
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_retention_never_deletes_current(tmp_path):
    _publish(tmp_path, "old")
    _publish(tmp_path, "new")
    (tmp_path / "CURRENT").write_text("old\n")  # e.g. a rollback by hand
    assert storage.apply_retention(tmp_path, keep_runs=1) == []
    assert {r["run_id"] for r in storage.list_runs(tmp_path)} == {"old", "new"}


def test_swapped_index_file_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    build_annoy_index(rng.normal(size=(50, 8)).astype(np.float32), "angular", tmp_path / "a.ann", 5, 0)
    build_annoy_index(rng.normal(size=(50, 8)).astype(np.float32), "angular", tmp_path / "b.ann", 5, 0)
    shutil.copy(tmp_path / "b.ann", tmp_path / "a.ann")  # same size, metric and dimension
    with pytest.raises(AnnIndexError, match="checksum does not match"):
        AnnoyIndex(tmp_path / "a.ann")


def test_top_n_larger_than_the_catalog_is_one_clear_line(prefect_harness, tmp_path, capsys):
    generate_interactions(n_users=40, n_items=15, n_clusters=3, seed=1).to_parquet(tmp_path / "t.parquet")
    config = {
        "models": [{"name": "als", "type": "als", "params": {"factors": 4}}],
        "recommend": {"top_n": 50},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code = main(
        [
            "run",
            "--config",
            str(tmp_path / "c.yaml"),
            "--interactions",
            str(tmp_path / "t.parquet"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "recommend.top_n is 50 but" in err and "has only 15 items" in err
    assert storage.current_run_id(tmp_path / "out") is None
