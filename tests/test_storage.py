"""Run folders: staging, atomic publish, CURRENT, the root lock, listing, id checks."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import storage
from recsys.errors import RunError


def _publish(root, run_id, payload="x"):
    run = storage.start_run(root, run_id)
    storage.write_text(run.dir / "file.txt", payload)
    return storage.publish_run(run, json.dumps({"run_id": run_id, "models": {}}))


def test_staging_is_hidden_until_published(tmp_path):
    run = storage.start_run(tmp_path, "r1")
    assert run.dir.name == ".staging-r1"
    storage.write_text(run.dir / "file.txt", "x")
    assert storage.list_runs(tmp_path) == []
    assert storage.current_run_id(tmp_path) is None
    with pytest.raises(RunError, match="no published run"):
        storage.find_run(tmp_path)


def test_publish_moves_run_writes_success_then_current(tmp_path):
    final = _publish(tmp_path, "r1")
    assert final.dir == tmp_path / "runs" / "r1"
    assert (final.dir / "_SUCCESS").read_text().strip() == "r1"
    assert not (tmp_path / "runs" / ".staging-r1").exists()
    assert storage.current_run_id(tmp_path) == "r1"
    run = storage.find_run(tmp_path)
    assert run.run_id == "r1" and storage.read_json(run.manifest)["run_id"] == "r1"
    mode = stat.S_IMODE(os.stat(final.dir / "manifest.json").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_second_run_moves_current_and_keeps_first(tmp_path):
    _publish(tmp_path, "r1", "first")
    _publish(tmp_path, "r2", "second")
    assert storage.current_run_id(tmp_path) == "r2"
    assert (tmp_path / "runs" / "r1" / "file.txt").read_text() == "first"
    listed = storage.list_runs(tmp_path)
    assert [r["run_id"] for r in listed] == ["r2", "r1"]
    assert [r["current"] for r in listed] == [True, False]
    assert all(r["status"] == "complete" for r in listed)


def test_same_run_id_replaces_whole_folder(tmp_path):
    _publish(tmp_path, "r1", "old")
    run = storage.start_run(tmp_path, "r1")
    storage.write_text(run.dir / "other.txt", "new")
    storage.publish_run(run, json.dumps({"run_id": "r1"}))
    folder = tmp_path / "runs" / "r1"
    assert not (folder / "file.txt").exists()
    assert (folder / "other.txt").read_text() == "new"
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []


def test_incomplete_run_listed_as_incomplete_and_refused(tmp_path):
    _publish(tmp_path, "r1")
    broken = tmp_path / "runs" / "r0"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    statuses = {r["run_id"]: r["status"] for r in storage.list_runs(tmp_path)}
    assert statuses == {"r1": "complete", "r0": "incomplete"}
    with pytest.raises(RunError, match="incomplete"):
        storage.find_run(tmp_path, "r0")


def test_clean_stale_staging(tmp_path):
    storage.start_run(tmp_path, "dead")
    assert storage.clean_stale_staging(tmp_path) == [".staging-dead"]
    assert not any((tmp_path / "runs").iterdir())


def test_root_lock_refuses_a_second_writer(tmp_path):
    with storage.root_lock(tmp_path), pytest.raises(RunError, match="another recsys run"):
        with storage.root_lock(tmp_path):
            pass
    with storage.root_lock(tmp_path):  # released after the first holder leaves
        pass


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/b", "", ".hidden", "a..b", "x" * 200])
def test_run_ids_cannot_escape_the_root(tmp_path, bad):
    with pytest.raises(RunError, match="invalid run id"):
        storage.start_run(tmp_path, bad)


def test_new_run_ids_are_valid_and_distinct():
    ids = {storage.new_run_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(storage.check_run_id(i) == i for i in ids)


def test_arrays_round_trip_without_pickle(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    storage.write_array(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(storage.read_array(tmp_path / "a.npy"), array)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        storage.read_array(tmp_path / "obj.npy")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _lists(n_users: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 50, size=(n_users, n))
    scores = -np.sort(-rng.random((n_users, n)), axis=1).astype(np.float32)
    ids[3, 7:] = -1  # a user with fewer than n unseen items
    return ids, scores


def test_streamed_lists_equal_one_table_and_come_in_row_groups(tmp_path):
    import pyarrow.parquet as pq

    from recsys.data.interactions import IdMap

    users = IdMap.from_ids(np.array([f"u{i}" for i in range(100)], dtype=object), "str")
    items = IdMap.from_ids(np.arange(1000, 1050), "int")
    ids, scores = _lists(100, 10)
    whole = tmp_path / "whole.parquet"
    storage.write_recommendations(whole, users, items, ids, scores, "als", "r1")
    streamed = tmp_path / "streamed.parquet"
    with storage.RankedWriter(
        streamed, storage.recommendations_schema("str", "int"), users, items, "als", "r1", row_group_rows=250
    ) as writer:
        for start in range(0, 100, 30):
            writer.write(start, ids[start : start + 30], scores[start : start + 30])
            assert not streamed.exists()  # nothing visible before the writer closes
    assert writer.rows == 100 * 10 - 3
    assert pq.read_table(streamed).equals(pq.read_table(whole))
    assert pq.ParquetFile(streamed).metadata.num_row_groups == 4  # 297, 300, 300 and 100 rows
    got = storage.read_ranked_ids(streamed, users, items, 10, rows=np.array([3, 0]))
    np.testing.assert_array_equal(got, ids[[3, 0]])


def test_a_failed_stream_leaves_no_file(tmp_path):
    from recsys.data.interactions import IdMap

    users = IdMap.from_ids(np.arange(100), "int")
    items = IdMap.from_ids(np.arange(50), "int")
    ids, scores = _lists(100, 10)
    path = tmp_path / "recommendations.parquet"
    with pytest.raises(RuntimeError, match="scoring failed"):
        with storage.recommendations_writer(path, users, items, "als", "r1") as writer:
            writer.write(0, ids[:50], scores[:50])
            raise RuntimeError("scoring failed")
    assert list(tmp_path.iterdir()) == []


def test_a_seen_items_matrix_is_memory_mapped_and_sliced_to_a_shards_rows(tmp_path):
    """Scoring a shard of users reads that shard's rows of the seen-items matrix from the
    file, not the whole matrix: the arrays are memory-mapped from the uncompressed .npz."""
    from recsys.storage.files import read_sparse, write_sparse

    matrix = sp.random(500, 80, density=0.1, format="csr", dtype=np.float32, random_state=3)
    matrix.sort_indices()
    write_sparse(tmp_path / "m.npz", matrix)
    mapped = read_sparse(tmp_path / "m.npz", mmap=True)

    def backed_by_file(array):
        while array is not None and not isinstance(array, np.memmap):
            array = array.base
        return array is not None

    assert all(backed_by_file(a) for a in (mapped.data, mapped.indices, mapped.indptr))
    assert not backed_by_file(read_sparse(tmp_path / "m.npz").data)
    assert (mapped != matrix).nnz == 0 and mapped.dtype == np.float32
    assert (mapped[120:260] != matrix[120:260]).nnz == 0
    empty = sp.csr_matrix((4, 3), dtype=np.float32)
    write_sparse(tmp_path / "e.npz", empty)
    assert read_sparse(tmp_path / "e.npz", mmap=True).shape == (4, 3)
    # a compressed file (not written by write_sparse) is read whole, the same matrix
    sp.save_npz(tmp_path / "c.npz", matrix, compressed=True)
    assert (read_sparse(tmp_path / "c.npz", mmap=True) != matrix).nnz == 0
