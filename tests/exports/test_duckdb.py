"""The DuckDB exporter against the real engine: the tables equal the published parquet row
by row (integer and string ids keep their type), the file is replaced whole, and a failed
or killed export leaves the previous database as it was."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import recsys
from recsys.api import Run
from recsys.config import load_config, parse_config
from recsys.errors import ExportError, RunError
from recsys.exports import ExportConfig, run_exports
from recsys.exports.duckdb import DuckDBExporter

ROOT = Path(__file__).resolve().parents[2]


def exports(path: Path, **params) -> list[ExportConfig]:
    raw = {
        "models": [{"name": "als", "type": "als"}],
        "exports": [{"type": "duckdb", "params": {"path": str(path), **params}}],
    }
    return parse_config(raw).exports


def table(path: Path, name: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(f"SELECT * FROM {name}").df()


def published(root: Path, run_id: str, kind: str) -> pd.DataFrame:
    run = recsys.open_run(root, run_id)
    return pd.concat([getattr(run, kind)(model) for model in run.models], ignore_index=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_rows(exported: pd.DataFrame, expected: pd.DataFrame, keys: list[str]) -> None:
    assert list(exported.columns) == list(expected.columns)
    exported = exported.sort_values(keys, ignore_index=True)
    expected = expected.sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(exported, expected, check_dtype=False)
    for column in expected.columns:  # ints stay ints, strings stay strings, float32 scores
        assert exported[column].map(type).tolist() == expected[column].map(type).tolist(), column


@pytest.mark.parametrize("which", ["int", "str"])
def test_the_tables_are_the_published_lists(which, int_root, str_root, tmp_path):
    root, run_id = (int_root, "r2") if which == "int" else (str_root, "s1")
    path = tmp_path / "db" / "recs.duckdb"
    (result,) = run_exports(exports(path), root, run_id)

    recommendations = published(root, run_id, "recommendations")
    similar = published(root, run_id, "similar_items")
    assert result.exporter == "duckdb" and result.name == "duckdb" and result.run_id == run_id
    assert result.destination == str(path) and result.seconds >= 0
    assert result.tables == {
        "recommendations": len(recommendations),
        "similar_items": len(similar),
        "runs": 1,
    }
    assert sorted(os.listdir(path.parent)) == ["recs.duckdb"]  # no temporary file, no WAL left

    same_rows(table(path, "recommendations"), recommendations, ["model", "user_id", "rank"])
    same_rows(table(path, "similar_items"), similar, ["model", "item_id", "rank"])
    sql_type = "BIGINT" if which == "int" else "VARCHAR"
    with duckdb.connect(str(path), read_only=True) as connection:
        types = dict(connection.execute("SELECT column_name, data_type FROM duckdb_columns()").fetchall())
        assert types["user_id"] == types["item_id"] == types["similar_item_id"] == sql_type
        assert (types["rank"], types["score"]) == ("INTEGER", "FLOAT")
        (runs,) = connection.execute(
            "SELECT run_id, strftime(created_at, '%Y-%m-%dT%H:%M:%S'), models FROM runs"
        ).fetchall()
    manifest = recsys.open_run(root, run_id).manifest
    assert runs == (run_id, manifest.created_at[:19], ["als", "popular"])
    assert set(recommendations["model"]) == {"als", "popular"}


def test_a_table_prefix_and_the_run_s_file_mode(int_root, tmp_path):
    path = tmp_path / "recs.duckdb"
    (result,) = run_exports(exports(path, table_prefix="recsys_"), int_root, "r1")
    assert set(result.tables) == {"recsys_recommendations", "recsys_similar_items", "recsys_runs"}
    assert table(path, "recsys_runs")["run_id"].tolist() == ["r1"]
    assert os.stat(path).st_mode & 0o777 == 0o644  # the run's output.mode


def test_a_second_export_replaces_the_first_whole(int_root, tmp_path):
    path = tmp_path / "recs.duckdb"
    run_exports(exports(path), int_root, "r1")
    first = os.stat(path).st_ino
    reader = duckdb.connect(str(path), read_only=True)  # a reader of the first export, still open
    try:
        (result,) = run_exports(exports(path), int_root, None)  # the current run, r2
        assert result.run_id == "r2" and os.stat(path).st_ino != first  # a new file renamed onto it
        assert reader.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]  # whole, as it was
        count = reader.execute("SELECT count(*) FROM recommendations").fetchone()[0]
        assert count == len(published(int_root, "r1", "recommendations"))
    finally:
        reader.close()
    assert table(path, "runs")["run_id"].tolist() == ["r2"]
    same_rows(
        table(path, "recommendations"),
        published(int_root, "r2", "recommendations"),
        ["model", "user_id", "rank"],
    )
    assert sorted(os.listdir(tmp_path)) == ["recs.duckdb"]


def test_a_failed_export_leaves_the_previous_database(int_root, tmp_path, monkeypatch):
    path = tmp_path / "recs.duckdb"
    run_exports(exports(path), int_root, "r1")
    before = sha256(path)
    verified = Run.file

    def failing(self, relative):
        if "/similar_items.parquet/" in relative:  # after the recommendations were written
            raise OSError(errno.EIO, "Input/output error", relative)
        return verified(self, relative)

    monkeypatch.setattr(Run, "file", failing)
    with pytest.raises(ExportError) as caught:
        run_exports(exports(path), int_root, "r2")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"export duckdb (duckdb) of run r2 to {path} failed: Input/output error")
    assert caught.value.export == "duckdb" and caught.value.destination == str(path)
    assert sha256(path) == before and table(path, "runs")["run_id"].tolist() == ["r1"]
    assert sorted(os.listdir(tmp_path)) == ["recs.duckdb"]  # the temporary file and its WAL are gone
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.export, again.destination) == (message, "duckdb", str(path))


def test_a_killed_export_leaves_the_previous_database(int_root, tmp_path):
    """SIGKILL in the middle of writing (no cleanup runs): the destination is the previous
    database, whole; only a hidden temporary file is left beside it."""
    path = tmp_path / "recs.duckdb"
    run_exports(exports(path), int_root, "r1")
    before = sha256(path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from recsys.config import parse_config
        from recsys.exports import run_exports
        from recsys.api import Run

        verified = Run.file
        def dying(self, relative):
            if "/similar_items.parquet/" in relative:
                os.kill(os.getpid(), signal.SIGKILL)
            return verified(self, relative)
        Run.file = dying
        config = parse_config({{"models": [{{"name": "als", "type": "als"}}],
                               "exports": [{{"type": "duckdb", "params": {{"path": {str(path)!r}}}}}]}})
        run_exports(config.exports, {str(int_root)!r}, "r2")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert sha256(path) == before and table(path, "runs")["run_id"].tolist() == ["r1"]
    assert all(name == "recs.duckdb" or name.startswith(".recs.duckdb.tmp-") for name in os.listdir(tmp_path))


def test_what_is_not_a_database_file_is_refused(int_root, tmp_path):
    (tmp_path / "folder.duckdb").mkdir()
    with pytest.raises(ExportError, match=r"to .*folder\.duckdb failed: a folder is there: refused"):
        run_exports(exports(tmp_path / "folder.duckdb"), int_root, "r1")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match=r"to .*file/recs\.duckdb failed: .*: .*file"):
        run_exports(exports(tmp_path / "file" / "recs.duckdb"), int_root, "r1")
    inside = int_root / "runs" / "r1" / "recs.duckdb"
    with pytest.raises(ExportError, match=r"failed: it is .*'s runs, which recsys writes: refused"):
        run_exports(exports(inside), int_root, "r1")
    assert not inside.exists()
    for controlled in ("CURRENT", "latest/recs.duckdb"):
        with pytest.raises(ExportError, match="which recsys writes: refused"):
            run_exports(exports(int_root / controlled), int_root, "r1")
    assert (int_root / "CURRENT").read_text() == "r2\n"
    (result,) = run_exports(exports(int_root / "recs.duckdb"), int_root, "r1")  # beside the runs: fine
    assert result.tables["runs"] == 1
    (int_root / "recs.duckdb").unlink()


def test_a_missing_package_names_the_extra(int_root, tmp_path, monkeypatch):
    monkeypatch.setattr(DuckDBExporter, "requires", ("duckdb_is_not_installed",))
    with pytest.raises(ExportError) as caught:
        run_exports(exports(tmp_path / "recs.duckdb"), int_root, "r1")
    assert str(caught.value) == (
        f"export duckdb (duckdb) of run r1 to {tmp_path / 'recs.duckdb'}: exporter duckdb needs the "
        "'exports' extra: pip install 'recsys[exports]'"
    )
    assert not (tmp_path / "recs.duckdb").exists()


def test_no_exports_open_nothing_and_an_unknown_run_is_one_line(int_root, tmp_path):
    assert run_exports([], tmp_path / "nothing-here", None) == []
    with pytest.raises(RunError):
        run_exports(exports(tmp_path / "recs.duckdb"), int_root, "r9")


def test_a_relative_path_resolves_against_the_config_s_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "models: [{name: als, type: als}]\n"
        "exports:\n"
        "  - {type: duckdb, name: warehouse, params: {path: ../db/recs.duckdb}}\n"
        f"  - {{type: duckdb, params: {{path: {tmp_path / 'abs.duckdb'}}}}}\n"
    )
    monkeypatch.chdir(folder.parent.parent)  # anywhere else
    config = load_config(folder / "c.yaml")
    assert config.exports[0].params["path"] == str(tmp_path / "db" / "recs.duckdb")
    assert config.exports[0].label == "warehouse"
    assert config.exports[1].params["path"] == str(tmp_path / "abs.duckdb")
    assert config.exports[1].label == "duckdb"
    assert parse_config(config.to_dict()) == config  # a manifest's config reads back


def test_a_run_of_item_vectors_only_exports_an_empty_typed_recommendations_table(tmp_path):
    """A precomputed model without user vectors publishes no recommendations: the table is
    there, empty, its ids typed as the run's; similar items are exported as published."""
    from recsys.stages.runner import run_local

    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    items = pd.DataFrame({"id": [f"photo-{i:02d}" for i in range(50)], "vector": list(vectors)})
    items.to_parquet(tmp_path / "items.parquet", index=False)
    config = {
        "models": [
            {"name": "vec", "type": "precomputed", "params": {"items": str(tmp_path / "items.parquet")}}
        ],
        "index": {"backend": "exact"},
        "similar_items": {"top_n": 4},
    }
    run_local(parse_config(config), None, tmp_path / "out", run_id="v1")
    path = tmp_path / "recs.duckdb"
    (result,) = run_exports(exports(path), tmp_path / "out", "v1")
    assert result.tables == {"recommendations": 0, "similar_items": 200, "runs": 1}
    same_rows(
        table(path, "similar_items"), published(tmp_path / "out", "v1", "similar_items"), ["item_id", "rank"]
    )
    with duckdb.connect(str(path), read_only=True) as connection:
        columns = connection.execute("DESCRIBE recommendations").fetchall()
    assert [(name, kind) for name, kind, *_ in columns][1:4] == [
        ("item_id", "VARCHAR"),
        ("rank", "INTEGER"),
        ("score", "FLOAT"),
    ]
