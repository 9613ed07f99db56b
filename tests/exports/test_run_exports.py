"""Exports as a run makes them: after publishing, only for a run made current; the
console script names what it exported; a failed export leaves the run published and
current and ends the command with one line."""

from __future__ import annotations

import duckdb
import pytest
import yaml

import recsys
from recsys import storage
from recsys.data import generate_interactions
from recsys.errors import ExportError
from tests.exports.conftest import CONFIG
from tests.processes import SMALL_RUN_CONFIG, environment
from tests.processes import recsys as recsys_command


def _count(path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_run_exports_what_it_published(tmp_path):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=1)
    database = tmp_path / "lists.duckdb"
    config = {**CONFIG, "exports": [{"type": "duckdb", "params": {"path": str(database)}}]}
    run = recsys.run_pipeline(frame, config, output=tmp_path / "out", run_id="r1")
    rows = sum(len(run.recommendations(model)) for model in run.models)
    assert rows > 0 and _count(database, "recommendations") == rows
    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]


def test_an_evaluation_run_is_not_exported(tmp_path):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=1)
    database = tmp_path / "lists.duckdb"
    config = {
        **CONFIG,
        "evaluate": {"split": {"method": "random", "fraction": 0.2}, "refit": False},
        "exports": [{"type": "duckdb", "params": {"path": str(database)}}],
    }
    recsys.run_pipeline(frame, config, output=tmp_path / "out", run_id="e1")
    assert not database.exists()


def test_a_failed_export_leaves_the_run_published_and_current(tmp_path):
    frame = generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=1)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the export's folder should be\n")
    config = {**CONFIG, "exports": [{"type": "duckdb", "params": {"path": str(blocked / "lists.duckdb")}}]}
    with pytest.raises(ExportError, match=r"^export duckdb \(duckdb\) of run r1 to .*lists.duckdb failed"):
        recsys.run_pipeline(frame, config, output=tmp_path / "out", run_id="r1")
    assert storage.current_run_id(tmp_path / "out") == "r1"
    assert len(recsys.open_run(tmp_path / "out").recommendations("als")) > 0


@pytest.mark.slow
def test_recsys_run_exports_and_says_so(tmp_path):
    """The installed console script: the export is named in its output with its rows,
    its path resolved against the config's folder, and the database holds the run's lists."""
    generate_interactions(n_users=120, n_items=60, n_clusters=4, seed=1).to_parquet(tmp_path / "t.parquet")
    config = {**SMALL_RUN_CONFIG, "exports": [{"type": "duckdb", "params": {"path": "lists.duckdb"}}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = recsys_command(
        "run", "--config", "run.yaml", "--run-id", "r1", env=environment(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    database = tmp_path / "lists.duckdb"
    rows = len(recsys.open_run(tmp_path / "out").recommendations("als"))
    assert f"exported duckdb (duckdb) to {database}: recommendations ({rows:,} rows)" in result.stdout
    assert _count(database, "recommendations") == rows
