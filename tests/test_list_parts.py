"""A published list is a parquet dataset: ``models/<name>/recommendations.parquet/`` holding
``part-NNNNN.parquet`` files in query order, each listed in the manifest with its query
range, rows, size and sha256. Readers (the API, DuckDB, pandas) see one table; the commit
leaves exactly the listed parts in the folder."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys import storage
from recsys.api import open_run
from recsys.config import parse_config
from recsys.data import generate_interactions
from recsys.errors import QueryError, RunError
from recsys.manifest import ListOutput, ListPart, RunManifest, read_manifest
from recsys.stages.runner import run_local

CONFIG = {
    "models": [{"name": "als", "type": "als", "params": {"factors": 8, "iterations": 3}}],
    "index": {"backend": "exact"},
    "recommend": {"top_n": 5},
    "similar_items": {"top_n": 5},
    "task_runner": {"shard_rows": 100},
}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    frame = generate_interactions(n_users=450, n_items=120, n_clusters=4, seed=3)
    path = storage.write_interactions_table(frame, root / "in.parquet")
    manifest = run_local(parse_config(CONFIG), path, root / "out", run_id="r1")
    return root / "out", manifest


def test_a_list_is_a_folder_of_parts_in_query_order(published):
    root, manifest = published
    run_dir = root / "runs" / "r1"
    recs = manifest.models["als"].outputs.recommendations
    assert recs.path == "models/als/recommendations.parquet"
    assert [(p.start, p.stop) for p in recs.parts] == [
        (0, 100),
        (100, 200),
        (200, 300),
        (300, 400),
        (400, 450),
    ]
    assert [p.path for p in recs.parts] == [f"{recs.path}/part-{n:05d}.parquet" for n in range(5)]
    assert sorted(path.name for path in (run_dir / recs.path).iterdir()) == [
        f"part-{n:05d}.parquet" for n in range(5)
    ]
    similar = manifest.models["als"].outputs.similar_items
    assert [(p.start, p.stop) for p in similar.parts] == [(0, 100), (100, 120)]
    users = storage.read_id_map(run_dir / "data" / "users.parquet")
    for part in recs.parts:
        listed = manifest.files[part.path]
        assert (listed.size_bytes, listed.sha256) == (part.size_bytes, part.sha256)
        assert part.sha256 == storage.file_sha256(run_dir / part.path)
        rows = pd.read_parquet(run_dir / part.path)
        assert len(rows) == part.rows
        assert set(rows["user_id"]) == set(users.ids[part.start : part.stop].tolist())
    assert recs.rows == manifest.models["als"].rows.recommendations == 450 * 5


def test_readers_see_one_table(published):
    root, manifest = published
    folder = root / "latest" / "models" / "als" / "recommendations.parquet"
    with open_run(root) as run:
        api = run.recommendations("als")
    by_pandas = pd.read_parquet(folder)  # pyarrow's dataset reader, the folder as one table
    by_duckdb = duckdb.connect().execute(f"SELECT * FROM read_parquet('{folder}/*.parquet')").df()
    key = ["user_id", "rank"]
    for frame in (by_pandas, by_duckdb):
        assert len(frame) == len(api) == 450 * 5
        pd.testing.assert_frame_equal(
            frame.sort_values(key).reset_index(drop=True)[api.columns.tolist()],
            api.sort_values(key).reset_index(drop=True),
            check_dtype=False,
        )
    # the API reads the parts in order: users come in internal id order
    users = storage.read_id_map(root / "latest" / "data" / "users.parquet")
    assert api["user_id"].drop_duplicates().tolist() == users.ids.tolist()


def test_a_part_that_does_not_verify_is_refused(published, tmp_path):
    root, manifest = published
    part = manifest.models["als"].outputs.recommendations.parts[2]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy, symlinks=True)
    target = copy / "runs" / "r1" / part.path
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with open_run(copy) as run, pytest.raises(RunError, match="part-00002.parquet: checksum does not match"):
        run.recommendations("als")


def _part(n: int, start: int, stop: int, folder: str = "models/als/recommendations.parquet") -> ListPart:
    return ListPart(
        path=f"{folder}/part-{n:05d}.parquet", start=start, stop=stop, rows=1, size_bytes=1, sha256="0" * 64
    )


def test_parts_must_cover_the_queries_once_in_order():
    ListOutput(path="models/als/recommendations.parquet", parts=[_part(0, 0, 10), _part(1, 10, 12)])
    for parts, problem in (
        ([_part(0, 0, 10), _part(1, 11, 12)], "starts at 11, expected 10"),  # a gap
        ([_part(0, 0, 10), _part(1, 5, 12)], "starts at 5, expected 10"),  # an overlap
        ([_part(1, 10, 12), _part(0, 0, 10)], "starts at 10, expected 0"),  # out of order
        ([_part(0, 0, 10, "models/bpr/recommendations.parquet")], "is not in the folder"),
        ([], "at least 1 item"),
    ):
        with pytest.raises(ValueError, match=problem):
            ListOutput(path="models/als/recommendations.parquet", parts=parts)
    with pytest.raises(ValueError, match="stop 3 is not after start 3"):
        _part(0, 3, 3)


def test_a_manifest_whose_part_and_file_entries_differ_is_refused(published):
    root, manifest = published
    text = (root / "runs" / "r1" / "manifest.json").read_text()
    part = manifest.models["als"].outputs.recommendations.parts[0]
    tampered = text.replace(part.sha256, "f" * 64, 1)  # the part's entry comes first
    with pytest.raises(ValueError, match="its part entry and its file entry differ"):
        RunManifest.model_validate_json(tampered)
    assert read_manifest(storage.find_run(root, "r1")) == manifest


def test_the_commit_leaves_exactly_the_listed_parts(tmp_path):
    folder = tmp_path / "recommendations.parquet"
    folder.mkdir()
    for name in ("part-00000.parquet", "part-00001.parquet", "part-00002.parquet"):
        (folder / name).write_bytes(b"x")
    (folder / ".part-00001.parquet.tmp-123-abc").write_bytes(b"half")  # a writer killed mid-write
    storage.commit_parts(folder, ["part-00000.parquet", "part-00001.parquet"])
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    with pytest.raises(RunError, match="part files missing: part-00003.parquet"):
        storage.commit_parts(folder, ["part-00000.parquet", "part-00003.parquet"])


def test_parts_that_miss_queries_are_not_committed(published, tmp_path):
    from recsys.stages.ranked import commit_ranked
    from recsys.storage import RunLayout

    root, manifest = published
    parts = manifest.models["als"].outputs.recommendations.parts
    run = RunLayout(root, "r1", staging=False)
    with pytest.raises(QueryError, match="parts cover 400 of 450 queries"):
        commit_ranked(run, "als", "recommendations", parts[:4], 450, 0.0)
    assert np.all([(run.dir / p.path).is_file() for p in parts])  # nothing removed on refusal
